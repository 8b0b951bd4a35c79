//! Behaviour tests of the generic timer: each is named after the rule it checks, and many
//! mirror a case of the KVM selftest `arm64/arch_timer_edge_cases.c` or kvm-unit-tests
//! `arm/timer.c`.

use super::*;

/// 24 MHz: what Apple HVF and many Arm servers report in CNTFRQ_EL0.
const FREQ: u32 = 24_000_000;
/// The largest TVAL that still means "in the future" (i32::MAX).
const TVAL_MAX: u64 = i32::MAX as u64;
const ENABLE: u64 = TimerCtl::ENABLE.bits();
const IMASK: u64 = TimerCtl::IMASK.bits();
const ISTATUS: u64 = TimerCtl::ISTATUS.bits();

fn counter() -> Counter {
    Counter::new(FREQ, Features::default()).unwrap()
}

fn counter_with(features: Features) -> Counter {
    Counter::new(FREQ, features).unwrap()
}

/// Programs `timer` with CVAL `cval` and CTL `ctl` (in that order, as Linux does).
fn arm(vcpu: &mut VcpuTimers, c: &Counter, timer: TimerId, cval: u64, ctl: u64, now: u64) -> Output {
    vcpu.write_cval(c, timer, cval, now);
    vcpu.write_ctl(c, timer, ctl, now)
}

/// Moves the virtual counter to `v` at `now`, as the VMM's `KVM_REG_ARM_TIMER_CNT` write does.
fn move_virtual_count(c: &mut Counter, vcpu: &VcpuTimers, v: u64, now: u64) -> Output {
    let mut out = [Output::default()];
    c.set_virtual_count(v, now, [vcpu], &mut out);
    out[0]
}

fn guest(vcpu: &mut VcpuTimers, c: &Counter, reg: SysReg, el: El, access: Access, now: u64) -> SysRegResult {
    vcpu.access(c, reg.encoding(), el, access, now)
}

// ---- CTL, ISTATUS, IMASK ----

#[test]
fn ctl_resets_to_zero_disabled_and_unmasked() {
    let c = counter();
    let vcpu = VcpuTimers::default();
    for id in [TimerId::Phys, TimerId::Virt] {
        assert_eq!(vcpu.ctl(&c, id, 1 << 40), TimerCtl::empty());
        assert_eq!(vcpu.cval(&c, id), 0);
    }
    assert_eq!(vcpu.level(&c, u64::MAX), Ppis::empty());
    assert_eq!(vcpu.state(), VcpuTimersState::default());
}

#[test]
fn ctl_writes_ignore_istatus_and_res0_bits() {
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    // CVAL 0 so the condition holds: a written ISTATUS=1 must not stick while disabled.
    vcpu.write_ctl(&c, TimerId::Virt, ISTATUS | 0xffff_fff8, 10);
    assert_eq!(vcpu.ctl(&c, TimerId::Virt, 10), TimerCtl::empty());
    vcpu.write_ctl(&c, TimerId::Virt, u64::MAX, 10);
    assert_eq!(vcpu.ctl(&c, TimerId::Virt, 10).bits(), ENABLE | IMASK | ISTATUS);
    assert_eq!(vcpu.state().cntv.ctl, ENABLE | IMASK);
}

#[test]
fn istatus_reads_zero_while_disabled_even_past_cval() {
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    arm(&mut vcpu, &c, TimerId::Virt, 100, 0, 50);
    assert!(!vcpu.istatus(&c, TimerId::Virt, 1_000));
    vcpu.write_ctl(&c, TimerId::Virt, ENABLE, 1_000);
    assert!(vcpu.istatus(&c, TimerId::Virt, 1_000));
}

#[test]
fn imask_never_changes_istatus_only_the_output() {
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    let out = arm(&mut vcpu, &c, TimerId::Phys, 100, ENABLE | IMASK, 200);
    assert_eq!(out.level, Ppis::empty());
    assert_eq!(vcpu.ctl(&c, TimerId::Phys, 200).bits(), ENABLE | IMASK | ISTATUS);
    let out = vcpu.write_ctl(&c, TimerId::Phys, ENABLE, 200);
    assert_eq!((out.raised(), out.level), (Ppis::CNTP, Ppis::CNTP));
    assert!(vcpu.istatus(&c, TimerId::Phys, 200));
    let out = vcpu.write_ctl(&c, TimerId::Phys, ENABLE | IMASK, 200);
    assert_eq!(out.lowered(), Ppis::CNTP);
    assert!(vcpu.istatus(&c, TimerId::Phys, 200));
}

#[test]
fn condition_is_unsigned_so_a_cval_2_63_ahead_does_not_fire() {
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    let now = 5;
    // (count − CVAL) as i64 ≥ 0 would call this expired.
    arm(&mut vcpu, &c, TimerId::Phys, now + (1 << 63) + 1, ENABLE, now);
    assert_eq!(vcpu.level(&c, now), Ppis::empty());
    assert_eq!(vcpu.next_deadline(&c, now).unwrap().delay_ticks, (1 << 63) + 1);
}

#[test]
fn output_is_level_and_stays_high_until_reprogrammed() {
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    arm(&mut vcpu, &c, TimerId::Virt, 1_000, ENABLE, 0);
    assert_eq!(vcpu.level(&c, 999), Ppis::empty());
    for now in [1_000, 1_001, 1 << 40, u64::MAX] {
        assert_eq!(vcpu.level(&c, now), Ppis::CNTV);
    }
    let out = vcpu.write_cval(&c, TimerId::Virt, 1 << 41, 1 << 40);
    assert_eq!((out.lowered(), out.level), (Ppis::CNTV, Ppis::empty()));
}

// ---- TVAL ----

#[test]
fn tval_reads_low_32_bits_of_cval_minus_count_also_when_disabled() {
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    vcpu.write_cval(&c, TimerId::Virt, 1_000, 0);
    assert_eq!(vcpu.tval(&c, TimerId::Virt, 400), 600);
    assert_eq!(vcpu.tval(&c, TimerId::Virt, 1_001) as u32 as i32, -1);
    assert_eq!(vcpu.tval(&c, TimerId::Virt, 1_001), 0xffff_ffff, "bits 63:32 read 0");
}

#[test]
fn tval_write_sign_extends_and_ignores_bits_63_32() {
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    let now = 1 << 40;
    arm(&mut vcpu, &c, TimerId::Virt, u64::MAX, ENABLE, now);
    // KVM once took this as a far-future u64: it is −1, i.e. already expired.
    let out = vcpu.write_tval(&c, TimerId::Virt, 0x1_ffff_ffff, now);
    assert_eq!(out.raised(), Ppis::CNTV);
    assert_eq!(vcpu.cval(&c, TimerId::Virt), now - 1);
}

#[test]
fn tval_writes_at_the_i32_edges_set_cval_relative_to_the_count() {
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    let now = 1 << 33;
    vcpu.write_ctl(&c, TimerId::Phys, ENABLE, now);
    for (tval, fires) in [(i32::MIN, true), (-1, true), (0, true), (1, false), (i32::MAX, false)] {
        let out = vcpu.write_tval(&c, TimerId::Phys, tval as u32 as u64, now);
        assert_eq!(vcpu.cval(&c, TimerId::Phys), now.wrapping_add(tval as i64 as u64));
        assert_eq!(out.level.contains(Ppis::CNTP), fires, "TVAL {tval}");
        assert_eq!(vcpu.tval(&c, TimerId::Phys, now) as u32 as i32, tval);
    }
}

#[test]
fn cval_above_the_tval_range_does_not_fire_early() {
    // KVM selftest test_timers_above_tval_max: CVAL = count + TVAL_MAX + 1 ms.
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    let now = 1_000;
    let cval = now + TVAL_MAX + 24_000;
    arm(&mut vcpu, &c, TimerId::Virt, cval, ENABLE, now);
    assert_eq!(vcpu.level(&c, now + TVAL_MAX + 1), Ppis::empty());
    assert_eq!(vcpu.level(&c, cval - 1), Ppis::empty());
    assert_eq!(vcpu.level(&c, cval), Ppis::CNTV);
    assert_eq!(vcpu.next_deadline(&c, now).unwrap().ticks, cval);
}

#[test]
fn tval_of_a_cval_twice_the_tval_range_ahead_wraps() {
    // kvm selftest timers_sanity_checks: CVAL 2·TVAL_MAX + w ahead reads back as ≤ w.
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    let w = 10;
    vcpu.write_cval(&c, TimerId::Virt, 2 * TVAL_MAX + w, 0);
    assert!(vcpu.tval(&c, TimerId::Virt, 0) <= w);
}

// ---- Counters and offsets ----

#[test]
fn virtual_count_is_physical_count_minus_cntvoff_modulo_2_64() {
    let mut c = counter();
    let p = 1 << 50;
    c.set_offset(Offset::Virtual, p, p, [], &mut []);
    assert_eq!(c.virtual_count(p), 0);
    c.set_offset(Offset::Virtual, p + 1, p, [], &mut []);
    assert_eq!(c.virtual_count(p), u64::MAX);
    c.set_offset(Offset::Virtual, !0 << 48, 5, [], &mut []);
    assert_eq!(c.virtual_count(5), (1 << 48) + 5);
    c.set_virtual_count(42, p, [], &mut []);
    assert_eq!((c.virtual_count(p), c.offset(Offset::Virtual)), (42, p - 42));
}

#[test]
fn physical_timer_counts_with_cntpoff_and_el2_timers_with_no_offset() {
    let mut c = counter_with(Features { el2: true, ecv: true });
    c.set_offset(Offset::Physical, 1_000, 0, [], &mut []);
    c.set_offset(Offset::Virtual, 2_000, 0, [], &mut []);
    let now = 10_000;
    assert_eq!(c.timer_count(TimerId::Phys, now), 9_000);
    assert_eq!(c.timer_count(TimerId::Virt, now), 8_000);
    assert_eq!(c.timer_count(TimerId::HypPhys, now), now);
    assert_eq!(c.timer_count(TimerId::HypVirt, now), now);
    assert_eq!(c.physical_count(now), 9_000);
}

#[test]
fn moving_the_counter_behind_cval_deasserts_and_past_it_asserts() {
    // KVM selftest test_move_counters_{ahead,behind}: CVAL stays, the view moves.
    let mut c = counter();
    let mut vcpu = VcpuTimers::new();
    let now = 1 << 30;
    c.set_virtual_count(0, now, [], &mut []);
    arm(&mut vcpu, &c, TimerId::Virt, 5_000, ENABLE, now);
    assert_eq!(move_virtual_count(&mut c, &vcpu, 5_000, now).raised(), Ppis::CNTV);
    assert_eq!(move_virtual_count(&mut c, &vcpu, 4_999, now).lowered(), Ppis::CNTV);
    assert_eq!(vcpu.next_deadline(&c, now).unwrap().delay_ticks, 1);
    assert_eq!(move_virtual_count(&mut c, &vcpu, u64::MAX, now).raised(), Ppis::CNTV);
    let unchanged = move_virtual_count(&mut c, &vcpu, 1 << 62, now);
    assert_eq!((unchanged.level, unchanged.changed), (Ppis::CNTV, Ppis::empty()));
}

#[test]
fn output_falls_when_the_virtual_count_wraps_past_2_64_minus_1() {
    // With offset P + 1 the virtual count is 2^64 − 1: any CVAL is reached, and one tick later
    // the count wraps to 0 and the condition no longer holds (QEMU missed this transition).
    let mut c = counter();
    let mut vcpu = VcpuTimers::new();
    let p = 1 << 45;
    c.set_offset(Offset::Virtual, p + 1, p, [], &mut []);
    arm(&mut vcpu, &c, TimerId::Virt, 1 << 63, ENABLE, p);
    assert_eq!(c.virtual_count(p), u64::MAX);
    assert_eq!(vcpu.level(&c, p), Ppis::CNTV);
    assert_eq!(vcpu.next_deadline(&c, p), None, "a firing timer has no deadline");
    assert_eq!(vcpu.level(&c, p + 1), Ppis::empty());
    // ... and the deadline is computed in the virtual domain, not as CVAL + offset.
    assert_eq!(vcpu.next_deadline(&c, p + 1).unwrap().ticks, p + 1 + (1 << 63));
}

#[test]
fn deadline_with_offset_above_the_count_is_computed_in_the_timer_domain() {
    // Guest count ahead of the host (offset > P, e.g. after migration): CVAL + offset overflows,
    // and the true host deadline is (CVAL + offset) mod 2^64.
    let mut c = counter();
    let mut vcpu = VcpuTimers::new();
    let now = 1_000;
    let off = u64::MAX - 100; // virtual count = now + 101
    c.set_offset(Offset::Virtual, off, now, [], &mut []);
    let cval = c.virtual_count(now) + 500;
    arm(&mut vcpu, &c, TimerId::Virt, cval, ENABLE, now);
    let d = vcpu.next_deadline(&c, now).unwrap();
    assert_eq!(d.ticks, cval.wrapping_add(off));
    assert_eq!(d.ticks, now + 500);
    assert_eq!(vcpu.level(&c, d.ticks - 1), Ppis::empty());
    assert_eq!(vcpu.level(&c, d.ticks), Ppis::CNTV);
}

#[test]
fn offset_change_reevaluates_every_vcpu_and_reports_what_changed() {
    let mut c = counter();
    let mut a = VcpuTimers::new();
    let mut b = VcpuTimers::new();
    let idle = VcpuTimers::new();
    let now = 10_000;
    arm(&mut a, &c, TimerId::Virt, 9_000, ENABLE, now); // firing
    arm(&mut b, &c, TimerId::Virt, 11_000, ENABLE, now); // pending
    let mut changes = [Output::default(); 3];
    // Move the virtual count forward by 1 500: a stays high, b rises.
    let n = c.set_offset(Offset::Virtual, 1_500u64.wrapping_neg(), now, [&a, &b, &idle], &mut changes);
    assert_eq!(n, 1);
    assert_eq!(changes[0], Output { level: Ppis::CNTV, changed: Ppis::empty() });
    assert_eq!(changes[1], Output { level: Ppis::CNTV, changed: Ppis::CNTV });
    assert_eq!(changes[2], Output::default());
    // A short buffer still counts every vCPU; move the count back to 8 000: both fall.
    let n = c.set_offset(Offset::Virtual, 2_000, now, [&a, &b], &mut changes[..1]);
    assert_eq!(n, 2);
    assert_eq!(changes[0].lowered(), Ppis::CNTV);
}

#[test]
fn physical_offset_moves_only_the_el1_physical_timer() {
    let mut c = counter_with(Features { el2: true, ecv: true });
    let mut vcpu = VcpuTimers::new();
    let now = 1 << 20;
    for id in TimerId::ALL {
        arm(&mut vcpu, &c, id, now + 10, ENABLE, now);
    }
    let mut out = [Output::default()];
    c.set_offset(Offset::Physical, 20u64.wrapping_neg(), now, [&vcpu], &mut out);
    assert_eq!(out[0], Output { level: Ppis::CNTP, changed: Ppis::CNTP });
}

// ---- Deadlines ----

#[test]
fn deadline_rounds_up_to_whole_nanoseconds() {
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    arm(&mut vcpu, &c, TimerId::Virt, 1, ENABLE, 0);
    let d = vcpu.next_deadline(&c, 0).unwrap();
    // One 24 MHz tick is 41.67 ns: sleeping 41 ns would be early.
    assert_eq!((d.ticks, d.delay_ticks, d.delay_ns), (1, 1, 42));
}

#[test]
fn deadline_ns_is_exact_when_delta_times_10_9_overflows_u64() {
    let c = Counter::new(1_000_000_000, Features::default()).unwrap();
    let mut vcpu = VcpuTimers::new();
    let delta = 40_000_000_000u64; // Δ·10^9 > 2^64
    arm(&mut vcpu, &c, TimerId::Virt, delta, ENABLE, 0);
    assert_eq!(vcpu.next_deadline(&c, 0).unwrap().delay_ns, delta);
    let slow = Counter::new(1, Features::default()).unwrap();
    let d = vcpu.next_deadline(&slow, 0).unwrap();
    assert_eq!(d.delay_ns, u64::MAX, "saturates");
}

#[test]
fn deadline_ticks_saturate_when_the_host_counter_would_wrap() {
    let mut c = counter();
    let mut vcpu = VcpuTimers::new();
    let now = u64::MAX - 5;
    c.set_virtual_count(0, now, [], &mut []);
    arm(&mut vcpu, &c, TimerId::Virt, 100, ENABLE, now);
    let d = vcpu.next_deadline(&c, now).unwrap();
    assert_eq!((d.ticks, d.delay_ticks), (u64::MAX, 100));
}

#[test]
fn no_deadline_when_disabled_masked_or_firing() {
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    let now = 1_000;
    arm(&mut vcpu, &c, TimerId::Virt, 2_000, 0, now);
    assert_eq!(vcpu.next_deadline(&c, now), None);
    vcpu.write_ctl(&c, TimerId::Virt, ENABLE | IMASK, now);
    assert_eq!(vcpu.next_deadline(&c, now), None);
    vcpu.write_ctl(&c, TimerId::Virt, ENABLE, now);
    assert_eq!(vcpu.next_deadline(&c, now).unwrap().ticks, 2_000);
    assert_eq!(vcpu.next_deadline(&c, 2_000), None);
}

#[test]
fn next_deadline_is_the_earliest_over_all_timers() {
    let c = counter_with(Features { el2: true, ecv: false });
    let mut vcpu = VcpuTimers::new();
    let now = 100;
    arm(&mut vcpu, &c, TimerId::Phys, 900, ENABLE, now);
    arm(&mut vcpu, &c, TimerId::Virt, 700, ENABLE, now);
    arm(&mut vcpu, &c, TimerId::HypVirt, 300, ENABLE, now);
    arm(&mut vcpu, &c, TimerId::HypPhys, 200, ENABLE | IMASK, now);
    assert_eq!(vcpu.next_deadline(&c, now).unwrap().ticks, 300);
    assert_eq!(vcpu.timer_deadline(&c, TimerId::Phys, now).unwrap().ticks, 900);
    assert_eq!(vcpu.level(&c, 300), Ppis::CNTHV);
    assert_eq!(vcpu.next_deadline(&c, 300).unwrap().ticks, 700);
}

#[test]
fn host_timer_firing_early_is_answered_by_a_later_deadline() {
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    arm(&mut vcpu, &c, TimerId::Virt, 1_000, ENABLE, 0);
    // The host woke at 990: nothing asserted, re-arm for the remaining 10 ticks.
    assert_eq!(vcpu.level(&c, 990), Ppis::empty());
    assert_eq!(vcpu.next_deadline(&c, 990).unwrap().delay_ticks, 10);
}

// ---- EL2 timers ----

#[test]
fn el2_timers_are_absent_without_el2() {
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    let out = arm(&mut vcpu, &c, TimerId::HypPhys, 0, ENABLE, 5);
    assert_eq!(out, Output::default());
    assert_eq!(vcpu.ctl(&c, TimerId::HypPhys, 5), TimerCtl::empty());
    assert_eq!(vcpu.state(), VcpuTimersState::default());
    assert_eq!(vcpu.next_deadline(&c, 0), None);
}

#[test]
fn el2_timers_assert_ppi_26_and_28() {
    let c = counter_with(Features { el2: true, ecv: false });
    let mut vcpu = VcpuTimers::new();
    assert_eq!(arm(&mut vcpu, &c, TimerId::HypPhys, 5, ENABLE, 5).raised(), Ppis::CNTHP);
    assert_eq!(arm(&mut vcpu, &c, TimerId::HypVirt, 5, ENABLE, 5).raised(), Ppis::CNTHV);
    assert_eq!(vcpu.level(&c, 5).bits(), (1 << 26) | (1 << 28));
}

// ---- System-register access ----

#[test]
fn cntfrq_reads_the_configured_frequency_and_guest_writes_are_undefined() {
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    let r = guest(&mut vcpu, &c, SysReg::CNTFRQ_EL0, El::El1, Access::Read, 0);
    assert_eq!(r, SysRegResult::Value(u64::from(FREQ)));
    for el in [El::El0, El::El1] {
        let r = guest(&mut vcpu, &c, SysReg::CNTFRQ_EL0, el, Access::Write(1), 0);
        assert_eq!(r, SysRegResult::Exception(Exception::Undefined));
    }
    assert_eq!(c.frequency(), FREQ);
}

#[test]
fn el0_counter_and_frequency_reads_trap_to_el1_unless_cntkctl_allows() {
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    let trap = SysRegResult::Exception(Exception::TrapToEl1);
    for reg in [SysReg::CNTFRQ_EL0, SysReg::CNTPCT_EL0, SysReg::CNTVCT_EL0] {
        assert_eq!(guest(&mut vcpu, &c, reg, El::El0, Access::Read, 7), trap, "{reg:?}");
        assert!(matches!(guest(&mut vcpu, &c, reg, El::El1, Access::Read, 7), SysRegResult::Value(_)));
    }
    vcpu.write_cntkctl(&c, Cntkctl::EL0VCTEN.bits());
    assert_eq!(guest(&mut vcpu, &c, SysReg::CNTVCT_EL0, El::El0, Access::Read, 7), SysRegResult::Value(7));
    assert!(matches!(
        guest(&mut vcpu, &c, SysReg::CNTFRQ_EL0, El::El0, Access::Read, 7),
        SysRegResult::Value(_)
    ));
    assert_eq!(guest(&mut vcpu, &c, SysReg::CNTPCT_EL0, El::El0, Access::Read, 7), trap);
    vcpu.write_cntkctl(&c, Cntkctl::EL0PCTEN.bits());
    assert_eq!(guest(&mut vcpu, &c, SysReg::CNTPCT_EL0, El::El0, Access::Read, 7), SysRegResult::Value(7));
    assert!(matches!(
        guest(&mut vcpu, &c, SysReg::CNTFRQ_EL0, El::El0, Access::Read, 7),
        SysRegResult::Value(_)
    ));
    assert_eq!(Exception::TrapToEl1.ec(), 0x18);
}

#[test]
fn el0_timer_accesses_trap_unless_el0vten_or_el0pten() {
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    let trap = SysRegResult::Exception(Exception::TrapToEl1);
    let cntv = [SysReg::CNTV_CTL_EL0, SysReg::CNTV_CVAL_EL0, SysReg::CNTV_TVAL_EL0];
    let cntp = [SysReg::CNTP_CTL_EL0, SysReg::CNTP_CVAL_EL0, SysReg::CNTP_TVAL_EL0];
    for reg in cntv.into_iter().chain(cntp) {
        assert_eq!(guest(&mut vcpu, &c, reg, El::El0, Access::Read, 0), trap);
        assert_eq!(guest(&mut vcpu, &c, reg, El::El0, Access::Write(1), 0), trap);
    }
    assert_eq!(vcpu.state(), VcpuTimersState::default(), "trapped writes had no effect");
    vcpu.write_cntkctl(&c, Cntkctl::EL0VTEN.bits());
    for reg in cntv {
        assert!(matches!(guest(&mut vcpu, &c, reg, El::El0, Access::Read, 0), SysRegResult::Value(_)));
    }
    assert_eq!(guest(&mut vcpu, &c, SysReg::CNTP_CTL_EL0, El::El0, Access::Read, 0), trap);
    vcpu.write_cntkctl(&c, Cntkctl::EL0PTEN.bits());
    let r = guest(&mut vcpu, &c, SysReg::CNTP_CTL_EL0, El::El0, Access::Write(ENABLE), 0);
    assert_eq!(r, SysRegResult::Done(Output { level: Ppis::CNTP, changed: Ppis::CNTP }));
}

#[test]
fn cntkctl_is_el1_only_and_ignores_bits_that_do_not_exist() {
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    let undef = SysRegResult::Exception(Exception::Undefined);
    assert_eq!(guest(&mut vcpu, &c, SysReg::CNTKCTL_EL1, El::El0, Access::Read, 0), undef);
    assert_eq!(guest(&mut vcpu, &c, SysReg::CNTKCTL_EL1, El::El0, Access::Write(3), 0), undef);
    assert!(matches!(
        guest(&mut vcpu, &c, SysReg::CNTKCTL_EL1, El::El1, Access::Write(u64::MAX), 0),
        SysRegResult::Done(_)
    ));
    assert_eq!(
        guest(&mut vcpu, &c, SysReg::CNTKCTL_EL1, El::El1, Access::Read, 0),
        SysRegResult::Value(0x3ff)
    );
    let ecv = counter_with(Features { el2: false, ecv: true });
    vcpu.write_cntkctl(&ecv, u64::MAX);
    assert_eq!(vcpu.cntkctl().bits(), 0x2_03ff);
}

#[test]
fn el2_secure_and_alias_registers_are_undefined_from_el0_and_el1() {
    let c = counter_with(Features { el2: true, ecv: true });
    let mut vcpu = VcpuTimers::new();
    let undef = SysRegResult::Exception(Exception::Undefined);
    for &reg in SysReg::ALL {
        if reg.kind() != sysreg::Kind::Higher {
            continue;
        }
        for el in [El::El0, El::El1] {
            assert_eq!(guest(&mut vcpu, &c, reg, el, Access::Read, 0), undef, "{reg:?}");
            assert_eq!(guest(&mut vcpu, &c, reg, el, Access::Write(1), 0), undef, "{reg:?}");
        }
    }
    assert_eq!(c.offset(Offset::Virtual), 0);
}

#[test]
fn count_registers_are_read_only_and_ecv_views_need_ecv() {
    let plain = counter();
    let ecv = counter_with(Features { el2: false, ecv: true });
    let mut vcpu = VcpuTimers::new();
    let undef = SysRegResult::Exception(Exception::Undefined);
    for reg in [SysReg::CNTPCT_EL0, SysReg::CNTVCT_EL0, SysReg::CNTPCTSS_EL0, SysReg::CNTVCTSS_EL0] {
        assert_eq!(guest(&mut vcpu, &ecv, reg, El::El1, Access::Write(0), 9), undef, "{reg:?}");
    }
    for reg in [SysReg::CNTPCTSS_EL0, SysReg::CNTVCTSS_EL0] {
        assert_eq!(guest(&mut vcpu, &plain, reg, El::El1, Access::Read, 9), undef);
        assert_eq!(guest(&mut vcpu, &ecv, reg, El::El1, Access::Read, 9), SysRegResult::Value(9));
    }
}

#[test]
fn guest_timer_accesses_read_and_write_the_registers() {
    let mut c = counter();
    c.set_virtual_count(1_000, 5_000, [], &mut []);
    let mut vcpu = VcpuTimers::new();
    let now = 5_000;
    let r = guest(&mut vcpu, &c, SysReg::CNTV_TVAL_EL0, El::El1, Access::Write(0xdead_0000_0000_0064), now);
    assert_eq!(r, SysRegResult::Done(Output::default()));
    assert_eq!(
        guest(&mut vcpu, &c, SysReg::CNTV_CVAL_EL0, El::El1, Access::Read, now),
        SysRegResult::Value(1_100)
    );
    guest(&mut vcpu, &c, SysReg::CNTV_CTL_EL0, El::El1, Access::Write(ENABLE), now);
    let later = now + 200;
    assert_eq!(
        guest(&mut vcpu, &c, SysReg::CNTV_CTL_EL0, El::El1, Access::Read, later),
        SysRegResult::Value(ENABLE | ISTATUS)
    );
    assert_eq!(
        guest(&mut vcpu, &c, SysReg::CNTV_TVAL_EL0, El::El1, Access::Read, later),
        SysRegResult::Value(u64::from((-100i32) as u32))
    );
    assert_eq!(
        guest(&mut vcpu, &c, SysReg::CNTVCT_EL0, El::El1, Access::Read, later),
        SysRegResult::Value(1_200)
    );
    assert_eq!(
        guest(&mut vcpu, &c, SysReg::CNTPCT_EL0, El::El1, Access::Read, later),
        SysRegResult::Value(later)
    );
}

// ---- Event stream ----

#[test]
fn event_stream_fires_on_the_selected_transition_of_the_virtual_count_bit() {
    let mut c = counter();
    let mut vcpu = VcpuTimers::new();
    c.set_virtual_count(0, 1_000, [], &mut []);
    assert_eq!(vcpu.next_event(&c, 1_000), None, "EVNTEN clear");
    // EVNTEN, EVNTI = 4, rising: virtual counts ≡ 16 (mod 32).
    vcpu.write_cntkctl(&c, Cntkctl::EVNTEN.bits() | (4 << 4));
    assert_eq!(vcpu.next_event(&c, 1_000).unwrap().ticks, 1_016);
    assert_eq!(vcpu.next_event(&c, 1_016).unwrap().ticks, 1_048);
    // EVNTDIR: falling, counts ≡ 0 (mod 32).
    vcpu.write_cntkctl(&c, (Cntkctl::EVNTEN | Cntkctl::EVNTDIR).bits() | (4 << 4));
    assert_eq!(vcpu.next_event(&c, 1_000).unwrap().ticks, 1_032);
    assert_eq!(vcpu.events_between(&c, 1_000, 1_000 + 32 * 10), 10);
    assert_eq!(vcpu.events_between(&c, 1_000, 1_031), 0);
}

#[test]
fn evntis_scales_the_event_bit_by_256_with_ecv() {
    let c = counter_with(Features { el2: false, ecv: true });
    let mut vcpu = VcpuTimers::new();
    vcpu.write_cntkctl(&c, (Cntkctl::EVNTEN | Cntkctl::EVNTIS).bits());
    // Bit 8 rising: counts ≡ 256 (mod 512).
    assert_eq!(vcpu.next_event(&c, 0).unwrap().ticks, 256);
}

// ---- State ----

#[test]
fn restore_mid_pending_reproduces_the_output_and_deadline() {
    let mut c = counter();
    c.set_virtual_count(0, 77, [], &mut []);
    let mut vcpu = VcpuTimers::new();
    arm(&mut vcpu, &c, TimerId::Virt, 100, ENABLE, 150); // firing
    arm(&mut vcpu, &c, TimerId::Phys, 10_000, ENABLE, 150); // pending
    let (cs, vs) = (c.state(), vcpu.state());

    let mut c2 = counter();
    c2.restore(&cs).unwrap();
    let mut v2 = VcpuTimers::new();
    v2.restore(&c2, &vs).unwrap();
    assert_eq!(v2, vcpu);
    for now in [150, 9_999, 10_000, 1 << 40] {
        assert_eq!(v2.level(&c2, now), vcpu.level(&c, now));
        assert_eq!(v2.next_deadline(&c2, now), vcpu.next_deadline(&c, now));
    }
}

#[test]
fn invalid_state_is_refused_and_changes_nothing() {
    let mut c = counter();
    assert_eq!(c.restore(&CounterState::reset(0)), Err(StateError::ZeroFrequency));
    assert_eq!(c, counter());
    assert_eq!(Counter::new(0, Features::default()), Err(StateError::ZeroFrequency));
    let mut vcpu = VcpuTimers::new();
    let bad = VcpuTimersState { cntv: TimerState { ctl: 0x10, cval: 1 }, ..Default::default() };
    assert!(vcpu.restore(&c, &bad).is_err());
    assert_eq!(vcpu, VcpuTimers::new());
}

#[test]
fn restore_refuses_a_ctl_with_istatus_rather_than_dropping_it() {
    // A CTL read back from a firing timer carries ISTATUS; the model derives it, so a state
    // holding it is refused (not installed with the bit dropped, which `state()` would then
    // not return).
    let c = counter();
    let mut vcpu = VcpuTimers::new();
    arm(&mut vcpu, &c, TimerId::Phys, 7, ENABLE, 9);
    let before = vcpu;
    let read_back = VcpuTimersState { cntp: TimerState { ctl: ENABLE | ISTATUS, cval: 7 }, ..vcpu.state() };
    assert_eq!(vcpu.restore(&c, &read_back), Err(StateError::CtlIstatus { timer: TimerId::Phys }));
    assert_eq!(vcpu, before);
    let masked = VcpuTimersState { cntp: TimerState { ctl: ENABLE, cval: 7 }, ..read_back };
    assert_eq!(vcpu.restore(&c, &masked), Ok(()));
    assert_eq!(vcpu.state(), masked);
    assert!(vcpu.istatus(&c, TimerId::Phys, 9), "ISTATUS follows from the restored CTL and CVAL");
}

#[cfg(feature = "serde")]
#[test]
fn state_survives_serialization() {
    extern crate std;
    let mut c = counter();
    c.set_virtual_count(3, 9, [], &mut []);
    let mut vcpu = VcpuTimers::new();
    arm(&mut vcpu, &c, TimerId::Virt, u64::MAX, ENABLE | IMASK, 9);
    let json = serde_json::to_string(&(c.state(), vcpu.state())).unwrap();
    let back: (CounterState, VcpuTimersState) = serde_json::from_str(&json).unwrap();
    assert_eq!(back, (c.state(), vcpu.state()));
}

#[test]
fn restore_refuses_a_counter_of_another_frequency() {
    let mut c = counter();
    let mut other = Counter::new(c.frequency() * 2, Features::default()).unwrap();
    other.set_offset(Offset::Virtual, 5, 0, [], &mut []);
    let before = c;
    assert!(matches!(c.restore(&other.state()), Err(StateError::FrequencyMismatch { .. })));
    assert_eq!(c, before);
}
