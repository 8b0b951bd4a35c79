//! Plain-data state of the generic timer: the VM's counter configuration and offsets, and each
//! vCPU's timer registers. Host deadlines are not state; they are recomputed from it.

use super::regs::{Cntkctl, TimerCtl, TimerId};
use super::Features;

/// The VM-wide part: CNTFRQ_EL0 and the two offsets.
///
/// There is no `Default`: CNTFRQ_EL0 resets to an UNKNOWN value and the model takes it as
/// configuration, so the reset state is [`CounterState::reset`] with the host counter's frequency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CounterState {
    /// CNTFRQ_EL0: the counter frequency in Hz, which must be the host counter's. Not zero.
    pub cntfrq: u32,
    /// CNTVOFF_EL2: virtual count = physical count − CNTVOFF_EL2 (mod 2^64).
    pub cntvoff: u64,
    /// CNTPOFF_EL2 (FEAT_ECV): the EL1 physical timer's and EL0/EL1 CNTPCT_EL0's count =
    /// physical count − CNTPOFF_EL2 (mod 2^64).
    pub cntpoff: u64,
}

impl CounterState {
    /// The state at power-on for a counter running at `cntfrq` Hz: both offsets zero.
    pub const fn reset(cntfrq: u32) -> Self {
        CounterState { cntfrq, cntvoff: 0, cntpoff: 0 }
    }

    /// Checks for values the model cannot hold: a zero frequency.
    pub const fn validate(&self) -> Result<(), StateError> {
        if self.cntfrq == 0 {
            return Err(StateError::ZeroFrequency);
        }
        Ok(())
    }
}

/// One timer's architectural registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TimerState {
    /// CTL: ENABLE (bit 0) and IMASK (bit 1) only. ISTATUS (bit 2) is not state: the model
    /// derives it from ENABLE, the count and CVAL on every read, so
    /// [`super::VcpuTimers::state`] leaves it clear and a restore refuses a CTL that sets it
    /// ([`StateError::CtlIstatus`]), as it refuses RES0 bits 63:3. Mask a CTL read back from
    /// the register (e.g. from KVM) with [`TimerCtl::WRITABLE`] before building a state.
    /// Reset 0: disabled, unmasked.
    pub ctl: u64,
    /// CVAL: the compare value in the timer's own count domain. Reset 0.
    pub cval: u64,
}

/// One vCPU's timer registers. `Default` is the reset state: every timer disabled and unmasked
/// with CVAL 0, CNTKCTL_EL1 0 (no EL0 access, no event stream).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VcpuTimersState {
    /// CNTKCTL_EL1. Bits 63:10 other than EVNTIS (bit 17, FEAT_ECV only) must be zero.
    pub cntkctl: u64,
    /// The EL1 physical timer (CNTP_CTL_EL0, CNTP_CVAL_EL0).
    pub cntp: TimerState,
    /// The EL1 virtual timer (CNTV_CTL_EL0, CNTV_CVAL_EL0).
    pub cntv: TimerState,
    /// The EL2 physical timer (CNTHP_CTL_EL2, CNTHP_CVAL_EL2); reset unless the VM has EL2.
    pub cnthp: TimerState,
    /// The EL2 virtual timer (CNTHV_CTL_EL2, CNTHV_CVAL_EL2); reset unless the VM has EL2.
    pub cnthv: TimerState,
}

impl VcpuTimersState {
    /// The registers of one timer.
    pub const fn timer(&self, id: TimerId) -> &TimerState {
        match id {
            TimerId::Phys => &self.cntp,
            TimerId::Virt => &self.cntv,
            TimerId::HypPhys => &self.cnthp,
            TimerId::HypVirt => &self.cnthv,
        }
    }

    /// The registers of one timer, mutably.
    pub fn timer_mut(&mut self, id: TimerId) -> &mut TimerState {
        match id {
            TimerId::Phys => &mut self.cntp,
            TimerId::Virt => &mut self.cntv,
            TimerId::HypPhys => &mut self.cnthp,
            TimerId::HypVirt => &mut self.cnthv,
        }
    }

    /// Checks every field for values a VM with `features` cannot hold (a state is plain data
    /// and may come from a file or another host), and for ISTATUS, which a state does not
    /// hold: a state that passes is installed by [`super::VcpuTimers::restore`] exactly, so
    /// [`super::VcpuTimers::state`] then returns it unchanged.
    pub fn validate(&self, features: Features) -> Result<(), StateError> {
        let writable = Cntkctl::writable(features.ecv);
        if self.cntkctl & !writable.bits() != 0 {
            return Err(StateError::CntkctlReservedBits { cntkctl: self.cntkctl, writable: writable.bits() });
        }
        let ctl_bits = TimerCtl::all().bits();
        for id in TimerId::ALL {
            let timer = self.timer(id);
            if timer.ctl & !ctl_bits != 0 {
                return Err(StateError::CtlReservedBits { timer: id, ctl: timer.ctl });
            }
            if timer.ctl & TimerCtl::ISTATUS.bits() != 0 {
                return Err(StateError::CtlIstatus { timer: id });
            }
            let programmed = timer.ctl & TimerCtl::WRITABLE.bits() != 0 || timer.cval != 0;
            if id.is_el2() && !features.el2 && programmed {
                return Err(StateError::AbsentEl2Timer { timer: id });
            }
        }
        Ok(())
    }
}

/// Why a state was refused by [`super::Counter::restore`], [`super::Counter::new`] or
/// [`super::VcpuTimers::restore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    /// CNTFRQ_EL0 is zero; the counter frequency must be known to convert ticks to time.
    ZeroFrequency,
    /// A timer's CTL has bits set above ISTATUS (bits 63:3 are RES0).
    CtlReservedBits {
        /// The timer.
        timer: TimerId,
        /// The CTL found.
        ctl: u64,
    },
    /// A timer's CTL sets ISTATUS (bit 2). ISTATUS is read-only and derived from ENABLE, the
    /// count and CVAL, so it is not part of the state; clear it (keep [`TimerCtl::WRITABLE`]).
    CtlIstatus {
        /// The timer.
        timer: TimerId,
    },
    /// CNTKCTL_EL1 has bits set that do not exist (RES0, or EVNTIS without FEAT_ECV).
    CntkctlReservedBits {
        /// The CNTKCTL_EL1 found.
        cntkctl: u64,
        /// The bits that exist.
        writable: u64,
    },
    /// The state was taken with a counter of another frequency: CNTFRQ_EL0 is configuration
    /// of the host counter this model reads, so a restore cannot change it.
    FrequencyMismatch {
        /// CNTFRQ_EL0 in the state.
        state: u32,
        /// The configured frequency.
        configured: u32,
    },
    /// An EL2 timer is programmed but the VM has no EL2.
    AbsentEl2Timer {
        /// The timer.
        timer: TimerId,
    },
}

impl core::fmt::Display for StateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StateError::ZeroFrequency => write!(f, "CNTFRQ_EL0 is zero"),
            StateError::CtlReservedBits { timer, ctl } => {
                write!(f, "{timer:?} timer: CTL {ctl:#x} sets RES0 bits 63:3")
            }
            StateError::CtlIstatus { timer } => {
                write!(f, "{timer:?} timer: CTL sets ISTATUS, which is derived from the count, not state")
            }
            StateError::CntkctlReservedBits { cntkctl, writable } => {
                write!(f, "CNTKCTL_EL1 {cntkctl:#x} sets bits outside {writable:#x}")
            }
            StateError::FrequencyMismatch { state, configured } => {
                write!(f, "CNTFRQ_EL0 {state} Hz in the state, but the counter runs at {configured} Hz")
            }
            StateError::AbsentEl2Timer { timer } => {
                write!(f, "{timer:?} timer is programmed but the VM has no EL2")
            }
        }
    }
}

impl core::error::Error for StateError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_vcpu_state_is_valid_for_every_feature_set() {
        for (el2, ecv) in [(false, false), (false, true), (true, false), (true, true)] {
            assert_eq!(VcpuTimersState::default().validate(Features { el2, ecv }), Ok(()));
        }
    }

    #[test]
    fn restore_validation_refuses_istatus_and_res0_ctl_bits() {
        let mut state = VcpuTimersState::default();
        state.cntv.ctl = 0b011;
        assert_eq!(state.validate(Features::default()), Ok(()));
        // ISTATUS is derived, not state: refused rather than dropped, with or without the
        // other bits.
        for ctl in [0b100, 0b111] {
            state.cntv.ctl = ctl;
            assert_eq!(
                state.validate(Features::default()),
                Err(StateError::CtlIstatus { timer: TimerId::Virt })
            );
        }
        state.cntv.ctl = 0b1000;
        assert_eq!(
            state.validate(Features::default()),
            Err(StateError::CtlReservedBits { timer: TimerId::Virt, ctl: 8 })
        );
    }

    #[test]
    fn restore_validation_refuses_evntis_without_ecv() {
        let state = VcpuTimersState { cntkctl: 1 << 17, ..Default::default() };
        assert!(matches!(
            state.validate(Features { el2: false, ecv: false }),
            Err(StateError::CntkctlReservedBits { .. })
        ));
        assert_eq!(state.validate(Features { el2: false, ecv: true }), Ok(()));
    }

    #[test]
    fn restore_validation_refuses_programmed_el2_timers_without_el2() {
        let mut state = VcpuTimersState::default();
        state.timer_mut(TimerId::HypVirt).cval = 5;
        assert_eq!(
            state.validate(Features { el2: false, ecv: false }),
            Err(StateError::AbsentEl2Timer { timer: TimerId::HypVirt })
        );
        assert_eq!(state.validate(Features { el2: true, ecv: false }), Ok(()));
    }

    #[test]
    fn zero_frequency_is_refused() {
        assert_eq!(CounterState::reset(0).validate(), Err(StateError::ZeroFrequency));
        assert_eq!(CounterState::reset(1).validate(), Ok(()));
    }
}
