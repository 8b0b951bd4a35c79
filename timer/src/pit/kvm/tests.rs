#![allow(unused_must_use)] // `out` returns the effects for the tests that check them.

//! The conversions against KVM's semantics: what KVM_GET_PIT2 reports on the project's hosts
//! converts into a model that behaves as KVM's counter, and a model state handed to KVM
//! continues in KVM (checked with KVM's count/OUT formulas, written out below) and, converted
//! back, in the model.

extern crate std;

use proptest::prelude::*;

use super::*;
use crate::pit::regs::*;
use crate::pit::{Effects, Pit};

/// An arbitrary host ktime (ns) at which the tests start programming.
const T0: u64 = 7_000_000_321;

/// The first host ns at which `ticks` PIT clocks (the model's) have elapsed since `start`.
fn at(start: u64, ticks: u64) -> u64 {
    start + wave::ticks_to_ns_ceil(ticks).unwrap()
}

/// The first host ns at which `ticks` of KVM's clocks have elapsed since `start`.
fn kvm_at(start: u64, ticks: u64) -> u64 {
    start + kvm_ticks_to_ns_ceil(ticks).unwrap()
}

fn out(pit: &mut Pit, port: u16, value: u8, now: u64) -> Effects {
    let effects = pit.write(port, value, now);
    assert_eq!(effects.invalid, None, "write {value:#04x} to {port:#x}");
    effects
}

fn inb(pit: &mut Pit, port: u16, now: u64) -> u8 {
    pit.read(port, now).0
}

/// Control word for `counter`: LSB then MSB, `mode`, binary; then the count's two bytes.
fn program(pit: &mut Pit, counter: Counter, mode: u8, count: u16, now: u64) {
    out(pit, CONTROL_WORD, ((counter as u8) << 6) | 0x30 | (mode << 1), now); // LSB then MSB
    let [lsb, msb] = count.to_le_bytes();
    out(pit, counter.port(), lsb, now);
    out(pit, counter.port(), msb, now);
}

/// Counter 2's gate (port 0x61 bit 0), speaker off.
fn gate2(pit: &mut Pit, level: bool, now: u64) {
    out(pit, NMI_SC, u8::from(level), now);
}

/// What the guest would see of `counter` at `now` without disturbing `pit`: the latched
/// count (counter latch command, LSB, MSB) and OUT.
fn view(pit: &Pit, counter: Counter, now: u64) -> (u16, bool) {
    let mut probe = pit.clone();
    out(&mut probe, CONTROL_WORD, (counter as u8) << 6, now); // SC = counter, RW = 00: latch
    let lsb = inb(&mut probe, counter.port(), now);
    let msb = inb(&mut probe, counter.port(), now);
    (u16::from_le_bytes([lsb, msb]), pit.output(counter, now))
}

/// The model after a trip through KVM's format at `now`.
fn through_kvm(pit: &Pit, now: u64) -> Pit {
    let kvm = pit.state().to_kvm(now);
    let mut moved = Pit::new();
    moved.restore(&PitState::from_kvm(&kvm, now).unwrap()).unwrap();
    moved
}

/// KVM's channel after KVM_CREATE_PIT2 (`kvm_pit_reset`), as KVM_GET_PIT2 reports it on the
/// project's hosts: mode 0xFF, count 0x10000, no access mode, counter 2's gate low, and
/// counters 1 and 2 loaded at creation (counter 0's load time is never set: 0).
fn kvm_reset_channel(counter: Counter, created: i64) -> kvm_pit_channel_state {
    kvm_pit_channel_state {
        count: MAX_COUNT,
        mode: MODE_UNPROGRAMMED,
        gate: u8::from(counter != Counter::Counter2),
        count_load_time: if counter == Counter::Counter0 { 0 } else { created },
        ..kvm_pit_channel_state::default()
    }
}

fn kvm_reset(created: i64) -> kvm_pit_state2 {
    kvm_pit_state2 {
        channels: Counter::ALL.map(|c| kvm_reset_channel(c, created)),
        ..kvm_pit_state2::default()
    }
}

/// A counter KVM has programmed with LSB-then-MSB access (a control word, both count bytes).
fn kvm_counting(mode: u8, count: u32, gate: bool, loaded_at: u64) -> kvm_pit_channel_state {
    kvm_pit_channel_state {
        count,
        read_state: RW_STATE_WORD0,
        write_state: RW_STATE_WORD0,
        write_latch: count.to_le_bytes()[0],
        rw_mode: 3,
        mode,
        gate: u8::from(gate),
        count_load_time: i64::try_from(loaded_at).unwrap(),
        ..kvm_pit_channel_state::default()
    }
}

/// What KVM reads from counter 1 or 2 at `now` (`pit_get_count`, `pit_get_out` with the
/// elapsed time taken from `count_load_time`): the count's low 16 bits and OUT.
fn kvm_view(c: &kvm_pit_channel_state, now: u64) -> (u16, bool) {
    let elapsed = now - u64::try_from(c.count_load_time).unwrap();
    let d = kvm_ticks(elapsed);
    let n = u64::from(c.count);
    let count = match c.mode {
        0 | 1 | 4 | 5 => n.wrapping_sub(d) & 0xFFFF,
        3 => n - (2 * d) % n,
        _ => n - d % n,
    };
    let out = match c.mode {
        1 => d < n,
        2 => d % n == 0 && d != 0,
        3 => d % n < n.div_ceil(2),
        4 | 5 => d == n,
        _ => d >= n,
    };
    (count as u16, out)
}

// ----- power-on ---------------------------------------------------------------------------

#[test]
fn kvm_power_on_state_is_the_models_power_on_state() {
    let now = T0 + 1_000_000;
    let state = PitState::from_kvm(&kvm_reset(i64::try_from(T0).unwrap()), now).unwrap();
    assert_eq!(state, PitState { irq0_synced_ns: now, ..PitState::default() });
}

#[test]
fn models_power_on_state_goes_to_kvm_unprogrammed_so_no_timer_starts() {
    let kvm = PitState::default().to_kvm(T0);
    for (channel, gate) in kvm.channels.iter().zip([1, 1, 0]) {
        assert_eq!(channel.mode, MODE_UNPROGRAMMED);
        assert_eq!(
            (channel.count, channel.rw_mode, channel.read_state, channel.write_state),
            (MAX_COUNT, 0, 0, 0)
        );
        assert_eq!((channel.count_latched, channel.status_latched, channel.gate), (0, 0, gate));
    }
    assert_eq!(kvm.flags, 0);
}

#[test]
fn a_counter_that_only_had_its_gate_raised_stays_unprogrammed() {
    let mut pit = Pit::new();
    gate2(&mut pit, true, T0);
    let kvm = pit.state().to_kvm(T0);
    assert_eq!((kvm.channels[2].mode, kvm.channels[2].gate), (MODE_UNPROGRAMMED, 1));
    assert_eq!(through_kvm(&pit, T0).state().channels, pit.state().channels);
}

// ----- counting keeps its phase -------------------------------------------------------------

/// Counter 2 running `mode` with `count`, started at `T0` (modes 1 and 5 by a gate trigger).
fn counter2_running(mode: u8, count: u16) -> Pit {
    let mut pit = Pit::new();
    gate2(&mut pit, mode != 1 && mode != 5, T0);
    program(&mut pit, Counter::Counter2, mode, count, T0);
    if mode == 1 || mode == 5 {
        gate2(&mut pit, true, T0); // the trigger
    }
    pit
}

#[test]
fn every_mode_on_counter_2_keeps_its_count_out_and_phase_through_kvm() {
    for mode in 0..=5 {
        for count in [1000u16, 999, 2] {
            let pit = counter2_running(mode, count);
            for converted_after in [0u64, 1, 437, 999, 1000, 1001, 2500] {
                let now = at(T0, converted_after) + 300;
                let moved = through_kvm(&pit, now);
                for k in (converted_after..converted_after + 3 * u64::from(count) + 5).step_by(7) {
                    let t = at(T0, k) + 400; // mid-clock: away from either run's clock edges
                    assert_eq!(
                        view(&moved, Counter::Counter2, t),
                        view(&pit, Counter::Counter2, t),
                        "mode {mode} count {count} converted after {converted_after} clocks, read after {k}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_retriggered_counter_2_counts_its_initial_count_again_after_a_trip_through_kvm() {
    // Modes 1 and 5 restart from `count` at a gate rising edge (KVM's pit_set_gate does the
    // same): a one-shot moved mid-run must still hold N, not the clocks it had left.
    for mode in [1, 5] {
        let pit = counter2_running(mode, 1000);
        let now = at(T0, 400) + 300;
        let kvm = pit.state().to_kvm(now);
        assert_eq!(kvm.channels[2].count, 1000, "mode {mode}: N, not the 600 clocks to go");
        let mut moved = through_kvm(&pit, now);
        let mut original = pit.clone();
        for p in [&mut moved, &mut original] {
            gate2(p, false, at(T0, 450));
            gate2(p, true, at(T0, 460)); // retrigger
        }
        let t = at(T0, 470) + 400;
        assert_eq!(view(&moved, Counter::Counter2, t), view(&original, Counter::Counter2, t), "mode {mode}");
        assert_eq!(view(&moved, Counter::Counter2, t).0, 990, "mode {mode}: N − 10 clocks after the trigger");
    }
}

#[test]
fn counter0_one_shot_in_flight_fires_within_a_clock_of_its_instant_after_a_trip_through_kvm() {
    for mode in [0, 4] {
        let mut pit = Pit::new();
        program(&mut pit, Counter::Counter0, mode, 50_000, T0);
        pit.advance(T0);
        let fires_at = pit.next_deadline(T0).unwrap();
        let now = T0 + 10_000_000;
        let kvm = pit.state().to_kvm(now);
        // KVM_SET_PIT2 restarts counter 0 from `count`: the clocks still to go.
        let to_go = 50_000 - wave::ns_to_ticks(10_000_000);
        assert_eq!(u64::from(kvm.channels[0].count), to_go);
        let mut moved = through_kvm(&pit, now);
        let late = moved.next_deadline(now).unwrap() - fires_at;
        assert!(late < 839, "mode {mode}: {late} ns late");
        assert_eq!(moved.advance(fires_at + late), 1);
        assert_eq!(moved.next_deadline(fires_at + late), None);
    }
}

#[test]
fn counter0_periodic_restarts_a_full_period_at_the_conversion_as_kvm_set_pit2_does() {
    let mut pit = Pit::new();
    program(&mut pit, Counter::Counter0, 2, 2386, T0); // mode 2, 2.0 ms
    pit.advance(T0);
    let now = T0 + 3_300_000;
    let kvm = pit.state().to_kvm(now);
    assert_eq!((kvm.channels[0].mode, kvm.channels[0].count), (2, 2386));
    let mut moved = through_kvm(&pit, now);
    let period = wave::ticks_to_ns_ceil(2386).unwrap();
    assert_eq!(moved.next_deadline(now), Some(now + period));
    assert_eq!(moved.advance(now + 10 * period), 10, "the rate is kept");
}

#[test]
fn counter0_from_kvm_loads_at_now_whatever_its_stale_count_load_time_says() {
    let now = T0 + 5_000_000_000;
    let mut kvm = kvm_reset(0);
    // A guest's one-shot of 1000 clocks; KVM left counter 0's load time at 0.
    kvm.channels[0] = kvm_counting(0, 1000, true, 0);
    let mut pit = Pit::new();
    pit.restore(&PitState::from_kvm(&kvm, now).unwrap()).unwrap();
    assert_eq!(pit.next_deadline(now), Some(at(now, 1000)), "the interrupt is not lost");
    assert_eq!(view(&pit, Counter::Counter0, now), (1000, false));
}

#[test]
fn counters_1_and_2_from_kvm_continue_from_count_load_time_at_kvms_position() {
    let loaded = T0;
    let now = T0 + 10_000_000;
    let mut kvm = kvm_reset(0);
    kvm.channels[1] = kvm_counting(2, 2386, true, loaded);
    kvm.channels[2] = kvm_counting(0, 0x8000, true, loaded);
    let pit = {
        let mut pit = Pit::new();
        pit.restore(&PitState::from_kvm(&kvm, now).unwrap()).unwrap();
        pit
    };
    let d = kvm_ticks(now - loaded);
    for k in [0, 1, 100, 5000, 0x8000 - d - 1, 0x8000 - d, 0x8000 - d + 1] {
        let t = kvm_at(loaded, d + k) + 400;
        assert_eq!(
            view(&pit, Counter::Counter2, t),
            kvm_view(&kvm.channels[2], t),
            "counter 2, {k} clocks on"
        );
        assert_eq!(
            view(&pit, Counter::Counter1, t).0,
            kvm_view(&kvm.channels[1], t).0,
            "counter 1, {k} clocks on"
        );
    }
}

prop_compose! {
    /// Counter 1 or 2 as KVM holds it while counting with its gate high, loaded up to 2 s
    /// before `now`, binary, with any access mode and flip-flops.
    fn kvm_running_counter()(
        mode in 0..=5u8,
        count in 1..=MAX_COUNT,
        elapsed in 0..2_000_000_000u64,
        rw_mode in 1..=3u8,
        read_msb in any::<bool>(),
        write_msb in any::<bool>(),
        write_latch in any::<u8>(),
    ) -> (kvm_pit_channel_state, u64) {
        let word = |msb: bool| if rw_mode == 3 { RW_STATE_WORD0 + u8::from(msb) } else { rw_mode };
        let now = T0 + 3_000_000_000;
        let channel = kvm_pit_channel_state {
            read_state: word(read_msb),
            write_state: word(write_msb),
            write_latch,
            rw_mode,
            ..kvm_counting(mode, count, true, now - elapsed)
        };
        (channel, now)
    }
}

proptest! {
    #[test]
    fn a_kvm_counter_that_went_through_the_model_reads_the_same_in_kvm(
        (channel, now) in kvm_running_counter(),
        counter2 in any::<bool>(),
        later in proptest::collection::vec(0..200_000u64, 1..8),
    ) {
        let index = if counter2 { 2 } else { 1 };
        let mut kvm = kvm_reset(0);
        kvm.channels[index] = channel;
        let back = PitState::from_kvm(&kvm, now).unwrap().to_kvm(now).channels[index];
        let field = |c: &kvm_pit_channel_state| (c.mode, c.rw_mode, c.read_state, c.write_state, c.write_latch, c.gate);
        prop_assert_eq!(field(&back), field(&channel));
        // From the KVM clock `now` is in, at mid-clock instants.
        let d = kvm_ticks(now - u64::try_from(channel.count_load_time).unwrap());
        for k in later.into_iter().chain([0, 1]) {
            let t = kvm_at(u64::try_from(channel.count_load_time).unwrap(), d + 1 + k) + 400;
            prop_assert_eq!(kvm_view(&back, t), kvm_view(&channel, t), "{} clocks on", k);
        }
    }

    #[test]
    fn any_kvm_state_converts_or_is_refused_and_a_converted_one_converts_again(
        fields in proptest::collection::vec(
            (any::<u32>(), any::<u16>(), any::<[u8; 10]>(), any::<i64>()), 3..=3),
        small in proptest::collection::vec((0..6u8, 0..5u8, 0..5u8, 0..4u8, 0..3u8, 0..=MAX_COUNT), 3..=3),
        choose in any::<[bool; 3]>(),
        flags in prop_oneof![Just(0u32), Just(KVM_PIT_FLAGS_SPEAKER_DATA_ON), any::<u32>()],
        now in any::<u64>(),
    ) {
        // Either any bytes, or bytes from the ranges KVM uses (so that conversions succeed
        // often enough to exercise the way back).
        let mut kvm = kvm_pit_state2 { flags, ..kvm_pit_state2::default() };
        for (i, channel) in kvm.channels.iter_mut().enumerate() {
            let (count, latched_count, b, load) = fields[i];
            let (mode, read_state, write_state, count_latched, rw_mode, small_count) = small[i];
            *channel = if choose[i] {
                kvm_pit_channel_state {
                    count, latched_count, count_latched: b[0], status_latched: b[1], status: b[2],
                    read_state: b[3], write_state: b[4], write_latch: b[5], rw_mode: b[6], mode: b[7],
                    bcd: b[8], gate: b[9], count_load_time: load,
                }
            } else {
                kvm_pit_channel_state {
                    count: small_count, latched_count, count_latched, status_latched: b[1] & 1,
                    status: b[2], read_state, write_state, write_latch: b[5], rw_mode, mode,
                    bcd: b[8] & 1, gate: u8::from(i != 2 || b[9] & 1 == 1),
                    count_load_time: load.rem_euclid(i64::MAX),
                }
            };
        }
        if let Ok(state) = PitState::from_kvm(&kvm, now) {
            let mut pit = Pit::new();
            prop_assert!(pit.restore(&state).is_ok());
            let again = PitState::from_kvm(&state.to_kvm(now), now);
            prop_assert!(again.is_ok(), "{:?}", again);
        }
    }
}

// ----- latches and flip-flops --------------------------------------------------------------

#[test]
fn latched_count_and_status_cross_with_the_bytes_still_to_read() {
    let mut pit = counter2_running(0, 0x8000);
    let now = at(T0, 100) + 10;
    out(&mut pit, CONTROL_WORD, 0xC8, now); // read-back: count and status of counter 2
    let latched = pit.state().channels[2].count_latch.unwrap();
    assert_eq!(latched, 0x8000 - 100);
    let kvm = pit.state().to_kvm(now);
    assert_eq!((kvm.channels[2].status_latched, kvm.channels[2].status), (1, 0x30)); // OUT low, LSB then MSB, mode 0
    assert_eq!((kvm.channels[2].count_latched, kvm.channels[2].latched_count), (RW_STATE_WORD0, latched));

    let later = now + 5_000_000;
    let mut moved = through_kvm(&pit, now);
    assert_eq!(inb(&mut moved, COUNTER2, later), 0x30); // the status byte first
    assert_eq!(inb(&mut moved, COUNTER2, later), latched.to_le_bytes()[0]);
    // Half-read: only the MSB is left.
    let kvm = moved.state().to_kvm(later);
    assert_eq!((kvm.channels[2].status_latched, kvm.channels[2].count_latched), (0, RW_STATE_MSB));
    let mut moved = through_kvm(&moved, later);
    assert_eq!(inb(&mut moved, COUNTER2, later), latched.to_le_bytes()[1]);
    let live = view(&counter2_running(0, 0x8000), Counter::Counter2, later).0;
    assert_eq!(inb(&mut moved, COUNTER2, later), live.to_le_bytes()[0], "then the live count");
}

#[test]
fn write_flip_flop_between_lsb_and_msb_crosses_both_ways() {
    let mut pit = Pit::new();
    out(&mut pit, CONTROL_WORD, 0x30, T0); // counter 0, LSB then MSB, mode 0
    out(&mut pit, COUNTER0, 0x34, T0); // LSB
    let kvm = pit.state().to_kvm(T0);
    assert_eq!((kvm.channels[0].write_state, kvm.channels[0].write_latch), (RW_STATE_WORD1, 0x34));
    let mut moved = through_kvm(&pit, T0);
    let now = T0 + 1000;
    out(&mut moved, COUNTER0, 0x12, now); // MSB: the count 0x1234 loads
    moved.advance(now);
    assert_eq!(moved.next_deadline(now), Some(at(now, 0x1234)));
}

#[test]
fn read_flip_flop_crosses_between_lsb_and_msb() {
    let mut pit = counter2_running(2, 5000);
    let now = at(T0, 10) + 100;
    inb(&mut pit, COUNTER2, now); // live LSB
    assert_eq!(pit.state().to_kvm(now).channels[2].read_state, RW_STATE_WORD1);
    let mut moved = through_kvm(&pit, now);
    let later = at(T0, 20) + 100;
    assert_eq!(inb(&mut moved, COUNTER2, later), inb(&mut pit, COUNTER2, later), "the MSB");
}

#[test]
fn kvm_latches_the_model_cannot_hold_give_the_guest_the_same_next_byte() {
    let now = T0 + 1_000_000;
    let next_read = |rw_mode: u8, count_latched: u8| {
        let mut kvm = kvm_reset(0);
        let state = if rw_mode == 3 { RW_STATE_WORD0 } else { rw_mode };
        kvm.channels[2] = kvm_pit_channel_state {
            rw_mode,
            read_state: state,
            write_state: state,
            count_latched,
            latched_count: 0xABCD,
            ..kvm_counting(0, 0x8000, true, now)
        };
        let mut pit = Pit::new();
        pit.restore(&PitState::from_kvm(&kvm, now).unwrap()).unwrap();
        let first = inb(&mut pit, COUNTER2, now);
        (first, pit.state().channels[2].count_latch)
    };
    // Latched under LSB-only access, then reprogrammed to LSB then MSB: only the LSB is left.
    assert_eq!(next_read(3, RW_STATE_LSB), (0xCD, None));
    assert_eq!(next_read(1, RW_STATE_MSB), (0xAB, None));
    assert_eq!(next_read(2, RW_STATE_LSB), (0xCD, None));
    assert_eq!(next_read(3, RW_STATE_WORD0), (0xCD, Some(0xABCD)));
    assert_eq!(next_read(3, RW_STATE_MSB), (0xAB, None));
}

// ----- phases KVM does not have ---------------------------------------------------------------

#[test]
fn modes_6_and_7_go_to_kvm_as_2_and_3() {
    for (written, kvm_mode) in [(6, 2), (7, 3)] {
        let mut pit = Pit::new();
        program(&mut pit, Counter::Counter0, written, 1000, T0);
        assert_eq!(pit.state().to_kvm(T0).channels[0].mode, kvm_mode);
    }
}

#[test]
fn a_counter_waiting_for_its_count_goes_to_kvm_counting_its_count_register() {
    let mut pit = Pit::new();
    program(&mut pit, Counter::Counter0, 2, 2386, T0);
    out(&mut pit, CONTROL_WORD, 0x34, T0 + 500); // mode 2 again: waits for a count
    let kvm = pit.state().to_kvm(T0 + 1000);
    assert_eq!(
        (kvm.channels[0].mode, kvm.channels[0].count, kvm.channels[0].count_load_time),
        (2, 2386, 7_000_001_321)
    );
}

#[test]
fn a_paused_counter_goes_to_kvm_with_the_clocks_still_to_go() {
    let mut pit = counter2_running(0, 1000);
    gate2(&mut pit, false, at(T0, 300) + 1); // pauses at 300 clocks
    let now = T0 + 5_000_000;
    let kvm = pit.state().to_kvm(now);
    assert_eq!(
        (kvm.channels[2].count, kvm.channels[2].gate, kvm.channels[2].count_load_time),
        (700, 0, 7_005_000_321)
    );
    let moved = through_kvm(&pit, now);
    assert_eq!(moved.state().channels[2].phase, Phase::Paused { position: 0 });
    assert_eq!(view(&moved, Counter::Counter2, now + 1_000_000), (700, false));
}

#[test]
fn a_low_gate_from_kvm_pauses_modes_0_and_4_and_makes_2_and_3_wait() {
    let now = T0 + 1_000_000;
    for (mode, paused) in [(0, true), (4, true), (2, false), (3, false)] {
        let mut kvm = kvm_reset(0);
        kvm.channels[2] = kvm_counting(mode, 1000, false, now - 100_000); // ~119 clocks ago
        let state = PitState::from_kvm(&kvm, now).unwrap();
        let phase = state.channels[2].phase;
        if paused {
            assert_eq!(phase, Phase::Paused { position: kvm_ticks(100_000) }, "mode {mode}");
        } else {
            assert_eq!(phase, Phase::Waiting, "mode {mode}");
        }
    }
}

#[test]
fn counter0_in_mode_5_from_kvm_raises_no_irq0_as_in_kvm() {
    let now = T0 + 1_000_000;
    let mut kvm = kvm_reset(0);
    kvm.channels[0] = kvm_counting(5, 1000, true, 0);
    let mut pit = Pit::new();
    pit.restore(&PitState::from_kvm(&kvm, now).unwrap()).unwrap();
    assert_eq!(pit.next_deadline(now), None);
}

#[test]
fn a_pending_mode_2_reload_goes_to_kvm_loaded_now() {
    let mut pit = Pit::new();
    program(&mut pit, Counter::Counter0, 2, 2386, T0);
    let now = at(T0, 1000) + 5;
    out(&mut pit, COUNTER0, 0x00, now); // a new count 0x1000 during counting: at the period's end
    out(&mut pit, COUNTER0, 0x10, now);
    let kvm = pit.state().to_kvm(now);
    assert_eq!(kvm.channels[0].count, 0x1000);
}

#[test]
fn speaker_data_crosses_in_flags() {
    let mut pit = Pit::new();
    out(&mut pit, NMI_SC, 0x03, T0); // gate 2 and speaker data on
    let kvm = pit.state().to_kvm(T0);
    assert_eq!(kvm.flags, KVM_PIT_FLAGS_SPEAKER_DATA_ON);
    assert_eq!(inb(&mut through_kvm(&pit, T0), NMI_SC, T0) & 0x03, 0x03);
}

// ----- malformed input ------------------------------------------------------------------------

#[test]
fn values_kvm_never_stores_are_refused() {
    let now = T0;
    let good = {
        let mut kvm = kvm_reset(0);
        kvm.channels[2] = kvm_counting(0, 1000, true, now);
        kvm
    };
    assert!(PitState::from_kvm(&good, now).is_ok());
    let refused = |change: fn(&mut kvm_pit_channel_state), field: &'static str, value: i64| {
        let mut bad = good;
        change(&mut bad.channels[2]);
        assert_eq!(
            PitState::from_kvm(&bad, now),
            Err(KvmPitError::Field { counter: Counter::Counter2, field, value }),
            "{field}"
        );
    };
    refused(|c| c.mode = 6, "mode", 6);
    refused(|c| c.rw_mode = 0, "rw_mode", 0);
    refused(|c| c.read_state = RW_STATE_LSB, "read_state", 1);
    refused(|c| c.write_state = 5, "write_state", 5);
    refused(|c| c.count = MAX_COUNT + 1, "count", 0x1_0001);
    refused(|c| c.gate = 2, "gate", 2);
    refused(|c| c.bcd = 0xFF, "bcd", 0xFF);
    refused(|c| c.status_latched = 2, "status_latched", 2);
    refused(|c| c.count_latched = RW_STATE_WORD1, "count_latched", 4);
    refused(|c| c.count_load_time = -1, "count_load_time", -1);

    let mut bad = good;
    bad.channels[1].gate = 0;
    assert!(matches!(PitState::from_kvm(&bad, now), Err(KvmPitError::State(_))));
    let mut bad = good;
    bad.flags = 0x4;
    assert_eq!(PitState::from_kvm(&bad, now), Err(KvmPitError::Flags(0x4)));
    let mut bad = good;
    bad.flags = KVM_PIT_FLAGS_HPET_LEGACY;
    assert_eq!(PitState::from_kvm(&bad, now), Err(KvmPitError::HpetLegacy));
}

#[test]
fn counter0s_count_load_time_is_not_read_so_any_value_is_accepted() {
    let mut kvm = kvm_reset(0);
    kvm.channels[0] = kvm_counting(2, 1000, true, 0);
    kvm.channels[0].count_load_time = i64::MIN;
    assert!(PitState::from_kvm(&kvm, T0).is_ok());
}
