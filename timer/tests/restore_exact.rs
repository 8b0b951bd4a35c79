//! "A restore installs exactly these values or is refused", for each state type of the crate
//! ([`TscState`], [`CounterState`], [`VcpuTimersState`], [`PitState`]): for random states
//! (every field arbitrary, a bit away from a state the model produces, or at it), `restore`
//! either accepts the state and `state()` then returns it unchanged, or refuses it for the
//! reason `validate` gives and leaves the model unchanged. The model restored into is itself in
//! a random accepted state.

use proptest::prelude::*;
use vm_timer::generic_timer::{
    Counter, CounterState, Features, StateError as GtStateError, TimerState, VcpuTimers, VcpuTimersState,
};
use vm_timer::pit::regs::Access;
use vm_timer::pit::{ChannelState, Counting, Phase, Pit, PitState};
use vm_timer::tsc::{ScalingFormat, Tsc, TscScaling, TscState};

/// A value of an integer type: the base (mostly, so that many states pass), any value, or the
/// base with one bit flipped.
macro_rules! near {
    ($t:ty, $base:expr) => {{
        let base: $t = $base;
        prop_oneof![
            6 => Just(base),
            1 => any::<$t>(),
            1 => (0..<$t>::BITS).prop_map(move |bit| base ^ (1 << bit)),
        ]
        .boxed()
    }};
}

/// A flag: mostly the base, else any.
fn flag(base: bool) -> BoxedStrategy<bool> {
    prop_oneof![4 => Just(base), 1 => any::<bool>()].boxed()
}

/// An optional value: mostly the base, else none or any value.
fn option<T: Arbitrary + Clone + core::fmt::Debug + 'static>(base: Option<T>) -> BoxedStrategy<Option<T>> {
    prop_oneof![4 => Just(base), 1 => Just(None), 1 => any::<T>().prop_map(Some)].boxed()
}

fn format() -> impl Strategy<Value = ScalingFormat> {
    prop_oneof![Just(ScalingFormat::Vmx), Just(ScalingFormat::Svm)]
}

// ----- TSC ----------------------------------------------------------------------------------------

/// A TSC state: a ratio valid for either format, at an edge of one, or anything.
fn tsc_state() -> impl Strategy<Value = TscState> {
    let ratio = prop_oneof![
        2 => prop::sample::select(vec![
            0,
            1,
            1 << 32,
            1 << 48,
            0xff_ffff_ffff,
            0x100_0000_0000,
            u64::MAX,
        ]),
        1 => 1u64..=0xff_ffff_ffff,
        1 => any::<u64>(),
    ];
    (format(), ratio, any::<u64>(), any::<u64>(), prop_oneof![Just(0u64), any::<u64>()]).prop_map(
        |(format, ratio, offset, tsc_adjust, tsc_deadline)| TscState {
            format,
            ratio,
            offset,
            tsc_adjust,
            tsc_deadline,
        },
    )
}

// ----- generic timer ------------------------------------------------------------------------------

fn features() -> impl Strategy<Value = Features> {
    (any::<bool>(), any::<bool>()).prop_map(|(el2, ecv)| Features { el2, ecv })
}

/// A CTL: one a model produces (ENABLE, IMASK), one read back from a firing timer (ISTATUS
/// too), or anything.
fn ctl() -> BoxedStrategy<u64> {
    prop_oneof![6 => 0u64..4, 2 => 4u64..8, 1 => near!(u64, 0)].boxed()
}

fn timer_state() -> BoxedStrategy<TimerState> {
    (ctl(), prop_oneof![2 => Just(0u64), 3 => any::<u64>()])
        .prop_map(|(ctl, cval)| TimerState { ctl, cval })
        .boxed()
}

fn vcpu_state() -> BoxedStrategy<VcpuTimersState> {
    (
        prop_oneof![4 => 0u64..0x400, 1 => Just(1 << 17), 1 => near!(u64, 0)],
        timer_state(),
        timer_state(),
        prop_oneof![2 => Just(TimerState::default()), 1 => timer_state()],
        prop_oneof![2 => Just(TimerState::default()), 1 => timer_state()],
    )
        .prop_map(|(cntkctl, cntp, cntv, cnthp, cnthv)| VcpuTimersState { cntkctl, cntp, cntv, cnthp, cnthv })
        .boxed()
}

fn counter_state(frequency: u32) -> BoxedStrategy<CounterState> {
    (prop_oneof![4 => Just(frequency), 1 => Just(0), 1 => any::<u32>()], any::<u64>(), any::<u64>())
        .prop_map(|(cntfrq, cntvoff, cntpoff)| CounterState { cntfrq, cntvoff, cntpoff })
        .boxed()
}

// ----- PIT ----------------------------------------------------------------------------------------

fn phase() -> BoxedStrategy<Phase> {
    let counting = (any::<u64>(), prop_oneof![Just(0u64), any::<u64>()], any::<u64>(), option(None::<u64>))
        .prop_map(|(start_ns, origin_tick, origin_position, reload_at)| {
            Phase::Counting(Counting { start_ns, origin_tick, origin_position, reload_at })
        });
    prop_oneof![
        2 => Just(Phase::Idle),
        1 => Just(Phase::Waiting),
        1 => any::<u64>().prop_map(|position| Phase::Paused { position }),
        3 => counting,
    ]
    .boxed()
}

fn channel(base: ChannelState) -> BoxedStrategy<ChannelState> {
    (
        (
            prop_oneof![4 => 0u8..8, 1 => any::<u8>()],
            prop_oneof![3 => Just(Access::LsbMsb), 1 => Just(Access::Lsb), 1 => Just(Access::Msb)],
            flag(base.bcd),
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
            flag(base.null_count),
        ),
        (
            flag(base.write_msb_next),
            any::<u8>(),
            flag(base.read_msb_next),
            option(base.count_latch),
            option(base.status_latch),
            flag(base.gate),
            phase(),
        ),
    )
        .prop_map(
            |(
                (mode, access, bcd, count, loaded, held, null_count),
                (write_msb_next, write_lsb, read_msb_next, count_latch, status_latch, gate, phase),
            )| ChannelState {
                mode,
                access,
                bcd,
                count,
                loaded,
                held,
                null_count,
                write_msb_next,
                write_lsb,
                read_msb_next,
                count_latch,
                status_latch,
                gate,
                phase,
            },
        )
        .boxed()
}

fn pit_state() -> BoxedStrategy<PitState> {
    let base = PitState::default();
    (
        channel(base.channels[0]),
        channel(base.channels[1]),
        channel(base.channels[2]),
        any::<bool>(),
        prop_oneof![Just(0u64), any::<u64>()],
        any::<u64>(),
    )
        .prop_map(|(c0, c1, c2, speaker_data, irq0_pending, irq0_synced_ns)| PitState {
            channels: [c0, c1, c2],
            speaker_data,
            irq0_pending,
            irq0_synced_ns,
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// `Tsc::restore` installs exactly the state it accepts, and a refusal changes nothing and
    /// gives `TscState::validate`'s reason.
    #[test]
    fn tsc_restore_installs_exactly_the_state_or_refuses_it(first in tsc_state(), state in tsc_state()) {
        let mut tsc = Tsc::new(TscScaling::default());
        let _ = tsc.restore(&first);
        let before = tsc;
        match tsc.restore(&state) {
            Ok(()) => {
                prop_assert_eq!(tsc.state(), state);
                prop_assert_eq!(state.validate(), Ok(()));
            }
            Err(error) => {
                prop_assert_eq!(tsc, before, "a refused restore changed the TSC");
                prop_assert_eq!(state.validate(), Err(error));
            }
        }
    }

    /// `Counter::restore` installs exactly the state it accepts (the frequency must be the
    /// configured one), and a refusal changes nothing.
    #[test]
    fn counter_restore_installs_exactly_the_state_or_refuses_it(
        features in features(),
        (frequency, first, state) in (1u32..=u32::MAX).prop_flat_map(|f| (Just(f), counter_state(f), counter_state(f))),
    ) {
        let mut counter = Counter::new(frequency, features).unwrap();
        let _ = counter.restore(&first);
        let before = counter;
        match counter.restore(&state) {
            Ok(()) => {
                prop_assert_eq!(counter.state(), state);
                prop_assert_eq!(counter.features(), features);
                prop_assert_eq!(state.validate(), Ok(()));
            }
            Err(error) => {
                prop_assert_eq!(counter, before, "a refused restore changed the counter");
                match state.validate() {
                    Err(e) => prop_assert_eq!(error, e),
                    Ok(()) => prop_assert_eq!(
                        error,
                        GtStateError::FrequencyMismatch { state: state.cntfrq, configured: frequency }
                    ),
                }
            }
        }
    }

    /// `VcpuTimers::restore` installs exactly the state it accepts (a CTL with ISTATUS, which
    /// the model derives, is refused rather than masked), and a refusal changes nothing and
    /// gives `VcpuTimersState::validate`'s reason.
    #[test]
    fn vcpu_timers_restore_installs_exactly_the_state_or_refuses_it(
        features in features(),
        first in vcpu_state(),
        state in vcpu_state(),
    ) {
        let counter = Counter::new(24_000_000, features).unwrap();
        let mut vcpu = VcpuTimers::new();
        let _ = vcpu.restore(&counter, &first);
        let before = vcpu;
        match vcpu.restore(&counter, &state) {
            Ok(()) => {
                prop_assert_eq!(vcpu.state(), state);
                prop_assert_eq!(state.validate(features), Ok(()));
            }
            Err(error) => {
                prop_assert_eq!(vcpu, before, "a refused restore changed the vCPU");
                prop_assert_eq!(state.validate(features), Err(error));
            }
        }
    }

    /// `Pit::restore` installs exactly the state it accepts, and a refusal changes nothing and
    /// gives `PitState::validate`'s reason.
    #[test]
    fn pit_restore_installs_exactly_the_state_or_refuses_it(first in pit_state(), state in pit_state()) {
        let mut pit = Pit::new();
        let _ = pit.restore(&first);
        let before = pit.clone();
        match pit.restore(&state) {
            Ok(()) => {
                prop_assert_eq!(pit.state(), state);
                prop_assert_eq!(state.validate(), Ok(()));
            }
            Err(error) => {
                prop_assert_eq!(&pit, &before, "a refused restore changed the PIT");
                prop_assert_eq!(state.validate(), Err(error));
            }
        }
    }
}
