//! The counter waveforms as pure functions of the position `w` (PIT clocks since the count
//! was loaded into the counting element) and the initial count `n` (1..=65536, or 1..=10000
//! in BCD), and the exact conversions between host nanoseconds and PIT clocks.
//!
//! Position 0 is the load: the counting element holds the initial count and OUT has the level
//! it takes at the load. The datasheet loads on the first CLK after the write; like KVM and
//! QEMU the model takes the write instant itself as that clock edge, so a mode-0 count of `n`
//! raises OUT exactly `n` clocks after the write.

use super::regs::{Mode, CLOCK_HZ};

const NS_PER_S: u128 = 1_000_000_000;

/// Whole PIT clocks in `elapsed_ns` nanoseconds: ⌊elapsed·1193182/10⁹⌋, exact.
#[inline]
pub(crate) fn ns_to_ticks(elapsed_ns: u64) -> u64 {
    let ticks = u128::from(elapsed_ns).wrapping_mul(u128::from(CLOCK_HZ)) / NS_PER_S;
    // At most 2^64·1193182/10⁹ < 2^55: always fits.
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// The first elapsed nanosecond at which [`ns_to_ticks`] reaches `ticks`: ⌈ticks·10⁹/1193182⌉.
/// `None` when that is beyond `u64::MAX` ns.
#[inline]
pub(crate) fn ticks_to_ns_ceil(ticks: u64) -> Option<u64> {
    let hz = u128::from(CLOCK_HZ);
    let ns = u128::from(ticks).wrapping_mul(NS_PER_S).wrapping_add(hz.wrapping_sub(1)).checked_div(hz)?;
    u64::try_from(ns).ok()
}

/// Clocks of the high half of a mode-3 period: ⌈n/2⌉.
#[inline]
pub(crate) fn high_half(n: u32) -> u64 {
    u64::from(n).wrapping_add(1) / 2
}

#[inline]
fn rem(w: u64, n: u32) -> u64 {
    w.checked_rem(u64::from(n)).unwrap_or(0)
}

/// The level of OUT at position `w`.
pub(crate) fn output(mode: Mode, n: u32, w: u64) -> bool {
    let n64 = u64::from(n);
    match mode {
        // Low from the load until terminal count, then high.
        Mode::InterruptOnTerminalCount | Mode::HardwareRetriggerableOneShot => w >= n64,
        // Low for the one clock during which the count is 1. (A count of 1 is illegal in
        // mode 2; by this rule OUT then stays low.)
        Mode::RateGenerator => rem(w, n) != n64.wrapping_sub(1),
        // High for the first ⌈n/2⌉ clocks of each period. (A count of 1 is illegal in mode 3;
        // by this rule OUT then stays high.)
        Mode::SquareWave => rem(w, n) < high_half(n),
        // Low for the one clock during which the count is 0, the first time only.
        Mode::SoftwareTriggeredStrobe | Mode::HardwareTriggeredStrobe => w != n64,
    }
}

/// The counting element at position `w`, as a number below `modulus` (65536 or 10000).
///
/// Modes 0, 1, 4, 5 count down by one and wrap after terminal count. Mode 2 counts n..1 and
/// reloads. Mode 3 follows the 8254 datasheet: even counts load n and count down by two to 2
/// in each half; odd counts load n−1 and count down by two, the high half lasting one extra
/// clock during which the element reads 0.
pub(crate) fn count(mode: Mode, n: u32, w: u64, modulus: u32) -> u32 {
    let m = u64::from(modulus);
    let n64 = u64::from(n);
    let value = match mode {
        Mode::RateGenerator => n64.wrapping_sub(rem(w, n)),
        Mode::SquareWave => {
            let q = rem(w, n);
            let h = high_half(n);
            let into_half = if q < h { q } else { q.wrapping_sub(h) };
            let top = if n % 2 == 0 { n64 } else { n64.wrapping_sub(1) };
            top.wrapping_sub(into_half.wrapping_mul(2))
        }
        _ => n64.checked_rem(m).unwrap_or(0).wrapping_add(m).wrapping_sub(w.checked_rem(m).unwrap_or(0)),
    };
    // Everything above is below 2·m; reduce into the element's range.
    u32::try_from(value.checked_rem(m).unwrap_or(0)).unwrap_or(0)
}

/// How many rising edges OUT makes at positions in `(w1, w2]`.
pub(crate) fn rising_edges(mode: Mode, n: u32, w1: u64, w2: u64) -> u64 {
    if w2 <= w1 {
        return 0;
    }
    let n64 = u64::from(n);
    let once = |at: u64| u64::from(w1 < at && at <= w2);
    match mode {
        Mode::InterruptOnTerminalCount | Mode::HardwareRetriggerableOneShot => once(n64),
        Mode::SoftwareTriggeredStrobe | Mode::HardwareTriggeredStrobe => once(n64.wrapping_add(1)),
        // Rises at every multiple of n (the reload after the low clock, or the start of the
        // high half); with n = 1 OUT never changes.
        Mode::RateGenerator | Mode::SquareWave if n >= 2 => {
            let periods = |w: u64| w.checked_div(n64).unwrap_or(0);
            periods(w2).wrapping_sub(periods(w1))
        }
        Mode::RateGenerator | Mode::SquareWave => 0,
    }
}

/// The first position after `w` at which OUT rises, if any.
pub(crate) fn next_rising_edge(mode: Mode, n: u32, w: u64) -> Option<u64> {
    let n64 = u64::from(n);
    let once = |at: u64| (w < at).then_some(at);
    match mode {
        Mode::InterruptOnTerminalCount | Mode::HardwareRetriggerableOneShot => once(n64),
        Mode::SoftwareTriggeredStrobe | Mode::HardwareTriggeredStrobe => once(n64.wrapping_add(1)),
        Mode::RateGenerator | Mode::SquareWave if n >= 2 => {
            w.checked_div(n64).and_then(|k| k.checked_add(1)).and_then(|k| k.checked_mul(n64))
        }
        Mode::RateGenerator | Mode::SquareWave => None,
    }
}

/// Where a count written during counting in modes 2 and 3 takes over: the first position
/// after `w` that ends a period (mode 2: the reload after OUT's low clock) or a half-period
/// (mode 3).
pub(crate) fn next_reload(mode: Mode, n: u32, w: u64) -> u64 {
    let q = rem(w, n);
    let end = if matches!(mode, Mode::SquareWave) && q < high_half(n) { high_half(n) } else { u64::from(n) };
    w.saturating_add(end.wrapping_sub(q))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_conversion_is_floor_and_its_inverse_is_ceiling() {
        for ticks in [0u64, 1, 2, 11_931, 11_932, 1_193_182, 1 << 40] {
            let ns = ticks_to_ns_ceil(ticks).unwrap();
            assert_eq!(ns_to_ticks(ns), ticks, "reached at {ns}");
            if ns > 0 {
                assert!(ns_to_ticks(ns - 1) < ticks, "not before {ns}");
            }
        }
        assert_eq!(ns_to_ticks(1_000_000_000), CLOCK_HZ);
        assert_eq!(ns_to_ticks(u64::MAX), 22_010_322_987_356_910);
        assert_eq!(ticks_to_ns_ceil(u64::MAX), None);
    }

    #[test]
    fn square_wave_odd_count_is_high_one_clock_longer() {
        let levels: Vec<bool> = (0..10).map(|w| output(Mode::SquareWave, 5, w)).collect();
        assert_eq!(levels, [true, true, true, false, false, true, true, true, false, false]);
        let counts: Vec<u32> = (0..5).map(|w| count(Mode::SquareWave, 5, w, 65536)).collect();
        assert_eq!(counts, [4, 2, 0, 4, 2]);
    }

    extern crate std;
    use std::vec::Vec;
}
