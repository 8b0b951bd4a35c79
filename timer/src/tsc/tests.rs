//! Unit tests of [`Tsc`]: the MSR coupling rules, host writes, rate changes, the embedded
//! deadline and save/restore.

use super::*;

const VMX: ScalingFormat = ScalingFormat::Vmx;

/// A vCPU created at host TSC `host_tsc` with its TSC set to 0 there, as KVM does at creation.
fn tsc_started_at(host_tsc: u64) -> Tsc {
    let mut tsc = Tsc::default();
    tsc.host_set_tsc(0, host_tsc);
    tsc
}

#[test]
fn tsc_adjust_resets_to_zero() {
    let tsc = Tsc::default();
    assert_eq!(tsc.read_tsc_adjust(), 0);
    assert_eq!(tsc.read_tsc_deadline(), 0);
    assert_eq!(tsc.read_tsc(12345), 12345, "offset 0, no scaling");
}

#[test]
fn guest_tsc_write_moves_tsc_adjust_by_the_same_delta() {
    let mut tsc = tsc_started_at(1_000);
    let host = 5_000;
    let before = tsc.read_tsc(host); // 4000
    assert!(!tsc.guest_write_tsc(1_000_000, host));
    assert_eq!(tsc.read_tsc(host), 1_000_000);
    assert_eq!(tsc.read_tsc_adjust(), 1_000_000 - before);
    // Backwards: TSC_ADJUST goes negative (two's complement).
    assert!(!tsc.guest_write_tsc(0, host));
    assert_eq!(tsc.read_tsc_adjust(), 0u64.wrapping_sub(before));
}

#[test]
fn guest_tsc_adjust_write_moves_the_tsc_by_the_same_delta() {
    let mut tsc = tsc_started_at(0);
    let host = 10_000;
    assert!(!tsc.guest_write_tsc_adjust(500, host));
    assert_eq!(tsc.read_tsc(host), 10_500);
    assert!(!tsc.guest_write_tsc_adjust((-200i64) as u64, host));
    assert_eq!(tsc.read_tsc_adjust(), (-200i64) as u64);
    assert_eq!(tsc.read_tsc(host), 9_800);
}

#[test]
fn host_tsc_write_leaves_tsc_adjust_alone() {
    let mut tsc = tsc_started_at(0);
    assert!(!tsc.guest_write_tsc_adjust(777, 0));
    tsc.host_set_tsc(1 << 40, 100);
    assert_eq!(tsc.read_tsc(100), 1 << 40);
    assert_eq!(tsc.read_tsc_adjust(), 777);
}

#[test]
fn host_tsc_adjust_write_leaves_the_tsc_alone() {
    let mut tsc = tsc_started_at(0);
    tsc.host_set_tsc_adjust(123_456);
    assert_eq!(tsc.read_tsc_adjust(), 123_456);
    assert_eq!(tsc.read_tsc(50), 50);
}

#[test]
fn host_offset_write_sets_the_offset_exactly() {
    let mut tsc = Tsc::new(TscScaling::new(VMX, 3 << 47).unwrap());
    let offset = (!0u64) << 48;
    tsc.host_set_offset(offset);
    assert_eq!(tsc.offset(), offset);
    assert_eq!(tsc.read_tsc(1 << 48), offset.wrapping_add(3 << 47));
    assert_eq!(tsc.read_tsc_adjust(), 0);
}

/// The stages of Linux's `tools/testing/selftests/kvm/x86/tsc_msrs_test.c`, replayed on the
/// model: host TSC time passes between steps (less than half a unit), and, as the selftest
/// does, values are compared after rounding to units of 2^30.
#[test]
fn tsc_msrs_test_stages() {
    const UNITY: u64 = 1 << 30;
    const HOST_ADJUST: u64 = UNITY * 64;
    const GUEST_STEP: u64 = UNITY * 4;
    fn rounded(x: u64) -> u64 {
        x.wrapping_add(UNITY / 2) & !(UNITY - 1)
    }
    let mut host = 3_000_000_000u64; // host TSC when the vCPU is created
    let mut tick = || {
        host += 12_345;
        host
    };
    let mut tsc = tsc_started_at(tick());

    // Stage 1: both start at 0; a guest TSC write moves both.
    assert_eq!(rounded(tsc.read_tsc(tick())), 0);
    assert_eq!(rounded(tsc.read_tsc_adjust()), 0);
    let val = GUEST_STEP;
    assert!(!tsc.guest_write_tsc(val, tick()));
    assert_eq!(rounded(tsc.read_tsc(tick())), val);
    assert_eq!(rounded(tsc.read_tsc_adjust()), val);

    // Stage 2: a guest TSC_ADJUST write moves both.
    let val = 2 * GUEST_STEP;
    assert!(!tsc.guest_write_tsc_adjust(val, tick()));
    assert_eq!(rounded(tsc.read_tsc(tick())), val);
    assert_eq!(rounded(tsc.read_tsc_adjust()), val);

    // Host: a TSC write sets the offset and leaves TSC_ADJUST alone.
    tsc.host_set_tsc(HOST_ADJUST + val, tick());
    assert_eq!(rounded(tsc.read_tsc(tick())), HOST_ADJUST + val);
    assert_eq!(rounded(tsc.read_tsc_adjust()), val);

    // Stage 3: the guest sees the same.
    assert_eq!(rounded(tsc.read_tsc(tick())), HOST_ADJUST + val);
    assert_eq!(rounded(tsc.read_tsc_adjust()), val);

    // Host: a TSC_ADJUST write leaves the TSC alone; then the old value is put back.
    tsc.host_set_tsc_adjust(UNITY * 123_456);
    assert_eq!(rounded(tsc.read_tsc(tick())), HOST_ADJUST + val);
    assert_eq!(tsc.read_tsc_adjust(), UNITY * 123_456);
    tsc.host_set_tsc_adjust(val);

    // Stage 4: a guest TSC_ADJUST write keeps the host's offset and moves both.
    let val = 3 * GUEST_STEP;
    assert!(!tsc.guest_write_tsc_adjust(val, tick()));
    assert_eq!(rounded(tsc.read_tsc(tick())), HOST_ADJUST + val);
    assert_eq!(rounded(tsc.read_tsc_adjust()), val);

    // Stage 5: a guest TSC write moves both, so the host's offset shows in TSC_ADJUST.
    let val = 4 * GUEST_STEP;
    assert!(!tsc.guest_write_tsc(val, tick()));
    assert_eq!(rounded(tsc.read_tsc(tick())), val);
    assert_eq!(rounded(tsc.read_tsc_adjust()), val.wrapping_sub(HOST_ADJUST));
}

#[test]
fn rate_change_keeps_the_guest_tsc_continuous() {
    let mut tsc = tsc_started_at(1_000);
    let host = 1_000_000;
    let before = tsc.read_tsc(host);
    tsc.set_scaling(TscScaling::new(VMX, 1 << 46).unwrap(), host); // 0.25
    assert_eq!(tsc.read_tsc(host), before);
    assert_eq!(tsc.read_tsc(host + 4_000), before + 1_000);
    assert_eq!(tsc.read_tsc_adjust(), 0);
}

#[test]
fn deadline_is_rederived_when_the_offset_or_ratio_changes() {
    let mut tsc = tsc_started_at(0);
    assert!(!tsc.guest_write_tsc_deadline(10_000, 0));
    assert_eq!(tsc.next_deadline(0), Some(10_000));
    // The host moves the TSC 4000 ahead: the deadline comes 4000 host ticks earlier.
    tsc.host_set_offset(4_000);
    assert_eq!(tsc.next_deadline(0), Some(6_000));
    // Doubling the rate at host 2000 (guest 6000): 4000 guest ticks left = 2000 host ticks.
    tsc.set_scaling(TscScaling::new(VMX, 2 << 48).unwrap(), 2_000);
    assert_eq!(tsc.next_deadline(2_000), Some(4_000));
    assert_eq!(tsc.read_tsc_deadline(), 10_000, "the MSR keeps the guest's value");
}

#[test]
fn guest_tsc_write_past_the_deadline_fires_it() {
    let mut tsc = tsc_started_at(0);
    assert!(!tsc.guest_write_tsc_deadline(1_000_000, 10));
    assert!(tsc.guest_write_tsc(2_000_000, 20));
    assert_eq!(tsc.read_tsc_deadline(), 0);
    assert!(!tsc.advance(30));
}

#[test]
fn guest_tsc_adjust_write_past_the_deadline_fires_it() {
    let mut tsc = tsc_started_at(0);
    assert!(!tsc.guest_write_tsc_deadline(1_000, 10));
    assert!(tsc.guest_write_tsc_adjust(5_000, 20));
    assert_eq!(tsc.read_tsc_deadline(), 0);
}

#[test]
fn host_writes_do_not_fire_the_deadline_until_advance() {
    let mut tsc = tsc_started_at(0);
    assert!(!tsc.guest_write_tsc_deadline(1_000, 10));
    tsc.host_set_tsc(5_000, 20);
    assert_eq!(tsc.read_tsc_deadline(), 1_000);
    assert_eq!(tsc.next_deadline(20), Some(20), "due now");
    assert!(tsc.advance(20));
    assert_eq!(tsc.read_tsc_deadline(), 0);
}

#[test]
fn reset_zeroes_the_tsc_and_tsc_adjust_and_disarms_the_deadline() {
    let scaling = TscScaling::new(VMX, 3 << 47).unwrap();
    let mut tsc = Tsc::new(scaling);
    assert!(!tsc.guest_write_tsc_adjust(99, 0));
    assert!(!tsc.guest_write_tsc_deadline(u64::MAX, 0));
    tsc.reset(1 << 40);
    assert_eq!(tsc.read_tsc(1 << 40), 0);
    assert_eq!(tsc.read_tsc_adjust(), 0);
    assert_eq!(tsc.read_tsc_deadline(), 0);
    assert_eq!(tsc.scaling(), scaling);
}

#[test]
fn state_round_trips_through_restore() {
    let mut tsc = Tsc::new(TscScaling::new(ScalingFormat::Svm, 0xff_ffff_ffff).unwrap());
    tsc.host_set_offset((-(1i64 << 48)) as u64);
    assert!(!tsc.guest_write_tsc_adjust(42, 0));
    assert!(!tsc.guest_write_tsc_deadline(u64::MAX, 0));
    let state = tsc.state();
    assert_eq!(state.format, ScalingFormat::Svm);
    assert_eq!(state.tsc_deadline, u64::MAX);
    let mut other = Tsc::default();
    other.restore(&state).unwrap();
    assert_eq!(other, tsc);
    assert_eq!(other.state(), state);
}

#[test]
fn restore_refuses_an_invalid_ratio_and_leaves_the_tsc_unchanged() {
    let mut tsc = tsc_started_at(100);
    let before = tsc;
    let bad = TscState { format: ScalingFormat::Svm, ratio: 1 << 40, ..tsc.state() };
    assert!(matches!(tsc.restore(&bad), Err(StateError::Ratio(RatioError::TooLarge { .. }))));
    assert_eq!(tsc, before);
}

#[test]
fn restored_deadline_is_recomputed_on_the_new_host() {
    // Saved on a host whose TSC read 10^12 (guest TSC 5000), deadline 1000 guest ticks ahead.
    let mut source = Tsc::default();
    source.host_set_tsc(5_000, 1_000_000_000_000);
    assert!(!source.guest_write_tsc_deadline(6_000, 1_000_000_000_000));
    let state = source.state();
    // Restored on a host whose TSC reads 7: the VMM re-sets IA32_TSC first, then the deadline.
    let mut target = Tsc::default();
    target.restore(&state).unwrap();
    target.host_set_tsc(5_000, 7);
    assert_eq!(target.next_deadline(7), Some(1_007));
}

#[test]
fn restored_deadline_already_past_fires_at_the_next_advance() {
    let mut tsc = Tsc::default();
    tsc.restore(&TscState { offset: 1_000, tsc_deadline: 500, ..TscState::default() }).unwrap();
    assert_eq!(tsc.read_tsc_deadline(), 500, "restore does not fire");
    assert!(tsc.advance(0));
    assert_eq!(tsc.read_tsc_deadline(), 0);
}

#[test]
fn default_tsc_is_the_reset_state() {
    assert_eq!(Tsc::default().state(), TscState::default());
    assert_eq!(Tsc::new(TscScaling::identity(VMX)), Tsc::default());
    let svm = Tsc::new(TscScaling::identity(ScalingFormat::Svm));
    assert_eq!(svm.state(), TscState::reset(ScalingFormat::Svm));
}

#[test]
fn deadline_a_scaled_tsc_always_steps_over_has_no_host_deadline() {
    // Ratio 4: from 2^64 - 3 the guest TSC steps straight to 1 and then takes only values
    // that are 1 mod 4, so it never reads u64::MAX: the deadline never fires, and no host
    // time may be named for it (naming the wrapping tick would arm a timer that fires nothing).
    let mut tsc = Tsc::new(TscScaling::new(ScalingFormat::Vmx, 4 << 48).unwrap());
    tsc.host_set_tsc(u64::MAX - 2, 0);
    assert!(!tsc.guest_write_tsc_deadline(u64::MAX, 0));
    assert_eq!(tsc.next_deadline(0), None);
    assert!(!tsc.clone().advance(1));
    assert!(!tsc.advance(u64::MAX));
}
