//! Property tests Q1–Q6 of the 8254 PIT (`reference/timers.md` §4.1), through the public
//! port interface only. The reference for counts and OUT is a clock-by-clock simulation of
//! the datasheet's mode descriptions, written independently of the model's closed forms.

use proptest::prelude::*;
use vm_timer::pit::regs::{Counter, CLOCK_HZ, CONTROL_WORD, COUNTER0, COUNTER1, COUNTER2, NMI_SC};
use vm_timer::pit::Pit;

/// The first host ns at which `ticks` PIT clocks have elapsed since `start`.
fn at(start: u64, ticks: u64) -> u64 {
    let hz = u128::from(CLOCK_HZ);
    start + u64::try_from((u128::from(ticks) * 1_000_000_000).div_ceil(hz)).unwrap()
}

/// The last host ns of clock `ticks` (one before the next clock begins).
fn last_ns_of(start: u64, ticks: u64) -> u64 {
    at(start, ticks + 1) - 1
}

fn out(pit: &mut Pit, port: u16, value: u8, now: u64) {
    let effects = pit.write(port, value, now);
    assert_eq!(effects.invalid, None);
}

fn inb(pit: &mut Pit, port: u16, now: u64) -> u8 {
    pit.read(port, now).0
}

/// Counter latch command, then LSB and MSB (LSB-then-MSB access).
fn latched(pit: &mut Pit, counter: Counter, now: u64) -> u16 {
    out(pit, CONTROL_WORD, (counter as u8) << 6, now); // SC = counter, RW = 00: latch
    u16::from_le_bytes([inb(pit, counter.port(), now), inb(pit, counter.port(), now)])
}

/// Read-back of `counter`'s status byte.
fn status(pit: &mut Pit, counter: Counter, now: u64) -> u8 {
    out(pit, CONTROL_WORD, 0xE0 | (2 << counter as u8), now); // read-back: status only
    inb(pit, counter.port(), now)
}

fn to_bcd(value: u32) -> u16 {
    let d = |div: u32| ((value / div) % 10) as u16;
    (d(1000) << 12) | (d(100) << 8) | (d(10) << 4) | d(1)
}

/// The datasheet's counter, one CLK at a time. `ce` is the counting element as a number
/// (an initial count of 0 is held as the full count, 65536 or 10000).
struct Sim {
    mode: u8,
    n: u32,
    modulus: u32,
    ce: u32,
    out: bool,
    /// Modes 4/5: the strobe has happened. Mode 3 odd: the count expired in the high half.
    flag: bool,
}

impl Sim {
    /// The count is loaded (modes 0, 2, 3, 4: the write; modes 1, 5: the trigger).
    fn load(mode: u8, n: u32, modulus: u32) -> Sim {
        let mode = if mode >= 6 { mode - 4 } else { mode };
        let (ce, out) = match mode {
            0 | 1 => (n, false),
            2 => (n, n != 1),
            3 if n % 2 == 1 => (n - 1, true),
            _ => (n, true),
        };
        Sim { mode, n, modulus, ce, out, flag: false }
    }

    fn dec(&self, by: u32) -> u32 {
        (self.ce + self.modulus - by) % self.modulus
    }

    fn clock(&mut self) {
        match self.mode {
            0 | 1 => {
                self.ce = self.dec(1);
                self.out |= self.ce == 0;
            }
            2 => {
                self.ce -= 1;
                if self.ce == 0 {
                    self.ce = self.n;
                }
                self.out = self.ce != 1;
            }
            3 if self.n == 1 => {} // illegal count: the model documents OUT high, element 0
            3 if self.n % 2 == 0 => {
                self.ce -= 2;
                if self.ce == 0 {
                    self.out = !self.out;
                    self.ce = self.n;
                }
            }
            3 => {
                // Odd: N−1 is loaded; one CLK after the count expires in the high half OUT
                // goes low and N−1 is reloaded; when it expires in the low half OUT goes high
                // at once and N−1 is reloaded.
                if self.flag {
                    self.flag = false;
                    self.out = false;
                    self.ce = self.n - 1;
                } else {
                    self.ce -= 2;
                    if self.ce == 0 {
                        if self.out {
                            self.flag = true;
                        } else {
                            self.out = true;
                            self.ce = self.n - 1;
                        }
                    }
                }
            }
            _ => {
                self.ce = self.dec(1);
                self.out = self.ce != 0 || self.flag; // low for the first clock at 0 only
                self.flag |= self.ce == 0;
            }
        }
    }

    fn read(&self) -> u16 {
        let v = self.ce % self.modulus;
        if self.modulus == 10_000 {
            to_bcd(v)
        } else {
            v as u16
        }
    }
}

/// Programs counter 2 (LSB then MSB) so that its count is loaded at `start`: the gate is
/// raised before the count for modes 0, 2, 3, 4 and is the trigger at `start` for 1 and 5.
fn start_counter2(pit: &mut Pit, mode: u8, bcd: bool, raw: u16, start: u64) {
    let triggered = matches!(mode, 1 | 5);
    out(pit, NMI_SC, u8::from(!triggered), start); // gate 2 high unless it is the trigger
    out(pit, CONTROL_WORD, 0xB0 | (mode << 1) | u8::from(bcd), start); // counter 2, LSB then MSB
    out(pit, COUNTER2, raw.to_le_bytes()[0], start); // LSB
    out(pit, COUNTER2, raw.to_le_bytes()[1], start); // MSB
    if triggered {
        out(pit, NMI_SC, 0x01, start); // gate 2 rising edge: the trigger
    }
}

/// The counts of the edge list (0, 1, 2, 3, 0xffff and BCD 9999), and small ones.
fn count_value(bcd: bool) -> impl Strategy<Value = u32> {
    let top = if bcd { 9999u32 } else { 0xFFFF };
    prop_oneof![Just(0u32), Just(1), Just(2), Just(3), Just(top), 4u32..40, 40u32..300]
}

fn mode_count() -> impl Strategy<Value = (u8, bool, u32)> {
    (0u8..8, any::<bool>()).prop_flat_map(|(mode, bcd)| (Just(mode), Just(bcd), count_value(bcd)))
}

fn raw_count(bcd: bool, value: u32) -> u16 {
    if bcd {
        to_bcd(value)
    } else {
        value as u16
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Q1: count reads and OUT, clock by clock, match the datasheet simulation in every mode
    /// (6 and 7 included), binary and BCD, at the first and last nanosecond of each clock.
    #[test]
    fn q1_count_and_out_follow_the_datasheet_clock_by_clock(
        (mode, bcd, value) in mode_count(),
        start in 0u64..(1 << 50),
    ) {
        let mut pit = Pit::default();
        start_counter2(&mut pit, mode, bcd, raw_count(bcd, value), start);
        let modulus = if bcd { 10_000 } else { 65_536 };
        let n = if value == 0 { modulus } else { value };
        let mut sim = Sim::load(mode, n, modulus);
        let span = u64::from(n) * 2 + 3;
        for tick in 0..span {
            let near_start_or_end = tick < 300 || tick + 300 > span || (u64::from(n) + 2).abs_diff(tick) < 300;
            if near_start_or_end || tick % 997 == 0 {
                for now in [at(start, tick), last_ns_of(start, tick)] {
                    prop_assert_eq!(latched(&mut pit, Counter::Counter2, now), sim.read(), "count at clock {}", tick);
                    prop_assert_eq!(status(&mut pit, Counter::Counter2, now) & 0x80 != 0, sim.out, "status OUT at clock {}", tick);
                    prop_assert_eq!(inb(&mut pit, NMI_SC, now) & 0x20 != 0, sim.out, "0x61 bit 5 at clock {}", tick);
                }
            }
            sim.clock();
        }
    }

    /// Q1 for IRQ0: counter 0's rising edges counted by `advance` and the instants of
    /// `next_deadline` are those of the simulated OUT, never early and never late.
    #[test]
    fn q1_irq0_edges_and_deadlines_follow_the_simulated_out(
        mode in prop_oneof![Just(0u8), Just(2), Just(3), Just(4), Just(6), Just(7)],
        value in prop_oneof![Just(0u32), Just(1), Just(2), Just(3), 4u32..200],
        start in 0u64..(1 << 50),
    ) {
        let mut pit = Pit::default();
        out(&mut pit, CONTROL_WORD, 0x30 | (mode << 1), start); // counter 0, LSB then MSB, binary
        let _ = pit.advance(start); // the control word's own edge, if any
        out(&mut pit, COUNTER0, (value as u16).to_le_bytes()[0], start); // LSB
        out(&mut pit, COUNTER0, (value as u16).to_le_bytes()[1], start); // MSB
        let n = if value == 0 { 65_536 } else { value };
        let mut sim = Sim::load(mode, n, 65_536);
        let mut level = sim.out;
        let mut rises = Vec::new();
        for tick in 1..=(3 * u64::from(n.min(400)) + 5) {
            sim.clock();
            if sim.out && !level {
                rises.push(tick);
            }
            level = sim.out;
        }
        let mut now = start;
        for &tick in &rises {
            let deadline = pit.next_deadline(now);
            prop_assert_eq!(deadline, Some(at(start, tick)));
            prop_assert_eq!(pit.advance(at(start, tick) - 1), 0, "early at clock {}", tick);
            prop_assert_eq!(pit.advance(at(start, tick)), 1, "edge at clock {}", tick);
            now = at(start, tick);
        }
        if let Some(next) = pit.next_deadline(now) {
            prop_assert!(next > at(start, 3 * u64::from(n.min(400)) + 5), "an edge the simulation lacks");
        }
    }

    /// Q2: a latched count holds across time until fully read, and a second latch command
    /// (or read-back count latch) before then is ignored.
    #[test]
    fn q2_latch_holds_across_time_and_a_second_latch_is_ignored(
        (mode, bcd, value) in mode_count(),
        start in 0u64..(1 << 50),
        dt in prop::array::uniform4(0u64..5_000_000),
        second_is_read_back in any::<bool>(),
    ) {
        let mut pit = Pit::default();
        start_counter2(&mut pit, mode, bcd, raw_count(bcd, value), start);
        let t_latch = start + dt[0];
        let expected = {
            let mut fresh = pit.clone();
            let now = t_latch;
            u16::from_le_bytes([inb(&mut fresh, COUNTER2, now), inb(&mut fresh, COUNTER2, now)])
        };
        out(&mut pit, CONTROL_WORD, 0x80, t_latch); // latch counter 2
        let second = if second_is_read_back { 0xD8 } else { 0x80 }; // read-back count of 2, or latch
        out(&mut pit, CONTROL_WORD, second, t_latch + dt[1]);
        let lsb = inb(&mut pit, COUNTER2, t_latch + dt[1] + dt[2]);
        out(&mut pit, CONTROL_WORD, second, t_latch + dt[1] + dt[2]); // ignored: MSB unread
        let msb = inb(&mut pit, COUNTER2, t_latch + dt[1] + dt[2] + dt[3]);
        prop_assert_eq!(u16::from_le_bytes([lsb, msb]), expected);
        // Released: the next latch takes the element anew.
        let later = t_latch + dt[1] + dt[2] + dt[3];
        let live = {
            let mut fresh = pit.clone();
            u16::from_le_bytes([inb(&mut fresh, COUNTER2, later), inb(&mut fresh, COUNTER2, later)])
        };
        prop_assert_eq!(latched(&mut pit, Counter::Counter2, later), live);
    }

    /// Q3: the read and write flip-flops toggle independently in LSB-then-MSB access; LSB-only
    /// and MSB-only access never toggle. Checked on a mode-0 counter with no clock elapsing,
    /// against a two-flip-flop reference.
    #[test]
    fn q3_read_and_write_byte_flip_flops_toggle_independently(
        access in 1u8..4,
        ops in prop::collection::vec(prop::option::of(any::<u8>()), 1..40),
        now in 0u64..(1 << 50),
    ) {
        let mut pit = Pit::default();
        out(&mut pit, CONTROL_WORD, 0x40 | (access << 4), now); // counter 1, mode 0, binary
        let (mut element, mut write_msb, mut read_msb, mut lsb_held) = (0u16, false, false, 0u8);
        for op in ops {
            match op {
                Some(byte) => {
                    out(&mut pit, COUNTER1, byte, now);
                    match access {
                        1 => element = u16::from(byte),
                        2 => element = u16::from(byte) << 8,
                        _ if !write_msb => { lsb_held = byte; write_msb = true; }
                        _ => { element = u16::from_le_bytes([lsb_held, byte]); write_msb = false; }
                    }
                }
                None => {
                    let [lo, hi] = element.to_le_bytes();
                    let expected = match access {
                        1 => lo,
                        2 => hi,
                        _ => { read_msb = !read_msb; if read_msb { lo } else { hi } }
                    };
                    prop_assert_eq!(inb(&mut pit, COUNTER1, now), expected);
                }
            }
        }
    }

    /// Q4: read-back status: D5:D0 are the control word as written, D7 is OUT and D6 is NULL
    /// COUNT (set by the control word, cleared when the count is loaded: at the write in
    /// modes 0, 2, 3, 4, at the trigger in modes 1 and 5); the status reads before the count.
    #[test]
    fn q4_read_back_status_bits(
        counter2 in any::<bool>(),
        access in 1u8..4,
        (mode, bcd, value) in mode_count(),
        write_count in any::<bool>(),
        start in 0u64..(1 << 50),
        dt in 0u64..100_000_000,
    ) {
        let mut pit = Pit::default(); // counter 2's gate is low at power-on, counter 1's high
        let counter = if counter2 { Counter::Counter2 } else { Counter::Counter1 };
        let control = ((counter as u8) << 6) | (access << 4) | (mode << 1) | u8::from(bcd);
        out(&mut pit, CONTROL_WORD, control, start);
        let raw = raw_count(bcd, value);
        if write_count {
            match access {
                1 => out(&mut pit, counter.port(), raw.to_le_bytes()[0], start),
                2 => out(&mut pit, counter.port(), raw.to_le_bytes()[1], start),
                _ => {
                    out(&mut pit, counter.port(), raw.to_le_bytes()[0], start);
                    out(&mut pit, counter.port(), raw.to_le_bytes()[1], start);
                }
            }
        }
        let now = start + dt;
        let waits_for_trigger = matches!(mode, 1 | 5);
        let null_count = !write_count || waits_for_trigger;
        let output = pit.output(counter, now);
        let live = {
            let mut fresh = pit.clone();
            let lo = inb(&mut fresh, counter.port(), now);
            let hi = if access == 3 { inb(&mut fresh, counter.port(), now) } else { 0 };
            (lo, hi)
        };
        out(&mut pit, CONTROL_WORD, 0xC0 | (2 << counter as u8), now); // read-back count and status
        let s = inb(&mut pit, counter.port(), now);
        prop_assert_eq!(s & 0x3F, control & 0x3F);
        prop_assert_eq!(s & 0x80 != 0, output);
        prop_assert_eq!(s & 0x40 != 0, null_count);
        // Idle (no count) mode 0 is low, every other mode starts high.
        if !write_count {
            prop_assert_eq!(output, mode != 0);
        }
        prop_assert_eq!(inb(&mut pit, counter.port(), now + dt), live.0, "then the count");
        if access == 3 {
            prop_assert_eq!(inb(&mut pit, counter.port(), now + dt), live.1);
        }
    }

    /// Q5: count 0 is 65536 (binary) and 10000 (BCD): in one-shot modes it runs exactly one
    /// clock longer than the largest count, and in periodic modes the period is 2^16 / 10^4.
    #[test]
    fn q5_count_zero_is_the_largest_count_plus_one(
        mode in 0u8..8,
        bcd in any::<bool>(),
        start in 0u64..(1 << 50),
        k in prop_oneof![0u64..300, 9_700u64..10_001, 65_200u64..65_537],
    ) {
        let (modulus, top) = if bcd { (10_000u64, 0x9999u16) } else { (65_536, 0xFFFF) };
        let k = k % (modulus + 1);
        let mut zero = Pit::default();
        start_counter2(&mut zero, mode, bcd, 0, start);
        match mode {
            2 | 3 | 6 | 7 => {
                // Periodic with period `modulus`: the same phase one period later.
                let a = latched(&mut zero, Counter::Counter2, at(start, k));
                let b = latched(&mut zero, Counter::Counter2, at(start, k + modulus));
                prop_assert_eq!(a, b);
                prop_assert_eq!(zero.output(Counter::Counter2, at(start, k)), zero.output(Counter::Counter2, at(start, k + modulus)));
                let low_at = if mode % 4 == 2 { modulus - 1 } else { modulus / 2 };
                prop_assert!(!zero.output(Counter::Counter2, at(start, low_at)));
                prop_assert!(zero.output(Counter::Counter2, at(start, low_at - 1)));
            }
            _ => {
                let mut largest = Pit::default();
                start_counter2(&mut largest, mode, bcd, top, start);
                let a = latched(&mut zero, Counter::Counter2, at(start, k + 1));
                let b = latched(&mut largest, Counter::Counter2, at(start, k));
                prop_assert_eq!(a, b, "count 0 at clock k+1 reads as the top count at clock k");
                prop_assert_eq!(zero.output(Counter::Counter2, at(start, k + 1)), largest.output(Counter::Counter2, at(start, k)));
                prop_assert_eq!(latched(&mut zero, Counter::Counter2, at(start, 0)), 0, "0 reads as 0 at the load");
            }
        }
    }

    /// Q6: after any history, a control word resets the byte flip-flops and stops the
    /// counter (element held, OUT at the mode's initial level, NULL COUNT set, no IRQ0 edge)
    /// until a count is written; the count's first byte is then its LSB.
    #[test]
    fn q6_control_word_resets_access_and_stops_until_a_count_is_written(
        history in prop::collection::vec((0u16..5, any::<u8>(), 0u64..2_000_000), 0..30),
        access in 1u8..4,
        mode in 0u8..8,
        count in 2u16..1000,
        start in 0u64..(1 << 50),
        wait in 1u64..100_000_000,
    ) {
        let mut pit = Pit::default();
        let mut now = start;
        for (port, value, dt) in history {
            now += dt;
            match port {
                0 => out(&mut pit, COUNTER0, value, now),
                1 => out(&mut pit, CONTROL_WORD, value & 0x3F, now), // counter 0 commands only
                2 => { let _ = inb(&mut pit, COUNTER0, now); }
                3 => out(&mut pit, CONTROL_WORD, 0x34, now), // counter 0, LSB then MSB, mode 2
                _ => { let _ = pit.advance(now); }
            }
        }
        out(&mut pit, CONTROL_WORD, (access << 4) | (mode << 1), now); // program counter 0
        let _ = pit.advance(now);
        let held = {
            let mut fresh = pit.clone();
            (inb(&mut fresh, COUNTER0, now), inb(&mut fresh, COUNTER0, now))
        };
        let later = now + wait;
        prop_assert_eq!(pit.next_deadline(later), None, "stopped: no IRQ0 deadline");
        prop_assert_eq!(pit.advance(later), 0);
        prop_assert_eq!(pit.output(Counter::Counter0, later), mode != 0);
        let s = status(&mut pit, Counter::Counter0, later);
        prop_assert_eq!(s, 0x40 | (u8::from(mode != 0) << 7) | (access << 4) | (mode << 1));
        let mut fresh = pit.clone();
        prop_assert_eq!((inb(&mut fresh, COUNTER0, later), inb(&mut fresh, COUNTER0, later)), held, "element held");
        // The first data byte is the LSB (LSB-then-MSB) whatever the history left.
        let [lsb, msb] = count.to_le_bytes();
        match access {
            1 => out(&mut pit, COUNTER0, lsb, later),
            2 => out(&mut pit, COUNTER0, msb, later),
            _ => { out(&mut pit, COUNTER0, lsb, later); out(&mut pit, COUNTER0, msb, later); }
        }
        let written = match access { 1 => u16::from(lsb), 2 => u16::from(msb) << 8, _ => count };
        if !matches!(mode, 1 | 5) {
            let element = latched_after(&mut pit, access, later);
            let mode3_odd = matches!(mode, 3 | 7) && written % 2 == 1;
            prop_assert_eq!(element, if mode3_odd { written - 1 } else { written }, "loaded and counting from it");
        }
    }
}

/// Counter 0's latched count read in its access format.
fn latched_after(pit: &mut Pit, access: u8, now: u64) -> u16 {
    out(pit, CONTROL_WORD, 0x00, now); // latch counter 0
    match access {
        1 => u16::from(inb(pit, COUNTER0, now)),
        2 => u16::from(inb(pit, COUNTER0, now)) << 8,
        _ => u16::from_le_bytes([inb(pit, COUNTER0, now), inb(pit, COUNTER0, now)]),
    }
}

#[test]
fn counter1_gate_is_tied_high() {
    let mut pit = Pit::default();
    out(&mut pit, CONTROL_WORD, 0x72, 0); // counter 1, LSB then MSB, mode 1
    out(&mut pit, COUNTER1, 10, 0); // LSB
    out(&mut pit, COUNTER1, 0, 0); // MSB: mode 1 waits for a trigger that never comes
    out(&mut pit, NMI_SC, 0x00, 0); // port 0x61 gates counter 2 only
    out(&mut pit, NMI_SC, 0x01, 0);
    assert!(pit.output(Counter::Counter1, at(0, 100)), "never triggered: OUT stays high");
}
