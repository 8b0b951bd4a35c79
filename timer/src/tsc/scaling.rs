//! TSC scaling: the fixed-point ratio that VMX ("TSC multiplier") and SVM ("TSC ratio") apply to
//! the host TSC before adding the offset.
//!
//! The hardware computes `⌊host_tsc · ratio / 2^f⌋` on the full 128-bit product and keeps the low
//! 64 bits; `f` is 48 on VMX and 32 on SVM. KVM computes the same (`mul_u64_u64_shr`).

use core::fmt;

/// The fixed-point format of the TSC ratio, which the virtualization extension fixes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ScalingFormat {
    /// Intel VMX "TSC multiplier" (VMCS field 0x2032): 64 bits, 16.48 fixed point, any value
    /// the VMM writes. RDTSC returns `((TSC · multiplier) >> 48) + offset`.
    #[default]
    Vmx,
    /// AMD SVM `TSC_RATIO` MSR (C000_0104h): 8.32 fixed point in bits 39:0, bits 63:40 are
    /// reserved. RDTSC returns `TSC · ratio + offset`.
    Svm,
}

impl ScalingFormat {
    /// The smallest ratio either format accepts (KVM's `SVM_TSC_RATIO_MIN`; a ratio of 0 would
    /// stop the guest TSC).
    pub const MIN_RATIO: u64 = 1;

    /// Number of fraction bits `f` of the ratio: 48 (VMX) or 32 (SVM).
    #[inline(always)]
    pub const fn frac_bits(self) -> u32 {
        match self {
            ScalingFormat::Vmx => 48,
            ScalingFormat::Svm => 32,
        }
    }

    /// The ratio 1.0 (`1 << f`): the guest TSC runs at the host rate. This is the reset value
    /// of the VMCS multiplier field KVM uses and of `TSC_RATIO` (0x0000_0001_0000_0000).
    #[inline(always)]
    pub const fn default_ratio(self) -> u64 {
        match self {
            ScalingFormat::Vmx => 1 << 48,
            ScalingFormat::Svm => 1 << 32,
        }
    }

    /// The largest ratio the format holds: `u64::MAX` for VMX (KVM's
    /// `KVM_VMX_TSC_MULTIPLIER_MAX`), `0xff_ffff_ffff` for SVM (bits 39:0; a value with bits
    /// 63:40 set makes WRMSR to `TSC_RATIO` raise #GP).
    #[inline(always)]
    pub const fn max_ratio(self) -> u64 {
        match self {
            ScalingFormat::Vmx => u64::MAX,
            ScalingFormat::Svm => 0xff_ffff_ffff,
        }
    }

    /// Whether the hardware accepts `ratio`: `MIN_RATIO ≤ ratio ≤ max_ratio()`.
    #[inline]
    pub const fn is_valid_ratio(self, ratio: u64) -> bool {
        ratio >= Self::MIN_RATIO && ratio <= self.max_ratio()
    }

    /// `⌊host_tsc · ratio / 2^f⌋` truncated to 64 bits, as the hardware scales the TSC. Any
    /// `ratio` is accepted here (no range check).
    #[inline(always)]
    pub const fn scale(self, host_tsc: u64, ratio: u64) -> u64 {
        self.scale_wide(host_tsc, ratio) as u64
    }

    /// `⌊host_tsc · ratio / 2^f⌋` without truncation (at most 80 bits).
    #[inline(always)]
    pub const fn scale_wide(self, host_tsc: u64, ratio: u64) -> u128 {
        (host_tsc as u128).wrapping_mul(ratio as u128).wrapping_shr(self.frac_bits())
    }

    /// `value · ratio / 2^f` for a two's-complement `value`, rounded toward zero and truncated
    /// to 64 bits: the magnitude is scaled and the sign put back (KVM's `mul_s64_u64_shr`,
    /// used for nested offsets). `i64::MIN` is handled through its unsigned magnitude.
    #[inline]
    pub const fn scale_signed(self, value: u64, ratio: u64) -> u64 {
        let signed = value as i64;
        let magnitude = self.scale(signed.unsigned_abs(), ratio);
        if signed < 0 {
            magnitude.wrapping_neg()
        } else {
            magnitude
        }
    }
}

/// KVM's default tolerance between a requested guest TSC rate and the host's below which no
/// scaling is used (`tsc_tolerance_ppm`), in parts per million.
pub const TSC_TOLERANCE_PPM: u32 = 250;

/// Why a ratio (or a pair of frequencies) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RatioError {
    /// The ratio is 0 (below [`ScalingFormat::MIN_RATIO`]).
    Zero,
    /// The ratio is too large for the format: above [`ScalingFormat::max_ratio`] for a ratio
    /// given directly, at or above it for one computed from frequencies (KVM's `>=`).
    TooLarge {
        /// The ratio found (a ratio computed from frequencies may exceed 64 bits).
        ratio: u128,
        /// The format's maximum.
        max: u64,
    },
    /// The requested guest frequency is 0 kHz.
    ZeroGuestKhz,
    /// The host frequency is 0 kHz (an uncalibrated host TSC).
    ZeroHostKhz,
    /// Two ratios of different formats (VMX and SVM) were composed.
    FormatMismatch,
}

impl fmt::Display for RatioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RatioError::Zero => write!(f, "TSC ratio 0 is below the minimum 1"),
            RatioError::TooLarge { ratio, max } => {
                write!(f, "TSC ratio {ratio:#x} exceeds the maximum {max:#x}")
            }
            RatioError::ZeroGuestKhz => write!(f, "guest TSC frequency of 0 kHz"),
            RatioError::ZeroHostKhz => write!(f, "host TSC frequency of 0 kHz"),
            RatioError::FormatMismatch => write!(f, "TSC ratios of different formats (VMX and SVM)"),
        }
    }
}

impl core::error::Error for RatioError {}

/// A TSC ratio the hardware accepts, with its format: the multiplier of the guest TSC.
///
/// `Default` is the VMX ratio 1.0 (no scaling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TscScaling {
    format: ScalingFormat,
    ratio: u64,
}

impl Default for TscScaling {
    fn default() -> Self {
        TscScaling::identity(ScalingFormat::Vmx)
    }
}

impl TscScaling {
    /// The ratio 1.0 of `format`: the guest TSC runs at the host rate.
    #[inline]
    pub const fn identity(format: ScalingFormat) -> Self {
        TscScaling { format, ratio: format.default_ratio() }
    }

    /// `ratio` in `format` (fixed point with [`ScalingFormat::frac_bits`] fraction bits), if the
    /// hardware accepts it: `1 ≤ ratio ≤ max_ratio()`.
    pub const fn new(format: ScalingFormat, ratio: u64) -> Result<Self, RatioError> {
        if ratio < ScalingFormat::MIN_RATIO {
            Err(RatioError::Zero)
        } else if ratio > format.max_ratio() {
            Err(RatioError::TooLarge { ratio: ratio as u128, max: format.max_ratio() })
        } else {
            Ok(TscScaling { format, ratio })
        }
    }

    /// The ratio that runs the guest TSC at `guest_khz` on a host TSC of `host_khz`, as
    /// `KVM_SET_TSC_KHZ` computes it, with KVM's default tolerance of
    /// [`TSC_TOLERANCE_PPM`]. See [`TscScaling::from_khz_with_tolerance`].
    pub fn from_khz(format: ScalingFormat, guest_khz: u32, host_khz: u32) -> Result<Self, RatioError> {
        Self::from_khz_with_tolerance(format, guest_khz, host_khz, TSC_TOLERANCE_PPM)
    }

    /// The ratio that runs the guest TSC at `guest_khz` on a host TSC of `host_khz`:
    ///
    /// * if `guest_khz` lies within `tolerance_ppm` of `host_khz` (both bounds
    ///   `⌊host_khz · (10^6 ± ppm) / 10^6⌋` inclusive), no scaling: the ratio 1.0;
    /// * otherwise `r = ⌊2^f · guest_khz / host_khz⌋`, refused if `r == 0` or `r ≥ max_ratio()`
    ///   (KVM refuses the maximum itself here, although the hardware would take it).
    ///
    /// Either frequency being 0 is refused. KVM without hardware scaling instead accepts a
    /// faster guest by "catching up" in software; that is the VMM's choice and is not modelled.
    pub fn from_khz_with_tolerance(
        format: ScalingFormat,
        guest_khz: u32,
        host_khz: u32,
        tolerance_ppm: u32,
    ) -> Result<Self, RatioError> {
        if guest_khz == 0 {
            return Err(RatioError::ZeroGuestKhz);
        }
        if host_khz == 0 {
            return Err(RatioError::ZeroHostKhz);
        }
        const MILLION: u64 = 1_000_000;
        let host = u64::from(host_khz);
        let guest = u64::from(guest_khz);
        let ppm = u64::from(tolerance_ppm);
        // host ≤ 2^32 and the factors ≤ 2^33, so neither product overflows.
        let low = host.saturating_mul(MILLION.saturating_sub(ppm)) / MILLION;
        let high = host.saturating_mul(MILLION.saturating_add(ppm)) / MILLION;
        if (low..=high).contains(&guest) {
            return Ok(TscScaling::identity(format));
        }
        // 2^48 · 2^32 fits in 128 bits.
        let ratio = (u128::from(guest) << format.frac_bits()).checked_div(u128::from(host)).unwrap_or(0);
        if ratio == 0 {
            return Err(RatioError::Zero);
        }
        match u64::try_from(ratio) {
            Ok(ratio) if ratio < format.max_ratio() => Ok(TscScaling { format, ratio }),
            _ => Err(RatioError::TooLarge { ratio, max: format.max_ratio() }),
        }
    }

    /// The fixed-point format.
    #[inline(always)]
    pub const fn format(self) -> ScalingFormat {
        self.format
    }

    /// The raw ratio (fixed point with [`ScalingFormat::frac_bits`] fraction bits).
    #[inline(always)]
    pub const fn ratio(self) -> u64 {
        self.ratio
    }

    /// Whether the ratio is 1.0 (no scaling).
    #[inline(always)]
    pub const fn is_identity(self) -> bool {
        self.ratio == self.format.default_ratio()
    }

    /// `⌊host_tsc · ratio / 2^f⌋` truncated to 64 bits; the identity ratio skips the multiply
    /// (same result).
    #[inline(always)]
    pub const fn scale(self, host_tsc: u64) -> u64 {
        if self.is_identity() {
            host_tsc
        } else {
            self.format.scale(host_tsc, self.ratio)
        }
    }

    /// The ratio an L2 guest runs at when L1 runs at `self` and gives L2 the ratio `l2`
    /// (KVM's `kvm_calc_nested_tsc_multiplier`): `⌊r1 · r2 / 2^f⌋`, or `r1` when `r2` is 1.0.
    /// Refused if the formats differ or the product is not a valid ratio: 0, above the
    /// format's maximum, or (VMX) wider than 64 bits, where KVM would silently keep the low
    /// 64 bits.
    pub fn nested(self, l2: TscScaling) -> Result<TscScaling, RatioError> {
        if self.format != l2.format {
            return Err(RatioError::FormatMismatch);
        }
        if l2.is_identity() {
            return Ok(self);
        }
        let product = self.format.scale_wide(self.ratio, l2.ratio);
        match u64::try_from(product) {
            Ok(ratio) => TscScaling::new(self.format, ratio),
            Err(_) => Err(RatioError::TooLarge { ratio: product, max: self.format.max_ratio() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMX: ScalingFormat = ScalingFormat::Vmx;
    const SVM: ScalingFormat = ScalingFormat::Svm;

    #[test]
    fn vmx_uses_48_fraction_bits_and_svm_32() {
        assert_eq!(VMX.frac_bits(), 48);
        assert_eq!(VMX.default_ratio(), 1 << 48);
        assert_eq!(VMX.max_ratio(), u64::MAX);
        assert_eq!(SVM.frac_bits(), 32);
        assert_eq!(SVM.default_ratio(), 0x0000_0001_0000_0000);
        assert_eq!(SVM.max_ratio(), 0x0000_00ff_ffff_ffff);
    }

    #[test]
    fn scaling_floors_the_128_bit_product_and_keeps_the_low_64_bits() {
        // 3 · 1.5 = 4.5 → 4
        assert_eq!(VMX.scale(3, 3 << 47), 4);
        // u64::MAX · (u64::MAX / 2^48): the product >> 48 needs 80 bits; the low 64 remain.
        let wide = VMX.scale_wide(u64::MAX, u64::MAX);
        assert_eq!(wide, (u128::from(u64::MAX) * u128::from(u64::MAX)) >> 48);
        assert!(wide > u128::from(u64::MAX));
        assert_eq!(VMX.scale(u64::MAX, u64::MAX), wide as u64);
        // SVM: 10 · 0.5
        assert_eq!(SVM.scale(10, 1 << 31), 5);
    }

    #[test]
    fn identity_ratio_leaves_the_tsc_unchanged() {
        for format in [VMX, SVM] {
            let identity = TscScaling::identity(format);
            for h in [0, 1, 1 << 48, 1 << 60, u64::MAX] {
                assert_eq!(identity.scale(h), h);
                assert_eq!(format.scale(h, format.default_ratio()), h);
            }
        }
    }

    #[test]
    fn ratio_zero_and_ratio_above_the_maximum_are_refused() {
        assert_eq!(TscScaling::new(VMX, 0), Err(RatioError::Zero));
        assert_eq!(TscScaling::new(SVM, 0), Err(RatioError::Zero));
        assert!(TscScaling::new(VMX, 1).is_ok());
        assert!(TscScaling::new(VMX, u64::MAX).is_ok());
        assert!(TscScaling::new(SVM, 0xff_ffff_ffff).is_ok());
        assert_eq!(
            TscScaling::new(SVM, 0x100_0000_0000),
            Err(RatioError::TooLarge { ratio: 0x100_0000_0000, max: 0xff_ffff_ffff })
        );
    }

    #[test]
    fn signed_scaling_rounds_toward_zero() {
        // -3 · 0.5 = -1.5 → -1 (toward zero), where the floor would give -2.
        assert_eq!(VMX.scale_signed((-3i64) as u64, 1 << 47), (-1i64) as u64);
        assert_eq!(VMX.scale_signed(3, 1 << 47), 1);
        // i64::MIN at ratio 1.0 stays i64::MIN; at 0.5 it halves.
        assert_eq!(VMX.scale_signed(i64::MIN as u64, 1 << 48), i64::MIN as u64);
        assert_eq!(VMX.scale_signed(i64::MIN as u64, 1 << 47), (i64::MIN / 2) as u64);
    }

    #[test]
    fn khz_ratio_is_the_floor_of_two_to_the_f_times_guest_over_host() {
        // 1 GHz guest on a 3 GHz host: 2^48 / 3, floored.
        let r = TscScaling::from_khz(VMX, 1_000_000, 3_000_000).unwrap();
        assert_eq!(r.ratio(), (1u64 << 48) / 3);
        let r = TscScaling::from_khz(SVM, 2_000_000, 1_000_000).unwrap();
        assert_eq!(r.ratio(), 2 << 32);
    }

    #[test]
    fn khz_within_250_ppm_of_the_host_means_no_scaling() {
        let host = 2_000_000; // 250 ppm of 2 GHz is 500 kHz.
        for guest in [host - 500, host - 1, host, host + 1, host + 500] {
            assert!(TscScaling::from_khz(VMX, guest, host).unwrap().is_identity(), "{guest}");
        }
        for guest in [host - 501, host + 501] {
            let r = TscScaling::from_khz(VMX, guest, host).unwrap();
            assert!(!r.is_identity(), "{guest}");
            assert_eq!(u128::from(r.ratio()), (u128::from(guest) << 48) / u128::from(host));
        }
    }

    #[test]
    fn khz_ratio_at_or_above_the_maximum_is_refused() {
        // 0x7fffffff kHz on a 1 kHz host: 2^48 · (2^31 - 1) needs 79 bits.
        assert!(matches!(TscScaling::from_khz(VMX, 0x7fff_ffff, 1), Err(RatioError::TooLarge { .. })));
        // SVM: 256 × the host rate is exactly 2^40 > max; 255 × fits.
        assert!(matches!(TscScaling::from_khz(SVM, 256_000, 1_000), Err(RatioError::TooLarge { .. })));
        assert_eq!(TscScaling::from_khz(SVM, 255_000, 1_000).unwrap().ratio(), 255 << 32);
        // VMX: exactly 2^16 × gives 2^64 (too large); just under gives < max.
        assert!(matches!(TscScaling::from_khz(VMX, 65_536, 1), Err(RatioError::TooLarge { .. })));
        assert!(TscScaling::from_khz(VMX, 65_535, 1).is_ok());
    }

    #[test]
    fn zero_khz_is_refused() {
        assert_eq!(TscScaling::from_khz(VMX, 0, 1_000_000), Err(RatioError::ZeroGuestKhz));
        assert_eq!(TscScaling::from_khz(VMX, 1_000_000, 0), Err(RatioError::ZeroHostKhz));
    }

    #[test]
    fn nested_ratio_is_the_floored_product_unless_l2_is_identity() {
        let l1 = TscScaling::new(VMX, 3 << 47).unwrap(); // 1.5
        let l2 = TscScaling::new(VMX, (1 << 48) / 3).unwrap(); // ~0.333
        let expected = ((u128::from(l1.ratio()) * u128::from(l2.ratio())) >> 48) as u64;
        assert_eq!(l1.nested(l2).unwrap().ratio(), expected);
        assert_eq!(l1.nested(TscScaling::identity(VMX)), Ok(l1));
        // 1/2^48 · 1/2^48 floors to 0: not a ratio.
        let tiny = TscScaling::new(VMX, 1).unwrap();
        assert_eq!(tiny.nested(tiny), Err(RatioError::Zero));
        // 2^16 · 2^16 does not fit in 64 bits: refused, not truncated to 0.
        let huge = TscScaling::new(VMX, u64::MAX).unwrap();
        assert!(matches!(huge.nested(huge), Err(RatioError::TooLarge { .. })));
        assert_eq!(l1.nested(TscScaling::identity(SVM)), Err(RatioError::FormatMismatch));
    }
}
