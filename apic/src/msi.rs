//! Interrupt messages on the APIC bus, and their MSI encoding.
//!
//! Every interrupt that reaches a local APIC from outside it travels as one message: an IOAPIC
//! redirection entry, a PCI MSI/MSI-X write, or an IPI from another APIC's ICR. The fields are
//! the same in all three (SDM Vol. 3 "Message Signalled Interrupts", 82093AA redirection entry,
//! ICR); this module names them once. [`MsiMessage`] is the address/data pair a device (or the
//! IOAPIC, as modern VMMs model it) writes; [`Interrupt`] is the decoded message the
//! [`crate::bus`] delivers.

/// MSI address bits 31:20 that mark a write as an interrupt message: 0xFEE.
pub const MSI_ADDRESS_BASE: u64 = 0xFEE0_0000;
/// Mask of the bits of [`MSI_ADDRESS_BASE`] (address bits 31:20).
pub const MSI_ADDRESS_BASE_MASK: u64 = 0xFFF0_0000;

/// MSI address bit 2: destination mode (0 physical, 1 logical).
pub const MSI_ADDR_DEST_MODE_LOGICAL: u64 = 1 << 2;
/// MSI address bit 3: redirection hint (1 = deliver to the lowest-priority destination only).
pub const MSI_ADDR_REDIRECTION_HINT: u64 = 1 << 3;
/// MSI address bits 19:12: destination ID.
pub const MSI_ADDR_DEST_SHIFT: u32 = 12;
/// MSI address bits 11:5: extended destination ID (destination bits 14:8), when the VMM
/// advertises it (Linux's "virtual extended destination ID", KVM_FEATURE_MSI_EXT_DEST_ID).
pub const MSI_ADDR_EXT_DEST_SHIFT: u32 = 5;

/// MSI data bits 10:8: delivery mode.
pub const MSI_DATA_DELIVERY_MODE_SHIFT: u32 = 8;
/// MSI data bit 14: level (1 = assert; only meaningful for level-triggered messages).
pub const MSI_DATA_LEVEL_ASSERT: u32 = 1 << 14;
/// MSI data bit 15: trigger mode (0 edge, 1 level).
pub const MSI_DATA_TRIGGER_LEVEL: u32 = 1 << 15;

/// The delivery mode of a message, ICR, LVT or redirection entry (bits 10:8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum DeliveryMode {
    /// 000: deliver the vector to every destination.
    #[default]
    Fixed = 0,
    /// 001: deliver the vector to the destination processor with the lowest priority.
    LowestPriority = 1,
    /// 010: a system management interrupt (the vector field is ignored, must be 0).
    Smi = 2,
    /// 011: reserved (P6 remote read; KVM uses it as its paravirtual kick).
    RemoteRead = 3,
    /// 100: a non-maskable interrupt (the vector is ignored).
    Nmi = 4,
    /// 101: INIT (or, with level de-assert and level trigger, the legacy INIT de-assert).
    Init = 5,
    /// 110: start-up IPI; the vector gives the start address (vector << 12).
    StartUp = 6,
    /// 111: external interrupt: the vector comes from an 8259A's interrupt acknowledge.
    ExtInt = 7,
}

impl DeliveryMode {
    /// Decodes the three-bit field; the bits above bit 2 of `bits` are ignored.
    #[inline(always)]
    pub const fn from_bits(bits: u32) -> Self {
        match bits & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            3 => DeliveryMode::RemoteRead,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            _ => DeliveryMode::ExtInt,
        }
    }

    /// The three-bit field.
    #[inline(always)]
    pub const fn bits(self) -> u32 {
        self as u32
    }
}

/// How the destination field is read (ICR bit 11, RTE bit 11, MSI address bit 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DestinationMode {
    /// The destination is an APIC ID.
    #[default]
    Physical,
    /// The destination is a message destination address matched against each APIC's
    /// LDR (and DFR in xAPIC mode).
    Logical,
}

/// Edge or level triggering (ICR bit 15, RTE bit 15, MSI data bit 15).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum TriggerMode {
    /// Edge-triggered: accepted once, no EOI message owed to the source.
    #[default]
    Edge,
    /// Level-triggered: the LAPIC sets TMR and broadcasts its EOI to the IOAPICs.
    Level,
}

/// The ICR destination shorthand (bits 19:18). Only IPIs have one; MSIs and IOAPIC
/// messages always use [`Shorthand::None`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Shorthand {
    /// 00: the destination field selects the targets.
    #[default]
    None,
    /// 01: the sender only.
    ToSelf,
    /// 10: every APIC, the sender included.
    AllIncludingSelf,
    /// 11: every APIC but the sender.
    AllExcludingSelf,
}

impl Shorthand {
    /// Decodes the two-bit field (bits above bit 1 are ignored).
    #[inline(always)]
    pub const fn from_bits(bits: u32) -> Self {
        match bits & 3 {
            0 => Shorthand::None,
            1 => Shorthand::ToSelf,
            2 => Shorthand::AllIncludingSelf,
            _ => Shorthand::AllExcludingSelf,
        }
    }
}

/// One interrupt message on the APIC bus, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Interrupt {
    /// The vector (ignored for SMI, NMI and INIT; the start page for a start-up IPI).
    pub vector: u8,
    /// What the destinations do with it.
    pub delivery_mode: DeliveryMode,
    /// How [`Interrupt::destination`] is matched.
    pub destination_mode: DestinationMode,
    /// Edge or level.
    pub trigger_mode: TriggerMode,
    /// The ICR's level bit (14): assert (`true`) or de-assert. It matters only for
    /// level-triggered messages: a level-triggered fixed message with `false` is a de-assert,
    /// which APICs ignore, and a level-triggered INIT with `false` is the legacy INIT de-assert.
    /// Edge IPIs commonly leave it clear. An IOAPIC message or MSI always asserts.
    pub level: bool,
    /// The destination: an APIC ID (physical) or a message destination address (logical).
    /// 8 bits for xAPIC-format messages (0xFF is the broadcast), 32 bits from an x2APIC
    /// ICR (0xFFFF_FFFF is the broadcast).
    pub destination: u32,
    /// The ICR's destination shorthand; [`Shorthand::None`] for MSIs and IOAPIC messages.
    pub shorthand: Shorthand,
    /// MSI redirection hint: with it, the message goes to one destination of the set chosen
    /// as for lowest-priority delivery.
    pub redirection_hint: bool,
}

/// Which MSI address extensions the VMM advertises to the guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MsiFormat {
    /// Address bits 11:5 are destination bits 14:8 (15-bit APIC IDs without interrupt
    /// remapping; KVM_FEATURE_MSI_EXT_DEST_ID).
    pub extended_destination: bool,
    /// Address bits 63:40 are destination bits 31:8 (KVM's `KVM_CAP_X2APIC_API` MSI format).
    pub x2apic_address_high: bool,
}

/// An MSI (message signalled interrupt) as a device writes it: a 32-bit data value to an
/// address in 0xFEEx_xxxx.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MsiMessage {
    /// The address: 0xFEE in bits 31:20, destination in 19:12, redirection hint in bit 3,
    /// destination mode in bit 2.
    pub address: u64,
    /// The data: vector in bits 7:0, delivery mode in 10:8, level in 14 (ignored on decode:
    /// an MSI always asserts), trigger in 15.
    pub data: u32,
}

impl MsiMessage {
    /// Whether the address is in the interrupt range 0xFEEx_xxxx (bits 63:32 are allowed to
    /// carry destination bits only with [`MsiFormat::x2apic_address_high`]).
    #[inline]
    pub const fn is_interrupt(&self, format: MsiFormat) -> bool {
        let high_ok = format.x2apic_address_high || self.address >> 32 == 0;
        high_ok && self.address & MSI_ADDRESS_BASE_MASK == MSI_ADDRESS_BASE
    }

    /// Decodes the message, or `None` if the address is not an interrupt address (the write
    /// is then an ordinary memory write, not an interrupt).
    #[inline]
    pub const fn decode(&self, format: MsiFormat) -> Option<Interrupt> {
        if !self.is_interrupt(format) {
            return None;
        }
        let address = self.address;
        let mut destination = ((address >> MSI_ADDR_DEST_SHIFT) & 0xFF) as u32;
        if format.extended_destination {
            destination |= (((address >> MSI_ADDR_EXT_DEST_SHIFT) & 0x7F) as u32) << 8;
        }
        if format.x2apic_address_high {
            destination |= ((address >> 32) as u32) & 0xFFFF_FF00;
        }
        let data = self.data;
        let trigger_mode =
            if data & MSI_DATA_TRIGGER_LEVEL != 0 { TriggerMode::Level } else { TriggerMode::Edge };
        Some(Interrupt {
            vector: data as u8,
            delivery_mode: DeliveryMode::from_bits(data >> MSI_DATA_DELIVERY_MODE_SHIFT),
            destination_mode: if address & MSI_ADDR_DEST_MODE_LOGICAL != 0 {
                DestinationMode::Logical
            } else {
                DestinationMode::Physical
            },
            trigger_mode,
            // An MSI always asserts: the data's bit 14 is not read (KVM's `kvm_set_msi_irq` sets
            // the level to 1, and QEMU's IOAPIC does not set the bit for its level messages).
            level: true,
            destination,
            shorthand: Shorthand::None,
            redirection_hint: address & MSI_ADDR_REDIRECTION_HINT != 0,
        })
    }
}

impl Interrupt {
    /// The message as an MSI address/data pair in `format`. Destination bits the format
    /// cannot carry are dropped; the shorthand is dropped (MSIs have none).
    #[inline]
    pub const fn to_msi(&self, format: MsiFormat) -> MsiMessage {
        let dest = self.destination as u64;
        let mut address = MSI_ADDRESS_BASE | (dest & 0xFF) << MSI_ADDR_DEST_SHIFT;
        if format.extended_destination {
            address |= ((dest >> 8) & 0x7F) << MSI_ADDR_EXT_DEST_SHIFT;
        }
        if format.x2apic_address_high {
            address |= (dest & 0xFFFF_FF00) << 32;
        }
        if matches!(self.destination_mode, DestinationMode::Logical) {
            address |= MSI_ADDR_DEST_MODE_LOGICAL;
        }
        if self.redirection_hint {
            address |= MSI_ADDR_REDIRECTION_HINT;
        }
        let mut data = self.vector as u32 | self.delivery_mode.bits() << MSI_DATA_DELIVERY_MODE_SHIFT;
        if self.level {
            data |= MSI_DATA_LEVEL_ASSERT;
        }
        if matches!(self.trigger_mode, TriggerMode::Level) {
            data |= MSI_DATA_TRIGGER_LEVEL;
        }
        MsiMessage { address, data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msi_decodes_every_field() {
        // Logical, redirection hint, destination 0x0f; level assert, lowest priority, 0x41.
        let msi = MsiMessage { address: 0xFEE0_F00C, data: 0xC141 };
        let irq = msi.decode(MsiFormat::default()).unwrap();
        assert_eq!(
            irq,
            Interrupt {
                vector: 0x41,
                delivery_mode: DeliveryMode::LowestPriority,
                destination_mode: DestinationMode::Logical,
                trigger_mode: TriggerMode::Level,
                level: true,
                destination: 0x0f,
                shorthand: Shorthand::None,
                redirection_hint: true,
            }
        );
        assert_eq!(irq.to_msi(MsiFormat::default()), msi);
    }

    #[test]
    fn a_write_outside_0xfee_is_not_an_interrupt() {
        let format = MsiFormat::default();
        assert_eq!(MsiMessage { address: 0xFED0_0000, data: 0x30 }.decode(format), None);
        assert_eq!(MsiMessage { address: 0x1_FEE0_0000, data: 0x30 }.decode(format), None);
    }

    #[test]
    fn extended_destination_bits_carry_ids_up_to_32767() {
        let format = MsiFormat { extended_destination: true, x2apic_address_high: false };
        let irq = Interrupt { vector: 0x30, destination: 0x7ABC, level: true, ..Interrupt::default() };
        let msi = irq.to_msi(format);
        assert_eq!(msi.address, 0xFEE0_0000 | 0xBC << 12 | 0x7A << 5);
        assert_eq!(msi.decode(format).unwrap().destination, 0x7ABC);
        // Without the extension the same address reaches APIC 0xBC only.
        assert_eq!(msi.decode(MsiFormat::default()).unwrap().destination, 0xBC);
    }

    #[test]
    fn x2apic_address_high_carries_32_bit_destinations() {
        let format = MsiFormat { extended_destination: false, x2apic_address_high: true };
        let irq = Interrupt { vector: 0x30, destination: 0x1234_5678, level: true, ..Interrupt::default() };
        let msi = irq.to_msi(format);
        assert_eq!(msi.address, 0x1234_5600_FEE7_8000);
        assert_eq!(msi.decode(format).unwrap().destination, 0x1234_5678);
    }

    #[test]
    fn an_msi_always_asserts() {
        // Edge, and level without bit 14 (as QEMU's IOAPIC builds its level messages).
        for data in [0x0030, 0x8031] {
            let msi = MsiMessage { address: 0xFEE0_0000, data };
            assert!(msi.decode(MsiFormat::default()).unwrap().level, "{data:#x}");
        }
    }
}
