//! Conversion to and from KVM's `kvm_ioapic_state`, the `chip_id` 2 payload of
//! KVM_GET_IRQCHIP / KVM_SET_IRQCHIP.
//!
//! | offset | field | model |
//! |---|---|---|
//! | 0 | `__u64 base_address` | [`IoApicState::base_address`] (KVM stores it; its MMIO device stays at 0xFEC0_0000) |
//! | 8 | `__u32 ioregsel` | [`IoApicState::ioregsel`] (8 bits) |
//! | 12 | `__u32 id` | [`IoApicState::id`], unshifted |
//! | 16 | `__u32 irr` | [`IoApicState::kvm_irr`]: asserted lines minus edges already delivered |
//! | 20 | `__u32 pad` | 0 |
//! | 24 | `__u64 redirtbl[24]` | [`IoApicState::redirtbl`], raw |
//!
//! From KVM to the model and back is lossless: every `kvm_ioapic_state` KVM produces
//! converts and returns byte for byte. The model keeps what KVM does not export (which
//! sources drive each line, and the lines of edges already delivered); going to KVM drops
//! that, and coming from KVM each `irr` pin is taken to be driven by source 0, with no edge
//! delivered. That is also what KVM_SET_IRQCHIP itself does with `irr`: it re-asserts each
//! bit, which can deliver interrupts; [`crate::ioapic::IoApic::set_irqchip`] reproduces it
//! (plain [`crate::ioapic::IoApic::restore`] delivers nothing).
//!
//! `kvm_ioapic_state.redirtbl` is an array of C unions, and reading a union field takes
//! `unsafe`, which this crate forbids: [`IoApicState::from_kvm`] reads the struct through its
//! `zerocopy` byte view (kvm-bindings' `serde` feature derives it) and converts the 216 bytes
//! with [`IoApicState::from_kvm_bytes`]; the model-to-KVM direction builds the struct
//! ([`IoApicState::to_kvm`], writing a union field is safe) or its bytes
//! ([`IoApicState::to_kvm_bytes`]).

use kvm_bindings::{kvm_ioapic_state, kvm_ioapic_state__bindgen_ty_1};

use super::regs::RedirectionEntry;
use super::state::{PINS, PIN_BITS};
use super::{IoApicState, StateError};

/// `size_of::<kvm_ioapic_state>()`.
pub const KVM_IOAPIC_STATE_SIZE: usize = 216;

/// Byte offset of `redirtbl` in `kvm_ioapic_state`.
const REDIRTBL_OFFSET: usize = 24;

impl IoApicState {
    /// The state as KVM's `kvm_ioapic_state` (what KVM_SET_IRQCHIP takes).
    pub fn to_kvm(&self) -> kvm_ioapic_state {
        let mut redirtbl = [kvm_ioapic_state__bindgen_ty_1 { bits: 0 }; PINS];
        for (out, entry) in redirtbl.iter_mut().zip(self.redirtbl.iter()) {
            *out = kvm_ioapic_state__bindgen_ty_1 { bits: entry.0 };
        }
        kvm_ioapic_state {
            base_address: self.base_address,
            ioregsel: u32::from(self.ioregsel),
            id: u32::from(self.id),
            irr: self.kvm_irr(),
            pad: 0,
            redirtbl,
        }
    }

    /// The bytes of [`IoApicState::to_kvm`] (little-endian, the uAPI layout).
    pub fn to_kvm_bytes(&self) -> [u8; KVM_IOAPIC_STATE_SIZE] {
        let mut bytes = [0u8; KVM_IOAPIC_STATE_SIZE];
        let (head, table) = bytes.split_at_mut(REDIRTBL_OFFSET);
        let (base, words) = head.split_at_mut(8);
        base.copy_from_slice(&self.base_address.to_le_bytes());
        let values = [u32::from(self.ioregsel), u32::from(self.id), self.kvm_irr(), 0];
        for (out, value) in words.chunks_exact_mut(4).zip(values) {
            out.copy_from_slice(&value.to_le_bytes());
        }
        for (out, entry) in table.chunks_exact_mut(8).zip(self.redirtbl.iter()) {
            out.copy_from_slice(&entry.0.to_le_bytes());
        }
        bytes
    }

    /// Converts KVM's state (as KVM_GET_IRQCHIP filled it); see
    /// [`IoApicState::from_kvm_bytes`] for what is refused.
    pub fn from_kvm(kvm: &kvm_ioapic_state) -> Result<IoApicState, StateError> {
        let mut bytes = [0u8; KVM_IOAPIC_STATE_SIZE];
        for (out, byte) in bytes.iter_mut().zip(zerocopy::IntoBytes::as_bytes(kvm)) {
            *out = *byte;
        }
        IoApicState::from_kvm_bytes(&bytes)
    }

    /// Converts the bytes of a `kvm_ioapic_state` (as KVM_GET_IRQCHIP filled it). Refuses
    /// values KVM never produces, since they could not convert back unchanged (an IOREGSEL
    /// above 0xFF, an ID above 15, `irr` bits above pin 23, a non-zero `pad`), and whatever
    /// [`IoApicState::validate`] refuses.
    pub fn from_kvm_bytes(bytes: &[u8; KVM_IOAPIC_STATE_SIZE]) -> Result<IoApicState, StateError> {
        let mut words =
            bytes.chunks_exact(4).map(|c| c.iter().rev().fold(0u32, |acc, b| acc << 8 | u32::from(*b)));
        let mut next = || words.next().unwrap_or(0);
        let base_address = u64::from(next()) | u64::from(next()) << 32;
        let (ioregsel, id, irr, pad) = (next(), next(), next(), next());
        let ioregsel = u8::try_from(ioregsel).map_err(|_| StateError::Ioregsel(ioregsel))?;
        let id = u8::try_from(id).ok().filter(|id| *id <= 0xF).ok_or(StateError::Id(id))?;
        if irr & !PIN_BITS != 0 {
            return Err(StateError::NoSuchPins(irr & !PIN_BITS));
        }
        if pad != 0 {
            return Err(StateError::Pad(pad));
        }
        let mut state = IoApicState { base_address, ioregsel, id, ..IoApicState::POWER_ON };
        let table = bytes.get(REDIRTBL_OFFSET..).unwrap_or(&[]);
        for (entry, raw) in state.redirtbl.iter_mut().zip(table.chunks_exact(8)) {
            *entry = RedirectionEntry(raw.iter().rev().fold(0u64, |acc, b| acc << 8 | u64::from(*b)));
        }
        for (pin, sources) in (0u32..).zip(state.sources.iter_mut()) {
            *sources = (irr >> pin) & 1;
        }
        state.validate()?;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::ioapic::{regs::*, IoApic, IoApicConfig, LineStatus};
    use proptest::prelude::*;

    /// The bytes of any `kvm_ioapic_state` KVM can produce: IOREGSEL 8 bits, ID 4 bits,
    /// `irr` 24 bits, `pad` 0, entries with delivery status clear and Remote IRR only on
    /// level entries.
    fn kvm_bytes() -> impl Strategy<Value = [u8; KVM_IOAPIC_STATE_SIZE]> {
        (any::<u64>(), any::<u8>(), 0..16u32, 0..(1u32 << 24), any::<[u64; 24]>()).prop_map(
            |(base, ioregsel, id, irr, entries)| {
                let mut bytes = [0u8; KVM_IOAPIC_STATE_SIZE];
                bytes[..8].copy_from_slice(&base.to_le_bytes());
                bytes[8] = ioregsel;
                bytes[12..16].copy_from_slice(&id.to_le_bytes());
                bytes[16..20].copy_from_slice(&irr.to_le_bytes());
                for (n, mut e) in entries.into_iter().enumerate() {
                    e &= !RTE_DELIVERY_STATUS;
                    if e & RTE_TRIGGER_LEVEL == 0 {
                        e &= !RTE_REMOTE_IRR;
                    }
                    bytes[24 + 8 * n..32 + 8 * n].copy_from_slice(&e.to_le_bytes());
                }
                bytes
            },
        )
    }

    proptest! {
        #[test]
        fn every_state_kvm_produces_round_trips_byte_for_byte(bytes in kvm_bytes()) {
            let state = IoApicState::from_kvm_bytes(&bytes).unwrap();
            prop_assert_eq!(state.to_kvm_bytes(), bytes);
            // And through the model: restore then state() changes nothing.
            let mut ioapic = IoApic::new(IoApicConfig::KVM);
            ioapic.restore(&state).unwrap();
            prop_assert_eq!(ioapic.state().to_kvm_bytes(), bytes);
        }

        #[test]
        fn to_kvm_carries_every_field(bytes in kvm_bytes()) {
            let state = IoApicState::from_kvm_bytes(&bytes).unwrap();
            let kvm = state.to_kvm();
            prop_assert_eq!(kvm.base_address, state.base_address);
            prop_assert_eq!(kvm.ioregsel, u32::from(state.ioregsel));
            prop_assert_eq!(kvm.id, u32::from(state.id));
            prop_assert_eq!(kvm.irr, state.kvm_irr());
            prop_assert_eq!(kvm.pad, 0);
            // The struct converts back through its byte view, losslessly.
            prop_assert_eq!(IoApicState::from_kvm(&kvm), Ok(state));
        }
    }

    #[test]
    fn power_on_state_is_what_kvm_create_irqchip_reports() {
        let bytes = IoApicState::default().to_kvm_bytes();
        let mut expected = [0u8; KVM_IOAPIC_STATE_SIZE];
        expected[..8].copy_from_slice(&IOAPIC_DEFAULT_BASE.to_le_bytes());
        for n in 0..24 {
            expected[24 + 8 * n + 2] = 0x01; // bit 16: masked
        }
        assert_eq!(bytes, expected);
    }

    #[test]
    fn irr_hides_delivered_edges_as_kvm_get_irqchip_does() {
        let mut ioapic = IoApic::new(IoApicConfig::KVM);
        let _ = ioapic.write_register(IOREDTBL + 2 * 3, 0x33); // pin 3: edge, unmasked
        let _ = ioapic.write_register(IOREDTBL + 2 * 5, 0x35 | RTE_MASK as u32); // pin 5: edge, masked
        assert_eq!(ioapic.set_irq(3, true).unwrap().status, LineStatus::Delivered);
        assert_eq!(ioapic.set_irq(5, true).unwrap().status, LineStatus::Masked);
        // Pin 3 was delivered: hidden. Pin 5 was masked: KVM keeps it visible.
        assert_eq!(ioapic.state().to_kvm().irr, 1 << 5);
        // A repeated assert of pin 3 forgets the delivery (KVM clears irr_delivered).
        assert_eq!(ioapic.set_irq_source(3, 1, true).unwrap().status, LineStatus::Coalesced);
        assert_eq!(ioapic.state().to_kvm().irr, 1 << 5 | 1 << 3);
    }

    #[test]
    fn bytes_kvm_never_produces_are_refused() {
        let good = IoApicState::default().to_kvm_bytes();
        let mut bad = good;
        bad[9] = 1; // ioregsel 0x100
        assert_eq!(IoApicState::from_kvm_bytes(&bad), Err(StateError::Ioregsel(0x100)));
        let mut bad = good;
        bad[12] = 0x10;
        assert_eq!(IoApicState::from_kvm_bytes(&bad), Err(StateError::Id(0x10)));
        let mut bad = good;
        bad[19] = 0x01; // irr bit 24
        assert_eq!(IoApicState::from_kvm_bytes(&bad), Err(StateError::NoSuchPins(1 << 24)));
        let mut bad = good;
        bad[20] = 1;
        assert_eq!(IoApicState::from_kvm_bytes(&bad), Err(StateError::Pad(1)));
        let mut bad = good;
        bad[24 + 8 * 7 + 1] |= 0x40; // entry 7: Remote IRR on an edge entry
        assert_eq!(IoApicState::from_kvm_bytes(&bad), Err(StateError::RemoteIrrOnEdge { pin: 7 }));
    }

    #[test]
    fn set_irqchip_re_asserts_irr_as_kvm_does() {
        // A state from KVM: pin 9 level, unmasked, line high, Remote IRR clear; pin 4 edge,
        // unmasked, line high and not yet delivered.
        let mut state = IoApicState::default();
        state.redirtbl[9] = RedirectionEntry(0x49 | RTE_TRIGGER_LEVEL);
        state.redirtbl[4] = RedirectionEntry(0x44);
        state.sources[9] = 1;
        state.sources[4] = 1;
        let state = IoApicState::from_kvm_bytes(&state.to_kvm_bytes()).unwrap();
        let mut ioapic = IoApic::new(IoApicConfig::KVM);
        let effects = ioapic.set_irqchip(&state).unwrap();
        assert!(effects.deliver.iter().eq([4, 9]));
        assert_eq!(ioapic.message(9).unwrap().data, 0xC049);
        assert!(ioapic.entry(9).unwrap().remote_irr());
        // Now KVM would report pin 4 as delivered and pin 9 still asserted.
        assert_eq!(ioapic.state().to_kvm().irr, 1 << 9);
    }
}
