//! Property tests of the ARMv8 generic timer model: P1–P12 of the timer research notes
//! (`reference/timers.md` §4.1), over the numeric edge values of §4.2.

use proptest::prelude::*;
use proptest::sample::select;
use vm_timer::generic_timer::{
    Access, Cntkctl, Counter, CounterState, El, Encoding, Features, Offset, Output, Ppis, SysReg,
    SysRegResult, TimerCtl, TimerId, VcpuTimers, VcpuTimersState,
};

const ENABLE: u64 = TimerCtl::ENABLE.bits();
const IMASK: u64 = TimerCtl::IMASK.bits();

/// §4.2 counter/CVAL/offset edge values.
const EDGES: [u64; 13] = [
    0,
    1,
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 1,
    1 << 32,
    1 << 48,
    (1 << 56) - 1,
    (1 << 63) - 1,
    1 << 63,
    u64::MAX,
    !0 << 48,
    (1u64 << 48).wrapping_neg(),
];

/// §4.2 frequencies.
const FREQS: [u32; 6] = [1, 19_200_000, 24_000_000, 62_500_000, 1_000_000_000, u32::MAX];

/// A count: an edge value, an edge value ± a few ticks, or anything.
fn count() -> impl Strategy<Value = u64> {
    prop_oneof![
        select(&EDGES[..]),
        (select(&EDGES[..]), -3i64..=3).prop_map(|(e, d)| e.wrapping_add(d as u64)),
        any::<u64>(),
    ]
}

fn frequency() -> impl Strategy<Value = u32> {
    prop_oneof![select(&FREQS[..]), 1..=u32::MAX]
}

/// A 64-bit TVAL write: an i32 edge value or any i32, with junk or nothing in bits 63:32.
fn tval_write() -> impl Strategy<Value = u64> {
    let low = prop_oneof![select(vec![i32::MIN, -1, 0, 1, i32::MAX]), any::<i32>()];
    let high = prop_oneof![Just(0u64), Just(1), Just(0xffff_ffff), any::<u32>().prop_map(u64::from)];
    (low, high).prop_map(|(l, h)| (h << 32) | u64::from(l as u32))
}

fn ctl() -> impl Strategy<Value = u64> {
    prop_oneof![0..8u64, any::<u64>()]
}

fn el1_timer() -> impl Strategy<Value = TimerId> {
    select(vec![TimerId::Phys, TimerId::Virt])
}

fn any_timer() -> impl Strategy<Value = TimerId> {
    select(TimerId::ALL.to_vec())
}

const ALL_FEATURES: Features = Features { el2: true, ecv: true };

/// A counter with both offsets set.
fn counter(freq: u32, voff: u64, poff: u64) -> Counter {
    let mut c = Counter::new(freq, ALL_FEATURES).unwrap();
    c.restore(&CounterState { cntfrq: freq, cntvoff: voff, cntpoff: poff }).unwrap();
    c
}

fn armed(c: &Counter, timer: TimerId, cval: u64, ctl: u64) -> VcpuTimers {
    let mut v = VcpuTimers::new();
    v.write_cval(c, timer, cval, 0);
    v.write_ctl(c, timer, ctl, 0);
    v
}

/// Everything observable about a vCPU at `now`.
fn observe(c: &Counter, v: &VcpuTimers, now: u64) -> impl PartialEq + core::fmt::Debug {
    let regs: Vec<_> = TimerId::ALL
        .into_iter()
        .map(|id| (v.ctl(c, id, now), v.cval(c, id), v.tval(c, id, now), v.timer_deadline(c, id, now)))
        .collect();
    (
        v.level(c, now),
        v.next_deadline(c, now),
        v.next_event(c, now),
        regs,
        c.virtual_count(now),
        c.physical_count(now),
    )
}

/// A guest or VMM operation, for the snapshot/restore property.
#[derive(Clone, Debug)]
enum Op {
    Ctl(TimerId, u64),
    Cval(TimerId, u64),
    Tval(TimerId, u64),
    Kctl(u64),
    SetOffset(bool, u64),
    SetVirtualCount(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any_timer(), ctl()).prop_map(|(t, v)| Op::Ctl(t, v)),
        (any_timer(), count()).prop_map(|(t, v)| Op::Cval(t, v)),
        (any_timer(), tval_write()).prop_map(|(t, v)| Op::Tval(t, v)),
        any::<u64>().prop_map(Op::Kctl),
        (any::<bool>(), count()).prop_map(|(p, v)| Op::SetOffset(p, v)),
        count().prop_map(Op::SetVirtualCount),
    ]
}

fn apply(c: &mut Counter, v: &mut VcpuTimers, op: &Op, now: u64) {
    match *op {
        Op::Ctl(t, x) => drop(v.write_ctl(c, t, x, now)),
        Op::Cval(t, x) => drop(v.write_cval(c, t, x, now)),
        Op::Tval(t, x) => drop(v.write_tval(c, t, x, now)),
        Op::Kctl(x) => v.write_cntkctl(c, x),
        Op::SetOffset(phys, x) => {
            let which = if phys { Offset::Physical } else { Offset::Virtual };
            c.set_offset(which, x, now, [&*v], &mut []);
        }
        Op::SetVirtualCount(x) => drop(c.set_virtual_count(x, now, [&*v], &mut [])),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// P1: ISTATUS == ENABLE && (P − off) ≥ CVAL, with an unsigned 64-bit compare.
    #[test]
    fn p1_condition(now in count(), voff in count(), poff in count(), cval in count(), ctl in ctl(),
                    timer in any_timer()) {
        let c = counter(24_000_000, voff, poff);
        let v = armed(&c, timer, cval, ctl);
        let off = match timer { TimerId::Virt => voff, TimerId::Phys => poff, _ => 0 };
        let expected = ctl & ENABLE != 0 && now.wrapping_sub(off) >= cval;
        prop_assert_eq!(v.istatus(&c, timer, now), expected);
        prop_assert_eq!(v.ctl(&c, timer, now).contains(TimerCtl::ISTATUS), expected);
    }

    /// P2: level == ENABLE && ISTATUS && !IMASK; IMASK never changes ISTATUS; CTL bit 2 is
    /// ignored by writes.
    #[test]
    fn p2_output(now in count(), voff in count(), cval in count(), ctl in ctl(), timer in any_timer()) {
        let c = counter(24_000_000, voff, 0);
        let mut v = armed(&c, timer, cval, ctl);
        let istatus = v.istatus(&c, timer, now);
        let expected = ctl & ENABLE != 0 && istatus && ctl & IMASK == 0;
        prop_assert_eq!(v.level(&c, now).contains(timer.ppi_bit()), expected);
        prop_assert_eq!(v.level(&c, now) - timer.ppi_bit(), Ppis::empty());

        v.write_ctl(&c, timer, ctl ^ IMASK, now);
        prop_assert_eq!(v.istatus(&c, timer, now), istatus);
        let with_bit2 = armed(&c, timer, cval, ctl | TimerCtl::ISTATUS.bits());
        let without = armed(&c, timer, cval, ctl & !TimerCtl::ISTATUS.bits());
        prop_assert_eq!(with_bit2, without);
    }

    /// P3: TVAL == lo32(CVAL − C) at the same instant, also when disabled; as an i32 it is
    /// negative once expired (within the TVAL range).
    #[test]
    fn p3_tval_read(now in count(), voff in count(), cval in count(), ctl in ctl(), timer in el1_timer()) {
        let c = counter(62_500_000, voff, voff.rotate_left(7));
        let v = armed(&c, timer, cval, ctl);
        let count = c.timer_count(timer, now);
        let tval = v.tval(&c, timer, now);
        prop_assert_eq!(tval, cval.wrapping_sub(count) & 0xffff_ffff);
        let overdue = count.wrapping_sub(cval);
        if count >= cval && (1..=1u64 << 31).contains(&overdue) {
            prop_assert!((tval as u32 as i32) < 0);
        }
    }

    /// P4: write_tval(x) ≡ write_tval(x & 0xffff_ffff); afterwards CVAL == C + sext32(x) and an
    /// immediate TVAL read returns x as i32.
    #[test]
    fn p4_tval_write(now in count(), voff in count(), x in tval_write(), ctl in ctl(), timer in any_timer()) {
        let c = counter(1_000_000_000, voff, voff ^ 0x5555);
        let mut a = armed(&c, timer, 0, ctl);
        let mut b = a;
        let out_a = a.write_tval(&c, timer, x, now);
        let out_b = b.write_tval(&c, timer, x & 0xffff_ffff, now);
        prop_assert_eq!(a, b);
        prop_assert_eq!(out_a, out_b);
        let count = c.timer_count(timer, now);
        prop_assert_eq!(a.cval(&c, timer), count.wrapping_add(x as u32 as i32 as i64 as u64));
        prop_assert_eq!(a.tval(&c, timer, now) as u32 as i32, x as u32 as i32);
    }

    /// P5: with the counter synthesized from host ns as P = floor((ns − base)·freq/10^9), the
    /// deadline tick is exact (the timer asserts at it and not one tick before), its exact ns
    /// inverse base + ticks_to_ns(tick) is the first ns at which the counter reaches it, and
    /// now_ns + delay_ns is never early. No deadline when disabled, masked or already firing.
    #[test]
    fn p5_deadline_exactness(freq in frequency(), base in any::<u64>(), elapsed in 0u64..(1 << 60),
                             voff in count(), cval in count(), ctl in 0..4u64) {
        let c = counter(freq, voff, 0);
        let now_ns = base.saturating_add(elapsed);
        let p = |ns: u64| c.ns_to_ticks(ns - base);
        let now = p(now_ns);
        let v = armed(&c, TimerId::Virt, cval, ctl);
        let firing = v.level(&c, now) == Ppis::CNTV;
        match v.next_deadline(&c, now) {
            None => prop_assert!(ctl != ENABLE || firing),
            Some(d) => {
                prop_assert!(ctl == ENABLE && !firing);
                prop_assert!(d.ticks > now);
                prop_assert_eq!(d.delay_ticks, cval - c.virtual_count(now));
                prop_assert_eq!(d.delay_ns, c.ticks_to_ns(d.delay_ticks));
                if let Some(exact) = now.checked_add(d.delay_ticks) {
                    prop_assert_eq!(d.ticks, exact);
                    prop_assert_eq!(v.level(&c, d.ticks), Ppis::CNTV);
                    prop_assert_eq!(v.level(&c, d.ticks - 1), Ppis::empty());
                    let ns = c.ticks_to_ns(d.ticks);
                    if let Some(d_ns) = base.checked_add(ns).filter(|_| ns != u64::MAX) {
                        prop_assert!(d_ns > now_ns);
                        prop_assert!(p(d_ns) >= d.ticks);
                        prop_assert!(p(d_ns - 1) < d.ticks);
                    }
                }
                if let Some(wake) = now_ns.checked_add(d.delay_ns).filter(|_| d.delay_ns != u64::MAX) {
                    prop_assert!(p(wake) >= now.saturating_add(d.delay_ticks));
                }
            }
        }
    }

    /// P6: for fixed offsets the counts advance exactly with the host counter (so they never go
    /// backwards except by wrapping past 2^64 − 1); deadlines lie after `now` and do not move
    /// as time passes.
    #[test]
    fn p6_monotonicity(now in count(), step in prop_oneof![0u64..1000, any::<u64>()], voff in count(),
                       poff in count(), cval in count(), timer in any_timer()) {
        let c = counter(19_200_000, voff, poff);
        let later = now.saturating_add(step);
        let dt = later - now;
        for read in [Counter::virtual_count, Counter::physical_count] {
            let (a, b) = (read(&c, now), read(&c, later));
            prop_assert_eq!(b.wrapping_sub(a), dt);
            if a.checked_add(dt).is_some() {
                prop_assert!(b >= a);
            }
        }
        let v = armed(&c, timer, cval, ENABLE);
        if let Some(d) = v.next_deadline(&c, now) {
            prop_assert!(d.ticks >= now);
            if later < d.ticks {
                prop_assert_eq!(v.next_deadline(&c, later).map(|d| d.ticks), Some(d.ticks));
            }
        }
    }

    /// P7: set_virtual_count(v, now) makes CNTVCT read v at now; V + off == P always;
    /// offset(set_offset(o)) == o.
    #[test]
    fn p7_offset_round_trip(now in count(), later in count(), target in count(), o in count()) {
        let mut c = counter(24_000_000, 0, 0);
        let v = VcpuTimers::new();
        c.set_virtual_count(target, now, [&v], &mut []);
        prop_assert_eq!(c.virtual_count(now), target);
        prop_assert_eq!(c.virtual_count(later).wrapping_add(c.offset(Offset::Virtual)), later);
        let mut vcpu = VcpuTimers::new();
        vcpu.write_cntkctl(&c, Cntkctl::EL0VCTEN.bits());
        let read = vcpu.access(&c, SysReg::CNTVCT_EL0.encoding(), El::El0, Access::Read, now);
        prop_assert_eq!(read, SysRegResult::Value(target));
        for which in [Offset::Virtual, Offset::Physical] {
            c.set_offset(which, o, now, [&v], &mut []);
            prop_assert_eq!(c.offset(which), o);
        }
        c.set_count(Offset::Physical, target, now, [&v], &mut []);
        prop_assert_eq!(c.physical_count(now), target);
    }

    /// P8: after an offset write, levels, ISTATUS, TVAL and deadlines equal those of a fresh model
    /// built with the new offset, and the reported change is exactly the level difference.
    #[test]
    fn p8_offset_change_reevaluation(ops in prop::collection::vec(op(), 0..8), now in count(),
                                     phys in any::<bool>(), o in count(), probe in count()) {
        let mut c = counter(24_000_000, 0, 0);
        let mut v = VcpuTimers::new();
        for op in &ops {
            apply(&mut c, &mut v, op, now);
        }
        let before = v.level(&c, now);
        let which = if phys { Offset::Physical } else { Offset::Virtual };
        let mut out = [Output::default()];
        let n = c.set_offset(which, o, now, [&v], &mut out);

        let mut fresh_c = Counter::new(24_000_000, ALL_FEATURES).unwrap();
        fresh_c.restore(&c.state()).unwrap();
        let mut fresh_v = VcpuTimers::new();
        fresh_v.restore(&fresh_c, &v.state()).unwrap();
        for t in [now, probe] {
            prop_assert_eq!(observe(&c, &v, t), observe(&fresh_c, &fresh_v, t));
        }
        prop_assert_eq!(out[0].level, fresh_v.level(&fresh_c, now));
        prop_assert_eq!(out[0].changed, before ^ out[0].level);
        prop_assert_eq!(n, usize::from(!out[0].changed.is_empty()));
    }

    /// P9: restore(save(m, t0)) evolved to t1 equals m evolved to t1, including mid-pending
    /// states (a timer firing or armed at the snapshot).
    #[test]
    fn p9_snapshot_restore(ops in prop::collection::vec((op(), 0u64..1_000_000), 1..16), split in 0usize..16,
                           start in count(), freq in frequency()) {
        let mut c = Counter::new(freq, ALL_FEATURES).unwrap();
        let mut v = VcpuTimers::new();
        let mut now = start;
        let split = split.min(ops.len());
        for (op, dt) in &ops[..split] {
            now = now.saturating_add(*dt);
            apply(&mut c, &mut v, op, now);
        }
        let (cs, vs): (CounterState, VcpuTimersState) = (c.state(), v.state());
        #[cfg(feature = "serde")]
        let (cs, vs): (CounterState, VcpuTimersState) =
            serde_json::from_str(&serde_json::to_string(&(cs, vs)).unwrap()).unwrap();
        let mut c2 = Counter::new(freq, ALL_FEATURES).unwrap();
        c2.restore(&cs).unwrap();
        let mut v2 = VcpuTimers::new();
        v2.restore(&c2, &vs).unwrap();
        prop_assert_eq!(observe(&c, &v, now), observe(&c2, &v2, now));
        for (op, dt) in &ops[split..] {
            now = now.saturating_add(*dt);
            apply(&mut c, &mut v, op, now);
            apply(&mut c2, &mut v2, op, now);
            prop_assert_eq!(observe(&c, &v, now), observe(&c2, &v2, now));
        }
        prop_assert_eq!((c.state(), v.state()), (c2.state(), v2.state()));
    }

    /// P10: a CVAL beyond the TVAL range (C + 2^31 − 1 + k) does not fire early, and the TVAL of a
    /// CVAL 2·(2^31 − 1) + w ahead wraps to at most w.
    #[test]
    fn p10_cval_beyond_tval_range(now in count(), v in count(), k in 1u64..(1 << 32), w in 0u64..(1 << 30)) {
        let tval_max = i32::MAX as u64;
        // A virtual count low enough that CVAL does not wrap past 2^64 − 1.
        let count = v.min(u64::MAX - tval_max - k);
        let mut c = counter(24_000_000, 0, 0);
        c.set_virtual_count(count, now, [], &mut []);
        let cval = count + tval_max + k;
        let v = armed(&c, TimerId::Virt, cval, ENABLE);
        prop_assert_eq!(v.level(&c, now.wrapping_add(tval_max)), Ppis::empty());
        prop_assert_eq!(v.level(&c, now.wrapping_add(tval_max + k - 1)), Ppis::empty());
        prop_assert_eq!(v.level(&c, now.wrapping_add(tval_max + k)), Ppis::CNTV);
        prop_assert_eq!(v.next_deadline(&c, now).unwrap().delay_ticks, tval_max + k);
        let far = armed(&c, TimerId::Virt, count.wrapping_add(2 * tval_max + w), ENABLE);
        prop_assert!(i64::from(far.tval(&c, TimerId::Virt, now) as u32 as i32) <= w as i64);
    }

    /// P11: moving the counter behind CVAL de-asserts, past CVAL asserts (the selftest's
    /// test_move_counters_{behind,ahead}), and the change is reported.
    #[test]
    fn p11_moving_the_counter(now in count(), cval in 1u64.., k in 0u64..1000) {
        let mut c = counter(24_000_000, 0, 0);
        c.set_virtual_count(cval.saturating_add(k), now, [], &mut []);
        let v = armed(&c, TimerId::Virt, cval, ENABLE);
        prop_assert_eq!(v.level(&c, now), Ppis::CNTV);
        let mut out = [Output::default()];
        c.set_virtual_count(cval.saturating_sub(k + 1), now, [&v], &mut out);
        prop_assert_eq!(out[0], Output { level: Ppis::empty(), changed: Ppis::CNTV });
        prop_assert_eq!(v.next_deadline(&c, now).unwrap().delay_ticks, cval - cval.saturating_sub(k + 1));
        c.set_virtual_count(cval.saturating_add(k), now, [&v], &mut out);
        prop_assert_eq!(out[0], Output { level: Ppis::CNTV, changed: Ppis::CNTV });
    }

    /// P12: the events in (t0, t1] are exactly the transitions of the selected virtual-count bit
    /// in the chosen direction, and next_event is the first of them.
    #[test]
    fn p12_event_stream(t0 in count(), len in 0u64..3000, voff in count(), evnti in 0u64..16,
                        dir in any::<bool>(), evntis in any::<bool>(), small in any::<bool>()) {
        let c = counter(24_000_000, voff, 0);
        let mut v = VcpuTimers::new();
        // Small bits keep the brute-force window meaningful.
        let evnti = if small { evnti % 6 } else { evnti };
        let mut kctl = Cntkctl::EVNTEN.bits() | (evnti << 4);
        if dir { kctl |= Cntkctl::EVNTDIR.bits(); }
        if evntis && !small { kctl |= Cntkctl::EVNTIS.bits(); }
        v.write_cntkctl(&c, kctl);
        let bit = v.cntkctl().event_bit();
        let t1 = t0.saturating_add(len);
        let mut transitions = 0u64;
        let mut first = None;
        let mut t = t0;
        while t < t1 {
            let (a, b) = ((c.virtual_count(t) >> bit) & 1, (c.virtual_count(t + 1) >> bit) & 1);
            if (a, b) == if dir { (1, 0) } else { (0, 1) } {
                transitions += 1;
                first.get_or_insert(t + 1);
            }
            t += 1;
        }
        prop_assert_eq!(v.events_between(&c, t0, t1), transitions);
        let next = v.next_event(&c, t0).unwrap();
        prop_assert_eq!(next.ticks, t0.saturating_add(next.delay_ticks));
        if let Some(f) = first {
            prop_assert_eq!(next.ticks, f);
        } else {
            prop_assert!(next.ticks > t1 || next.ticks == u64::MAX);
        }
        v.write_cntkctl(&c, kctl & !Cntkctl::EVNTEN.bits());
        prop_assert_eq!(v.next_event(&c, t0), None);
        prop_assert_eq!(v.events_between(&c, t0, t1), 0);
    }

    /// Guest input never panics: any encoding, EL, direction and value gets an answer, and
    /// unknown encodings are left to the VMM's other handlers.
    #[test]
    fn any_guest_access_gets_an_architectural_answer(
        iss in any::<u32>(), el0 in any::<bool>(), value in any::<u64>(), now in count(),
        features in (any::<bool>(), any::<bool>()), kctl in any::<u64>(),
    ) {
        let c = Counter::new(24_000_000, Features { el2: features.0, ecv: features.1 }).unwrap();
        let mut v = VcpuTimers::new();
        v.write_cntkctl(&c, kctl);
        let encoding = Encoding::from_iss(iss);
        let el = if el0 { El::El0 } else { El::El1 };
        let access = Access::from_iss(iss, value);
        let result = v.access(&c, encoding, el, access, now);
        prop_assert_eq!(result == SysRegResult::NotGenericTimer, SysReg::decode(encoding).is_none());
        if let SysRegResult::Value(_) = result {
            prop_assert_eq!(access, Access::Read);
        }
        if let SysRegResult::Done(out) = result {
            prop_assert_eq!(out.level, v.level(&c, now));
        }
    }
}
