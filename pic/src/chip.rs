//! What one 8259A does on its own: priority resolution, request latching, acknowledge,
//! and the in-service bookkeeping of the EOI commands. The pair-level wiring (cascade,
//! ports, profiles) is in the crate root.

use crate::state::ChipState;
use crate::{LineStatus, Quirks};

/// Bit of level `irq` (0–7) in an 8-bit register.
#[inline(always)]
pub(crate) const fn bit(irq: u8) -> u8 {
    1 << (irq & 7)
}

impl ChipState {
    /// Inputs that are level-triggered: ELCR, or all eight with ICW1.LTIM.
    #[inline(always)]
    pub(crate) fn level_mask(&self) -> u8 {
        if self.ltim {
            0xFF
        } else {
            self.elcr
        }
    }

    /// Priority rank of the highest-priority level set in `mask`: 0 is the highest
    /// (`priority_add`), 7 the lowest, 8 when `mask` is empty.
    #[inline(always)]
    fn rank(&self, mask: u8) -> u32 {
        mask.rotate_right(u32::from(self.priority_add & 7)).trailing_zeros()
    }

    /// The level at priority rank `rank` (0–7).
    #[inline(always)]
    fn level_at(&self, rank: u32) -> u8 {
        // rank < 8 here, so the cast is exact.
        (rank as u8).wrapping_add(self.priority_add) & 7
    }

    /// The level this chip presents on INT: the highest-priority unmasked request that is
    /// higher than every in-service level that counts, or `None` (INT low).
    ///
    /// `cascade` is ORed into IRR (the slave's INT on master IR2, datasheet profile);
    /// `master` enables special fully nested mode, which only the master honours.
    #[inline(always)]
    pub(crate) fn request(&self, cascade: u8, master: bool, quirks: Quirks) -> Option<u8> {
        let rank = self.rank((self.irr | cascade) & !self.imr);
        if rank == 8 {
            return None;
        }
        let level = self.level_at(rank);
        let mut in_service = self.isr;
        if self.special_mask && !quirks.contains(Quirks::SPECIAL_MASK_IGNORED) {
            // Special mask mode: a masked level no longer blocks anything.
            in_service &= !self.imr;
        }
        if master
            && self.special_fully_nested_mode
            && (level == 2 || quirks.contains(Quirks::SFNM_FOR_EVERY_REQUEST))
        {
            // Special fully nested: the slave's own requests are not locked out by ISR2.
            in_service &= !bit(2);
        }
        (rank < self.rank(in_service)).then_some(level)
    }

    /// Drives input `irq` to `level` (already ORed over its sources) and latches IRR as the
    /// trigger mode says. The status is KVM_IRQ_LINE_STATUS's.
    #[inline(always)]
    pub(crate) fn set_input(&mut self, irq: u8, level: bool) -> LineStatus {
        let b = bit(irq);
        let mut fresh = true;
        if self.level_mask() & b != 0 {
            // Level: IRR follows the line.
            if level {
                fresh = self.irr & b == 0;
                self.irr |= b;
                self.last_irr |= b;
            } else {
                self.irr &= !b;
                self.last_irr &= !b;
            }
        } else if level {
            // Edge: a low-to-high transition latches IRR until the acknowledge.
            if self.last_irr & b == 0 {
                fresh = self.irr & b == 0;
                self.irr |= b;
            }
            self.last_irr |= b;
        } else {
            self.last_irr &= !b;
        }
        if self.imr & b != 0 {
            LineStatus::Masked
        } else if fresh {
            LineStatus::Accepted
        } else {
            LineStatus::Coalesced
        }
    }

    /// Interrupt acknowledge of `irq`: sets its ISR bit, clears an edge request (a level
    /// request stays while the line is high) and performs automatic EOI. Returns the ISR bit
    /// that automatic EOI cleared, if any.
    #[inline(always)]
    pub(crate) fn acknowledge(&mut self, irq: u8) -> u8 {
        let b = bit(irq);
        self.isr |= b;
        if self.level_mask() & b == 0 {
            self.irr &= !b;
        }
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.make_lowest(irq);
            }
            self.isr &= !b;
            return b;
        }
        0
    }

    /// Rotates priorities so that `irq` becomes the lowest level (and the next one the highest).
    #[inline(always)]
    pub(crate) fn make_lowest(&mut self, irq: u8) {
        self.priority_add = irq.wrapping_add(1) & 7;
    }

    /// Clears the in-service bit of `irq`; returns it if it was set (an EOI notification).
    #[inline(always)]
    pub(crate) fn end(&mut self, irq: u8) -> u8 {
        let b = bit(irq) & self.isr;
        self.isr &= !b;
        b
    }

    /// The level a non-specific EOI ends: the highest-priority in-service level, skipping
    /// masked levels in special mask mode.
    #[inline(always)]
    pub(crate) fn highest_in_service(&self, quirks: Quirks) -> Option<u8> {
        let mut in_service = self.isr;
        if self.special_mask && !quirks.contains(Quirks::SPECIAL_MASK_IGNORED) {
            in_service &= !self.imr;
        }
        let rank = self.rank(in_service);
        (rank < 8).then(|| self.level_at(rank))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chip() -> ChipState {
        ChipState::MASTER_RESET
    }

    #[test]
    fn lowest_numbered_request_wins_without_rotation() {
        let mut c = chip();
        c.irr = 0b1010_0100;
        assert_eq!(c.request(0, false, Quirks::DATASHEET), Some(2));
    }

    #[test]
    fn rotation_moves_the_highest_priority_to_priority_add() {
        let mut c = chip();
        c.irr = 0b0000_1001; // IR0 and IR3
        c.priority_add = 1; // IR1 highest, IR0 lowest
        assert_eq!(c.request(0, false, Quirks::DATASHEET), Some(3));
    }

    #[test]
    fn in_service_level_blocks_equal_and_lower_requests() {
        let mut c = chip();
        c.isr = bit(3);
        c.irr = bit(3) | bit(5);
        assert_eq!(c.request(0, false, Quirks::DATASHEET), None);
        c.irr |= bit(1);
        assert_eq!(c.request(0, false, Quirks::DATASHEET), Some(1));
    }

    #[test]
    fn masked_request_is_not_presented_but_stays_latched() {
        let mut c = chip();
        c.imr = bit(4);
        assert_eq!(c.set_input(4, true), LineStatus::Masked);
        assert_eq!(c.request(0, false, Quirks::DATASHEET), None);
        c.imr = 0;
        assert_eq!(c.request(0, false, Quirks::DATASHEET), Some(4));
    }

    #[test]
    fn second_edge_while_pending_is_coalesced() {
        let mut c = chip();
        assert_eq!(c.set_input(5, true), LineStatus::Accepted);
        c.set_input(5, false);
        assert_eq!(c.set_input(5, true), LineStatus::Coalesced);
    }
}
