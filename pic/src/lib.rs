//! The Intel 8259A programmable interrupt controller pair of the PC (master + slave cascaded
//! on IR2) with the PIIX/ICH edge/level control registers, as a plain-data model for virtual
//! machine monitors.
//!
//! * Every ICW and OCW: the initialisation sequence with IC4, SNGL and LTIM; the mask; every
//!   EOI, rotation and priority command; read IRR/ISR, poll and special mask mode.
//! * Automatic EOI (with rotation), special fully nested mode, edge and level triggering
//!   (ELCR and LTIM), cascade as ICW3 programs it (the master's slave map, the slave's ID;
//!   an unanswered cascade floats the bus to 0xFF), spurious IRQ7 and IRQ15, and input lines
//!   shared by several sources.
//! * Time-free and callback-free: each call returns what it caused ([`Effects`], [`Ack`],
//!   [`LineStatus`]); the VMM asks [`Pic::intr`] / [`Pic::pending_vector`] to decide
//!   injection and calls [`Pic::acknowledge`] when the CPU takes the interrupt.
//! * Two behaviour profiles: the datasheet ([`Quirks::DATASHEET`], the default) and Linux
//!   KVM's in-kernel PIC ([`Quirks::KVM`]), each divergence a named [`Quirks`] flag.
//! * [`PicState`] is plain data with a validating [`Pic::restore`]; feature `serde` derives
//!   serialization and feature `kvm` converts to and from `kvm_pic_state` (module `kvm`).
//!
//! No guest input can panic the model: every port, width and byte has a defined answer.
//!
//! ```
//! use vm_pic::{Pic, regs::*};
//!
//! let mut pic = Pic::default();
//! // Linux's init sequence (see `arch/x86/kernel/i8259.c`).
//! for (port, byte) in [
//!     (MASTER_COMMAND, 0x11), // ICW1: edge, cascade, ICW4 follows
//!     (MASTER_DATA, 0x30),    // ICW2: vectors 0x30-0x37
//!     (MASTER_DATA, 0x04),    // ICW3: slave on IR2
//!     (MASTER_DATA, 0x01),    // ICW4: 8086 mode, normal EOI
//!     (SLAVE_COMMAND, 0x11),  // ICW1
//!     (SLAVE_DATA, 0x38),     // ICW2: vectors 0x38-0x3f
//!     (SLAVE_DATA, 0x02),     // ICW3: slave ID 2
//!     (SLAVE_DATA, 0x01),     // ICW4
//! ] {
//!     let _ = pic.write(port, byte);
//! }
//! pic.pulse_irq(12).unwrap();
//! assert_eq!(pic.pending_vector(), Some(0x3c));
//! assert_eq!(pic.acknowledge().vector, 0x3c);
//! let _ = pic.write(SLAVE_COMMAND, 0x64); // specific EOI, IRQ12
//! let _ = pic.write(MASTER_COMMAND, 0x62); // specific EOI, IR2
//! assert!(!pic.intr());
//! ```

#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

mod chip;
#[cfg(all(feature = "kvm", target_arch = "x86_64", target_os = "linux"))]
pub mod kvm;
mod quirks;
pub mod regs;
mod state;

pub use quirks::Quirks;
pub use state::{Chip, ChipState, InitState, PicState, StateError};

use chip::bit;
use regs::{Icw1, Icw4, Ocw2, Ocw3, CASCADE_IRQ, POLL_INT};

/// KVM_IRQ_LINE_STATUS's answer to a line change: what the request register made of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LineStatus {
    /// The line is masked in IMR (KVM: −1). A latched edge is still delivered on unmask.
    Masked,
    /// The request was already pending, so this assert merged into it (KVM: 0). VMMs use
    /// this to count coalesced timer ticks.
    Coalesced,
    /// The change was taken (a new request, a deassert, or an assert of a line already high;
    /// KVM: 1).
    Accepted,
}

/// Why an input-line call was refused. Line numbers come from the VMM, not the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LineError {
    /// IRQ lines are 0–15.
    NoSuchLine(u8),
    /// Sources are 0–31.
    NoSuchSource(u8),
}

impl core::fmt::Display for LineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LineError::NoSuchLine(irq) => write!(f, "PIC line {irq} does not exist (0-15)"),
            LineError::NoSuchSource(s) => write!(f, "PIC source {s} does not exist (0-31)"),
        }
    }
}

impl core::error::Error for LineError {}

/// A guest access the PIC does not decode. It still got the documented answer; the value is
/// for the VMM to log or count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessError {
    /// The port is not one of [`regs::PORTS`]: writes are ignored, reads float to 0xFF.
    UnknownPort(u16),
    /// The access was this many bytes wide (saturating at `u16::MAX`), not one. Datasheet
    /// profile: the bytes went to consecutive ports, as the PC bus splits a wide access to an
    /// 8-bit device. KVM profile: ignored, reads return 0.
    Width(u16),
}

impl AccessError {
    fn width(len: usize) -> Self {
        AccessError::Width(u16::try_from(len).unwrap_or(u16::MAX))
    }
}

/// What an access caused, for the VMM to act on.
///
/// The INT output is not repeated here: ask [`Pic::intr`] after any call that may raise it.
#[must_use]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Effects {
    /// End-of-interrupt notifications: bit n is set when IRQ n left service (EOI command,
    /// automatic EOI, a KVM-profile poll) or had its request cancelled by ICW1. A device on a
    /// level-triggered line resamples its line when it sees its bit; the cascade level (bit
    /// 2) is reported too. A level is reported only if it was in service (KVM also notifies
    /// for a specific EOI of a level that was not, and its slave poll clears master ISR2
    /// without notifying).
    pub eoi: u16,
    /// The access was not one the hardware decodes (see [`AccessError`]).
    pub invalid: Option<AccessError>,
}

impl Effects {
    const fn with_eoi(eoi: u16) -> Self {
        Effects { eoi, invalid: None }
    }

    /// The IRQ lines of [`Effects::eoi`], lowest first.
    pub fn eoi_lines(&self) -> impl Iterator<Item = u8> {
        let eoi = self.eoi;
        (0..16u8).filter(move |irq| eoi & (1 << irq) != 0)
    }
}

/// The result of an interrupt acknowledge (the CPU's INTA cycles).
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ack {
    /// The vector the CPU takes: the answering chip's base with the level in bits 2:0, or
    /// [`regs::FLOATING_BUS`] (0xFF) when the master addressed a slave that does not answer.
    pub vector: u8,
    /// The IRQ line acknowledged, 0–15; 7 or 15 for a spurious interrupt. For a slave level
    /// (8–15) the master also set the ISR bit of the input that addressed the slave (IR2 on
    /// the PC). For a cascade nobody answered, the master level that went in service.
    pub irq: u8,
    /// No request was there: the chip answered with its IR7 vector and set no ISR bit of its
    /// own (for IRQ15 the master did set the ISR bit of the cascaded input, IR2 on the PC,
    /// so the guest must EOI the master).
    pub spurious: bool,
    /// Automatic-EOI notifications caused by this acknowledge (same meaning as [`Effects::eoi`]).
    pub eoi: u16,
}

/// What the INTA cycles do, decided by the master's request and the ICW3 wiring.
#[derive(Clone, Copy)]
enum Inta {
    /// No request: spurious IRQ7.
    Spurious,
    /// A master input without a slave: the master supplies the vector.
    Master(u8),
    /// A cascaded master input whose address the slave answers, with its request (or
    /// nothing: spurious IRQ15).
    Slave { master: u8, slave: Option<u8> },
    /// A cascaded master input nobody answers: the bus floats.
    Unanswered(u8),
}

/// The slave's INT output in `state`, as the level it presents.
#[inline(always)]
fn slave_request(state: &PicState, quirks: Quirks) -> Option<u8> {
    let slave = &state.slave;
    let live = slave.init_state == InitState::Ready || quirks.contains(Quirks::LIVE_DURING_INIT);
    if slave.irr & !slave.imr == 0 || !live {
        return None;
    }
    slave.request(0, false, quirks)
}

/// The master/slave 8259A pair with ELCR1/ELCR2.
///
/// `Default` is the power-on state in the datasheet profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pic {
    state: PicState,
    quirks: Quirks,
}

impl Pic {
    /// A PIC pair in its power-on state with the given behaviour profile.
    pub fn new(quirks: Quirks) -> Self {
        Pic { state: PicState::default(), quirks }
    }

    /// The behaviour profile.
    pub fn quirks(&self) -> Quirks {
        self.quirks
    }

    // ----- guest port I/O -------------------------------------------------------------

    /// A one-byte guest write to `port`.
    pub fn write(&mut self, port: u16, value: u8) -> Effects {
        let effects = match port {
            regs::MASTER_COMMAND => self.write_command(Chip::Master, value),
            regs::MASTER_DATA => self.write_data(Chip::Master, value),
            regs::SLAVE_COMMAND => self.write_command(Chip::Slave, value),
            regs::SLAVE_DATA => self.write_data(Chip::Slave, value),
            regs::ELCR1 => self.write_elcr(Chip::Master, value),
            regs::ELCR2 => self.write_elcr(Chip::Slave, value),
            _ => Effects { eoi: 0, invalid: Some(AccessError::UnknownPort(port)) },
        };
        self.settle_cascade();
        effects
    }

    /// A one-byte guest read of `port`. Reads have effects: a poll read acknowledges.
    pub fn read(&mut self, port: u16) -> (u8, Effects) {
        let result = match port {
            regs::MASTER_COMMAND => self.read_command(Chip::Master),
            regs::MASTER_DATA => self.read_data(Chip::Master),
            regs::SLAVE_COMMAND => self.read_command(Chip::Slave),
            regs::SLAVE_DATA => self.read_data(Chip::Slave),
            regs::ELCR1 => (self.state.master.elcr, Effects::default()),
            regs::ELCR2 => (self.state.slave.elcr, Effects::default()),
            _ => (0xFF, Effects { eoi: 0, invalid: Some(AccessError::UnknownPort(port)) }),
        };
        self.settle_cascade();
        result
    }

    /// A guest write of any width starting at `port`, as a VMM's I/O bus delivers it.
    ///
    /// One byte is [`Pic::write`]. Wider (or empty) accesses are flagged with
    /// [`AccessError::Width`]; the datasheet profile writes the bytes to consecutive ports,
    /// as the PC bus does for an 8-bit device, and the KVM profile drops them.
    pub fn pio_write(&mut self, port: u16, data: &[u8]) -> Effects {
        if let [value] = data {
            return self.write(port, *value);
        }
        let mut effects = Effects::default();
        if !self.quirks.contains(Quirks::WIDE_ACCESS_IGNORED) {
            let mut port = port;
            for value in data {
                effects.eoi |= self.write(port, *value).eoi;
                port = port.wrapping_add(1);
            }
        }
        effects.invalid = Some(AccessError::width(data.len()));
        effects
    }

    /// A guest read of any width starting at `port`; see [`Pic::pio_write`] for widths other
    /// than one. Bytes from ports the PIC does not decode read as 0xFF.
    pub fn pio_read(&mut self, port: u16, data: &mut [u8]) -> Effects {
        if let [value] = data {
            let (v, effects) = self.read(port);
            *value = v;
            return effects;
        }
        let mut effects = Effects::default();
        if self.quirks.contains(Quirks::WIDE_ACCESS_IGNORED) {
            data.fill(0);
        } else {
            let mut port = port;
            for value in data.iter_mut() {
                let (v, e) = self.read(port);
                *value = v;
                effects.eoi |= e.eoi;
                port = port.wrapping_add(1);
            }
        }
        effects.invalid = Some(AccessError::width(data.len()));
        effects
    }

    // ----- device-side input lines ----------------------------------------------------

    /// Sets IRQ line `irq` (0–15) as driven by source 0. See [`Pic::set_irq_source`].
    #[inline]
    pub fn set_irq(&mut self, irq: u8, level: bool) -> Result<LineStatus, LineError> {
        self.set_irq_source(irq, 0, level)
    }

    /// Source `source` (0–31) drives IRQ line `irq` (0–15) to `level`. The line is high while
    /// any source asserts it; the request register sees the line, so a second source
    /// asserting a line that is already high causes no new edge.
    #[inline]
    pub fn set_irq_source(&mut self, irq: u8, source: u8, level: bool) -> Result<LineStatus, LineError> {
        let sources = self.state.sources.get_mut(usize::from(irq)).ok_or(LineError::NoSuchLine(irq))?;
        let mask = 1u32.checked_shl(u32::from(source)).ok_or(LineError::NoSuchSource(source))?;
        if level {
            *sources |= mask;
        } else {
            *sources &= !mask;
        }
        let line = *sources != 0;
        let status = self.chip_mut(if irq < 8 { Chip::Master } else { Chip::Slave }).set_input(irq & 7, line);
        self.kvm_update();
        self.settle_cascade();
        Ok(status)
    }

    /// An edge on IRQ line `irq` from source 0: assert, then deassert. Returns the status
    /// of the assert.
    #[inline]
    pub fn pulse_irq(&mut self, irq: u8) -> Result<LineStatus, LineError> {
        let status = self.set_irq(irq, true)?;
        self.set_irq(irq, false)?;
        Ok(status)
    }

    // ----- CPU side: INT output and interrupt acknowledge -------------------------------

    /// The master's INT output: an interrupt is requested from the CPU (LINT0 in
    /// virtual-wire mode, or INTR). A VMM injects when this is high and the vCPU can take
    /// an external interrupt.
    #[inline]
    pub fn intr(&self) -> bool {
        if self.quirks.contains(Quirks::INT_LATCHED) {
            self.state.output
        } else {
            self.master_request().is_some()
        }
    }

    /// The vector [`Pic::acknowledge`] would return now, or `None` while INT is low.
    #[inline]
    pub fn pending_vector(&self) -> Option<u8> {
        let request = self.master_request();
        let int =
            if self.quirks.contains(Quirks::INT_LATCHED) { self.state.output } else { request.is_some() };
        if !int {
            return None;
        }
        Some(match self.inta(request) {
            Inta::Spurious => self.state.master.irq_base | 7,
            Inta::Master(level) => self.state.master.irq_base | level,
            Inta::Slave { slave: Some(level), .. } => self.state.slave.irq_base | level,
            Inta::Slave { slave: None, .. } => self.state.slave.irq_base | 7,
            Inta::Unanswered(_) => regs::FLOATING_BUS,
        })
    }

    /// The CPU acknowledges the interrupt (the two INTA cycles): the requesting level goes
    /// in service and its vector is returned. Call it when the vCPU takes the interrupt, i.e.
    /// once the injection is certain (not when KVM_INTERRUPT is refused).
    ///
    /// With no request (INT low, or the request withdrawn since the VMM looked) the master
    /// answers with its IR7 vector and sets no ISR bit: spurious IRQ7.
    ///
    /// A master input with a slave (its ICW3 bit set, not in single mode; with
    /// [`Quirks::ICW3_IGNORED`] exactly IR2) goes in service on the master, which puts the
    /// input's number on CAS2:0; the slave answers if that is its ID (ICW3 bits 2:0) with its
    /// own request, or with its IR7 vector if it has none (spurious IRQ15). If the slave's ID
    /// is another one, no chip drives the data bus: the vector is [`regs::FLOATING_BUS`],
    /// `irq` is the master level and the slave is untouched. An input without a slave (IR2
    /// with ICW3 bit 2 clear, or in single mode) is acknowledged with the master's vector,
    /// whatever drives it.
    #[inline]
    pub fn acknowledge(&mut self) -> Ack {
        let ack = match self.inta(self.master_request()) {
            Inta::Spurious => Ack { vector: self.state.master.irq_base | 7, irq: 7, spurious: true, eoi: 0 },
            Inta::Master(level) => {
                let eoi = u16::from(self.state.master.acknowledge(level));
                Ack { vector: self.state.master.irq_base | level, irq: level, spurious: false, eoi }
            }
            Inta::Slave { master, slave } => {
                let mut eoi = u16::from(self.state.master.acknowledge(master));
                match slave {
                    Some(level) => {
                        eoi |= u16::from(self.state.slave.acknowledge(level)) << 8;
                        Ack {
                            vector: self.state.slave.irq_base | level,
                            irq: 8 | level,
                            spurious: false,
                            eoi,
                        }
                    }
                    None => Ack { vector: self.state.slave.irq_base | 7, irq: 15, spurious: true, eoi },
                }
            }
            Inta::Unanswered(level) => {
                let eoi = u16::from(self.state.master.acknowledge(level));
                Ack { vector: regs::FLOATING_BUS, irq: level, spurious: false, eoi }
            }
        };
        self.kvm_update();
        self.settle_cascade();
        ack
    }

    // ----- state ------------------------------------------------------------------------

    /// A copy of the complete state. The master's `irr` is the IRR the guest reads: without
    /// [`Quirks::CASCADE_LATCHED`] it includes the slave's INT on IR2.
    pub fn state(&self) -> PicState {
        let mut state = self.state;
        state.master.irr |= self.cascade_input();
        state
    }

    /// Replaces the state after validating it; on error the PIC is unchanged.
    ///
    /// Restoring re-evaluates nothing, so `restore(&state())` is the identity in both
    /// profiles, and after a successful `restore(&s)`, `state()` is `s`. To reproduce
    /// KVM_SET_IRQCHIP, which also re-evaluates the outputs, call [`Pic::update_output`]
    /// after restoring a state taken from KVM.
    ///
    /// Besides [`PicState::validate`], refused: a mode or an `icw3` the profile ignores
    /// ([`StateError::IgnoredMode`]), and without [`Quirks::CASCADE_LATCHED`] a master `irr`
    /// with bit 2 clear while the slave's INT is high ([`StateError::CascadeNotInIrr`]), which
    /// the guest could never read.
    pub fn restore(&mut self, state: &PicState) -> Result<(), StateError> {
        state.validate()?;
        for (chip, c, pc_icw3) in [
            (Chip::Master, &state.master, regs::PC_MASTER_ICW3),
            (Chip::Slave, &state.slave, regs::PC_SLAVE_ICW3),
        ] {
            if c.single_mode && self.quirks.contains(Quirks::SNGL_IGNORED) {
                return Err(StateError::IgnoredMode { chip, field: "single_mode" });
            }
            if c.ltim && self.quirks.contains(Quirks::LTIM_IGNORED) {
                return Err(StateError::IgnoredMode { chip, field: "ltim" });
            }
            if c.icw3 != pc_icw3 && self.quirks.contains(Quirks::ICW3_IGNORED) {
                return Err(StateError::IgnoredMode { chip, field: "icw3" });
            }
        }
        let mut inner = *state;
        if !self.quirks.contains(Quirks::CASCADE_LATCHED) && slave_request(&inner, self.quirks).is_some() {
            if inner.master.irr & bit(CASCADE_IRQ) == 0 {
                return Err(StateError::CascadeNotInIrr);
            }
            // IRR2 is the slave's: keep of it only what line 2 holds on its own.
            inner.master.irr = (inner.master.irr & !bit(CASCADE_IRQ)) | Self::line2_request(&inner);
        }
        self.state = inner;
        Ok(())
    }

    /// Re-evaluates the outputs as KVM does after KVM_SET_IRQCHIP (`kvm_pic_update_irq`):
    /// in the KVM profile a pending slave request is latched into master IRR2 and INT is
    /// latched anew. The datasheet profile's outputs are always current: nothing changes.
    pub fn update_output(&mut self) {
        self.kvm_update();
    }

    /// System reset: both chips return to their power-on state. The input lines belong to
    /// the devices and keep their levels; in the datasheet profile a line held high needs a
    /// new edge. Reports every level whose service
    /// or pending edge the reset cancelled, as ICW1 does.
    pub fn reset(&mut self) -> Effects {
        // The model's own master IRR leaves out the slave's INT on IR2 (state() adds it):
        // that request is reported as the slave's level, not as IR2.
        let mut eoi = 0;
        for chip in [Chip::Master, Chip::Slave] {
            let c = self.chip(chip);
            eoi |= Self::global(chip, c.isr | (c.irr & !c.level_mask()));
        }
        let sources = self.state.sources;
        self.state = PicState { sources, ..PicState::default() };
        // Every input is edge-triggered again (ELCR and LTIM clear), so IRR starts empty; in
        // the datasheet profile a line already high must fall and rise to request.
        if !self.quirks.contains(Quirks::ICW1_RETAINS_STATE) {
            self.state.master.last_irr = self.state.line_levels(Chip::Master);
            self.state.slave.last_irr = self.state.line_levels(Chip::Slave);
        }
        self.kvm_update();
        self.settle_cascade();
        Effects::with_eoi(eoi)
    }

    // ----- internals ----------------------------------------------------------------------

    #[inline(always)]
    fn chip_mut(&mut self, chip: Chip) -> &mut ChipState {
        match chip {
            Chip::Master => &mut self.state.master,
            Chip::Slave => &mut self.state.slave,
        }
    }

    #[inline(always)]
    fn chip(&self, chip: Chip) -> &ChipState {
        match chip {
            Chip::Master => &self.state.master,
            Chip::Slave => &self.state.slave,
        }
    }

    /// A chip between ICW1 and its last ICW holds INT low (datasheet profile).
    #[inline(always)]
    fn live(&self, chip: &ChipState) -> bool {
        chip.init_state == InitState::Ready || self.quirks.contains(Quirks::LIVE_DURING_INIT)
    }

    /// The slave's INT output, as the level it presents.
    #[inline(always)]
    fn slave_request(&self) -> Option<u8> {
        slave_request(&self.state, self.quirks)
    }

    /// What the two INTA cycles do when the master resolved `request`.
    #[inline(always)]
    fn inta(&self, request: Option<u8>) -> Inta {
        let Some(level) = request else { return Inta::Spurious };
        let master = &self.state.master;
        let ignored = self.quirks.contains(Quirks::ICW3_IGNORED);
        let cascaded =
            !master.single_mode && if ignored { level == CASCADE_IRQ } else { master.icw3 & bit(level) != 0 };
        if !cascaded {
            Inta::Master(level)
        } else if ignored || self.state.slave.icw3 & regs::SLAVE_ID_MASK == level {
            Inta::Slave { master: level, slave: self.slave_request() }
        } else {
            Inta::Unanswered(level)
        }
    }

    /// Master IRR2 as line 2 alone holds it: the line while it is level-triggered, nothing
    /// for an edge (an edge of line 2 while the slave holds IR2 high merges into that request).
    #[inline(always)]
    fn line2_request(state: &PicState) -> u8 {
        state.line_levels(Chip::Master) & state.master.level_mask() & bit(CASCADE_IRQ)
    }

    /// Without [`Quirks::CASCADE_LATCHED`], while the slave's INT drives IR2, IRR2 is that
    /// wire: drop what line 2 latched on its own, so that IRR2 falls with the slave's INT and
    /// `state()` (which shows the wire) determines the PIC. Run after every call that may
    /// change the slave's INT or IRR2.
    #[inline(always)]
    fn settle_cascade(&mut self) {
        if !self.quirks.contains(Quirks::CASCADE_LATCHED) && self.slave_request().is_some() {
            let line2 = Self::line2_request(&self.state);
            let master = &mut self.state.master;
            master.irr = (master.irr & !bit(CASCADE_IRQ)) | line2;
        }
    }

    /// The master's INT output. In the datasheet profile IR2 is a level wire from the
    /// slave's INT; in the KVM profile slave requests are latched into IRR2 by
    /// [`Pic::kvm_update`] instead.
    #[inline(always)]
    fn master_request(&self) -> Option<u8> {
        let master = &self.state.master;
        if !self.live(master) {
            return None;
        }
        master.request(self.cascade_input(), true, self.quirks)
    }

    /// The slave's INT as the master's IR2 input sees it on the datasheet's live wire (bit 2),
    /// or 0 in the KVM profile, where it is latched into IRR2 instead.
    #[inline(always)]
    fn cascade_input(&self) -> u8 {
        if self.quirks.contains(Quirks::CASCADE_LATCHED) {
            0
        } else {
            u8::from(self.slave_request().is_some()) << CASCADE_IRQ
        }
    }

    /// KVM's `pic_update_irq`: whenever the slave has a request, pulse master IR2, then latch
    /// INT. Called exactly where KVM calls it; does nothing in the datasheet profile.
    #[inline(always)]
    fn kvm_update(&mut self) {
        if !self.quirks.intersects(Quirks::CASCADE_LATCHED.union(Quirks::INT_LATCHED)) {
            return;
        }
        if self.quirks.contains(Quirks::CASCADE_LATCHED) && self.slave_request().is_some() {
            self.state.master.set_input(CASCADE_IRQ, true);
            self.state.master.set_input(CASCADE_IRQ, false);
        }
        if self.quirks.contains(Quirks::INT_LATCHED) {
            self.state.output = self.master_request().is_some();
        }
    }

    /// An A0=0 write: ICW1 (D4=1), OCW3 (D4:3=01) or OCW2 (D4:3=00).
    fn write_command(&mut self, chip: Chip, value: u8) -> Effects {
        if value & Icw1::ICW1.bits() != 0 {
            self.icw1(chip, Icw1::from_bits_retain(value))
        } else if value & Ocw3::OCW3.bits() != 0 {
            self.ocw3(chip, Ocw3::from_bits_retain(value));
            Effects::default()
        } else {
            self.ocw2(chip, Ocw2::decode(value))
        }
    }

    /// ICW1 restarts initialisation from any state.
    fn icw1(&mut self, chip: Chip, icw1: Icw1) -> Effects {
        let quirks = self.quirks;
        let lines = self.state.line_levels(chip);
        let c = self.chip_mut(chip);
        c.init4 = icw1.contains(Icw1::IC4);
        c.single_mode = icw1.contains(Icw1::SNGL) && !quirks.contains(Quirks::SNGL_IGNORED);
        c.ltim = icw1.contains(Icw1::LTIM) && !quirks.contains(Quirks::LTIM_IGNORED);
        // The datasheet's side effects: mask cleared, IR7 lowest priority, special mask
        // mode off, IRR selected for reading, edge-sense latches reset.
        c.imr = 0;
        c.priority_add = 0;
        c.special_mask = false;
        c.read_reg_select = false;
        c.init_state = InitState::Icw2;
        let level = c.level_mask();
        let dropped_edges = c.irr & !level;
        let eoi = if quirks.contains(Quirks::ICW1_RETAINS_STATE) {
            // KVM (`kvm_pic_reset`): drop edge requests, end the service of those levels
            // only, keep the rest of ISR, poll and rotate-in-AEOI.
            c.last_irr = 0;
            c.irr &= level;
            if !c.init4 {
                c.special_fully_nested_mode = false;
                c.auto_eoi = false;
            }
            c.isr &= !dropped_edges;
            dropped_edges
        } else {
            // A line already high must go low and high again; level IRR follows the line.
            let ended = c.isr | dropped_edges;
            c.last_irr = lines;
            c.irr = lines & level;
            c.isr = 0;
            c.poll = false;
            c.rotate_on_auto_eoi = false;
            c.special_fully_nested_mode = false;
            c.auto_eoi = false;
            ended
        };
        Effects::with_eoi(Self::global(chip, eoi))
    }

    /// An A0=1 write: the next ICW during initialisation, OCW1 (IMR) afterwards.
    fn write_data(&mut self, chip: Chip, value: u8) -> Effects {
        let quirks = self.quirks;
        let c = self.chip_mut(chip);
        match c.init_state {
            InitState::Ready => {
                c.imr = value;
                self.kvm_update();
            }
            InitState::Icw2 => {
                // ICW2: T7:T3; the low three bits come from the level on acknowledge.
                c.irq_base = value & 0xF8;
                c.init_state = match (c.single_mode, c.init4) {
                    (false, _) => InitState::Icw3,
                    (true, true) => InitState::Icw4,
                    (true, false) => InitState::Ready,
                };
            }
            InitState::Icw3 => {
                // ICW3: the master's map of inputs with a slave, or the slave's ID (bits 2:0;
                // the datasheet's bits 7:3 are 0 and the chip keeps only the ID).
                if !quirks.contains(Quirks::ICW3_IGNORED) {
                    c.icw3 = match chip {
                        Chip::Master => value,
                        Chip::Slave => value & regs::SLAVE_ID_MASK,
                    };
                }
                c.init_state = if c.init4 { InitState::Icw4 } else { InitState::Ready };
            }
            InitState::Icw4 => {
                let icw4 = Icw4::from_bits_retain(value);
                c.special_fully_nested_mode = icw4.contains(Icw4::SFNM);
                c.auto_eoi = icw4.contains(Icw4::AEOI);
                c.init_state = InitState::Ready;
            }
        }
        Effects::default()
    }

    fn ocw2(&mut self, chip: Chip, command: Ocw2) -> Effects {
        let quirks = self.quirks;
        let c = self.chip_mut(chip);
        let eoi = match command {
            Ocw2::ClearRotateInAutoEoi => {
                c.rotate_on_auto_eoi = false;
                return Effects::default();
            }
            Ocw2::SetRotateInAutoEoi => {
                c.rotate_on_auto_eoi = true;
                return Effects::default();
            }
            Ocw2::Nop => return Effects::default(),
            Ocw2::NonSpecificEoi | Ocw2::RotateOnNonSpecificEoi => {
                let Some(level) = c.highest_in_service(quirks) else {
                    return Effects::default();
                };
                if command == Ocw2::RotateOnNonSpecificEoi {
                    c.make_lowest(level);
                }
                c.end(level)
            }
            Ocw2::SpecificEoi(level) => c.end(level),
            Ocw2::RotateOnSpecificEoi(level) => {
                c.make_lowest(level);
                c.end(level)
            }
            Ocw2::SetPriority(level) => {
                c.make_lowest(level);
                0
            }
        };
        self.kvm_update();
        Effects::with_eoi(Self::global(chip, eoi))
    }

    fn ocw3(&mut self, chip: Chip, ocw3: Ocw3) {
        let c = self.chip_mut(chip);
        if ocw3.contains(Ocw3::P) {
            c.poll = true;
        }
        if ocw3.contains(Ocw3::RR) {
            c.read_reg_select = ocw3.contains(Ocw3::RIS);
        }
        if ocw3.contains(Ocw3::ESMM) {
            c.special_mask = ocw3.contains(Ocw3::SMM);
        }
    }

    fn write_elcr(&mut self, chip: Chip, value: u8) -> Effects {
        let resample = !self.quirks.contains(Quirks::ELCR_NO_RESAMPLE);
        let lines = self.state.line_levels(chip);
        let c = self.chip_mut(chip);
        c.elcr = value & c.elcr_mask;
        if resample {
            // A level-triggered request is the line itself.
            let level = c.level_mask();
            c.irr = (c.irr & !level) | (lines & level);
            c.last_irr = (c.last_irr & !level) | (lines & level);
        }
        Effects::default()
    }

    fn read_command(&mut self, chip: Chip) -> (u8, Effects) {
        let c = self.chip(chip);
        if c.poll {
            return self.poll(chip);
        }
        let value = if c.read_reg_select {
            c.isr
        } else if chip == Chip::Master {
            c.irr | self.cascade_input()
        } else {
            c.irr
        };
        (value, Effects::default())
    }

    fn read_data(&mut self, chip: Chip) -> (u8, Effects) {
        let c = self.chip(chip);
        if c.poll {
            return self.poll(chip);
        }
        (c.imr, Effects::default())
    }

    /// The read after an OCW3 poll command: an interrupt acknowledge of this chip alone,
    /// answered with bit 7 set and the level in bits 2:0.
    fn poll(&mut self, chip: Chip) -> (u8, Effects) {
        self.chip_mut(chip).poll = false;
        let request = match chip {
            Chip::Master => self.master_request(),
            Chip::Slave => self.slave_request(),
        };
        if self.quirks.contains(Quirks::POLL_ACKS_AND_ENDS) {
            return self.kvm_poll(chip, request);
        }
        match request {
            Some(level) => {
                let eoi = self.chip_mut(chip).acknowledge(level);
                (POLL_INT | level, Effects::with_eoi(Self::global(chip, eoi)))
            }
            None => (0, Effects::default()),
        }
    }

    /// KVM's `pic_poll_read`.
    fn kvm_poll(&mut self, chip: Chip, request: Option<u8>) -> (u8, Effects) {
        let Some(level) = request else {
            self.kvm_update();
            return (0x07, Effects::default());
        };
        if chip == Chip::Slave {
            self.state.master.isr &= !bit(CASCADE_IRQ);
            self.state.master.irr &= !bit(CASCADE_IRQ);
        }
        let c = self.chip_mut(chip);
        c.irr &= !bit(level);
        c.isr &= !bit(level);
        if chip == Chip::Slave || level != CASCADE_IRQ {
            self.kvm_update();
        }
        (POLL_INT | level, Effects::with_eoi(Self::global(chip, bit(level))))
    }

    /// Widens a chip-local bit set to IRQ numbering (slave bits are IRQ8–15).
    #[inline(always)]
    fn global(chip: Chip, bits: u8) -> u16 {
        match chip {
            Chip::Master => u16::from(bits),
            Chip::Slave => u16::from(bits) << 8,
        }
    }
}

#[cfg(test)]
mod tests;
