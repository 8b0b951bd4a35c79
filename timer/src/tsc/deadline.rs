//! IA32_TSC_DEADLINE (MSR 0x6E0): the LAPIC timer's TSC-deadline mode, as a standalone
//! component.

use super::clock::GuestTsc;

/// Nanoseconds per second.
const NS_PER_SEC: u128 = 1_000_000_000;

/// The host nanoseconds that `ticks` host TSC ticks take at `host_tsc_hz`, rounded up (so that
/// a host timer set that far ahead never fires before the TSC has advanced `ticks`) and
/// saturating at `u64::MAX`. `None` if the frequency is 0 (unknown).
#[inline]
pub fn host_tsc_ticks_to_ns(ticks: u64, host_tsc_hz: u64) -> Option<u64> {
    let hz = u128::from(host_tsc_hz);
    // ticks · 10^9 < 2^94: no overflow.
    let scaled = u128::from(ticks).saturating_mul(NS_PER_SEC);
    let quotient = scaled.checked_div(hz)?;
    let remainder = scaled.checked_rem(hz)?;
    let ns = if remainder == 0 { quotient } else { quotient.saturating_add(1) };
    Some(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// The IA32_TSC_DEADLINE register (MSR 0x6E0) of one vCPU.
///
/// The SDM's rules: writing a non-zero value arms the timer for when the TSC reaches that value
/// (a later write replaces it); writing 0 disarms it; when the TSC is at or past the deadline
/// the timer interrupt is raised once, the timer disarms and the MSR then reads 0, so each
/// write causes at most one interrupt. A deadline already past when written fires at once.
///
/// The deadline is architecturally a TSC value, so it is kept as the guest's value and the
/// host time is derived from the current [`GuestTsc`] on every call: a change of offset or ratio
/// moves the host deadline with it, and nothing host-specific is ever stored.
///
/// This component knows nothing of the LAPIC's LVT timer register. The LAPIC (a later issue)
/// owns one and applies the mode gating: the MSR is written only while LVTT is in TSC-deadline
/// mode (otherwise writes are ignored and reads return 0), a switch into or out of that mode
/// calls [`TscDeadline::disarm`], and a masked LVTT still consumes the deadline when it fires.
/// [`Tsc`](super::Tsc) embeds one so that a VMM without that LAPIC has the whole per-vCPU TSC
/// state in one place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TscDeadline {
    deadline: u64,
}

impl TscDeadline {
    /// A disarmed deadline (the MSR's reset value, 0).
    #[inline]
    pub const fn new() -> Self {
        TscDeadline { deadline: 0 }
    }

    /// A deadline holding `value` as restored from a snapshot (0 = disarmed). Nothing fires
    /// here: a deadline already past fires at the next [`TscDeadline::advance`].
    #[inline]
    pub const fn with_value(value: u64) -> Self {
        TscDeadline { deadline: value }
    }

    /// RDMSR IA32_TSC_DEADLINE: the armed deadline, or 0 when disarmed or after it fired.
    #[inline(always)]
    pub const fn read(&self) -> u64 {
        self.deadline
    }

    /// Whether a deadline is armed (the MSR is non-zero).
    #[inline(always)]
    pub const fn is_armed(&self) -> bool {
        self.deadline != 0
    }

    /// WRMSR IA32_TSC_DEADLINE = `value` with the guest TSC given by `clock` at host TSC
    /// `now_host_tsc`. 0 disarms; any other value replaces the deadline. Returns `true` if the
    /// timer fired at once (the deadline is at or before the current guest TSC): deliver one
    /// timer interrupt; the MSR already reads 0.
    #[must_use = "a deadline in the past fires at once: deliver the timer interrupt"]
    pub fn write(&mut self, value: u64, clock: &GuestTsc, now_host_tsc: u64) -> bool {
        self.deadline = value;
        self.advance(clock, now_host_tsc)
    }

    /// Disarms the timer without an interrupt (the MSR reads 0), as writing 0 or an LVTT mode
    /// change does.
    #[inline]
    pub fn disarm(&mut self) {
        self.deadline = 0;
    }

    /// Whether the armed deadline has been reached: the guest TSC at `now_host_tsc` is at or
    /// past it (unsigned 64-bit compare, as the SDM states it). Changes nothing.
    #[inline]
    pub fn has_expired(&self, clock: &GuestTsc, now_host_tsc: u64) -> bool {
        self.is_armed() && clock.read(now_host_tsc) >= self.deadline
    }

    /// Time has reached host TSC `now_host_tsc`. Returns `true` if the deadline fired: it was
    /// armed and the guest TSC is at or past it. The timer is then disarmed (the MSR reads 0)
    /// and the caller delivers one timer interrupt; later calls return `false` until the guest
    /// arms it again.
    #[must_use = "a fired deadline is a timer interrupt to deliver"]
    #[inline]
    pub fn advance(&mut self, clock: &GuestTsc, now_host_tsc: u64) -> bool {
        let fired = self.has_expired(clock, now_host_tsc);
        if fired {
            self.deadline = 0;
        }
        fired
    }

    /// The host TSC value at which the deadline fires, for the VMM's host timer: `None` when
    /// disarmed or when no host TSC up to `u64::MAX` reaches it; `now_host_tsc` when it has
    /// already been reached (call [`TscDeadline::advance`]); otherwise the smallest host TSC
    /// `h > now_host_tsc` with guest TSC `≥` deadline (see [`GuestTsc::host_tsc_at_or_past`]),
    /// exact to the tick: [`TscDeadline::advance`] fires at `h` and not at `h − 1`. A scaled
    /// guest TSC that steps over a deadline near 2^64 while wrapping past 2^64 does not fire
    /// there; `h` is then the first of its later wraps that lands at or past the deadline.
    /// Ask again after any change of the offset or ratio.
    #[inline]
    pub fn next_deadline(&self, clock: &GuestTsc, now_host_tsc: u64) -> Option<u64> {
        if !self.is_armed() {
            return None;
        }
        clock.host_tsc_at_or_past(self.deadline, now_host_tsc)
    }

    /// [`TscDeadline::next_deadline`] as a host monotonic time in nanoseconds, for a host timer
    /// that counts nanoseconds: `now_ns` (the host clock when the host TSC read `now_host_tsc`)
    /// plus the remaining host TSC ticks at `host_tsc_hz`, rounded up and saturating. `None`
    /// when [`TscDeadline::next_deadline`] is `None` or `host_tsc_hz` is 0.
    #[inline]
    pub fn next_deadline_ns(
        &self,
        clock: &GuestTsc,
        now_host_tsc: u64,
        now_ns: u64,
        host_tsc_hz: u64,
    ) -> Option<u64> {
        let host_tsc = self.next_deadline(clock, now_host_tsc)?;
        let ns = host_tsc_ticks_to_ns(host_tsc.saturating_sub(now_host_tsc), host_tsc_hz)?;
        Some(now_ns.saturating_add(ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsc::{ScalingFormat, TscScaling};

    /// Guest TSC = host TSC + 1000.
    const CLOCK: GuestTsc = GuestTsc { scaling: TscScaling::identity(ScalingFormat::Vmx), offset: 1000 };

    #[test]
    fn deadline_reset_value_is_zero_and_disarmed() {
        let deadline = TscDeadline::default();
        assert_eq!(deadline.read(), 0);
        assert!(!deadline.is_armed());
        assert_eq!(deadline.next_deadline(&CLOCK, 0), None);
    }

    #[test]
    fn nonzero_write_arms_and_fires_when_the_guest_tsc_reaches_it() {
        let mut deadline = TscDeadline::new();
        assert!(!deadline.write(1500, &CLOCK, 0)); // guest TSC 1000
        assert_eq!(deadline.read(), 1500);
        assert_eq!(deadline.next_deadline(&CLOCK, 0), Some(500));
        assert!(!deadline.advance(&CLOCK, 499));
        assert_eq!(deadline.read(), 1500);
        assert!(deadline.advance(&CLOCK, 500));
        assert_eq!(deadline.read(), 0);
    }

    #[test]
    fn deadline_in_the_past_fires_at_once_and_then_reads_zero() {
        let mut deadline = TscDeadline::new();
        // Guest TSC is 1100 at host 100; 1100 (now) and 1 (long ago) are both due.
        for value in [1100, 1] {
            assert!(deadline.write(value, &CLOCK, 100));
            assert_eq!(deadline.read(), 0);
            assert!(!deadline.advance(&CLOCK, 200), "at most one interrupt per write");
            assert_eq!(deadline.next_deadline(&CLOCK, 200), None);
        }
    }

    #[test]
    fn writing_zero_disarms_without_an_interrupt() {
        let mut deadline = TscDeadline::new();
        assert!(!deadline.write(5000, &CLOCK, 0));
        assert!(!deadline.write(0, &CLOCK, 0));
        assert!(!deadline.is_armed());
        assert!(!deadline.advance(&CLOCK, u64::MAX - 2000));
    }

    #[test]
    fn rearming_replaces_the_previous_deadline() {
        let mut deadline = TscDeadline::new();
        assert!(!deadline.write(5000, &CLOCK, 0));
        assert!(!deadline.write(9000, &CLOCK, 0));
        assert!(!deadline.advance(&CLOCK, 4000), "the replaced deadline (5000) does not fire");
        assert_eq!(deadline.next_deadline(&CLOCK, 4000), Some(8000));
        // Pulling it earlier works the same way.
        assert!(!deadline.write(2000, &CLOCK, 0));
        assert_eq!(deadline.next_deadline(&CLOCK, 0), Some(1000));
    }

    #[test]
    fn expired_deadline_reports_now_until_advanced() {
        let deadline = TscDeadline::with_value(1200);
        assert_eq!(deadline.next_deadline(&CLOCK, 300), Some(300));
    }

    #[test]
    fn host_deadline_moves_with_the_offset() {
        let mut deadline = TscDeadline::new();
        assert!(!deadline.write(10_000, &CLOCK, 0));
        assert_eq!(deadline.next_deadline(&CLOCK, 0), Some(9000));
        let moved = GuestTsc { offset: 4000, ..CLOCK };
        assert_eq!(deadline.next_deadline(&moved, 0), Some(6000));
        let scaled = GuestTsc::new(TscScaling::new(ScalingFormat::Vmx, 2 << 48).unwrap(), 1000);
        assert_eq!(deadline.next_deadline(&scaled, 0), Some(4500));
    }

    #[test]
    fn deadline_stepped_over_on_thousands_of_wraps_is_found_on_the_wrap_that_lands() {
        // Issue 16, found by the `timers` fuzz target: VMX ratio u64::MAX (≈ 65536 guest ticks
        // per host tick) and offset 0x1c305 (as `host_set_offset` leaves them after
        // `Tsc::new`); the window [deadline, 2^64) is 0x7601 ticks wide, so most wraps step
        // over it. From this host TSC the guest TSC steps over it 24,415 times, then lands.
        let scaling = TscScaling::new(ScalingFormat::Vmx, u64::MAX).unwrap();
        let clock = GuestTsc::new(scaling, 0x1c305);
        let deadline = TscDeadline::with_value(0xffff_ffff_ffff_89ff);
        let now = 0x63a5_ffff_ffff_ffff;
        let host = 0xc305_ffff_ffff_ffff;
        assert_eq!(deadline.next_deadline(&clock, now), Some(host));
        assert!(!deadline.has_expired(&clock, host - 1));
        assert!(deadline.has_expired(&clock, host));
        let mut fired = deadline;
        assert!(!fired.advance(&clock, host - 1));
        assert!(fired.advance(&clock, host));
        // The same through `Tsc`, set up as the fuzz target sets it up.
        let mut tsc = crate::tsc::Tsc::new(scaling);
        tsc.host_set_offset(0x1c305);
        tsc.host_set_tsc_deadline(0xffff_ffff_ffff_89ff);
        assert_eq!(tsc.next_deadline(now), Some(host));
        assert!(tsc.advance(u64::MAX));
    }

    #[test]
    fn deadline_that_every_wrap_steps_over_is_never() {
        // Ratio 2.0 with an even guest TSC: it reads only even values, so the window
        // [2^64 − 1, 2^64) holding the odd u64::MAX is stepped over on every wrap.
        let clock = GuestTsc::new(TscScaling::new(ScalingFormat::Vmx, 2 << 48).unwrap(), 0);
        let deadline = TscDeadline::with_value(u64::MAX);
        assert_eq!(deadline.next_deadline(&clock, 0), None);
        assert!(!deadline.has_expired(&clock, u64::MAX));
        // An offset of 1 makes every value odd: the first wrap lands at u64::MAX.
        let clock = GuestTsc { offset: 1, ..clock };
        assert_eq!(deadline.next_deadline(&clock, 0), Some((1 << 63) - 1));
        assert_eq!(clock.read((1 << 63) - 1), u64::MAX);
    }

    #[test]
    fn host_ns_is_rounded_up_and_saturates() {
        // 3 ticks at 2 GHz = 1.5 ns → 2 ns.
        assert_eq!(host_tsc_ticks_to_ns(3, 2_000_000_000), Some(2));
        assert_eq!(host_tsc_ticks_to_ns(4, 2_000_000_000), Some(2));
        assert_eq!(host_tsc_ticks_to_ns(0, 2_000_000_000), Some(0));
        // u64::MAX ticks at 1 Hz: 1.8e28 ns saturates.
        assert_eq!(host_tsc_ticks_to_ns(u64::MAX, 1), Some(u64::MAX));
        assert_eq!(host_tsc_ticks_to_ns(1, 0), None);
    }

    #[test]
    fn next_deadline_in_ns_adds_the_remaining_ticks_to_now() {
        let mut deadline = TscDeadline::new();
        // 2000 host ticks ahead; at 3 GHz that is 666.67 ns → 667.
        assert!(!deadline.write(1000 + 3000, &CLOCK, 1000));
        assert_eq!(deadline.next_deadline_ns(&CLOCK, 1000, 50_000, 3_000_000_000), Some(50_667));
        assert_eq!(deadline.next_deadline_ns(&CLOCK, 1000, u64::MAX - 1, 3_000_000_000), Some(u64::MAX));
        assert_eq!(deadline.next_deadline_ns(&CLOCK, 1000, 50_000, 0), None);
    }
}
