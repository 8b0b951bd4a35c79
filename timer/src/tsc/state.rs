//! Plain-data state of a vCPU's TSC.

use core::fmt;

use super::scaling::{RatioError, ScalingFormat, TscScaling};

/// Everything architectural about one vCPU's TSC, as plain data.
///
/// `Default` is the power-on state on a VMX host with no scaling and a zero offset (so the
/// guest TSC equals the host TSC until the VMM sets it, e.g. with
/// [`Tsc::host_set_tsc`](super::Tsc::host_set_tsc)`(0, now)`), TSC_ADJUST 0 and no deadline.
///
/// The deadline is the MSR's value, a guest TSC value; no host time is ever stored, so the host
/// deadline is recomputed after a restore. The offset, though, is relative to the host TSC: on
/// another host (or after the host TSC restarted) set the guest TSC anew with
/// [`Tsc::host_set_tsc`](super::Tsc::host_set_tsc) after restoring, or it jumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TscState {
    /// Fixed-point format of `ratio` (VMX 16.48 or SVM 8.32).
    pub format: ScalingFormat,
    /// The TSC ratio; must satisfy [`ScalingFormat::is_valid_ratio`].
    pub ratio: u64,
    /// The TSC offset added after scaling (two's complement).
    pub offset: u64,
    /// IA32_TSC_ADJUST (MSR 0x3B), two's complement.
    pub tsc_adjust: u64,
    /// IA32_TSC_DEADLINE (MSR 0x6E0); 0 = disarmed.
    pub tsc_deadline: u64,
}

impl Default for TscState {
    fn default() -> Self {
        TscState::reset(ScalingFormat::Vmx)
    }
}

impl TscState {
    /// Power-on state with the given format (ratio 1.0, everything else 0).
    pub const fn reset(format: ScalingFormat) -> Self {
        TscState { format, ratio: format.default_ratio(), offset: 0, tsc_adjust: 0, tsc_deadline: 0 }
    }

    /// Checks every field for values the model cannot hold (a state is plain data and may come
    /// from a file or another host): the ratio must be one the format accepts.
    pub fn validate(&self) -> Result<(), StateError> {
        self.scaling().map(|_| ())
    }

    /// The validated ratio.
    pub(crate) fn scaling(&self) -> Result<TscScaling, StateError> {
        TscScaling::new(self.format, self.ratio).map_err(StateError::Ratio)
    }
}

/// Why a [`TscState`] was refused by [`Tsc::restore`](super::Tsc::restore).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateError {
    /// The ratio is outside `1..=max_ratio()` of its format.
    Ratio(RatioError),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Ratio(e) => write!(f, "TSC state: {e}"),
        }
    }
}

impl core::error::Error for StateError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            StateError::Ratio(e) => Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_state_is_unscaled_vmx_with_everything_zero() {
        let state = TscState::default();
        assert_eq!(state.ratio, 1 << 48);
        assert_eq!(state, TscState::reset(ScalingFormat::Vmx));
        assert_eq!(state.validate(), Ok(()));
    }

    #[test]
    fn state_with_a_ratio_out_of_range_is_refused() {
        let zero = TscState { ratio: 0, ..TscState::default() };
        assert_eq!(zero.validate(), Err(StateError::Ratio(RatioError::Zero)));
        let svm = TscState { ratio: 1 << 40, ..TscState::reset(ScalingFormat::Svm) };
        assert!(matches!(svm.validate(), Err(StateError::Ratio(RatioError::TooLarge { .. }))));
        let vmx = TscState { ratio: u64::MAX, ..TscState::default() };
        assert_eq!(vmx.validate(), Ok(()));
    }
}

#[cfg(all(test, feature = "serde"))]
mod serde_tests {
    extern crate std;

    use super::*;

    #[test]
    fn state_survives_serialization_and_still_validates_on_restore() {
        let state = TscState {
            format: ScalingFormat::Svm,
            ratio: 3 << 31,
            offset: (-(1i64 << 48)) as u64,
            tsc_adjust: 12345,
            tsc_deadline: u64::MAX,
        };
        let json = serde_json::to_string(&state).unwrap();
        let back: TscState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);

        // Deserialization accepts any number; validation is what refuses it.
        let tampered = json.replacen(&std::format!("\"ratio\":{}", 3u64 << 31), "\"ratio\":0", 1);
        let bad: TscState = serde_json::from_str(&tampered).unwrap();
        assert_eq!(bad.validate(), Err(StateError::Ratio(RatioError::Zero)));
    }
}
