#![allow(unused_must_use)] // `out` returns the effects for the tests that check them.

//! Behaviour tests of the PIT: each checks what a guest would see (port reads, OUT, IRQ0
//! edges and their host instants), with Linux's sequences spelled out byte by byte.

extern crate std;

use std::vec::Vec;

use super::regs::*;
use super::*;

/// An arbitrary host time (ns) at which the tests start programming.
const T0: u64 = 5_000_000_123;

/// Linux's `PIT_LATCH` for HZ=100: ⌈1193182/100⌉ clocks.
const LATCH_HZ100: u16 = 11932;

/// The first host ns at which `ticks` PIT clocks have elapsed since `start`.
fn at(start: u64, ticks: u64) -> u64 {
    start + wave::ticks_to_ns_ceil(ticks).unwrap()
}

fn out(pit: &mut Pit, port: u16, value: u8, now: u64) -> Effects {
    let effects = pit.write(port, value, now);
    assert_eq!(effects.invalid, None, "write {value:#04x} to {port:#x}");
    effects
}

fn inb(pit: &mut Pit, port: u16, now: u64) -> u8 {
    let (value, effects) = pit.read(port, now);
    assert_eq!(effects.invalid, None, "read of {port:#x}");
    value
}

/// Counter latch command for `counter`, then LSB and MSB reads (LSB-then-MSB access).
fn latched_count(pit: &mut Pit, counter: Counter, now: u64) -> u16 {
    out(pit, CONTROL_WORD, (counter as u8) << 6, now); // SC = counter, RW = 00: latch
    let lsb = inb(pit, counter.port(), now);
    let msb = inb(pit, counter.port(), now);
    u16::from_le_bytes([lsb, msb])
}

/// Programs `counter` with LSB-then-MSB access, `mode` and binary counting, then the count.
fn program(pit: &mut Pit, counter: Counter, mode: u8, count: u16, now: u64) {
    out(pit, CONTROL_WORD, ((counter as u8) << 6) | 0x30 | (mode << 1), now); // LSB then MSB
    let [lsb, msb] = count.to_le_bytes();
    out(pit, counter.port(), lsb, now);
    out(pit, counter.port(), msb, now);
}

/// Linux's `init_pit_timer` for the periodic tick (`arch/x86/kernel/i8253.c`, HZ=100).
fn linux_periodic_tick(pit: &mut Pit, now: u64) {
    out(pit, CONTROL_WORD, 0x34, now); // counter 0, LSB then MSB, mode 2, binary
    out(pit, COUNTER0, 0x9c, now); // LSB of PIT_LATCH 11932
    out(pit, COUNTER0, 0x2e, now); // MSB of PIT_LATCH 11932
}

/// Linux's `pit_calibrate_tsc` set-up (`arch/x86/kernel/tsc.c`): gate counter 2 on with the
/// speaker off, counter 2 in mode 0 with count `latch`.
fn linux_calibrate_setup(pit: &mut Pit, latch: u16, now: u64) {
    let port_b = inb(pit, NMI_SC, now);
    out(pit, NMI_SC, (port_b & !0x02) | 0x01, now); // gate 2 high, speaker data off
    out(pit, CONTROL_WORD, 0xB0, now); // counter 2, LSB then MSB, mode 0, binary
    out(pit, COUNTER2, latch.to_le_bytes()[0], now); // LSB
    out(pit, COUNTER2, latch.to_le_bytes()[1], now); // MSB
}

fn gate2(pit: &mut Pit, level: bool, now: u64) {
    out(pit, NMI_SC, u8::from(level), now); // TIM_CNT2_EN = level, speaker off
}

fn out2(pit: &mut Pit, now: u64) -> bool {
    inb(pit, NMI_SC, now) & 0x20 != 0
}

// ----- Linux's uses ---------------------------------------------------------------------------

#[test]
fn linux_pit_calibrate_tsc_sees_out2_rise_exactly_after_the_latch() {
    let mut pit = Pit::default();
    let latch = 59659; // CAL_LATCH: PIT_TICK_RATE / (1000 / 50), 50 ms
    linux_calibrate_setup(&mut pit, latch, T0);
    let rise = at(T0, u64::from(latch));
    assert!(!out2(&mut pit, T0), "mode 0: OUT low after the count is written");
    assert!(!out2(&mut pit, rise - 1), "not a nanosecond early");
    assert!(out2(&mut pit, rise));
    assert_eq!(rise - T0, 49999917, "⌈59659·10⁹/1193182⌉ ns");
    // The guest's polling loop: every poll before the edge reads 0, the first after reads 1.
    let mut now = T0;
    while !out2(&mut pit, now) {
        now += 997;
    }
    assert!(now >= rise && now < rise + 997);
    assert!(out2(&mut pit, rise + 1_000_000_000), "mode 0 OUT stays high");
}

#[test]
fn linux_quick_pit_calibrate_reads_a_falling_msb() {
    let mut pit = Pit::default();
    linux_calibrate_setup(&mut pit, 0xFFFF, T0); // quick_pit_calibrate: count 0xffff
    for k in 0..=200u64 {
        // pit_expect_msb: `inb(0x42)` (LSB, discarded) then `inb(0x42)` (MSB).
        let now = at(T0, k * 256 + 1);
        let _lsb = inb(&mut pit, COUNTER2, now);
        let msb = inb(&mut pit, COUNTER2, now);
        assert_eq!(u64::from(msb), 0xFF - k, "after {} clocks", k * 256 + 1);
    }
}

#[test]
fn linux_periodic_tick_gives_irq0_edges_every_11932_clocks() {
    let mut pit = Pit::default();
    linux_periodic_tick(&mut pit, T0);
    assert_eq!(pit.advance(T0), 1, "control word 0x34 raised OUT0 from mode 0's low");
    let mut expected = T0;
    for period in 1..=100u64 {
        let deadline = pit.next_deadline(expected).unwrap();
        let rise = at(T0, period * u64::from(LATCH_HZ100));
        assert_eq!(deadline, rise, "period {period}");
        assert!(!pit.output(Counter::Counter0, deadline - 1), "OUT0 low in the clock before");
        assert!(pit.output(Counter::Counter0, deadline), "OUT0 high at the deadline");
        assert_eq!(pit.advance(deadline - 1), 0, "never early");
        assert_eq!(pit.advance(deadline), 1);
        expected = deadline;
    }
    // 100 periods of 11932 clocks are 1.000015 s.
    assert_eq!(expected - T0, 1000015086);
}

#[test]
fn late_advance_reports_every_missed_edge_once() {
    let mut pit = Pit::default();
    linux_periodic_tick(&mut pit, T0);
    let _ = pit.advance(T0);
    let later = at(T0, 10 * u64::from(LATCH_HZ100) + 5);
    assert!(pit.next_deadline(later).unwrap() < later, "overdue: the VMM must advance now");
    assert_eq!(pit.advance(later), 10);
    assert_eq!(pit.advance(later), 0);
    assert_eq!(pit.next_deadline(later), Some(at(T0, 11 * u64::from(LATCH_HZ100))));
}

#[test]
fn linux_oneshot_mode4_fires_once_one_clock_after_terminal_count() {
    let mut pit = Pit::default();
    out(&mut pit, CONTROL_WORD, 0x38, T0); // pit_set_oneshot: counter 0, LSB then MSB, mode 4
    assert_eq!(pit.advance(T0), 1, "mode 4's control word sets OUT0 high");
    out(&mut pit, COUNTER0, 100, T0); // pit_next_event: LSB of 100 clocks
    out(&mut pit, COUNTER0, 0, T0); // MSB
    assert_eq!(pit.next_deadline(T0), Some(at(T0, 101)), "low during count 0, high again after");
    assert!(!pit.output(Counter::Counter0, at(T0, 100)));
    assert_eq!(pit.advance(at(T0, 1_000_000)), 1);
    assert_eq!(pit.next_deadline(at(T0, 1_000_000)), None, "one strobe per count");
}

// ----- OUT per mode ---------------------------------------------------------------------------

#[test]
fn mode0_out_is_low_until_terminal_count_then_the_count_wraps() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter1, 0, 3, T0);
    let levels: Vec<bool> = (0..6).map(|t| pit.output(Counter::Counter1, at(T0, t))).collect();
    assert_eq!(levels, [false, false, false, true, true, true]);
    assert_eq!(latched_count(&mut pit, Counter::Counter1, at(T0, 3)), 0);
    assert_eq!(latched_count(&mut pit, Counter::Counter1, at(T0, 4)), 0xFFFF, "keeps counting");
}

#[test]
fn mode0_count_write_rearms_and_first_byte_stops_counting() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter0, 0, 10, T0);
    let _ = pit.advance(at(T0, 20));
    assert!(pit.output(Counter::Counter0, at(T0, 20)));
    let t1 = at(T0, 20);
    out(&mut pit, COUNTER0, 5, t1); // LSB: counting stops, OUT low at once
    assert!(!pit.output(Counter::Counter0, t1));
    assert_eq!(pit.next_deadline(t1), None, "stopped until the MSB");
    let frozen = latched_count(&mut pit, Counter::Counter0, at(T0, 500));
    assert_eq!(frozen, latched_count(&mut pit, Counter::Counter0, at(T0, 900)));
    let t2 = at(T0, 1000);
    out(&mut pit, COUNTER0, 0, t2); // MSB: count 5 loaded, counting again
    assert_eq!(pit.next_deadline(t2), Some(at(t2, 5)));
    assert_eq!(pit.advance(at(t2, 5)), 1);
}

#[test]
fn mode1_out_is_low_from_the_gate_trigger_until_terminal_count_and_retriggers() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter2, 1, 4, T0); // gate 2 is low at power-on
    assert!(out2(&mut pit, at(T0, 10)), "mode 1 waits for a trigger with OUT high");
    let t1 = at(T0, 10);
    gate2(&mut pit, true, t1); // trigger
    let levels: Vec<bool> = (0..6).map(|t| pit.output(Counter::Counter2, at(t1, t))).collect();
    assert_eq!(levels, [false, false, false, false, true, true]);
    gate2(&mut pit, false, at(t1, 2)); // the gate level does not matter in mode 1
    assert!(!pit.output(Counter::Counter2, at(t1, 3)));
    let t2 = at(t1, 8);
    gate2(&mut pit, true, t2); // retrigger
    assert!(!pit.output(Counter::Counter2, at(t2, 3)));
    assert!(pit.output(Counter::Counter2, at(t2, 4)));
}

#[test]
fn mode2_out_is_low_for_the_one_clock_when_the_count_is_one() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter1, 2, 4, T0);
    let levels: Vec<bool> = (0..9).map(|t| pit.output(Counter::Counter1, at(T0, t))).collect();
    assert_eq!(levels, [true, true, true, false, true, true, true, false, true]);
    let counts: Vec<u16> = (0..5).map(|t| latched_count(&mut pit, Counter::Counter1, at(T0, t))).collect();
    assert_eq!(counts, [4, 3, 2, 1, 4]);
}

#[test]
fn mode3_odd_count_is_high_for_half_plus_one_and_counts_by_two() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter1, 3, 5, T0);
    let levels: Vec<bool> = (0..10).map(|t| pit.output(Counter::Counter1, at(T0, t))).collect();
    assert_eq!(levels, [true, true, true, false, false, true, true, true, false, false]);
    let counts: Vec<u16> = (0..5).map(|t| latched_count(&mut pit, Counter::Counter1, at(T0, t))).collect();
    assert_eq!(counts, [4, 2, 0, 4, 2], "the 8254 loads N-1 for odd counts");
}

#[test]
fn mode3_even_count_is_a_square_wave() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter0, 3, 6, T0);
    let levels: Vec<bool> = (0..12).map(|t| pit.output(Counter::Counter0, at(T0, t))).collect();
    assert_eq!(levels, [true, true, true, false, false, false, true, true, true, false, false, false]);
    let _ = pit.advance(T0);
    assert_eq!(pit.next_deadline(T0), Some(at(T0, 6)));
}

#[test]
fn mode4_strobe_pulses_low_once_when_the_count_reaches_zero() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter1, 4, 3, T0);
    let levels: Vec<bool> = (0..8).map(|t| pit.output(Counter::Counter1, at(T0, t))).collect();
    assert_eq!(levels, [true, true, true, false, true, true, true, true]);
    assert!(pit.output(Counter::Counter1, at(T0, 3 + 65536)), "no second strobe after the wrap");
}

#[test]
fn mode5_strobe_waits_for_a_gate_trigger() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter2, 5, 3, T0);
    assert!(pit.output(Counter::Counter2, at(T0, 3)), "no trigger, no strobe");
    let t1 = at(T0, 50);
    gate2(&mut pit, true, t1);
    let levels: Vec<bool> = (0..6).map(|t| pit.output(Counter::Counter2, at(t1, t))).collect();
    assert_eq!(levels, [true, true, true, false, true, true]);
}

#[test]
fn count_of_one_in_modes_2_and_3_is_illegal_and_makes_no_edges() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter0, 2, 1, T0);
    let _ = pit.advance(T0);
    assert_eq!(pit.next_deadline(T0), None);
    assert_eq!(pit.advance(at(T0, 100)), 0);
    assert!(!pit.output(Counter::Counter0, at(T0, 100)), "mode 2: stays low");
    program(&mut pit, Counter::Counter0, 3, 1, at(T0, 100));
    assert_eq!(pit.advance(at(T0, 200)), 1, "the control word raised OUT0");
    assert_eq!(pit.next_deadline(at(T0, 200)), None);
}

// ----- gate -----------------------------------------------------------------------------------

#[test]
fn gate_low_suspends_mode0_and_high_resumes_where_it_stopped() {
    let mut pit = Pit::default();
    gate2(&mut pit, true, T0);
    program(&mut pit, Counter::Counter2, 0, 100, T0);
    let t1 = at(T0, 40);
    gate2(&mut pit, false, t1);
    assert_eq!(latched_count(&mut pit, Counter::Counter2, at(T0, 1000)), 60, "suspended");
    assert!(!out2(&mut pit, at(T0, 1000)));
    let t2 = at(T0, 1000);
    gate2(&mut pit, true, t2);
    assert!(!out2(&mut pit, at(t2, 59)));
    assert!(out2(&mut pit, at(t2, 60)));
}

#[test]
fn gate_low_forces_mode2_out_high_and_a_rising_edge_reloads() {
    let mut pit = Pit::default();
    gate2(&mut pit, true, T0);
    program(&mut pit, Counter::Counter2, 2, 10, T0);
    assert!(!out2(&mut pit, at(T0, 9)));
    gate2(&mut pit, false, at(T0, 9));
    assert!(out2(&mut pit, at(T0, 9)), "gate low forces OUT high at once");
    assert_eq!(latched_count(&mut pit, Counter::Counter2, at(T0, 500)), 1, "suspended");
    let t1 = at(T0, 500);
    gate2(&mut pit, true, t1);
    assert_eq!(latched_count(&mut pit, Counter::Counter2, t1), 10, "reloaded");
    assert!(!out2(&mut pit, at(t1, 9)));
}

#[test]
fn gate_of_counter2_written_before_the_count_holds_mode0_at_the_start() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter2, 0, 5, T0); // gate 2 low at power-on
    assert_eq!(latched_count(&mut pit, Counter::Counter2, at(T0, 100)), 5);
    let t1 = at(T0, 100);
    gate2(&mut pit, true, t1);
    assert!(out2(&mut pit, at(t1, 5)) && !out2(&mut pit, at(t1, 4)));
}

// ----- counts, latches, flip-flops, status ----------------------------------------------------

#[test]
fn count_zero_is_65536_in_binary_and_10000_in_bcd() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter1, 0, 0, T0);
    assert_eq!(latched_count(&mut pit, Counter::Counter1, at(T0, 1)), 0xFFFF);
    assert!(!pit.output(Counter::Counter1, at(T0, 65535)));
    assert!(pit.output(Counter::Counter1, at(T0, 65536)));
    out(&mut pit, CONTROL_WORD, 0x71, T0); // counter 1, LSB then MSB, mode 0, BCD
    out(&mut pit, COUNTER1, 0, T0); // LSB
    out(&mut pit, COUNTER1, 0, T0); // MSB: 0000 = 10000
    assert_eq!(latched_count(&mut pit, Counter::Counter1, at(T0, 1)), 0x9999);
    assert!(!pit.output(Counter::Counter1, at(T0, 9999)));
    assert!(pit.output(Counter::Counter1, at(T0, 10000)));
}

#[test]
fn bcd_counts_down_in_decimal_digits() {
    let mut pit = Pit::default();
    out(&mut pit, CONTROL_WORD, 0x55, T0); // counter 1, LSB only, mode 2, BCD
    out(&mut pit, COUNTER1, 0x10, T0); // count 10 (BCD)
    let reads: Vec<u8> = (0..11).map(|t| inb(&mut pit, COUNTER1, at(T0, t))).collect();
    assert_eq!(reads, [0x10, 0x09, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x10]);
}

#[test]
fn lsb_only_and_msb_only_access_write_and_read_one_byte() {
    let mut pit = Pit::default();
    out(&mut pit, CONTROL_WORD, 0x10, T0); // counter 0, LSB only, mode 0
    out(&mut pit, COUNTER0, 0x80, T0); // count 0x0080
    assert_eq!(inb(&mut pit, COUNTER0, T0), 0x80);
    assert_eq!(inb(&mut pit, COUNTER0, at(T0, 1)), 0x7F);
    out(&mut pit, CONTROL_WORD, 0x20, T0); // counter 0, MSB only, mode 0
    out(&mut pit, COUNTER0, 0x02, T0); // count 0x0200
    assert_eq!(inb(&mut pit, COUNTER0, T0), 0x02);
    assert_eq!(inb(&mut pit, COUNTER0, at(T0, 1)), 0x01);
}

#[test]
fn counter_latch_holds_the_count_across_time_and_a_second_latch_is_ignored() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter1, 2, 1000, T0);
    out(&mut pit, CONTROL_WORD, 0x40, at(T0, 10)); // latch counter 1: 990
    out(&mut pit, CONTROL_WORD, 0x40, at(T0, 20)); // ignored: 990 unread
    assert_eq!(inb(&mut pit, COUNTER1, at(T0, 30)), (990u16).to_le_bytes()[0]);
    out(&mut pit, CONTROL_WORD, 0x40, at(T0, 40)); // still ignored: MSB unread
    assert_eq!(inb(&mut pit, COUNTER1, at(T0, 50)), (990u16).to_le_bytes()[1]);
    assert_eq!(latched_count(&mut pit, Counter::Counter1, at(T0, 60)), 940, "released, latches anew");
}

#[test]
fn read_and_write_flip_flops_are_independent() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter1, 0, 0x1234, T0);
    let t = at(T0, 0);
    out(&mut pit, CONTROL_WORD, 0x40, t); // latch 0x1234
    assert_eq!(inb(&mut pit, COUNTER1, t), 0x34); // read LSB
    out(&mut pit, COUNTER1, 0x78, t); // write LSB (mode 0: counting stops)
    assert_eq!(inb(&mut pit, COUNTER1, t), 0x12); // read MSB of the latch
    out(&mut pit, COUNTER1, 0x56, t); // write MSB: count 0x5678
    assert_eq!(latched_count(&mut pit, Counter::Counter1, t), 0x5678);
}

#[test]
fn read_back_latches_status_first_then_count_for_several_counters() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter0, 2, 100, T0);
    out(&mut pit, CONTROL_WORD, 0x3A, T0); // counter 0, LSB then MSB, mode 5 (101), binary
    out(&mut pit, CONTROL_WORD, 0xC6, at(T0, 1)); // read-back: count and status, counters 0 and 1
                                                  // Counter 0 was reprogrammed (mode 5, no count): OUT high, NULL COUNT, RW 11, M 101.
    assert_eq!(inb(&mut pit, COUNTER0, at(T0, 2)), 0b1111_1010);
    assert_eq!(inb(&mut pit, COUNTER0, at(T0, 2)), 100, "LSB of the element, held since the control word");
    assert_eq!(inb(&mut pit, COUNTER0, at(T0, 2)), 0);
    // Counter 1 at power-on: OUT low (mode 0), NULL COUNT, RW 11, mode 0, binary.
    assert_eq!(inb(&mut pit, COUNTER1, at(T0, 2)), 0b0111_0000);
    out(&mut pit, CONTROL_WORD, 0xE2, at(T0, 3)); // read-back: status only, counter 0
    out(&mut pit, CONTROL_WORD, 0xE2, at(T0, 4)); // ignored: the status is unread
    assert_eq!(inb(&mut pit, COUNTER0, at(T0, 5)), 0b1111_1010);
    assert_eq!(inb(&mut pit, COUNTER1, at(T0, 5)), 0, "counter 1's latched count, LSB");
}

#[test]
fn status_shows_modes_6_and_7_as_written_and_null_count_until_loaded() {
    let mut pit = Pit::default();
    out(&mut pit, CONTROL_WORD, 0x7E, T0); // counter 1, LSB then MSB, mode 7 (square wave), binary
    out(&mut pit, CONTROL_WORD, 0xE4, T0); // read-back status of counter 1
    assert_eq!(inb(&mut pit, COUNTER1, T0), 0b1111_1110, "OUT high, NULL COUNT, RW 11, M 111");
    out(&mut pit, COUNTER1, 10, T0); // LSB
    out(&mut pit, COUNTER1, 0, T0); // MSB: loaded at once
    out(&mut pit, CONTROL_WORD, 0xE4, T0);
    assert_eq!(inb(&mut pit, COUNTER1, T0) & 0x40, 0, "NULL COUNT clear once loaded");
    assert!(!pit.output(Counter::Counter1, at(T0, 5)), "mode 7 is mode 3");
}

#[test]
fn mode2_count_written_while_counting_takes_over_at_the_end_of_the_period() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter0, 2, 100, T0);
    let _ = pit.advance(T0);
    let t1 = at(T0, 30);
    out(&mut pit, COUNTER0, 50, t1); // LSB of 50
    out(&mut pit, COUNTER0, 0, t1); // MSB: waits for the reload at clock 100
    out(&mut pit, CONTROL_WORD, 0xE2, t1); // read-back status of counter 0
    assert_ne!(inb(&mut pit, COUNTER0, t1) & 0x40, 0, "NULL COUNT until the reload");
    assert_eq!(latched_count(&mut pit, Counter::Counter0, at(T0, 99)), 1, "old count runs out");
    assert_eq!(latched_count(&mut pit, Counter::Counter0, at(T0, 100)), 50);
    assert_eq!(pit.next_deadline(t1), Some(at(T0, 100)));
    assert_eq!(pit.advance(at(T0, 100)), 1);
    assert_eq!(pit.next_deadline(at(T0, 100)), Some(at(T0, 150)));
    assert_eq!(pit.advance(at(T0, 250)), 3);
}

#[test]
fn mode3_count_written_while_counting_takes_over_at_the_end_of_the_half_period() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter0, 3, 100, T0);
    let _ = pit.advance(T0);
    let t1 = at(T0, 10);
    out(&mut pit, COUNTER0, 20, t1); // LSB of 20
    out(&mut pit, COUNTER0, 0, t1); // MSB: takes over at clock 50, the end of the high half
    assert!(pit.output(Counter::Counter0, at(T0, 49)));
    assert!(!pit.output(Counter::Counter0, at(T0, 50)), "low half of the new count");
    assert_eq!(latched_count(&mut pit, Counter::Counter0, at(T0, 50)), 20);
    assert_eq!(pit.next_deadline(t1), Some(at(T0, 60)), "low for 10 clocks");
    assert_eq!(pit.advance(at(T0, 100)), 3, "rises at 60, 80, 100");
}

#[test]
fn control_word_resets_access_state_and_stops_until_a_count_is_written() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter0, 2, 1000, T0);
    let t1 = at(T0, 10);
    out(&mut pit, COUNTER0, 0x11, t1); // a stray LSB: the write flip-flop now expects the MSB
    assert_eq!(inb(&mut pit, COUNTER0, t1), (990u16).to_le_bytes()[0]); // read flip-flop at MSB
    out(&mut pit, CONTROL_WORD, 0x34, t1); // reprogram counter 0: mode 2
    let _ = pit.advance(t1);
    assert_eq!(pit.next_deadline(t1), None, "stopped until the count");
    assert_eq!(latched_count(&mut pit, Counter::Counter0, at(T0, 500)), 990, "element held");
    out(&mut pit, COUNTER0, 0x64, at(T0, 600)); // LSB of 100: the flip-flop was reset
    out(&mut pit, COUNTER0, 0x00, at(T0, 600)); // MSB
    assert_eq!(pit.next_deadline(at(T0, 600)), Some(at(at(T0, 600), 100)));
}

#[test]
fn control_word_raising_out0_is_an_irq0_edge_and_asks_to_rearm() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter0, 0, 1000, T0);
    assert_eq!(pit.advance(T0), 0, "mode 0 OUT stays low");
    let effects = out(&mut pit, CONTROL_WORD, 0x36, at(T0, 5)); // counter 0, mode 3
    assert!(effects.rearm);
    assert_eq!(pit.next_deadline(at(T0, 5)), Some(at(T0, 5)), "an edge is waiting");
    assert_eq!(pit.advance(at(T0, 5)), 1);
    assert!(!out(&mut pit, CONTROL_WORD, 0x76, T0).rearm, "counter 1 is not IRQ0");
}

// ----- port 0x61 and the bus ------------------------------------------------------------------

#[test]
fn port_61_reads_only_the_pit_bits_and_the_refresh_toggle_flips_every_18_clocks() {
    let mut pit = Pit::default();
    out(&mut pit, NMI_SC, 0xFF, 0); // every bit; only gate 2 and speaker data are taken
    assert_eq!(inb(&mut pit, NMI_SC, 0), 0b0000_0011, "gate 2, speaker data; OUT2 low (mode 0, no count)");
    assert_eq!(inb(&mut pit, NMI_SC, 0) & 0xCC, 0, "bits 2, 3, 6, 7 belong to the VMM");
    let toggles: Vec<bool> =
        [0, 17, 18, 35, 36].iter().map(|&t| inb(&mut pit, NMI_SC, at(0, t)) & 0x10 != 0).collect();
    assert_eq!(toggles, [false, false, true, true, false]);
    out(&mut pit, NMI_SC, 0x02, 0); // speaker data on, gate 2 off
    assert_eq!(inb(&mut pit, NMI_SC, 0) & 0x03, 0x02);
}

#[test]
fn wide_and_unknown_accesses_get_defined_answers_and_errors() {
    let mut pit = Pit::default();
    let effects = pit.pio_write(COUNTER0, &[0x34, 0x12], T0); // 16-bit outw: 0x40 and 0x41
    assert_eq!(effects.invalid, Some(AccessError::Width(2)));
    assert!(effects.rearm);
    let mut word = [0u8; 2];
    let effects = pit.pio_read(CONTROL_WORD, &mut word, T0); // 0x43 and 0x44
    assert_eq!(effects.invalid, Some(AccessError::Width(2)));
    assert_eq!(word, [0xFF, 0xFF]);
    assert_eq!(pit.pio_write(COUNTER0, &[], T0).invalid, Some(AccessError::Width(0)));
    assert_eq!(
        pit.read(CONTROL_WORD, T0),
        (0xFF, Effects { rearm: false, invalid: Some(AccessError::ReadOfControlWord) })
    );
    assert_eq!(pit.read(0x44, T0).0, 0xFF);
    assert_eq!(pit.write(0x60, 1, T0).invalid, Some(AccessError::UnknownPort(0x60)));
}

#[test]
fn every_byte_at_every_port_and_extreme_times_never_panic() {
    let mut pit = Pit::default();
    for now in [0, 1, T0, u64::MAX / 2, u64::MAX - 1, u64::MAX, 3] {
        for port in [0x40, 0x41, 0x42, 0x43, 0x61, 0x62] {
            for value in 0..=255u8 {
                let _ = pit.write(port, value, now);
                let _ = pit.read(port, now);
                let _ = pit.next_deadline(now);
            }
        }
        let _ = pit.advance(now);
    }
    pit.restore(&pit.state()).unwrap();
}

// ----- state ----------------------------------------------------------------------------------

#[test]
fn restore_of_state_is_identity_and_invalid_states_are_refused() {
    let mut pit = Pit::default();
    linux_periodic_tick(&mut pit, T0);
    linux_calibrate_setup(&mut pit, 1000, T0);
    let saved = pit.state();
    let mut other = Pit::default();
    other.restore(&saved).unwrap();
    assert_eq!(other, pit);
    assert_eq!(other.next_deadline(T0), pit.next_deadline(T0));

    let mut bad = saved;
    bad.channels[0].gate = false;
    assert!(matches!(other.restore(&bad), Err(StateError::Inconsistent { counter: Counter::Counter0, .. })));
    let mut bad = saved;
    bad.channels[1].mode = 8;
    assert_eq!(other.restore(&bad), Err(StateError::Mode { counter: Counter::Counter1, value: 8 }));
    let mut bad = saved;
    bad.channels[2].gate = false; // counter 2 counting in mode 0 with the gate low
    assert!(other.restore(&bad).is_err());
    let mut bad = saved;
    bad.channels[1].access = Access::Lsb;
    bad.channels[1].read_msb_next = true;
    assert!(other.restore(&bad).is_err());
    assert_eq!(other, pit, "a refused state leaves the PIT unchanged");
}

#[test]
fn default_is_power_on_with_counter2_gated_off() {
    let mut pit = Pit::default();
    assert_eq!(inb(&mut pit, NMI_SC, 0), 0);
    assert_eq!(pit.next_deadline(0), None);
    out(&mut pit, CONTROL_WORD, 0xE2, 0); // read-back status of counter 0
    assert_eq!(inb(&mut pit, COUNTER0, 0), 0b0111_0000, "OUT low, NULL COUNT, LSB then MSB, mode 0");
    pit.reset();
    assert_eq!(pit, Pit::new());
}

#[cfg(feature = "serde")]
#[test]
fn state_survives_serialization_and_still_validates_on_restore() {
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter0, 3, 500, T0);
    out(&mut pit, COUNTER0, 7, at(T0, 3)); // deferred reload pending
    let json = serde_json::to_string(&pit.state()).unwrap();
    let back: PitState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, pit.state());
    let tampered = json.replacen("\"mode\":3", "\"mode\":9", 1);
    let bad: PitState = serde_json::from_str(&tampered).unwrap();
    assert!(matches!(pit.restore(&bad), Err(StateError::Mode { value: 9, .. })));
}

#[test]
fn state_moved_to_another_host_clock_keeps_the_tick_going() {
    let mut pit = Pit::default();
    linux_periodic_tick(&mut pit, T0);
    let saved_at = T0 + 25_000_000; // 2.5 periods in
    pit.advance(saved_at);
    let state = pit.state();
    // The new host's clock reads 10 s at the instant the old one read `saved_at`.
    let now = 10_000_000_000;
    let mut moved = Pit::default();
    moved.restore(&state.moved(saved_at, now)).unwrap();
    let old_next = pit.next_deadline(saved_at).unwrap();
    assert_eq!(moved.next_deadline(now), Some(now + (old_next - saved_at)));
    assert_eq!(moved.advance(now + 1_000_000_000), 100, "one second: 100 edges, no freeze, no replay");
}

#[test]
fn count_written_with_an_earlier_clock_reading_still_restores() {
    // Two vCPUs can read the clock before taking the PIT lock, so `now` may step back.
    let mut pit = Pit::default();
    program(&mut pit, Counter::Counter0, 2, 100, T0);
    out(&mut pit, COUNTER0, 50, T0 + 10_000); // LSB: the reload waits for the period's end
    out(&mut pit, COUNTER0, 0, T0 + 200_000);
    out(&mut pit, COUNTER0, 50, T0 + 1_000); // earlier than the previous write
    let mut copy = Pit::default();
    assert_eq!(copy.restore(&pit.state()), Ok(()));
}

#[test]
fn huge_wide_access_wraps_the_port_instead_of_panicking() {
    let mut pit = Pit::default();
    let data = std::vec![0u8; 70_000];
    assert_eq!(pit.pio_write(0xFFF0, &data, T0).invalid, Some(AccessError::Width(u16::MAX)));
    let mut buf = std::vec![0u8; 70_000];
    let _ = pit.pio_read(0, &mut buf, T0);
}

#[test]
fn restored_run_whose_origin_lies_ahead_rises_where_next_deadline_says() {
    let mut pit = Pit::new();
    program(&mut pit, Counter::Counter0, 2, 100, 0);
    pit.advance(0); // the control word's OUT0 edge
    let mut state = pit.state();
    state.channels[0].phase = Phase::Counting(Counting {
        start_ns: 0,
        origin_tick: 1_000_000,
        origin_position: 0,
        reload_at: None,
    });
    pit.restore(&state).unwrap();
    let t = pit.next_deadline(0).unwrap();
    assert_eq!(pit.clone().advance(t - 1), 0);
    assert_eq!(pit.advance(t), 1, "the edge is where next_deadline put it");
}
