//! Structure-aware fuzzing of the `vm-pic` 8259A pair.
//!
//! An input is a behaviour profile and a bounded list of operations: guest port I/O of any
//! port and width, device line changes, interrupt acknowledges, reset, KVM's output update,
//! restore of arbitrary states and snapshots. [`run`] applies them to a [`Pic`] and, after
//! every one, asserts what the crate documents:
//!
//! 1. nothing panics: no guest access, line number or restored state may crash the model;
//! 2. `acknowledge` returns exactly what an independent priority resolver (written here for
//!    every quirk combination) predicts from the state, and `pending_vector` predicts it
//!    whenever INT is high (with a latched INT high and nothing pending: spurious IRQ7);
//!    `irq < 16` and `vector & 7 == irq & 7`, except for a cascade no slave answers (master
//!    ICW3 bit set, slave ID another; not with `ICW3_IGNORED`), which is the floating bus
//!    0xFF with the master level as `irq`;
//! 3. ISR gains bits only from an acknowledge, a poll read of that chip, or a restore;
//! 4. EOI notifications are sound and complete: an OCW2 reports only a level that was in
//!    service, ICW1 and reset only in-service levels and requests they cancelled (reset:
//!    exactly those), an acknowledge or poll only the level it took; every level that leaves
//!    service is reported (except master IR2, which a KVM-profile slave poll drops silently)
//!    and none that is still in service;
//! 5. every state validates, `restore(&state())` is the identity, a restore is refused
//!    exactly when a [`vm_pic::StateError`] rule (including the profile's ignored modes and
//!    ICW3, and without `CASCADE_LATCHED` a master IRR2 clear under the slave's INT) is
//!    broken, and a refused restore leaves the PIC unchanged;
//! 6. `intr() == pending_vector().is_some()`; without `INT_LATCHED` INT is "the master has a
//!    request"; with it INT is the latched `output`, which equals "the master has a request"
//!    right after every KVM update point (line change, acknowledge, OCW1, an EOI or priority
//!    command that acts, a KVM-profile poll other than a master poll answering IR2, reset,
//!    `update_output`) and changes nowhere else (except by restore).
//!
//! Also checked: reads other than polls change nothing and return the selected register
//! (the master's IRR, which `state()` reports as the guest reads it: with the live cascade
//! wire on IR2 unless `CASCADE_LATCHED`); poll bytes
//! are the polled chip's resolved request; wide accesses are exactly their byte accesses (or
//! ignored, `WIDE_ACCESS_IGNORED`); line calls report `Masked` exactly for masked lines and
//! refuse bad lines and sources without effect; reset returns each chip to power-on with
//! only the line levels kept, then runs KVM's update; `update_output` is exactly KVM's
//! `pic_update_irq` (nothing in the datasheet profile); the master's request is absent while
//! it initialises (unless `LIVE_DURING_INIT`), and so is INT unless it is latched; and in the
//! datasheet profile a level-triggered IRR bit always equals its input (master IR2: line 2
//! or the slave's INT).
//!
//! This file is the `pic` module of the `vm-irq-fuzz` crate (cargo-fuzz, nightly) and is
//! also included by `pic/tests/fuzz_corpus.rs`, which replays the seed corpus on stable, so
//! it uses only `std`, `arbitrary` and `vm_pic`.

use std::fmt;

use arbitrary::{Arbitrary, Unstructured};
use vm_pic::regs::{self, CASCADE_IRQ, POLL_INT, PORTS};
use vm_pic::{
    AccessError, Chip, ChipState, Effects, InitState, LineError, LineStatus, Pic, PicState, Quirks,
    StateError,
};

/// The most operations one input applies (the rest is ignored), so that every run is fast.
pub const MAX_OPS: usize = 512;

/// One fuzz case: a PIC in some profile and what happens to it.
// `run` decodes this layout lazily rather than through `Input` itself; the type is the
// format's definition (and what the seed encoders of the tests build).
#[allow(dead_code)]
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// The behaviour profile of the PIC under test.
    pub profile: Profile,
    /// The operations, in order; only the first [`MAX_OPS`] are applied.
    pub ops: Vec<Op>,
}

/// The behaviour profile. Every invariant must hold in every profile.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Profile {
    /// [`Quirks::DATASHEET`].
    Datasheet,
    /// [`Quirks::KVM`].
    Kvm,
    /// Any combination of the twelve quirk flags (`Quirks::from_bits_truncate`, so unknown
    /// bits are dropped): each flag is a documented, independent divergence, and a VMM may
    /// pick any set.
    Mixed(u16),
}

impl Profile {
    fn quirks(self) -> Quirks {
        match self {
            Profile::Datasheet => Quirks::DATASHEET,
            Profile::Kvm => Quirks::KVM,
            Profile::Mixed(bits) => Quirks::from_bits_truncate(bits),
        }
    }
}

/// A guest I/O port: one of [`regs::PORTS`] for 240 of the 256 selector bytes, any port
/// otherwise, so that most accesses reach the PIC and the rest test undecoded ports.
#[derive(Clone, Copy)]
pub struct Port(pub u16);

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Port({:#x})", self.0)
    }
}

impl<'a> Arbitrary<'a> for Port {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let selector = u8::arbitrary(u)?;
        if selector >= 0xF0 {
            return Ok(Port(u16::arbitrary(u)?));
        }
        Ok(Port(PORTS[usize::from(selector) % PORTS.len()]))
    }
}

/// One thing that happens to the PIC.
#[derive(Arbitrary, Clone, Debug)]
pub enum Op {
    /// A one-byte guest write (`Pic::write`).
    Write {
        /// Port written.
        port: Port,
        /// Byte written.
        value: u8,
    },
    /// A one-byte guest read (`Pic::read`); a poll read if the chip's poll flag is set.
    Read {
        /// Port read.
        port: Port,
    },
    /// `Pic::pio_write` of the first `len % 9` bytes of `bytes` (empty and one-byte included).
    PioWrite {
        /// First port.
        port: Port,
        /// Width, taken modulo 9.
        len: u8,
        /// The bytes.
        bytes: [u8; 8],
    },
    /// `Pic::pio_read` of `len % 9` bytes.
    PioRead {
        /// First port.
        port: Port,
        /// Width, taken modulo 9.
        len: u8,
    },
    /// `Pic::set_irq_source` with the raw line and source, so usually refused.
    SetIrqSource {
        /// Line (valid: 0–15).
        line: u8,
        /// Source (valid: 0–31).
        source: u8,
        /// Level driven.
        level: bool,
    },
    /// `Pic::set_irq_source` on line `line % 16` from source `source % 4`, so that changes
    /// are accepted and lines are often shared.
    SetLine {
        /// Line, taken modulo 16.
        line: u8,
        /// Source, taken modulo 4.
        source: u8,
        /// Level driven.
        level: bool,
    },
    /// `Pic::pulse_irq(line % 17)`: line 16 is refused.
    Pulse {
        /// Line, taken modulo 17.
        line: u8,
    },
    /// The CPU takes the interrupt (`Pic::acknowledge`), whether or not INT is high.
    Acknowledge,
    /// `Pic::reset`.
    Reset,
    /// `Pic::update_output` (KVM_SET_IRQCHIP's re-evaluation).
    UpdateOutput,
    /// `Pic::restore` of a state built field by field; refused unless the fields happen to be
    /// valid or `sanitize` clears the three validated fields' bad bits.
    Restore {
        /// The state to restore.
        state: RawState,
        /// Make `priority_add`, `irq_base`, `elcr` and the slave's `icw3` valid.
        sanitize: bool,
    },
    /// The state restored into a fresh PIC of the same profile must give an equal PIC.
    Snapshot,
}

/// One chip's fields as arbitrary values, for [`Op::Restore`].
#[derive(Arbitrary, Clone, Debug)]
pub struct RawChip {
    last_irr: u8,
    irr: u8,
    imr: u8,
    isr: u8,
    priority_add: u8,
    irq_base: u8,
    elcr: u8,
    elcr_mask: u8,
    /// Low two bits: the `init_state`.
    init_state: u8,
    /// One bit per flag, in [`ChipState`] order (bits 0–8); bit 9: `icw3` is the PC's
    /// (0x04 master, 0x02 slave), else bits 15:10 are `icw3`.
    flags: u16,
}

impl RawChip {
    fn build(&self, sanitize: bool, which: Chip) -> ChipState {
        let flag = |n: u32| self.flags & (1 << n) != 0;
        let mut chip = ChipState {
            last_irr: self.last_irr,
            irr: self.irr,
            imr: self.imr,
            isr: self.isr,
            priority_add: self.priority_add,
            irq_base: self.irq_base,
            read_reg_select: flag(0),
            poll: flag(1),
            special_mask: flag(2),
            init_state: InitState::from_u8(self.init_state & 3).unwrap_or_default(),
            auto_eoi: flag(3),
            rotate_on_auto_eoi: flag(4),
            special_fully_nested_mode: flag(5),
            init4: flag(6),
            elcr: self.elcr,
            elcr_mask: self.elcr_mask,
            single_mode: flag(7),
            ltim: flag(8),
            icw3: match (flag(9), which) {
                (true, Chip::Master) => regs::PC_MASTER_ICW3,
                (true, Chip::Slave) => regs::PC_SLAVE_ICW3,
                (false, _) => (self.flags >> 10) as u8,
            },
        };
        if sanitize {
            chip.priority_add &= 7;
            chip.irq_base &= 0xF8;
            chip.elcr &= chip.elcr_mask;
            if which == Chip::Slave {
                chip.icw3 &= regs::SLAVE_ID_MASK;
            }
        }
        chip
    }
}

/// A whole [`PicState`] as arbitrary values, for [`Op::Restore`].
#[derive(Arbitrary, Clone, Debug)]
pub struct RawState {
    master: RawChip,
    slave: RawChip,
    /// Which lines are high.
    lines: u16,
    /// The sources asserting a high line (rotated by the line number; never empty).
    sources: u32,
    /// The latched INT output.
    output: bool,
}

impl RawState {
    fn build(&self, sanitize: bool) -> PicState {
        let mut sources = [0; 16];
        for (line, set) in (0u32..).zip(&mut sources) {
            if self.lines & (1 << line) != 0 {
                *set = self.sources.rotate_left(line).max(1);
            }
        }
        PicState {
            master: self.master.build(sanitize, Chip::Master),
            slave: self.slave.build(sanitize, Chip::Slave),
            sources,
            output: self.output,
        }
    }
}

/// Decodes `data` as an [`Input`], applies it, and panics on the first invariant violation
/// (with the index and decoding of the operation). Bytes that do not decode are not a case.
pub fn run(data: &[u8]) {
    // Decoded as `Input::arbitrary_take_rest` decodes it, but lazily: the operations come one
    // at a time from `arbitrary_take_rest_iter` (the iterator `Vec::arbitrary_take_rest`
    // collects), so no `Vec` is built and nothing past the first `MAX_OPS` is decoded. An
    // operation that does not decode ends the case after the ones before it (the collecting
    // decoder refused the whole input: this runs strictly more).
    let mut u = Unstructured::new(data);
    let Ok(profile) = Profile::arbitrary(&mut u) else { return };
    let Ok(ops) = u.arbitrary_take_rest_iter::<Op>() else { return };
    let quirks = profile.quirks();
    let mut pic = Pic::new(quirks);
    let mut irr_tracks_lines = level_irr_tracks_lines(quirks);
    // The PIC at its last `check_always` and the flag it ran with (see below).
    let mut checked: Option<(Pic, bool)> = None;
    for (index, op) in ops.take(MAX_OPS).enumerate() {
        let Ok(op) = op else { return };
        let op = &op;
        let at = Step { index, op, quirks };
        match op {
            Op::Write { port, value } => {
                let _ = checked_write(&mut pic, port.0, *value, &at);
            }
            Op::Read { port } => {
                let _ = checked_read(&mut pic, port.0, &at);
            }
            Op::PioWrite { port, len, bytes } => {
                checked_pio_write(&mut pic, port.0, &bytes[..usize::from(len % 9)], &at)
            }
            Op::PioRead { port, len } => checked_pio_read(&mut pic, port.0, usize::from(len % 9), &at),
            Op::SetIrqSource { line, source, level } => checked_line(&mut pic, *line, *source, *level, &at),
            Op::SetLine { line, source, level } => checked_line(&mut pic, line % 16, source % 4, *level, &at),
            Op::Pulse { line } => checked_pulse(&mut pic, line % 17, &at),
            Op::Acknowledge => checked_acknowledge(&mut pic, &at),
            Op::Reset => {
                checked_reset(&mut pic, &at);
                irr_tracks_lines = level_irr_tracks_lines(quirks);
            }
            Op::UpdateOutput => checked_update_output(&mut pic, &at),
            Op::Restore { state, sanitize } => {
                if checked_restore(&mut pic, &state.build(*sanitize), &at) {
                    // A restored IRR need not match the restored lines.
                    irr_tracks_lines = false;
                }
            }
            Op::Snapshot => checked_snapshot(&pic, &at),
        }
        // `check_always` is a function of the PIC (state and profile, all of which
        // `Pic: PartialEq` compares) and of `irr_tracks_lines`: when both equal those of its
        // last run, which passed, it passes again, so skipping it is exactly as strong.
        if checked.as_ref().is_none_or(|(last, tracks)| *tracks != irr_tracks_lines || *last != pic) {
            check_always(&pic, irr_tracks_lines, &at);
            checked = Some((pic.clone(), irr_tracks_lines));
        }
    }
}

/// Where an assertion fired; formatted only when one does.
struct Step<'a> {
    index: usize,
    op: &'a Op,
    quirks: Quirks,
}

impl fmt::Display for Step<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op #{} {:?} ({:?})", self.index, self.op, self.quirks)
    }
}

// ----- state helpers ----------------------------------------------------------------------

fn chip(state: &PicState, chip: Chip) -> &ChipState {
    match chip {
        Chip::Master => &state.master,
        Chip::Slave => &state.slave,
    }
}

/// Widens a chip-local bit set to IRQ numbering (slave bits are IRQ8–15).
fn wide(chip: Chip, bits: u8) -> u16 {
    match chip {
        Chip::Master => u16::from(bits),
        Chip::Slave => u16::from(bits) << 8,
    }
}

fn isr(state: &PicState) -> u16 {
    wide(Chip::Master, state.master.isr) | wide(Chip::Slave, state.slave.isr)
}

fn imr(state: &PicState) -> u16 {
    wide(Chip::Master, state.master.imr) | wide(Chip::Slave, state.slave.imr)
}

/// Inputs of a chip that are level-triggered (ELCR, or all with LTIM).
fn level_mask(chip: &ChipState) -> u8 {
    if chip.ltim {
        0xFF
    } else {
        chip.elcr
    }
}

/// The chip behind an 8259A port, and whether it is the A0=0 (command) port.
fn port_chip(port: u16) -> Option<(Chip, bool)> {
    match port {
        regs::MASTER_COMMAND => Some((Chip::Master, true)),
        regs::MASTER_DATA => Some((Chip::Master, false)),
        regs::SLAVE_COMMAND => Some((Chip::Slave, true)),
        regs::SLAVE_DATA => Some((Chip::Slave, false)),
        _ => None,
    }
}

fn unknown_port(port: u16) -> Option<AccessError> {
    (!PORTS.contains(&port)).then_some(AccessError::UnknownPort(port))
}

/// The datasheet promise "a level-triggered IRR bit always equals the line" holds unless a
/// quirk lets IRR leave the line (KVM poll, ELCR without resample, latched cascade, ICW1
/// keeping IRR) or a restore installs an IRR of its own.
fn level_irr_tracks_lines(quirks: Quirks) -> bool {
    !quirks.intersects(
        Quirks::POLL_ACKS_AND_ENDS
            | Quirks::ELCR_NO_RESAMPLE
            | Quirks::CASCADE_LATCHED
            | Quirks::ICW1_RETAINS_STATE,
    )
}

// ----- the oracle: priority resolution for any quirk set ---------------------------------

/// The level chip `c` presents on INT, re-derived from the datasheet and the quirks: the
/// highest-priority unmasked request among `inputs`, if no in-service level that counts
/// ranks at or above it. In-service levels that do not count: masked ones in special mask
/// mode (unless `SPECIAL_MASK_IGNORED`), and on the master in special fully nested mode IR2
/// for an IR2 request (for every request with `SFNM_FOR_EVERY_REQUEST`). A chip between
/// ICW1 and its last ICW presents nothing unless `LIVE_DURING_INIT`.
fn resolve(c: &ChipState, inputs: u8, master: bool, quirks: Quirks) -> Option<u8> {
    if c.init_state != InitState::Ready && !quirks.contains(Quirks::LIVE_DURING_INIT) {
        return None;
    }
    let rank = |level: u8| level.wrapping_sub(c.priority_add) & 7;
    let requests = inputs & !c.imr;
    let candidate = (0..8u8).filter(|l| requests & (1 << l) != 0).min_by_key(|l| rank(*l))?;
    let mut blocking = c.isr;
    if c.special_mask && !quirks.contains(Quirks::SPECIAL_MASK_IGNORED) {
        blocking &= !c.imr;
    }
    if master
        && c.special_fully_nested_mode
        && (candidate == CASCADE_IRQ || quirks.contains(Quirks::SFNM_FOR_EVERY_REQUEST))
    {
        blocking &= !(1 << CASCADE_IRQ);
    }
    (0..8u8).filter(|l| blocking & (1 << l) != 0).all(|l| rank(l) > rank(candidate)).then_some(candidate)
}

/// The slave's request (its INT, as master IR2 sees it).
fn slave_request(state: &PicState, quirks: Quirks) -> Option<u8> {
    resolve(&state.slave, state.slave.irr, false, quirks)
}

/// What master IR2 sees of the slave besides IRR2: the live wire, or nothing when KVM
/// latches the cascade into IRR2 (`CASCADE_LATCHED`).
fn cascade_wire(state: &PicState, quirks: Quirks) -> u8 {
    if !quirks.contains(Quirks::CASCADE_LATCHED) && slave_request(state, quirks).is_some() {
        1 << CASCADE_IRQ
    } else {
        0
    }
}

/// The master's request: "the master has a request" is `master_request(..).is_some()`.
fn master_request(state: &PicState, quirks: Quirks) -> Option<u8> {
    resolve(&state.master, state.master.irr | cascade_wire(state, quirks), true, quirks)
}

/// How master level `level` is acknowledged: `None` if it has no slave (the master's vector),
/// `Some(answered)` if it cascades. Not in single mode, a level cascades when its ICW3 bit is
/// set and the slave answers when its ID (ICW3 bits 2:0) is the level; with `ICW3_IGNORED`
/// only IR2 cascades and the slave always answers.
fn cascade(state: &PicState, quirks: Quirks, level: u8) -> Option<bool> {
    if state.master.single_mode {
        return None;
    }
    if quirks.contains(Quirks::ICW3_IGNORED) {
        return (level == CASCADE_IRQ).then_some(true);
    }
    (state.master.icw3 & (1 << level) != 0).then_some(state.slave.icw3 & 7 == level)
}

/// What an acknowledge does in `state`: (vector, irq, spurious). No master request:
/// spurious IRQ7 (master IR7 vector); a cascaded level the slave answers with nothing on the
/// slave: spurious IRQ15 (slave IR7 vector); a cascaded level nobody answers: the floating
/// bus 0xFF, `irq` the master level, not spurious.
fn expected_ack(state: &PicState, quirks: Quirks) -> (u8, u8, bool) {
    let (master, slave) = (&state.master, &state.slave);
    let Some(level) = master_request(state, quirks) else { return (master.irq_base | 7, 7, true) };
    match cascade(state, quirks, level) {
        None => (master.irq_base | level, level, false),
        Some(true) => match slave_request(state, quirks) {
            Some(level) => (slave.irq_base | level, 8 | level, false),
            None => (slave.irq_base | 7, 15, true),
        },
        Some(false) => (regs::FLOATING_BUS, level, false),
    }
}

/// Whether the acknowledge in `state` is of a cascade nobody answers.
fn unanswered(state: &PicState, quirks: Quirks) -> bool {
    master_request(state, quirks).and_then(|level| cascade(state, quirks, level)) == Some(false)
}

/// KVM's `pic_update_irq` applied to `state` in profile `quirks`: with `CASCADE_LATCHED` a
/// slave request pulses master IR2 (an edge input latches IRR2 unless the line was sampled
/// high; a level input ends low), then with `INT_LATCHED` the output latches "the master has
/// a request".
fn kvm_update(state: &PicState, quirks: Quirks) -> PicState {
    let mut s = *state;
    if quirks.contains(Quirks::CASCADE_LATCHED) && slave_request(&s, quirks).is_some() {
        let b = 1 << CASCADE_IRQ;
        if level_mask(&s.master) & b != 0 {
            s.master.irr &= !b;
        } else if s.master.last_irr & b == 0 {
            s.master.irr |= b;
        }
        s.master.last_irr &= !b;
    }
    if quirks.contains(Quirks::INT_LATCHED) {
        s.output = master_request(&s, quirks).is_some();
    }
    s
}

/// Whether a one-byte write of `value` to `port` in `before` is one of KVM's update points:
/// OCW1, or an OCW2 that acts (a non-specific EOI with a level to end, a specific EOI, a
/// priority command). ICW1–ICW4, OCW3, the rotate-in-AEOI commands, ELCR and unknown ports
/// are not.
fn write_updates(before: &PicState, port: u16, value: u8, quirks: Quirks) -> bool {
    match port_chip(port) {
        Some((c, false)) => chip(before, c).init_state == InitState::Ready,
        Some((c, true)) if value & 0x18 == 0 => match value >> 5 {
            1 | 5 => {
                let c = chip(before, c);
                let special_mask = c.special_mask && !quirks.contains(Quirks::SPECIAL_MASK_IGNORED);
                let counted = if special_mask { c.isr & !c.imr } else { c.isr };
                counted != 0
            }
            3 | 6 | 7 => true,
            _ => false,
        },
        _ => false,
    }
}

// ----- checks -----------------------------------------------------------------------------

/// Invariant 6 for the latched output after one access from `before`: at a KVM update point
/// (`update`) with `INT_LATCHED` it is "the master has a request" now; otherwise unchanged.
///
/// `what` is formatted only if the check fails (`format_args!`, not an eager `format!`).
fn check_output(pic: &Pic, before: &PicState, update: bool, at: &Step, what: fmt::Arguments) {
    let after = pic.state();
    let quirks = pic.quirks();
    if update && quirks.contains(Quirks::INT_LATCHED) {
        let request = master_request(&after, quirks);
        assert_eq!(
            after.output,
            request.is_some(),
            "{at}: {what}: output not latched from request {request:?}"
        );
    } else {
        assert_eq!(after.output, before.output, "{at}: {what} is no update point but changed the output");
    }
}

/// Invariants 2 (on a clone), 5 and 6 and the standing promises, after every operation.
fn check_always(pic: &Pic, irr_tracks_lines: bool, at: &Step) {
    let state = pic.state();
    assert_eq!(state.validate(), Ok(()), "{at}: the PIC reached a state restore would refuse");
    let mut copy = pic.clone();
    assert_eq!(copy.restore(&state), Ok(()), "{at}: restore(&state()) refused");
    assert_eq!(copy, *pic, "{at}: restore(&state()) is not the identity");

    let quirks = pic.quirks();
    let pending = pic.pending_vector();
    assert_eq!(pic.intr(), pending.is_some(), "{at}: intr() disagrees with pending_vector() {pending:?}");
    let request = master_request(&state, quirks);
    let expected_intr = if quirks.contains(Quirks::INT_LATCHED) { state.output } else { request.is_some() };
    assert_eq!(pic.intr(), expected_intr, "{at}: intr() (output {}, request {request:?})", state.output);
    // Whenever INT is high, pending_vector is exactly what the acknowledge will answer.
    let expected = expected_ack(&state, quirks);
    assert_eq!(pending, expected_intr.then_some(expected.0), "{at}: pending_vector(), expected {expected:?}");
    let ack = pic.clone().acknowledge();
    assert_eq!((ack.vector, ack.irq, ack.spurious), expected, "{at}: acknowledge would answer {ack:?}");
    if let Some(vector) = pending {
        let base = vector & 0xF8;
        assert!(
            base == state.master.irq_base
                || base == state.slave.irq_base
                || (vector == regs::FLOATING_BUS && unanswered(&state, quirks)),
            "{at}: pending vector {vector:#04x} is from neither chip's base"
        );
    }
    if !quirks.contains(Quirks::LIVE_DURING_INIT) && state.master.init_state != InitState::Ready {
        assert_eq!(request, None, "{at}: the master resolves a request while it is initialising");
        if !quirks.contains(Quirks::INT_LATCHED) {
            assert_eq!(pending, None, "{at}: INT high while the master is initialising");
        }
    }
    if irr_tracks_lines {
        for c in [Chip::Master, Chip::Slave] {
            let s = chip(&state, c);
            // Master IR2 is line 2 or the slave's INT.
            let wire = if c == Chip::Master { cascade_wire(&state, quirks) } else { 0 };
            let lines = state.line_levels(c) | wire;
            assert_eq!(
                (s.irr ^ lines) & level_mask(s),
                0,
                "{at}: {c:?} level-triggered IRR {:#04x} differs from the lines {lines:#04x}",
                s.irr
            );
        }
    }
}

/// Invariant 4 for one access: `eoi` reports only levels in `may_end`, none still in service,
/// and every level that left service except those in `silent`.
fn check_eoi(eoi: u16, may_end: u16, before: &PicState, after: &PicState, silent: u16, at: &Step) {
    assert_eq!(eoi & !may_end, 0, "{at}: EOI {eoi:#06x} reports levels outside {may_end:#06x}");
    assert_eq!(eoi & isr(after), 0, "{at}: EOI {eoi:#06x} reports a level still in service");
    let left = isr(before) & !isr(after) & !silent;
    assert_eq!(left & !eoi, 0, "{at}: levels {left:#06x} left service without EOI notification {eoi:#06x}");
}

/// A one-byte write. Only ICW1 and OCW2 may end anything; no write puts a level in service.
fn checked_write(pic: &mut Pic, port: u16, value: u8, at: &Step) -> Effects {
    let before = pic.state();
    let effects = pic.write(port, value);
    let after = pic.state();
    assert_eq!(effects.invalid, unknown_port(port), "{at}: write {value:#04x} to {port:#x}");
    assert_eq!(
        isr(&after) & !isr(&before),
        0,
        "{at}: write {value:#04x} to {port:#x} put a level in service"
    );
    let may_end = match port_chip(port) {
        Some((c, true)) if value & 0x10 != 0 => {
            // ICW1: ends in-service levels and cancels pending (edge) requests of its chip.
            let now = chip(&after, c);
            assert_eq!(
                (now.init_state, now.imr),
                (InitState::Icw2, 0),
                "{at}: write {value:#04x} to {port:#x}: ICW1 did not restart"
            );
            if !pic.quirks().contains(Quirks::ICW1_RETAINS_STATE) {
                assert_eq!(now.isr, 0, "{at}: write {value:#04x} to {port:#x}: datasheet ICW1 left ISR set");
            }
            wide(c, chip(&before, c).isr | chip(&before, c).irr)
        }
        Some((c, true)) if value & 0x08 == 0 => {
            // OCW2: at most one level, and only one that was in service.
            assert!(
                effects.eoi.count_ones() <= 1,
                "{at}: write {value:#04x} to {port:#x}: OCW2 ended {:#06x}",
                effects.eoi
            );
            wide(c, chip(&before, c).isr)
        }
        _ => 0,
    };
    check_eoi(effects.eoi, may_end, &before, &after, 0, at);
    let update = write_updates(&before, port, value, pic.quirks());
    check_output(pic, &before, update, at, format_args!("write {value:#04x} to {port:#x}"));
    effects
}

/// A one-byte read: a poll read if the chip's poll flag was set, otherwise a side-effect-free
/// read of the selected register.
fn checked_read(pic: &mut Pic, port: u16, at: &Step) -> (u8, Effects) {
    let old = pic.clone();
    let before = old.state();
    let (value, effects) = pic.read(port);
    assert_eq!(effects.invalid, unknown_port(port), "{at}: read of {port:#x}");
    match port_chip(port) {
        Some((c, _)) if chip(&before, c).poll => check_poll(&old, pic, c, value, effects, at),
        selected => {
            assert_eq!(*pic, old, "{at}: read of {port:#x} is not a poll but changed the PIC");
            assert_eq!(effects.eoi, 0, "{at}: read of {port:#x} reported an EOI");
            let expected = match selected {
                Some((c, true)) if chip(&before, c).read_reg_select => chip(&before, c).isr,
                // The master's IR2 shows the live cascade wire (unless KVM latches it).
                Some((Chip::Master, true)) => before.master.irr | cascade_wire(&before, old.quirks()),
                Some((c, true)) => chip(&before, c).irr,
                Some((c, false)) => chip(&before, c).imr,
                None if port == regs::ELCR1 => before.master.elcr,
                None if port == regs::ELCR2 => before.slave.elcr,
                None => 0xFF,
            };
            assert_eq!(value, expected, "{at}: read of {port:#x}");
        }
    }
    (value, effects)
}

/// A poll read of `c`: an acknowledge of that chip alone (datasheet), or an acknowledge and
/// end in one step (`POLL_ACKS_AND_ENDS`, whose EOI need not have been in service).
fn check_poll(old: &Pic, pic: &Pic, c: Chip, value: u8, effects: Effects, at: &Step) {
    let (before, after) = (old.state(), pic.state());
    let quirks = pic.quirks();
    let ends = quirks.contains(Quirks::POLL_ACKS_AND_ENDS);
    assert!(!chip(&after, c).poll, "{at}: poll flag of {c:?} still set after the poll read");
    let gained = isr(&after) & !isr(&before);
    assert_eq!(gained & !wide(c, 0xFF), 0, "{at}: poll of {c:?} put another chip's level in service");
    // The poll answers the request the polled chip resolves (the master's with the cascade
    // wire on IR2), whatever a latched INT shows.
    let request = match c {
        Chip::Master => master_request(&before, quirks),
        Chip::Slave => slave_request(&before, quirks),
    };
    // KVM's poll runs its update except after a master poll that answers IR2.
    let update = ends && !(c == Chip::Master && request == Some(CASCADE_IRQ));
    check_output(pic, &before, update, at, format_args!("poll of {c:?}"));
    let Some(level) = request else {
        assert_eq!(value, if ends { 0x07 } else { 0 }, "{at}: empty poll byte");
        assert_eq!((effects.eoi, gained), (0, 0), "{at}: empty poll acknowledged something");
        check_eoi(effects.eoi, 0, &before, &after, 0, at);
        return;
    };
    assert_eq!(value, POLL_INT | level, "{at}: poll byte of {c:?}");
    let polled = wide(c, 1 << level);
    if ends {
        // KVM: the level is acknowledged and ended at once; a slave poll also drops ISR2.
        assert_eq!(effects.eoi, polled, "{at}: KVM poll of {c:?} IR{level} did not end it");
        let silent = if c == Chip::Slave { 1 << CASCADE_IRQ } else { 0 };
        check_eoi(effects.eoi, polled, &before, &after, silent, at);
    } else {
        // Datasheet: an acknowledge; the level stays in service unless the chip is in AEOI.
        let aeoi = chip(&before, c).auto_eoi;
        assert_eq!(effects.eoi, if aeoi { polled } else { 0 }, "{at}: poll of {c:?} IR{level}, AEOI {aeoi}");
        assert_eq!(isr(&after) & polled != 0, !aeoi, "{at}: polled {c:?} IR{level} in service");
        check_eoi(effects.eoi, polled, &before, &after, 0, at);
    }
}

/// Invariants 2–4 for the interrupt acknowledge.
fn checked_acknowledge(pic: &mut Pic, at: &Step) {
    let before = pic.state();
    let pending = pic.pending_vector();
    let ack = pic.acknowledge();
    let after = pic.state();
    let floating = unanswered(&before, pic.quirks());
    assert!(ack.irq < 16 && (floating || ack.vector & 7 == ack.irq & 7), "{at}: {ack:?}");
    if let Some(vector) = pending {
        assert_eq!(ack.vector, vector, "{at}: {ack:?} differs from pending_vector()");
    }
    // With INT low the acknowledge still takes the request the chips resolve (spurious IRQ7
    // if none; with a latched INT there may be one).
    let expected = expected_ack(&before, pic.quirks());
    assert_eq!((ack.vector, ack.irq, ack.spurious), expected, "{at}: {ack:?}");
    check_output(pic, &before, true, at, format_args!("acknowledge"));
    let base = if ack.irq < 8 { before.master.irq_base } else { before.slave.irq_base };
    if floating {
        assert_eq!(ack.vector, regs::FLOATING_BUS, "{at}: {ack:?}: nobody answered the cascade");
    } else {
        assert_eq!(ack.vector, base | (ack.irq & 7), "{at}: {ack:?} is not from its chip's base");
    }
    // What the INTA cycles put in service: a slave level also sets the master's ISR bit of
    // the input that addressed the slave, and a spurious IRQ15 sets only that; a spurious
    // IRQ7 sets nothing.
    let cascaded: u16 = master_request(&before, pic.quirks()).map_or(0, |level| 1 << level);
    let acked: u16 = match (ack.spurious, ack.irq) {
        (true, 7) => 0,
        (true, 15) => cascaded,
        (true, irq) => panic!("{at}: spurious acknowledge of IRQ{irq}"),
        (false, irq) if irq >= 8 => 1 << irq | cascaded,
        (false, irq) => 1 << irq,
    };
    assert_eq!(isr(&after) & !isr(&before) & !acked, 0, "{at}: {ack:?} put another level in service");
    for line in (0..16).filter(|line| acked & (1 << line) != 0) {
        let aeoi = if line < 8 { before.master.auto_eoi } else { before.slave.auto_eoi };
        assert_eq!(ack.eoi & (1 << line) != 0, aeoi, "{at}: {ack:?}: automatic EOI of IRQ{line}");
        assert_eq!(isr(&after) & (1 << line) != 0, !aeoi, "{at}: {ack:?}: IRQ{line} in service");
    }
    check_eoi(ack.eoi, acked, &before, &after, 0, at);
}

/// `pio_write` is its byte writes at consecutive ports, or (`WIDE_ACCESS_IGNORED`) nothing.
fn checked_pio_write(pic: &mut Pic, port: u16, data: &[u8], at: &Step) {
    let mut model = pic.clone();
    let expected = if let [value] = data {
        checked_write(&mut model, port, *value, at)
    } else {
        let mut eoi = 0;
        if !pic.quirks().contains(Quirks::WIDE_ACCESS_IGNORED) {
            for (offset, value) in (0u16..).zip(data) {
                eoi |= checked_write(&mut model, port.wrapping_add(offset), *value, at).eoi;
            }
        }
        Effects { eoi, invalid: Some(AccessError::Width(u16::try_from(data.len()).unwrap_or(u16::MAX))) }
    };
    assert_eq!(pic.pio_write(port, data), expected, "{at}: pio_write differs from its byte writes");
    assert_eq!(*pic, model, "{at}: pio_write left another state than its byte writes");
}

/// `pio_read` is its byte reads at consecutive ports, or (`WIDE_ACCESS_IGNORED`) zeros.
fn checked_pio_read(pic: &mut Pic, port: u16, len: usize, at: &Step) {
    let mut model = pic.clone();
    let mut expected_data = [0; 8];
    let expected = if len == 1 {
        let (value, effects) = checked_read(&mut model, port, at);
        expected_data[0] = value;
        effects
    } else {
        let mut eoi = 0;
        if !pic.quirks().contains(Quirks::WIDE_ACCESS_IGNORED) {
            for (offset, byte) in (0u16..).zip(&mut expected_data[..len]) {
                let (value, effects) = checked_read(&mut model, port.wrapping_add(offset), at);
                *byte = value;
                eoi |= effects.eoi;
            }
        }
        Effects { eoi, invalid: Some(AccessError::Width(u16::try_from(len).unwrap_or(u16::MAX))) }
    };
    let mut data = [0xA5; 8];
    assert_eq!(pic.pio_read(port, &mut data[..len]), expected, "{at}: pio_read differs from its byte reads");
    assert_eq!(data[..len], expected_data[..len], "{at}: pio_read data");
    assert_eq!(*pic, model, "{at}: pio_read left another state than its byte reads");
}

/// A line change: refused without effect for a bad line or source, otherwise recorded, with
/// `Masked` exactly when the line is masked, and never touching ISR.
fn checked_line(pic: &mut Pic, line: u8, source: u8, level: bool, at: &Step) {
    let old = pic.clone();
    match pic.set_irq_source(line, source, level) {
        Err(error) => {
            let expected =
                if line >= 16 { LineError::NoSuchLine(line) } else { LineError::NoSuchSource(source) };
            assert_eq!(error, expected, "{at}: refusal");
            assert_eq!(*pic, old, "{at}: a refused line change changed the PIC");
        }
        Ok(status) => {
            assert!(line < 16 && source < 32, "{at}: accepted line {line} source {source}");
            let asserted = pic.state().sources[usize::from(line)] & (1 << source) != 0;
            assert_eq!(asserted, level, "{at}: source not recorded");
            check_line_status(&old.state(), &pic.state(), line, status, at);
            check_output(pic, &old.state(), true, at, format_args!("line change"));
        }
    }
}

/// `pulse_irq`: as [`checked_line`], and source 0 is low again afterwards.
fn checked_pulse(pic: &mut Pic, line: u8, at: &Step) {
    let old = pic.clone();
    match pic.pulse_irq(line) {
        Err(error) => {
            assert_eq!(error, LineError::NoSuchLine(line), "{at}: refusal");
            assert_eq!(*pic, old, "{at}: a refused pulse changed the PIC");
        }
        Ok(status) => {
            assert_eq!(
                pic.state().sources[usize::from(line)] & 1,
                0,
                "{at}: source 0 still high after a pulse"
            );
            check_line_status(&old.state(), &pic.state(), line, status, at);
            check_output(pic, &old.state(), true, at, format_args!("pulse"));
        }
    }
}

fn check_line_status(before: &PicState, after: &PicState, line: u8, status: LineStatus, at: &Step) {
    let masked = imr(before) & (1 << line) != 0;
    assert_eq!(
        status == LineStatus::Masked,
        masked,
        "{at}: {status:?} for IRQ{line}, IMR {:#06x}",
        imr(before)
    );
    assert_eq!(isr(after), isr(before), "{at}: a line change touched ISR");
}

/// Reset: each chip back to its power-on state except that the input lines are kept
/// (`last_irr` samples them, or forgets them with `ICW1_RETAINS_STATE`, and level-triggered
/// IRR follows them), then KVM's update; the EOI notifications are exactly the levels that
/// were in service or had an edge request pending.
fn checked_reset(pic: &mut Pic, at: &Step) {
    let quirks = pic.quirks();
    let before = pic.state();
    let effects = pic.reset();
    let after = pic.state();
    let cancelled = |c: &ChipState| c.isr | (c.irr & !level_mask(c));
    // The slave's INT on master IR2 is reported as the slave's request, not the master's.
    let mut master = before.master;
    master.irr &= !cascade_wire(&before, quirks);
    let ended = wide(Chip::Master, cancelled(&master)) | wide(Chip::Slave, cancelled(&before.slave));
    assert_eq!(effects, Effects { eoi: ended, invalid: None }, "{at}: reset effects");
    check_eoi(effects.eoi, ended, &before, &after, 0, at);
    let mut power_on = PicState { sources: before.sources, ..PicState::default() };
    for (c, s) in [(Chip::Master, &mut power_on.master), (Chip::Slave, &mut power_on.slave)] {
        let lines = before.line_levels(c);
        s.last_irr = if quirks.contains(Quirks::ICW1_RETAINS_STATE) { 0 } else { lines };
        s.irr = lines & level_mask(s);
    }
    assert_eq!(after, kvm_update(&power_on, quirks), "{at}: state after reset");
    // The output restarts low at power-on (in every profile) before the update latches it.
    check_output(pic, &power_on, true, at, format_args!("reset"));
}

/// `update_output` is exactly KVM's `pic_update_irq` (so nothing without `CASCADE_LATCHED`
/// and `INT_LATCHED`), also when run twice. It is not idempotent, as KVM's is not: a pulse of
/// IR2 while its edge detector already saw the line high latches nothing but clears
/// `last_irr` bit 2, so the next update latches IRR2 (and may raise the latched INT).
fn checked_update_output(pic: &mut Pic, at: &Step) {
    let quirks = pic.quirks();
    for _ in 0..2 {
        let before = pic.state();
        pic.update_output();
        assert_eq!(pic.state(), kvm_update(&before, quirks), "{at}: update_output");
        check_output(pic, &before, true, at, format_args!("update_output"));
    }
}

/// Restore: installs exactly `state`, or refuses it exactly when a [`vm_pic::StateError`]
/// rule is broken (`priority_add` > 7, `irq_base` bits 2:0, ELCR outside its mask, slave
/// `icw3` bits 7:3; then master before slave, `single_mode` with `SNGL_IGNORED`, `ltim`
/// with `LTIM_IGNORED`, `icw3` other than 0x04/0x02 with `ICW3_IGNORED`; then without
/// `CASCADE_LATCHED` master IRR2 clear while the slave requests), with that error, and
/// leaves the PIC unchanged. Returns whether it was installed.
fn checked_restore(pic: &mut Pic, state: &PicState, at: &Step) -> bool {
    let old = pic.clone();
    let quirks = pic.quirks();
    let valid = [state.master, state.slave]
        .iter()
        .all(|c| c.priority_add <= 7 && c.irq_base & 7 == 0 && c.elcr & !c.elcr_mask == 0)
        && state.slave.icw3 & !7 == 0;
    assert_eq!(state.validate().is_ok(), valid, "{at}: validate() answered {:?}", state.validate());
    let pc_icw3 = |c: Chip| if c == Chip::Master { 0x04 } else { 0x02 };
    let ignored =
        [(Chip::Master, &state.master), (Chip::Slave, &state.slave)].into_iter().find_map(|(c, s)| {
            if s.single_mode && quirks.contains(Quirks::SNGL_IGNORED) {
                Some(StateError::IgnoredMode { chip: c, field: "single_mode" })
            } else if s.ltim && quirks.contains(Quirks::LTIM_IGNORED) {
                Some(StateError::IgnoredMode { chip: c, field: "ltim" })
            } else if s.icw3 != pc_icw3(c) && quirks.contains(Quirks::ICW3_IGNORED) {
                Some(StateError::IgnoredMode { chip: c, field: "icw3" })
            } else {
                None
            }
        });
    // Without a latched cascade the slave's INT is visible in master IRR2.
    let ignored = ignored.or_else(|| {
        (!quirks.contains(Quirks::CASCADE_LATCHED)
            && slave_request(state, quirks).is_some()
            && state.master.irr & (1 << CASCADE_IRQ) == 0)
            .then_some(StateError::CascadeNotInIrr)
    });
    let expected = state.validate().and_then(|()| ignored.map_or(Ok(()), Err));
    let result = pic.restore(state);
    assert_eq!(result, expected, "{at}: restore answered {result:?}");
    match result {
        Ok(()) => {
            assert_eq!(pic.state(), *state, "{at}: restore installed another state");
            assert_eq!(pic.quirks(), old.quirks(), "{at}: restore changed the profile");
            true
        }
        Err(_) => {
            assert_eq!(*pic, old, "{at}: a refused restore changed the PIC");
            false
        }
    }
}

/// A snapshot restored into a fresh PIC of the same profile is the same PIC.
fn checked_snapshot(pic: &Pic, at: &Step) {
    let mut copy = Pic::new(pic.quirks());
    assert_eq!(copy.restore(&pic.state()), Ok(()), "{at}: snapshot refused by a fresh PIC");
    assert_eq!(copy, *pic, "{at}: snapshot restored into a fresh PIC differs");
}
