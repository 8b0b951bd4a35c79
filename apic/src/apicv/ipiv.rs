//! IPI virtualization (SDM Vol. 3 "IPI Virtualization"; tertiary processor-based control bit 4):
//! the guest's ICR writes that send a fixed, edge-triggered, physically addressed IPI without a
//! shorthand are completed by the processor itself. It finds the destination vCPU's
//! posted-interrupt descriptor through the *PID-pointer table* and posts the vector there,
//! sending the descriptor's notification vector to its notification destination if that
//! post set ON, as VT-d does for an assigned device. No VM exit happens on the sender.
//!
//! The table is VM-wide: the VMCS holds its physical address and the *last PID-pointer
//! index*; entry `n` (8 bytes) belongs to the vCPU with APIC ID `n`. An IPI whose destination
//! is past the last index or whose entry is invalid, or whose vector is below 16, ends in an
//! APIC-write VM exit for the ICR (offset 0x300), and the VMM sends it as it would without IPI
//! virtualization.
//!
//! A VMM keeps three things true for the table:
//! * an entry exists only for an APIC ID that names exactly one vCPU: a guest that changes an
//!   xAPIC ID makes that ID's entry wrong (KVM inhibits APIC virtualization then);
//! * the broadcast destinations (0xFF in xAPIC mode) have no valid entry, so a broadcast exits
//!   and is delivered to every APIC by the VMM (the processor does not treat 0xFF specially:
//!   it looks entry 0xFF up like any other);
//! * a vCPU that blocks gets a notification vector that wakes it (KVM's wake-up vector),
//!   since the processor notifies whatever NV and NDST say;
//! * the processor does not look at the target's SVR: a fixed IPI to a software-disabled APIC
//!   is posted, where a LAPIC discards it. A VMM that wants the LAPIC's answer drops the
//!   entry while the target's SVR bit 8 is clear (SVR writes are APIC-write exits, so it sees
//!   every change); KVM keeps it, and posts.
//!
//! In the model [`PidPointerTable`] is the lookup the processor does; [`PidPointer`] is the
//! hardware's entry format, for a VMM that builds the real table.

use super::{PostOutcome, PostedInterruptDescriptor};

/// An IPI that IPI virtualization completed: `vector` was posted into the descriptor of APIC
/// ID `destination` with `outcome` ([`PostOutcome::Notify`]: the processor sent the
/// descriptor's notification vector to its notification destination).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PostedIpi {
    /// The destination APIC ID (xAPIC: ICR bits 63:56; x2APIC: bits 63:32).
    pub destination: u32,
    /// The vector posted.
    pub vector: u8,
    /// What the post did.
    pub outcome: PostOutcome,
}

/// The largest index a PID-pointer table can have: the last PID-pointer index is a 16-bit
/// VMCS field.
pub const MAX_PID_POINTER_INDEX: u32 = 0xFFFF;

/// One 8-byte PID-pointer table entry as the processor reads it: bit 0 valid, bits 5:1 zero,
/// and the 64-byte-aligned physical address of a posted-interrupt descriptor in bits 63:6.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(transparent)]
pub struct PidPointer(pub u64);

impl PidPointer {
    /// An invalid entry: IPIs to this APIC ID end in APIC-write exits.
    pub const INVALID: PidPointer = PidPointer(0);
    /// Bit 0: the entry is valid.
    pub const VALID: u64 = 1;

    /// The valid entry for the descriptor at physical `address`, or `None` if `address` is not
    /// 64-byte aligned.
    #[inline]
    pub const fn new(address: u64) -> Option<Self> {
        if address & 0x3F != 0 {
            return None;
        }
        Some(PidPointer(address | Self::VALID))
    }

    /// The descriptor's physical address, or `None` where the processor treats the entry as
    /// invalid and exits: bits 5:0 other than 000001b, or an address with bits set at or above
    /// the processor's physical-address width `maxphyaddr` (CPUID 0x80000008 EAX bits 7:0).
    #[inline]
    pub const fn address(self, maxphyaddr: u32) -> Option<u64> {
        if self.0 & 0x3F != Self::VALID {
            return None;
        }
        if maxphyaddr < 64 && self.0 >> maxphyaddr != 0 {
            return None;
        }
        Some(self.0 & !0x3F)
    }
}

/// The lookup IPI virtualization does: APIC ID → the descriptor its PID-pointer table entry
/// locates.
pub trait PidPointerTable {
    /// The descriptor of the vCPU with APIC ID `apic_id`, or `None` if `apic_id` is past the
    /// last PID-pointer index or its entry is invalid (the IPI then exits).
    fn descriptor(&self, apic_id: u32) -> Option<&PostedInterruptDescriptor>;
}

/// A table whose index is the APIC ID and whose entries are all valid: the last PID-pointer
/// index is `len() - 1` (at most [`MAX_PID_POINTER_INDEX`]). Every entry is valid, 0xFF too:
/// with 256 or more vCPUs and xAPIC guests use the `Option` table and leave entry 0xFF empty.
impl PidPointerTable for [PostedInterruptDescriptor] {
    #[inline]
    fn descriptor(&self, apic_id: u32) -> Option<&PostedInterruptDescriptor> {
        if apic_id > MAX_PID_POINTER_INDEX {
            return None;
        }
        self.get(usize::try_from(apic_id).ok()?)
    }
}

/// The same as an array.
impl<const N: usize> PidPointerTable for [PostedInterruptDescriptor; N] {
    #[inline]
    fn descriptor(&self, apic_id: u32) -> Option<&PostedInterruptDescriptor> {
        self[..].descriptor(apic_id)
    }
}

/// A table whose index is the APIC ID, `None` marking an invalid entry (the last PID-pointer
/// index is `len() - 1`, at most [`MAX_PID_POINTER_INDEX`]).
impl PidPointerTable for [Option<&PostedInterruptDescriptor>] {
    #[inline]
    fn descriptor(&self, apic_id: u32) -> Option<&PostedInterruptDescriptor> {
        if apic_id > MAX_PID_POINTER_INDEX {
            return None;
        }
        self.get(usize::try_from(apic_id).ok()?).copied().flatten()
    }
}

impl<T: PidPointerTable + ?Sized> PidPointerTable for &T {
    #[inline]
    fn descriptor(&self, apic_id: u32) -> Option<&PostedInterruptDescriptor> {
        (**self).descriptor(apic_id)
    }
}

/// The table of a VMM that does not use IPI virtualization (or a VM with no entries): every
/// lookup fails, so every IPI exits, exactly as with the control clear.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NoPidTable;

impl PidPointerTable for NoPidTable {
    #[inline]
    fn descriptor(&self, _apic_id: u32) -> Option<&PostedInterruptDescriptor> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_valid_only_with_bits_5_to_0_equal_to_1_and_the_address_in_range() {
        let entry = PidPointer::new(0x1234_5640).unwrap();
        assert_eq!(entry.0, 0x1234_5641);
        assert_eq!(entry.address(39), Some(0x1234_5640));
        assert_eq!(PidPointer::new(0x1234_5650), None, "not 64-byte aligned");
        assert_eq!(PidPointer::INVALID.address(52), None);
        assert_eq!(PidPointer(0x1234_5643).address(52), None, "bit 1 set");
        assert_eq!(PidPointer(0x1234_5640).address(52), None, "valid bit clear");
        assert_eq!(PidPointer::new(1 << 40).unwrap().address(40), None, "beyond MAXPHYADDR");
        assert_eq!(PidPointer::new(1 << 40).unwrap().address(41), Some(1 << 40));
    }

    #[test]
    fn lookups_past_the_last_index_or_on_invalid_entries_fail() {
        let pids = [PostedInterruptDescriptor::new(), PostedInterruptDescriptor::new()];
        let table: &[PostedInterruptDescriptor] = &pids;
        assert!(core::ptr::eq(table.descriptor(1).unwrap(), &pids[1]));
        assert!(table.descriptor(2).is_none());
        assert!(table.descriptor(u32::MAX).is_none());
        let sparse = [None, Some(&pids[0])];
        let sparse: &[Option<&PostedInterruptDescriptor>] = &sparse;
        assert!(sparse.descriptor(0).is_none());
        assert!(core::ptr::eq(sparse.descriptor(1).unwrap(), &pids[0]));
        assert!(NoPidTable.descriptor(0).is_none());
    }
}
