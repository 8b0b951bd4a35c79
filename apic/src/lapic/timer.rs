//! The APIC timer: the bus clock it counts, one-shot and periodic countdowns, and the
//! IA32_TSC_DEADLINE register.
//!
//! The countdown is kept as the bus-clock tick at which the current count reaches zero, so the
//! current count, the next host deadline and the periodic reloads are exact integer functions of
//! `now` with no drift: a periodic timer's k-th expiry is exactly `k · period` ticks after it
//! started, however late the VMM calls back.

use super::regs::{divide_shift, TimerMode};

/// The clock the APIC timer counts, derived from the host TSC that every call takes as `now`:
/// `ticks(h) = ⌊h · bus_hz / host_tsc_hz⌋`.
///
/// KVM clocks its APIC timer at 1 GHz (one bus cycle per ns; `KVM_CAP_X86_APIC_BUS_CYCLES_NS`
/// changes it); a VMM that advertises another rate in CPUID leaf 0x15 sets it here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BusClock {
    bus_hz: u64,
    host_tsc_hz: u64,
}

impl Default for BusClock {
    /// A 1 GHz bus counted against a 1 GHz `now`: `now` is then nanoseconds and one bus tick
    /// is one nanosecond, as in KVM.
    fn default() -> Self {
        BusClock { bus_hz: 1_000_000_000, host_tsc_hz: 1_000_000_000 }
    }
}

impl BusClock {
    /// A bus of `bus_hz` counted against a `now` that advances `host_tsc_hz` per second.
    /// `None` if either rate is 0.
    pub const fn new(bus_hz: u64, host_tsc_hz: u64) -> Option<Self> {
        if bus_hz == 0 || host_tsc_hz == 0 {
            None
        } else {
            Some(BusClock { bus_hz, host_tsc_hz })
        }
    }

    /// The bus frequency in Hz.
    pub const fn bus_hz(&self) -> u64 {
        self.bus_hz
    }

    /// The rate of `now` in Hz (the host TSC frequency).
    pub const fn host_tsc_hz(&self) -> u64 {
        self.host_tsc_hz
    }

    /// The bus tick at host TSC `host_tsc` (saturating at `u64::MAX`).
    #[inline]
    pub const fn ticks(&self, host_tsc: u64) -> u64 {
        // Below 2^128: both factors are below 2^64.
        let t = (host_tsc as u128).wrapping_mul(self.bus_hz as u128);
        match t.checked_div(self.host_tsc_hz as u128) {
            Some(q) if q <= u64::MAX as u128 => q as u64,
            _ => u64::MAX,
        }
    }

    /// The first host TSC value at which [`BusClock::ticks`] reaches `ticks`:
    /// `⌈ticks · host_tsc_hz / bus_hz⌉`, or `None` if that lies beyond `u64::MAX`.
    #[inline]
    pub const fn host_tsc_at(&self, ticks: u64) -> Option<u64> {
        let t = (ticks as u128).wrapping_mul(self.host_tsc_hz as u128);
        let hz = if self.bus_hz == 0 { 1 } else { self.bus_hz as u128 };
        let q = t.div_ceil(hz);
        if q > u64::MAX as u128 {
            None
        } else {
            Some(q as u64)
        }
    }
}

/// The timer registers and the countdown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TimerState {
    /// Initial count register (TMICT).
    pub initial_count: u32,
    /// Divide configuration register (TDCR), bits 3, 1 and 0.
    pub divide_config: u32,
    /// The bus tick at which the current count reaches zero, while a one-shot or periodic
    /// countdown runs; `None` when the timer is stopped (initial count 0, one-shot expired,
    /// TSC-deadline mode). Absolute on the host's bus clock: see
    /// [`crate::lapic::LocalApicState::moved`] to move a snapshot to another clock.
    pub expiry: Option<u64>,
    /// IA32_TSC_DEADLINE: the guest TSC value at which the timer fires in TSC-deadline mode,
    /// or 0 when disarmed.
    pub tsc_deadline: u64,
}

impl TimerState {
    /// The bus ticks per count: 2^shift, shift 0–7.
    #[inline]
    pub const fn divide_shift(&self) -> u32 {
        divide_shift(self.divide_config)
    }

    /// One countdown of the initial count in bus ticks (`TMICT · divisor`), raised to
    /// `min_period` in periodic mode.
    #[inline]
    pub const fn period(&self, mode: TimerMode, min_period: u64) -> u64 {
        let period = (self.initial_count as u64) << self.divide_shift();
        if matches!(mode, TimerMode::Periodic) && period != 0 && period < min_period {
            min_period
        } else {
            period
        }
    }

    /// The current count register (TMCCT) at bus tick `now`: 0 when stopped or in TSC-deadline
    /// mode, else the whole counts left before the next expiry.
    #[inline]
    pub fn current_count(&self, mode: TimerMode, now: u64, min_period: u64) -> u32 {
        let Some(expiry) = self.expiry else { return 0 };
        if matches!(mode, TimerMode::TscDeadline) {
            return 0;
        }
        let period = self.period(mode, min_period);
        let mut remaining = expiry.saturating_sub(now);
        if period != 0 && remaining > period {
            // Only after a divide change stretched the current count (KVM reduces it the same
            // way).
            remaining = remaining.checked_rem(period).unwrap_or(remaining);
        }
        u32::try_from(remaining >> self.divide_shift()).unwrap_or(u32::MAX)
    }

    /// TMICT is written at bus tick `now` in a one-shot or periodic mode: the count restarts
    /// from `value` (0 stops the timer).
    #[inline]
    pub fn start(&mut self, value: u32, mode: TimerMode, now: u64, min_period: u64) {
        self.initial_count = value;
        let period = self.period(mode, min_period);
        self.expiry = match mode {
            TimerMode::OneShot | TimerMode::Periodic if period != 0 => Some(now.saturating_add(period)),
            _ => None,
        };
    }

    /// Time has reached bus tick `now`: returns whether the countdown reached zero. A one-shot
    /// (or reserved-mode) countdown then stops; a periodic one reloads, and if the VMM called
    /// back late it skips the periods that passed (one interrupt, as the IRR coalesces them
    /// on hardware) while keeping the phase: the next expiry is the first `expiry + k · period`
    /// after `now`.
    #[inline]
    pub fn expire(&mut self, mode: TimerMode, now: u64, min_period: u64) -> bool {
        let Some(expiry) = self.expiry else { return false };
        if now < expiry {
            return false;
        }
        let period = self.period(mode, min_period);
        self.expiry = match mode {
            TimerMode::Periodic if period != 0 => {
                // periods ≥ 1 since now ≥ expiry; the product ≤ now - expiry + period.
                let periods = now.wrapping_sub(expiry).checked_div(period).unwrap_or(0).saturating_add(1);
                Some(expiry.saturating_add(periods.saturating_mul(period)))
            }
            _ => None,
        };
        true
    }

    /// TDCR is written at bus tick `now`: a running count continues at the new rate from the
    /// count it has reached (the remaining ticks are rescaled), as KVM does ("Apply change to
    /// TDCR right away to the timer") and the hardware does.
    #[inline]
    pub fn set_divide(&mut self, value: u32, now: u64) {
        let old = self.divide_shift();
        self.divide_config = value;
        let new = self.divide_shift();
        if let Some(expiry) = self.expiry {
            let remaining = u128::from(expiry.saturating_sub(now));
            // remaining · 2^new / 2^old, floored like KVM's mul_u64_u32_div.
            let rescaled = (remaining << new) >> old;
            self.expiry = Some(now.saturating_add(u64::try_from(rescaled).unwrap_or(u64::MAX)));
        }
    }

    /// The LVT timer's mode changes from `old` to `new`. Between one-shot and periodic the count
    /// runs on (kvm-unit-tests `apic_change_mode`); entering or leaving TSC-deadline mode
    /// disarms the timer and clears TMICT and the deadline (SDM "TSC-Deadline Mode"; KVM
    /// `apic_update_lvtt`).
    #[inline]
    pub fn change_mode(&mut self, old: TimerMode, new: TimerMode) {
        let deadline = |m| matches!(m, TimerMode::TscDeadline);
        if deadline(old) != deadline(new) {
            self.expiry = None;
            self.initial_count = 0;
            self.tsc_deadline = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_clock_converts_both_ways_exactly() {
        // 1 GHz bus against a 2.596132 GHz TSC (this project's hosts).
        let clock = BusClock::new(1_000_000_000, 2_596_132_000).unwrap();
        for ticks in [0, 1, 2, 999, 1_000_000, 123_456_789_012] {
            let h = clock.host_tsc_at(ticks).unwrap();
            assert!(clock.ticks(h) >= ticks);
            assert!(h == 0 || clock.ticks(h - 1) < ticks, "first host TSC reaching {ticks}");
        }
        assert_eq!(BusClock::new(0, 1), None);
        assert_eq!(clock.host_tsc_at(u64::MAX), None);
        assert_eq!(BusClock::new(u64::MAX, 1).unwrap().ticks(2), u64::MAX);
    }

    #[test]
    fn one_shot_counts_down_once() {
        let mut t = TimerState { divide_config: 0xB, ..TimerState::default() }; // ÷1
        t.start(100, TimerMode::OneShot, 1000, 0);
        assert_eq!(t.current_count(TimerMode::OneShot, 1000, 0), 100);
        assert_eq!(t.current_count(TimerMode::OneShot, 1040, 0), 60);
        assert!(!t.expire(TimerMode::OneShot, 1099, 0));
        assert!(t.expire(TimerMode::OneShot, 1100, 0));
        assert_eq!(t.expiry, None);
        assert_eq!(t.current_count(TimerMode::OneShot, 1200, 0), 0);
        assert!(!t.expire(TimerMode::OneShot, 5000, 0));
    }

    #[test]
    fn a_late_periodic_callback_fires_once_and_keeps_the_phase() {
        let mut t = TimerState { divide_config: 0xB, ..TimerState::default() };
        t.start(10, TimerMode::Periodic, 0, 0);
        assert!(t.expire(TimerMode::Periodic, 10, 0));
        assert_eq!(t.expiry, Some(20));
        // The VMM slept through 3.5 periods: one expiry, next one on the original grid.
        assert!(t.expire(TimerMode::Periodic, 55, 0));
        assert_eq!(t.expiry, Some(60));
        assert_eq!(t.current_count(TimerMode::Periodic, 55, 0), 5);
    }

    #[test]
    fn divide_change_rescales_the_remaining_count() {
        let mut t = TimerState::default(); // ÷2
        t.start(100, TimerMode::OneShot, 0, 0); // expires at 200
        assert_eq!(t.current_count(TimerMode::OneShot, 100, 0), 50);
        t.set_divide(0x1, 100); // ÷4: the 50 counts left now take 200 ticks
        assert_eq!(t.expiry, Some(300));
        assert_eq!(t.current_count(TimerMode::OneShot, 100, 0), 50);
    }

    #[test]
    fn min_period_only_clamps_periodic_mode() {
        let t = TimerState { initial_count: 1, divide_config: 0xB, ..TimerState::default() };
        assert_eq!(t.period(TimerMode::Periodic, 500), 500);
        assert_eq!(t.period(TimerMode::OneShot, 500), 1);
    }
}
