//! The x86 time-stamp counter as a guest sees it: offset and scaling (VMX TSC multiplier, SVM
//! `TSC_RATIO`), nested composition, the IA32_TSC / IA32_TSC_ADJUST coupling, and
//! IA32_TSC_DEADLINE arithmetic.
//!
//! * [`ScalingFormat`] and [`TscScaling`]: the ratio, its fixed-point format and range, and the
//!   ratio for a pair of frequencies with KVM's limits and 250 ppm tolerance.
//! * [`GuestTsc`]: `guest_tsc(h) = ⌊h · ratio / 2^f⌋ + offset` (mod 2^64) for host TSC `h`, its
//!   exact inverse for deadlines, and the L1/L2 composition.
//! * [`TscDeadline`]: IA32_TSC_DEADLINE as a standalone component for the LAPIC timer.
//! * [`Tsc`]: one vCPU's TSC MSRs, keeping guest writes (which couple IA32_TSC and
//!   IA32_TSC_ADJUST, SDM Vol. 3 "Time-Stamp Counter Adjustment") apart from host writes
//!   (save/restore, which do not).
//! * [`TscState`]: plain data with a validating [`Tsc::restore`].
//!
//! Time is an input: every call that needs the time takes the host TSC reading (`host_tsc`,
//! ticks of the host's invariant TSC). No call reads a clock.
//!
//! ```
//! use vm_timer::tsc::{ScalingFormat, Tsc, TscScaling};
//!
//! // A 1 GHz guest on a 2 GHz Intel host (ratio 0.5), started at TSC 0 when the host TSC
//! // read 10^9.
//! let scaling = TscScaling::from_khz(ScalingFormat::Vmx, 1_000_000, 2_000_000).unwrap();
//! let mut tsc = Tsc::new(scaling);
//! let now = 1_000_000_000;
//! tsc.host_set_tsc(0, now);
//! assert_eq!(tsc.read_tsc(now + 2_000_000), 1_000_000); // 1 ms later
//!
//! // The guest arms the TSC deadline 1 ms ahead; the VMM arms a host timer for it.
//! assert!(!tsc.guest_write_tsc_deadline(1_000_000, now));
//! let host_deadline = tsc.next_deadline(now).unwrap();
//! assert_eq!(host_deadline, now + 2_000_000);
//! assert_eq!(tsc.next_deadline_ns(now, 5_000, 2_000_000_000), Some(5_000 + 1_000_000));
//! assert!(!tsc.advance(host_deadline - 1));
//! assert!(tsc.advance(host_deadline)); // fires once, and the MSR then reads 0
//! assert_eq!(tsc.read_tsc_deadline(), 0);
//! ```

mod clock;
mod deadline;
mod scaling;
mod state;

pub use clock::GuestTsc;
pub use deadline::{host_tsc_ticks_to_ns, TscDeadline};
pub use scaling::{RatioError, ScalingFormat, TscScaling, TSC_TOLERANCE_PPM};
pub use state::{StateError, TscState};

/// IA32_TIME_STAMP_COUNTER (MSR 0x10, "IA32_TSC"): RDMSR returns the TSC (as RDTSC does);
/// WRMSR sets it.
pub const IA32_TIME_STAMP_COUNTER: u32 = 0x10;
/// IA32_TSC_ADJUST (MSR 0x3B): resets to 0; a WRMSR to IA32_TSC that changes the TSC by X adds
/// X to it, and a WRMSR to it that changes it by X adds X to the TSC (SDM Vol. 3,
/// "Time-Stamp Counter Adjustment").
pub const IA32_TSC_ADJUST: u32 = 0x3B;
/// IA32_TSC_DEADLINE (MSR 0x6E0): the LAPIC timer's deadline in TSC-deadline mode.
pub const IA32_TSC_DEADLINE: u32 = 0x6E0;
/// AMD `TSC_RATIO` (MSR C000_0104h): the guest TSC ratio, 8.32 fixed point in bits 39:0.
pub const TSC_RATIO: u32 = 0xC000_0104;

/// One vCPU's TSC: the guest TSC mapping (ratio and offset), IA32_TSC_ADJUST and
/// IA32_TSC_DEADLINE.
///
/// Guest WRMSRs (`guest_write_*`) follow the SDM: a write to IA32_TSC that moves the TSC by X
/// moves IA32_TSC_ADJUST by X, and a write to IA32_TSC_ADJUST that moves it by X moves the TSC
/// by X. Host writes (`host_set_*`, for restore and migration, like KVM's host-initiated
/// `KVM_SET_MSRS` and `KVM_VCPU_TSC_OFFSET`) set one thing and leave the other alone.
///
/// The model is L1's view: the guest and the host read the same TSC. For an L2 guest, compose
/// with [`GuestTsc::nested`].
///
/// `Default` is [`TscState::default`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tsc {
    clock: GuestTsc,
    tsc_adjust: u64,
    deadline: TscDeadline,
}

impl Tsc {
    /// A vCPU TSC at power-on with the given ratio: offset 0 (the guest TSC reads the scaled
    /// host TSC), TSC_ADJUST 0, no deadline.
    pub const fn new(scaling: TscScaling) -> Self {
        Tsc { clock: GuestTsc::new(scaling, 0), tsc_adjust: 0, deadline: TscDeadline::new() }
    }

    // ----- reads --------------------------------------------------------------------------

    /// RDTSC, or RDMSR IA32_TSC by the guest or the host: the guest TSC at host TSC `host_tsc`.
    #[inline(always)]
    pub const fn read_tsc(&self, host_tsc: u64) -> u64 {
        self.clock.read(host_tsc)
    }

    /// RDMSR IA32_TSC_ADJUST.
    #[inline]
    pub const fn read_tsc_adjust(&self) -> u64 {
        self.tsc_adjust
    }

    /// RDMSR IA32_TSC_DEADLINE (as the LAPIC returns it in TSC-deadline mode): the armed
    /// deadline, or 0.
    #[inline]
    pub const fn read_tsc_deadline(&self) -> u64 {
        self.deadline.read()
    }

    /// The guest TSC mapping (ratio and offset), e.g. for a LAPIC that owns its own
    /// [`TscDeadline`].
    #[inline]
    pub const fn guest_tsc(&self) -> GuestTsc {
        self.clock
    }

    /// The ratio.
    #[inline]
    pub const fn scaling(&self) -> TscScaling {
        self.clock.scaling
    }

    /// The TSC offset.
    #[inline]
    pub const fn offset(&self) -> u64 {
        self.clock.offset
    }

    /// The embedded TSC deadline.
    #[inline]
    pub const fn tsc_deadline(&self) -> &TscDeadline {
        &self.deadline
    }

    // ----- guest writes -----------------------------------------------------------------------

    /// Guest WRMSR IA32_TSC = `value` at host TSC `host_tsc`: the TSC reads `value` from now
    /// on and IA32_TSC_ADJUST moves by the same amount (wrapping). Returns `true` if the armed
    /// deadline is now reached and fired (deliver one timer interrupt).
    #[must_use = "moving the TSC forward can fire the TSC deadline"]
    pub fn guest_write_tsc(&mut self, value: u64, host_tsc: u64) -> bool {
        let offset = self.clock.offset_for(value, host_tsc);
        let delta = offset.wrapping_sub(self.clock.offset);
        self.clock.offset = offset;
        self.tsc_adjust = self.tsc_adjust.wrapping_add(delta);
        self.deadline.advance(&self.clock, host_tsc)
    }

    /// Guest WRMSR IA32_TSC_ADJUST = `value` at host TSC `host_tsc`: the TSC moves by
    /// `value − old TSC_ADJUST` (wrapping). Returns `true` if the armed deadline is now reached
    /// and fired (deliver one timer interrupt).
    #[must_use = "moving the TSC forward can fire the TSC deadline"]
    pub fn guest_write_tsc_adjust(&mut self, value: u64, host_tsc: u64) -> bool {
        let delta = value.wrapping_sub(self.tsc_adjust);
        self.clock.offset = self.clock.offset.wrapping_add(delta);
        self.tsc_adjust = value;
        self.deadline.advance(&self.clock, host_tsc)
    }

    /// Guest WRMSR IA32_TSC_DEADLINE = `value` at host TSC `host_tsc` (see
    /// [`TscDeadline::write`]). The LAPIC, not this model, ignores the write unless LVTT is in
    /// TSC-deadline mode. Returns `true` if the deadline was already reached and fired.
    #[must_use = "a deadline in the past fires at once: deliver the timer interrupt"]
    pub fn guest_write_tsc_deadline(&mut self, value: u64, host_tsc: u64) -> bool {
        self.deadline.write(value, &self.clock, host_tsc)
    }

    // ----- host writes --------------------------------------------------------------------------

    /// Host write of IA32_TSC (restore): the TSC reads `value` at host TSC `host_tsc`.
    /// IA32_TSC_ADJUST is unchanged. KVM's heuristic that matches host writes made within a
    /// second of each other ("TSC synchronization") is the VMM's business and is not applied.
    /// An armed deadline that is now in the past fires at the next [`Tsc::advance`].
    pub fn host_set_tsc(&mut self, value: u64, host_tsc: u64) {
        self.clock.offset = self.clock.offset_for(value, host_tsc);
    }

    /// Host write of IA32_TSC_ADJUST (restore): stores `value`; the TSC is unchanged.
    pub fn host_set_tsc_adjust(&mut self, value: u64) {
        self.tsc_adjust = value;
    }

    /// Host write of the TSC offset itself (KVM's `KVM_VCPU_TSC_OFFSET`): `guest_tsc =
    /// scaled host TSC + offset`. IA32_TSC_ADJUST is unchanged.
    pub fn host_set_offset(&mut self, offset: u64) {
        self.clock.offset = offset;
    }

    /// Host write of IA32_TSC_DEADLINE (restore): stores `value` without firing; a deadline
    /// already past fires at the next [`Tsc::advance`]. Restore IA32_TSC first, or that
    /// check runs against the wrong TSC.
    pub fn host_set_tsc_deadline(&mut self, value: u64) {
        self.deadline = TscDeadline::with_value(value);
    }

    /// Changes the ratio at host TSC `host_tsc` keeping the guest TSC continuous: the offset is
    /// recomputed so that the guest TSC at `host_tsc` is unchanged, and from then on it
    /// advances at the new rate. (KVM only swaps the ratio, so the guest TSC jumps; use
    /// [`Tsc::restore`] for that.) IA32_TSC_ADJUST is unchanged; the host deadline moves with
    /// the rate (ask [`Tsc::next_deadline`] again).
    pub fn set_scaling(&mut self, scaling: TscScaling, host_tsc: u64) {
        let now = self.clock.read(host_tsc);
        self.clock.scaling = scaling;
        self.clock.offset = self.clock.offset_for(now, host_tsc);
    }

    /// RESET (power-on or a RESET of the vCPU) at host TSC `host_tsc`: the TSC and
    /// IA32_TSC_ADJUST become 0 and the deadline is disarmed. The ratio, a property of the VM
    /// that the VMM chose, is kept.
    pub fn reset(&mut self, host_tsc: u64) {
        self.host_set_tsc(0, host_tsc);
        self.tsc_adjust = 0;
        self.deadline.disarm();
    }

    // ----- time ------------------------------------------------------------------------------

    /// Time has reached host TSC `host_tsc`; returns `true` if the TSC deadline fired
    /// (see [`TscDeadline::advance`]).
    #[must_use = "a fired deadline is a timer interrupt to deliver"]
    #[inline]
    pub fn advance(&mut self, host_tsc: u64) -> bool {
        self.deadline.advance(&self.clock, host_tsc)
    }

    /// The host TSC value at which the TSC deadline fires (see [`TscDeadline::next_deadline`]).
    #[inline]
    pub fn next_deadline(&self, host_tsc: u64) -> Option<u64> {
        self.deadline.next_deadline(&self.clock, host_tsc)
    }

    /// The host monotonic nanosecond at which the TSC deadline fires (see
    /// [`TscDeadline::next_deadline_ns`]).
    #[inline]
    pub fn next_deadline_ns(&self, host_tsc: u64, now_ns: u64, host_tsc_hz: u64) -> Option<u64> {
        self.deadline.next_deadline_ns(&self.clock, host_tsc, now_ns, host_tsc_hz)
    }

    // ----- state -----------------------------------------------------------------------------

    /// A copy of the complete state.
    pub fn state(&self) -> TscState {
        TscState {
            format: self.clock.scaling.format(),
            ratio: self.clock.scaling.ratio(),
            offset: self.clock.offset,
            tsc_adjust: self.tsc_adjust,
            tsc_deadline: self.deadline.read(),
        }
    }

    /// Replaces the state after validating it; on error the TSC is unchanged. Nothing fires
    /// here: a restored deadline that is already past fires at the next [`Tsc::advance`].
    pub fn restore(&mut self, state: &TscState) -> Result<(), StateError> {
        let scaling = state.scaling()?;
        *self = Tsc {
            clock: GuestTsc::new(scaling, state.offset),
            tsc_adjust: state.tsc_adjust,
            deadline: TscDeadline::with_value(state.tsc_deadline),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests;
