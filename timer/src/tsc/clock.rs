//! The guest's view of the TSC: the host TSC scaled, plus an offset.

use super::scaling::{RatioError, TscScaling};

/// The mapping from the host TSC to a guest's TSC:
/// `guest_tsc(h) = ⌊h · ratio / 2^f⌋ + offset` (mod 2^64), which is what RDTSC returns in VMX
/// non-root operation or an SVM guest with TSC offsetting and scaling.
///
/// The offset is two's complement: a "negative" offset such as `-(1 << 48)` is normal. Every
/// operation wraps modulo 2^64 as the hardware does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GuestTsc {
    /// The ratio (VMX TSC multiplier / SVM `TSC_RATIO`).
    pub scaling: TscScaling,
    /// The TSC offset (VMX TSC offset / SVM VMCB `TSC_OFFSET`).
    pub offset: u64,
}

impl GuestTsc {
    /// A guest TSC with this scaling and offset.
    #[inline]
    pub const fn new(scaling: TscScaling, offset: u64) -> Self {
        GuestTsc { scaling, offset }
    }

    /// The guest TSC when the host TSC reads `host_tsc`.
    #[inline(always)]
    pub const fn read(&self, host_tsc: u64) -> u64 {
        self.scaling.scale(host_tsc).wrapping_add(self.offset)
    }

    /// The offset that makes the guest TSC read `guest_tsc` when the host TSC reads `host_tsc`
    /// (`guest_tsc − ⌊host_tsc · ratio / 2^f⌋`, wrapping; KVM's `kvm_compute_l1_tsc_offset`).
    #[inline]
    pub const fn offset_for(&self, guest_tsc: u64, host_tsc: u64) -> u64 {
        guest_tsc.wrapping_sub(self.scaling.scale(host_tsc))
    }

    /// The smallest host TSC value `h` at which the guest TSC, counting up from its value
    /// `offset` at host TSC 0, reaches `guest_tsc`:
    /// `h = ⌈((guest_tsc − offset) mod 2^64) · 2^f / ratio⌉`, or `None` if `h` does not fit in
    /// 64 bits (the deadline is never reached).
    ///
    /// This is the exact inverse of the floor in [`GuestTsc::read`]: with
    /// `Δ = (guest_tsc − offset) mod 2^64`, `⌊h·ratio/2^f⌋ ≥ Δ` and `⌊(h−1)·ratio/2^f⌋ < Δ`.
    /// For a deadline relative to the current host TSC (what a timer needs), use
    /// [`GuestTsc::host_tsc_reaching`]; this is that function from host TSC 0.
    #[inline]
    pub fn host_tsc_at(&self, guest_tsc: u64) -> Option<u64> {
        self.host_tsc_reaching(guest_tsc, 0)
    }

    /// The smallest host TSC value `h ≥ from_host_tsc` at which the guest TSC, counting up from
    /// its value at `from_host_tsc`, reaches `guest_tsc`, or `None` if that `h` does not fit in
    /// 64 bits. Returns `from_host_tsc` when the guest TSC reads exactly `guest_tsc` there.
    ///
    /// "Counting up" means the guest has advanced by `δ = (guest_tsc − read(from)) mod 2^64`
    /// ticks: `h` is the first host TSC with `⌊h·r/2^f⌋ ≥ ⌊from·r/2^f⌋ + δ`, computed without
    /// truncation, so a guest TSC that wraps past 2^64 on the way is still followed. (A
    /// [`super::TscDeadline`] fires on the plain compare `guest TSC ≥ deadline`, so a deadline
    /// that the guest TSC only reaches by wrapping, or steps over, is reported here but does not
    /// fire at `h`; [`GuestTsc::host_tsc_at_or_past`] is the host TSC at which it fires.)
    pub fn host_tsc_reaching(&self, guest_tsc: u64, from_host_tsc: u64) -> Option<u64> {
        let format = self.scaling.format();
        let ratio = self.scaling.ratio();
        let delta = guest_tsc.wrapping_sub(self.read(from_host_tsc));
        if delta == 0 {
            return Some(from_host_tsc);
        }
        if self.scaling.is_identity() {
            return from_host_tsc.checked_add(delta);
        }
        // The scaled count at `from` has at most 80 bits and δ at most 64, so the target fits.
        let target = format.scale_wide(from_host_tsc, ratio).saturating_add(u128::from(delta));
        // ⌊h·r/2^f⌋ ≥ target  ⇔  h·r ≥ target·2^f  ⇔  h ≥ ⌈target·2^f / r⌉. If target·2^f
        // overflows 128 bits then h > 2^128 / 2^64: never.
        let numerator = target.checked_mul(1u128 << format.frac_bits())?;
        let divisor = u128::from(ratio);
        let quotient = numerator.checked_div(divisor)?;
        let remainder = numerator.checked_rem(divisor)?;
        let host = if remainder == 0 { quotient } else { quotient.checked_add(1)? };
        u64::try_from(host).ok()
    }

    /// The smallest host TSC value `h ≥ from_host_tsc` at which the guest TSC is at or past
    /// `guest_tsc` by the plain unsigned compare `read(h) ≥ guest_tsc` (the compare
    /// IA32_TSC_DEADLINE fires on), or `None` if no `h` in `[from_host_tsc, 2^64)` has it.
    /// Returns `from_host_tsc` when the compare already holds there.
    ///
    /// Unlike [`GuestTsc::host_tsc_reaching`], a value the guest TSC steps over is not taken as
    /// reached: a scaled guest TSC that advances more than one tick per host tick can jump from
    /// below a value near 2^64 straight past 2^64 to a small value, possibly on every one of its
    /// wraps, and the answer is then the first wrap that lands in `[guest_tsc, 2^64)`. The
    /// result is exact for every ratio and offset and costs O(1) unless the value lies within
    /// one host tick's step of 2^64, and then O(log ratio) (a Euclid-like descent; no loop over
    /// wraps).
    pub fn host_tsc_at_or_past(&self, guest_tsc: u64, from_host_tsc: u64) -> Option<u64> {
        if self.read(from_host_tsc) >= guest_tsc {
            return Some(from_host_tsc);
        }
        // The guest TSC counts up from read(from) < guest_tsc and stays below guest_tsc until
        // the first host TSC at which it reaches guest_tsc counting up; if it is not there at
        // that tick, it stepped over [guest_tsc, 2^64) while wrapping. If that tick does not
        // exist, the guest TSC stays in [read(from), guest_tsc) to the end of the host range.
        let host_tsc = self.host_tsc_reaching(guest_tsc, from_host_tsc)?;
        if self.read(host_tsc) >= guest_tsc {
            return Some(host_tsc);
        }
        self.first_landing(guest_tsc, host_tsc)
    }

    /// [`GuestTsc::host_tsc_at_or_past`] by number theory, for any `from_host_tsc`.
    ///
    /// With `W = 2^64 − guest_tsc` (`guest_tsc ≥ 1` here) the compare `read(h) ≥ guest_tsc`
    /// is `(read(h) + W) mod 2^64 < W`, and since `read(h) = ⌊(h·r + offset·2^f) / 2^f⌋ mod 2^64`
    /// that is `(r·h + C) mod N < W·2^f` with `N = 2^(64+f)` and `C = ((offset + W) mod 2^64)·2^f`:
    /// the first `x = h − from` with `(r·x + B) mod N` in `[0, W·2^f)`, `B = (r·from + C) mod N`.
    fn first_landing(&self, guest_tsc: u64, from_host_tsc: u64) -> Option<u64> {
        let f = self.scaling.format().frac_bits();
        let r = u128::from(self.scaling.ratio());
        // f ≤ 48: N ≤ 2^112, and every value below is < N unless said otherwise.
        let n: u128 = (1u128 << 64) << f;
        let mask = n.wrapping_sub(1);
        let window = guest_tsc.wrapping_neg();
        let c = u128::from(self.offset.wrapping_add(window)) << f;
        let len = u128::from(window) << f;
        // r·from < 2^128 exactly; the sum wraps mod 2^128, a multiple of N, so mod N is right.
        let b = r.wrapping_mul(u128::from(from_host_tsc)).wrapping_add(c) & mask;
        if b < len {
            return Some(from_host_tsc);
        }
        // (r·x + b) mod N < len  ⇔  (r·x) mod N ∈ [N − b, N − b + len − 1]; since len ≤ b < N
        // that range lies within [1, N − 1].
        let lo = n.wrapping_sub(b);
        let hi = lo.wrapping_add(len).wrapping_sub(1);
        let x = first_multiple_in(r, n, lo, hi)?;
        from_host_tsc.checked_add(u64::try_from(x).ok()?)
    }

    /// The TSC an L2 guest sees when L1 runs on `self` and gives L2 the mapping `l2` (relative
    /// to L1's TSC), composed as KVM composes it for hardware (`kvm_calc_nested_tsc_multiplier`
    /// and `kvm_calc_nested_tsc_offset`):
    ///
    /// * ratio `r12 = ⌊r1 · r2 / 2^f⌋`, or `r1` when `r2` is 1.0;
    /// * offset `o12 = trunc0(o1 · r2 / 2^f) + o2`, with `o1` signed and the product rounded
    ///   toward zero, or `o1 + o2` when `r2` is 1.0.
    ///
    /// The result differs from scaling L1's TSC value by `l2` (the sequential composition) by
    /// less than `h/2^f + r2/2^f + 2` ticks at host TSC `h`, and not at all when `r2` is 1.0
    /// (as long as L1's TSC does not wrap). Refused if the formats differ or `r12` is not a
    /// valid ratio (see [`TscScaling::nested`]).
    pub fn nested(&self, l2: &GuestTsc) -> Result<GuestTsc, RatioError> {
        let scaling = self.scaling.nested(l2.scaling)?;
        let l1_offset = if l2.scaling.is_identity() {
            self.offset
        } else {
            self.scaling.format().scale_signed(self.offset, l2.scaling.ratio())
        };
        Ok(GuestTsc { scaling, offset: l1_offset.wrapping_add(l2.offset) })
    }
}

/// The smallest `x ≥ 0` with `lo ≤ (a·x) mod m ≤ hi`, for `a < 2^64`, `a < m ≤ 2^112` and
/// `0 < lo ≤ hi < m`. `None` if there is none, and possibly also when the smallest is at
/// least 2^64 (the caller wants a host TSC delta and refuses those anyway).
///
/// If a multiple of `a` lies in `[lo, hi]`, the first one is the answer (no wrap happens before
/// it). Otherwise every solution wraps `y = ⌊a·x/m⌋ ≥ 1` times, and `x` solves the problem iff
/// `[lo + m·y, hi + m·y]` holds a multiple of `a`, i.e. iff `(m·y) mod a` lies in
/// `[a − hi mod a, a − lo mod a]` (a range in `[1, a − 1]`, as `0 < lo mod a ≤ hi mod a`
/// there). That is the same problem for `(m mod a, a)`, and `x = ⌈(lo + m·y) / a⌉` for its
/// smallest solution `y` is the smallest `x` (a larger `y` gives a larger `x`). The moduli
/// follow Euclid's algorithm from `(m, a)`, so there are at most about 95 levels.
fn first_multiple_in(a: u128, m: u128, lo: u128, hi: u128) -> Option<u128> {
    let x = lo.checked_div(a)?.checked_add(u128::from(lo.checked_rem(a)? != 0))?;
    // a·x < lo + a < 2m: no overflow.
    if a.checked_mul(x)? <= hi {
        return Some(x);
    }
    let lo_rem = lo.checked_rem(a)?;
    let hi_rem = hi.checked_rem(a)?;
    let y = first_multiple_in(m.checked_rem(a)?, a, a.checked_sub(hi_rem)?, a.checked_sub(lo_rem)?)?;
    // Below the top level m < 2^64 and y < a < m, so m·y + lo < m·(y + 1) ≤ 2^128. At the top
    // level an overflow means m·y ≥ 2^128 and x > 2^128 / a > 2^64: no host TSC delta.
    let numerator = m.checked_mul(y)?.checked_add(lo)?;
    numerator.checked_div(a)?.checked_add(u128::from(numerator.checked_rem(a)? != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsc::ScalingFormat;

    fn vmx(ratio: u64, offset: u64) -> GuestTsc {
        GuestTsc::new(TscScaling::new(ScalingFormat::Vmx, ratio).unwrap(), offset)
    }

    #[test]
    fn guest_tsc_is_scaled_host_tsc_plus_offset_modulo_2_pow_64() {
        let clock = vmx(3 << 47, (-(1i64 << 48)) as u64); // ratio 1.5, offset -2^48
        assert_eq!(clock.read(0), (-(1i64 << 48)) as u64);
        assert_eq!(clock.read(1 << 48), 1 << 47);
        assert_eq!(clock.read(2), 3u64.wrapping_sub(1 << 48));
    }

    #[test]
    fn offset_for_makes_the_guest_read_the_target() {
        let clock = vmx(5 << 46, 0);
        for (target, host) in [(0, 0), (u64::MAX, 1 << 60), (12345, u64::MAX)] {
            let clock = GuestTsc { offset: clock.offset_for(target, host), ..clock };
            assert_eq!(clock.read(host), target);
        }
    }

    #[test]
    fn host_tsc_of_a_deadline_is_the_ceiling_of_the_inverse() {
        // Ratio 1.5, offset 100: the guest reaches 100 + 10 when ⌊1.5h⌋ ≥ 10, at h = 7
        // (⌊10.5⌋ = 10), not 6 (9).
        let clock = vmx(3 << 47, 100);
        assert_eq!(clock.host_tsc_at(110), Some(7));
        assert_eq!(clock.read(7), 110);
        assert_eq!(clock.read(6), 109);
        // Already there at host 0.
        assert_eq!(clock.host_tsc_at(100), Some(0));
    }

    #[test]
    fn deadline_beyond_the_host_tsc_range_is_never() {
        // Ratio 1/2^48: the guest advances one tick per 2^48 host ticks, so 2^16 + 1 guest
        // ticks take more than 2^64 host ticks.
        let slow = vmx(1, 0);
        assert_eq!(slow.host_tsc_at(1 << 16), None);
        assert_eq!(slow.host_tsc_at((1 << 16) - 1), Some(((1u64 << 16) - 1) << 48));
        // Unscaled: from u64::MAX, one more tick is past the end of the host TSC.
        let unscaled = GuestTsc::default();
        assert_eq!(unscaled.host_tsc_reaching(0, u64::MAX), None);
    }

    #[test]
    fn deadline_is_followed_across_a_guest_tsc_wrap() {
        // Offset -10: the guest reads 2^64 - 10 at host 0 and wraps to 0 at host 10.
        let clock = GuestTsc::new(TscScaling::default(), (-10i64) as u64);
        assert_eq!(clock.host_tsc_reaching(5, 0), Some(15));
        // Scaled by 2: the guest wraps at host 5.
        let clock = vmx(2 << 48, (-10i64) as u64);
        assert_eq!(clock.host_tsc_reaching(6, 1), Some(8));
        assert_eq!(clock.read(8), 6);
        assert_eq!(clock.read(7), 4);
    }

    #[test]
    fn value_stepped_over_is_at_or_past_only_where_a_later_wrap_lands() {
        // Ratio 3, offset 1: the guest TSC reads 3h + 1, ≡ 1 (mod 3) before its first wrap,
        // so it steps from 2^64 − 2 over u64::MAX (≡ 0) to 0 at host 0x5555_5555_5555_5555;
        // after that wrap it reads ≡ 0 (mod 3) and lands on u64::MAX at the end of it.
        let clock = vmx(3 << 48, 1);
        assert_eq!(clock.host_tsc_reaching(u64::MAX, 0), Some(0x5555_5555_5555_5555));
        assert_eq!(clock.read(0x5555_5555_5555_5555), 0);
        let landing = 0xaaaa_aaaa_aaaa_aaaa;
        assert_eq!(clock.host_tsc_at_or_past(u64::MAX, 0), Some(landing));
        assert_eq!(clock.read(landing), u64::MAX);
        assert_eq!(clock.read(landing - 1), u64::MAX - 3);
        // From the landing tick it is already there; one tick later it has wrapped again and
        // never comes back: it reads ≡ 2 (mod 3) from then on and ends at u64::MAX − 1.
        assert_eq!(clock.host_tsc_at_or_past(u64::MAX, landing), Some(landing));
        assert_eq!(clock.host_tsc_at_or_past(u64::MAX, landing + 1), None);
        // A value the guest TSC does not step over is reached where it is first counted up to.
        assert_eq!(clock.host_tsc_at_or_past(100, 0), Some(33));
    }

    #[test]
    fn nested_offset_rounds_a_negative_l1_offset_toward_zero() {
        let l1 = vmx(1 << 48, (-3i64) as u64);
        let l2 = vmx(1 << 47, 7); // L2 at half L1's rate
        let nested = l1.nested(&l2).unwrap();
        assert_eq!(nested.scaling.ratio(), 1 << 47);
        // trunc0(-3 · 0.5) = -1, plus 7.
        assert_eq!(nested.offset, 6);
    }

    #[test]
    fn nested_with_identity_l2_ratio_adds_the_offsets() {
        let l1 = vmx(3 << 47, (-(1i64 << 48)) as u64);
        let l2 = vmx(1 << 48, 1000);
        let nested = l1.nested(&l2).unwrap();
        assert_eq!(nested.scaling, l1.scaling);
        assert_eq!(nested.offset, l1.offset.wrapping_add(1000));
        for h in [0, 1 << 48, 1 << 60, u64::MAX] {
            assert_eq!(nested.read(h), l2.read(l1.read(h)));
        }
    }
}
