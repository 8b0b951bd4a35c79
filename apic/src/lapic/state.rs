//! Plain-data state of one local APIC, with validation.

use super::regs::{
    self, ApicBase, Esr, LvtEntry, Svr, TimerMode, APIC_BASE_RESERVED_LOW, ICR_LOW_WRITABLE, LVT_RESET,
    SVR_WRITABLE, TDCR_WRITABLE,
};
use super::timer::TimerState;
use super::{ApicMode, LapicConfig, Quirks};
use crate::VectorSet;

/// Events the local APIC has latched for its processor, other than fixed interrupts (which go
/// through IRR): the VMM takes them with [`crate::lapic::LocalApic::take_events`] and acts on
/// them (KVM_NMI, an SMI, resetting the vCPU for INIT, starting it for SIPI, an INTA to the
/// 8259A for ExtINT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PendingEvents {
    /// Non-maskable interrupts received (saturating). The processor's own NMI blocking (one
    /// in service, one latched) is the VMM's or KVM's business.
    pub nmi: u8,
    /// A system management interrupt was received.
    pub smi: bool,
    /// An INIT was received: the VMM calls [`crate::lapic::LocalApic::init`] and resets the
    /// vCPU (an AP then waits for a start-up IPI).
    pub init: bool,
    /// A start-up IPI was received while waiting for one (or together with the INIT that
    /// starts the wait): start the vCPU in real mode at `vector << 12`.
    pub sipi: Option<u8>,
    /// An ExtINT message was received: the processor takes its next interrupt vector from the
    /// 8259A's interrupt acknowledge.
    pub extint: bool,
}

impl PendingEvents {
    /// Whether any event is latched.
    #[inline]
    pub const fn any(&self) -> bool {
        self.nmi != 0 || self.smi || self.init || self.sipi.is_some() || self.extint
    }
}

/// Everything a local APIC holds, as plain data: the registers, the timer, the LINT input
/// levels, the latched events and the wait-for-SIPI state.
///
/// What the configuration fixes ([`LapicConfig`]: the x2APIC ID, the version register, the
/// bus clock, the guest TSC mapping, the behaviour profile) is not part of the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LocalApicState {
    /// IA32_APIC_BASE: base address, EN, EXTD, BSP.
    pub apic_base: u64,
    /// The xAPIC ID (ID register bits 31:24 in xAPIC mode). In x2APIC mode the ID register
    /// reads the configured 32-bit x2APIC ID instead.
    pub xapic_id: u8,
    /// Task priority register, bits 7:0.
    pub tpr: u8,
    /// Logical destination register. xAPIC: the logical ID in bits 31:24. x2APIC: derived
    /// from the x2APIC ID, `(id >> 4) << 16 | 1 << (id & 15)`.
    pub ldr: u32,
    /// Destination format register: the model in bits 31:28 (1111 flat, 0000 cluster), bits
    /// 27:0 all ones.
    pub dfr: u32,
    /// Spurious interrupt vector register.
    pub svr: u32,
    /// In-service register.
    pub isr: VectorSet,
    /// Trigger mode register: the vector was accepted level-triggered.
    pub tmr: VectorSet,
    /// Interrupt request register.
    pub irr: VectorSet,
    /// Error status register as software last latched it.
    pub esr: u32,
    /// Errors detected since the last ESR write (latched into `esr` by the next write).
    pub esr_pending: u32,
    /// Interrupt command register, 64 bits: xAPIC keeps the high word's destination in bits
    /// 63:56; x2APIC uses bits 63:32.
    pub icr: u64,
    /// The LVT entries, indexed by [`LvtEntry`] (timer, thermal, perf, LINT0, LINT1, error,
    /// CMCI).
    pub lvt: [u32; 7],
    /// The timer registers, the countdown and IA32_TSC_DEADLINE.
    pub timer: TimerState,
    /// The levels of the LINT0 and LINT1 input pins as the VMM last drove them.
    pub lint: [bool; 2],
    /// Events latched for the processor.
    pub events: PendingEvents,
    /// The processor is in wait-for-SIPI (an AP after INIT): a start-up IPI is accepted.
    pub wait_for_sipi: bool,
}

impl Default for LocalApicState {
    /// The power-on state of [`LapicConfig::default`] (the BSP, APIC ID 0, SDM profile).
    fn default() -> Self {
        LocalApicState::power_on(&LapicConfig::default())
    }
}

/// Why a [`LocalApicState`] was refused by [`crate::lapic::LocalApic::restore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateError {
    /// IA32_APIC_BASE has reserved bits set, the invalid mode (EXTD without EN), or x2APIC
    /// mode without x2APIC support.
    ApicBase(u64),
    /// In x2APIC mode the LDR is not the one derived from the x2APIC ID; in xAPIC mode it has
    /// bits set below bit 24.
    Ldr(u32),
    /// DFR bits 27:0 are not all ones.
    Dfr(u32),
    /// SVR has bits set that cannot be written.
    Svr(u32),
    /// An LVT entry has bits set that cannot be written.
    Lvt {
        /// Which entry.
        entry: LvtEntry,
        /// Its value.
        value: u32,
    },
    /// ESR or the error accumulator has bits above bit 7.
    Esr(u32),
    /// ICR has bits set in its low word that no write can set.
    Icr(u64),
    /// TDCR has bits other than 3, 1 and 0.
    DivideConfig(u32),
    /// The timer state contradicts its mode: a TSC deadline outside TSC-deadline mode, a
    /// countdown or an initial count in TSC-deadline mode, or a countdown with a zero initial
    /// count.
    Timer,
    /// IRR or ISR holds a vector 0–15, which the SDM profile never accepts.
    IllegalVector(u8),
}

impl core::fmt::Display for StateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StateError::ApicBase(v) => write!(f, "invalid IA32_APIC_BASE {v:#x}"),
            StateError::Ldr(v) => write!(f, "LDR {v:#x} does not fit the APIC mode"),
            StateError::Dfr(v) => write!(f, "DFR {v:#x}: bits 27:0 must be ones"),
            StateError::Svr(v) => write!(f, "SVR {v:#x} has bits that cannot be set"),
            StateError::Lvt { entry, value } => {
                write!(f, "LVT {entry:?} {value:#x} has bits that cannot be set")
            }
            StateError::Esr(v) => write!(f, "ESR {v:#x} has undefined bits"),
            StateError::Icr(v) => write!(f, "ICR {v:#x} has bits the APIC mode cannot hold"),
            StateError::DivideConfig(v) => write!(f, "TDCR {v:#x} has undefined bits"),
            StateError::Timer => write!(f, "timer countdown or deadline contradicts the LVT timer mode"),
            StateError::IllegalVector(v) => write!(f, "vector {v} (0-15) in IRR or ISR"),
        }
    }
}

impl core::error::Error for StateError {}

/// The x2APIC-mode LDR of x2APIC ID `id`: cluster `id >> 4` in bits 31:16, bit `id & 15` set.
#[inline]
pub const fn x2apic_ldr(id: u32) -> u32 {
    ((id >> 4) << 16) | (1 << (id & 0xF))
}

impl LocalApicState {
    /// The state at power-on or RESET: xAPIC mode at the default base, every register at its
    /// reset value (SDM "Local APIC State After Power-Up or Reset").
    pub fn power_on(config: &LapicConfig) -> Self {
        let mut apic_base = regs::DEFAULT_BASE | ApicBase::EN.bits();
        if config.bsp {
            apic_base |= ApicBase::BSP.bits();
        }
        let mut state = LocalApicState {
            apic_base,
            // The low 8 bits of the x2APIC ID (SDM "x2APIC After RESET").
            xapic_id: config.id as u8,
            tpr: 0,
            ldr: 0,
            dfr: 0,
            svr: 0,
            isr: VectorSet::EMPTY,
            tmr: VectorSet::EMPTY,
            irr: VectorSet::EMPTY,
            esr: 0,
            esr_pending: 0,
            icr: 0,
            lvt: [0; 7],
            timer: TimerState::default(),
            lint: [false; 2],
            events: PendingEvents::default(),
            // After RESET an AP waits for a start-up IPI (SDM "MP Initialization").
            wait_for_sipi: !config.bsp && !config.quirks.contains(Quirks::AP_NEEDS_INIT_AFTER_RESET),
        };
        state.reset_registers(config);
        state
    }

    /// Every register but the ID to its RESET/INIT value: IRR, ISR, TMR, ICR, LDR (xAPIC),
    /// TPR, TDCR, TMICT and TMCCT 0; every LVT entry masked; SVR 0xFF; DFR all ones; ESR 0;
    /// the timer stopped and the TSC deadline 0. The LINT input levels are the devices' and
    /// stay.
    pub(super) fn reset_registers(&mut self, config: &LapicConfig) {
        let x2apic = self.mode() == ApicMode::X2Apic;
        self.tpr = 0;
        self.ldr = if x2apic { x2apic_ldr(config.id) } else { 0 };
        self.dfr = 0xFFFF_FFFF;
        self.svr = 0xFF;
        self.isr = VectorSet::EMPTY;
        self.tmr = VectorSet::EMPTY;
        self.irr = VectorSet::EMPTY;
        self.esr = 0;
        self.esr_pending = 0;
        self.icr = 0;
        for entry in LvtEntry::ALL {
            let value = if entry == LvtEntry::Cmci && !config.cmci {
                // The entry does not exist: nothing ever writes it (KVM leaves its slot 0).
                0
            } else if entry == LvtEntry::Lint0
                && self.apic_base & ApicBase::BSP.bits() != 0
                && config.quirks.contains(Quirks::LINT0_REENABLED)
            {
                // KVM_X86_QUIRK_LINT0_REENABLED: ExtINT, unmasked.
                0x700
            } else {
                LVT_RESET
            };
            self.set_lvt(entry, value);
        }
        self.timer = TimerState::default();
    }

    /// The mode IA32_APIC_BASE selects.
    #[inline(always)]
    pub const fn mode(&self) -> ApicMode {
        ApicMode::of(self.apic_base)
    }

    /// LVT entry `entry`.
    #[inline(always)]
    pub const fn lvt(&self, entry: LvtEntry) -> u32 {
        match entry {
            LvtEntry::Timer => self.lvt[0],
            LvtEntry::Thermal => self.lvt[1],
            LvtEntry::Perf => self.lvt[2],
            LvtEntry::Lint0 => self.lvt[3],
            LvtEntry::Lint1 => self.lvt[4],
            LvtEntry::Error => self.lvt[5],
            LvtEntry::Cmci => self.lvt[6],
        }
    }

    /// Replaces LVT entry `entry` (no checks).
    #[inline(always)]
    pub fn set_lvt(&mut self, entry: LvtEntry, value: u32) {
        let slot = match entry {
            LvtEntry::Timer => &mut self.lvt[0],
            LvtEntry::Thermal => &mut self.lvt[1],
            LvtEntry::Perf => &mut self.lvt[2],
            LvtEntry::Lint0 => &mut self.lvt[3],
            LvtEntry::Lint1 => &mut self.lvt[4],
            LvtEntry::Error => &mut self.lvt[5],
            LvtEntry::Cmci => &mut self.lvt[6],
        };
        *slot = value;
    }

    /// Checks every rule a state produced by the model obeys under `config`.
    pub fn validate(&self, config: &LapicConfig) -> Result<(), StateError> {
        let base = self.apic_base;
        if base & config.apic_base_reserved() != 0
            || self.mode() == ApicMode::Invalid
            || (self.mode() == ApicMode::X2Apic && !config.x2apic)
        {
            return Err(StateError::ApicBase(base));
        }
        let x2apic = self.mode() == ApicMode::X2Apic;
        // KVM keeps the x2APIC LDR when the APIC leaves x2APIC mode through the disabled state.
        let kept = config.quirks.contains(Quirks::DISABLE_KEEPS_STATE);
        if (x2apic && self.ldr != x2apic_ldr(config.id)) || (!x2apic && !kept && self.ldr & 0x00FF_FFFF != 0)
        {
            return Err(StateError::Ldr(self.ldr));
        }
        if self.dfr & 0x0FFF_FFFF != 0x0FFF_FFFF {
            return Err(StateError::Dfr(self.dfr));
        }
        if self.svr & !config.svr_writable() != 0 {
            return Err(StateError::Svr(self.svr));
        }
        let stored = config.quirks.contains(Quirks::RESERVED_BITS_STORED);
        for entry in LvtEntry::ALL {
            let value = self.lvt(entry);
            let mut allowed = if stored { entry.kvm_writable() } else { entry.writable() };
            if matches!(entry, LvtEntry::Lint0 | LvtEntry::Lint1) {
                // Set by the hardware when a level-triggered LINT interrupt is accepted.
                allowed |= regs::Lvt::REMOTE_IRR.bits();
            }
            if entry == LvtEntry::Timer && !config.tsc_deadline {
                allowed &= !(1 << 18);
            }
            if value & !allowed != 0 {
                return Err(StateError::Lvt { entry, value });
            }
        }
        let esr_bits = Esr::all().bits();
        for esr in [self.esr, self.esr_pending] {
            if esr & !esr_bits != 0 {
                return Err(StateError::Esr(esr));
            }
        }
        // The low word takes the same bits in both modes; the high word is the x2APIC
        // destination or, in xAPIC mode, the destination in bits 31:24 (a value carried over
        // from x2APIC mode may hold more).
        let low = if stored { 0xFFFF_EFFF } else { ICR_LOW_WRITABLE };
        let icr_ok = self.icr & 0xFFFF_FFFF & !low == 0;
        if !icr_ok {
            return Err(StateError::Icr(self.icr));
        }
        let timer = &self.timer;
        if timer.divide_config & !TDCR_WRITABLE != 0 {
            return Err(StateError::DivideConfig(timer.divide_config));
        }
        let mode = TimerMode::of(self.lvt(LvtEntry::Timer));
        let deadline_mode = mode == TimerMode::TscDeadline;
        let contradiction = if deadline_mode {
            timer.expiry.is_some() || timer.initial_count != 0
        } else {
            timer.tsc_deadline != 0 || (timer.expiry.is_some() && timer.initial_count == 0)
        };
        if contradiction {
            return Err(StateError::Timer);
        }
        if !config.quirks.contains(Quirks::ESR_NOT_MODELLED) {
            for set in [&self.irr, &self.isr] {
                if let Some(v) = set.iter().next().filter(|&v| v < 16) {
                    return Err(StateError::IllegalVector(v));
                }
            }
        }
        Ok(())
    }

    /// The same state with the timer moved from the bus clock it was saved on to another: a
    /// countdown due `d` ticks after `saved_at` is due `d` ticks after `now` (a countdown
    /// already due at `saved_at` is due at `now`). Use it when a snapshot taken at bus tick
    /// `saved_at` is restored on a host whose bus clock reads `now`.
    pub fn moved(&self, saved_at: u64, now: u64) -> Self {
        let mut state = *self;
        if let Some(expiry) = state.timer.expiry {
            state.timer.expiry = Some(now.saturating_add(expiry.saturating_sub(saved_at)));
        }
        state
    }
}

impl LapicConfig {
    /// IA32_APIC_BASE bits a write may not set: 7:0, 9, MAXPHYADDR and above, and EXTD
    /// without x2APIC support.
    #[inline]
    pub const fn apic_base_reserved(&self) -> u64 {
        let phys = if self.phys_addr_bits >= 64 {
            0
        } else if self.phys_addr_bits < 12 {
            !0xFFF
        } else {
            !((1u64 << self.phys_addr_bits).wrapping_sub(1))
        };
        let extd = if self.x2apic { 0 } else { ApicBase::EXTD.bits() };
        APIC_BASE_RESERVED_LOW | phys | extd
    }

    /// SVR bits software can write: vector, enable, focus, and EOI-broadcast suppression when
    /// directed EOI is supported.
    #[inline]
    pub const fn svr_writable(&self) -> u32 {
        if self.directed_eoi {
            SVR_WRITABLE | Svr::SUPPRESS_EOI_BROADCAST.bits()
        } else {
            SVR_WRITABLE
        }
    }
}
