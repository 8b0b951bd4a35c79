//! The arithmetic of the generic timer on plain integers: the timer condition, TVAL, the
//! distance to CVAL, tick↔ns conversion and the event stream. Counts are `u64` and every `+`/`−`
//! on counts is modulo 2^64, as in the architecture.

/// Nanoseconds per second.
pub(crate) const NS_PER_SEC: u64 = 1_000_000_000;

/// Largest tick count whose `ticks · 10^9 + (2^32 − 1)` fits in a `u64` (the fast path of
/// [`ticks_to_ns_ceil`]).
const FAST_TICKS_MAX: u64 = (u64::MAX - u32::MAX as u64) / NS_PER_SEC;

/// The timer condition: `count − CVAL ≥ 0` with both zero-extended, i.e. the unsigned 64-bit
/// compare `count ≥ CVAL` (a wrapping signed difference would be wrong near 2^63).
#[inline]
pub(crate) const fn condition_met(count: u64, cval: u64) -> bool {
    count >= cval
}

/// A TVAL read: `lo32(CVAL − count)`, zero-extended to 64 bits (bits 63:32 read as zero).
/// As an `i32` it counts down through zero into negatives once the timer has expired.
#[inline]
pub(crate) const fn tval(cval: u64, count: u64) -> u64 {
    cval.wrapping_sub(count) & 0xffff_ffff
}

/// The CVAL a TVAL write sets: `count + sext32(value)`; bits 63:32 of `value` are ignored.
#[inline]
pub(crate) const fn cval_from_tval(count: u64, value: u64) -> u64 {
    count.wrapping_add(value as u32 as i32 as i64 as u64)
}

/// Ticks until `count` reaches `cval`, or `None` when the condition is already met.
#[inline]
pub(crate) const fn ticks_until(count: u64, cval: u64) -> Option<u64> {
    if condition_met(count, cval) {
        None
    } else {
        // count < cval, so this does not wrap.
        Some(cval.wrapping_sub(count))
    }
}

/// `ceil(ticks · 10^9 / frequency)`, saturating at `u64::MAX`: the fewest nanoseconds after which
/// a counter running at `frequency` Hz has advanced by at least `ticks`. Exact (128-bit product)
/// and never early. A `frequency` of 0 gives `u64::MAX`.
#[inline]
pub(crate) fn ticks_to_ns_ceil(ticks: u64, frequency: u32) -> u64 {
    let f = u64::from(frequency);
    if ticks <= FAST_TICKS_MAX {
        // ticks · 10^9 + f − 1 fits in a u64 here.
        let num = ticks.wrapping_mul(NS_PER_SEC).wrapping_add(f.wrapping_sub(1));
        num.checked_div(f).unwrap_or(u64::MAX)
    } else {
        let num = u128::from(ticks).wrapping_mul(u128::from(NS_PER_SEC)).wrapping_add(u128::from(f));
        let q = num.wrapping_sub(1).checked_div(u128::from(f)).unwrap_or(u128::MAX);
        u64::try_from(q).unwrap_or(u64::MAX)
    }
}

/// `floor(ns · frequency / 10^9)`, saturating at `u64::MAX`: the ticks a counter running at
/// `frequency` Hz has counted `ns` nanoseconds after it read zero.
#[inline]
pub(crate) fn ns_to_ticks_floor(ns: u64, frequency: u32) -> u64 {
    let q = u128::from(ns).wrapping_mul(u128::from(frequency)).checked_div(u128::from(NS_PER_SEC));
    u64::try_from(q.unwrap_or(0)).unwrap_or(u64::MAX)
}

/// The event stream watches bit `bit` (0–23) of the virtual count: the count values at which
/// an event fires are those `≡ residue (mod 2^(bit+1))`, where the residue is `2^bit` for the
/// 0→1 transition and 0 for the 1→0 transition (which includes the wrap past 2^64 − 1).
#[inline]
const fn event_period_and_residue(bit: u32, falling: bool) -> (u64, u64) {
    // bit ≤ 23, so neither shift overflows.
    let period = 1u64 << (bit & 63).wrapping_add(1);
    let residue = if falling { 0 } else { 1u64 << (bit & 63) };
    (period, residue)
}

/// Ticks from virtual count `vcount` to the next event of the stream (always ≥ 1: an event at
/// `vcount` itself has already happened).
#[inline]
pub(crate) const fn ticks_to_next_event(vcount: u64, bit: u32, falling: bool) -> u64 {
    let (period, residue) = event_period_and_residue(bit, falling);
    let mask = period.wrapping_sub(1);
    (residue.wrapping_sub(vcount).wrapping_sub(1) & mask).wrapping_add(1)
}

/// Number of events of the stream at virtual counts in `(vcount, vcount + ticks]`, the count
/// treated as an unbounded integer from `vcount` (so a wrap past 2^64 − 1 is a 1→0 transition).
pub(crate) fn events_in(vcount: u64, ticks: u64, bit: u32, falling: bool) -> u64 {
    let (period, residue) = event_period_and_residue(bit, falling);
    // Events at values ≤ x: those k·period + residue ≤ x, k ≥ 0.
    let upto = |x: u128| -> u128 {
        match x.checked_sub(u128::from(residue)) {
            Some(d) => d.checked_div(u128::from(period)).unwrap_or(0).wrapping_add(1),
            None => 0,
        }
    };
    let start = u128::from(vcount);
    let end = start.wrapping_add(u128::from(ticks));
    u64::try_from(upto(end).wrapping_sub(upto(start))).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_is_an_unsigned_compare_not_a_signed_difference() {
        // A signed (count − cval) ≥ 0 test would say "met" here.
        assert!(!condition_met(1 << 63, 0xffff_ffff_ffff_fff0));
        assert!(condition_met(u64::MAX, u64::MAX));
        assert!(condition_met(0, 0));
        assert!(!condition_met(0, 1));
    }

    #[test]
    fn tval_write_sign_extends_the_low_32_bits_and_ignores_the_high_ones() {
        assert_eq!(cval_from_tval(100, 0x1_ffff_ffff), 99);
        assert_eq!(cval_from_tval(100, 0xffff_ffff), 99);
        assert_eq!(cval_from_tval(0, 0x8000_0000), (-(1i64 << 31)) as u64);
        assert_eq!(cval_from_tval(5, 0x7fff_ffff), 5 + 0x7fff_ffff);
        assert_eq!(cval_from_tval(u64::MAX, 1), 0);
    }

    #[test]
    fn tval_read_is_the_low_32_bits_of_the_distance() {
        assert_eq!(tval(10, 11), 0xffff_ffff);
        assert_eq!(tval(0, 1), 0xffff_ffff);
        assert_eq!(tval(1 << 33, 0), 0);
        assert_eq!(tval(u64::MAX, 0), 0xffff_ffff);
    }

    #[test]
    fn ticks_to_ns_rounds_up_and_saturates() {
        assert_eq!(ticks_to_ns_ceil(0, 24_000_000), 0);
        assert_eq!(ticks_to_ns_ceil(1, 24_000_000), 42); // 41.67 ns
        assert_eq!(ticks_to_ns_ceil(24_000_000, 24_000_000), NS_PER_SEC);
        assert_eq!(ticks_to_ns_ceil(1, 1), NS_PER_SEC);
        assert_eq!(ticks_to_ns_ceil(u64::MAX, 1), u64::MAX);
        assert_eq!(ticks_to_ns_ceil(1, u32::MAX), 1);
        // Δ·10^9 overflows u64 but the result does not.
        let big = 20_000_000_000u64;
        assert_eq!(ticks_to_ns_ceil(big, 1_000_000_000), big);
        assert_eq!(ticks_to_ns_ceil(u64::MAX, u32::MAX), 4_294_967_297_000_000_000);
        assert_eq!(ticks_to_ns_ceil(5, 0), u64::MAX);
    }

    #[test]
    fn ns_to_ticks_rounds_down_and_saturates() {
        assert_eq!(ns_to_ticks_floor(41, 24_000_000), 0);
        assert_eq!(ns_to_ticks_floor(42, 24_000_000), 1);
        assert_eq!(ns_to_ticks_floor(u64::MAX, u32::MAX), u64::MAX);
        assert_eq!(ns_to_ticks_floor(u64::MAX, 1), u64::MAX / NS_PER_SEC);
    }

    #[test]
    fn next_event_is_the_next_selected_transition_of_the_bit() {
        // Bit 0 rising: odd counts.
        assert_eq!(ticks_to_next_event(0, 0, false), 1);
        assert_eq!(ticks_to_next_event(1, 0, false), 2);
        // Bit 3 falling: multiples of 16, including the wrap.
        assert_eq!(ticks_to_next_event(0, 3, true), 16);
        assert_eq!(ticks_to_next_event(15, 3, true), 1);
        assert_eq!(ticks_to_next_event(u64::MAX, 3, true), 1);
        assert_eq!(ticks_to_next_event(u64::MAX, 23, false), 1 + (1 << 23));
    }

    #[test]
    fn events_in_counts_transitions_including_the_wrap() {
        assert_eq!(events_in(0, 16, 3, true), 1);
        assert_eq!(events_in(0, 15, 3, true), 0);
        assert_eq!(events_in(u64::MAX, 1, 3, true), 1);
        assert_eq!(events_in(7, 1, 3, false), 1);
        assert_eq!(events_in(8, 16, 3, false), 1);
        assert_eq!(events_in(0, u64::MAX, 0, false), 1 << 63);
    }
}
