//! Property tests T1–T9 of `reference/timers.md` §4.1 for the x86 TSC model, over random
//! state and time mixed with the numeric edge values of §4.2, checked against rules
//! re-derived here with different arithmetic (64-bit halves, signed 128-bit sums).
//!
//! The deadline rules that belong to the LAPIC (LVTT mode gating, mode switches) are not here:
//! `TscDeadline` is the standalone component the LAPIC will own.

use proptest::prelude::*;
use vm_timer::tsc::{
    host_tsc_ticks_to_ns, GuestTsc, RatioError, ScalingFormat, Tsc, TscDeadline, TscScaling, TscState,
};

const FORMATS: [ScalingFormat; 2] = [ScalingFormat::Vmx, ScalingFormat::Svm];

// ----- strategies ------------------------------------------------------------------------------

/// Host TSC values: the §4.2 edges, small values and anything.
fn host_tsc() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => prop::sample::select(vec![
            0,
            1,
            (1 << 31) - 1,
            1 << 31,
            (1 << 32) - 1,
            1 << 32,
            1 << 48,
            (1 << 56) - 1,
            1 << 60,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ]),
        1 => 0u64..1_000_000,
        3 => any::<u64>(),
    ]
}

/// Offsets: the §4.2 edges (including svm's `~0 << 48` and vmx's `-(1 << 48)`) and anything.
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => prop::sample::select(vec![
            0,
            1,
            (!0u64) << 48,
            (-(1i64 << 48)) as u64,
            (-1i64) as u64,
            1 << 63,
            (1 << 63) - 1,
            1 << 48,
        ]),
        2 => any::<u64>(),
    ]
}

fn format() -> impl Strategy<Value = ScalingFormat> {
    prop::sample::select(FORMATS.to_vec())
}

/// A valid ratio of `format`: 1, default ± 1, max − 1, max, near 1.0, or anything in range.
fn ratio(format: ScalingFormat) -> impl Strategy<Value = u64> {
    let default = format.default_ratio();
    let max = format.max_ratio();
    prop_oneof![
        2 => prop::sample::select(vec![1, 2, default - 1, default, default + 1, max - 1, max]),
        1 => (default - (default >> 4))..(default + (default >> 4)),
        3 => 1..=max,
    ]
}

fn scaling() -> impl Strategy<Value = TscScaling> {
    format().prop_flat_map(|format| ratio(format).prop_map(move |r| TscScaling::new(format, r).unwrap()))
}

fn clock() -> impl Strategy<Value = GuestTsc> {
    (scaling(), offset()).prop_map(|(scaling, offset)| GuestTsc::new(scaling, offset))
}

// ----- independent references ------------------------------------------------------------------

/// `⌊a·b / 2^f⌋ mod 2^64` by schoolbook multiplication on 32-bit halves into two 64-bit words,
/// without 128-bit integers.
fn reference_scale(a: u64, b: u64, frac_bits: u32) -> u64 {
    let (a1, a0) = (a >> 32, a & 0xffff_ffff);
    let (b1, b0) = (b >> 32, b & 0xffff_ffff);
    let low = a0 * b0;
    let mid1 = a1 * b0;
    let mid2 = a0 * b1;
    let high = a1 * b1;
    // Sum the 32-bit columns with explicit carries.
    let col1 = (low >> 32) + (mid1 & 0xffff_ffff) + (mid2 & 0xffff_ffff);
    let lo = (low & 0xffff_ffff) | (col1 << 32);
    let hi = high + (mid1 >> 32) + (mid2 >> 32) + (col1 >> 32);
    if frac_bits == 0 {
        lo
    } else {
        (lo >> frac_bits) | (hi << (64 - frac_bits))
    }
}

/// The untruncated scaled count `⌊h·r/2^f⌋`.
fn wide(scaling: TscScaling, h: u64) -> u128 {
    (u128::from(h) * u128::from(scaling.ratio())) >> scaling.format().frac_bits()
}

/// The first host TSC `h ≥ now` with `guest(h) ≥ d` (plain unsigned compare), or `None`, by
/// walking the guest TSC's wraps: from a host TSC where the guest TSC is below `d`, jump to the
/// first host TSC at which the untruncated guest count `offset + ⌊h·r/2^f⌋` reaches the start
/// of the current wrap's window `[k·2^64 + d, (k+1)·2^64)`, until it lands inside. The count
/// wraps at most `r/2^f + 2 < 2^16 + 2` times over the whole host range, so this ends.
fn walk_wraps(clock: &GuestTsc, d: u64, now: u64) -> Option<u64> {
    let f = clock.scaling.format().frac_bits();
    let r = u128::from(clock.scaling.ratio());
    let count = |h: u64| wide(clock.scaling, h) + u128::from(clock.offset);
    let mut h = now;
    loop {
        let t = count(h);
        if (t & u128::from(u64::MAX)) >= u128::from(d) {
            return Some(h);
        }
        let window = ((t >> 64) << 64) + u128::from(d);
        // ⌊h'·r/2^f⌋ ≥ window − offset ⇔ h' ≥ ⌈(window − offset)·2^f / r⌉; a product beyond
        // 2^128 means h' > 2^64.
        let need = (window - u128::from(clock.offset)).checked_mul(1u128 << f)?;
        let next = u64::try_from(need.div_ceil(r)).ok()?;
        assert!(next > h, "the walk does not advance");
        h = next;
    }
}

/// Ratios that advance the guest TSC by more than one tick per host tick (so that it can
/// step over a narrow window), up to the format's maximum, with the fuzz target's u64::MAX.
fn fast_scaling() -> impl Strategy<Value = TscScaling> {
    format().prop_flat_map(|format| {
        let max = format.max_ratio();
        let low = format.default_ratio() + 1;
        prop_oneof![
            1 => prop::sample::select(vec![max, max - 1, 2 * format.default_ratio(), low]),
            3 => low..=max,
        ]
        .prop_map(move |r| TscScaling::new(format, r).unwrap())
    })
}

/// Deadlines within `2^17` of 2^64 (windows narrower than a step of a fast guest TSC) or any.
fn deadline_near_the_top() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => (0u64..1 << 17).prop_map(|w| u64::MAX - w),
        1 => any::<u64>(),
    ]
}

// ----- T1–T9 -----------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// T1 scaling exactness: the model's scaled TSC equals the floor of the full product,
    /// truncated to 64 bits, computed on 32-bit halves; the ratio 1.0 is the identity.
    #[test]
    fn t1_scaling_is_the_floor_of_the_128_bit_product(s in scaling(), h in host_tsc()) {
        let f = s.format().frac_bits();
        prop_assert_eq!(s.scale(h), reference_scale(h, s.ratio(), f));
        prop_assert_eq!(s.format().scale(h, s.ratio()), reference_scale(h, s.ratio(), f));
        prop_assert_eq!(TscScaling::identity(s.format()).scale(h), h);
        let clock = GuestTsc::new(s, 0);
        prop_assert_eq!(clock.read(h), reference_scale(h, s.ratio(), f));
    }

    /// T2 monotonicity: a later host TSC never gives a smaller guest TSC while the scaled value
    /// fits in 64 bits.
    #[test]
    fn t2_scaling_is_monotonic(s in scaling(), a in host_tsc(), b in host_tsc()) {
        let (h1, h2) = if a <= b { (a, b) } else { (b, a) };
        // Where the scaled value would exceed 64 bits, shrink both until it fits.
        let (h1, h2) = if wide(s, h2) > u128::from(u64::MAX) { (h1 >> 16, h2 >> 16) } else { (h1, h2) };
        prop_assert!(wide(s, h2) <= u128::from(u64::MAX));
        prop_assert!(s.scale(h1) <= s.scale(h2));
        prop_assert!(s.scale(h2.saturating_sub(1)) <= s.scale(h2));
    }

    /// T3 set/read round trip: after setting the TSC to `t` at host `h` (host or guest write),
    /// it reads `t` at `h`, whatever the ratio and previous offset; the offset reads back.
    #[test]
    fn t3_set_then_read_returns_the_value(s in scaling(), o in offset(), t in any::<u64>(), h in host_tsc()) {
        let mut tsc = Tsc::new(s);
        tsc.host_set_offset(o);
        prop_assert_eq!(tsc.offset(), o);
        tsc.host_set_tsc(t, h);
        prop_assert_eq!(tsc.read_tsc(h), t);
        tsc.host_set_offset(o);
        let _ = tsc.guest_write_tsc(t, h);
        prop_assert_eq!(tsc.read_tsc(h), t);
        let clock = GuestTsc::new(s, o);
        prop_assert_eq!(GuestTsc { offset: clock.offset_for(t, h), ..clock }.read(h), t);
    }

    /// T4 TSC_ADJUST coupling over random sequences of writes: a guest IA32_TSC write moves
    /// TSC_ADJUST by exactly the TSC's change, a guest TSC_ADJUST write moves the TSC by exactly
    /// TSC_ADJUST's change, and host writes never couple. (The selftest stages are the unit test
    /// `tsc::tests::tsc_msrs_test_stages`.)
    #[test]
    fn t4_guest_writes_couple_tsc_and_tsc_adjust_and_host_writes_do_not(
        s in scaling(),
        ops in prop::collection::vec((0u8..5, any::<u64>(), host_tsc()), 1..24),
    ) {
        let mut tsc = Tsc::new(s);
        for (kind, value, h) in ops {
            let tsc_before = tsc.read_tsc(h);
            let adjust_before = tsc.read_tsc_adjust();
            match kind {
                0 => { let _ = tsc.guest_write_tsc(value, h); }
                1 => { let _ = tsc.guest_write_tsc_adjust(value, h); }
                2 => tsc.host_set_tsc(value, h),
                3 => tsc.host_set_tsc_adjust(value),
                _ => tsc.host_set_offset(value),
            }
            let tsc_delta = tsc.read_tsc(h).wrapping_sub(tsc_before);
            let adjust_delta = tsc.read_tsc_adjust().wrapping_sub(adjust_before);
            match kind {
                0 | 1 => prop_assert_eq!(tsc_delta, adjust_delta, "guest write {} of {:#x}", kind, value),
                2 | 4 => prop_assert_eq!(adjust_delta, 0, "host write {} moved TSC_ADJUST", kind),
                _ => prop_assert_eq!(tsc_delta, 0, "host TSC_ADJUST write moved the TSC"),
            }
            match kind {
                0 | 2 => prop_assert_eq!(tsc.read_tsc(h), value),
                1 | 3 => prop_assert_eq!(tsc.read_tsc_adjust(), value),
                _ => prop_assert_eq!(tsc.offset(), value),
            }
        }
    }

    /// T5 rate change continuity: changing the ratio at `h` leaves the TSC at `h` unchanged, and
    /// `Δ` host ticks later it has advanced by `⌊Δ·r_new/2^f⌋` or one more.
    #[test]
    fn t5_rate_change_keeps_the_tsc_continuous(
        (old, new) in format().prop_flat_map(|f| (ratio(f), ratio(f)).prop_map(move |(a, b)| {
            (TscScaling::new(f, a).unwrap(), TscScaling::new(f, b).unwrap())
        })),
        o in offset(),
        h in host_tsc(),
        delta in host_tsc(),
    ) {
        let mut tsc = Tsc::new(old);
        tsc.host_set_offset(o);
        let before = tsc.read_tsc(h);
        tsc.set_scaling(new, h);
        prop_assert_eq!(tsc.read_tsc(h), before);
        prop_assert_eq!(tsc.scaling(), new);
        let delta = delta.min(u64::MAX - h);
        // Keep the expected advance below 2^64 - 1 so that it is visible modulo 2^64.
        let delta = if wide(new, delta) >= u128::from(u64::MAX) { delta >> 17 } else { delta };
        let expected = wide(new, delta);
        prop_assert!(expected < u128::from(u64::MAX));
        let advanced = u128::from(tsc.read_tsc(h + delta).wrapping_sub(before));
        prop_assert!(advanced == expected || advanced == expected + 1, "{} vs {}", advanced, expected);
    }

    /// T6 deadline inverse: `h* = ⌈((D − o) mod 2^64)·2^f / r⌉` is the first host TSC at which the
    /// guest count since host 0 reaches `D`, exactly; while the guest TSC has not wrapped,
    /// `guest(h*) ≥ D` and `guest(h*−1) < D`. `None` exactly when even `u64::MAX` is too early.
    #[test]
    fn t6_host_deadline_is_the_exact_inverse(clock in clock(), d in any::<u64>(), near in 0u64..1 << 20) {
        for d in [d, clock.offset.wrapping_add(near)] {
            let s = clock.scaling;
            let delta = u128::from(d.wrapping_sub(clock.offset));
            match clock.host_tsc_at(d) {
                None => prop_assert!(wide(s, u64::MAX) < delta),
                Some(h) => {
                    prop_assert!(wide(s, h) >= delta);
                    prop_assert!(h == 0 || wide(s, h - 1) < delta);
                    if d >= clock.offset && u128::from(clock.offset) + wide(s, h) <= u128::from(u64::MAX) {
                        prop_assert!(clock.read(h) >= d);
                        prop_assert!(h == 0 || clock.read(h - 1) < d);
                    }
                }
            }
        }
    }

    /// T6 from the current time, as the deadline timer uses it: not yet expired ⇒ the host
    /// deadline is after now, the guest TSC is still below `D` one tick earlier and at or past
    /// it there, and it is the first such tick (the wrap walk); `None` ⇒ no host TSC up to
    /// `u64::MAX` reaches it; expired ⇒ now.
    #[test]
    fn t6_next_deadline_is_the_first_host_tick_at_or_past_the_deadline(
        clock in clock(),
        now in host_tsc(),
        d in any::<u64>(),
        ahead in 1u64..1 << 24,
    ) {
        let g_now = clock.read(now);
        for d in [d, g_now.wrapping_add(ahead), g_now] {
            let deadline = TscDeadline::with_value(d);
            let next = deadline.next_deadline(&clock, now);
            if d == 0 {
                prop_assert_eq!(next, None);
            } else if g_now >= d {
                prop_assert!(deadline.has_expired(&clock, now));
                prop_assert_eq!(next, Some(now));
            } else if let Some(h) = next {
                prop_assert!(h > now);
                prop_assert!(clock.read(h - 1) < d);
                prop_assert!(clock.read(h) >= d);
                let advanced = wide(clock.scaling, h) - wide(clock.scaling, now);
                prop_assert!(advanced >= u128::from(d - g_now));
                let mut fired = deadline;
                prop_assert!(!fired.advance(&clock, h - 1));
                prop_assert!(fired.advance(&clock, h));
                prop_assert_eq!(next, walk_wraps(&clock, d, now));
            } else {
                prop_assert_eq!(walk_wraps(&clock, d, now), None);
                prop_assert!(!deadline.has_expired(&clock, u64::MAX));
            }
        }
    }

    /// T6 for a guest TSC faster than the host's and a deadline near 2^64, where the guest TSC
    /// can step over `[D, 2^64)` on some or all of its wraps: `next_deadline` is exactly the
    /// first host TSC at or after now with guest TSC `≥ D` (the wrap walk), `advance` fires
    /// there and not one tick earlier, and `None` only if no host TSC up to `u64::MAX` has it.
    #[test]
    fn t6_next_deadline_is_exact_when_the_guest_tsc_steps_over_the_deadline(
        scaling in fast_scaling(),
        offset in offset(),
        now in host_tsc(),
        d in deadline_near_the_top(),
    ) {
        let clock = GuestTsc::new(scaling, offset);
        let deadline = TscDeadline::with_value(d);
        let next = deadline.next_deadline(&clock, now);
        let expected = if d == 0 { None } else { walk_wraps(&clock, d, now) };
        prop_assert_eq!(next, expected);
        prop_assert_eq!(clock.host_tsc_at_or_past(d, now), walk_wraps(&clock, d, now));
        match next {
            Some(h) => {
                let mut fired = deadline;
                if h > now {
                    prop_assert!(!fired.advance(&clock, h - 1));
                }
                prop_assert!(fired.advance(&clock, h));
            }
            None if d != 0 => prop_assert!(!deadline.has_expired(&clock, u64::MAX)),
            None => {}
        }
    }

    /// Host nanoseconds are the ceiling of ticks · 10^9 / Hz: never early, at most 1 ns late.
    #[test]
    fn host_ns_conversion_is_the_ceiling(
        ticks in host_tsc(),
        hz in prop_oneof![Just(1u64), 1u64..=u64::MAX],
    ) {
        let ns = host_tsc_ticks_to_ns(ticks, hz).unwrap();
        let exact = u128::from(ticks) * 1_000_000_000;
        if ns < u64::MAX {
            prop_assert!(u128::from(ns) * u128::from(hz) >= exact);
            prop_assert!(ns == 0 || u128::from(ns - 1) * u128::from(hz) < exact);
        } else {
            prop_assert!(u128::from(u64::MAX - 1) * u128::from(hz) < exact);
        }
    }

    /// T7 nested composition: KVM's L2 ratio and offset differ from scaling L1's TSC value by
    /// L2's ratio by less than `h/2^f + r2/2^f + 2` ticks, and not at all when `r2` is 1.0.
    #[test]
    fn t7_nested_composition_is_within_the_bound(
        (f, r1, r2) in format().prop_flat_map(|f| (Just(f), ratio(f), ratio(f))),
        h_raw in host_tsc(),
        d in prop_oneof![Just(-(1i64 << 48)), Just(((!0u64) << 48) as i64), any::<i64>()],
        o2 in offset(),
        identity_l2 in any::<bool>(),
    ) {
        let frac = f.frac_bits();
        let l1s = TscScaling::new(f, r1).unwrap();
        let r2 = if identity_l2 { f.default_ratio() } else { r2 };
        let l2s = TscScaling::new(f, r2).unwrap();
        // Keep L1's TSC value in [0, 2^64): the sequential composition scales that u64.
        let h = if wide(l1s, h_raw) > u128::from(u64::MAX) { h_raw >> 16 } else { h_raw };
        let s1 = wide(l1s, h) as i128;
        let l1_value = (s1 + i128::from(d)).clamp(0, i128::from(u64::MAX));
        let o1 = (l1_value - s1) as i64 as u64;
        let l1 = GuestTsc::new(l1s, o1);
        let l2 = GuestTsc::new(l2s, o2);
        prop_assert_eq!(i128::from(l1.read(h)), l1_value);
        let sequential = l2.read(l1.read(h));

        let r12 = (u128::from(r1) * u128::from(r2)) >> frac;
        match l1.nested(&l2) {
            Err(e) => {
                prop_assert!(!identity_l2);
                prop_assert!(r12 == 0 || r12 > u128::from(f.max_ratio()), "{:?} for r12 {:#x}", e, r12);
                prop_assert_eq!(e, if r12 == 0 {
                    RatioError::Zero
                } else {
                    RatioError::TooLarge { ratio: r12, max: f.max_ratio() }
                });
            }
            Ok(nested) => {
                let expected_ratio = if identity_l2 { u128::from(r1) } else { r12 };
                prop_assert_eq!(u128::from(nested.scaling.ratio()), expected_ratio);
                let diff = nested.read(h).wrapping_sub(sequential) as i64;
                if identity_l2 {
                    prop_assert_eq!(diff, 0);
                } else {
                    let bound = (h >> frac) + (r2 >> frac) + 4;
                    prop_assert!(diff.unsigned_abs() <= bound, "diff {} bound {}", diff, bound);
                }
            }
        }
    }

    /// T8 deadline rules: 0 disarms; a deadline at or before the guest TSC fires once at the
    /// write and then reads 0; otherwise it is armed and reads back; a re-arm replaces; random
    /// time never gives more interrupts than writes.
    #[test]
    fn t8_deadline_rules(
        clock in clock(),
        ops in prop::collection::vec(
            (any::<bool>(), prop_oneof![Just(0u64), any::<u64>()], 0u64..1 << 40),
            1..32,
        ),
        start in host_tsc(),
    ) {
        let mut deadline = TscDeadline::new();
        let mut now = start;
        let (mut writes, mut fires) = (0u32, 0u32);
        for (is_write, value, step) in ops {
            now = now.saturating_add(step);
            if is_write {
                let was = deadline;
                let fired = deadline.write(value, &clock, now);
                writes += 1;
                fires += u32::from(fired);
                let due = value != 0 && clock.read(now) >= value;
                prop_assert_eq!(fired, due);
                prop_assert_eq!(deadline.read(), if due { 0 } else { value });
                // Re-arm replaces: the same as writing to a fresh register.
                let mut fresh = TscDeadline::new();
                let _ = fresh.write(value, &clock, now);
                prop_assert_eq!(deadline, fresh, "after {:?}", was);
            } else {
                let armed = deadline.read();
                let fired = deadline.advance(&clock, now);
                fires += u32::from(fired);
                prop_assert_eq!(fired, armed != 0 && clock.read(now) >= armed);
                if fired {
                    prop_assert_eq!(deadline.read(), 0);
                    prop_assert!(!deadline.advance(&clock, now));
                }
            }
            prop_assert!(fires <= writes);
        }
    }

    /// T9 ratio from kHz: `⌊2^f·guest/host⌋`, refused when 0 or ≥ max; within 250 ppm of the host
    /// (KVM's floored bounds) no scaling.
    #[test]
    fn t9_ratio_from_khz(
        f in format(),
        host in prop_oneof![
            Just(1u32),
            Just(0x7fff_ffff),
            Just(u32::MAX),
            1u32..=u32::MAX,
            1_000_000u32..5_000_000,
        ],
        guest_pick in prop_oneof![
            Just(None),
            any::<u32>().prop_map(Some),
            Just(Some(1)),
            Just(Some(0x7fff_ffff)),
        ],
        edge in 0usize..4,
    ) {
        let low = u128::from(host) * 999_750 / 1_000_000;
        let high = u128::from(host) * 1_000_250 / 1_000_000;
        let boundary =
            [low.saturating_sub(1), low, high, high + 1].map(|g| u32::try_from(g).unwrap_or(u32::MAX));
        let guest = guest_pick.unwrap_or(boundary[edge]);
        let got = TscScaling::from_khz(f, guest, host);
        if guest == 0 {
            prop_assert_eq!(got, Err(RatioError::ZeroGuestKhz));
        } else if low <= u128::from(guest) && u128::from(guest) <= high {
            prop_assert_eq!(got, Ok(TscScaling::identity(f)));
        } else {
            let r = (u128::from(guest) << f.frac_bits()) / u128::from(host);
            if r == 0 {
                prop_assert_eq!(got, Err(RatioError::Zero));
            } else if r >= u128::from(f.max_ratio()) {
                prop_assert_eq!(got, Err(RatioError::TooLarge { ratio: r, max: f.max_ratio() }));
            } else {
                prop_assert_eq!(got.map(TscScaling::ratio), Ok(r as u64));
            }
        }
    }

    /// Save/restore: any state with a valid ratio restores and reads back unchanged; an invalid
    /// ratio is refused and leaves the TSC as it was.
    #[test]
    fn state_restore_round_trips(
        f in format(),
        r in any::<u64>(),
        o in offset(),
        adj in any::<u64>(),
        d in any::<u64>(),
    ) {
        let r = if r % 4 == 0 { r % (f.max_ratio() / 2) } else { r };
        let state = TscState { format: f, ratio: r, offset: o, tsc_adjust: adj, tsc_deadline: d };
        let mut tsc = Tsc::default();
        let before = tsc;
        match tsc.restore(&state) {
            Ok(()) => {
                prop_assert!(f.is_valid_ratio(r));
                prop_assert_eq!(tsc.state(), state);
            }
            Err(_) => {
                prop_assert!(!f.is_valid_ratio(r));
                prop_assert_eq!(tsc, before);
            }
        }
    }
}

/// T1 at the §4.2 edge values exhaustively: every host TSC edge with every ratio edge of both
/// formats and both test offsets.
#[test]
fn t1_edge_values() {
    for f in FORMATS {
        let d = f.default_ratio();
        for r in [1, d - 1, d, d + 1, f.max_ratio() - 1, f.max_ratio()] {
            let s = TscScaling::new(f, r).unwrap();
            for h in [0, 1 << 48, 1 << 60, u64::MAX] {
                assert_eq!(s.scale(h), reference_scale(h, r, f.frac_bits()), "{f:?} r={r:#x} h={h:#x}");
                for o in [(!0u64) << 48, (-(1i64 << 48)) as u64] {
                    let clock = GuestTsc::new(s, o);
                    assert_eq!(clock.read(h), reference_scale(h, r, f.frac_bits()).wrapping_add(o));
                    if let Some(hd) = clock.host_tsc_at(o.wrapping_add(12345)) {
                        assert!(wide(s, hd) >= 12345 && (hd == 0 || wide(s, hd - 1) < 12345));
                    }
                }
            }
        }
    }
}

/// T9 at the §4.2 edges: 1 kHz, the ±250 ppm boundary of a 2.5 GHz host, 0x7fffffff kHz.
#[test]
fn t9_edge_values() {
    let host = 2_500_000; // 250 ppm = 625 kHz
    for f in FORMATS {
        assert!(TscScaling::from_khz(f, host - 625, host).unwrap().is_identity());
        assert!(TscScaling::from_khz(f, host + 625, host).unwrap().is_identity());
        assert!(!TscScaling::from_khz(f, host - 626, host).unwrap().is_identity());
        assert!(!TscScaling::from_khz(f, host + 626, host).unwrap().is_identity());
        let one = TscScaling::from_khz(f, 1, host).unwrap();
        assert_eq!(u128::from(one.ratio()), (1u128 << f.frac_bits()) / u128::from(host));
    }
    // 0x7fffffff kHz is 859 × a 2.5 GHz host: more than VMX's 2^16 - 1 is fine, SVM's 255 is not.
    assert!(TscScaling::from_khz(ScalingFormat::Vmx, 0x7fff_ffff, host).is_ok());
    assert!(matches!(
        TscScaling::from_khz(ScalingFormat::Svm, 0x7fff_ffff, host),
        Err(RatioError::TooLarge { .. })
    ));
    // The largest settable VMX rate (KVM's selftest: host_khz · max_ratio >> 48, capped at
    // 0x7fffffff): 0x7fffffff kHz needs a host of at least 2^15 kHz (ratio 2^64 - 2^33).
    assert!(matches!(
        TscScaling::from_khz(ScalingFormat::Vmx, 0x7fff_ffff, (1 << 15) - 1),
        Err(RatioError::TooLarge { .. })
    ));
    assert_eq!(
        TscScaling::from_khz(ScalingFormat::Vmx, 0x7fff_ffff, 1 << 15).unwrap().ratio(),
        (1u64 << 33).wrapping_neg()
    );
    assert!(TscScaling::from_khz(ScalingFormat::Svm, 0x7fff_ffff, 0x7fff_ffff).unwrap().is_identity());
}

/// T8 through the `Tsc` wrapper: the deadline is a TSC value, so a guest TSC write that jumps
/// past it fires it, and a rate change moves the host deadline.
#[test]
fn t8_deadline_follows_tsc_writes_and_rate_changes() {
    let mut tsc = Tsc::default();
    tsc.host_set_tsc(0, 1 << 48);
    assert!(!tsc.guest_write_tsc_deadline(1_000_000, 1 << 48));
    assert_eq!(tsc.next_deadline(1 << 48), Some((1 << 48) + 1_000_000));
    let half = TscScaling::new(ScalingFormat::Vmx, 1 << 47).unwrap();
    tsc.set_scaling(half, 1 << 48);
    assert_eq!(tsc.next_deadline(1 << 48), Some((1 << 48) + 2_000_000));
    assert!(tsc.guest_write_tsc(1_000_000, (1 << 48) + 10));
    assert_eq!(tsc.read_tsc_deadline(), 0);
    assert_eq!(tsc.next_deadline((1 << 48) + 10), None);
}
