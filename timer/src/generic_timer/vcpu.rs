//! One vCPU's timers: CTL/CVAL/TVAL, CNTKCTL_EL1, the PPI levels, the host deadline and the
//! event stream.

use super::arith;
use super::regs::{Cntkctl, Ppis, TimerCtl, TimerId};
use super::state::{StateError, TimerState, VcpuTimersState};
use super::{Counter, Deadline, Output};

/// One timer's registers: CTL holds only ENABLE and IMASK (ISTATUS is computed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct TimerRegs {
    ctl: TimerCtl,
    cval: u64,
}

/// A vCPU's generic timers and CNTKCTL_EL1.
///
/// Every method that depends on time takes the VM's [`Counter`] and `now`, the host counter in
/// ticks. Levels and deadlines are computed from the registers on each call, so nothing goes
/// stale: a host timer that fires early is answered by calling [`VcpuTimers::next_deadline`]
/// again. `Default` is the reset state.
///
/// The EL2 timers exist only when the counter's [`Features::el2`](super::Features::el2) is set;
/// otherwise they read as zero, ignore writes and never assert.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VcpuTimers {
    cntkctl: Cntkctl,
    timers: [TimerRegs; 4],
}

impl VcpuTimers {
    /// A vCPU at reset: every timer disabled and unmasked with CVAL 0, CNTKCTL_EL1 0.
    pub const fn new() -> Self {
        VcpuTimers { cntkctl: Cntkctl::empty(), timers: [TimerRegs { ctl: TimerCtl::empty(), cval: 0 }; 4] }
    }

    #[inline]
    fn regs(&self, timer: TimerId) -> TimerRegs {
        self.timers.get(timer.index()).copied().unwrap_or_default()
    }

    #[inline]
    fn present(counter: &Counter, timer: TimerId) -> bool {
        !timer.is_el2() || counter.features().el2
    }

    /// Timer condition met (ISTATUS): enabled and `count ≥ CVAL`.
    #[inline]
    fn fires(regs: TimerRegs, counter: &Counter, timer: TimerId, now: u64) -> bool {
        regs.ctl.contains(TimerCtl::ENABLE)
            && arith::condition_met(counter.timer_count(timer, now), regs.cval)
    }

    /// Output of one timer: ENABLE, ISTATUS and not IMASK.
    #[inline]
    fn asserts(regs: TimerRegs, counter: &Counter, timer: TimerId, now: u64) -> bool {
        !regs.ctl.contains(TimerCtl::IMASK) && Self::fires(regs, counter, timer, now)
    }

    /// ISTATUS of a timer: ENABLE is set and its count has reached CVAL (unsigned 64-bit
    /// compare). It reads 0 while the timer is disabled, and IMASK never affects it.
    pub fn istatus(&self, counter: &Counter, timer: TimerId, now: u64) -> bool {
        Self::present(counter, timer) && Self::fires(self.regs(timer), counter, timer, now)
    }

    /// A CTL read: ENABLE and IMASK as written, ISTATUS as [`VcpuTimers::istatus`].
    pub fn ctl(&self, counter: &Counter, timer: TimerId, now: u64) -> TimerCtl {
        if !Self::present(counter, timer) {
            return TimerCtl::empty();
        }
        let regs = self.regs(timer);
        let mut ctl = regs.ctl;
        ctl.set(TimerCtl::ISTATUS, Self::fires(regs, counter, timer, now));
        ctl
    }

    /// A CVAL read: the 64-bit compare value in the timer's own count domain.
    pub fn cval(&self, counter: &Counter, timer: TimerId) -> u64 {
        if Self::present(counter, timer) {
            self.regs(timer).cval
        } else {
            0
        }
    }

    /// A TVAL read: `lo32(CVAL − count)` zero-extended (bits 63:32 read 0), computed also while
    /// the timer is disabled. As an `i32` it is negative once the timer has expired.
    pub fn tval(&self, counter: &Counter, timer: TimerId, now: u64) -> u64 {
        if !Self::present(counter, timer) {
            return 0;
        }
        arith::tval(self.regs(timer).cval, counter.timer_count(timer, now))
    }

    /// The level of every PPI at `now`: a timer asserts its PPI when ENABLE is set, IMASK is
    /// clear and its count has reached CVAL. This is the GIC's resample hook.
    #[inline]
    pub fn level(&self, counter: &Counter, now: u64) -> Ppis {
        let mut level = Ppis::empty();
        let timers =
            if counter.features().el2 { self.timers.as_slice() } else { self.timers.get(..2).unwrap_or(&[]) };
        for (regs, id) in timers.iter().zip(TimerId::ALL) {
            if Self::asserts(*regs, counter, id, now) {
                level |= id.ppi_bit();
            }
        }
        level
    }

    /// Applies `update` to one timer's registers and reports the level change at `now`.
    #[inline]
    fn update(
        &mut self,
        counter: &Counter,
        timer: TimerId,
        now: u64,
        update: impl FnOnce(&mut TimerRegs),
    ) -> Output {
        if Self::present(counter, timer) {
            if let Some(regs) = self.timers.get_mut(timer.index()) {
                let before = Self::asserts(*regs, counter, timer, now);
                update(regs);
                let after = Self::asserts(*regs, counter, timer, now);
                let changed = if before == after { Ppis::empty() } else { timer.ppi_bit() };
                return Output { level: self.level(counter, now), changed };
            }
        }
        Output { level: self.level(counter, now), changed: Ppis::empty() }
    }

    /// A CTL write: ENABLE and IMASK take bits 0 and 1 of `value`; ISTATUS (bit 2, read-only)
    /// and bits 63:3 (RES0) are ignored.
    pub fn write_ctl(&mut self, counter: &Counter, timer: TimerId, value: u64, now: u64) -> Output {
        let ctl = TimerCtl::from_bits_truncate(value) & TimerCtl::WRITABLE;
        self.update(counter, timer, now, |regs| regs.ctl = ctl)
    }

    /// A CVAL write: all 64 bits, in the timer's own count domain.
    pub fn write_cval(&mut self, counter: &Counter, timer: TimerId, value: u64, now: u64) -> Output {
        self.update(counter, timer, now, |regs| regs.cval = value)
    }

    /// A TVAL write: `CVAL = count + sext32(value)`. Bits 63:32 of `value` are ignored, so
    /// `0x1_ffff_ffff` means −1 (already expired), not a far-future compare value.
    pub fn write_tval(&mut self, counter: &Counter, timer: TimerId, value: u64, now: u64) -> Output {
        let cval = arith::cval_from_tval(counter.timer_count(timer, now), value);
        self.update(counter, timer, now, |regs| regs.cval = cval)
    }

    /// CNTKCTL_EL1 as the guest reads it.
    pub const fn cntkctl(&self) -> Cntkctl {
        self.cntkctl
    }

    /// A CNTKCTL_EL1 write: bits that do not exist (RES0, and EVNTIS without FEAT_ECV) are
    /// ignored. It changes EL0 access and the event stream, never a PPI level.
    pub fn write_cntkctl(&mut self, counter: &Counter, value: u64) {
        self.cntkctl = Cntkctl::from_bits_truncate(value) & Cntkctl::writable(counter.features().ecv);
    }

    /// Ticks until one timer asserts its PPI, if it is armed (enabled and unmasked) and its
    /// condition does not hold yet. Computed in the timer's own domain as `CVAL − count`, never
    /// by forming `CVAL + offset` (which can overflow).
    #[inline]
    fn delay(&self, counter: &Counter, timer: TimerId, now: u64) -> Option<u64> {
        let regs = self.regs(timer);
        if !Self::present(counter, timer) || regs.ctl & TimerCtl::WRITABLE != TimerCtl::ENABLE {
            return None;
        }
        arith::ticks_until(counter.timer_count(timer, now), regs.cval)
    }

    fn deadline(counter: &Counter, now: u64, delay_ticks: u64) -> Deadline {
        Deadline {
            ticks: now.saturating_add(delay_ticks),
            delay_ticks,
            delay_ns: counter.ticks_to_ns(delay_ticks),
        }
    }

    /// When one timer will assert its PPI. `None` when it is disabled, masked or already firing
    /// (a firing timer stays high until the guest reprograms it or an offset moves; its 1→0
    /// transition when its count wraps past 2^64 − 1 is seen by resampling [`VcpuTimers::level`]).
    pub fn timer_deadline(&self, counter: &Counter, timer: TimerId, now: u64) -> Option<Deadline> {
        self.delay(counter, timer, now).map(|delay| Self::deadline(counter, now, delay))
    }

    /// The earliest deadline over all of the vCPU's timers, for arming one host timer (or for
    /// bounding a WFI sleep). On expiry, call again: the answer is recomputed from the registers.
    #[inline]
    pub fn next_deadline(&self, counter: &Counter, now: u64) -> Option<Deadline> {
        let mut earliest: Option<u64> = None;
        for id in TimerId::ALL {
            if let Some(delay) = self.delay(counter, id, now) {
                earliest = Some(earliest.map_or(delay, |e| e.min(delay)));
            }
        }
        earliest.map(|delay| Self::deadline(counter, now, delay))
    }

    /// The event stream's next event after `now` (it wakes a WFE), if CNTKCTL_EL1.EVNTEN is
    /// set: the next transition of virtual count bit EVNTI (+8 with EVNTIS) in the direction
    /// EVNTDIR selects (0: 0→1, 1: 1→0). The period is 2^(bit+1) ticks.
    pub fn next_event(&self, counter: &Counter, now: u64) -> Option<Deadline> {
        if !self.cntkctl.contains(Cntkctl::EVNTEN) {
            return None;
        }
        let falling = self.cntkctl.contains(Cntkctl::EVNTDIR);
        let delay = arith::ticks_to_next_event(counter.virtual_count(now), self.cntkctl.event_bit(), falling);
        Some(Self::deadline(counter, now, delay))
    }

    /// How many events the stream generated at host counter values in `(since, now]` (0 when
    /// EVNTEN is clear or `now ≤ since`). A vCPU in WFE since `since` wakes when this is nonzero.
    pub fn events_between(&self, counter: &Counter, since: u64, now: u64) -> u64 {
        if !self.cntkctl.contains(Cntkctl::EVNTEN) || now <= since {
            return 0;
        }
        let falling = self.cntkctl.contains(Cntkctl::EVNTDIR);
        arith::events_in(
            counter.virtual_count(since),
            now.wrapping_sub(since),
            self.cntkctl.event_bit(),
            falling,
        )
    }

    /// What moving from counter view `before` to `after` (an offset change) does to the outputs
    /// at `now`. [`Counter::set_offset`] calls this for every vCPU it is given.
    pub fn compare_counters(&self, before: &Counter, after: &Counter, now: u64) -> Output {
        let old = self.level(before, now);
        let level = self.level(after, now);
        Output { level, changed: old ^ level }
    }

    /// The vCPU's architectural state (no ISTATUS, no deadlines: both follow from it).
    pub fn state(&self) -> VcpuTimersState {
        let timer = |id: TimerId| {
            let regs = self.regs(id);
            TimerState { ctl: regs.ctl.bits(), cval: regs.cval }
        };
        VcpuTimersState {
            cntkctl: self.cntkctl.bits(),
            cntp: timer(TimerId::Phys),
            cntv: timer(TimerId::Virt),
            cnthp: timer(TimerId::HypPhys),
            cnthv: timer(TimerId::HypVirt),
        }
    }

    /// Replaces the vCPU's state after checking it against the VM's features
    /// ([`VcpuTimersState::validate`]); on error nothing changes. An accepted state is
    /// installed exactly: [`VcpuTimers::state`] returns it unchanged (a CTL with ISTATUS set is
    /// refused, not masked). Levels and deadlines follow from the restored registers and
    /// `counter`, so a VM restored with a timer pending asserts the same PPIs at the same counts.
    pub fn restore(&mut self, counter: &Counter, state: &VcpuTimersState) -> Result<(), StateError> {
        state.validate(counter.features())?;
        // Validated: CNTKCTL_EL1 holds only writable bits and each CTL only ENABLE and IMASK,
        // so nothing is dropped here.
        self.cntkctl = Cntkctl::from_bits_truncate(state.cntkctl);
        for (regs, id) in self.timers.iter_mut().zip(TimerId::ALL) {
            let saved = state.timer(id);
            *regs = TimerRegs { ctl: TimerCtl::from_bits_truncate(saved.ctl), cval: saved.cval };
        }
        Ok(())
    }
}
