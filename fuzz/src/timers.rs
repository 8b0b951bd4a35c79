//! Structure-aware fuzzing of the three `vm-timer` models: the x86 TSC ([`Tsc`]), the ARMv8
//! generic timer ([`Counter`] and two [`VcpuTimers`]) and the 8254 PIT ([`Pit`]).
//!
//! An input is a start configuration and a bounded list of operations on any of the three
//! models. Time is one host clock `now` (host TSC ticks for the TSC, host counter ticks for the
//! ARM timer, host nanoseconds for the PIT): most operations move it forward by an arbitrary
//! delta (small, large or huge, saturating at `u64::MAX`), some set it to an arbitrary
//! absolute value (possibly earlier). [`run`] applies the operations and asserts, after each
//! one, what the crate documents:
//!
//! 1. nothing panics: no guest access, register value, rate, offset, state or `now` may crash
//!    a model;
//! 2. monotonic counters: while the guest TSC mapping is unchanged, two guest TSC reads at
//!    host TSC `a ≤ b` differ (mod 2^64) by `⌊(b−a)·ratio/2^f⌋` or one more (exactly `b−a`
//!    unscaled); while CNTVOFF_EL2 (CNTPOFF_EL2) is unchanged, CNTVCT_EL0 (CNTPCT_EL0)
//!    advances by exactly `b−a` (mod 2^64);
//! 3. deadline agreement: for every ARM timer, `timer_deadline(now) = d` means the PPI is low
//!    at `d.ticks − 1` and (unless `d.ticks` saturated) high at `d.ticks`, and `None` means
//!    the timer is absent, disabled, masked or already high; `next_deadline` is the earliest of
//!    them; the event stream's `next_event` is the first counted by `events_between`. For the
//!    TSC deadline, `next_deadline(now) = h` means `advance(h−1)` does not fire (if `h > now`)
//!    and `advance(h)` does, and `None` means disarmed or never (not even at `u64::MAX`). For
//!    the PIT, `next_deadline(now) = t` means `advance(t−1)` reports no edge (if `t > now`)
//!    and `advance(t)` at least one, and `None` means none even at `u64::MAX`;
//! 4. every state a model produces validates, `restore(&state())` into a fresh model is the
//!    identity, and a restore of arbitrary field values either installs exactly those values
//!    or is refused (for the documented reason) leaving the model unchanged.
//!
//! Also checked, from the method docs: MSR write semantics (IA32_TSC / IA32_TSC_ADJUST
//! coupling, host writes setting one thing only, continuity across a rate change, a deadline
//! write firing exactly when already reached); `Output` and `set_offset` reports agreeing with
//! the levels; reads and refused system-register accesses changing nothing; TVAL/CVAL/CTL
//! read-back; ISS encode/decode; PIT unknown ports and the control word register being inert,
//! wide accesses being their byte accesses, an access without `rearm` leaving the IRQ0
//! deadline alone, and port 0x61 showing gate 2, speaker data and OUT2.
//!
//! The disagreements this target found were model bugs and are fixed: a TSC deadline that a
//! scaled guest TSC steps over while wrapping past 2^64 (`next_deadline` is now the first of
//! its wraps that lands at or past the deadline, which can be thousands of wraps later, and
//! `None` only if none does before the host TSC ends), and a restored PIT run whose waveform
//! origin lies ahead of its clock (`next_deadline` now waits for the origin as `advance`
//! does). Both are asserted without exemption.
//!
//! This file is the `timers` module of the `vm-irq-fuzz` crate (cargo-fuzz, nightly) and is
//! also included by `timer/tests/fuzz_corpus.rs`, which replays the seed corpus on stable, so
//! it uses only `std`, `arbitrary` and `vm_timer`.

use std::fmt;

use arbitrary::{Arbitrary, Unstructured};
use vm_timer::generic_timer::{
    self as gt, Access as SysAccess, Counter, CounterState, Deadline, El, Encoding, Features, Offset, Output,
    Ppis, SysReg, SysRegResult, TimerCtl, TimerId, TimerState, VcpuTimers, VcpuTimersState,
};
use vm_timer::pit::regs::{self as pit_regs, Access as PitAccess, Counter as PitCounter, NmiSc, PORTS};
use vm_timer::pit::{
    AccessError, ChannelState, Counting, Effects, Phase, Pit, PitState, StateError as PitStateError,
};
use vm_timer::tsc::{GuestTsc, RatioError, ScalingFormat, Tsc, TscScaling, TscState};

/// The most operations one input applies (the rest is ignored), so that every run is fast.
pub const MAX_OPS: usize = 512;

/// Number of ARM vCPUs sharing the counter.
const VCPUS: usize = 2;

/// One fuzz case.
// `run` decodes this layout lazily rather than through `Input` itself; the type is the
// format's definition (and what the seed encoders of the tests build).
#[allow(dead_code)]
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// The models' configuration and the initial `now`.
    pub config: Config,
    /// The operations, in order; only the first [`MAX_OPS`] are applied.
    pub ops: Vec<Op>,
}

/// The fixed configuration of the three models.
#[derive(Arbitrary, Debug)]
pub struct Config {
    /// The initial host time.
    pub start: u64,
    /// The TSC's initial rate.
    pub tsc_rate: Rate,
    /// CNTFRQ_EL0 (0 is refused by `Counter::new`; the run then uses 1).
    pub arm_frequency: u32,
    /// The VM has EL2 (the EL2 timers exist).
    pub arm_el2: bool,
    /// FEAT_ECV.
    pub arm_ecv: bool,
}

/// How an operation moves `now`.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Time {
    /// No time passes.
    Same,
    /// A few ticks later.
    Small(u16),
    /// Up to 2^48 ticks later.
    Large(u32),
    /// Any delta, saturating at `u64::MAX`.
    Huge(u64),
    /// An arbitrary absolute time, possibly earlier than `now`.
    At(u64),
}

impl Time {
    fn apply(self, now: u64) -> u64 {
        match self {
            Time::Same => now,
            Time::Small(d) => now.saturating_add(u64::from(d)),
            Time::Large(d) => now.saturating_add(u64::from(d) << 16),
            Time::Huge(d) => now.saturating_add(d),
            Time::At(t) => t,
        }
    }
}

/// A TSC rate, built through the public constructors.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Rate {
    /// Ratio 1.0 of the format (`svm` selects SVM 8.32, else VMX 16.48).
    Identity {
        /// SVM format.
        svm: bool,
    },
    /// `TscScaling::from_khz` (or `from_khz_with_tolerance` with `ppm`).
    Khz {
        /// SVM format.
        svm: bool,
        /// Guest kHz.
        guest_khz: u32,
        /// Host kHz.
        host_khz: u32,
        /// Tolerance in ppm, or KVM's default.
        ppm: Option<u32>,
    },
    /// `TscScaling::new` with a raw fixed-point ratio.
    Raw {
        /// SVM format.
        svm: bool,
        /// The ratio.
        ratio: u64,
    },
}

fn format(svm: bool) -> ScalingFormat {
    if svm {
        ScalingFormat::Svm
    } else {
        ScalingFormat::Vmx
    }
}

impl Rate {
    /// The scaling, checking the constructors' documented refusals.
    fn scaling(self) -> Option<TscScaling> {
        match self {
            Rate::Identity { svm } => Some(TscScaling::identity(format(svm))),
            Rate::Khz { svm, guest_khz, host_khz, ppm } => {
                let f = format(svm);
                let result = match ppm {
                    Some(ppm) => TscScaling::from_khz_with_tolerance(f, guest_khz, host_khz, ppm),
                    None => TscScaling::from_khz(f, guest_khz, host_khz),
                };
                match result {
                    Ok(s) => {
                        assert_eq!(s.format(), f, "{self:?}: from_khz changed the format");
                        assert!(
                            f.is_valid_ratio(s.ratio()),
                            "{self:?}: from_khz gave ratio {:#x}",
                            s.ratio()
                        );
                        Some(s)
                    }
                    Err(e) => {
                        let expected = if guest_khz == 0 {
                            Some(RatioError::ZeroGuestKhz)
                        } else if host_khz == 0 {
                            Some(RatioError::ZeroHostKhz)
                        } else {
                            None
                        };
                        if let Some(expected) = expected {
                            assert_eq!(e, expected, "{self:?}");
                        } else {
                            assert!(
                                matches!(e, RatioError::Zero | RatioError::TooLarge { .. }),
                                "{self:?}: refused with {e:?}"
                            );
                        }
                        None
                    }
                }
            }
            Rate::Raw { svm, ratio } => {
                let f = format(svm);
                let result = TscScaling::new(f, ratio);
                assert_eq!(result.is_ok(), f.is_valid_ratio(ratio), "{self:?}: {result:?}");
                if let Ok(s) = result {
                    assert_eq!((s.format(), s.ratio()), (f, ratio), "{self:?}");
                }
                result.ok()
            }
        }
    }
}

/// A TSC MSR value: absolute, or relative to the guest TSC at the operation's `now` (so that
/// deadlines land near the present often).
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum TscValue {
    /// This value.
    Abs(u64),
    /// The current guest TSC plus this (two's complement).
    Rel(i32),
    /// The current guest TSC plus this, wrapping.
    Far(u64),
}

impl TscValue {
    fn resolve(self, tsc: &Tsc, now: u64) -> u64 {
        match self {
            TscValue::Abs(v) => v,
            TscValue::Rel(d) => tsc.read_tsc(now).wrapping_add(d as i64 as u64),
            TscValue::Far(d) => tsc.read_tsc(now).wrapping_add(d),
        }
    }
}

/// A generic-timer system register encoding.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Enc {
    /// One of the registers `SysReg::decode` knows (index modulo `SysReg::ALL.len()`).
    Known(u8),
    /// Arbitrary fields (usually not a generic-timer register).
    Raw {
        /// op0.
        op0: u8,
        /// op1.
        op1: u8,
        /// CRn.
        crn: u8,
        /// CRm.
        crm: u8,
        /// op2.
        op2: u8,
    },
    /// CRn 14 with arbitrary op1/CRm/op2 (near the generic-timer space).
    Near {
        /// op1.
        op1: u8,
        /// CRm.
        crm: u8,
        /// op2.
        op2: u8,
    },
}

impl Enc {
    fn encoding(self) -> Encoding {
        match self {
            Enc::Known(i) => SysReg::ALL[usize::from(i) % SysReg::ALL.len()].encoding(),
            Enc::Raw { op0, op1, crn, crm, op2 } => Encoding::new(op0, op1, crn, crm, op2),
            Enc::Near { op1, crm, op2 } => Encoding::new(3, op1 & 7, 14, crm & 15, op2 & 7),
        }
    }
}

/// A PIT port: one of [`PORTS`] for 240 of the 256 selector bytes, any port otherwise.
#[derive(Clone, Copy)]
pub struct PitPort(pub u16);

impl fmt::Debug for PitPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PitPort({:#x})", self.0)
    }
}

impl<'a> Arbitrary<'a> for PitPort {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let selector = u8::arbitrary(u)?;
        if selector >= 0xF0 {
            return Ok(PitPort(u16::arbitrary(u)?));
        }
        Ok(PitPort(PORTS[usize::from(selector) % PORTS.len()]))
    }
}

/// One thing that happens.
#[derive(Arbitrary, Clone, Debug)]
pub enum Op {
    /// Time passes; nothing else.
    Elapse(Time),

    // ----- TSC -----
    /// Guest WRMSR IA32_TSC.
    TscGuestWriteTsc {
        /// Value written.
        value: TscValue,
        /// When.
        at: Time,
    },
    /// Guest WRMSR IA32_TSC_ADJUST.
    TscGuestWriteAdjust {
        /// Value written.
        value: u64,
        /// When.
        at: Time,
    },
    /// Guest WRMSR IA32_TSC_DEADLINE.
    TscGuestWriteDeadline {
        /// Value written.
        value: TscValue,
        /// When.
        at: Time,
    },
    /// Host write of IA32_TSC.
    TscHostSetTsc {
        /// Value written.
        value: TscValue,
        /// When.
        at: Time,
    },
    /// Host write of IA32_TSC_ADJUST.
    TscHostSetAdjust {
        /// Value written.
        value: u64,
    },
    /// Host write of the TSC offset.
    TscHostSetOffset {
        /// The offset.
        offset: u64,
    },
    /// Host write of IA32_TSC_DEADLINE.
    TscHostSetDeadline {
        /// Value written.
        value: TscValue,
        /// When (to resolve a relative value).
        at: Time,
    },
    /// `Tsc::set_scaling` with the rate, if the constructor accepts it.
    TscSetRate {
        /// The new rate.
        rate: Rate,
        /// When.
        at: Time,
    },
    /// RDTSC.
    TscRead {
        /// When.
        at: Time,
    },
    /// `Tsc::advance`.
    TscAdvance {
        /// When.
        at: Time,
    },
    /// `Tsc::reset`.
    TscReset {
        /// When.
        at: Time,
    },
    /// `Tsc::restore` of arbitrary fields.
    TscRestore {
        /// SVM format.
        svm: bool,
        /// Ratio.
        ratio: u64,
        /// Offset.
        offset: u64,
        /// IA32_TSC_ADJUST.
        tsc_adjust: u64,
        /// IA32_TSC_DEADLINE.
        tsc_deadline: u64,
    },

    // ----- ARM generic timer -----
    /// A trapped MRS/MSR forwarded to `VcpuTimers::access`.
    ArmAccess {
        /// vCPU (modulo 2).
        vcpu: u8,
        /// Register.
        enc: Enc,
        /// From EL0 (else EL1).
        el0: bool,
        /// MSR with this value, else MRS.
        write: Option<u64>,
        /// When.
        at: Time,
    },
    /// A trapped access described by an ESR ISS (`Encoding::from_iss`, `Access::from_iss`).
    ArmTrap {
        /// vCPU (modulo 2).
        vcpu: u8,
        /// The ISS.
        iss: u32,
        /// The value of Rt for a write.
        rt: u64,
        /// From EL0.
        el0: bool,
        /// When.
        at: Time,
    },
    /// Typed CTL write.
    ArmCtl {
        /// vCPU (modulo 2).
        vcpu: u8,
        /// Timer (modulo 4).
        timer: u8,
        /// Value written.
        value: u64,
        /// When.
        at: Time,
    },
    /// Typed CVAL write, absolute or relative to the timer's count.
    ArmCval {
        /// vCPU (modulo 2).
        vcpu: u8,
        /// Timer (modulo 4).
        timer: u8,
        /// Relative to the timer's count at `at`.
        relative: bool,
        /// Value (or delta).
        value: u64,
        /// When.
        at: Time,
    },
    /// Typed TVAL write.
    ArmTval {
        /// vCPU (modulo 2).
        vcpu: u8,
        /// Timer (modulo 4).
        timer: u8,
        /// Value written (bits 63:32 ignored by the model).
        value: u64,
        /// When.
        at: Time,
    },
    /// CNTKCTL_EL1 write.
    ArmCntkctl {
        /// vCPU (modulo 2).
        vcpu: u8,
        /// Value written.
        value: u64,
    },
    /// `Counter::set_offset`.
    ArmSetOffset {
        /// CNTPOFF_EL2 (else CNTVOFF_EL2).
        physical: bool,
        /// New offset.
        value: u64,
        /// Length of the change slice (modulo 4).
        slots: u8,
        /// When.
        at: Time,
    },
    /// `Counter::set_count` / `set_virtual_count`.
    ArmSetCount {
        /// CNTPOFF_EL2 through `set_count` (else `set_virtual_count`).
        physical: bool,
        /// The count to read at `at`.
        count: u64,
        /// Length of the change slice (modulo 4).
        slots: u8,
        /// When.
        at: Time,
    },
    /// The GIC resamples the PPI levels.
    ArmLevel {
        /// vCPU (modulo 2).
        vcpu: u8,
        /// When.
        at: Time,
    },
    /// `Counter::restore` of arbitrary fields.
    ArmRestoreCounter {
        /// CNTFRQ_EL0 (unless `same_frequency`).
        cntfrq: u32,
        /// Use the configured frequency (the only one a restore accepts).
        same_frequency: bool,
        /// CNTVOFF_EL2.
        cntvoff: u64,
        /// CNTPOFF_EL2.
        cntpoff: u64,
    },
    /// `VcpuTimers::restore` of arbitrary fields.
    ArmRestoreVcpu {
        /// vCPU (modulo 2).
        vcpu: u8,
        /// CNTKCTL_EL1.
        cntkctl: u64,
        /// CTL and CVAL of the four timers.
        timers: [(u64, u64); 4],
        /// Clear the RES0 bits and the EL2 timers without EL2 (ISTATUS is kept, so that its
        /// refusal is exercised).
        sanitize: bool,
    },

    // ----- PIT -----
    /// One-byte guest write.
    PitWrite {
        /// Port.
        port: PitPort,
        /// Byte.
        value: u8,
        /// When.
        at: Time,
    },
    /// One-byte guest read.
    PitRead {
        /// Port.
        port: PitPort,
        /// When.
        at: Time,
    },
    /// `Pit::pio_write` of the first `len % 9` bytes.
    PitPioWrite {
        /// First port.
        port: PitPort,
        /// Width modulo 9.
        len: u8,
        /// Bytes.
        bytes: [u8; 8],
        /// When.
        at: Time,
    },
    /// `Pit::pio_read` of `len % 9` bytes.
    PitPioRead {
        /// First port.
        port: PitPort,
        /// Width modulo 9.
        len: u8,
        /// When.
        at: Time,
    },
    /// A control word programming a counter followed by its count bytes (byte writes).
    PitProgram {
        /// Counter (modulo 3).
        counter: u8,
        /// RW1 RW0 (modulo 3, plus 1).
        access: u8,
        /// Mode bits.
        mode: u8,
        /// BCD.
        bcd: bool,
        /// The count.
        count: u16,
        /// When.
        at: Time,
    },
    /// `Pit::advance`.
    PitAdvance {
        /// When.
        at: Time,
    },
    /// `Pit::reset`.
    PitReset,
    /// `Pit::restore` of arbitrary fields.
    PitRestore {
        /// The state.
        state: RawPit,
        /// Fix the simple field rules (mode, gates 0/1, flip-flops).
        sanitize: bool,
    },
}

/// A counting element's phase as arbitrary values.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum RawPhase {
    /// `Phase::Idle`.
    Idle,
    /// `Phase::Waiting`.
    Waiting,
    /// `Phase::Paused`.
    Paused(u64),
    /// `Phase::Counting`.
    Counting {
        /// start_ns.
        start_ns: u64,
        /// origin_tick.
        origin_tick: u64,
        /// origin_position.
        origin_position: u64,
        /// reload_at.
        reload_at: Option<u64>,
    },
}

/// One PIT counter as arbitrary values.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct RawChannel {
    mode: u8,
    access: u8,
    bcd: bool,
    count: u16,
    loaded: u16,
    held: u16,
    null_count: bool,
    write_msb_next: bool,
    write_lsb: u8,
    read_msb_next: bool,
    count_latch: Option<u16>,
    status_latch: Option<u8>,
    gate: bool,
    phase: RawPhase,
}

/// A whole PIT state as arbitrary values.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct RawPit {
    channels: [RawChannel; 3],
    speaker_data: bool,
    irq0_pending: u64,
    irq0_synced_ns: u64,
}

impl RawPit {
    fn build(&self, sanitize: bool) -> PitState {
        let channel = |i: usize| {
            let raw = &self.channels[i];
            let access = match raw.access % 3 {
                0 => PitAccess::Lsb,
                1 => PitAccess::Msb,
                _ => PitAccess::LsbMsb,
            };
            let phase = match raw.phase {
                RawPhase::Idle => Phase::Idle,
                RawPhase::Waiting => Phase::Waiting,
                RawPhase::Paused(position) => Phase::Paused { position },
                RawPhase::Counting { start_ns, origin_tick, origin_position, reload_at } => {
                    Phase::Counting(Counting { start_ns, origin_tick, origin_position, reload_at })
                }
            };
            let mut c = ChannelState {
                mode: raw.mode,
                access,
                bcd: raw.bcd,
                count: raw.count,
                loaded: raw.loaded,
                held: raw.held,
                null_count: raw.null_count,
                write_msb_next: raw.write_msb_next,
                write_lsb: raw.write_lsb,
                read_msb_next: raw.read_msb_next,
                count_latch: raw.count_latch,
                status_latch: raw.status_latch,
                gate: raw.gate,
                phase,
            };
            if sanitize {
                c.mode &= 7;
                if i != 2 {
                    c.gate = true;
                }
                if c.access != PitAccess::LsbMsb {
                    c.write_msb_next = false;
                    c.read_msb_next = false;
                }
            }
            c
        };
        PitState {
            channels: [channel(0), channel(1), channel(2)],
            speaker_data: self.speaker_data,
            irq0_pending: self.irq0_pending,
            irq0_synced_ns: self.irq0_synced_ns,
        }
    }
}

/// Where an assertion fired; formatted only when one does.
struct Step<'a> {
    index: usize,
    op: &'a Op,
    now: u64,
}

impl fmt::Display for Step<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op #{} {:?} at now {:#x}", self.index, self.op, self.now)
    }
}

/// The models and the checker's memory.
struct World {
    now: u64,
    tsc: Tsc,
    counter: Counter,
    vcpus: [VcpuTimers; VCPUS],
    pit: Pit,
    /// Last guest TSC read: host TSC, value, and the mapping it was read through.
    tsc_seen: Option<(u64, u64, GuestTsc)>,
    /// Last CNTVCT_EL0 read: host counter, value, CNTVOFF_EL2.
    vct_seen: Option<(u64, u64, u64)>,
    /// Last CNTPCT_EL0 read: host counter, value, CNTPOFF_EL2.
    pct_seen: Option<(u64, u64, u64)>,
    /// Each model (with what its checks also read: `now`, the counter) at its last full
    /// check in `check_always`, which passed: see there.
    checked: Checked,
}

/// The inputs of the last passed state checks of `check_always`, per model.
#[derive(Default)]
struct Checked {
    tsc: Option<(Tsc, u64)>,
    counter: Option<Counter>,
    vcpus: [Option<(VcpuTimers, Counter, u64)>; VCPUS],
    pit: Option<(Pit, u64)>,
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
    let Ok(config) = Config::arbitrary(&mut u) else { return };
    let Ok(ops) = u.arbitrary_take_rest_iter::<Op>() else { return };
    let config = &config;
    let features = Features { el2: config.arm_el2, ecv: config.arm_ecv };
    let counter = match Counter::new(config.arm_frequency, features) {
        Ok(counter) => counter,
        Err(error) => {
            assert_eq!(
                (config.arm_frequency, error),
                (0, gt::StateError::ZeroFrequency),
                "Counter::new refused {config:?}"
            );
            Counter::new(1, features).unwrap_or_else(|e| panic!("Counter::new(1) refused: {e:?}"))
        }
    };
    assert_eq!(counter.state(), CounterState::reset(counter.frequency()), "Counter::new");
    let tsc = Tsc::new(config.tsc_rate.scaling().unwrap_or_default());
    let mut world = World {
        now: config.start,
        tsc,
        counter,
        vcpus: [VcpuTimers::new(); VCPUS],
        pit: Pit::new(),
        tsc_seen: None,
        vct_seen: None,
        pct_seen: None,
        checked: Checked::default(),
    };
    assert_eq!(world.pit.state(), PitState::default(), "Pit::new is not the power-on state");
    for (index, op) in ops.take(MAX_OPS).enumerate() {
        let Ok(op) = op else { return };
        let op = &op;
        world.apply(op, index);
        let at = Step { index, op, now: world.now };
        world.check_always(&at);
    }
}

fn timer_id(t: u8) -> TimerId {
    TimerId::ALL[usize::from(t) % TimerId::ALL.len()]
}

fn vcpu_index(v: u8) -> usize {
    usize::from(v) % VCPUS
}

impl World {
    fn apply(&mut self, op: &Op, index: usize) {
        // Operations that carry a `Time` move `now` first.
        let time = match op {
            Op::Elapse(t) => Some(*t),
            Op::TscGuestWriteTsc { at, .. }
            | Op::TscGuestWriteAdjust { at, .. }
            | Op::TscGuestWriteDeadline { at, .. }
            | Op::TscHostSetTsc { at, .. }
            | Op::TscHostSetDeadline { at, .. }
            | Op::TscSetRate { at, .. }
            | Op::TscRead { at }
            | Op::TscAdvance { at }
            | Op::TscReset { at }
            | Op::ArmAccess { at, .. }
            | Op::ArmTrap { at, .. }
            | Op::ArmCtl { at, .. }
            | Op::ArmCval { at, .. }
            | Op::ArmTval { at, .. }
            | Op::ArmSetOffset { at, .. }
            | Op::ArmSetCount { at, .. }
            | Op::ArmLevel { at, .. }
            | Op::PitWrite { at, .. }
            | Op::PitRead { at, .. }
            | Op::PitPioWrite { at, .. }
            | Op::PitPioRead { at, .. }
            | Op::PitProgram { at, .. }
            | Op::PitAdvance { at } => Some(*at),
            _ => None,
        };
        if let Some(time) = time {
            self.now = time.apply(self.now);
        }
        let now = self.now;
        let at = Step { index, op, now };
        match op {
            Op::Elapse(_) => {}
            Op::TscGuestWriteTsc { value, .. } => {
                let value = value.resolve(&self.tsc, now);
                checked_guest_write_tsc(&mut self.tsc, value, now, &at);
            }
            Op::TscGuestWriteAdjust { value, .. } => {
                checked_guest_write_adjust(&mut self.tsc, *value, now, &at);
            }
            Op::TscGuestWriteDeadline { value, .. } => {
                let value = value.resolve(&self.tsc, now);
                checked_guest_write_deadline(&mut self.tsc, value, now, &at);
            }
            Op::TscHostSetTsc { value, .. } => {
                let value = value.resolve(&self.tsc, now);
                let old = self.tsc;
                self.tsc.host_set_tsc(value, now);
                assert_eq!(self.tsc.read_tsc(now), value, "{at}: host_set_tsc");
                assert_eq!(
                    self.tsc.read_tsc_adjust(),
                    old.read_tsc_adjust(),
                    "{at}: host_set_tsc moved TSC_ADJUST"
                );
                assert_eq!(self.tsc.read_tsc_deadline(), old.read_tsc_deadline(), "{at}: host_set_tsc fired");
                assert_eq!(self.tsc.scaling(), old.scaling(), "{at}: host_set_tsc changed the ratio");
            }
            Op::TscHostSetAdjust { value } => {
                let old = self.tsc;
                self.tsc.host_set_tsc_adjust(*value);
                assert_eq!(self.tsc.read_tsc_adjust(), *value, "{at}");
                assert_eq!(
                    self.tsc.guest_tsc(),
                    old.guest_tsc(),
                    "{at}: host TSC_ADJUST write moved the TSC"
                );
                assert_eq!(self.tsc.read_tsc_deadline(), old.read_tsc_deadline(), "{at}");
            }
            Op::TscHostSetOffset { offset } => {
                let old = self.tsc;
                self.tsc.host_set_offset(*offset);
                assert_eq!(self.tsc.offset(), *offset, "{at}");
                assert_eq!(self.tsc.scaling(), old.scaling(), "{at}");
                assert_eq!(
                    self.tsc.read_tsc_adjust(),
                    old.read_tsc_adjust(),
                    "{at}: offset write moved TSC_ADJUST"
                );
                assert_eq!(self.tsc.read_tsc_deadline(), old.read_tsc_deadline(), "{at}: offset write fired");
            }
            Op::TscHostSetDeadline { value, .. } => {
                let value = value.resolve(&self.tsc, now);
                let old = self.tsc;
                self.tsc.host_set_tsc_deadline(value);
                assert_eq!(self.tsc.read_tsc_deadline(), value, "{at}: host deadline write");
                assert_eq!(self.tsc.guest_tsc(), old.guest_tsc(), "{at}");
                assert_eq!(self.tsc.read_tsc_adjust(), old.read_tsc_adjust(), "{at}");
            }
            Op::TscSetRate { rate, .. } => {
                if let Some(scaling) = rate.scaling() {
                    let old = self.tsc;
                    self.tsc.set_scaling(scaling, now);
                    assert_eq!(self.tsc.scaling(), scaling, "{at}: set_scaling");
                    assert_eq!(
                        self.tsc.read_tsc(now),
                        old.read_tsc(now),
                        "{at}: rate change is not continuous"
                    );
                    assert_eq!(self.tsc.read_tsc_adjust(), old.read_tsc_adjust(), "{at}");
                    assert_eq!(self.tsc.read_tsc_deadline(), old.read_tsc_deadline(), "{at}");
                }
            }
            Op::TscRead { .. } => {
                let value = self.tsc.read_tsc(now);
                assert_eq!(value, self.tsc.guest_tsc().read(now), "{at}: read_tsc differs from the mapping");
            }
            Op::TscAdvance { .. } => {
                let expired = self.tsc.tsc_deadline().has_expired(&self.tsc.guest_tsc(), now);
                let old = self.tsc;
                let fired = self.tsc.advance(now);
                assert_eq!(fired, expired, "{at}: advance vs has_expired");
                let expected_deadline = if fired { 0 } else { old.read_tsc_deadline() };
                assert_eq!(self.tsc.read_tsc_deadline(), expected_deadline, "{at}: deadline after advance");
                assert_eq!(self.tsc.guest_tsc(), old.guest_tsc(), "{at}: advance moved the TSC");
                assert!(!self.tsc.advance(now), "{at}: a deadline fired twice");
            }
            Op::TscReset { .. } => {
                let scaling = self.tsc.scaling();
                self.tsc.reset(now);
                assert_eq!(
                    (self.tsc.read_tsc(now), self.tsc.read_tsc_adjust(), self.tsc.read_tsc_deadline()),
                    (0, 0, 0),
                    "{at}: TSC after reset"
                );
                assert_eq!(self.tsc.scaling(), scaling, "{at}: reset changed the ratio");
            }
            Op::TscRestore { svm, ratio, offset, tsc_adjust, tsc_deadline } => {
                let state = TscState {
                    format: format(*svm),
                    ratio: *ratio,
                    offset: *offset,
                    tsc_adjust: *tsc_adjust,
                    tsc_deadline: *tsc_deadline,
                };
                let old = self.tsc;
                match self.tsc.restore(&state) {
                    Ok(()) => {
                        assert!(state.format.is_valid_ratio(state.ratio), "{at}: accepted a bad ratio");
                        assert_eq!(self.tsc.state(), state, "{at}: restore installed another state");
                    }
                    Err(error) => {
                        assert!(!state.format.is_valid_ratio(state.ratio), "{at}: refused {error:?}");
                        assert_eq!(state.validate(), Err(error), "{at}: refused for another reason");
                        assert_eq!(self.tsc, old, "{at}: a refused restore changed the TSC");
                    }
                }
            }

            Op::ArmAccess { vcpu, enc, el0, write, .. } => {
                let access = match write {
                    Some(v) => SysAccess::Write(*v),
                    None => SysAccess::Read,
                };
                self.checked_access(vcpu_index(*vcpu), enc.encoding(), *el0, access, &at);
            }
            Op::ArmTrap { vcpu, iss, rt, el0, .. } => {
                let encoding = Encoding::from_iss(*iss);
                assert_eq!(encoding.to_iss(), iss & 0x003F_FC1E, "{at}: to_iss(from_iss(iss))");
                assert_eq!(Encoding::from_iss(encoding.to_iss()), encoding, "{at}: from_iss(to_iss)");
                let access = SysAccess::from_iss(*iss, *rt);
                let expected = if iss & 1 == 1 { SysAccess::Read } else { SysAccess::Write(*rt) };
                assert_eq!(access, expected, "{at}: Access::from_iss");
                self.checked_access(vcpu_index(*vcpu), encoding, *el0, access, &at);
            }
            Op::ArmCtl { vcpu, timer, value, .. } => {
                let (i, id) = (vcpu_index(*vcpu), timer_id(*timer));
                let counter = self.counter;
                self.checked_update(i, id, &at, |v| v.write_ctl(&counter, id, *value, now));
                if present(&counter, id) {
                    let ctl = self.vcpus[i].ctl(&counter, id, now);
                    assert_eq!(
                        ctl.bits() & TimerCtl::WRITABLE.bits(),
                        value & TimerCtl::WRITABLE.bits(),
                        "{at}: CTL read-back"
                    );
                }
            }
            Op::ArmCval { vcpu, timer, relative, value, .. } => {
                let (i, id) = (vcpu_index(*vcpu), timer_id(*timer));
                let counter = self.counter;
                let cval = if *relative { counter.timer_count(id, now).wrapping_add(*value) } else { *value };
                self.checked_update(i, id, &at, |v| v.write_cval(&counter, id, cval, now));
                if present(&counter, id) {
                    assert_eq!(self.vcpus[i].cval(&counter, id), cval, "{at}: CVAL read-back");
                }
            }
            Op::ArmTval { vcpu, timer, value, .. } => {
                let (i, id) = (vcpu_index(*vcpu), timer_id(*timer));
                let counter = self.counter;
                self.checked_update(i, id, &at, |v| v.write_tval(&counter, id, *value, now));
                if present(&counter, id) {
                    assert_eq!(
                        self.vcpus[i].tval(&counter, id, now),
                        value & 0xffff_ffff,
                        "{at}: TVAL read-back"
                    );
                    let expected =
                        counter.timer_count(id, now).wrapping_add(*value as u32 as i32 as i64 as u64);
                    assert_eq!(self.vcpus[i].cval(&counter, id), expected, "{at}: CVAL after a TVAL write");
                }
            }
            Op::ArmCntkctl { vcpu, value } => {
                let i = vcpu_index(*vcpu);
                let before = self.vcpus[i];
                self.vcpus[i].write_cntkctl(&self.counter, *value);
                let writable = gt::Cntkctl::writable(self.counter.features().ecv);
                assert_eq!(self.vcpus[i].cntkctl().bits(), value & writable.bits(), "{at}: CNTKCTL_EL1");
                assert_eq!(
                    self.vcpus[i].level(&self.counter, now),
                    before.level(&self.counter, now),
                    "{at}: a CNTKCTL_EL1 write changed a PPI level"
                );
                let mut expected = before.state();
                expected.cntkctl = self.vcpus[i].cntkctl().bits();
                assert_eq!(self.vcpus[i].state(), expected, "{at}: CNTKCTL_EL1 write changed a timer");
            }
            Op::ArmSetOffset { physical, value, slots, .. } => {
                let which = if *physical { Offset::Physical } else { Offset::Virtual };
                self.checked_set_offset(which, *value, usize::from(slots % 4), &at, |c, vcpus, changes| {
                    c.set_offset(which, *value, now, vcpus.iter(), changes)
                });
            }
            Op::ArmSetCount { physical, count, slots, .. } => {
                let which = if *physical { Offset::Physical } else { Offset::Virtual };
                let value = now.wrapping_sub(*count);
                self.checked_set_offset(which, value, usize::from(slots % 4), &at, |c, vcpus, changes| {
                    if *physical {
                        c.set_count(which, *count, now, vcpus.iter(), changes)
                    } else {
                        c.set_virtual_count(*count, now, vcpus.iter(), changes)
                    }
                });
                let read = match which {
                    Offset::Virtual => self.counter.virtual_count(now),
                    Offset::Physical => self.counter.physical_count(now),
                };
                assert_eq!(read, *count, "{at}: set_count");
            }
            Op::ArmLevel { vcpu, .. } => {
                // The level itself is checked against the registers in `check_always`.
                let _ = self.vcpus[vcpu_index(*vcpu)].level(&self.counter, now);
            }
            Op::ArmRestoreCounter { cntfrq, cntvoff, cntpoff, same_frequency } => {
                let cntfrq = if *same_frequency { self.counter.frequency() } else { *cntfrq };
                let state = CounterState { cntfrq, cntvoff: *cntvoff, cntpoff: *cntpoff };
                let old = self.counter;
                // CNTFRQ_EL0 is configuration: only a state of the configured frequency restores.
                let expected = if cntfrq == 0 {
                    Err(gt::StateError::ZeroFrequency)
                } else if cntfrq != old.frequency() {
                    Err(gt::StateError::FrequencyMismatch { state: cntfrq, configured: old.frequency() })
                } else {
                    Ok(())
                };
                let result = self.counter.restore(&state);
                assert_eq!(result, expected, "{at}: counter restore");
                if result.is_ok() {
                    assert_eq!(self.counter.state(), state, "{at}: restore installed another state");
                    assert_eq!(self.counter.features(), old.features(), "{at}: restore changed features");
                } else {
                    assert_eq!(self.counter, old, "{at}: a refused restore changed the counter");
                }
            }
            Op::ArmRestoreVcpu { vcpu, cntkctl, timers, sanitize } => {
                let i = vcpu_index(*vcpu);
                let features = self.counter.features();
                let mut state = VcpuTimersState { cntkctl: *cntkctl, ..VcpuTimersState::default() };
                for (id, (ctl, cval)) in TimerId::ALL.iter().zip(timers) {
                    *state.timer_mut(*id) = TimerState { ctl: *ctl, cval: *cval };
                }
                if *sanitize {
                    state.cntkctl &= gt::Cntkctl::writable(features.ecv).bits();
                    for id in TimerId::ALL {
                        let t = state.timer_mut(id);
                        t.ctl &= TimerCtl::all().bits();
                        if id.is_el2() && !features.el2 {
                            *t = TimerState::default();
                        }
                    }
                }
                let valid = vcpu_state_valid(&state, features);
                let old = self.vcpus[i];
                let result = self.vcpus[i].restore(&self.counter, &state);
                assert_eq!(result.is_ok(), valid, "{at}: restore answered {result:?}");
                match result {
                    Ok(()) => {
                        assert_eq!(self.vcpus[i].state(), state, "{at}: restore installed another state");
                    }
                    Err(error) => {
                        assert_eq!(state.validate(features), Err(error), "{at}: refused for another reason");
                        assert_eq!(self.vcpus[i], old, "{at}: a refused restore changed the vCPU");
                    }
                }
            }

            Op::PitWrite { port, value, .. } => {
                let _ = checked_pit_write(&mut self.pit, port.0, *value, now, &at);
            }
            Op::PitRead { port, .. } => {
                let _ = checked_pit_read(&mut self.pit, port.0, now, &at);
            }
            Op::PitPioWrite { port, len, bytes, .. } => {
                checked_pit_pio_write(&mut self.pit, port.0, &bytes[..usize::from(len % 9)], now, &at);
            }
            Op::PitPioRead { port, len, .. } => {
                checked_pit_pio_read(&mut self.pit, port.0, usize::from(len % 9), now, &at);
            }
            Op::PitProgram { counter, access, mode, bcd, count, .. } => {
                let c = counter % 3;
                let rw = access % 3 + 1;
                let word = (c << 6) | (rw << 4) | ((mode & 7) << 1) | u8::from(*bcd);
                let _ = checked_pit_write(&mut self.pit, pit_regs::CONTROL_WORD, word, now, &at);
                let port = pit_regs::COUNTER0 + u16::from(c);
                let [lsb, msb] = count.to_le_bytes();
                match rw {
                    1 => {
                        let _ = checked_pit_write(&mut self.pit, port, lsb, now, &at);
                    }
                    2 => {
                        let _ = checked_pit_write(&mut self.pit, port, msb, now, &at);
                    }
                    _ => {
                        let _ = checked_pit_write(&mut self.pit, port, lsb, now, &at);
                        let _ = checked_pit_write(&mut self.pit, port, msb, now, &at);
                    }
                }
            }
            Op::PitAdvance { .. } => {
                let expected = self.pit.next_deadline(now).is_some_and(|t| t <= now);
                let edges = self.pit.advance(now);
                assert_eq!(edges > 0, expected, "{at}: advance reported {edges} edges");
                assert_eq!(self.pit.advance(now), 0, "{at}: edges reported twice");
                assert!(
                    self.pit.next_deadline(now).is_none_or(|t| t > now),
                    "{at}: after advance(now) the deadline is not in the future"
                );
            }
            Op::PitReset => {
                self.pit.reset();
                assert_eq!(self.pit.state(), PitState::default(), "{at}: reset");
            }
            Op::PitRestore { state, sanitize } => {
                let state = state.build(*sanitize);
                let old = self.pit.clone();
                match self.pit.restore(&state) {
                    Ok(()) => {
                        assert_eq!(state.validate(), Ok(()), "{at}: restore accepted an invalid state");
                        assert_eq!(self.pit.state(), state, "{at}: restore installed another state");
                    }
                    Err(error) => {
                        assert_eq!(state.validate(), Err(error), "{at}: refused for another reason");
                        assert!(
                            matches!(error, PitStateError::Mode { .. } | PitStateError::Inconsistent { .. }),
                            "{at}"
                        );
                        assert_eq!(self.pit, old, "{at}: a refused restore changed the PIT");
                    }
                }
            }
        }
    }

    // ----- ARM helpers ------------------------------------------------------------------

    /// A typed timer register write: the `Output` is the level after it and the change of
    /// that timer's PPI; an absent EL2 timer ignores it; other timers are untouched.
    fn checked_update(
        &mut self,
        i: usize,
        id: TimerId,
        at: &Step,
        write: impl FnOnce(&mut VcpuTimers) -> Output,
    ) {
        let counter = self.counter;
        let now = self.now;
        let before = self.vcpus[i];
        let old_level = before.level(&counter, now);
        let out = write(&mut self.vcpus[i]);
        let level = self.vcpus[i].level(&counter, now);
        assert_eq!(out, Output { level, changed: old_level ^ level }, "{at}: write output");
        assert_eq!((old_level ^ level) & !id.ppi_bit(), Ppis::empty(), "{at}: another timer's PPI changed");
        if !present(&counter, id) {
            assert_eq!(self.vcpus[i], before, "{at}: an absent EL2 timer took a write");
        }
        let (s0, s1) = (before.state(), self.vcpus[i].state());
        for other in TimerId::ALL.into_iter().filter(|t| *t != id) {
            assert_eq!(s0.timer(other), s1.timer(other), "{at}: write touched {other:?}");
        }
        assert_eq!(s0.cntkctl, s1.cntkctl, "{at}: timer write touched CNTKCTL_EL1");
    }

    /// `Counter::set_offset` and friends: the offset is set, the other one kept, and every
    /// reported change slot is the level change of its vCPU; extra slots are untouched.
    fn checked_set_offset(
        &mut self,
        which: Offset,
        value: u64,
        slots: usize,
        at: &Step,
        set: impl FnOnce(&mut Counter, &[VcpuTimers; VCPUS], &mut [Output]) -> usize,
    ) {
        let now = self.now;
        let before = self.counter;
        let sentinel = Output { level: Ppis::all(), changed: Ppis::all() };
        let mut changes = [sentinel; VCPUS + 1];
        let count = set(&mut self.counter, &self.vcpus, &mut changes[..slots]);
        assert_eq!(self.counter.offset(which), value, "{at}: offset not set");
        let other = match which {
            Offset::Virtual => Offset::Physical,
            Offset::Physical => Offset::Virtual,
        };
        assert_eq!(self.counter.offset(other), before.offset(other), "{at}: the other offset moved");
        assert_eq!(
            (self.counter.frequency(), self.counter.features()),
            (before.frequency(), before.features()),
            "{at}"
        );
        let mut changed = 0;
        for (i, vcpu) in self.vcpus.iter().enumerate() {
            let old = vcpu.level(&before, now);
            let new = vcpu.level(&self.counter, now);
            let expected = Output { level: new, changed: old ^ new };
            assert_eq!(
                vcpu.compare_counters(&before, &self.counter, now),
                expected,
                "{at}: compare_counters"
            );
            if i < slots {
                assert_eq!(changes[i], expected, "{at}: change slot {i}");
            }
            changed += usize::from(old != new);
        }
        for (i, slot) in changes.iter().enumerate().skip(VCPUS) {
            assert_eq!(*slot, sentinel, "{at}: slot {i} beyond the vCPUs was written");
        }
        assert_eq!(count, changed, "{at}: set_offset counted {count} changed vCPUs");
    }

    /// A forwarded MRS/MSR. Exceptions, "not mine" and reads change nothing; a read returns
    /// what the typed accessor returns; a write completes as the typed write does; EL0 gets a
    /// value only with the CNTKCTL_EL1 gate open and never reaches CNTKCTL_EL1.
    fn checked_access(&mut self, i: usize, encoding: Encoding, el0: bool, access: SysAccess, at: &Step) {
        let counter = self.counter;
        let now = self.now;
        let el = if el0 { El::El0 } else { El::El1 };
        let before = self.vcpus[i];
        let result = self.vcpus[i].access(&counter, encoding, el, access, now);
        let Some(reg) = SysReg::decode(encoding) else {
            assert_eq!(result, SysRegResult::NotGenericTimer, "{at}: unknown encoding {encoding:?}");
            assert_eq!(self.vcpus[i], before, "{at}");
            return;
        };
        assert_eq!(reg.encoding(), encoding, "{at}: decode/encoding");
        let kctl = before.cntkctl();
        use gt::Cntkctl as K;
        let timer = |t: TimerId| if t == TimerId::Virt { K::EL0VTEN } else { K::EL0PTEN };
        // The typed view of the register at EL1, and the EL0 gate.
        let (typed, gate): (Option<u64>, K) = match reg {
            SysReg::CNTFRQ_EL0 => (Some(u64::from(counter.frequency())), K::EL0PCTEN | K::EL0VCTEN),
            SysReg::CNTPCT_EL0 => (Some(counter.physical_count(now)), K::EL0PCTEN),
            SysReg::CNTVCT_EL0 => (Some(counter.virtual_count(now)), K::EL0VCTEN),
            SysReg::CNTPCTSS_EL0 => {
                (counter.features().ecv.then(|| counter.physical_count(now)), K::EL0PCTEN)
            }
            SysReg::CNTVCTSS_EL0 => (counter.features().ecv.then(|| counter.virtual_count(now)), K::EL0VCTEN),
            SysReg::CNTKCTL_EL1 => (Some(kctl.bits()), K::empty()),
            SysReg::CNTP_TVAL_EL0 => (Some(before.tval(&counter, TimerId::Phys, now)), timer(TimerId::Phys)),
            SysReg::CNTP_CTL_EL0 => {
                (Some(before.ctl(&counter, TimerId::Phys, now).bits()), timer(TimerId::Phys))
            }
            SysReg::CNTP_CVAL_EL0 => (Some(before.cval(&counter, TimerId::Phys)), timer(TimerId::Phys)),
            SysReg::CNTV_TVAL_EL0 => (Some(before.tval(&counter, TimerId::Virt, now)), timer(TimerId::Virt)),
            SysReg::CNTV_CTL_EL0 => {
                (Some(before.ctl(&counter, TimerId::Virt, now).bits()), timer(TimerId::Virt))
            }
            SysReg::CNTV_CVAL_EL0 => (Some(before.cval(&counter, TimerId::Virt)), timer(TimerId::Virt)),
            // EL2, EL02/EL12 and secure registers: UNDEFINED from EL0 and EL1.
            _ => (None, K::empty()),
        };
        let undef = SysRegResult::Exception(gt::Exception::Undefined);
        let trap = SysRegResult::Exception(gt::Exception::TrapToEl1);
        let el0_open = !el0 || kctl.intersects(gate);
        let read_only = matches!(
            reg,
            SysReg::CNTFRQ_EL0
                | SysReg::CNTPCT_EL0
                | SysReg::CNTVCT_EL0
                | SysReg::CNTPCTSS_EL0
                | SysReg::CNTVCTSS_EL0
        );
        match result {
            SysRegResult::Exception(_) | SysRegResult::NotGenericTimer | SysRegResult::Value(_) => {
                assert_eq!(self.vcpus[i], before, "{at}: {reg:?} {access:?} -> {result:?} changed the vCPU");
            }
            SysRegResult::Done(_) => {}
        }
        match typed {
            None => assert_eq!(result, undef, "{at}: {reg:?}"),
            Some(_) if reg == SysReg::CNTKCTL_EL1 && el0 => {
                assert_eq!(result, undef, "{at}: EL0 CNTKCTL_EL1")
            }
            // MSR to a read-only register is UNDEFINED at any EL, before any EL0 gate.
            Some(_) if read_only && matches!(access, SysAccess::Write(_)) => {
                assert_eq!(result, undef, "{at}: write of read-only {reg:?}")
            }
            Some(_) if !el0_open => assert_eq!(result, trap, "{at}: EL0 {reg:?} with CNTKCTL_EL1 {kctl:?}"),
            Some(value) => match access {
                SysAccess::Read => assert_eq!(result, SysRegResult::Value(value), "{at}: {reg:?} read"),
                SysAccess::Write(v) => {
                    let mut model = before;
                    let expected = match reg {
                        SysReg::CNTKCTL_EL1 => {
                            model.write_cntkctl(&counter, v);
                            Output { level: model.level(&counter, now), changed: Ppis::empty() }
                        }
                        SysReg::CNTP_TVAL_EL0 => model.write_tval(&counter, TimerId::Phys, v, now),
                        SysReg::CNTP_CTL_EL0 => model.write_ctl(&counter, TimerId::Phys, v, now),
                        SysReg::CNTP_CVAL_EL0 => model.write_cval(&counter, TimerId::Phys, v, now),
                        SysReg::CNTV_TVAL_EL0 => model.write_tval(&counter, TimerId::Virt, v, now),
                        SysReg::CNTV_CTL_EL0 => model.write_ctl(&counter, TimerId::Virt, v, now),
                        SysReg::CNTV_CVAL_EL0 => model.write_cval(&counter, TimerId::Virt, v, now),
                        _ => unreachable!("{at}: {reg:?} is not writable"),
                    };
                    assert_eq!(result, SysRegResult::Done(expected), "{at}: {reg:?} write");
                    assert_eq!(self.vcpus[i], model, "{at}: {reg:?} write differs from the typed write");
                    if let SysRegResult::Done(out) = result {
                        assert_eq!(out.level, self.vcpus[i].level(&counter, now), "{at}: Done level");
                    }
                }
            },
        }
        // A count read is a monotonicity sample like any other.
        if let SysRegResult::Value(v) = result {
            match reg {
                SysReg::CNTVCT_EL0 | SysReg::CNTVCTSS_EL0 => check_count_sample(
                    &mut self.vct_seen,
                    now,
                    v,
                    counter.offset(Offset::Virtual),
                    "CNTVCT",
                    at,
                ),
                SysReg::CNTPCT_EL0 | SysReg::CNTPCTSS_EL0 => check_count_sample(
                    &mut self.pct_seen,
                    now,
                    v,
                    counter.offset(Offset::Physical),
                    "CNTPCT",
                    at,
                ),
                _ => {}
            }
        }
    }

    // ----- invariants after every operation ---------------------------------------------

    fn check_always(&mut self, at: &Step) {
        let now = self.now;
        // The monotonicity samples compare with the previous sample and run every time. The
        // other checks of each model are functions of that model's value (every field of which
        // its `PartialEq` compares), `now` and, for a vCPU, the counter: when those equal the
        // ones of the model's last check, which passed, the checks pass again, so skipping them
        // is exactly as strong.
        // TSC.
        check_tsc_sample(&mut self.tsc_seen, &self.tsc, now, at);
        if self.checked.tsc != Some((self.tsc, now)) {
            check_tsc_deadline(&self.tsc, now, at);
            let state = self.tsc.state();
            assert_eq!(state.validate(), Ok(()), "{at}: the TSC reached a state restore refuses");
            let mut fresh = Tsc::default();
            assert_eq!(fresh.restore(&state), Ok(()), "{at}: TSC snapshot refused by a fresh TSC");
            assert_eq!(fresh, self.tsc, "{at}: TSC snapshot restored into a fresh TSC differs");
            self.checked.tsc = Some((self.tsc, now));
        }

        // ARM.
        let counter = self.counter;
        let vct = counter.virtual_count(now);
        check_count_sample(&mut self.vct_seen, now, vct, counter.offset(Offset::Virtual), "CNTVCT", at);
        let pct = counter.physical_count(now);
        check_count_sample(&mut self.pct_seen, now, pct, counter.offset(Offset::Physical), "CNTPCT", at);
        if self.checked.counter != Some(counter) {
            let counter_state = counter.state();
            assert_eq!(counter_state.validate(), Ok(()), "{at}: counter state invalid");
            let mut fresh = Counter::new(counter.frequency(), counter.features())
                .unwrap_or_else(|e| panic!("{at}: Counter::new({}) refused: {e:?}", counter.frequency()));
            assert_eq!(fresh.restore(&counter_state), Ok(()), "{at}: counter snapshot refused");
            assert_eq!(fresh, counter, "{at}: counter snapshot restored into a fresh counter differs");
            self.checked.counter = Some(counter);
        }
        for (i, vcpu) in self.vcpus.iter().enumerate() {
            if self.checked.vcpus[i] != Some((*vcpu, counter, now)) {
                check_vcpu(vcpu, &counter, now, i, at);
                self.checked.vcpus[i] = Some((*vcpu, counter, now));
            }
        }

        // PIT.
        if self.checked.pit.as_ref().is_none_or(|(pit, then)| *then != now || *pit != self.pit) {
            check_pit(&self.pit, now, at);
            self.checked.pit = Some((self.pit.clone(), now));
        }
    }
}

fn present(counter: &Counter, id: TimerId) -> bool {
    !id.is_el2() || counter.features().el2
}

/// The documented validity rules of a [`VcpuTimersState`]: CTL holds only ENABLE and IMASK
/// (ISTATUS is derived, not state; bits 63:3 are RES0).
fn vcpu_state_valid(state: &VcpuTimersState, features: Features) -> bool {
    let kctl_ok = state.cntkctl & !gt::Cntkctl::writable(features.ecv).bits() == 0;
    kctl_ok
        && TimerId::ALL.iter().all(|&id| {
            let t = state.timer(id);
            let programmed = t.ctl & TimerCtl::WRITABLE.bits() != 0 || t.cval != 0;
            t.ctl & !TimerCtl::WRITABLE.bits() == 0 && !(id.is_el2() && !features.el2 && programmed)
        })
}

// ----- TSC checks -----------------------------------------------------------------------

/// Invariant 2 for the TSC: against the previous sample taken through the same mapping.
fn check_tsc_sample(seen: &mut Option<(u64, u64, GuestTsc)>, tsc: &Tsc, now: u64, at: &Step) {
    let clock = tsc.guest_tsc();
    let value = tsc.read_tsc(now);
    if let Some((then, old, old_clock)) = *seen {
        if old_clock == clock {
            // Order the two samples by host TSC.
            let ((a, va), (b, vb)) =
                if then <= now { ((then, old), (now, value)) } else { ((now, value), (then, old)) };
            let delta = b - a;
            let f = clock.scaling.format().frac_bits();
            let expected = ((u128::from(delta) * u128::from(clock.scaling.ratio())) >> f) as u64;
            let diff = vb.wrapping_sub(va);
            if clock.scaling.is_identity() {
                assert_eq!(diff, delta, "{at}: unscaled guest TSC moved {diff} in {delta} host ticks");
            } else {
                assert!(
                    diff == expected || diff == expected.wrapping_add(1),
                    "{at}: guest TSC moved {diff:#x} in {delta:#x} host ticks, expected {expected:#x} (+1) at {:?}",
                    clock.scaling
                );
            }
        }
    }
    *seen = Some((now, value, clock));
}

/// Invariant 3 for the TSC deadline, on clones.
fn check_tsc_deadline(tsc: &Tsc, now: u64, at: &Step) {
    let clock = tsc.guest_tsc();
    let deadline = tsc.read_tsc_deadline();
    match tsc.next_deadline(now) {
        None => {
            if deadline != 0 {
                let mut c = *tsc;
                assert!(
                    !c.advance(u64::MAX),
                    "{at}: next_deadline is None (never) for deadline {deadline:#x}, but advance(u64::MAX) fires"
                );
            }
        }
        Some(h) => {
            assert_ne!(deadline, 0, "{at}: disarmed TSC deadline has next_deadline {h:#x}");
            assert!(h >= now, "{at}: next_deadline {h:#x} before now");
            let expired = tsc.tsc_deadline().has_expired(&clock, now);
            assert_eq!(h == now, expired, "{at}: next_deadline {h:#x} == now vs has_expired {expired}");
            if h > now {
                let mut c = *tsc;
                assert!(!c.advance(h - 1), "{at}: deadline {deadline:#x} fired at h-1 = {:#x}", h - 1);
            }
            let mut c = *tsc;
            let fired = c.advance(h);
            assert!(
                fired,
                "{at}: TSC deadline {deadline:#x} did not fire at next_deadline {h:#x} \
                 (guest TSC {:#x} at now, {:#x} at h, {clock:?})",
                clock.read(now),
                clock.read(h)
            );
        }
    }
}

fn checked_guest_write_tsc(tsc: &mut Tsc, value: u64, now: u64, at: &Step) {
    let old = *tsc;
    let moved = value.wrapping_sub(old.read_tsc(now));
    let fired = tsc.guest_write_tsc(value, now);
    assert_eq!(tsc.read_tsc(now), value, "{at}: guest TSC write");
    assert_eq!(
        tsc.read_tsc_adjust(),
        old.read_tsc_adjust().wrapping_add(moved),
        "{at}: TSC_ADJUST did not move with the TSC"
    );
    check_fired(&old, tsc, fired, now, at);
}

fn checked_guest_write_adjust(tsc: &mut Tsc, value: u64, now: u64, at: &Step) {
    let old = *tsc;
    let moved = value.wrapping_sub(old.read_tsc_adjust());
    let fired = tsc.guest_write_tsc_adjust(value, now);
    assert_eq!(tsc.read_tsc_adjust(), value, "{at}: guest TSC_ADJUST write");
    assert_eq!(
        tsc.read_tsc(now),
        old.read_tsc(now).wrapping_add(moved),
        "{at}: the TSC did not move with TSC_ADJUST"
    );
    check_fired(&old, tsc, fired, now, at);
}

/// After a guest write that moved the TSC: the deadline fired exactly when it is now reached.
fn check_fired(old: &Tsc, tsc: &Tsc, fired: bool, now: u64, at: &Step) {
    let deadline = old.read_tsc_deadline();
    let reached = deadline != 0 && tsc.read_tsc(now) >= deadline;
    assert_eq!(fired, reached, "{at}: fired {fired}, deadline {deadline:#x}, TSC {:#x}", tsc.read_tsc(now));
    assert_eq!(
        tsc.read_tsc_deadline(),
        if fired { 0 } else { deadline },
        "{at}: deadline MSR after the write"
    );
    assert_eq!(tsc.scaling(), old.scaling(), "{at}: a guest write changed the ratio");
}

fn checked_guest_write_deadline(tsc: &mut Tsc, value: u64, now: u64, at: &Step) {
    let old = *tsc;
    let fired = tsc.guest_write_tsc_deadline(value, now);
    let reached = value != 0 && old.read_tsc(now) >= value;
    assert_eq!(fired, reached, "{at}: deadline write {value:#x} at TSC {:#x}", old.read_tsc(now));
    assert_eq!(tsc.read_tsc_deadline(), if fired { 0 } else { value }, "{at}: deadline MSR");
    assert_eq!(tsc.guest_tsc(), old.guest_tsc(), "{at}: deadline write moved the TSC");
    assert_eq!(tsc.read_tsc_adjust(), old.read_tsc_adjust(), "{at}");
}

// ----- ARM checks -------------------------------------------------------------------------

/// Invariant 2 for an ARM count: exact advance while the offset is unchanged.
fn check_count_sample(
    seen: &mut Option<(u64, u64, u64)>,
    now: u64,
    value: u64,
    offset: u64,
    what: &str,
    at: &Step,
) {
    if let Some((then, old, old_offset)) = *seen {
        if old_offset == offset {
            assert_eq!(
                value.wrapping_sub(old),
                now.wrapping_sub(then),
                "{at}: {what} read {old:#x} at {then:#x} and {value:#x} at {now:#x}"
            );
        }
    }
    *seen = Some((now, value, offset));
}

/// Invariants 3 and 4 for one vCPU, plus level/ISTATUS consistency and the event stream.
fn check_vcpu(vcpu: &VcpuTimers, counter: &Counter, now: u64, i: usize, at: &Step) {
    let level = vcpu.level(counter, now);
    let mut earliest: Option<Deadline> = None;
    for id in TimerId::ALL {
        let ctl = vcpu.ctl(counter, id, now);
        let armed = ctl.contains(TimerCtl::ENABLE) && !ctl.contains(TimerCtl::IMASK);
        let high = armed && ctl.contains(TimerCtl::ISTATUS);
        assert_eq!(level.contains(id.ppi_bit()), high, "{at}: vCPU {i} {id:?} level vs CTL {ctl:?}");
        assert_eq!(vcpu.istatus(counter, id, now), ctl.contains(TimerCtl::ISTATUS), "{at}: ISTATUS");
        if !present(counter, id) {
            assert_eq!(ctl, TimerCtl::empty(), "{at}: absent {id:?} CTL");
            assert_eq!(vcpu.cval(counter, id), 0, "{at}: absent {id:?} CVAL");
        }
        match vcpu.timer_deadline(counter, id, now) {
            None => assert!(
                !armed || high,
                "{at}: vCPU {i} {id:?} armed and low (CTL {ctl:?}) but timer_deadline is None"
            ),
            Some(d) => {
                assert!(armed && !high, "{at}: vCPU {i} {id:?} has a deadline {d:?} but CTL is {ctl:?}");
                check_arm_deadline(counter, &d, now, at);
                let low = |t: u64| !vcpu.level(counter, t).contains(id.ppi_bit());
                // (A saturated deadline can put `d.ticks − 1` before `now`.)
                assert!(
                    d.ticks - 1 < now || low(d.ticks - 1),
                    "{at}: vCPU {i} {id:?} high at {:#x}, before deadline {d:?}",
                    d.ticks - 1
                );
                if now.checked_add(d.delay_ticks).is_some() {
                    assert!(!low(d.ticks), "{at}: vCPU {i} {id:?} low at its deadline {d:?}");
                }
                if earliest.is_none_or(|e| d.delay_ticks < e.delay_ticks) {
                    earliest = Some(d);
                }
            }
        }
    }
    assert_eq!(
        vcpu.next_deadline(counter, now),
        earliest,
        "{at}: vCPU {i} next_deadline is not the earliest"
    );

    // The event stream.
    let kctl = vcpu.cntkctl();
    match vcpu.next_event(counter, now) {
        None => {
            assert!(!kctl.contains(gt::Cntkctl::EVNTEN), "{at}: event stream on but no next event");
            assert_eq!(vcpu.events_between(counter, now, now.saturating_add(1 << 30)), 0, "{at}");
        }
        Some(d) => {
            assert!(kctl.contains(gt::Cntkctl::EVNTEN), "{at}: event without EVNTEN");
            check_arm_deadline(counter, &d, now, at);
            let period = 2u64 << kctl.event_bit();
            assert!(d.delay_ticks <= period, "{at}: next event {d:?} beyond one period {period}");
            if d.ticks > now {
                assert_eq!(
                    vcpu.events_between(counter, now, d.ticks - 1),
                    0,
                    "{at}: event before next_event {d:?}"
                );
            }
            if now.checked_add(d.delay_ticks).is_some() {
                assert_eq!(
                    vcpu.events_between(counter, now, d.ticks),
                    1,
                    "{at}: no event at next_event {d:?}"
                );
            }
        }
    }

    let state = vcpu.state();
    assert_eq!(state.validate(counter.features()), Ok(()), "{at}: vCPU {i} state invalid");
    let mut fresh = VcpuTimers::new();
    assert_eq!(fresh.restore(counter, &state), Ok(()), "{at}: vCPU {i} snapshot refused");
    assert_eq!(fresh, *vcpu, "{at}: vCPU {i} snapshot restored into a fresh vCPU differs");
}

/// A `Deadline`'s fields agree with each other and with the counter's conversions.
fn check_arm_deadline(counter: &Counter, d: &Deadline, now: u64, at: &Step) {
    assert!(d.delay_ticks >= 1, "{at}: {d:?} not in the future");
    assert_eq!(d.ticks, now.saturating_add(d.delay_ticks), "{at}: {d:?}");
    assert_eq!(d.delay_ns, counter.ticks_to_ns(d.delay_ticks), "{at}: {d:?}");
    if d.delay_ns < u64::MAX {
        // Never early, and the first such nanosecond.
        assert!(counter.ns_to_ticks(d.delay_ns) >= d.delay_ticks, "{at}: {d:?} delay_ns is early");
        assert!(counter.ns_to_ticks(d.delay_ns - 1) < d.delay_ticks, "{at}: {d:?} delay_ns is not the first");
    }
}

// ----- PIT checks -------------------------------------------------------------------------

/// Invariants 3 and 4 for the PIT, on clones.
fn check_pit(pit: &Pit, now: u64, at: &Step) {
    let state = pit.state();
    assert_eq!(state.validate(), Ok(()), "{at}: the PIT reached a state restore refuses (state {state:?})");
    let mut fresh = Pit::new();
    assert_eq!(fresh.restore(&state), Ok(()), "{at}: PIT snapshot refused");
    assert_eq!(fresh, *pit, "{at}: PIT snapshot restored into a fresh PIT differs");
    match pit.next_deadline(now) {
        None => {
            let mut c = pit.clone();
            let edges = c.advance(u64::MAX);
            assert!(
                edges == 0,
                "{at}: next_deadline None but advance(u64::MAX) reports {edges} edges (state {state:?})"
            );
        }
        Some(t) => {
            let mut c = pit.clone();
            if t > now {
                let edges = c.advance(t - 1);
                assert!(
                    edges == 0,
                    "{at}: {edges} edges at {:#x}, before next_deadline {t:#x} (state {state:?})",
                    t - 1
                );
            }
            let edges = c.advance(t);
            assert!(edges >= 1, "{at}: no edge at next_deadline {t:#x} (state {state:?})");
        }
    }

    let bits = pit.nmi_sc(now);
    assert_eq!(bits & !(NmiSc::WRITABLE | NmiSc::REF_TOGGLE | NmiSc::TMR2_OUT_STS), NmiSc::empty(), "{at}");
    assert_eq!(bits.contains(NmiSc::TIM_CNT2_EN), state.channels[2].gate, "{at}: port 0x61 gate bit");
    assert_eq!(bits.contains(NmiSc::SPKR_DAT_EN), state.speaker_data, "{at}: port 0x61 speaker bit");
    assert_eq!(
        bits.contains(NmiSc::TMR2_OUT_STS),
        pit.output(PitCounter::Counter2, now),
        "{at}: port 0x61 OUT2"
    );
}

/// A byte write: unknown ports are ignored and flagged; without `rearm` the IRQ0 deadline
/// does not move.
fn checked_pit_write(pit: &mut Pit, port: u16, value: u8, now: u64, at: &Step) -> Effects {
    let old = pit.clone();
    let deadline = pit.next_deadline(now);
    let effects = pit.write(port, value, now);
    if PORTS.contains(&port) {
        assert_eq!(effects.invalid, None, "{at}: write {value:#04x} to {port:#x}");
    } else {
        assert_eq!(effects, Effects { rearm: false, invalid: Some(AccessError::UnknownPort(port)) }, "{at}");
        assert_eq!(*pit, old, "{at}: a write to unknown port {port:#x} changed the PIT");
    }
    if effects.rearm {
        assert!(
            port == pit_regs::COUNTER0 || port == pit_regs::CONTROL_WORD,
            "{at}: rearm from a write to {port:#x}"
        );
    } else {
        assert_eq!(
            pit.next_deadline(now),
            deadline,
            "{at}: write {value:#04x} to {port:#x} moved the deadline without rearm"
        );
    }
    if port == pit_regs::NMI_SC {
        let bits = pit.nmi_sc(now);
        assert_eq!(
            bits & NmiSc::WRITABLE,
            NmiSc::from_bits_truncate(value) & NmiSc::WRITABLE,
            "{at}: port 0x61"
        );
    }
    effects
}

/// A byte read: unknown ports and 0x43 read 0xFF without effect; 0x61 is `nmi_sc` without
/// effect; no read moves the IRQ0 deadline.
fn checked_pit_read(pit: &mut Pit, port: u16, now: u64, at: &Step) -> (u8, Effects) {
    let old = pit.clone();
    let deadline = pit.next_deadline(now);
    let (value, effects) = pit.read(port, now);
    assert!(!effects.rearm, "{at}: read of {port:#x} asks for a rearm");
    match port {
        pit_regs::CONTROL_WORD => {
            assert_eq!((value, effects.invalid), (0xFF, Some(AccessError::ReadOfControlWord)), "{at}");
            assert_eq!(*pit, old, "{at}: read of 0x43 changed the PIT");
        }
        pit_regs::NMI_SC => {
            assert_eq!((value, effects.invalid), (old.nmi_sc(now).bits(), None), "{at}: read of 0x61");
            assert_eq!(*pit, old, "{at}: read of 0x61 changed the PIT");
        }
        p if !PORTS.contains(&p) => {
            assert_eq!((value, effects.invalid), (0xFF, Some(AccessError::UnknownPort(p))), "{at}");
            assert_eq!(*pit, old, "{at}: read of unknown port {p:#x} changed the PIT");
        }
        _ => assert_eq!(effects.invalid, None, "{at}: read of {port:#x}"),
    }
    assert_eq!(pit.next_deadline(now), deadline, "{at}: read of {port:#x} moved the deadline");
    (value, effects)
}

/// `pio_write` is its byte writes at consecutive ports, flagged unless one byte wide.
fn checked_pit_pio_write(pit: &mut Pit, port: u16, data: &[u8], now: u64, at: &Step) {
    let mut model = pit.clone();
    let expected = if let [value] = data {
        checked_pit_write(&mut model, port, *value, now, at)
    } else {
        let mut rearm = false;
        for (offset, value) in (0u16..).zip(data) {
            rearm |= checked_pit_write(&mut model, port.wrapping_add(offset), *value, now, at).rearm;
        }
        let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
        Effects { rearm, invalid: Some(AccessError::Width(len)) }
    };
    assert_eq!(pit.pio_write(port, data, now), expected, "{at}: pio_write differs from its byte writes");
    assert_eq!(*pit, model, "{at}: pio_write left another state than its byte writes");
}

/// `pio_read` is its byte reads at consecutive ports, flagged unless one byte wide.
fn checked_pit_pio_read(pit: &mut Pit, port: u16, len: usize, now: u64, at: &Step) {
    let mut model = pit.clone();
    let mut expected_data = [0u8; 8];
    let expected = if len == 1 {
        let (value, effects) = checked_pit_read(&mut model, port, now, at);
        expected_data[0] = value;
        effects
    } else {
        for (offset, byte) in (0u16..).zip(&mut expected_data[..len]) {
            *byte = checked_pit_read(&mut model, port.wrapping_add(offset), now, at).0;
        }
        let width = u16::try_from(len).unwrap_or(u16::MAX);
        Effects { rearm: false, invalid: Some(AccessError::Width(width)) }
    };
    let mut data = [0xA5u8; 8];
    assert_eq!(
        pit.pio_read(port, &mut data[..len], now),
        expected,
        "{at}: pio_read differs from its byte reads"
    );
    assert_eq!(data[..len], expected_data[..len], "{at}: pio_read data");
    assert_eq!(*pit, model, "{at}: pio_read left another state than its byte reads");
}
