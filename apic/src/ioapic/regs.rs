//! MMIO offsets, indirect register indices and redirection-entry bits, named as the 82093AA
//! datasheet (and, for the EOI register, the ICH/PCH IOxAPIC datasheets) spell them.
//!
//! The guest reaches the IOAPIC through a small MMIO window: it writes a register index to
//! IOREGSEL, then reads or writes the selected 32-bit register through IOWIN. Version 0x20
//! parts add the EOI register, written directly.

use crate::msi::{DeliveryMode, DestinationMode, TriggerMode};

/// The IOAPIC's default physical base address (the MADT may place it elsewhere).
pub const IOAPIC_DEFAULT_BASE: u64 = 0xFEC0_0000;

/// MMIO offset of IOREGSEL, the I/O register select (index) register: bits 7:0 select the
/// indirect register that IOWIN reaches; bits 31:8 are reserved.
pub const IOREGSEL: u64 = 0x00;
/// MMIO offset of IOWIN, the I/O window (data) register: reads and writes the 32-bit
/// register that IOREGSEL selects.
pub const IOWIN: u64 = 0x10;
/// MMIO offset of the EOI register of version 0x20 IOAPICs (ICH/PCH): writing a vector in
/// bits 7:0 clears Remote IRR of every level-triggered entry with that vector. Version 0x11
/// (82093AA) parts do not decode it.
pub const EOIR: u64 = 0x40;

/// Indirect register 0x00, IOAPICID: the IOAPIC's 4-bit APIC-bus ID in bits 27:24 (R/W).
pub const IOAPICID: u8 = 0x00;
/// Indirect register 0x01, IOAPICVER: version in bits 7:0, maximum redirection entry in bits
/// 23:16 (read-only).
pub const IOAPICVER: u8 = 0x01;
/// Indirect register 0x02, IOAPICARB: the bus arbitration ID in bits 27:24, loaded from the ID
/// (read-only).
pub const IOAPICARB: u8 = 0x02;
/// Indirect register 0x10: redirection entry 0, low dword. Entry `n` is at `0x10 + 2n` (bits
/// 31:0) and `0x11 + 2n` (bits 63:32).
pub const IOREDTBL: u8 = 0x10;

/// Number of interrupt input pins (redirection entries) of the modelled IOAPIC.
pub const IOAPIC_PINS: u8 = 24;
/// The maximum redirection entry reported in IOAPICVER bits 23:16 (pins − 1).
pub const MAX_REDIRECTION_ENTRY: u8 = IOAPIC_PINS - 1;
/// IOAPICVER bit position of the maximum redirection entry.
pub const IOAPICVER_MRE_SHIFT: u32 = 16;
/// IOAPICID / IOAPICARB bit position of the 4-bit ID.
pub const IOAPICID_SHIFT: u32 = 24;
/// Mask of the ID bits (27:24) after shifting down by [`IOAPICID_SHIFT`].
pub const IOAPICID_MASK: u32 = 0xF;

/// The IOAPIC version the model reports in IOAPICVER bits 7:0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum Version {
    /// 0x11: the Intel 82093AA (what KVM's in-kernel IOAPIC reports). No EOI register:
    /// software ends a level interrupt by the LAPIC's EOI broadcast or by switching the
    /// entry to edge and back.
    #[default]
    V11 = 0x11,
    /// 0x20: the ICH/PCH IOxAPIC, with the EOI register at [`EOIR`] (what QEMU and crosvm
    /// report by default).
    V20 = 0x20,
}

impl Version {
    /// The IOAPICVER register value: version and maximum redirection entry.
    #[inline]
    pub const fn register(self) -> u32 {
        (MAX_REDIRECTION_ENTRY as u32) << IOAPICVER_MRE_SHIFT | self as u32
    }

    /// Whether the EOI register at [`EOIR`] exists.
    #[inline]
    pub const fn has_eoir(self) -> bool {
        matches!(self, Version::V20)
    }
}

/// Redirection entry bits 7:0, INTVEC: the vector (0x10–0xFE are the valid ones; the IOAPIC
/// does not check).
pub const RTE_VECTOR: u64 = 0xFF;
/// Redirection entry bits 10:8, DELMOD: the delivery mode (see [`DeliveryMode`]).
pub const RTE_DELIVERY_MODE_SHIFT: u32 = 8;
/// Redirection entry bit 11, DESTMOD: 1 = logical destination mode, 0 = physical.
pub const RTE_DEST_MODE_LOGICAL: u64 = 1 << 11;
/// Redirection entry bit 12, DELIVS: delivery status, 1 = send pending (read-only). The
/// model delivers at once, so it always reads 0.
pub const RTE_DELIVERY_STATUS: u64 = 1 << 12;
/// Redirection entry bit 13, INTPOL: input polarity, 1 = active low (stored, not used: see
/// [`crate::ioapic`] on polarity).
pub const RTE_POLARITY_LOW: u64 = 1 << 13;
/// Redirection entry bit 14, Remote IRR (read-only): set when a level-triggered interrupt is
/// accepted, cleared by an EOI with the entry's vector.
pub const RTE_REMOTE_IRR: u64 = 1 << 14;
/// Redirection entry bit 15, trigger mode: 1 = level, 0 = edge.
pub const RTE_TRIGGER_LEVEL: u64 = 1 << 15;
/// Redirection entry bit 16, interrupt mask: 1 = masked.
pub const RTE_MASK: u64 = 1 << 16;
/// Redirection entry bits 55:49: reserved on the 82093AA; with the virtual extended
/// destination ID (KVM_FEATURE_MSI_EXT_DEST_ID) they are destination bits 14:8.
pub const RTE_EXT_DEST_SHIFT: u32 = 49;
/// Mask of the extended destination bits after shifting by [`RTE_EXT_DEST_SHIFT`].
pub const RTE_EXT_DEST_MASK: u64 = 0x7F;
/// Redirection entry bits 63:56: the destination (APIC ID or logical destination).
pub const RTE_DEST_SHIFT: u32 = 56;
/// The read-only bits of a redirection entry: delivery status and Remote IRR. Guest writes
/// leave them unchanged.
pub const RTE_READ_ONLY: u64 = RTE_DELIVERY_STATUS | RTE_REMOTE_IRR;

/// One 64-bit redirection entry (IOREDTBLn), raw as the hardware lays it out.
///
/// Every bit is stored, the reserved bits 55:17 included (Linux uses 55:49 for the extended
/// destination ID and bit 48 for the interrupt-remapping format).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(transparent)]
pub struct RedirectionEntry(pub u64);

impl Default for RedirectionEntry {
    fn default() -> Self {
        RedirectionEntry::POWER_ON
    }
}

impl RedirectionEntry {
    /// The power-on value of every entry: masked, everything else zero.
    pub const POWER_ON: RedirectionEntry = RedirectionEntry(RTE_MASK);

    /// The vector (bits 7:0).
    #[inline(always)]
    pub const fn vector(self) -> u8 {
        self.0 as u8
    }

    /// The delivery mode (bits 10:8).
    #[inline(always)]
    pub const fn delivery_mode(self) -> DeliveryMode {
        DeliveryMode::from_bits((self.0 >> RTE_DELIVERY_MODE_SHIFT) as u32)
    }

    /// The destination mode (bit 11).
    #[inline(always)]
    pub const fn destination_mode(self) -> DestinationMode {
        if self.0 & RTE_DEST_MODE_LOGICAL != 0 {
            DestinationMode::Logical
        } else {
            DestinationMode::Physical
        }
    }

    /// Delivery status (bit 12): a message is waiting to be sent.
    #[inline(always)]
    pub const fn delivery_status(self) -> bool {
        self.0 & RTE_DELIVERY_STATUS != 0
    }

    /// Input polarity is active low (bit 13).
    #[inline(always)]
    pub const fn polarity_low(self) -> bool {
        self.0 & RTE_POLARITY_LOW != 0
    }

    /// Remote IRR (bit 14): a level-triggered interrupt was accepted and awaits its EOI.
    #[inline(always)]
    pub const fn remote_irr(self) -> bool {
        self.0 & RTE_REMOTE_IRR != 0
    }

    /// The trigger mode (bit 15).
    #[inline(always)]
    pub const fn trigger_mode(self) -> TriggerMode {
        if self.is_level() {
            TriggerMode::Level
        } else {
            TriggerMode::Edge
        }
    }

    /// Level-triggered (bit 15 set).
    #[inline(always)]
    pub const fn is_level(self) -> bool {
        self.0 & RTE_TRIGGER_LEVEL != 0
    }

    /// Masked (bit 16).
    #[inline(always)]
    pub const fn masked(self) -> bool {
        self.0 & RTE_MASK != 0
    }

    /// The 8-bit destination field (bits 63:56).
    #[inline(always)]
    pub const fn destination(self) -> u8 {
        (self.0 >> RTE_DEST_SHIFT) as u8
    }

    /// Bits 55:49, the extended destination ID (destination bits 14:8) when the VMM
    /// advertises it.
    #[inline(always)]
    pub const fn extended_destination(self) -> u8 {
        ((self.0 >> RTE_EXT_DEST_SHIFT) & RTE_EXT_DEST_MASK) as u8
    }

    /// The low dword (IOREDTBL index `0x10 + 2n`).
    #[inline(always)]
    pub const fn low(self) -> u32 {
        self.0 as u32
    }

    /// The high dword (IOREDTBL index `0x11 + 2n`).
    #[inline(always)]
    pub const fn high(self) -> u32 {
        (self.0 >> 32) as u32
    }
}
