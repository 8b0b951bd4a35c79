//! Structure-aware fuzzing of the `vm-apic` IOAPIC.
//!
//! An input is a configuration (version, any quirk mix, storm threshold, MSI format) and a
//! bounded list of operations: MMIO accesses at any offset and width, register writes
//! through IOREGSEL/IOWIN, entry programming, pin changes from several sources, pulses, LAPIC
//! EOI broadcasts, EOIR writes, "no LAPIC accepted" reports, storm-timer callbacks, resets,
//! restores and KVM_SET_IRQCHIP of arbitrary states, snapshots, and the RTC EOI tracking's
//! inputs (bus deliveries of the RTC message passed back, per-vCPU EOIs). [`run`] applies them to an
//! [`IoApic`] and, after every one, asserts:
//!
//! 1. nothing panics;
//! 2. the call returned exactly, and left exactly, what an independent reference written
//!    here from the datasheet and the documented quirks predicts from the state before it:
//!    the line status and message, the [`Effects`] (pins delivered, ended, deferred, the
//!    callback delay, the access error), the bytes read, the whole [`IoApicState`] and every
//!    storm counter, and the RTC tracking (EOIs awaited, the vector each vCPU owes);
//!    messages are built here through [`Interrupt::to_msi`];
//! 3. a level-triggered entry never delivers while its Remote IRR is set (unless an EOI of
//!    its vector in the same call cleared it first, or a KVM_SET_IRQCHIP re-asserted it);
//! 4. a masked entry never delivers, and an edge entry delivers only on a rising edge (or,
//!    with `EOI_ANY_TRIGGER_MODE`, on an EOI with its line high) or a KVM_SET_IRQCHIP;
//! 5. every asserted, unmasked level entry with Remote IRR clear is delivered by the time the
//!    call returns, unless the storm throttle deferred it (until `deliver_deferred`, which
//!    must deliver it), `not_accepted` cleared its Remote IRR, or a restore installed it;
//! 6. every state validates, delivery status is never set, `restore(&state())` into a fresh
//!    IOAPIC of the same configuration is the identity, a restore is refused exactly when a
//!    [`StateError`] rule is broken (with that error), and a refused one changes nothing.
//!
//! This file is the `ioapic` module of the `vm-irq-fuzz` crate (cargo-fuzz, nightly) and is
//! also included by `apic/tests/fuzz_corpus_ioapic.rs`, which replays the seed corpus on
//! stable, so it uses only `std`, `arbitrary` and `vm_apic`.

use std::fmt;

use arbitrary::{Arbitrary, Unstructured};
use vm_apic::bus::{Delivery, VcpuSet};
use vm_apic::ioapic::regs::*;
use vm_apic::ioapic::{
    AccessError, Effects, IoApic, IoApicConfig, IoApicState, LineError, LineResult, LineStatus, PinSet,
    Quirks, RedirectionEntry, StateError, Version,
};
use vm_apic::{Interrupt, MsiFormat, Shorthand};

/// The most operations one input applies (the rest is ignored), so that every run is fast.
pub const MAX_OPS: usize = 512;

/// The vectors [`Op::Program`] and [`Op::Eoi`] mostly use, so that EOIs hit entries.
pub const VECTORS: [u8; 4] = [0x40, 0x41, 0x90, 0xEF];

/// vCPUs the RTC ops name (one more is checked, never named by a delivery).
pub const RTC_VCPUS: usize = 4;

/// One fuzz case: an IOAPIC configuration and what happens to it.
// `run` decodes this layout lazily rather than through `Input` itself; the type is the
// format's definition (and what the seed encoders of the tests build).
#[allow(dead_code)]
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// How the IOAPIC is built.
    pub config: RawConfig,
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
    /// Any combination of the quirk flags (unknown bits dropped).
    Mixed(u16),
}

/// The configuration as arbitrary values.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct RawConfig {
    /// Version 0x20 (with EOIR) rather than 0x11.
    pub v20: bool,
    /// The quirks.
    pub profile: Profile,
    /// Storm threshold: `threshold % 5` (0 = off) below 250, KVM's 10 000 above.
    pub threshold: u8,
    /// [`MsiFormat::extended_destination`].
    pub extended_destination: bool,
}

impl RawConfig {
    /// The configuration it stands for.
    pub fn build(self) -> IoApicConfig {
        IoApicConfig {
            version: if self.v20 { Version::V20 } else { Version::V11 },
            quirks: match self.profile {
                Profile::Datasheet => Quirks::DATASHEET,
                Profile::Kvm => Quirks::KVM,
                Profile::Mixed(bits) => Quirks::from_bits_truncate(bits),
            },
            storm_threshold: if self.threshold < 250 { u32::from(self.threshold % 5) } else { 10_000 },
            storm_delay_ns: 10_000_000,
            msi_format: MsiFormat {
                extended_destination: self.extended_destination,
                x2apic_address_high: false,
            },
        }
    }
}

/// An MMIO offset: IOREGSEL, IOWIN or EOIR for most selector bytes, anything otherwise.
#[derive(Clone, Copy)]
pub struct Offset(pub u64);

impl fmt::Debug for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Offset({:#x})", self.0)
    }
}

impl<'a> Arbitrary<'a> for Offset {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Offset(match u8::arbitrary(u)? {
            0x00..=0x4F => IOREGSEL,
            0x50..=0xAF => IOWIN,
            0xB0..=0xDF => EOIR,
            0xE0..=0xEF => u64::from(u8::arbitrary(u)?),
            _ => u64::arbitrary(u)?,
        }))
    }
}

/// One thing that happens to the IOAPIC.
#[derive(Arbitrary, Clone, Debug)]
pub enum Op {
    /// `mmio_write` of the first `len % 10` bytes of `bytes`.
    MmioWrite {
        /// Offset from the base.
        offset: Offset,
        /// Width, taken modulo 10.
        len: u8,
        /// The bytes.
        bytes: [u8; 9],
    },
    /// `mmio_read` of `len % 10` bytes.
    MmioRead {
        /// Offset from the base.
        offset: Offset,
        /// Width, taken modulo 10.
        len: u8,
    },
    /// IOREGSEL = `index`, then a 32-bit IOWIN write of `value`.
    WriteReg {
        /// Indirect register.
        index: u8,
        /// Value.
        value: u32,
    },
    /// Entry `pin % 24` programmed as the guest does (high dword, then low dword) with a
    /// vector from [`VECTORS`].
    Program {
        /// Pin, modulo 24.
        pin: u8,
        /// Vector index (modulo 4), or a raw low dword when `raw` is set.
        vector: u8,
        /// Level-triggered.
        level: bool,
        /// Masked.
        masked: bool,
        /// Bits 13:11 and 10:8 of the low dword (polarity, delivery status, destination mode;
        /// delivery mode).
        extra: u8,
        /// The high dword.
        high: u32,
    },
    /// `set_irq_source(pin % 24, source % 4, level)`.
    Line {
        /// Pin, modulo 24.
        pin: u8,
        /// Source, modulo 4.
        source: u8,
        /// Level driven.
        level: bool,
    },
    /// `set_irq_source` with raw numbers (usually refused).
    RawLine {
        /// Pin (valid: 0–23).
        pin: u8,
        /// Source (valid: 0–31).
        source: u8,
        /// Level driven.
        level: bool,
    },
    /// `pulse_irq(pin % 25)`: pin 24 is refused.
    Pulse {
        /// Pin, modulo 25.
        pin: u8,
    },
    /// `end_of_interrupt` of a vector from [`VECTORS`] (selector < 200) or any vector.
    Eoi {
        /// Selector.
        selector: u8,
        /// The raw vector.
        vector: u8,
    },
    /// A 32-bit EOIR write of `value`.
    Eoir {
        /// The value (vector in bits 7:0).
        value: u32,
    },
    /// `not_accepted(pin % 25)`.
    NotAccepted {
        /// Pin, modulo 25.
        pin: u8,
    },
    /// `deliver_deferred` (the storm timer).
    DeliverDeferred,
    /// `restore` of a state built from arbitrary fields.
    Restore {
        /// The state.
        state: RawState,
        /// Make it valid.
        sanitize: bool,
    },
    /// `set_irqchip` of a state built from arbitrary fields.
    SetIrqchip {
        /// The state.
        state: RawState,
        /// Make it valid.
        sanitize: bool,
    },
    /// `set_irqchip` of the current state (KVM_GET_IRQCHIP then KVM_SET_IRQCHIP).
    GetSetIrqchip,
    /// The state restored into a fresh IOAPIC of the same configuration gives it back.
    Snapshot,
    /// `reset`.
    Reset,
    /// `rtc_delivered` of a bus delivery that the vCPUs of `accepted % 16` took; KVM's result
    /// is their number, or when none took it 0 (`minus_one` false) or -1.
    RtcDelivered {
        /// Bit n: vCPU n accepted.
        accepted: u8,
        /// The result for no acceptor.
        minus_one: bool,
    },
    /// `rtc_eoi(vcpu % 5, vector)`, the vector from [`VECTORS`] (selector < 200) or any.
    RtcEoi {
        /// vCPU, modulo 5.
        vcpu: u8,
        /// Selector.
        selector: u8,
        /// The raw vector.
        vector: u8,
    },
}

/// An [`IoApicState`] as arbitrary values.
#[derive(Arbitrary, Clone, Debug)]
pub struct RawState {
    /// [`IoApicState::base_address`].
    pub base_address: u64,
    /// [`IoApicState::ioregsel`].
    pub ioregsel: u8,
    /// [`IoApicState::id`] (valid: 0–15).
    pub id: u8,
    /// [`IoApicState::redirtbl`], raw.
    pub redirtbl: [u64; 24],
    /// Which lines are high.
    pub lines: u32,
    /// The sources asserting a high line (rotated by the pin number; never empty).
    pub sources: u32,
    /// [`IoApicState::irr_delivered`] (valid: bits 23:0).
    pub irr_delivered: u32,
}

impl RawState {
    fn build(&self, sanitize: bool) -> IoApicState {
        let mut state = IoApicState {
            base_address: self.base_address,
            ioregsel: self.ioregsel,
            id: self.id,
            redirtbl: self.redirtbl.map(RedirectionEntry),
            sources: [0; 24],
            irr_delivered: self.irr_delivered,
        };
        for (pin, set) in (0u32..).zip(&mut state.sources) {
            if self.lines & (1 << pin) != 0 {
                *set = self.sources.rotate_left(pin).max(1);
            }
        }
        if sanitize {
            state.id &= 0xF;
            state.irr_delivered &= 0xFF_FFFF;
            for e in &mut state.redirtbl {
                e.0 &= !RTE_DELIVERY_STATUS;
                if e.0 & RTE_TRIGGER_LEVEL == 0 {
                    e.0 &= !RTE_REMOTE_IRR;
                }
            }
        }
        state
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
    let Ok(config) = RawConfig::arbitrary(&mut u) else { return };
    let Ok(ops) = u.arbitrary_take_rest_iter::<Op>() else { return };
    let config = config.build();
    let mut io = IoApic::new(config);
    // Pins allowed to be eligible (level, asserted, unmasked, Remote IRR clear) and not
    // delivered: invariant 5's exceptions.
    let mut excused = 0u32;
    // The RTC tracking is not all observable (the awaited delivery is not), so the reference
    // carries its own from op to op.
    let mut rtc = RtcRef::default();
    for (index, op) in ops.take(MAX_OPS).enumerate() {
        let Ok(op) = op else { return };
        let op = &op;
        let at = Step { index, op, config };
        let before = io.clone();
        let mut reference = Reference::of(&io, rtc);
        let outcome = apply(&mut io, &mut reference, op, &at);
        rtc = reference.rtc;
        // Invariant 2: the whole state and every counter as the reference left them.
        assert_eq!(io.state(), reference.state, "{at}: state");
        assert_eq!(io.rtc_pending_eoi(), rtc.pending, "{at}: RTC EOIs awaited");
        for vcpu in 0..=RTC_VCPUS {
            assert_eq!(io.rtc_awaiting(vcpu), rtc.owed[vcpu], "{at}: RTC EOI owed by vCPU {vcpu}");
        }
        for pin in 0..IOAPIC_PINS {
            assert_eq!(
                io.storm_count(pin),
                reference.counts[usize::from(pin)],
                "{at}: storm count of pin {pin}"
            );
        }
        check_deliveries(&before, &io, &outcome, &at);
        // Invariant 5.
        match outcome.kind {
            Kind::Restored => excused = eligible(&io.state()),
            Kind::Normal | Kind::Eoi(_) | Kind::SetIrqchip => {}
        }
        excused |= outcome.excuse;
        if matches!(op, Op::DeliverDeferred) {
            assert_eq!(eligible(&io.state()), 0, "{at}: the storm timer left eligible pins");
        }
        excused &= eligible(&io.state());
        assert_eq!(eligible(&io.state()) & !excused, 0, "{at}: eligible level pins left undelivered");
        check_always(&io, &at);
    }
}

/// Where an assertion fired; formatted only when one does.
struct Step<'a> {
    index: usize,
    op: &'a Op,
    config: IoApicConfig,
}

impl fmt::Display for Step<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op #{} {:?} ({:?})", self.index, self.op, self.config)
    }
}

/// What kind of call an op was, for the delivery invariants.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Normal,
    /// An EOI (broadcast or EOIR) of this vector.
    Eoi(u8),
    Restored,
    SetIrqchip,
}

/// What an op delivered, for invariants 3–5.
struct Outcome {
    kind: Kind,
    delivered: u32,
    /// Pins newly excused from invariant 5 (deferred, not accepted).
    excuse: u32,
    /// Pins whose line had a rising edge in this op.
    rising: u32,
    /// The op was a pulse: the line is low again afterwards.
    pulse: bool,
}

impl Outcome {
    fn new(kind: Kind, delivered: u32) -> Self {
        Outcome { kind, delivered, excuse: 0, rising: 0, pulse: false }
    }
}

/// Runs `op` on the model and the reference and compares what each returned.
fn apply(io: &mut IoApic, r: &mut Reference, op: &Op, at: &Step) -> Outcome {
    match op {
        Op::MmioWrite { offset, len, bytes } => {
            let data = &bytes[..usize::from(len % 10)];
            let effects = io.mmio_write(offset.0, data);
            let kind = r.eoi_kind_of_write(offset.0, data);
            assert_eq!(effects, r.mmio_write(offset.0, data), "{at}: mmio_write effects");
            outcome_of(kind, &effects)
        }
        Op::MmioRead { offset, len } => {
            let mut data = [0xA5u8; 9];
            let len = usize::from(len % 10);
            let error = io.mmio_read(offset.0, &mut data[..len]);
            let (expected, expected_error) = r.mmio_read(offset.0, len);
            assert_eq!(error, expected_error, "{at}: mmio_read error");
            assert_eq!(data[..len], expected[..len], "{at}: mmio_read bytes");
            assert!(data[len..].iter().all(|b| *b == 0xA5), "{at}: mmio_read wrote past the access");
            Outcome::new(Kind::Normal, 0)
        }
        Op::WriteReg { index, value } => {
            let first = io.mmio_write(IOREGSEL, &u32::from(*index).to_le_bytes());
            assert_eq!(first, r.mmio_write(IOREGSEL, &u32::from(*index).to_le_bytes()), "{at}: IOREGSEL");
            let effects = io.mmio_write(IOWIN, &value.to_le_bytes());
            assert_eq!(effects, r.mmio_write(IOWIN, &value.to_le_bytes()), "{at}: IOWIN write");
            outcome_of(Kind::Normal, &effects)
        }
        Op::Program { pin, vector, level, masked, extra, high } => {
            let pin = pin % 24;
            let low = u32::from(VECTORS[usize::from(vector % 4)])
                | u32::from(*extra & 0x3F) << 8
                | u32::from(*level) << 15
                | u32::from(*masked) << 16;
            // The high dword first, as Linux writes: it can deliver a held level on its own,
            // before the low dword (which may mask the entry) is written.
            let index = IOREDTBL + 2 * pin + 1;
            let effects = io.write_register(index, *high);
            assert_eq!(effects, r.write_register(index, *high), "{at}: write_register({index:#x})");
            for pin in effects.deliver {
                let entry = io.entry(pin).unwrap();
                assert!(
                    !entry.masked() && entry.is_level() && io.line(pin),
                    "{at}: high-dword write delivered"
                );
            }
            let index = IOREDTBL + 2 * pin;
            let effects = io.write_register(index, low);
            assert_eq!(effects, r.write_register(index, low), "{at}: write_register({index:#x})");
            Outcome::new(Kind::Normal, effects.deliver.0)
        }
        Op::Line { pin, source, level } => line(io, r, pin % 24, source % 4, *level, at),
        Op::RawLine { pin, source, level } => line(io, r, *pin, *source, *level, at),
        Op::Pulse { pin } => {
            let pin = pin % 25;
            let result = io.pulse_irq(pin);
            let expected = r.set_irq(pin, 0, true).and_then(|up| r.set_irq(pin, 0, false).map(|_| up));
            assert_eq!(result, expected, "{at}: pulse_irq");
            let rising = u32::from(matches!(result, Ok(LineResult { status: LineStatus::Delivered, .. })))
                << (pin % 32);
            Outcome { rising, pulse: true, ..Outcome::new(Kind::Normal, delivered_of(pin, &result)) }
        }
        Op::Eoi { selector, vector } => {
            let vector = if *selector < 200 { VECTORS[usize::from(selector % 4)] } else { *vector };
            let effects = io.end_of_interrupt(vector);
            assert_eq!(effects, r.end_of_interrupt(vector), "{at}: end_of_interrupt({vector:#x})");
            outcome_of(Kind::Eoi(vector), &effects)
        }
        Op::Eoir { value } => {
            let data = value.to_le_bytes();
            let kind = r.eoi_kind_of_write(EOIR, &data);
            let effects = io.mmio_write(EOIR, &data);
            assert_eq!(effects, r.mmio_write(EOIR, &data), "{at}: EOIR write");
            outcome_of(kind, &effects)
        }
        Op::NotAccepted { pin } => {
            let pin = pin % 25;
            let cleared = io.not_accepted(pin);
            assert_eq!(cleared, r.not_accepted(pin), "{at}: not_accepted");
            Outcome { excuse: u32::from(cleared) << (pin % 32), ..Outcome::new(Kind::Normal, 0) }
        }
        Op::DeliverDeferred => {
            let effects = io.deliver_deferred();
            assert_eq!(effects, r.deliver_deferred(), "{at}: deliver_deferred");
            outcome_of(Kind::Normal, &effects)
        }
        Op::Restore { state, sanitize } => {
            let state = state.build(*sanitize);
            checked_restore(io, r, &state, at)
        }
        Op::SetIrqchip { state, sanitize } => {
            let state = state.build(*sanitize);
            checked_set_irqchip(io, r, &state, at)
        }
        Op::GetSetIrqchip => {
            let state = io.state();
            checked_set_irqchip(io, r, &state, at)
        }
        Op::Snapshot => {
            let mut copy = IoApic::new(io.config());
            assert_eq!(copy.restore(&io.state()), Ok(()), "{at}: snapshot refused by a fresh IOAPIC");
            assert_eq!(copy.state(), io.state(), "{at}: snapshot restored into a fresh IOAPIC differs");
            Outcome::new(Kind::Normal, 0)
        }
        Op::Reset => {
            io.reset();
            r.reset();
            Outcome::new(Kind::Normal, 0)
        }
        Op::RtcDelivered { accepted, minus_one } => {
            let mut set = VcpuSet::default();
            let accepted = accepted % 16;
            for vcpu in 0..RTC_VCPUS {
                if accepted & (1 << vcpu) != 0 {
                    set.insert(vcpu);
                }
            }
            let count = accepted.count_ones() as i32;
            let kvm_result = if count == 0 && *minus_one { -1 } else { count };
            let delivery = Delivery { accepted: set, no_destination: count == 0, kvm_result };
            assert_eq!(
                io.rtc_delivered(&delivery),
                r.rtc_delivered(accepted, kvm_result),
                "{at}: rtc_delivered"
            );
            Outcome::new(Kind::Normal, 0)
        }
        Op::RtcEoi { vcpu, selector, vector } => {
            let vcpu = usize::from(vcpu % 5);
            let vector = if *selector < 200 { VECTORS[usize::from(selector % 4)] } else { *vector };
            assert_eq!(
                io.rtc_eoi(vcpu, vector),
                r.rtc_eoi(vcpu, vector),
                "{at}: rtc_eoi({vcpu}, {vector:#x})"
            );
            Outcome::new(Kind::Normal, 0)
        }
    }
}

fn outcome_of(kind: Kind, effects: &Effects) -> Outcome {
    Outcome { excuse: effects.deferred.0, ..Outcome::new(kind, effects.deliver.0) }
}

fn delivered_of(pin: u8, result: &Result<LineResult, LineError>) -> u32 {
    match result {
        Ok(LineResult { message: Some(_), .. }) => 1 << (pin % 32),
        _ => 0,
    }
}

fn line(io: &mut IoApic, r: &mut Reference, pin: u8, source: u8, level: bool, at: &Step) -> Outcome {
    let was_high = io.line(pin);
    let result = io.set_irq_source(pin, source, level);
    assert_eq!(result, r.set_irq(pin, source, level), "{at}: set_irq_source");
    if let Ok(result) = result {
        assert_eq!(result.message.is_some(), result.status == LineStatus::Delivered, "{at}: {result:?}");
        if let Some(msg) = result.message {
            assert_eq!(Some(msg), io.message(pin), "{at}: returned message differs from message(pin)");
        }
    }
    let rising = u32::from(!was_high && io.line(pin)) << (pin % 32);
    Outcome { rising, ..Outcome::new(Kind::Normal, delivered_of(pin, &result)) }
}

fn checked_restore(io: &mut IoApic, r: &mut Reference, state: &IoApicState, at: &Step) -> Outcome {
    let old = io.clone();
    let expected = expected_validation(state);
    assert_eq!(state.validate(), expected, "{at}: validate");
    let result = io.restore(state);
    assert_eq!(result, expected, "{at}: restore");
    if result.is_ok() {
        r.state = *state;
        r.counts = [0; 24];
        r.rtc = RtcRef::default();
        Outcome::new(Kind::Restored, 0)
    } else {
        assert_eq!(*io, old, "{at}: a refused restore changed the IOAPIC");
        Outcome::new(Kind::Normal, 0)
    }
}

fn checked_set_irqchip(io: &mut IoApic, r: &mut Reference, state: &IoApicState, at: &Step) -> Outcome {
    let old = io.clone();
    let expected = expected_validation(state);
    let result = io.set_irqchip(state);
    match result {
        Ok(effects) => {
            assert_eq!(expected, Ok(()), "{at}: set_irqchip accepted an invalid state");
            assert_eq!(effects, r.set_irqchip(state), "{at}: set_irqchip effects");
            Outcome::new(Kind::SetIrqchip, effects.deliver.0)
        }
        Err(error) => {
            assert_eq!(Err(error), expected, "{at}: set_irqchip refusal");
            assert_eq!(*io, old, "{at}: a refused set_irqchip changed the IOAPIC");
            Outcome::new(Kind::Normal, 0)
        }
    }
}

/// [`StateError`] rules, in the documented order.
fn expected_validation(state: &IoApicState) -> Result<(), StateError> {
    if state.id > 15 {
        return Err(StateError::Id(u32::from(state.id)));
    }
    if state.irr_delivered >> 24 != 0 {
        return Err(StateError::NoSuchPins(state.irr_delivered & !0xFF_FFFF));
    }
    for (pin, e) in (0u8..).zip(&state.redirtbl) {
        if e.0 & RTE_DELIVERY_STATUS != 0 {
            return Err(StateError::DeliveryStatus { pin });
        }
        if e.0 & RTE_REMOTE_IRR != 0 && e.0 & RTE_TRIGGER_LEVEL == 0 {
            return Err(StateError::RemoteIrrOnEdge { pin });
        }
    }
    Ok(())
}

/// Invariants 3 and 4 for the pins an op delivered.
fn check_deliveries(before: &IoApic, after: &IoApic, outcome: &Outcome, at: &Step) {
    let quirks = at.config.quirks;
    for pin in PinSet(outcome.delivered) {
        let old = before.entry(pin).unwrap();
        let new = after.entry(pin).unwrap();
        assert!(!new.masked(), "{at}: masked pin {pin} delivered");
        assert!(after.line(pin) || outcome.pulse, "{at}: pin {pin} delivered with its line low");
        if outcome.kind == Kind::SetIrqchip {
            continue;
        }
        let eoi_cleared = matches!(outcome.kind, Kind::Eoi(v) if v == old.vector());
        if new.is_level() {
            assert!(new.remote_irr(), "{at}: level pin {pin} delivered without setting Remote IRR");
            assert!(
                !old.remote_irr() || eoi_cleared,
                "{at}: level pin {pin} delivered while its Remote IRR was set"
            );
        } else {
            let by_eoi = eoi_cleared && quirks.contains(Quirks::EOI_ANY_TRIGGER_MODE);
            assert!(
                outcome.rising & (1 << pin) != 0 || by_eoi,
                "{at}: edge pin {pin} delivered without a rising edge"
            );
            assert!(!old.masked(), "{at}: masked edge pin {pin} delivered");
        }
    }
}

/// Invariant 6 on every state reached.
fn check_always(io: &IoApic, at: &Step) {
    let state = io.state();
    assert_eq!(state.validate(), Ok(()), "{at}: the model reached an invalid state");
    for pin in 0..IOAPIC_PINS {
        assert!(!io.entry(pin).unwrap().delivery_status(), "{at}: delivery status set on pin {pin}");
    }
    let mut copy = IoApic::new(io.config());
    copy.restore(&state).unwrap_or_else(|e| panic!("{at}: own state refused: {e}"));
    assert_eq!(copy.state(), state, "{at}: restore(state()) is not the identity");
}

/// Level pins asserted, unmasked, with Remote IRR clear.
fn eligible(state: &IoApicState) -> u32 {
    let mut pins = 0;
    for (pin, (e, sources)) in state.redirtbl.iter().zip(&state.sources).enumerate() {
        let e = e.0;
        if e & RTE_TRIGGER_LEVEL != 0 && e & (RTE_MASK | RTE_REMOTE_IRR) == 0 && *sources != 0 {
            pins |= 1 << pin;
        }
    }
    pins
}

// ----- the reference ----------------------------------------------------------------------------

/// The IOAPIC re-derived from the datasheet and the quirk documentation: what one call must
/// return and leave, given the state and storm counters before it.
struct Reference {
    state: IoApicState,
    counts: [u32; 24],
    config: IoApicConfig,
    rtc: RtcRef,
}

/// KVM's `rtc_status` as the quirk documents it, for vCPUs 0 to [`RTC_VCPUS`].
#[derive(Clone, Copy, Debug, Default)]
struct RtcRef {
    /// EOIs awaited.
    pending: u32,
    /// The vector each vCPU owes an EOI for.
    owed: [Option<u8>; RTC_VCPUS + 1],
    /// An assert of pin 8 sent this vector, fixed or lowest priority (`true`) or not, and the
    /// VMM has not yet passed its delivery back.
    awaiting: Option<(u8, bool)>,
}

impl Reference {
    fn of(io: &IoApic, rtc: RtcRef) -> Self {
        let mut counts = [0; 24];
        for (pin, count) in (0u8..).zip(&mut counts) {
            *count = io.storm_count(pin);
        }
        Reference { state: io.state(), counts, config: io.config(), rtc }
    }

    fn rtc_delivered(&mut self, accepted: u8, kvm_result: i32) -> i32 {
        let Some((vector, tracked_mode)) = self.rtc.awaiting.take() else { return kvm_result };
        self.rtc = RtcRef { pending: kvm_result.max(0) as u32, ..RtcRef::default() };
        if tracked_mode {
            for vcpu in 0..RTC_VCPUS {
                if accepted & (1 << vcpu) != 0 {
                    self.rtc.owed[vcpu] = Some(vector);
                }
            }
        }
        kvm_result
    }

    fn rtc_eoi(&mut self, vcpu: usize, vector: u8) -> bool {
        if !self.quirk(Quirks::RTC_EOI_TRACKING) || self.rtc.owed[vcpu] != Some(vector) {
            return false;
        }
        self.rtc.owed[vcpu] = None;
        self.rtc.pending = self.rtc.pending.saturating_sub(1);
        true
    }

    fn quirk(&self, quirk: Quirks) -> bool {
        self.config.quirks.contains(quirk)
    }

    fn high(&self, pin: usize) -> bool {
        self.state.sources[pin] != 0
    }

    /// The message of an entry, through the shared [`Interrupt`] encoder.
    fn message(&self, e: u64) -> vm_apic::MsiMessage {
        let ext = self.config.msi_format.extended_destination;
        let destination = (e >> 56) as u32 | if ext { ((e >> 49) as u32 & 0x7F) << 8 } else { 0 };
        Interrupt {
            vector: e as u8,
            delivery_mode: vm_apic::DeliveryMode::from_bits((e >> 8) as u32),
            destination_mode: if e & (1 << 11) != 0 {
                vm_apic::DestinationMode::Logical
            } else {
                vm_apic::DestinationMode::Physical
            },
            trigger_mode: if e & (1 << 15) != 0 {
                vm_apic::TriggerMode::Level
            } else {
                vm_apic::TriggerMode::Edge
            },
            level: true,
            destination,
            shorthand: Shorthand::None,
            redirection_hint: false,
        }
        .to_msi(self.config.msi_format)
    }

    fn read_register(&self, index: u8) -> u32 {
        match index {
            0x00 | 0x02 => u32::from(self.state.id) << 24,
            0x01 => 0x0017_0000 | self.config.version as u32,
            0x10..=0x3F => {
                let e = self.state.redirtbl[usize::from(index - 0x10) / 2].0;
                if index % 2 == 1 {
                    (e >> 32) as u32
                } else {
                    e as u32
                }
            }
            _ if self.quirk(Quirks::RESERVED_READS_ALL_ONES) => 0xFFFF_FFFF,
            _ => 0,
        }
    }

    fn write_register(&mut self, index: u8, value: u32) -> Effects {
        let mut effects = Effects::NONE;
        match index {
            0x00 => self.state.id = (value >> 24) as u8 & 0xF,
            0x01 | 0x02 => effects.invalid = Some(AccessError::ReadOnlyRegister(index)),
            0x10..=0x3F => {
                let pin = usize::from(index - 0x10) / 2;
                let old = self.state.redirtbl[pin].0;
                let mut new = if index % 2 == 1 {
                    old & 0xFFFF_FFFF | u64::from(value) << 32
                } else {
                    old & 0xFFFF_FFFF_0000_0000 | u64::from(value)
                };
                // Delivery status and Remote IRR are read-only; edge clears Remote IRR.
                new = new & !0x5000 | old & 0x5000;
                if new & RTE_TRIGGER_LEVEL == 0 {
                    new &= !RTE_REMOTE_IRR;
                }
                if !self.quirk(Quirks::STORM_COUNT_KEPT_ON_WRITE) {
                    self.counts[pin] = 0;
                }
                if new & RTE_TRIGGER_LEVEL != 0 && new & (RTE_MASK | RTE_REMOTE_IRR) == 0 && self.high(pin) {
                    new |= RTE_REMOTE_IRR;
                    effects.deliver = PinSet(1 << pin);
                }
                self.state.redirtbl[pin].0 = new;
            }
            _ => effects.invalid = Some(AccessError::ReservedRegister(index)),
        }
        effects
    }

    /// The 32-bit value a write decodes to, if any, per the width rules.
    fn write_value(&self, offset: u64, data: &[u8]) -> Option<u32> {
        let kvm = self.quirk(Quirks::ANY_ACCESS_WIDTH);
        match data.len() {
            4 => Some(u32::from_le_bytes([data[0], data[1], data[2], data[3]])),
            8 if kvm => Some(u32::from_le_bytes([data[0], data[1], data[2], data[3]])),
            2 if kvm => Some(u32::from(data[0]) | u32::from(data[1]) << 8),
            1 if kvm => Some(u32::from(data[0])),
            1..=8 if !kvm && offset == IOREGSEL => Some(u32::from(data[0])),
            _ => None,
        }
    }

    fn decodes(&self, offset: u64) -> bool {
        offset == IOREGSEL || offset == IOWIN || (offset == EOIR && self.config.version == Version::V20)
    }

    fn eoi_kind_of_write(&self, offset: u64, data: &[u8]) -> Kind {
        match self.write_value(offset, data) {
            Some(value) if offset == EOIR && self.decodes(offset) => Kind::Eoi(value as u8),
            _ => Kind::Normal,
        }
    }

    fn mmio_write(&mut self, offset: u64, data: &[u8]) -> Effects {
        if !self.decodes(offset) {
            return Effects { invalid: Some(AccessError::UnknownOffset(offset)), ..Effects::NONE };
        }
        let width = (data.len() != 4).then_some(AccessError::Width(data.len() as u16));
        let Some(value) = self.write_value(offset, data) else {
            return Effects { invalid: width, ..Effects::NONE };
        };
        let mut effects = match offset {
            IOREGSEL => {
                self.state.ioregsel = value as u8;
                Effects::NONE
            }
            IOWIN => self.write_register(self.state.ioregsel, value),
            _ => self.end_of_interrupt(value as u8),
        };
        if width.is_some() {
            effects.invalid = width;
        }
        effects
    }

    fn mmio_read(&self, offset: u64, len: usize) -> ([u8; 9], Option<AccessError>) {
        if !self.decodes(offset) {
            return ([0; 9], Some(AccessError::UnknownOffset(offset)));
        }
        let index = self.state.ioregsel;
        let (value, mut error) = match offset {
            IOREGSEL => (u32::from(index), None),
            IOWIN => {
                let reserved = !matches!(index, 0..=2 | 0x10..=0x3F);
                (self.read_register(index), reserved.then_some(AccessError::ReservedRegister(index)))
            }
            _ => (0, None),
        };
        if len != 4 {
            error = Some(AccessError::Width(len as u16));
        }
        let kvm = self.quirk(Quirks::ANY_ACCESS_WIDTH);
        let decoded =
            len == 4 || (kvm && matches!(len, 1 | 2 | 8)) || (!kvm && offset == IOREGSEL && len <= 8);
        let mut bytes = [0; 9];
        if decoded {
            for (n, byte) in bytes.iter_mut().enumerate().take(len.min(4)) {
                *byte = (value >> (8 * n)) as u8;
            }
        }
        (bytes, error)
    }

    fn set_irq(&mut self, pin: u8, source: u8, level: bool) -> Result<LineResult, LineError> {
        if pin >= 24 {
            return Err(LineError::NoSuchPin(pin));
        }
        if source >= 32 {
            return Err(LineError::NoSuchSource(source));
        }
        let p = usize::from(pin);
        let was_high = self.high(p);
        if !level {
            self.state.sources[p] &= !(1 << source);
            return Ok(LineResult { status: LineStatus::Deasserted, message: None });
        }
        let status = |status| Ok(LineResult { status, message: None });
        let rtc = pin == 8 && self.quirk(Quirks::RTC_EOI_TRACKING);
        if rtc && self.rtc.pending > 0 {
            // Coalesced before the line is raised: a low line stays low.
            if was_high {
                self.state.sources[p] |= 1 << source;
            }
            return status(LineStatus::Coalesced);
        }
        self.state.sources[p] |= 1 << source;
        let e = self.state.redirtbl[p].0;
        let bit = 1u32 << pin;
        let delivered = LineResult { status: LineStatus::Delivered, message: Some(self.message(e)) };
        let tracked = rtc.then_some((e as u8, matches!((e >> 8) & 7, 0 | 1)));
        if e & RTE_TRIGGER_LEVEL != 0 {
            if e & RTE_MASK != 0 {
                return status(LineStatus::Masked);
            }
            if e & RTE_REMOTE_IRR != 0 {
                return status(LineStatus::InService);
            }
            self.state.redirtbl[p].0 |= RTE_REMOTE_IRR;
            if tracked.is_some() {
                self.rtc.awaiting = tracked;
            }
            return Ok(delivered);
        }
        let kvm_irr = self.quirk(Quirks::MASKED_EDGE_KEEPS_IRR);
        if kvm_irr {
            // KVM clears irr_delivered on every edge-mode assert.
            self.state.irr_delivered &= !bit;
        }
        if was_high {
            return status(LineStatus::Coalesced);
        }
        if e & RTE_MASK != 0 {
            if !kvm_irr {
                self.state.irr_delivered |= bit; // the datasheet drops the edge
            }
            return status(LineStatus::Masked);
        }
        self.state.irr_delivered |= bit;
        if tracked.is_some() {
            self.rtc.awaiting = tracked;
        }
        Ok(delivered)
    }

    fn end_of_interrupt(&mut self, vector: u8) -> Effects {
        let mut effects = Effects::NONE;
        for pin in 0..24 {
            let e = self.state.redirtbl[pin].0;
            let level = e & RTE_TRIGGER_LEVEL != 0;
            if e as u8 != vector || !(level || self.quirk(Quirks::EOI_ANY_TRIGGER_MODE)) {
                continue;
            }
            effects.eoi.0 |= 1 << pin;
            let mut e = e & !RTE_REMOTE_IRR;
            if e & RTE_MASK == 0 && self.high(pin) {
                self.counts[pin] = self.counts[pin].saturating_add(1);
                if self.counts[pin] == self.config.storm_threshold {
                    self.counts[pin] = 0;
                    effects.deferred.0 |= 1 << pin;
                } else {
                    if level {
                        e |= RTE_REMOTE_IRR;
                    } else {
                        self.state.irr_delivered |= 1 << pin;
                    }
                    effects.deliver.0 |= 1 << pin;
                }
            } else {
                self.counts[pin] = 0;
            }
            self.state.redirtbl[pin].0 = e;
        }
        if effects.deferred.0 != 0 {
            effects.recheck_after_ns = Some(self.config.storm_delay_ns);
        }
        effects
    }

    fn deliver_deferred(&mut self) -> Effects {
        let pins = eligible(&self.state);
        for pin in PinSet(pins) {
            self.state.redirtbl[usize::from(pin)].0 |= RTE_REMOTE_IRR;
        }
        Effects { deliver: PinSet(pins), ..Effects::NONE }
    }

    fn not_accepted(&mut self, pin: u8) -> bool {
        let Some(e) = self.state.redirtbl.get_mut(usize::from(pin)) else { return false };
        let clear = self.config.quirks.contains(Quirks::REMOTE_IRR_NEEDS_ACCEPT)
            && e.0 & RTE_TRIGGER_LEVEL != 0
            && e.0 & RTE_REMOTE_IRR != 0;
        if clear {
            e.0 &= !RTE_REMOTE_IRR;
        }
        clear
    }

    fn set_irqchip(&mut self, state: &IoApicState) -> Effects {
        let irr = state.lines() & !state.irr_delivered;
        self.state = IoApicState { sources: [0; 24], irr_delivered: 0, ..*state };
        self.counts = [0; 24];
        self.rtc = RtcRef::default();
        let mut effects = Effects::NONE;
        for pin in 0..24u8 {
            if irr & (1 << pin) != 0 {
                if let Ok(LineResult { status: LineStatus::Delivered, .. }) = self.set_irq(pin, 0, true) {
                    effects.deliver.0 |= 1 << pin;
                }
            }
        }
        self.rtc.awaiting = None;
        effects
    }

    fn reset(&mut self) {
        self.state = IoApicState { sources: self.state.sources, ..IoApicState::POWER_ON };
        self.counts = [0; 24];
        self.rtc = RtcRef::default();
    }
}
