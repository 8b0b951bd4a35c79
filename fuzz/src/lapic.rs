//! Structure-aware fuzzing of the `vm-apic` local APIC and the APIC bus.
//!
//! An input is a configuration (any quirk mix, bus and TSC clocks, CPUID features) and a
//! bounded list of operations on up to four APICs: guest MMIO of any offset and width, RDMSR
//! and WRMSR of the APIC's MSRs (IA32_APIC_BASE, IA32_TSC_DEADLINE, the x2APIC range) and of
//! arbitrary numbers, messages from the bus, acknowledges, LINT pins, local interrupts, CR8,
//! INIT, RESET, host APIC-base writes, restores of arbitrary states, and time moving forwards
//! (or, rarely, backwards). Every IPI an ICR write sends is delivered through [`ApicBus`] from
//! its sender. After every operation [`run`] asserts what the crate documents:
//!
//! 1. nothing panics;
//! 2. PPR is `TPR` if its class is at least the highest in-service vector's, else that
//!    vector's class; the offered vector is the highest IRR vector whose class beats PPR's
//!    (none while the APIC is globally disabled);
//! 3. ISR gains a bit only from an acknowledge (or a restore), and an acknowledge moves
//!    exactly the offered vector from IRR to ISR or answers the spurious vector and changes
//!    neither;
//! 4. an EOI write clears exactly the highest ISR bit, and reports it for broadcast only if it
//!    was level-triggered (TMR) and broadcast suppression is off;
//! 5. in the SDM profile no vector 0–15 is ever in IRR or ISR;
//! 6. every state validates, `restore(&state())` is the identity, a refused restore changes
//!    nothing, and the bus never reports an APIC that refused the message;
//! 7. `next_deadline` is exact: when it lies ahead the timer does not fire one tick before it
//!    and does fire at it; and in the SDM profile the current count never exceeds the initial
//!    count.
//!
//! This file is the `lapic` module of the `vm-irq-fuzz` crate (cargo-fuzz, nightly) and is
//! also included by `apic/tests/fuzz_corpus_lapic.rs`, which replays the seed corpus on
//! stable, so it uses only `std`, `arbitrary`, `vm_apic` and `vm_timer`.

use arbitrary::{Arbitrary, Unstructured};
use vm_apic::bus::{ApicBus, BusQuirks};
use vm_apic::lapic::{
    regs, ApicMode, BusClock, LapicConfig, LocalApic, LocalApicState, PendingEvents, Quirks, TimerState,
};
use vm_apic::{DeliveryMode, DestinationMode, Interrupt, Shorthand, TriggerMode, VectorSet};

/// The most operations one input applies.
pub const MAX_OPS: usize = 256;

/// One fuzz case.
// `run` decodes this layout lazily rather than through `Input` itself; the type is the
// format's definition (and what the seed encoders of the tests build).
#[allow(dead_code)]
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// How the APICs are built.
    pub config: Config,
    /// The operations; only the first [`MAX_OPS`] are decoded and applied.
    pub ops: Vec<Op>,
}

/// The configuration an input starts with (decoded first, field by field).
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Config {
    /// LAPIC quirk bits (`Quirks::from_bits_truncate`).
    pub quirks: u32,
    /// Bus quirk bits.
    pub bus_quirks: u8,
    /// Number of APICs, 1–4 (`% 4 + 1`).
    pub apics: u8,
    /// Selects the bus and TSC rates.
    pub clock: u8,
    /// CPUID features: bit 0 x2APIC, 1 TSC-deadline, 2 CMCI, 3 directed EOI, 4 SMM.
    pub features: u8,
    /// The guest TSC offset.
    pub tsc_offset: u64,
}

/// An MSR number: mostly the APIC's own, sometimes any.
#[derive(Clone, Copy, Debug)]
pub struct Msr(pub u32);

impl<'a> Arbitrary<'a> for Msr {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let selector = u8::arbitrary(u)?;
        Ok(Msr(match selector {
            0..=191 => regs::X2APIC_MSR_BASE | u32::from(selector & 0x3F),
            192..=215 => regs::IA32_APIC_BASE,
            216..=239 => regs::IA32_TSC_DEADLINE,
            _ => u32::arbitrary(u)?,
        }))
    }
}

/// An xAPIC page offset: mostly a register slot, sometimes any.
#[derive(Clone, Copy, Debug)]
pub struct Offset(pub u64);

impl<'a> Arbitrary<'a> for Offset {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let selector = u8::arbitrary(u)?;
        Ok(Offset(if selector < 224 {
            u64::from(selector & 0x3F) << 4
        } else {
            u64::from(u16::arbitrary(u)?)
        }))
    }
}

/// One thing that happens.
#[derive(Arbitrary, Clone, Debug)]
pub enum Op {
    /// An aligned 32-bit MMIO write (the normal guest access).
    Write { apic: u8, offset: Offset, value: u32 },
    /// An MMIO write of `len % 9` bytes.
    WriteBytes { apic: u8, offset: Offset, len: u8, bytes: [u8; 8] },
    /// An MMIO read of `len % 9` bytes.
    Read { apic: u8, offset: Offset, len: u8 },
    /// RDMSR.
    Rdmsr { apic: u8, msr: Msr },
    /// WRMSR.
    Wrmsr { apic: u8, msr: Msr, value: u64 },
    /// A message from the bus (IOAPIC or MSI), routed by the bus.
    Message { vector: u8, mode: u8, logical: bool, level: bool, assert: bool, destination: u32, hint: bool },
    /// The CPU acknowledges an interrupt.
    Acknowledge { apic: u8 },
    /// An EOI through the xAPIC page or the x2APIC MSR, whichever the mode decodes.
    Eoi { apic: u8 },
    /// A LINT pin changes.
    Lint { apic: u8, lint1: bool, level: bool },
    /// A local source (thermal, perf, CMCI, ...) signals.
    Local { apic: u8, entry: u8 },
    /// MOV to CR8.
    Cr8 { apic: u8, value: u8 },
    /// The VMM takes the latched events and acts on INIT and SIPI.
    Events { apic: u8 },
    /// RESET.
    Reset { apic: u8 },
    /// A host-initiated IA32_APIC_BASE write.
    HostApicBase { apic: u8, value: u64 },
    /// Time advances by `ticks` and every APIC is brought up to date.
    Advance { ticks: u32 },
    /// `now` jumps to an arbitrary value (VMM bug or restore on another clock).
    Time { now: u64 },
    /// A restore of an arbitrary state.
    Restore { apic: u8, state: ArbitraryState },
}

/// Raw material for a [`LocalApicState`]: any field values, mostly refused.
#[derive(Arbitrary, Clone, Debug)]
pub struct ArbitraryState {
    /// Start from the current state and change only a few fields (mostly accepted) rather than
    /// build every field from the input (mostly refused).
    pub mutate: bool,
    pub apic_base: u64,
    pub xapic_id: u8,
    pub tpr: u8,
    pub ldr: u32,
    pub dfr: u32,
    pub svr: u32,
    pub isr: [u64; 4],
    pub tmr: [u64; 4],
    pub irr: [u64; 4],
    pub esr: u32,
    pub icr: u64,
    pub lvt: [u32; 7],
    pub initial_count: u32,
    pub divide_config: u32,
    pub expiry: Option<u64>,
    pub tsc_deadline: u64,
    pub lint: [bool; 2],
    pub wait_for_sipi: bool,
}

impl ArbitraryState {
    fn build(&self, current: &LocalApicState) -> LocalApicState {
        if self.mutate {
            let mut s = *current;
            s.tpr = self.tpr;
            s.irr = VectorSet(self.irr).intersection(&VectorSet([!0xFFFF, !0, !0, !0]));
            s.isr = VectorSet(self.isr).intersection(&VectorSet([!0xFFFF, !0, !0, !0]));
            s.tmr = VectorSet(self.tmr);
            s.timer.initial_count = self.initial_count;
            s.timer.expiry = self.expiry.filter(|_| self.initial_count != 0);
            return s;
        }
        LocalApicState {
            apic_base: self.apic_base,
            xapic_id: self.xapic_id,
            tpr: self.tpr,
            ldr: self.ldr,
            dfr: self.dfr,
            svr: self.svr,
            isr: VectorSet(self.isr),
            tmr: VectorSet(self.tmr),
            irr: VectorSet(self.irr),
            esr: self.esr,
            esr_pending: 0,
            icr: self.icr,
            lvt: self.lvt,
            timer: TimerState {
                initial_count: self.initial_count,
                divide_config: self.divide_config,
                expiry: self.expiry,
                tsc_deadline: self.tsc_deadline,
            },
            lint: self.lint,
            events: PendingEvents::default(),
            wait_for_sipi: self.wait_for_sipi,
        }
    }
}

/// The invariant checks' context, printed when one fails.
struct Step<'a> {
    index: usize,
    op: &'a Op,
}

impl Step<'_> {
    fn fail(&self, what: &str) -> ! {
        panic!("op {} {:?}: {what}", self.index, self.op)
    }

    fn check(&self, ok: bool, what: &str) {
        if !ok {
            self.fail(what);
        }
    }
}

/// Runs one fuzz input.
pub fn run(data: &[u8]) {
    // Decoded as `Input::arbitrary_take_rest` decodes it, but lazily: the operations come one
    // at a time from `arbitrary_take_rest_iter` (the iterator `Vec::arbitrary_take_rest`
    // collects), so no `Vec` is built and nothing past the first `MAX_OPS` is decoded. An
    // operation that does not decode ends the case after the ones before it (the collecting
    // decoder refused the whole input: this runs strictly more).
    let mut u = Unstructured::new(data);
    let Ok(input) = Config::arbitrary(&mut u) else { return };
    let Ok(ops) = u.arbitrary_take_rest_iter::<Op>() else { return };
    let quirks = Quirks::from_bits_truncate(input.quirks);
    let bus = ApicBus::new(BusQuirks::from_bits_truncate(input.bus_quirks));
    let (bus_hz, tsc_hz) = match input.clock % 4 {
        0 => (1_000_000_000, 1_000_000_000),
        1 => (1_000_000_000, 2_596_132_000),
        2 => (100_000_000, 3_000_000_000),
        _ => (3_000_000_000, 1_000_000_000),
    };
    let count = usize::from(input.apics % 4) + 1;
    let mut apics: Vec<LocalApic> = (0..count)
        .map(|i| {
            LocalApic::new(LapicConfig {
                id: i as u32,
                bsp: i == 0,
                quirks,
                bus: BusClock::new(bus_hz, tsc_hz).unwrap(),
                guest_tsc: vm_timer::tsc::GuestTsc { offset: input.tsc_offset, ..Default::default() },
                x2apic: input.features & 1 != 0,
                tsc_deadline: input.features & 2 != 0,
                cmci: input.features & 4 != 0,
                directed_eoi: input.features & 8 != 0,
                phys_addr_bits: 46,
                smm: input.features & 16 != 0,
            })
        })
        .collect();
    let mut now: u64 = 0;
    // The APICs (and `now`) at their last full check, to skip the checks that are functions
    // of an APIC and `now` alone when neither changed since: see `check_all`.
    let mut checked: [Option<(LocalApic, u64)>; 4] = [None, None, None, None];
    for (index, op) in ops.take(MAX_OPS).enumerate() {
        let Ok(op) = op else { return };
        let op = &op;
        let at = Step { index, op };
        let pick = |apic: &u8| usize::from(*apic) % count;
        // A fixed array rather than a `Vec` per operation (entries past `count` are unused).
        let before: [LocalApicState; 4] = std::array::from_fn(|i| apics[i.min(count - 1)].state());
        let mut acknowledged: Option<usize> = None;
        let mut ended: Option<(usize, Option<u8>)> = None;
        match op {
            Op::Write { apic, offset, value } => {
                let i = pick(apic);
                let decoded = apics[i].mode() == ApicMode::XApic;
                let effects = apics[i].mmio_write(offset.0, &value.to_le_bytes(), now);
                if offset.0 == u64::from(regs::EOI) && decoded {
                    ended = Some((i, effects.eoi));
                }
                send(&bus, &mut apics, i, effects.ipi, &at);
            }
            Op::WriteBytes { apic, offset, len, bytes } => {
                let i = pick(apic);
                let data = &bytes[..usize::from(len % 9)];
                let decoded = apics[i].mode() == ApicMode::XApic;
                let effects = apics[i].mmio_write(offset.0, data, now);
                if offset.0 == u64::from(regs::EOI) && data.len() == 4 && decoded {
                    ended = Some((i, effects.eoi));
                }
                send(&bus, &mut apics, i, effects.ipi, &at);
            }
            Op::Read { apic, offset, len } => {
                let i = pick(apic);
                let mut data = [0u8; 8];
                let len = usize::from(len % 9);
                let _ = apics[i].mmio_read(offset.0, &mut data[..len], now);
                if apics[i].mode() != ApicMode::XApic {
                    at.check(data[..len].iter().all(|&b| b == 0xFF), "an undecoded page reads all ones");
                }
            }
            Op::Rdmsr { apic, msr } => {
                let _ = apics[pick(apic)].rdmsr(msr.0, now);
            }
            Op::Wrmsr { apic, msr, value } => {
                let i = pick(apic);
                if let Ok(effects) = apics[i].wrmsr(msr.0, *value, now) {
                    if msr.0 == 0x80B {
                        ended = Some((i, effects.eoi));
                    }
                    send(&bus, &mut apics, i, effects.ipi, &at);
                }
            }
            Op::Message { vector, mode, logical, level, assert, destination, hint } => {
                let irq = Interrupt {
                    vector: *vector,
                    delivery_mode: DeliveryMode::from_bits(u32::from(*mode)),
                    destination_mode: if *logical {
                        DestinationMode::Logical
                    } else {
                        DestinationMode::Physical
                    },
                    trigger_mode: if *level { TriggerMode::Level } else { TriggerMode::Edge },
                    level: *assert,
                    destination: *destination,
                    shorthand: Shorthand::None,
                    redirection_hint: *hint,
                };
                deliver(&bus, &mut apics, &irq, None, &at);
            }
            Op::Acknowledge { apic } => {
                let i = pick(apic);
                let offered = apics[i].pending_interrupt();
                let ack = apics[i].acknowledge();
                match offered {
                    Some(v) => {
                        at.check(ack.vector == v && !ack.spurious, "acknowledge takes the offered vector");
                        at.check(
                            !apics[i].state().irr.contains(v) && apics[i].state().isr.contains(v),
                            "IRR → ISR",
                        );
                        acknowledged = Some(i);
                    }
                    None => {
                        at.check(ack.spurious && ack.vector == before[i].svr as u8, "spurious vector");
                        at.check(apics[i].state() == before[i], "a spurious acknowledge changes nothing");
                    }
                }
            }
            Op::Eoi { apic } => {
                let i = pick(apic);
                let effects = match apics[i].mode() {
                    ApicMode::X2Apic => apics[i].wrmsr(0x80B, 0, now).ok(),
                    ApicMode::XApic => Some(apics[i].mmio_write(regs::EOI.into(), &[0; 4], now)),
                    _ => None,
                };
                if let Some(effects) = effects {
                    ended = Some((i, effects.eoi));
                }
            }
            Op::Lint { apic, lint1, level } => {
                let pin = if *lint1 { regs::Lint::Lint1 } else { regs::Lint::Lint0 };
                apics[pick(apic)].set_lint(pin, *level);
            }
            Op::Local { apic, entry } => {
                let entry = regs::LvtEntry::ALL[usize::from(*entry) % 7];
                apics[pick(apic)].local_interrupt(entry);
            }
            Op::Cr8 { apic, value } => apics[pick(apic)].set_cr8(u64::from(*value)),
            Op::Events { apic } => {
                let i = pick(apic);
                let events = apics[i].take_events();
                if events.init {
                    apics[i].init();
                }
                if events.sipi.is_some() {
                    apics[i].sipi_taken();
                }
            }
            Op::Reset { apic } => apics[pick(apic)].reset(),
            Op::HostApicBase { apic, value } => {
                let _ = apics[pick(apic)].host_write_apic_base(*value);
            }
            Op::Advance { ticks } => {
                now = now.saturating_add(u64::from(*ticks));
                for apic in &mut apics {
                    apic.advance(now);
                }
            }
            Op::Time { now: t } => now = *t,
            Op::Restore { apic, state } => {
                let i = pick(apic);
                let state = state.build(&apics[i].state());
                let copy = apics[i].clone();
                match apics[i].restore(&state) {
                    Ok(()) => at.check(apics[i].state() == state, "a restore takes the state"),
                    Err(_) => at.check(apics[i] == copy, "a refused restore changes nothing"),
                }
                check_all(&apics, &before, &mut checked, None, None, quirks, now, &at, true);
                continue;
            }
        }
        check_all(&apics, &before, &mut checked, acknowledged, ended, quirks, now, &at, false);
    }
}

/// Delivers an IPI an ICR write sent.
fn send(bus: &ApicBus, apics: &mut [LocalApic], source: usize, ipi: Option<Interrupt>, at: &Step) {
    if let Some(ipi) = ipi {
        deliver(bus, apics, &ipi, Some(source), at);
    }
}

fn deliver(bus: &ApicBus, apics: &mut [LocalApic], irq: &Interrupt, source: Option<usize>, at: &Step) {
    // Only the states are compared: a fixed array of them, not a `Vec` of APIC clones.
    let count = apics.len();
    let copies: [LocalApicState; 4] = std::array::from_fn(|i| apics[i.min(count - 1)].state());
    let Ok(delivery) = bus.deliver(apics, irq, source) else { at.fail("the bus refused a valid call") };
    for (i, (apic, copy)) in apics.iter().zip(&copies).enumerate() {
        // A refused illegal vector records an error, which the error LVT may deliver.
        if !delivery.accepted.contains(i) && irq.vector >= 16 {
            // Only a refused message may have touched it (an illegal vector records ESR).
            let (a, b) = (apic.state(), *copy);
            at.check(a.irr == b.irr && a.events == b.events, "an APIC that refused a message took it");
        }
    }
}

/// The invariants that hold after every operation.
#[allow(clippy::too_many_arguments)]
fn check_all(
    apics: &[LocalApic],
    before: &[LocalApicState],
    checked: &mut [Option<(LocalApic, u64)>; 4],
    acknowledged: Option<usize>,
    ended: Option<(usize, Option<u8>)>,
    quirks: Quirks,
    now: u64,
    at: &Step,
    restored: bool,
) {
    for (i, apic) in apics.iter().enumerate() {
        let state = apic.state();
        let old = &before[i];
        // 3. ISR grows only by an acknowledge.
        if !restored && acknowledged != Some(i) {
            let gained = state.isr.intersection(&VectorSet(old.isr.0.map(|w| !w)));
            at.check(gained.is_empty(), "ISR gained a bit without an acknowledge");
        }

        // 4. EOI.
        if let Some((e, broadcast)) = ended {
            if e == i && apic.mode() != ApicMode::Disabled && old.apic_base == state.apic_base {
                let mut expect = old.isr;
                let top = expect.highest();
                if let Some(v) = top {
                    expect.remove(v);
                }
                // A level LINT interrupt re-taken at its EOI is in IRR, not ISR.
                at.check(state.isr == expect, "EOI clears exactly the highest ISR bit");
                let level = top.filter(|&v| old.tmr.contains(v));
                let suppressed = old.svr & regs::Svr::SUPPRESS_EOI_BROADCAST.bits() != 0;
                at.check(
                    broadcast == level.filter(|_| !suppressed),
                    "EOI broadcast iff level and not suppressed",
                );
            }
        }

        // Invariants 2, 5, 6 (validate, restore identity) and 7 are functions of the APIC
        // (its state and configuration, all of which `LocalApic: PartialEq` compares) and of
        // `now` (and of `quirks`, fixed for the case). When both equal those of this APIC's
        // last check, which passed, they pass again: skipping them is exactly as strong.
        // Invariants 3 and 4 compare with the state before this operation and always run.
        if checked[i].as_ref().is_some_and(|(last, at_now)| *at_now == now && last == apic) {
            continue;
        }
        check_apic(apic, &state, quirks, now, i, at);
        checked[i] = Some((apic.clone(), now));
    }
}

/// The invariants of one APIC at `now` that depend on nothing else (see `check_all`).
fn check_apic(apic: &LocalApic, state: &LocalApicState, quirks: Quirks, now: u64, i: usize, at: &Step) {
    if let Err(error) = state.validate(apic.config()) {
        at.fail(&format!("vCPU {i}: the state does not validate: {error} ({state:?})"));
    }
    let mut copy = LocalApic::new(*apic.config());
    at.check(copy.restore(state).is_ok() && copy == *apic, "restore(state()) is the identity");

    // 2. PPR and the offered vector.
    let isrv = state.isr.highest().unwrap_or(0);
    let ppr = if state.tpr & 0xF0 >= isrv & 0xF0 { state.tpr } else { isrv & 0xF0 };
    at.check(apic.ppr() == ppr, "PPR = f(TPR, ISRV)");
    let offered = state.irr.highest().filter(|v| apic.is_enabled() && v >> 4 > ppr >> 4);
    at.check(apic.pending_interrupt() == offered, "the offered vector is the highest above PPR");

    // 5. Illegal vectors.
    if !quirks.contains(Quirks::ESR_NOT_MODELLED) {
        let low = VectorSet([0xFFFF, 0, 0, 0]);
        at.check(state.irr.intersection(&low).is_empty(), "a vector 0-15 in IRR");
        at.check(state.isr.intersection(&low).is_empty(), "a vector 0-15 in ISR");
    }

    // 7. Timer.
    if let Some(deadline) = apic.next_deadline(now) {
        at.check(deadline >= now, "next_deadline is not in the past");
        if deadline > now {
            let mut early = apic.clone();
            at.check(!early.advance(deadline - 1), "the timer fired before next_deadline");
            let mut due = apic.clone();
            at.check(due.advance(deadline), "the timer did not fire at next_deadline");
        }
    }
    if !quirks.contains(Quirks::PERIODIC_MIN_200US) {
        let mut reader = apic.clone();
        if reader.mode() == ApicMode::XApic {
            let mut bytes = [0; 4];
            let _ = reader.mmio_read(regs::TIMER_CURRENT_COUNT.into(), &mut bytes, now);
            at.check(u32::from_le_bytes(bytes) <= state.timer.initial_count, "TMCCT ≤ TMICT");
        }
    }
}
