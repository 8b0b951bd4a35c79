//! Plain-data state of the IOAPIC, field-compatible with KVM's `kvm_ioapic_state` plus the
//! per-source line levels KVM keeps outside it.

use super::regs::{RedirectionEntry, IOAPIC_DEFAULT_BASE, IOAPIC_PINS};

/// Number of pins as an array length.
pub(crate) const PINS: usize = IOAPIC_PINS as usize;
/// The pin bits of a 32-bit pin bitmap.
pub(crate) const PIN_BITS: u32 = (1 << IOAPIC_PINS) - 1;

/// The architectural state of the IOAPIC and its input lines.
///
/// `Default` is the power-on state: ID 0, IOREGSEL 0, every entry masked
/// (0x0000_0000_0001_0000), every line low.
///
/// Not part of it (as KVM does not export them either): the interrupt-storm counters. A
/// restore restarts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IoApicState {
    /// Where the VMM maps the IOAPIC (`kvm_ioapic_state.base_address`). The model does not
    /// use it: MMIO offsets are relative to the base. KVM also only stores it.
    pub base_address: u64,
    /// IOREGSEL bits 7:0, the selected indirect register.
    pub ioregsel: u8,
    /// The 4-bit IOAPIC ID (IOAPICID bits 27:24), unshifted, 0–15.
    pub id: u8,
    /// The redirection table, raw (Remote IRR and delivery status included).
    pub redirtbl: [RedirectionEntry; PINS],
    /// Per pin, the set of sources (bit n = source n) driving the line high; the line is
    /// asserted while any is. (KVM's `irq_states`; its `irr` is the OR of each.)
    pub sources: [u32; PINS],
    /// Bit n: the current assertion of line n was already consumed as an edge (KVM's
    /// `irr_delivered`), so [`IoApicState::kvm_irr`] does not report it. Set when an edge is
    /// delivered, and by the datasheet profile when an edge on a masked pin is dropped; with
    /// [`crate::ioapic::Quirks::MASKED_EDGE_KEEPS_IRR`] cleared by every assert while the
    /// entry is edge-triggered (as KVM does), otherwise rewritten by the next rising edge.
    /// Level-triggered asserts leave it alone. Only bits 23:0 exist.
    pub irr_delivered: u32,
}

impl Default for IoApicState {
    fn default() -> Self {
        IoApicState::POWER_ON
    }
}

impl IoApicState {
    /// The power-on state.
    pub const POWER_ON: IoApicState = IoApicState {
        base_address: IOAPIC_DEFAULT_BASE,
        ioregsel: 0,
        id: 0,
        redirtbl: [RedirectionEntry::POWER_ON; PINS],
        sources: [0; PINS],
        irr_delivered: 0,
    };

    /// Checks every field for values the model cannot hold (a state is plain data and may
    /// come from a file or another host).
    pub fn validate(&self) -> Result<(), StateError> {
        if u32::from(self.id) > super::regs::IOAPICID_MASK {
            return Err(StateError::Id(u32::from(self.id)));
        }
        if self.irr_delivered & !PIN_BITS != 0 {
            return Err(StateError::NoSuchPins(self.irr_delivered & !PIN_BITS));
        }
        for (pin, entry) in (0u8..).zip(self.redirtbl.iter()) {
            if entry.delivery_status() {
                return Err(StateError::DeliveryStatus { pin });
            }
            if entry.remote_irr() && !entry.is_level() {
                return Err(StateError::RemoteIrrOnEdge { pin });
            }
        }
        Ok(())
    }

    /// Bitmap of asserted lines (bit n = line n is high).
    #[inline]
    pub fn lines(&self) -> u32 {
        let mut lines = 0;
        for (pin, sources) in (0u32..).zip(self.sources.iter()) {
            if *sources != 0 {
                lines |= 1 << pin;
            }
        }
        lines
    }

    /// KVM's `kvm_ioapic_state.irr`: asserted lines minus edges already delivered.
    #[inline]
    pub fn kvm_irr(&self) -> u32 {
        self.lines() & !self.irr_delivered
    }
}

/// Why a state was refused by [`crate::ioapic::IoApic::restore`] or a KVM conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateError {
    /// The ID must fit in 4 bits.
    Id(u32),
    /// IOREGSEL is an 8-bit register (KVM conversion only).
    Ioregsel(u32),
    /// A pin bitmap names pins above 23 (these bits are the ones outside the 24 pins).
    NoSuchPins(u32),
    /// An entry's delivery status is set; the model delivers at once and never holds a
    /// message pending.
    DeliveryStatus {
        /// The entry.
        pin: u8,
    },
    /// An edge-triggered entry has Remote IRR set, which no IOAPIC produces (a level→edge
    /// write clears it).
    RemoteIrrOnEdge {
        /// The entry.
        pin: u8,
    },
    /// `kvm_ioapic_state.pad` is not zero, so it would not round-trip (KVM conversion only).
    Pad(u32),
}

impl core::fmt::Display for StateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StateError::Id(id) => write!(f, "IOAPIC ID {id:#x} does not fit in 4 bits"),
            StateError::Ioregsel(value) => write!(f, "IOREGSEL {value:#x} does not fit in 8 bits"),
            StateError::NoSuchPins(bits) => write!(f, "pin bitmap {bits:#x} names pins above 23"),
            StateError::DeliveryStatus { pin } => write!(f, "entry {pin} has delivery status set"),
            StateError::RemoteIrrOnEdge { pin } => {
                write!(f, "entry {pin} is edge-triggered but has Remote IRR set")
            }
            StateError::Pad(value) => write!(f, "kvm_ioapic_state.pad is {value:#x}, not 0"),
        }
    }
}

impl core::error::Error for StateError {}
