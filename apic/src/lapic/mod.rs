//! The local APIC of one processor: xAPIC MMIO and x2APIC MSRs, IA32_APIC_BASE, every register,
//! the timer (one-shot, periodic, TSC-deadline), interrupt acceptance, acknowledge and EOI,
//! and the NMI/SMI/INIT/SIPI/ExtINT events it latches for its processor.
//!
//! * Guest accesses: [`LocalApic::mmio_read`] / [`LocalApic::mmio_write`] for the 4 KiB xAPIC
//!   page (offsets from [`LocalApic::mmio_base`]); [`LocalApic::rdmsr`] / [`LocalApic::wrmsr`]
//!   for IA32_APIC_BASE, IA32_TSC_DEADLINE and the x2APIC MSRs 0x800–0xBFF, answering
//!   [`MsrError::GeneralProtection`] where the SDM raises #GP; [`LocalApic::set_cr8`] /
//!   [`LocalApic::cr8`] for MOV to/from CR8 (`kvm_run.cr8`).
//! * Interrupts in: [`LocalApic::accept`] for a message from the APIC bus (see
//!   [`crate::bus`]); [`LocalApic::set_lint`] for the LINT0/LINT1 pins;
//!   [`LocalApic::local_interrupt`] for the thermal, performance-counter and CMCI sources.
//! * Interrupts out: [`LocalApic::pending_interrupt`] (the vector the CPU would take now),
//!   [`LocalApic::acknowledge`] (INTA: IRR → ISR), [`LocalApic::take_events`] (NMI, SMI,
//!   INIT, SIPI, ExtINT), [`LocalApic::accepts_pic_interrupts`] (virtual-wire mode).
//! * Outputs of register writes ([`Effects`]): the EOI to broadcast to the IOAPICs and the IPI
//!   to put on the bus.
//! * Time: every call that depends on it takes `now` in host TSC ticks (the clock of the guest
//!   TSC; see [`BusClock`] for the APIC timer's rate). [`LocalApic::next_deadline`] says when
//!   to call [`LocalApic::advance`]; every access also brings the timer up to `now` first.
//!
//! ```
//! use vm_apic::lapic::{regs, LapicConfig, LocalApic};
//! use vm_apic::{DeliveryMode, Interrupt, TriggerMode};
//!
//! let mut apic = LocalApic::new(LapicConfig::default());
//! let now = 0;
//! let _ = apic.mmio_write(regs::SVR.into(), &0x1FFu32.to_le_bytes(), now); // software enable
//! let irq = Interrupt { vector: 0x41, level: true, ..Interrupt::default() };
//! assert!(apic.accept(&irq));
//! assert_eq!(apic.pending_interrupt(), Some(0x41));
//! assert_eq!(apic.acknowledge().vector, 0x41); // the CPU takes it: IRR -> ISR
//! let effects = apic.mmio_write(regs::EOI.into(), &0u32.to_le_bytes(), now);
//! assert_eq!(effects.eoi, None); // edge-triggered: nothing to broadcast
//! # let _ = (DeliveryMode::Fixed, TriggerMode::Edge);
//! ```

#[cfg(all(feature = "kvm", target_arch = "x86_64", target_os = "linux"))]
pub mod kvm;
mod quirks;
pub mod regs;
mod state;
mod timer;

pub use quirks::Quirks;
pub use state::{x2apic_ldr, LocalApicState, PendingEvents, StateError};
pub use timer::{BusClock, TimerState};

use regs::{
    ApicBase, Esr, Lint, Lvt, LvtEntry, Svr, TimerMode, APIC_VERSION, ICR_DELIVERY_MODE_SHIFT,
    ICR_DELIVERY_STATUS, ICR_DEST_LOGICAL, ICR_HIGH_XAPIC_DEST, ICR_LEVEL_ASSERT, ICR_LOW_WRITABLE,
    ICR_SHORTHAND_SHIFT, ICR_TRIGGER_LEVEL, ICR_X2APIC_RESERVED, LVT_VECTOR, TDCR_WRITABLE,
    VERSION_DIRECTED_EOI,
};
use vm_timer::tsc::{GuestTsc, TscDeadline};

use crate::{DeliveryMode, DestinationMode, Interrupt, Shorthand, TriggerMode};

/// The x2APIC EOI register's MSR.
const X2APIC_EOI_MSR: u32 = regs::X2APIC_MSR_BASE | (regs::EOI >> 4);

/// The mode IA32_APIC_BASE's EN and EXTD bits select (SDM "x2APIC States").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ApicMode {
    /// EN=0, EXTD=0: globally disabled. The processor behaves as if it had no APIC: the MMIO
    /// page is not decoded, LINT0 is INTR and LINT1 is NMI.
    Disabled,
    /// EN=1, EXTD=0: xAPIC mode, registers in the MMIO page.
    XApic,
    /// EN=1, EXTD=1: x2APIC mode, registers as MSRs 0x800–0x8FF.
    X2Apic,
    /// EN=0, EXTD=1: invalid; no write can reach it.
    Invalid,
}

impl ApicMode {
    /// The mode of IA32_APIC_BASE value `apic_base`.
    #[inline(always)]
    pub const fn of(apic_base: u64) -> Self {
        let en = apic_base & ApicBase::EN.bits() != 0;
        let extd = apic_base & ApicBase::EXTD.bits() != 0;
        match (en, extd) {
            (false, false) => ApicMode::Disabled,
            (true, false) => ApicMode::XApic,
            (true, true) => ApicMode::X2Apic,
            (false, true) => ApicMode::Invalid,
        }
    }
}

/// How a local APIC is built: what CPUID advertises, its identity, its clocks and its
/// behaviour profile. Fixed for the APIC's lifetime, except the guest TSC mapping
/// ([`LocalApic::set_guest_tsc`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LapicConfig {
    /// The x2APIC ID (from the CPU topology; the xAPIC ID starts as its low 8 bits).
    pub id: u32,
    /// This is the bootstrap processor (IA32_APIC_BASE.BSP at RESET).
    pub bsp: bool,
    /// The behaviour profile.
    pub quirks: Quirks,
    /// The APIC timer's clock against the rate of `now`.
    pub bus: BusClock,
    /// The guest TSC as a function of the host TSC (`now`), for TSC-deadline mode.
    pub guest_tsc: GuestTsc,
    /// CPUID.1:ECX.x2APIC: IA32_APIC_BASE.EXTD can be set.
    pub x2apic: bool,
    /// CPUID.1:ECX.TSC_Deadline: LVT timer mode 10b and IA32_TSC_DEADLINE exist.
    pub tsc_deadline: bool,
    /// Six LVT entries (LVT CMCI present, max LVT entry 6) instead of five.
    pub cmci: bool,
    /// VERSION bit 24: EOI-broadcast suppression (SVR bit 12) is supported. Set it only with
    /// an IOAPIC that has the EOI register (version 0x20), or the guest's directed EOIs have
    /// nowhere to go.
    pub directed_eoi: bool,
    /// MAXPHYADDR: IA32_APIC_BASE bits from here up are reserved.
    pub phys_addr_bits: u8,
    /// The processor has system-management mode, so SMI messages are taken. KVM without SMM
    /// support (no `KVM_CAP_X86_SMM`) refuses them.
    pub smm: bool,
}

impl Default for LapicConfig {
    /// The BSP with APIC ID 0, SDM profile, a 1 GHz bus against a 1 GHz `now`, the guest TSC
    /// equal to `now`, x2APIC, TSC-deadline and SMM supported, no CMCI, no directed EOI, 46
    /// physical address bits.
    fn default() -> Self {
        LapicConfig {
            id: 0,
            bsp: true,
            quirks: Quirks::SDM,
            bus: BusClock::default(),
            guest_tsc: GuestTsc::default(),
            x2apic: true,
            tsc_deadline: true,
            cmci: false,
            directed_eoi: false,
            phys_addr_bits: 46,
            smm: true,
        }
    }
}

impl LapicConfig {
    /// The version register: version 0x14, the highest LVT index in bits 23:16, and bit 24
    /// for directed EOI.
    #[inline]
    pub const fn version(&self) -> u32 {
        let max_lvt = if self.cmci { 6 } else { 5 };
        let directed = if self.directed_eoi { VERSION_DIRECTED_EOI } else { 0 };
        APIC_VERSION | max_lvt << 16 | directed
    }

    /// The shortest periodic timer period the profile allows, in bus ticks.
    #[inline]
    const fn min_period(&self) -> u64 {
        if self.quirks.contains(Quirks::PERIODIC_MIN_200US) {
            // 200 µs of the bus clock.
            self.bus.bus_hz() / 5000
        } else {
            0
        }
    }
}

/// A guest access the local APIC does not decode. It still got the documented answer; the
/// value is for the VMM to log or count (it knows the offset and width it passed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessError {
    /// The MMIO page is not decoded: the APIC is globally disabled or in x2APIC mode. Reads
    /// float to all ones, writes are dropped.
    NotDecoded,
    /// The access reaches past the 4 KiB page: reads are all ones (with
    /// [`Quirks::UNDECODED_READS_UNWRITTEN`] the buffer is left unwritten), writes are
    /// dropped.
    OutOfRange,
    /// Not an aligned 32-bit access to a register's first four bytes. Reads return the bytes
    /// of each 16-byte slot (the register in bytes 0–3, zeros above), or leave the buffer
    /// unwritten where KVM does ([`Quirks::UNDECODED_READS_UNWRITTEN`]); writes are dropped.
    Width,
    /// No register lives at this offset (reads 0, or leaves the buffer unwritten with
    /// [`Quirks::UNDECODED_READS_UNWRITTEN`]; the SDM profile records ESR "illegal register
    /// address").
    Reserved,
    /// A read of a register that exists but that KVM does not read (EOI, remote read): the
    /// buffer is left unwritten ([`Quirks::UNDECODED_READS_UNWRITTEN`] only; the SDM profile
    /// reads these as 0 and reports nothing).
    Unreadable,
}

/// What a register access caused, for the VMM to act on.
///
/// A pending interrupt is not repeated here: ask [`LocalApic::pending_interrupt`] after any
/// call. Nor is the timer: ask [`LocalApic::next_deadline`].
#[must_use]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Effects {
    /// An EOI of this level-triggered vector, to broadcast to every IOAPIC (KVM: the IOAPIC's
    /// `end_of_interrupt`, or KVM_EXIT_IOAPIC_EOI in split mode). Absent when EOI-broadcast
    /// suppression (SVR bit 12) is on: the guest then ends the interrupt at the IOAPIC itself.
    pub eoi: Option<u8>,
    /// An IPI the ICR write sent: deliver it with [`crate::bus::ApicBus::deliver`], this APIC as the
    /// source.
    pub ipi: Option<Interrupt>,
    /// The access was not one the hardware decodes (see [`AccessError`]).
    pub invalid: Option<AccessError>,
}

/// Why an MSR access did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsrError {
    /// The processor raises #GP(0): a reserved or absent x2APIC register, a read-only
    /// register written, a write-only register read, reserved bits set, an x2APIC MSR outside
    /// x2APIC mode, or an illegal IA32_APIC_BASE transition. Inject it into the guest.
    GeneralProtection,
    /// Not an MSR the local APIC implements: the VMM handles it.
    NotApicMsr,
}

/// The result of an interrupt acknowledge.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ack {
    /// The vector the processor takes.
    pub vector: u8,
    /// Nothing was deliverable: the APIC answered with its spurious vector (SVR bits 7:0) and
    /// set no ISR bit, so the guest must not EOI it.
    pub spurious: bool,
}

/// A register access that does not complete normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    /// A read-only register was written (xAPIC: ignored; x2APIC: #GP).
    ReadOnly,
    /// No such register in this mode (xAPIC: illegal register address; x2APIC: #GP).
    Absent,
    /// A reserved bit was set (x2APIC only: #GP).
    ReservedBits,
}

/// One local APIC. `Default` is the BSP with [`LapicConfig::default`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalApic {
    state: LocalApicState,
    config: LapicConfig,
}

impl Default for LocalApic {
    fn default() -> Self {
        LocalApic::new(LapicConfig::default())
    }
}

impl LocalApic {
    /// A local APIC at power-on with `config`.
    pub fn new(config: LapicConfig) -> Self {
        LocalApic { state: LocalApicState::power_on(&config), config }
    }

    /// The configuration.
    #[inline]
    pub fn config(&self) -> &LapicConfig {
        &self.config
    }

    /// Replaces the guest TSC mapping (after the guest or the host changed the TSC offset or
    /// ratio): an armed TSC deadline is a guest TSC value and now falls due at a new host time.
    pub fn set_guest_tsc(&mut self, guest_tsc: GuestTsc) {
        self.config.guest_tsc = guest_tsc;
    }

    // ----- identity and mode ------------------------------------------------------------

    /// The mode IA32_APIC_BASE selects.
    #[inline(always)]
    pub fn mode(&self) -> ApicMode {
        self.state.mode()
    }

    /// IA32_APIC_BASE.EN: the APIC is globally enabled (xAPIC or x2APIC mode).
    #[inline(always)]
    pub fn is_enabled(&self) -> bool {
        self.state.apic_base & ApicBase::EN.bits() != 0
    }

    /// SVR bit 8: the APIC is software enabled (and globally enabled). A software-disabled
    /// APIC discards fixed interrupts but still takes NMI, SMI, INIT and SIPI.
    #[inline(always)]
    pub fn is_software_enabled(&self) -> bool {
        self.is_enabled() && self.state.svr & Svr::APIC_ENABLE.bits() != 0
    }

    /// IA32_APIC_BASE.
    #[inline]
    pub fn apic_base(&self) -> u64 {
        self.state.apic_base
    }

    /// The guest-physical base of the xAPIC MMIO page, while the page is decoded (xAPIC mode).
    #[inline]
    pub fn mmio_base(&self) -> Option<u64> {
        match self.mode() {
            ApicMode::XApic => Some(self.state.apic_base & regs::APIC_BASE_ADDRESS_MASK),
            _ => None,
        }
    }

    /// The physical APIC ID in the current mode: the 32-bit x2APIC ID in x2APIC mode, the
    /// (writable) 8-bit xAPIC ID otherwise.
    #[inline(always)]
    pub fn id(&self) -> u32 {
        match self.mode() {
            ApicMode::X2Apic => self.config.id,
            _ => u32::from(self.state.xapic_id),
        }
    }

    /// The logical destination register as the current mode reads it.
    #[inline(always)]
    pub fn ldr(&self) -> u32 {
        self.state.ldr
    }

    /// The destination format register.
    #[inline(always)]
    pub fn dfr(&self) -> u32 {
        self.state.dfr
    }

    /// The BSP flag of IA32_APIC_BASE.
    #[inline]
    pub fn is_bsp(&self) -> bool {
        self.state.apic_base & ApicBase::BSP.bits() != 0
    }

    // ----- priorities -------------------------------------------------------------------

    /// The task priority register.
    #[inline(always)]
    pub fn tpr(&self) -> u8 {
        self.state.tpr
    }

    /// The highest in-service vector, or 0.
    #[inline(always)]
    fn isrv(&self) -> u8 {
        self.state.isr.highest().unwrap_or(0)
    }

    /// The processor priority register: TPR if its class is at least the highest in-service
    /// vector's, else that vector's class (SDM "Processor Priority Register").
    #[inline(always)]
    pub fn ppr(&self) -> u8 {
        let tpr = self.state.tpr;
        let isrv = self.isrv();
        if tpr & 0xF0 >= isrv & 0xF0 {
            tpr
        } else {
            isrv & 0xF0
        }
    }

    /// The arbitration priority register, used for lowest-priority arbitration: TPR if its
    /// class is at least the highest requested vector's and above the highest in-service
    /// vector's, else the highest of the three classes (SDM "Arbitration Priority Register").
    #[inline]
    pub fn apr(&self) -> u8 {
        let tpr = self.state.tpr;
        let isrv = self.isrv() & 0xF0;
        let irrv = self.state.irr.highest().unwrap_or(0) & 0xF0;
        if tpr & 0xF0 >= irrv && tpr & 0xF0 > isrv {
            tpr
        } else {
            (tpr & 0xF0).max(isrv).max(irrv)
        }
    }

    /// MOV from CR8: TPR bits 7:4.
    #[inline]
    pub fn cr8(&self) -> u64 {
        u64::from(self.state.tpr >> 4)
    }

    /// MOV to CR8 (or `kvm_run.cr8` read back after an exit): TPR = CR8 bits 3:0 shifted left by 4, the
    /// subclass cleared. Lowering it may make an interrupt deliverable.
    #[inline]
    pub fn set_cr8(&mut self, cr8: u64) {
        self.state.tpr = ((cr8 & 0xF) as u8) << 4;
    }

    // ----- interrupt acceptance, acknowledge, EOI -----------------------------------------

    /// A message from the APIC bus addressed to this APIC (the bus has matched the
    /// destination). Returns whether the APIC took it:
    ///
    /// * fixed and lowest priority: set in IRR (coalescing with a pending one) and in TMR for
    ///   level (cleared for edge); refused by a software-disabled APIC, for a level de-assert,
    ///   and (SDM profile) for vectors 0–15, which record ESR "receive illegal vector";
    /// * NMI, SMI, INIT: latched in [`PendingEvents`] (an INIT level de-assert is ignored; an
    ///   SMI is refused without [`LapicConfig::smm`]);
    /// * start-up: taken, and latched only while the processor waits for one (after INIT), else
    ///   dropped by the processor (the APIC still accepted the message, as KVM reports it);
    /// * ExtINT: latched (KVM profile: ignored); remote read: ignored.
    ///
    /// A globally disabled APIC takes nothing.
    #[inline]
    pub fn accept(&mut self, irq: &Interrupt) -> bool {
        if !self.is_enabled() {
            return false;
        }
        let events = &mut self.state.events;
        match irq.delivery_mode {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                if irq.trigger_mode == TriggerMode::Level && !irq.level {
                    return false;
                }
                self.accept_fixed(irq.vector, irq.trigger_mode)
            }
            DeliveryMode::Nmi | DeliveryMode::Smi => self.latch(irq.delivery_mode),
            DeliveryMode::Init => {
                if irq.trigger_mode == TriggerMode::Level && !irq.level {
                    return false;
                }
                self.latch(DeliveryMode::Init)
            }
            DeliveryMode::StartUp => {
                let bsp = self.state.apic_base & ApicBase::BSP.bits() != 0;
                if self.state.wait_for_sipi || (events.init && !bsp) {
                    events.sipi = Some(irq.vector);
                }
                true
            }
            DeliveryMode::ExtInt => {
                if self.config.quirks.contains(Quirks::EXTINT_MESSAGE_IGNORED) {
                    return false;
                }
                events.extint = true;
                true
            }
            DeliveryMode::RemoteRead => false,
        }
    }

    /// Latches an NMI, SMI or INIT for the processor (whether a message or a local source
    /// sent it); returns whether it was taken. An SMI needs [`LapicConfig::smm`]; a new INIT
    /// restarts the sequence, so an earlier start-up IPI is void.
    fn latch(&mut self, mode: DeliveryMode) -> bool {
        let events = &mut self.state.events;
        match mode {
            DeliveryMode::Nmi => {
                events.nmi = events.nmi.saturating_add(1);
                true
            }
            DeliveryMode::Smi => {
                events.smi |= self.config.smm;
                self.config.smm
            }
            DeliveryMode::Init => {
                events.init = true;
                events.sipi = None;
                true
            }
            _ => false,
        }
    }

    /// Sets `vector` in IRR (and TMR for level), unless the APIC is software disabled or the
    /// vector is illegal.
    #[inline(always)]
    fn accept_fixed(&mut self, vector: u8, trigger: TriggerMode) -> bool {
        if !self.is_software_enabled() {
            return false;
        }
        if vector < 16 && !self.config.quirks.contains(Quirks::ESR_NOT_MODELLED) {
            self.error(Esr::RECEIVE_ILLEGAL_VECTOR);
            return false;
        }
        self.state.irr.insert(vector);
        self.state.tmr.set(vector, trigger == TriggerMode::Level);
        true
    }

    /// The vector the processor would take now: the highest in IRR whose priority class is
    /// above PPR's, or `None`. A VMM injects it when the vCPU can take an interrupt (IF=1 and
    /// no interrupt shadow), then calls [`LocalApic::acknowledge`].
    #[inline(always)]
    pub fn pending_interrupt(&self) -> Option<u8> {
        if !self.is_enabled() {
            return None;
        }
        let vector = self.state.irr.highest()?;
        (vector & 0xF0 > self.ppr() & 0xF0).then_some(vector)
    }

    /// The processor acknowledges an interrupt (INTA): the vector of
    /// [`LocalApic::pending_interrupt`] moves from IRR to ISR, raising PPR to its class. With
    /// nothing deliverable the APIC answers with the spurious vector and sets no ISR bit.
    #[inline(always)]
    pub fn acknowledge(&mut self) -> Ack {
        match self.pending_interrupt() {
            Some(vector) => {
                self.state.irr.remove(vector);
                self.state.isr.insert(vector);
                Ack { vector, spurious: false }
            }
            None => Ack { vector: self.state.svr as u8, spurious: true },
        }
    }

    /// An EOI: the highest in-service vector leaves service (nothing if none is). A
    /// level-triggered vector is reported for broadcast unless EOI-broadcast suppression is
    /// on; a level-triggered LINT interrupt clears its LVT remote IRR and is taken again if
    /// its pin is still asserted.
    #[inline(always)]
    fn eoi(&mut self) -> Option<u8> {
        let vector = self.state.isr.highest()?;
        self.state.isr.remove(vector);
        if !self.state.tmr.contains(vector) {
            return None;
        }
        self.lint_eoi(vector);
        if self.state.svr & Svr::SUPPRESS_EOI_BROADCAST.bits() != 0 {
            None
        } else {
            Some(vector)
        }
    }

    /// The vector the next EOI ends: the highest in-service vector, edge- or
    /// level-triggered (a VMM reports it to [`crate::ioapic::IoApic::rtc_eoi`] before it
    /// writes the EOI).
    #[inline]
    pub fn in_service(&self) -> Option<u8> {
        self.state.isr.highest()
    }

    /// Whether `vector` is requested or in service, i.e. an EOI of it is still to come
    /// (KVM's `kvm_apic_pending_eoi`; used by [`crate::ioapic::IoApic::rtc_restore`]).
    #[inline]
    pub fn pending_eoi(&self, vector: u8) -> bool {
        self.state.irr.contains(vector) || self.state.isr.contains(vector)
    }

    /// The events latched for the processor, cleared.
    #[inline]
    pub fn take_events(&mut self) -> PendingEvents {
        core::mem::take(&mut self.state.events)
    }

    /// The events latched for the processor, left in place.
    #[inline]
    pub fn events(&self) -> PendingEvents {
        self.state.events
    }

    /// Whether the processor takes its interrupts from the 8259A through LINT0 (KVM's
    /// `kvm_apic_accept_pic_intr`): the APIC is globally disabled (LINT0 is then INTR), or LVT
    /// LINT0 is unmasked with ExtINT delivery (virtual-wire mode). When the PIC's INT is high
    /// and this holds, the VMM injects the vector of the PIC's acknowledge; such interrupts
    /// bypass IRR, ISR and PPR.
    #[inline]
    pub fn accepts_pic_interrupts(&self) -> bool {
        if !self.is_enabled() {
            return true;
        }
        let lvt0 = self.state.lvt(LvtEntry::Lint0);
        lvt0 & Lvt::MASKED.bits() == 0 && DeliveryMode::from_bits(lvt0 >> 8) == DeliveryMode::ExtInt
    }

    /// Drives the LINT0 or LINT1 input pin to `level` (asserted = `true`; the polarity bit is
    /// stored but, as in every emulator, not applied: the VMM drives logical levels). Returns
    /// whether the APIC took an interrupt or event from it.
    ///
    /// Per the pin's LVT entry: fixed edge-triggered interrupts, NMI, SMI and INIT are taken on
    /// a rising edge; a fixed level-triggered interrupt is taken while the pin is asserted and
    /// the entry's remote IRR is clear, which sets remote IRR until its EOI; ExtINT takes
    /// nothing here (see [`LocalApic::accepts_pic_interrupts`]). While the APIC is globally
    /// disabled LINT1 is the NMI pin.
    pub fn set_lint(&mut self, pin: Lint, level: bool) -> bool {
        let (index, entry) = match pin {
            Lint::Lint0 => (0, LvtEntry::Lint0),
            Lint::Lint1 => (1, LvtEntry::Lint1),
        };
        let slot = match index {
            0 => &mut self.state.lint[0],
            _ => &mut self.state.lint[1],
        };
        let rising = level && !*slot;
        *slot = level;
        if !self.is_enabled() {
            if pin == Lint::Lint1 && rising {
                self.state.events.nmi = self.state.events.nmi.saturating_add(1);
                return true;
            }
            return false;
        }
        let lvt = self.state.lvt(entry);
        let level_fixed = lvt & Lvt::LEVEL_TRIGGERED.bits() != 0
            && DeliveryMode::from_bits(lvt >> 8) == DeliveryMode::Fixed;
        if level_fixed {
            level && self.local_interrupt(entry)
        } else {
            rising && self.local_interrupt(entry)
        }
    }

    /// A local interrupt source signals through LVT entry `entry` (the timer and error
    /// entries are driven by the APIC itself; the VMM signals thermal, performance-counter and
    /// CMCI events; LINT pins go through [`LocalApic::set_lint`]). Returns whether the APIC took
    /// it. A masked entry takes nothing; a performance-counter interrupt masks its entry, as
    /// Intel processors do.
    pub fn local_interrupt(&mut self, entry: LvtEntry) -> bool {
        if !self.is_enabled() || (entry == LvtEntry::Cmci && !self.config.cmci) {
            return false;
        }
        let lvt = self.state.lvt(entry);
        if lvt & Lvt::MASKED.bits() != 0 {
            return false;
        }
        let mode = match entry {
            LvtEntry::Timer | LvtEntry::Error => DeliveryMode::Fixed,
            _ => DeliveryMode::from_bits(lvt >> 8),
        };
        let lint = matches!(entry, LvtEntry::Lint0 | LvtEntry::Lint1);
        let taken = match mode {
            DeliveryMode::Fixed => {
                let level = lint && lvt & Lvt::LEVEL_TRIGGERED.bits() != 0;
                let remote_irr = level && !self.config.quirks.contains(Quirks::LINT_REMOTE_IRR_IGNORED);
                if remote_irr && lvt & Lvt::REMOTE_IRR.bits() != 0 {
                    return false;
                }
                let trigger = if level { TriggerMode::Level } else { TriggerMode::Edge };
                let taken = self.accept_fixed((lvt & LVT_VECTOR) as u8, trigger);
                if taken && remote_irr {
                    self.state.set_lvt(entry, lvt | Lvt::REMOTE_IRR.bits());
                }
                taken
            }
            DeliveryMode::Nmi | DeliveryMode::Smi => self.latch(mode),
            DeliveryMode::Init if lint => self.latch(mode),
            _ => false,
        };
        if taken && entry == LvtEntry::Perf {
            let lvt = self.state.lvt(LvtEntry::Perf);
            self.state.set_lvt(LvtEntry::Perf, lvt | Lvt::MASKED.bits());
        }
        taken
    }

    /// The EOI of level-triggered `vector`: a LINT entry holding it in service clears its
    /// remote IRR and is re-taken while its pin is still asserted.
    fn lint_eoi(&mut self, vector: u8) {
        if self.config.quirks.contains(Quirks::LINT_REMOTE_IRR_IGNORED) {
            return;
        }
        for (index, entry) in [(0, LvtEntry::Lint0), (1, LvtEntry::Lint1)] {
            let lvt = self.state.lvt(entry);
            if lvt & Lvt::REMOTE_IRR.bits() != 0 && (lvt & LVT_VECTOR) as u8 == vector {
                self.state.set_lvt(entry, lvt & !Lvt::REMOTE_IRR.bits());
                let asserted = if index == 0 { self.state.lint[0] } else { self.state.lint[1] };
                if asserted && lvt & Lvt::LEVEL_TRIGGERED.bits() != 0 {
                    self.local_interrupt(entry);
                }
            }
        }
    }

    /// Records an error in the ESR accumulator and reports it through the error LVT. An error
    /// LVT holding an illegal vector records "receive illegal vector" without a second
    /// interrupt, so the report cannot recurse.
    fn error(&mut self, error: Esr) {
        if self.config.quirks.contains(Quirks::ESR_NOT_MODELLED) {
            return;
        }
        self.state.esr_pending |= error.bits();
        let lvt = self.state.lvt(LvtEntry::Error);
        if !self.is_software_enabled() || lvt & Lvt::MASKED.bits() != 0 {
            return;
        }
        let vector = (lvt & LVT_VECTOR) as u8;
        if vector < 16 {
            self.state.esr_pending |= Esr::RECEIVE_ILLEGAL_VECTOR.bits();
            return;
        }
        self.state.irr.insert(vector);
        self.state.tmr.remove(vector);
    }

    // ----- time ---------------------------------------------------------------------------

    /// The bus-clock tick at host TSC `now`.
    #[inline(always)]
    pub fn bus_ticks(&self, now: u64) -> u64 {
        self.config.bus.ticks(now)
    }

    /// The LVT timer's mode.
    #[inline(always)]
    fn timer_mode(&self) -> TimerMode {
        TimerMode::of(self.state.lvt(LvtEntry::Timer))
    }

    /// Time has reached host TSC `now`: a countdown that reached zero, or a TSC deadline the
    /// guest TSC reached, fires (once, however late the call: missed periods coalesce as
    /// they would in IRR) and delivers the LVT timer interrupt unless the entry is masked.
    /// Returns whether the timer fired.
    #[inline(always)]
    pub fn advance(&mut self, now: u64) -> bool {
        let timer = &self.state.timer;
        if timer.expiry.is_none() && timer.tsc_deadline == 0 {
            // Nothing armed: the common case on every register access.
            return false;
        }
        self.advance_armed(now)
    }

    #[inline(never)]
    fn advance_armed(&mut self, now: u64) -> bool {
        let mode = self.timer_mode();
        let fired = if mode == TimerMode::TscDeadline {
            let mut deadline = TscDeadline::with_value(self.state.timer.tsc_deadline);
            let fired = deadline.advance(&self.config.guest_tsc, now);
            self.state.timer.tsc_deadline = deadline.read();
            fired
        } else {
            let bus = self.bus_ticks(now);
            self.state.timer.expire(mode, bus, self.config.min_period())
        };
        if fired {
            self.local_interrupt(LvtEntry::Timer);
        }
        fired
    }

    /// The host TSC at which the timer next fires: when to call [`LocalApic::advance`]
    /// (`now` itself when it is already due), or `None` if the timer is stopped or never fires.
    /// A masked timer still counts (its expiry changes the current count and consumes a
    /// deadline), so it is reported too.
    #[inline]
    pub fn next_deadline(&self, now: u64) -> Option<u64> {
        if self.timer_mode() == TimerMode::TscDeadline {
            return TscDeadline::with_value(self.state.timer.tsc_deadline)
                .next_deadline(&self.config.guest_tsc, now);
        }
        let expiry = self.state.timer.expiry?;
        Some(self.config.bus.host_tsc_at(expiry)?.max(now))
    }

    // ----- guest register access ----------------------------------------------------------

    /// A guest read of `data.len()` bytes at `offset` in the xAPIC page.
    ///
    /// An aligned 32-bit read of a register's slot is the normal case. Outside xAPIC mode the
    /// page is not decoded and reads all ones (KVM: `KVM_X86_QUIRK_LAPIC_MMIO_HOLE`).
    ///
    /// Other reads differ by profile:
    /// * SDM profile: every in-page read returns the bytes of each 16-byte slot it touches
    ///   (the register in bytes 0–3, zeros above; an offset without a readable register reads
    ///   0), and a read reaching past the page reads all ones.
    /// * KVM profile ([`Quirks::UNDECODED_READS_UNWRITTEN`]): as `kvm_lapic_reg_read`, only a
    ///   1-, 2- or 4-byte read within the first four bytes of a readable register writes
    ///   `data`; any other read (bytes past the register's first four —
    ///   `(offset & 0xF) + len > 4`, which covers 8-byte reads and reads past the page — another length, or an
    ///   offset without a readable register: reserved, EOI, remote read, beyond 0x3F0) leaves
    ///   `data` exactly as the caller passed it. The guest then sees what the VMM's buffer
    ///   held; under KVM that is the instruction emulator's read cache, i.e. the bytes of the
    ///   last emulated read.
    ///
    /// Either way the odd access is reported in [`Effects::invalid`].
    pub fn mmio_read(&mut self, offset: u64, data: &mut [u8], now: u64) -> Effects {
        if self.mode() != ApicMode::XApic {
            data.fill(0xFF);
            return Effects { invalid: Some(AccessError::NotDecoded), ..Effects::default() };
        }
        let unwritten = self.config.quirks.contains(Quirks::UNDECODED_READS_UNWRITTEN);
        let end = offset.saturating_add(data.len() as u64);
        if end > regs::MMIO_SIZE {
            if !unwritten {
                data.fill(0xFF);
            }
            return Effects { invalid: Some(AccessError::OutOfRange), ..Effects::default() };
        }
        if unwritten {
            return self.mmio_read_kvm(offset as u32, data, now);
        }
        self.advance(now);
        let mut invalid = None;
        if offset & 0xF == 0 && data.len() == 4 {
            let value = self.read_slot(offset as u32, now, &mut invalid);
            data.copy_from_slice(&value.to_le_bytes());
            return Effects { invalid, ..Effects::default() };
        }
        let mut slot_value = None;
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset.saturating_add(i as u64) as u32;
            let slot = at & !0xF;
            let value = match slot_value {
                Some((s, v)) if s == slot => v,
                _ => {
                    let v = self.read_slot(slot, now, &mut invalid);
                    slot_value = Some((slot, v));
                    v
                }
            };
            let shift = (at & 0xF).saturating_mul(8);
            *byte = if shift < 32 { (value >> shift) as u8 } else { 0 };
        }
        Effects { invalid: invalid.or(Some(AccessError::Width)), ..Effects::default() }
    }

    /// [`LocalApic::mmio_read`] in the KVM profile, in page (`offset + data.len() <= 0x1000`):
    /// `kvm_lapic_reg_read`'s alignment, length and readable-register checks.
    fn mmio_read_kvm(&mut self, offset: u32, data: &mut [u8], now: u64) -> Effects {
        let within = offset & 0xF;
        let len = data.len();
        let width = Effects { invalid: Some(AccessError::Width), ..Effects::default() };
        if (within as usize).saturating_add(len) > 4 || !matches!(len, 1 | 2 | 4) {
            return width;
        }
        let slot = offset & !0xF;
        if slot == regs::RRD {
            // Not in KVM's readable-register mask.
            return Effects { invalid: Some(AccessError::Unreadable), ..Effects::default() };
        }
        self.advance(now);
        match self.read_register(slot, false, now) {
            Ok(value) => {
                let bytes = value.to_le_bytes();
                let from = within as usize;
                if let Some(source) = bytes.get(from..from.saturating_add(len)) {
                    data.copy_from_slice(source);
                }
                if within == 0 && len == 4 {
                    Effects::default()
                } else {
                    width
                }
            }
            Err(Refused::Absent) => {
                self.error(Esr::ILLEGAL_REGISTER_ADDRESS);
                Effects { invalid: Some(AccessError::Reserved), ..Effects::default() }
            }
            Err(_) => Effects { invalid: Some(AccessError::Unreadable), ..Effects::default() },
        }
    }

    /// Reads register slot `offset` for MMIO; a reserved slot reads 0 and records ESR
    /// "illegal register address".
    fn read_slot(&mut self, offset: u32, now: u64, invalid: &mut Option<AccessError>) -> u32 {
        match self.read_register(offset, false, now) {
            Ok(value) => value,
            Err(Refused::Absent) => {
                self.error(Esr::ILLEGAL_REGISTER_ADDRESS);
                *invalid = Some(AccessError::Reserved);
                0
            }
            // Write-only registers (EOI) read 0 in xAPIC mode.
            Err(_) => 0,
        }
    }

    /// A guest write of `data` at `offset` in the xAPIC page. Only an aligned 32-bit write to
    /// a register's slot is decoded (SDM: registers are accessed with aligned 32-bit stores);
    /// anything else is dropped and reported. Outside xAPIC mode the page is not decoded.
    #[inline]
    pub fn mmio_write(&mut self, offset: u64, data: &[u8], now: u64) -> Effects {
        if offset == u64::from(regs::EOI) && data.len() == 4 && self.mode() == ApicMode::XApic {
            // The hottest register: end of interrupt takes no value and no time.
            return Effects { eoi: self.eoi(), ..Effects::default() };
        }
        self.mmio_write_slow(offset, data, now)
    }

    fn mmio_write_slow(&mut self, offset: u64, data: &[u8], now: u64) -> Effects {
        if self.mode() != ApicMode::XApic {
            return Effects { invalid: Some(AccessError::NotDecoded), ..Effects::default() };
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return Effects { invalid: Some(AccessError::Width), ..Effects::default() };
        };
        if offset >= regs::MMIO_SIZE {
            return Effects { invalid: Some(AccessError::OutOfRange), ..Effects::default() };
        }
        if offset & 0xF != 0 {
            return Effects { invalid: Some(AccessError::Width), ..Effects::default() };
        }
        self.advance(now);
        let offset = offset as u32;
        match self.write_register(offset, u32::from_le_bytes(bytes), false, now) {
            Ok(effects) => effects,
            Err(Refused::Absent) => {
                self.error(Esr::ILLEGAL_REGISTER_ADDRESS);
                Effects { invalid: Some(AccessError::Reserved), ..Effects::default() }
            }
            // Writes to read-only registers are ignored in xAPIC mode.
            Err(_) => Effects::default(),
        }
    }

    /// RDMSR of an MSR the local APIC owns: IA32_APIC_BASE, IA32_TSC_DEADLINE (0 outside
    /// TSC-deadline mode) and, in x2APIC mode, the x2APIC registers (the ICR as 64 bits).
    pub fn rdmsr(&mut self, msr: u32, now: u64) -> Result<u64, MsrError> {
        match msr {
            regs::IA32_APIC_BASE => Ok(self.state.apic_base),
            regs::IA32_TSC_DEADLINE => {
                if !self.config.tsc_deadline {
                    return Err(MsrError::GeneralProtection);
                }
                self.advance(now);
                let armed = self.is_enabled() && self.timer_mode() == TimerMode::TscDeadline;
                Ok(if armed { self.state.timer.tsc_deadline } else { 0 })
            }
            regs::X2APIC_MSR_BASE..=regs::X2APIC_MSR_LAST => {
                if self.mode() != ApicMode::X2Apic {
                    return Err(MsrError::GeneralProtection);
                }
                let offset = msr.wrapping_sub(regs::X2APIC_MSR_BASE) << 4;
                if offset == regs::ICR_LOW {
                    return Ok(self.state.icr);
                }
                if offset > regs::SELF_IPI {
                    return Err(MsrError::GeneralProtection);
                }
                self.advance(now);
                self.read_register(offset, true, now).map(u64::from).map_err(|_| MsrError::GeneralProtection)
            }
            _ => Err(MsrError::NotApicMsr),
        }
    }

    /// WRMSR of an MSR the local APIC owns (see [`LocalApic::rdmsr`]). IA32_APIC_BASE follows
    /// the SDM's mode transitions (disabled ↔ xAPIC → x2APIC → disabled; anything else #GP);
    /// IA32_TSC_DEADLINE is ignored outside TSC-deadline mode.
    #[inline]
    pub fn wrmsr(&mut self, msr: u32, value: u64, now: u64) -> Result<Effects, MsrError> {
        if msr == X2APIC_EOI_MSR && value == 0 && self.mode() == ApicMode::X2Apic {
            // The hottest register: end of interrupt takes no value and no time.
            return Ok(Effects { eoi: self.eoi(), ..Effects::default() });
        }
        self.wrmsr_slow(msr, value, now)
    }

    fn wrmsr_slow(&mut self, msr: u32, value: u64, now: u64) -> Result<Effects, MsrError> {
        match msr {
            regs::IA32_APIC_BASE => self.write_apic_base(value, false).map(|()| Effects::default()),
            regs::IA32_TSC_DEADLINE => {
                if !self.config.tsc_deadline {
                    return Err(MsrError::GeneralProtection);
                }
                self.advance(now);
                if self.is_enabled() && self.timer_mode() == TimerMode::TscDeadline {
                    self.state.timer.tsc_deadline = value;
                    self.advance(now);
                }
                Ok(Effects::default())
            }
            regs::X2APIC_MSR_BASE..=regs::X2APIC_MSR_LAST => {
                if self.mode() != ApicMode::X2Apic {
                    return Err(MsrError::GeneralProtection);
                }
                let offset = msr.wrapping_sub(regs::X2APIC_MSR_BASE) << 4;
                if offset > regs::SELF_IPI {
                    return Err(MsrError::GeneralProtection);
                }
                self.advance(now);
                if offset == regs::ICR_LOW {
                    return self.write_x2apic_icr(value);
                }
                // Bits 63:32 of every x2APIC register but the ICR are reserved.
                let Ok(low) = u32::try_from(value) else { return Err(MsrError::GeneralProtection) };
                self.write_register(offset, low, true, now).map_err(|_| MsrError::GeneralProtection)
            }
            _ => Err(MsrError::NotApicMsr),
        }
    }

    /// IA32_APIC_BASE written by the host (restore, VMM setup): the reserved-bit checks apply,
    /// the guest's transition rules do not (KVM's host-initiated writes).
    pub fn host_write_apic_base(&mut self, value: u64) -> Result<(), MsrError> {
        self.write_apic_base(value, true)
    }

    fn write_apic_base(&mut self, value: u64, host: bool) -> Result<(), MsrError> {
        let old = self.state.apic_base;
        let mut value = value;
        if !host && !self.config.quirks.contains(Quirks::BSP_WRITABLE) {
            value = (value & !ApicBase::BSP.bits()) | (old & ApicBase::BSP.bits());
        }
        if value == old {
            return Ok(());
        }
        let new_mode = ApicMode::of(value);
        if value & self.config.apic_base_reserved() != 0 || new_mode == ApicMode::Invalid {
            return Err(MsrError::GeneralProtection);
        }
        let old_mode = ApicMode::of(old);
        if !host
            && matches!(
                (old_mode, new_mode),
                (ApicMode::X2Apic, ApicMode::XApic) | (ApicMode::Disabled, ApicMode::X2Apic)
            )
        {
            return Err(MsrError::GeneralProtection);
        }
        self.state.apic_base = value;
        let was_enabled = old & ApicBase::EN.bits() != 0;
        let enabled = value & ApicBase::EN.bits() != 0;
        let leaves_x2apic = old_mode == ApicMode::X2Apic && new_mode != ApicMode::X2Apic;
        if ((was_enabled && !enabled) || leaves_x2apic)
            && !self.config.quirks.contains(Quirks::DISABLE_KEEPS_STATE)
        {
            // SDM: clearing EN loses the APIC's state, and no register but the ID survives a
            // transition out of x2APIC mode (a host write may make it directly).
            self.state.reset_registers(&self.config);
            self.state.events = PendingEvents::default();
        }
        if enabled && (!was_enabled || leaves_x2apic) {
            // The xAPIC ID starts again from the x2APIC ID (KVM: `kvm_apic_set_xapic_id`).
            self.state.xapic_id = self.config.id as u8;
        }
        if new_mode == ApicMode::X2Apic && old_mode != ApicMode::X2Apic {
            // The logical x2APIC ID is initialised from the x2APIC ID.
            self.state.ldr = x2apic_ldr(self.config.id);
        }
        Ok(())
    }

    /// Reads register `offset` in xAPIC (`x2apic == false`) or x2APIC mode (32 bits; the
    /// x2APIC ICR is read by the caller).
    fn read_register(&self, offset: u32, x2apic: bool, now: u64) -> Result<u32, Refused> {
        let s = &self.state;
        Ok(match offset {
            regs::ID => {
                if x2apic {
                    self.config.id
                } else {
                    u32::from(s.xapic_id) << 24
                }
            }
            regs::VERSION => self.config.version(),
            regs::TPR => u32::from(s.tpr),
            regs::APR if !x2apic => {
                if self.config.quirks.contains(Quirks::APR_READS_ZERO) {
                    0
                } else {
                    u32::from(self.apr())
                }
            }
            regs::PPR => u32::from(self.ppr()),
            regs::EOI => return Err(Refused::ReadOnly),
            regs::RRD if !x2apic => 0,
            regs::LDR => s.ldr,
            regs::DFR if !x2apic => s.dfr,
            regs::SVR => s.svr,
            0x100..=0x270 => {
                let index = ((offset & 0x70) >> 4) as usize;
                match offset & 0x380 {
                    0x100 => s.isr.word32(index),
                    0x180 => s.tmr.word32(index),
                    _ => s.irr.word32(index),
                }
            }
            regs::ESR => s.esr,
            regs::LVT_CMCI if self.config.cmci => s.lvt(LvtEntry::Cmci),
            regs::ICR_LOW if !x2apic => s.icr as u32,
            regs::ICR_HIGH if !x2apic => (s.icr >> 32) as u32,
            regs::LVT_TIMER..=regs::LVT_ERROR if offset & 0xF == 0 => {
                s.lvt(LvtEntry::at(offset).ok_or(Refused::Absent)?)
            }
            regs::TIMER_INITIAL_COUNT => s.timer.initial_count,
            regs::TIMER_CURRENT_COUNT => {
                s.timer.current_count(self.timer_mode(), self.bus_ticks(now), self.config.min_period())
            }
            regs::TIMER_DIVIDE_CONFIG => s.timer.divide_config,
            regs::SELF_IPI if x2apic => return Err(Refused::ReadOnly),
            _ => return Err(Refused::Absent),
        })
    }

    /// Writes register `offset` in xAPIC or x2APIC mode (the x2APIC ICR is the caller's).
    fn write_register(
        &mut self,
        offset: u32,
        value: u32,
        x2apic: bool,
        now: u64,
    ) -> Result<Effects, Refused> {
        let quirks = self.config.quirks;
        let strict = x2apic && !quirks.contains(Quirks::X2APIC_RESERVED_BITS_DROPPED);
        let check =
            |valid: u32| if strict && value & !valid != 0 { Err(Refused::ReservedBits) } else { Ok(()) };
        let mut effects = Effects::default();
        match offset {
            regs::ID => {
                if x2apic {
                    return Err(Refused::ReadOnly);
                }
                self.state.xapic_id = (value >> 24) as u8;
            }
            regs::TPR => {
                check(0xFF)?;
                self.state.tpr = value as u8;
            }
            regs::EOI => {
                if x2apic && value != 0 && !quirks.contains(Quirks::X2APIC_EOI_ANY_VALUE) {
                    return Err(Refused::ReservedBits);
                }
                effects.eoi = self.eoi();
            }
            regs::LDR => {
                if x2apic {
                    return Err(Refused::ReadOnly);
                }
                self.state.ldr = value & 0xFF00_0000;
            }
            regs::DFR if !x2apic => self.state.dfr = value | 0x0FFF_FFFF,
            regs::SVR => {
                let writable = self.config.svr_writable();
                check(writable)?;
                self.state.svr = value & writable;
                if value & Svr::APIC_ENABLE.bits() == 0 {
                    // Software disable masks every LVT entry; software must rewrite them.
                    for entry in LvtEntry::ALL {
                        if entry != LvtEntry::Cmci || self.config.cmci {
                            let lvt = self.state.lvt(entry);
                            self.state.set_lvt(entry, lvt | Lvt::MASKED.bits());
                        }
                    }
                }
            }
            regs::ESR => {
                if x2apic && value != 0 {
                    return Err(Refused::ReservedBits);
                }
                if !quirks.contains(Quirks::ESR_NOT_MODELLED) {
                    // Write-then-read: the errors since the last write become readable.
                    self.state.esr = self.state.esr_pending;
                    self.state.esr_pending = 0;
                }
            }
            regs::ICR_LOW if !x2apic => {
                let stored = if quirks.contains(Quirks::RESERVED_BITS_STORED) {
                    u64::from(value) & !ICR_DELIVERY_STATUS
                } else {
                    u64::from(value) & ICR_LOW_WRITABLE
                };
                self.state.icr = (self.state.icr & 0xFFFF_FFFF_0000_0000) | stored;
                effects.ipi = self.send_ipi(self.state.icr, false);
            }
            regs::ICR_HIGH if !x2apic => {
                self.state.icr =
                    (self.state.icr & 0xFFFF_FFFF) | ((u64::from(value) << 32) & ICR_HIGH_XAPIC_DEST);
            }
            regs::LVT_CMCI | regs::LVT_TIMER..=regs::LVT_ERROR => {
                let entry = LvtEntry::at(offset).ok_or(Refused::Absent)?;
                if entry == LvtEntry::Cmci && !self.config.cmci {
                    return Err(Refused::Absent);
                }
                self.write_lvt(entry, value, strict)?;
            }
            regs::TIMER_INITIAL_COUNT => {
                let mode = self.timer_mode();
                if mode != TimerMode::TscDeadline {
                    let bus = self.bus_ticks(now);
                    self.state.timer.start(value, mode, bus, self.config.min_period());
                }
            }
            regs::TIMER_DIVIDE_CONFIG => {
                check(TDCR_WRITABLE)?;
                let bus = self.bus_ticks(now);
                self.state.timer.set_divide(value & TDCR_WRITABLE, bus);
            }
            regs::SELF_IPI if x2apic => {
                if value & !0xFF != 0 {
                    return Err(Refused::ReservedBits);
                }
                let vector = value as u8;
                if vector < 16 && !quirks.contains(Quirks::ESR_NOT_MODELLED) {
                    self.error(Esr::SEND_ILLEGAL_VECTOR);
                } else {
                    self.accept_fixed(vector, TriggerMode::Edge);
                }
            }
            regs::VERSION | regs::PPR | regs::TIMER_CURRENT_COUNT | 0x100..=0x270 => {
                return Err(Refused::ReadOnly);
            }
            regs::APR | regs::RRD if !x2apic => return Err(Refused::ReadOnly),
            _ => return Err(Refused::Absent),
        }
        Ok(effects)
    }

    /// An LVT write: the writable bits are kept (read-only bits keep their value), a
    /// software-disabled APIC forces the mask, and the timer entry applies a mode change.
    fn write_lvt(&mut self, entry: LvtEntry, value: u32, strict: bool) -> Result<(), Refused> {
        let quirks = self.config.quirks;
        let mut writable = if quirks.contains(Quirks::RESERVED_BITS_STORED) {
            entry.kvm_writable()
        } else {
            entry.writable()
        };
        if entry == LvtEntry::Timer && !self.config.tsc_deadline {
            // Timer mode 1x needs CPUID TSC-deadline support.
            writable &= !(1 << 18);
        }
        if strict {
            let read_only = Lvt::DELIVERY_STATUS.bits() | Lvt::REMOTE_IRR.bits();
            if value & !(writable | read_only) != 0 {
                return Err(Refused::ReservedBits);
            }
        }
        let old = self.state.lvt(entry);
        let mut new = (value & writable) | (old & !writable & Lvt::REMOTE_IRR.bits());
        if matches!(entry, LvtEntry::Lint0 | LvtEntry::Lint1)
            && !quirks.contains(Quirks::RESERVED_BITS_STORED)
        {
            // Remote IRR belongs to the hardware.
            new = (new & !Lvt::REMOTE_IRR.bits()) | (old & Lvt::REMOTE_IRR.bits());
        }
        if self.state.svr & Svr::APIC_ENABLE.bits() == 0 {
            new |= Lvt::MASKED.bits();
        }
        self.state.set_lvt(entry, new);
        match entry {
            LvtEntry::Timer => self.state.timer.change_mode(TimerMode::of(old), TimerMode::of(new)),
            LvtEntry::Lint0 | LvtEntry::Lint1 => {
                // A level-triggered input is sampled, not latched: a pin still asserted is taken
                // once the entry allows it (unmasked, level, fixed, remote IRR clear).
                let asserted = if entry == LvtEntry::Lint0 { self.state.lint[0] } else { self.state.lint[1] };
                let level_fixed = new & Lvt::LEVEL_TRIGGERED.bits() != 0
                    && DeliveryMode::from_bits(new >> 8) == DeliveryMode::Fixed;
                if asserted && level_fixed {
                    self.local_interrupt(entry);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A WRMSR to the x2APIC ICR (0x830): bits 31:20, 17:16 and 13 must be 0, bit 12 is
    /// ignored; the write sends the IPI.
    fn write_x2apic_icr(&mut self, value: u64) -> Result<Effects, MsrError> {
        if value & ICR_X2APIC_RESERVED != 0 {
            return Err(MsrError::GeneralProtection);
        }
        self.state.icr = value & !ICR_DELIVERY_STATUS;
        Ok(Effects { ipi: self.send_ipi(self.state.icr, true), ..Effects::default() })
    }

    /// The message an ICR write sends, or `None` if it sends nothing (SDM "Valid Combinations
    /// for the ... Interrupt Command Register").
    fn send_ipi(&mut self, icr: u64, x2apic: bool) -> Option<Interrupt> {
        let quirks = self.config.quirks;
        let vector = (icr & regs::ICR_VECTOR) as u8;
        let mode = DeliveryMode::from_bits((icr >> ICR_DELIVERY_MODE_SHIFT) as u32);
        let shorthand = Shorthand::from_bits((icr >> ICR_SHORTHAND_SHIFT) as u32);
        let level = icr & ICR_LEVEL_ASSERT != 0;
        let mut trigger = if icr & ICR_TRIGGER_LEVEL != 0 { TriggerMode::Level } else { TriggerMode::Edge };
        // The legacy INIT level de-assert re-synchronises arbitration IDs on the old APIC bus;
        // modern processors do not send it (and KVM's targets ignore it).
        if mode == DeliveryMode::Init && trigger == TriggerMode::Level && !level {
            return None;
        }
        if !quirks.contains(Quirks::ICR_UNCHECKED) {
            if matches!(mode, DeliveryMode::RemoteRead | DeliveryMode::ExtInt) {
                return None;
            }
            if matches!(shorthand, Shorthand::ToSelf | Shorthand::AllIncludingSelf)
                && mode != DeliveryMode::Fixed
            {
                return None;
            }
        }
        if matches!(mode, DeliveryMode::Fixed | DeliveryMode::LowestPriority)
            && vector < 16
            && !quirks.contains(Quirks::ESR_NOT_MODELLED)
        {
            self.error(Esr::SEND_ILLEGAL_VECTOR);
            return None;
        }
        if trigger == TriggerMode::Level && !quirks.contains(Quirks::LEVEL_IPI_KEPT) {
            // Intel: a level-triggered IPI is sent as edge-triggered when it asserts, and not
            // at all when it de-asserts.
            if !level {
                return None;
            }
            trigger = TriggerMode::Edge;
        }
        let destination = if x2apic { (icr >> 32) as u32 } else { (icr >> 56) as u32 };
        Some(Interrupt {
            vector,
            delivery_mode: mode,
            destination_mode: if icr & ICR_DEST_LOGICAL != 0 {
                DestinationMode::Logical
            } else {
                DestinationMode::Physical
            },
            trigger_mode: trigger,
            level,
            destination,
            shorthand,
            redirection_hint: false,
        })
    }

    // ----- INIT, RESET, state ---------------------------------------------------------------

    /// The processor took an INIT (after [`LocalApic::take_events`] reported one): every
    /// register but the ID goes to its INIT value, the mode and base are kept (an x2APIC stays
    /// in x2APIC mode, a disabled one stays disabled), latched events are dropped and an AP
    /// waits for a start-up IPI.
    pub fn init(&mut self) {
        self.state.reset_registers(&self.config);
        self.state.events = PendingEvents::default();
        self.state.wait_for_sipi = !self.is_bsp();
    }

    /// The processor took the start-up IPI (reported by [`LocalApic::take_events`]): it no
    /// longer waits for one.
    pub fn sipi_taken(&mut self) {
        self.state.wait_for_sipi = false;
    }

    /// RESET: the power-on state (xAPIC mode at the default base, the ID from the
    /// configuration). The LINT input levels are the devices' and stay.
    pub fn reset(&mut self) {
        let lint = self.state.lint;
        self.state = LocalApicState::power_on(&self.config);
        self.state.lint = lint;
    }

    /// A copy of the complete state.
    #[inline]
    pub fn state(&self) -> LocalApicState {
        self.state
    }

    /// Replaces the state after validating it against the configuration; on error the APIC is
    /// unchanged. `restore(&state())` is the identity. A timer countdown is absolute on the bus
    /// clock: move a snapshot from another host with [`LocalApicState::moved`].
    pub fn restore(&mut self, state: &LocalApicState) -> Result<(), StateError> {
        state.validate(&self.config)?;
        self.state = *state;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
