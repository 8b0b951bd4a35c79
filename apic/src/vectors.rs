//! 256-bit vector sets: the shape of the LAPIC's IRR, ISR and TMR, of the IOAPIC's EOI-exit
//! bitmap and of the posted-interrupt request bits.

/// A set of interrupt vectors 0–255, one bit each: bit `v % 64` of word `v / 64`.
///
/// The APIC spells these registers as eight 32-bit words (ISR0–ISR7 at 0x100–0x170, and so
/// on: vector `v` is bit `v % 32` of word `v / 32`); [`VectorSet::word32`] and
/// [`VectorSet::set_word32`] give that view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VectorSet(pub [u64; 4]);

impl VectorSet {
    /// No vector.
    pub const EMPTY: VectorSet = VectorSet([0; 4]);

    /// Whether `vector` is in the set.
    #[inline(always)]
    pub const fn contains(&self, vector: u8) -> bool {
        let (word, bit) = Self::position(vector);
        self.word(word) & bit != 0
    }

    /// Adds `vector`; returns whether it was already there.
    #[inline(always)]
    pub fn insert(&mut self, vector: u8) -> bool {
        let (word, bit) = Self::position(vector);
        let w = self.word_mut(word);
        let was = *w & bit != 0;
        *w |= bit;
        was
    }

    /// Removes `vector`; returns whether it was there.
    #[inline(always)]
    pub fn remove(&mut self, vector: u8) -> bool {
        let (word, bit) = Self::position(vector);
        let w = self.word_mut(word);
        let was = *w & bit != 0;
        *w &= !bit;
        was
    }

    /// Adds or removes `vector`.
    #[inline(always)]
    pub fn set(&mut self, vector: u8, present: bool) {
        if present {
            self.insert(vector);
        } else {
            self.remove(vector);
        }
    }

    /// The highest vector in the set (the highest priority), or `None` if it is empty.
    #[inline(always)]
    pub const fn highest(&self) -> Option<u8> {
        // The top set bit of a non-zero word, plus the word's first vector; fits in a u8.
        const fn top(word: u64, base: u8) -> Option<u8> {
            Some(base | (63u32.wrapping_sub(word.leading_zeros()) as u8))
        }
        let [w0, w1, w2, w3] = self.0;
        if w3 != 0 {
            top(w3, 192)
        } else if w2 != 0 {
            top(w2, 128)
        } else if w1 != 0 {
            top(w1, 64)
        } else if w0 != 0 {
            top(w0, 0)
        } else {
            None
        }
    }

    /// Whether the set is empty.
    #[inline(always)]
    pub const fn is_empty(&self) -> bool {
        self.0[0] | self.0[1] | self.0[2] | self.0[3] == 0
    }

    /// The number of vectors in the set.
    #[inline]
    pub const fn len(&self) -> u32 {
        // At most 256.
        (self.0[0].count_ones())
            .wrapping_add(self.0[1].count_ones())
            .wrapping_add(self.0[2].count_ones())
            .wrapping_add(self.0[3].count_ones())
    }

    /// 32-bit register `index` (0–7) of the APIC's view: vectors `32·index` to `32·index + 31`.
    /// An index above 7 reads 0.
    #[inline]
    pub const fn word32(&self, index: usize) -> u32 {
        if index > 7 {
            return 0;
        }
        (self.word(index >> 1) >> ((index & 1) << 5)) as u32
    }

    /// Replaces 32-bit register `index` (0–7); an index above 7 changes nothing.
    #[inline]
    pub fn set_word32(&mut self, index: usize, value: u32) {
        if index > 7 {
            return;
        }
        let shift = (index & 1) << 5;
        let w = self.word_mut(index >> 1);
        *w = (*w & !(0xFFFF_FFFFu64 << shift)) | (u64::from(value) << shift);
    }

    /// The vectors in the set, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=255u8).filter(move |&v| self.contains(v))
    }

    /// The union of two sets.
    #[inline]
    pub const fn union(&self, other: &VectorSet) -> VectorSet {
        VectorSet([
            self.0[0] | other.0[0],
            self.0[1] | other.0[1],
            self.0[2] | other.0[2],
            self.0[3] | other.0[3],
        ])
    }

    /// The vectors in both sets.
    #[inline]
    pub const fn intersection(&self, other: &VectorSet) -> VectorSet {
        VectorSet([
            self.0[0] & other.0[0],
            self.0[1] & other.0[1],
            self.0[2] & other.0[2],
            self.0[3] & other.0[3],
        ])
    }

    /// Word index (0–3) and bit mask of `vector`.
    #[inline(always)]
    const fn position(vector: u8) -> (usize, u64) {
        ((vector >> 6) as usize, 1u64 << (vector & 63))
    }

    /// Word `index & 3`: always in range, so the indexing cannot fail.
    #[inline(always)]
    #[allow(clippy::indexing_slicing)]
    const fn word(&self, index: usize) -> u64 {
        self.0[index & 3]
    }

    #[inline(always)]
    #[allow(clippy::indexing_slicing)]
    fn word_mut(&mut self, index: usize) -> &mut u64 {
        &mut self.0[index & 3]
    }
}

impl FromIterator<u8> for VectorSet {
    fn from_iter<I: IntoIterator<Item = u8>>(iter: I) -> Self {
        let mut set = VectorSet::EMPTY;
        for v in iter {
            set.insert(v);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_is_the_top_vector_across_words() {
        let mut set = VectorSet::EMPTY;
        assert_eq!(set.highest(), None);
        for v in [0x10, 0x3f, 0x40, 0x7f, 0x80, 0xff] {
            set.insert(v);
            assert_eq!(set.highest(), Some(v));
        }
        assert!(set.remove(0xff));
        assert!(!set.remove(0xff));
        assert_eq!(set.highest(), Some(0x80));
        assert_eq!(set.len(), 5);
    }

    #[test]
    fn word32_is_the_apic_register_view() {
        let set: VectorSet = [0x00, 0x21, 0x5f, 0xe0].into_iter().collect();
        assert_eq!(set.word32(0), 1);
        assert_eq!(set.word32(1), 1 << 1);
        assert_eq!(set.word32(2), 1 << 31);
        assert_eq!(set.word32(7), 1);
        assert_eq!(set.word32(8), 0);
        let mut copy = VectorSet::EMPTY;
        for i in 0..8 {
            copy.set_word32(i, set.word32(i));
        }
        assert_eq!(copy, set);
        copy.set_word32(2, 0);
        assert!(!copy.contains(0x5f));
        assert!(copy.contains(0x21));
    }

    #[test]
    fn iter_lists_members_lowest_first() {
        let set: VectorSet = [0x90, 0x31, 0x30].into_iter().collect();
        assert!(set.iter().eq([0x30, 0x31, 0x90]));
    }
}
