//! The ARMv8 generic timer as a VM sees it: one system counter per VM, viewed through
//! CNTVOFF_EL2 and (FEAT_ECV) CNTPOFF_EL2, and each vCPU's EL1 physical and virtual timers
//! (and, for a VM with EL2, the EL2 physical and virtual timers).
//!
//! * [`Counter`] (per VM): CNTFRQ_EL0 as configuration, the VM-wide offsets, and tick↔ns
//!   conversion. The physical count is an input: every call takes `now`, the host counter in
//!   ticks, and the physical count *is* `now`.
//! * [`VcpuTimers`] (per vCPU): CTL, CVAL and TVAL of each timer, CNTKCTL_EL1 with its EL0
//!   access checks and event stream, the interrupt level of each timer's PPI ([`Ppis`]) and the
//!   next host deadline ([`Deadline`]).
//! * [`sysreg`]: the AArch64 encodings, so a VMM can forward a trapped MRS/MSR with
//!   [`VcpuTimers::access`] and get back the value read, "done", the exception to inject, or
//!   "not a generic-timer register".
//! * [`CounterState`] and [`VcpuTimersState`] are plain data with validating restores.
//!
//! Choices where the architecture leaves a value UNKNOWN: CTL and CNTKCTL_EL1 reset to 0 (as
//! KVM); TVAL reads `lo32(CVAL − count)` also while the timer is disabled (as KVM and QEMU);
//! ISTATUS reads 0 while the timer is disabled (as QEMU; KVM reports the raw comparison), so
//! ISTATUS is always "ENABLE and the condition holds".
//!
//! The output of each timer is a level. Nothing acknowledges the timer: the line stays high until
//! CTL or CVAL/TVAL is written or the count view moves (an offset change), so the GIC model should
//! resample [`VcpuTimers::level`] when the guest deactivates the PPI.
//!
//! ```
//! use vm_timer::generic_timer::{Counter, Features, Ppis, TimerCtl, TimerId, VcpuTimers};
//!
//! let mut counter = Counter::new(24_000_000, Features::default()).unwrap(); // 24 MHz
//! let mut vcpu = VcpuTimers::new();
//! let now = 1_000_000; // host counter, ticks
//! counter.set_virtual_count(0, now, [&vcpu], &mut []); // the guest's count starts at 0
//!
//! // The guest arms the virtual timer 24 000 ticks (1 ms) ahead through TVAL.
//! vcpu.write_tval(&counter, TimerId::Virt, 24_000, now);
//! let out = vcpu.write_ctl(&counter, TimerId::Virt, TimerCtl::ENABLE.bits(), now);
//! assert!(out.level.is_empty());
//! let deadline = vcpu.next_deadline(&counter, now).unwrap();
//! assert_eq!((deadline.ticks, deadline.delay_ns), (now + 24_000, 1_000_000));
//!
//! // At the deadline the PPI is high until the guest reprograms the timer.
//! assert_eq!(vcpu.level(&counter, deadline.ticks), Ppis::CNTV);
//! assert_eq!(vcpu.next_deadline(&counter, deadline.ticks), None);
//! ```

mod arith;
mod regs;
mod state;
pub mod sysreg;
mod vcpu;

pub use regs::{Cntkctl, Ppis, TimerCtl, TimerId};
pub use state::{CounterState, StateError, TimerState, VcpuTimersState};
pub use sysreg::{Access, El, Encoding, Exception, SysReg, SysRegResult};
pub use vcpu::VcpuTimers;

/// Optional architecture features of the VM, fixed when it is created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Features {
    /// The vCPUs have EL2 (nested virtualization): the EL2 physical and virtual timers exist.
    /// The guest's own EL2 accesses depend on HCR_EL2.E2H/NV redirection, which the model does
    /// not decide: the VMM drives these timers through the typed methods.
    pub el2: bool,
    /// FEAT_ECV: CNTPCTSS_EL0/CNTVCTSS_EL0 exist and CNTKCTL_EL1.EVNTIS is writable.
    pub ecv: bool,
}

/// Which of the VM-wide offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Offset {
    /// CNTVOFF_EL2: the virtual count is the physical count minus this. Applies to CNTVCT_EL0,
    /// the EL1 virtual timer and the event stream.
    Virtual,
    /// CNTPOFF_EL2 (FEAT_ECV, or a VMM that traps CNTPCT_EL0 and CNTP_*): CNTPCT_EL0 as EL0/EL1
    /// read it and the EL1 physical timer count the physical count minus this. The EL2 timers
    /// never see it.
    Physical,
}

/// What an operation did to a vCPU's timer outputs at `now`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Output {
    /// The PPIs asserted after the operation.
    pub level: Ppis,
    /// The PPIs whose level the operation changed.
    pub changed: Ppis,
}

impl Output {
    /// The PPIs the operation took from low to high.
    pub fn raised(&self) -> Ppis {
        self.level & self.changed
    }

    /// The PPIs the operation took from high to low.
    pub fn lowered(&self) -> Ppis {
        self.changed.difference(self.level)
    }
}

/// When a host timer must fire for the model to assert a PPI (or deliver an event).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Deadline {
    /// The host counter value at which the condition first holds (`now + delay_ticks`,
    /// saturating at `u64::MAX`).
    pub ticks: u64,
    /// Ticks from `now` to the deadline (≥ 1).
    pub delay_ticks: u64,
    /// `ceil(delay_ticks · 10^9 / CNTFRQ)`, saturating: host nanoseconds from `now` after which
    /// the counter has certainly reached the deadline. Sleeping this long is never early.
    pub delay_ns: u64,
}

/// The VM's system counter: CNTFRQ_EL0 and the VM-wide offsets CNTVOFF_EL2 and CNTPOFF_EL2
/// (one value for all vCPUs, as Linux KVM since 6.3, so vCPUs cannot drift apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Counter {
    cntfrq: u32,
    cntvoff: u64,
    cntpoff: u64,
    features: Features,
}

impl Counter {
    /// A counter running at `frequency` Hz (the host counter's frequency, which the guest reads
    /// in CNTFRQ_EL0), with both offsets zero. A zero frequency is refused.
    pub const fn new(frequency: u32, features: Features) -> Result<Counter, StateError> {
        if frequency == 0 {
            return Err(StateError::ZeroFrequency);
        }
        Ok(Counter { cntfrq: frequency, cntvoff: 0, cntpoff: 0, features })
    }

    /// CNTFRQ_EL0: the counter frequency in Hz.
    #[inline]
    pub const fn frequency(&self) -> u32 {
        self.cntfrq
    }

    /// The VM's optional features.
    #[inline]
    pub const fn features(&self) -> Features {
        self.features
    }

    /// The value of CNTVOFF_EL2 or CNTPOFF_EL2.
    #[inline]
    pub const fn offset(&self, which: Offset) -> u64 {
        match which {
            Offset::Virtual => self.cntvoff,
            Offset::Physical => self.cntpoff,
        }
    }

    /// CNTPCT_EL0 as EL0 and EL1 read it: `now − CNTPOFF_EL2` (mod 2^64).
    #[inline]
    pub const fn physical_count(&self, now: u64) -> u64 {
        now.wrapping_sub(self.cntpoff)
    }

    /// CNTVCT_EL0: the virtual count, `now − CNTVOFF_EL2` (mod 2^64).
    #[inline]
    pub const fn virtual_count(&self, now: u64) -> u64 {
        now.wrapping_sub(self.cntvoff)
    }

    /// The count a timer compares its CVAL with (and TVAL is relative to): the virtual count for
    /// the EL1 virtual timer, `now − CNTPOFF_EL2` for the EL1 physical timer, and `now` for the
    /// EL2 timers.
    #[inline]
    pub const fn timer_count(&self, timer: TimerId, now: u64) -> u64 {
        match timer {
            TimerId::Virt => self.virtual_count(now),
            TimerId::Phys => self.physical_count(now),
            TimerId::HypPhys | TimerId::HypVirt => now,
        }
    }

    /// Sets CNTVOFF_EL2 or CNTPOFF_EL2 to `value` and re-evaluates every timer of `vcpus` at
    /// once: the count views jump, CVALs stay where they are (they live in the timer's own
    /// domain), so outputs may rise or fall and deadlines move.
    ///
    /// Fills `changes[i]` with what the change did to `vcpus[i]` (as far as `changes` reaches)
    /// and returns how many vCPUs had an output change. Call [`VcpuTimers::next_deadline`]
    /// afterwards for each vCPU; earlier deadlines are stale.
    pub fn set_offset<'a, I>(
        &mut self,
        which: Offset,
        value: u64,
        now: u64,
        vcpus: I,
        changes: &mut [Output],
    ) -> usize
    where
        I: IntoIterator<Item = &'a VcpuTimers>,
    {
        let before = *self;
        match which {
            Offset::Virtual => self.cntvoff = value,
            Offset::Physical => self.cntpoff = value,
        }
        let mut changed = 0usize;
        let mut slots = changes.iter_mut();
        for vcpu in vcpus {
            let out = vcpu.compare_counters(&before, self, now);
            if !out.changed.is_empty() {
                changed = changed.saturating_add(1);
            }
            if let Some(slot) = slots.next() {
                *slot = out;
            }
        }
        changed
    }

    /// Sets the offset so that the chosen count reads `count` at host counter `now`
    /// (`offset = now − count`, as KVM's `KVM_REG_ARM_TIMER_CNT` write), re-evaluating `vcpus`
    /// as [`Counter::set_offset`] does.
    pub fn set_count<'a, I>(
        &mut self,
        which: Offset,
        count: u64,
        now: u64,
        vcpus: I,
        changes: &mut [Output],
    ) -> usize
    where
        I: IntoIterator<Item = &'a VcpuTimers>,
    {
        self.set_offset(which, now.wrapping_sub(count), now, vcpus, changes)
    }

    /// Sets CNTVOFF_EL2 so that CNTVCT_EL0 reads `count` at host counter `now`; see
    /// [`Counter::set_count`].
    pub fn set_virtual_count<'a, I>(
        &mut self,
        count: u64,
        now: u64,
        vcpus: I,
        changes: &mut [Output],
    ) -> usize
    where
        I: IntoIterator<Item = &'a VcpuTimers>,
    {
        self.set_count(Offset::Virtual, count, now, vcpus, changes)
    }

    /// `ceil(ticks · 10^9 / CNTFRQ)` nanoseconds, saturating: how long the counter takes to
    /// advance by `ticks`, rounded up so a host timer armed for it is never early. With a host
    /// counter synthesized from a nanosecond clock as `floor((ns − base) · CNTFRQ / 10^9)`,
    /// `base + ticks_to_ns(t)` is the first nanosecond at which the counter reads `t`.
    #[inline]
    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        arith::ticks_to_ns_ceil(ticks, self.cntfrq)
    }

    /// `floor(ns · CNTFRQ / 10^9)` ticks, saturating: the count a counter that read 0 has
    /// reached `ns` nanoseconds later.
    #[inline]
    pub fn ns_to_ticks(&self, ns: u64) -> u64 {
        arith::ns_to_ticks_floor(ns, self.cntfrq)
    }

    /// The VM-wide state.
    pub const fn state(&self) -> CounterState {
        CounterState { cntfrq: self.cntfrq, cntvoff: self.cntvoff, cntpoff: self.cntpoff }
    }

    /// Replaces the VM-wide state after checking it; on error nothing changes. The VMM must then
    /// re-evaluate its vCPUs ([`VcpuTimers::level`], [`VcpuTimers::next_deadline`]).
    ///
    /// The frequency must be the configured one ([`StateError::FrequencyMismatch`]), and the
    /// offsets are relative to the host counter: on another host, or after the host counter
    /// restarted, set them anew ([`Counter::set_count`]) so the guest's counts continue.
    pub fn restore(&mut self, state: &CounterState) -> Result<(), StateError> {
        state.validate()?;
        if state.cntfrq != self.cntfrq {
            return Err(StateError::FrequencyMismatch { state: state.cntfrq, configured: self.cntfrq });
        }
        self.cntvoff = state.cntvoff;
        self.cntpoff = state.cntpoff;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
