#![allow(unused_must_use)] // the helpers return effects for the tests that check them.

//! Behaviour tests of the IOAPIC: each checks what the guest would receive (which message,
//! for which pin, in which order), not only register bits. The guest side is spelled out as
//! Linux and kvm-unit-tests' `x86/ioapic.c` program the chip: select with IOREGSEL, then a
//! 32-bit IOWIN access.

extern crate std;
use std::vec::Vec;

use super::*;
use crate::bus::ApicBus;
use crate::lapic::{LapicConfig, LocalApic};
use crate::msi::{DeliveryMode, DestinationMode, MsiFormat, TriggerMode};

/// Vector used for most edge tests (kvm-unit-tests uses 0x80).
const EDGE_VECTOR: u8 = 0x80;
/// Vector used for most level tests (kvm-unit-tests uses 0x90).
const LEVEL_VECTOR: u8 = 0x90;
/// The pin kvm-unit-tests toggles through QEMU's pc-testdev.
const PIN: u8 = 0x0e;

fn ioapic(quirks: Quirks) -> IoApic {
    IoApic::new(IoApicConfig { quirks, ..IoApicConfig::DATASHEET })
}

/// A 32-bit guest write at `offset`, which must be decoded.
fn w32(io: &mut IoApic, offset: u64, value: u32) -> Effects {
    let effects = io.mmio_write(offset, &value.to_le_bytes());
    assert_eq!(effects.invalid, None, "write {value:#x} at {offset:#x}");
    effects
}

/// A 32-bit guest read at `offset`.
fn r32(io: &IoApic, offset: u64) -> u32 {
    let mut data = [0u8; 4];
    let _ = io.mmio_read(offset, &mut data);
    u32::from_le_bytes(data)
}

/// The guest's `ioapic_write_reg`: IOREGSEL, then IOWIN.
fn write_reg(io: &mut IoApic, index: u8, value: u32) -> Effects {
    w32(io, IOREGSEL, u32::from(index));
    io.mmio_write(IOWIN, &value.to_le_bytes())
}

/// The guest's `ioapic_read_reg`.
fn read_reg(io: &mut IoApic, index: u8) -> u32 {
    w32(io, IOREGSEL, u32::from(index));
    r32(io, IOWIN)
}

/// The guest's `ioapic_write_redir` (Linux's order: high dword, then low dword). Returns
/// the effects of the low-dword write, which is where mask and trigger change.
fn write_entry(io: &mut IoApic, pin: u8, entry: u64) -> Effects {
    let high = write_reg(io, IOREDTBL + 2 * pin + 1, (entry >> 32) as u32);
    assert_eq!(high.deliver, PinSet::EMPTY);
    write_reg(io, IOREDTBL + 2 * pin, entry as u32)
}

fn read_entry(io: &mut IoApic, pin: u8) -> u64 {
    let low = read_reg(io, IOREDTBL + 2 * pin);
    let high = read_reg(io, IOREDTBL + 2 * pin + 1);
    u64::from(high) << 32 | u64::from(low)
}

/// An entry: fixed delivery, physical destination `dest`, unmasked.
fn entry(vector: u8, level: bool, dest: u8) -> u64 {
    u64::from(vector) | if level { RTE_TRIGGER_LEVEL } else { 0 } | u64::from(dest) << RTE_DEST_SHIFT
}

/// kvm-unit-tests' `set_ioredir(pin, vector, trigger)`: destination APIC 0, fixed, unmasked.
fn set_ioredir(io: &mut IoApic, pin: u8, vector: u8, level: bool) -> Effects {
    write_entry(io, pin, entry(vector, level, 0))
}

/// kvm-unit-tests' `set_mask(pin, mask)`: a read-modify-write of the low dword.
fn set_mask(io: &mut IoApic, pin: u8, masked: bool) -> Effects {
    let low = read_reg(io, IOREDTBL + 2 * pin);
    let low = if masked { low | RTE_MASK as u32 } else { low & !(RTE_MASK as u32) };
    write_reg(io, IOREDTBL + 2 * pin, low)
}

/// What the guest received, in order: (pin, vector) pairs.
#[derive(Default)]
struct Guest {
    taken: Vec<(u8, MsiMessage)>,
}

impl Guest {
    fn line(&mut self, io: &mut IoApic, pin: u8, level: bool) -> LineStatus {
        let result = io.set_irq(pin, level).unwrap();
        assert_eq!(result.message.is_some(), result.status == LineStatus::Delivered);
        if let Some(msg) = result.message {
            assert_eq!(Some(msg), io.message(pin), "set_irq's message is the pin's message");
            self.taken.push((pin, msg));
        }
        result.status
    }

    fn effects(&mut self, io: &IoApic, effects: Effects) -> Effects {
        for pin in effects.deliver {
            self.taken.push((pin, io.message(pin).unwrap()));
        }
        effects
    }

    fn eoi(&mut self, io: &mut IoApic, vector: u8) -> Effects {
        let effects = io.end_of_interrupt(vector);
        self.effects(io, effects)
    }

    fn vectors(&self) -> Vec<u8> {
        self.taken.iter().map(|(_, msg)| msg.data as u8).collect()
    }

    fn pins(&self) -> Vec<u8> {
        self.taken.iter().map(|(pin, _)| *pin).collect()
    }
}

// ----- registers --------------------------------------------------------------------------

#[test]
fn version_register_reports_version_and_23_as_max_redirection_entry() {
    let mut io = ioapic(Quirks::DATASHEET);
    assert_eq!(read_reg(&mut io, IOAPICVER), 0x0017_0011);
    let mut io = IoApic::new(IoApicConfig { version: Version::V20, ..IoApicConfig::DATASHEET });
    assert_eq!(read_reg(&mut io, IOAPICVER), 0x0017_0020);
    // Read-only: Windows writes 0 while probing.
    let effects = write_reg(&mut io, IOAPICVER, 0);
    assert_eq!(effects.invalid, Some(AccessError::ReadOnlyRegister(IOAPICVER)));
    assert_eq!(read_reg(&mut io, IOAPICVER), 0x0017_0020);
}

#[test]
fn only_id_bits_27_to_24_are_writable() {
    let mut io = ioapic(Quirks::DATASHEET);
    write_reg(&mut io, IOAPICID, 0xFFFF_FFFF);
    assert_eq!(read_reg(&mut io, IOAPICID), 0x0F00_0000);
    assert_eq!(io.state().id, 0xF);
    write_reg(&mut io, IOAPICID, 0x0A00_0000);
    assert_eq!(read_reg(&mut io, IOAPICID), 0x0A00_0000);
}

#[test]
fn arbitration_id_follows_the_id_and_is_read_only() {
    let mut io = ioapic(Quirks::DATASHEET);
    write_reg(&mut io, IOAPICID, 0x0300_0000);
    assert_eq!(read_reg(&mut io, IOAPICARB), 0x0300_0000);
    let effects = write_reg(&mut io, IOAPICARB, 0x0C00_0000);
    assert_eq!(effects.invalid, Some(AccessError::ReadOnlyRegister(IOAPICARB)));
    assert_eq!(read_reg(&mut io, IOAPICARB), 0x0300_0000);
}

#[test]
fn ioregsel_holds_eight_bits_and_reads_back() {
    let mut io = ioapic(Quirks::DATASHEET);
    w32(&mut io, IOREGSEL, 0x1234_5617);
    assert_eq!(r32(&io, IOREGSEL), 0x17);
    assert_eq!(io.state().ioregsel, 0x17);
}

#[test]
fn every_entry_is_masked_at_power_on_and_reads_0x10000() {
    let mut io = ioapic(Quirks::DATASHEET);
    for pin in 0..IOAPIC_PINS {
        assert_eq!(read_entry(&mut io, pin), 0x0000_0000_0001_0000, "pin {pin}");
        assert_eq!(io.set_irq(pin, true).unwrap().status, LineStatus::Masked);
    }
    assert_eq!(IoApicState::default(), IoApicState::POWER_ON);
}

#[test]
fn every_writable_entry_bit_is_stored_reserved_bits_included() {
    let mut io = ioapic(Quirks::DATASHEET);
    // Masked so that nothing is delivered; RO bits 12 and 14 left out.
    let value = !(RTE_DELIVERY_STATUS | RTE_REMOTE_IRR);
    write_entry(&mut io, 5, value);
    assert_eq!(read_entry(&mut io, 5), value);
    let e = io.entry(5).unwrap();
    assert_eq!(e.vector(), 0xFF);
    assert_eq!(e.delivery_mode(), DeliveryMode::ExtInt);
    assert_eq!(e.destination_mode(), DestinationMode::Logical);
    assert!(e.polarity_low() && e.is_level() && e.masked());
    assert_eq!((e.destination(), e.extended_destination()), (0xFF, 0x7F));
}

#[test]
fn remote_irr_read_only() {
    let mut io = ioapic(Quirks::DATASHEET);
    // Writing Remote IRR = 1 does not set it.
    write_entry(&mut io, 3, entry(0x40, true, 0) | RTE_REMOTE_IRR | RTE_MASK);
    assert_eq!(read_entry(&mut io, 3) & RTE_REMOTE_IRR, 0);
    // Once set by a delivery, writing 0 does not clear it.
    set_mask(&mut io, 3, false);
    io.set_irq(3, true).unwrap();
    assert_ne!(read_entry(&mut io, 3) & RTE_REMOTE_IRR, 0);
    write_entry(&mut io, 3, entry(0x40, true, 0));
    assert_ne!(read_entry(&mut io, 3) & RTE_REMOTE_IRR, 0);
}

#[test]
fn delivery_status_read_only() {
    let mut io = ioapic(Quirks::DATASHEET);
    write_entry(&mut io, 3, entry(0x40, false, 0) | RTE_DELIVERY_STATUS);
    assert_eq!(read_entry(&mut io, 3) & RTE_DELIVERY_STATUS, 0);
    // And delivery never leaves it pending.
    io.set_irq(3, true).unwrap();
    assert_eq!(read_entry(&mut io, 3) & RTE_DELIVERY_STATUS, 0);
}

#[test]
fn reserved_registers_read_zero_and_writes_are_ignored() {
    let mut io = ioapic(Quirks::DATASHEET);
    for index in (0x03..0x10).chain(0x40..=0xFF) {
        assert_eq!(read_reg(&mut io, index), 0, "index {index:#x}");
        let mut data = [0xAA; 4];
        assert_eq!(io.mmio_read(IOWIN, &mut data), Some(AccessError::ReservedRegister(index)));
        let before = io.state();
        let effects = write_reg(&mut io, index, 0xFFFF_FFFF);
        assert_eq!(effects.invalid, Some(AccessError::ReservedRegister(index)));
        assert_eq!(io.state(), before);
    }
}

#[test]
fn kvm_reads_all_ones_from_reserved_registers_and_entries_past_the_last() {
    let mut io = ioapic(Quirks::KVM);
    for index in (0x03..0x10).chain(0x40..=0xFF) {
        assert_eq!(read_reg(&mut io, index), 0xFFFF_FFFF, "index {index:#x}");
    }
    assert_eq!(read_reg(&mut io, IOREDTBL + 47), 0, "entry 23 high dword is real");
}

#[test]
fn undecoded_offsets_read_zero_and_are_reported() {
    for quirks in [Quirks::DATASHEET, Quirks::KVM] {
        let mut io = ioapic(quirks);
        for offset in [0x04, 0x08, 0x0C, 0x20, 0x30, 0x40, 0x44, 0xF0, 0x1000, u64::MAX] {
            let mut data = [0xAA; 4];
            assert_eq!(io.mmio_read(offset, &mut data), Some(AccessError::UnknownOffset(offset)));
            assert_eq!(data, [0; 4]);
            let before = io.clone();
            let effects = io.mmio_write(offset, &[0xFF; 4]);
            assert_eq!(
                effects,
                Effects { invalid: Some(AccessError::UnknownOffset(offset)), ..Effects::NONE }
            );
            assert_eq!(io, before);
        }
    }
}

#[test]
fn datasheet_iowin_takes_only_32_bit_accesses() {
    let mut io = ioapic(Quirks::DATASHEET);
    w32(&mut io, IOREGSEL, u32::from(IOAPICID));
    for len in [0usize, 1, 2, 3, 5, 8, 16] {
        let data = [0xFF; 16];
        let effects = io.mmio_write(IOWIN, &data[..len]);
        assert_eq!(effects.invalid, Some(AccessError::Width(len as u16)));
        assert_eq!(io.state().id, 0, "width {len} wrote the ID");
        let mut out = [0xAA; 16];
        assert_eq!(io.mmio_read(IOWIN, &mut out[..len]), Some(AccessError::Width(len as u16)));
        assert!(out[..len].iter().all(|b| *b == 0));
    }
    // IOREGSEL is a byte register: any width up to 8 sets it from its low byte.
    let effects = io.mmio_write(IOREGSEL, &[0x12]);
    assert_eq!(effects.invalid, Some(AccessError::Width(1)));
    assert_eq!(io.state().ioregsel, 0x12);
    let mut out = [0xAA; 2];
    let _ = io.mmio_read(IOREGSEL, &mut out);
    assert_eq!(out, [0x12, 0]);
}

#[test]
fn kvm_decodes_1_2_4_and_8_byte_accesses() {
    let mut io = ioapic(Quirks::KVM);
    // IOREGSEL & 0xFF at any of the widths.
    let _ = io.mmio_write(IOREGSEL, &[0x10, 0xFF]);
    assert_eq!(io.state().ioregsel, 0x10);
    // A byte write to IOWIN zero-extends: the mask bit (16) is cleared too.
    let effects = io.mmio_write(IOWIN, &[0x41]);
    assert_eq!(effects.invalid, Some(AccessError::Width(1)));
    assert_eq!(io.entry(0).unwrap().0, 0x41);
    // A 2-byte write.
    let _ = io.mmio_write(IOWIN, &[0x42, 0x80]);
    assert_eq!(io.entry(0).unwrap().0, 0x8042);
    // An 8-byte write uses the low dword.
    let _ = io.mmio_write(IOWIN, &[0x43, 0, 1, 0, 0xEE, 0xEE, 0xEE, 0xEE]);
    assert_eq!(io.entry(0).unwrap().0, 0x1_0043);
    // Reads: low bytes, or the dword zero-extended to 8 bytes.
    let mut one = [0xAA; 1];
    let _ = io.mmio_read(IOWIN, &mut one);
    assert_eq!(one, [0x43]);
    let mut eight = [0xAA; 8];
    assert_eq!(io.mmio_read(IOWIN, &mut eight), Some(AccessError::Width(8)));
    assert_eq!(eight, [0x43, 0, 1, 0, 0, 0, 0, 0]);
    // Odd widths are ignored and read zeros.
    let before = io.state();
    let _ = io.mmio_write(IOWIN, &[1, 2, 3]);
    assert_eq!(io.state(), before);
    let mut three = [0xAA; 3];
    let _ = io.mmio_read(IOWIN, &mut three);
    assert_eq!(three, [0; 3]);
}

// ----- message format -----------------------------------------------------------------------

#[test]
fn message_carries_every_field_of_the_entry() {
    let mut io = ioapic(Quirks::DATASHEET);
    // Vector 0x61, lowest priority, logical, level, destination 0x0C.
    write_entry(
        &mut io,
        7,
        0x61 | 1 << 8 | RTE_DEST_MODE_LOGICAL | RTE_TRIGGER_LEVEL | 0x0C << 56 | RTE_MASK,
    );
    let msg = io.message(7).unwrap();
    assert_eq!(msg.address, 0xFEE0_C004);
    assert_eq!(msg.data, 0xC161);
    let irq = io.interrupt(7).unwrap();
    assert_eq!(irq.delivery_mode, DeliveryMode::LowestPriority);
    assert_eq!(irq.destination_mode, DestinationMode::Logical);
    assert_eq!(irq.trigger_mode, TriggerMode::Level);
    assert_eq!(irq.destination, 0x0C);
    assert_eq!(irq.to_msi(MsiFormat::default()), msg);
    assert_eq!(msg.decode(MsiFormat::default()), Some(irq));
}

#[test]
fn physical_and_logical_destinations_reach_the_message_address() {
    let mut io = ioapic(Quirks::DATASHEET);
    let mut guest = Guest::default();
    write_entry(&mut io, 1, entry(0x31, false, 0x05));
    write_entry(&mut io, 2, entry(0x32, false, 0x03) | RTE_DEST_MODE_LOGICAL);
    guest.line(&mut io, 1, true);
    guest.line(&mut io, 2, true);
    assert_eq!(guest.taken[0].1, MsiMessage { address: 0xFEE0_5000, data: 0x4031 });
    assert_eq!(guest.taken[1].1, MsiMessage { address: 0xFEE0_3004, data: 0x4032 });
}

#[test]
fn trigger_bit_of_the_message_sets_the_lapic_tmr_for_level_entries_only() {
    let mut io = ioapic(Quirks::DATASHEET);
    let mut guest = Guest::default();
    set_ioredir(&mut io, 1, EDGE_VECTOR, false);
    set_ioredir(&mut io, 2, LEVEL_VECTOR, true);
    guest.line(&mut io, 1, true);
    guest.line(&mut io, 2, true);
    let tmr: Vec<bool> = guest.taken.iter().map(|(_, m)| m.data & 0x8000 != 0).collect();
    assert_eq!(tmr, [false, true]);
}

#[test]
fn extended_destination_id_bits_go_to_address_bits_11_to_5() {
    let format = MsiFormat { extended_destination: true, x2apic_address_high: false };
    let mut io = IoApic::new(IoApicConfig { msi_format: format, ..IoApicConfig::DATASHEET });
    write_entry(&mut io, 0, entry(0x30, false, 0x34) | 0x12 << RTE_EXT_DEST_SHIFT);
    let msg = io.message(0).unwrap();
    assert_eq!(msg.address, 0xFEE0_0000 | 0x34 << 12 | 0x12 << 5);
    assert_eq!(io.interrupt(0).unwrap().destination, 0x1234);
    assert_eq!(msg.decode(format).unwrap().destination, 0x1234);
    // Without the extension the bits are reserved and not sent.
    let mut plain = ioapic(Quirks::DATASHEET);
    write_entry(&mut plain, 0, entry(0x30, false, 0x34) | 0x12 << RTE_EXT_DEST_SHIFT);
    assert_eq!(plain.message(0).unwrap().address, 0xFEE3_4000);
}

#[test]
fn nmi_and_extint_entries_carry_their_delivery_mode() {
    let mut io = ioapic(Quirks::DATASHEET);
    write_entry(&mut io, 0, 7 << 8); // ExtINT, vector from the 8259
    write_entry(&mut io, 1, 4 << 8); // NMI
    assert_eq!(io.set_irq(0, true).unwrap().message.unwrap().data, 0x4700);
    assert_eq!(io.set_irq(1, true).unwrap().message.unwrap().data, 0x4400);
}

// ----- edge pins (kvm-unit-tests) ---------------------------------------------------------------

#[test]
fn edge_rising_edge_delivers_once() {
    let mut io = ioapic(Quirks::DATASHEET);
    let mut guest = Guest::default();
    set_ioredir(&mut io, PIN, EDGE_VECTOR, false);
    assert_eq!(guest.line(&mut io, PIN, true), LineStatus::Delivered);
    assert_eq!(guest.line(&mut io, PIN, false), LineStatus::Deasserted);
    assert_eq!(guest.vectors(), [EDGE_VECTOR]);
    // The EOI of an edge vector does nothing at the IOAPIC.
    assert_eq!(guest.eoi(&mut io, EDGE_VECTOR), Effects::NONE);
    assert_eq!(guest.taken.len(), 1);
}

#[test]
fn edge_assert_while_high_is_coalesced() {
    let mut io = ioapic(Quirks::DATASHEET);
    let mut guest = Guest::default();
    set_ioredir(&mut io, PIN, EDGE_VECTOR, false);
    guest.line(&mut io, PIN, true);
    assert_eq!(guest.line(&mut io, PIN, true), LineStatus::Coalesced);
    assert_eq!(io.set_irq_source(PIN, 5, true).unwrap().status, LineStatus::Coalesced);
    assert_eq!(guest.taken.len(), 1);
    // Both sources must let go before the next edge.
    guest.line(&mut io, PIN, false);
    assert_eq!(guest.line(&mut io, PIN, true), LineStatus::Coalesced);
    io.set_irq_source(PIN, 5, false).unwrap();
    guest.line(&mut io, PIN, false);
    assert_eq!(guest.line(&mut io, PIN, true), LineStatus::Delivered);
    assert_eq!(guest.taken.len(), 2);
}

#[test]
fn simultaneous_edges_on_two_pins_each_deliver_once() {
    let mut io = ioapic(Quirks::DATASHEET);
    let mut guest = Guest::default();
    set_ioredir(&mut io, 0x0e, 0x80, false);
    set_ioredir(&mut io, 0x0f, 0x81, false);
    guest.line(&mut io, 0x0f, true);
    guest.line(&mut io, 0x0e, true);
    guest.line(&mut io, 0x0f, false);
    guest.line(&mut io, 0x0e, false);
    assert_eq!(guest.pins(), [0x0f, 0x0e]);
    assert_eq!(guest.vectors(), [0x81, 0x80]);
}

#[test]
fn edge_mask_drops_the_edge_and_unmask_does_not_deliver_it() {
    for quirks in [Quirks::DATASHEET, Quirks::KVM] {
        let mut io = ioapic(quirks);
        let mut guest = Guest::default();
        set_ioredir(&mut io, PIN, EDGE_VECTOR, false);
        set_mask(&mut io, PIN, true);
        assert_eq!(guest.line(&mut io, PIN, true), LineStatus::Masked);
        let unmask = set_mask(&mut io, PIN, false);
        assert_eq!(guest.effects(&io, unmask).deliver, PinSet::EMPTY, "{quirks:?}");
        guest.line(&mut io, PIN, false);
        assert!(guest.taken.is_empty(), "{quirks:?}");
        // Unmasked, the next edge is delivered.
        assert_eq!(guest.line(&mut io, PIN, true), LineStatus::Delivered);
        assert_eq!(guest.vectors(), [EDGE_VECTOR]);
    }
}

#[test]
fn kvm_keeps_a_masked_edge_in_irr_and_set_irqchip_delivers_it() {
    let mut io = ioapic(Quirks::KVM);
    set_ioredir(&mut io, PIN, EDGE_VECTOR, false);
    set_mask(&mut io, PIN, true);
    io.set_irq(PIN, true).unwrap();
    assert_eq!(io.state().kvm_irr(), 1 << PIN);
    let mut state = io.state();
    state.redirtbl[usize::from(PIN)].0 &= !RTE_MASK;
    let effects = io.set_irqchip(&state).unwrap();
    assert_eq!(effects.deliver, PinSet(1 << PIN));
    // The datasheet profile dropped it: nothing to re-assert.
    let mut io = ioapic(Quirks::DATASHEET);
    set_ioredir(&mut io, PIN, EDGE_VECTOR, false);
    set_mask(&mut io, PIN, true);
    io.set_irq(PIN, true).unwrap();
    assert_eq!(io.state().kvm_irr(), 0);
}

// ----- level pins (kvm-unit-tests) -------------------------------------------------------------

#[test]
fn level_delivers_and_sets_remote_irr_until_the_eoi() {
    let mut io = ioapic(Quirks::DATASHEET);
    let mut guest = Guest::default();
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    assert_eq!(guest.line(&mut io, PIN, true), LineStatus::Delivered);
    assert!(io.entry(PIN).unwrap().remote_irr());
    // The handler silences the device, then EOIs: nothing more.
    guest.line(&mut io, PIN, false);
    let effects = guest.eoi(&mut io, LEVEL_VECTOR);
    assert_eq!(effects, Effects { eoi: PinSet(1 << PIN), ..Effects::NONE });
    assert!(!io.entry(PIN).unwrap().remote_irr());
    assert_eq!(guest.vectors(), [LEVEL_VECTOR]);
}

#[test]
fn level_coalesce_an_assert_while_in_service_is_not_delivered() {
    let mut io = ioapic(Quirks::DATASHEET);
    let mut guest = Guest::default();
    set_ioredir(&mut io, PIN, 0x98, true);
    guest.line(&mut io, PIN, true);
    // The handler (first entry) toggles the line, lowers it and EOIs.
    guest.line(&mut io, PIN, false);
    assert_eq!(guest.line(&mut io, PIN, true), LineStatus::InService);
    guest.line(&mut io, PIN, false);
    guest.eoi(&mut io, 0x98);
    assert_eq!(guest.vectors(), [0x98]);
}

#[test]
fn level_sequential_asserts_after_each_eoi_deliver_each() {
    let mut io = ioapic(Quirks::DATASHEET);
    let mut guest = Guest::default();
    set_ioredir(&mut io, PIN, 0x9a, true);
    for _ in 0..2 {
        guest.line(&mut io, PIN, true);
        guest.line(&mut io, PIN, false); // the handler silences the device
        guest.eoi(&mut io, 0x9a);
    }
    assert_eq!(guest.vectors(), [0x9a, 0x9a]);
}

#[test]
fn level_retrigger_an_eoi_with_the_line_still_high_delivers_again() {
    let mut io = ioapic(Quirks::DATASHEET);
    let mut guest = Guest::default();
    set_ioredir(&mut io, PIN, 0x9b, true);
    guest.line(&mut io, PIN, true);
    // First handler: EOIs without silencing the device.
    let effects = guest.eoi(&mut io, 0x9b);
    assert_eq!(effects.deliver, PinSet(1 << PIN));
    assert!(io.entry(PIN).unwrap().remote_irr(), "re-delivery sets Remote IRR again");
    // Second handler: silences, then EOIs.
    guest.line(&mut io, PIN, false);
    assert_eq!(guest.eoi(&mut io, 0x9b).deliver, PinSet::EMPTY);
    assert_eq!(guest.vectors(), [0x9b, 0x9b]);
}

#[test]
fn level_mask_holds_the_level_and_unmask_delivers_it() {
    let mut io = ioapic(Quirks::DATASHEET);
    let mut guest = Guest::default();
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    set_mask(&mut io, PIN, true);
    assert_eq!(guest.line(&mut io, PIN, true), LineStatus::Masked);
    assert!(guest.taken.is_empty());
    let effects = set_mask(&mut io, PIN, false);
    assert_eq!(guest.effects(&io, effects).deliver, PinSet(1 << PIN));
    assert_eq!(guest.vectors(), [LEVEL_VECTOR]);
    // Deasserted while masked: nothing on unmask.
    guest.line(&mut io, PIN, false);
    guest.eoi(&mut io, LEVEL_VECTOR);
    set_mask(&mut io, PIN, true);
    guest.line(&mut io, PIN, true);
    guest.line(&mut io, PIN, false);
    assert_eq!(set_mask(&mut io, PIN, false).deliver, PinSet::EMPTY);
    assert_eq!(guest.taken.len(), 1);
}

#[test]
fn level_retrigger_mask_masked_eoi_holds_and_unmask_redelivers() {
    let mut io = ioapic(Quirks::DATASHEET);
    let mut guest = Guest::default();
    set_ioredir(&mut io, PIN, 0x9e, true);
    guest.line(&mut io, PIN, true);
    // The handler masks, EOIs with the line still high: held, not sent.
    set_mask(&mut io, PIN, true);
    assert_eq!(guest.eoi(&mut io, 0x9e).deliver, PinSet::EMPTY);
    assert!(!io.entry(PIN).unwrap().remote_irr());
    // Unmask: the still-asserted level is sent.
    let effects = set_mask(&mut io, PIN, false);
    guest.effects(&io, effects);
    assert_eq!(guest.vectors(), [0x9e, 0x9e]);
}

#[test]
fn self_reconfigure_destination_while_in_service() {
    let mut io = ioapic(Quirks::DATASHEET);
    let mut guest = Guest::default();
    write_entry(&mut io, PIN, entry(0x9c, true, 0));
    guest.line(&mut io, PIN, true);
    // The handler re-targets the entry to APIC 1 (Remote IRR is kept), silences, EOIs.
    let effects = write_entry(&mut io, PIN, entry(0x9c, true, 1));
    assert_eq!(effects.deliver, PinSet::EMPTY);
    assert!(io.entry(PIN).unwrap().remote_irr());
    guest.line(&mut io, PIN, false);
    guest.eoi(&mut io, 0x9c);
    guest.line(&mut io, PIN, true);
    let dests: Vec<u64> = guest.taken.iter().map(|(_, m)| (m.address >> 12) & 0xFF).collect();
    assert_eq!(dests, [0, 1]);
}

#[test]
fn shared_level_line_stays_asserted_until_every_source_deasserts() {
    let mut io = ioapic(Quirks::DATASHEET);
    let mut guest = Guest::default();
    set_ioredir(&mut io, 10, 0x3a, true);
    assert_eq!(io.set_irq_source(10, 0, true).unwrap().status, LineStatus::Delivered);
    assert_eq!(io.set_irq_source(10, 1, true).unwrap().status, LineStatus::InService);
    io.set_irq_source(10, 0, false).unwrap();
    assert!(io.line(10));
    // Source 1 still asserts: the EOI re-delivers.
    assert_eq!(guest.eoi(&mut io, 0x3a).deliver, PinSet(1 << 10));
    io.set_irq_source(10, 1, false).unwrap();
    assert_eq!(guest.eoi(&mut io, 0x3a).deliver, PinSet::EMPTY);
    assert!(!io.line(10));
}

#[test]
fn eoi_of_a_shared_vector_redelivers_each_asserted_pin_in_pin_order() {
    let mut io = ioapic(Quirks::DATASHEET);
    let mut guest = Guest::default();
    for pin in [3, 9, 17] {
        set_ioredir(&mut io, pin, 0x50, true);
        guest.line(&mut io, pin, true);
    }
    guest.line(&mut io, 9, false);
    let effects = guest.eoi(&mut io, 0x50);
    assert_eq!(effects.eoi, PinSet(1 << 3 | 1 << 9 | 1 << 17));
    assert!(effects.deliver.iter().eq([3, 17]));
    assert_eq!(guest.pins(), [3, 9, 17, 3, 17]);
}

#[test]
fn eoi_of_another_vector_changes_nothing() {
    let mut io = ioapic(Quirks::DATASHEET);
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    io.set_irq(PIN, true).unwrap();
    let before = io.clone();
    assert_eq!(io.end_of_interrupt(LEVEL_VECTOR + 1), Effects::NONE);
    assert_eq!(io, before);
}

#[test]
fn datasheet_eoi_ignores_edge_entries_kvm_acts_on_them() {
    // An edge and a level entry share vector 0x60; both lines are high.
    for (quirks, expected) in [(Quirks::DATASHEET, PinSet(1 << 2)), (Quirks::KVM, PinSet(1 << 1 | 1 << 2))] {
        let mut io = ioapic(quirks);
        set_ioredir(&mut io, 1, 0x60, false);
        set_ioredir(&mut io, 2, 0x60, true);
        io.set_irq(1, true).unwrap();
        io.set_irq(2, true).unwrap();
        let effects = io.end_of_interrupt(0x60);
        assert_eq!(effects.eoi, expected, "{quirks:?}");
        assert_eq!(effects.deliver, expected, "{quirks:?}: the edge line is still high");
    }
}

// ----- EOI without a LAPIC broadcast ------------------------------------------------------------

#[test]
fn version_0x20_eoir_clears_remote_irr_and_redelivers() {
    let mut io = IoApic::new(IoApicConfig { version: Version::V20, ..IoApicConfig::DATASHEET });
    let mut guest = Guest::default();
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    guest.line(&mut io, PIN, true);
    // Bits 31:8 of the EOIR value are reserved.
    let effects = w32(&mut io, EOIR, 0xFFFF_FF00 | u32::from(LEVEL_VECTOR));
    guest.effects(&io, effects);
    assert_eq!(effects.eoi, PinSet(1 << PIN));
    assert_eq!(guest.vectors(), [LEVEL_VECTOR, LEVEL_VECTOR]);
    guest.line(&mut io, PIN, false);
    let effects = w32(&mut io, EOIR, u32::from(LEVEL_VECTOR));
    assert_eq!(effects.deliver, PinSet::EMPTY);
    assert!(!io.entry(PIN).unwrap().remote_irr());
    // EOIR reads 0.
    assert_eq!(r32(&io, EOIR), 0);
}

#[test]
fn version_0x11_has_no_eoir() {
    let mut io = ioapic(Quirks::DATASHEET);
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    io.set_irq(PIN, true).unwrap();
    let effects = io.mmio_write(EOIR, &u32::from(LEVEL_VECTOR).to_le_bytes());
    assert_eq!(effects.invalid, Some(AccessError::UnknownOffset(EOIR)));
    assert!(io.entry(PIN).unwrap().remote_irr());
}

#[test]
fn level_to_edge_transition_clears_remote_irr() {
    let mut io = ioapic(Quirks::DATASHEET);
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    io.set_irq(PIN, true).unwrap();
    assert!(io.entry(PIN).unwrap().remote_irr());
    write_entry(&mut io, PIN, entry(LEVEL_VECTOR, false, 0));
    assert!(!io.entry(PIN).unwrap().remote_irr());
}

#[test]
fn masking_preserves_remote_irr() {
    let mut io = ioapic(Quirks::DATASHEET);
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    io.set_irq(PIN, true).unwrap();
    set_mask(&mut io, PIN, true);
    set_mask(&mut io, PIN, false);
    assert!(io.entry(PIN).unwrap().remote_irr());
}

#[test]
fn reconfiguration_race_stale_entry_written_back_after_the_eoi() {
    let mut io = ioapic(Quirks::DATASHEET);
    let mut guest = Guest::default();
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    guest.line(&mut io, PIN, true);
    // The guest reads the entry (Remote IRR = 1) before the EOI...
    let stale = read_entry(&mut io, PIN);
    assert_ne!(stale & RTE_REMOTE_IRR, 0);
    guest.line(&mut io, PIN, false);
    guest.eoi(&mut io, LEVEL_VECTOR);
    // ... and writes it back afterwards: the read-only bit is not resurrected.
    write_entry(&mut io, PIN, stale);
    assert!(!io.entry(PIN).unwrap().remote_irr());
    // The same with the stale value switched to edge; then one edge fires once.
    write_entry(&mut io, PIN, stale & !RTE_TRIGGER_LEVEL);
    assert!(!io.entry(PIN).unwrap().remote_irr());
    guest.line(&mut io, PIN, true);
    guest.line(&mut io, PIN, false);
    assert_eq!(guest.vectors(), [LEVEL_VECTOR, LEVEL_VECTOR]);
    assert_eq!(guest.taken[1].1.data & 0x8000, 0, "the second was an edge message");
}

#[test]
fn implicit_eoi_edge_then_level_clears_remote_irr() {
    let mut io = ioapic(Quirks::DATASHEET);
    let mut guest = Guest::default();
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    guest.line(&mut io, PIN, true);
    guest.line(&mut io, PIN, false);
    write_entry(&mut io, PIN, entry(LEVEL_VECTOR, false, 0));
    write_entry(&mut io, PIN, entry(LEVEL_VECTOR, true, 0));
    assert!(!io.entry(PIN).unwrap().remote_irr());
    // The next assert is delivered without any EOI having been sent.
    assert_eq!(guest.line(&mut io, PIN, true), LineStatus::Delivered);
}

#[test]
fn linux_eoi_ioapic_pin_mask_edge_level_unmask_redelivers_a_held_line() {
    // Linux's __eoi_ioapic_pin on a version 0x11 IOAPIC: mask, set edge, set level, unmask
    // (each a low-dword write), with the device still asserting.
    let mut io = ioapic(Quirks::DATASHEET);
    let mut guest = Guest::default();
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    guest.line(&mut io, PIN, true);
    let level = entry(LEVEL_VECTOR, true, 0) as u32;
    let masked = level | RTE_MASK as u32;
    for (low, delivers) in [
        (masked, false),                               // mask
        (masked & !(RTE_TRIGGER_LEVEL as u32), false), // edge: clears Remote IRR
        (masked, false),                               // level again, still masked
        (level, true),                                 // unmask: the held level is sent
    ] {
        let effects = write_reg(&mut io, IOREDTBL + 2 * PIN, low);
        guest.effects(&io, effects);
        assert_eq!(effects.deliver.contains(PIN), delivers, "write {low:#x}");
    }
    assert_eq!(guest.vectors(), [LEVEL_VECTOR, LEVEL_VECTOR]);
    assert!(io.entry(PIN).unwrap().remote_irr());
}

#[test]
fn edge_to_level_write_with_the_line_high_delivers() {
    let mut io = ioapic(Quirks::DATASHEET);
    set_ioredir(&mut io, PIN, EDGE_VECTOR, false);
    io.set_irq(PIN, true).unwrap();
    let effects = set_ioredir(&mut io, PIN, EDGE_VECTOR, true);
    assert_eq!(effects.deliver, PinSet(1 << PIN));
    assert_eq!(io.message(PIN).unwrap().data, 0xC000 | u32::from(EDGE_VECTOR));
}

#[test]
fn writing_an_edge_entry_with_the_line_high_does_not_resend() {
    let mut io = ioapic(Quirks::DATASHEET);
    set_ioredir(&mut io, PIN, EDGE_VECTOR, false);
    io.set_irq(PIN, true).unwrap();
    assert_eq!(set_ioredir(&mut io, PIN, EDGE_VECTOR + 1, false).deliver, PinSet::EMPTY);
}

// ----- KVM's "Remote IRR only if accepted" --------------------------------------------------------

#[test]
fn kvm_not_accepted_clears_remote_irr_and_the_next_eoi_resends() {
    let mut io = ioapic(Quirks::KVM);
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    io.set_irq(PIN, true).unwrap();
    assert!(io.not_accepted(PIN));
    assert!(!io.entry(PIN).unwrap().remote_irr());
    // Nothing is sent until something re-evaluates the pin; a new assert does.
    assert_eq!(io.set_irq_source(PIN, 1, true).unwrap().status, LineStatus::Delivered);
    // The datasheet profile keeps Remote IRR.
    let mut io = ioapic(Quirks::DATASHEET);
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    io.set_irq(PIN, true).unwrap();
    assert!(!io.not_accepted(PIN));
    assert!(io.entry(PIN).unwrap().remote_irr());
}

// ----- interrupt storm ----------------------------------------------------------------------------

fn storm_ioapic(threshold: u32, quirks: Quirks) -> IoApic {
    IoApic::new(IoApicConfig {
        storm_threshold: threshold,
        storm_delay_ns: 1234,
        quirks,
        ..IoApicConfig::DATASHEET
    })
}

#[test]
fn storm_throttle_defers_exactly_the_threshold_th_successive_eoi() {
    let mut io = IoApic::new(IoApicConfig::DATASHEET);
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    io.set_irq(PIN, true).unwrap();
    // A guest that EOIs without silencing its device: 9 999 immediate re-deliveries.
    for n in 1..10_000u32 {
        let effects = io.end_of_interrupt(LEVEL_VECTOR);
        assert_eq!(effects.deliver, PinSet(1 << PIN), "EOI {n}");
        assert_eq!(io.storm_count(PIN), n);
    }
    let effects = io.end_of_interrupt(LEVEL_VECTOR);
    assert_eq!(effects.deliver, PinSet::EMPTY);
    assert_eq!(effects.deferred, PinSet(1 << PIN));
    assert_eq!(effects.recheck_after_ns, Some(10_000_000));
    assert_eq!(io.storm_count(PIN), 0);
    assert!(!io.entry(PIN).unwrap().remote_irr());
    // The callback delivers it, and the count starts again.
    let effects = io.deliver_deferred();
    assert_eq!(effects.deliver, PinSet(1 << PIN));
    assert!(io.entry(PIN).unwrap().remote_irr());
    assert_eq!(io.end_of_interrupt(LEVEL_VECTOR).deliver, PinSet(1 << PIN));
}

#[test]
fn storm_count_restarts_when_an_eoi_finds_the_line_low() {
    let mut io = storm_ioapic(3, Quirks::DATASHEET);
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    io.set_irq(PIN, true).unwrap();
    assert_eq!(io.end_of_interrupt(LEVEL_VECTOR).deliver, PinSet(1 << PIN));
    assert_eq!(io.end_of_interrupt(LEVEL_VECTOR).deliver, PinSet(1 << PIN));
    io.set_irq(PIN, false).unwrap();
    let _ = io.end_of_interrupt(LEVEL_VECTOR);
    assert_eq!(io.storm_count(PIN), 0);
    io.set_irq(PIN, true).unwrap();
    assert_eq!(io.end_of_interrupt(LEVEL_VECTOR).deliver, PinSet(1 << PIN));
    assert_eq!(io.end_of_interrupt(LEVEL_VECTOR).deliver, PinSet(1 << PIN));
    let third = io.end_of_interrupt(LEVEL_VECTOR);
    assert_eq!(
        (third.deliver, third.deferred, third.recheck_after_ns),
        (PinSet::EMPTY, PinSet(1 << PIN), Some(1234))
    );
}

#[test]
fn storm_count_restarts_on_entry_write_except_with_kvm_quirk() {
    for (quirks, deferred) in [(Quirks::DATASHEET, false), (Quirks::STORM_COUNT_KEPT_ON_WRITE, true)] {
        let mut io = storm_ioapic(2, quirks);
        set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
        io.set_irq(PIN, true).unwrap();
        let _ = io.end_of_interrupt(LEVEL_VECTOR);
        // Rewriting the high dword (the same value) with Remote IRR set delivers nothing.
        assert_eq!(write_reg(&mut io, IOREDTBL + 2 * PIN + 1, 0).deliver, PinSet::EMPTY);
        let effects = io.end_of_interrupt(LEVEL_VECTOR);
        assert_eq!(effects.deferred.contains(PIN), deferred, "{quirks:?}");
    }
}

#[test]
fn storm_deferred_pin_is_delivered_by_an_entry_write_before_the_timer() {
    let mut io = storm_ioapic(1, Quirks::DATASHEET);
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    io.set_irq(PIN, true).unwrap();
    assert_eq!(io.end_of_interrupt(LEVEL_VECTOR).deferred, PinSet(1 << PIN));
    assert_eq!(write_reg(&mut io, IOREDTBL + 2 * PIN + 1, 0).deliver, PinSet(1 << PIN));
    // The late timer then finds nothing to do.
    assert_eq!(io.deliver_deferred(), Effects::NONE);
}

#[test]
fn storm_timer_delivers_only_asserted_unmasked_level_pins_without_remote_irr() {
    let mut io = storm_ioapic(1, Quirks::DATASHEET);
    set_ioredir(&mut io, 1, 0x41, true);
    set_ioredir(&mut io, 2, 0x42, true);
    set_ioredir(&mut io, 3, 0x43, false);
    for pin in 1..=3 {
        io.set_irq(pin, true).unwrap();
    }
    let _ = io.end_of_interrupt(0x41);
    let _ = io.end_of_interrupt(0x42);
    set_mask(&mut io, 2, true);
    assert_eq!(io.deliver_deferred().deliver, PinSet(1 << 1));
}

#[test]
fn storm_threshold_zero_turns_the_throttle_off() {
    let mut io = storm_ioapic(0, Quirks::DATASHEET);
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    io.set_irq(PIN, true).unwrap();
    for _ in 0..100 {
        assert_eq!(io.end_of_interrupt(LEVEL_VECTOR).deliver, PinSet(1 << PIN));
    }
}

// ----- routes for the LAPIC and APICv -------------------------------------------------------------

#[test]
fn level_routes_list_unmasked_or_in_service_level_entries() {
    let mut io = ioapic(Quirks::DATASHEET);
    set_ioredir(&mut io, 1, 0x51, true);
    set_ioredir(&mut io, 2, 0x52, false);
    write_entry(&mut io, 3, entry(0x53, true, 0) | RTE_MASK);
    set_ioredir(&mut io, 4, 0x54, true);
    io.set_irq(4, true).unwrap();
    set_mask(&mut io, 4, true); // masked, but its EOI is still owed
    let routes: Vec<(u8, u8)> = io.level_routes().map(|(pin, irq)| (pin, irq.vector)).collect();
    assert_eq!(routes, [(1, 0x51), (4, 0x54)]);
    let vectors = io.eoi_vectors();
    assert!(vectors.contains(0x51) && vectors.contains(0x54) && vectors.len() == 2);
    assert!(io.level_routes().all(|(_, irq)| irq.trigger_mode == TriggerMode::Level));
}

#[test]
fn bad_pins_and_sources_are_refused_without_effect() {
    let mut io = ioapic(Quirks::DATASHEET);
    let before = io.clone();
    assert_eq!(io.set_irq(24, true), Err(LineError::NoSuchPin(24)));
    assert_eq!(io.set_irq_source(0, 32, true), Err(LineError::NoSuchSource(32)));
    assert_eq!(io.pulse_irq(255), Err(LineError::NoSuchPin(255)));
    assert!(!io.not_accepted(24));
    assert_eq!((io.message(24), io.entry(24), io.line(24)), (None, None, false));
    assert_eq!(io, before);
}

#[test]
fn line_status_maps_to_kvm_irq_line_status() {
    let kvm: Vec<i32> = [
        LineStatus::Masked,
        LineStatus::InService,
        LineStatus::Coalesced,
        LineStatus::Delivered,
        LineStatus::Deasserted,
    ]
    .iter()
    .map(|s| s.kvm())
    .collect();
    assert_eq!(kvm, [-1, -1, 0, 1, 1]);
}

// ----- state -------------------------------------------------------------------------------------

#[test]
fn restore_of_state_is_the_identity_and_restarts_storm_counters() {
    let mut io = ioapic(Quirks::DATASHEET);
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    io.set_irq_source(PIN, 3, true).unwrap();
    let _ = io.end_of_interrupt(LEVEL_VECTOR);
    assert_eq!(io.storm_count(PIN), 1);
    let state = io.state();
    io.restore(&state).unwrap();
    assert_eq!(io.state(), state);
    assert_eq!(io.storm_count(PIN), 0);
}

#[test]
fn restore_refuses_impossible_states_and_leaves_the_model_unchanged() {
    let mut io = ioapic(Quirks::DATASHEET);
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    let before = io.clone();
    let good = io.state();
    type Spoil = fn(&mut IoApicState);
    let cases: [(Spoil, StateError); 4] = [
        (|s| s.id = 16, StateError::Id(16)),
        (|s| s.irr_delivered = 1 << 24, StateError::NoSuchPins(1 << 24)),
        (|s| s.redirtbl[4].0 |= RTE_DELIVERY_STATUS, StateError::DeliveryStatus { pin: 4 }),
        (|s| s.redirtbl[5].0 = RTE_REMOTE_IRR, StateError::RemoteIrrOnEdge { pin: 5 }),
    ];
    for (spoil, error) in cases {
        let mut bad = good;
        spoil(&mut bad);
        assert_eq!(io.restore(&bad), Err(error));
        assert_eq!(io.set_irqchip(&bad), Err(error));
        assert_eq!(io, before);
    }
}

#[test]
fn restore_delivers_nothing_deliver_deferred_sends_a_held_level() {
    let mut io = ioapic(Quirks::DATASHEET);
    let mut state = IoApicState::default();
    state.redirtbl[2] = RedirectionEntry(entry(0x62, true, 0));
    state.sources[2] = 1;
    io.restore(&state).unwrap();
    assert!(!io.entry(2).unwrap().remote_irr());
    assert_eq!(io.deliver_deferred().deliver, PinSet(1 << 2));
}

#[test]
fn reset_masks_every_entry_and_keeps_the_lines() {
    let mut io = ioapic(Quirks::DATASHEET);
    write_reg(&mut io, IOAPICID, 0x0500_0000);
    set_ioredir(&mut io, 1, 0x41, true);
    io.set_irq(1, true).unwrap();
    io.reset();
    assert_eq!(io.state(), IoApicState { sources: io.state().sources, ..IoApicState::POWER_ON });
    assert!(io.line(1));
    // The entry is edge-triggered again: a held line is no new edge; the next one is masked.
    assert_eq!(io.set_irq(1, true).unwrap().status, LineStatus::Coalesced);
    io.set_irq(1, false).unwrap();
    assert_eq!(io.set_irq(1, true).unwrap().status, LineStatus::Masked);
}

#[test]
fn kvm_config_is_version_0x11_with_every_quirk() {
    let io = IoApic::new(IoApicConfig::KVM);
    assert_eq!(io.config().version, Version::V11);
    assert_eq!(io.quirks(), Quirks::all());
    assert_eq!(IoApicConfig::default(), IoApicConfig::DATASHEET);
}

#[cfg(feature = "serde")]
#[test]
fn state_survives_serialization_and_still_validates_on_restore() {
    let mut io = ioapic(Quirks::DATASHEET);
    set_ioredir(&mut io, PIN, LEVEL_VECTOR, true);
    io.set_irq_source(PIN, 7, true).unwrap();
    let json = serde_json::to_string(&io.state()).unwrap();
    let back: IoApicState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, io.state());
    let tampered = json.replacen("\"id\":0", "\"id\":99", 1);
    let bad: IoApicState = serde_json::from_str(&tampered).unwrap();
    assert_eq!(io.restore(&bad), Err(StateError::Id(99)));
    let config: IoApicConfig =
        serde_json::from_str(&serde_json::to_string(&IoApicConfig::KVM).unwrap()).unwrap();
    assert_eq!(config, IoApicConfig::KVM);
}

// ----- RTC EOI tracking (KVM) ----------------------------------------------------------------

/// The RTC's vector in these tests.
const RTC_VECTOR: u8 = 0x28;

/// Two software-enabled xAPICs (IDs 0 and 1) and an IOAPIC whose pin 8 sends `RTC_VECTOR`,
/// edge-triggered, fixed, to the physical broadcast 0xFF (both APICs).
fn rtc_setup(quirks: Quirks) -> (IoApic, ApicBus, Vec<LocalApic>) {
    let apics: Vec<LocalApic> = (0..2)
        .map(|id| {
            let mut apic = LocalApic::new(LapicConfig { id, bsp: id == 0, ..LapicConfig::default() });
            let _ = apic.mmio_write(0xF0, &0x1FFu32.to_le_bytes(), 0);
            apic
        })
        .collect();
    let mut io = ioapic(quirks);
    write_entry(&mut io, RTC_PIN, entry(RTC_VECTOR, false, 0xFF));
    (io, ApicBus::default(), apics)
}

/// An RTC tick: pulse pin 8; if the IOAPIC sends the message, deliver it on the bus and pass
/// the result back. Returns the status and KVM_IRQ_LINE_STATUS's value.
fn rtc_tick(io: &mut IoApic, bus: &ApicBus, apics: &mut [LocalApic]) -> (LineStatus, i32) {
    let result = io.pulse_irq(RTC_PIN).unwrap();
    if result.message.is_none() {
        return (result.status, result.status.kvm());
    }
    let irq = io.interrupt(RTC_PIN).unwrap();
    let delivery = bus.deliver(apics, &irq, None).unwrap();
    (result.status, io.rtc_delivered(&delivery))
}

/// vCPU `vcpu` takes its highest pending interrupt and EOIs it, telling the IOAPIC.
fn take_and_eoi(io: &mut IoApic, apics: &mut [LocalApic], vcpu: usize) -> bool {
    let ack = apics[vcpu].acknowledge();
    assert!(!ack.spurious);
    let vector = apics[vcpu].in_service().unwrap();
    let _ = apics[vcpu].mmio_write(0xB0, &0u32.to_le_bytes(), 0);
    io.rtc_eoi(vcpu, vector)
}

#[test]
fn an_rtc_edge_while_the_previous_is_pending_is_coalesced_and_not_delivered() {
    let (mut io, bus, mut apics) = rtc_setup(Quirks::KVM);
    assert_eq!(rtc_tick(&mut io, &bus, &mut apics), (LineStatus::Delivered, 2), "both APICs took it");
    assert_eq!(io.rtc_pending_eoi(), 2);
    assert_eq!((io.rtc_awaiting(0), io.rtc_awaiting(1)), (Some(RTC_VECTOR), Some(RTC_VECTOR)));
    // Neither vCPU has EOI'd: the next tick is coalesced (KVM_IRQ_LINE_STATUS 0), nothing sent.
    let result = io.pulse_irq(RTC_PIN).unwrap();
    assert_eq!((result.status, result.status.kvm(), result.message), (LineStatus::Coalesced, 0, None));
    // One of the two EOIs is not enough.
    assert!(take_and_eoi(&mut io, &mut apics, 0));
    assert_eq!(io.rtc_pending_eoi(), 1);
    assert_eq!(rtc_tick(&mut io, &bus, &mut apics).0, LineStatus::Coalesced);
    assert!(apics[0].pending_interrupt().is_none(), "the coalesced tick reached no APIC");
    // An EOI of another vector, or by a vCPU that owes none, does not count.
    assert!(!io.rtc_eoi(1, RTC_VECTOR + 1));
    assert!(!io.rtc_eoi(0, RTC_VECTOR));
    assert_eq!(io.rtc_pending_eoi(), 1);
}

#[test]
fn after_every_destination_eois_the_next_rtc_edge_is_delivered() {
    let (mut io, bus, mut apics) = rtc_setup(Quirks::KVM);
    assert_eq!(rtc_tick(&mut io, &bus, &mut apics).0, LineStatus::Delivered);
    assert!(take_and_eoi(&mut io, &mut apics, 0));
    assert!(take_and_eoi(&mut io, &mut apics, 1));
    assert_eq!(io.rtc_pending_eoi(), 0);
    assert_eq!(rtc_tick(&mut io, &bus, &mut apics), (LineStatus::Delivered, 2));
    assert_eq!(apics[1].pending_interrupt(), Some(RTC_VECTOR));
}

#[test]
fn the_datasheet_profile_never_coalesces_the_rtc() {
    let (mut io, bus, mut apics) = rtc_setup(Quirks::DATASHEET);
    for _ in 0..3 {
        assert_eq!(rtc_tick(&mut io, &bus, &mut apics), (LineStatus::Delivered, 2));
        assert_eq!(io.rtc_pending_eoi(), 0);
    }
    assert!(!io.rtc_eoi(0, RTC_VECTOR));
}

#[test]
fn a_coalesced_rtc_assert_leaves_the_line_low_for_the_next_edge() {
    // KVM returns before setting the line's irr bit: held high through the coalesced assert,
    // the next assert after the EOIs is still an edge.
    let (mut io, bus, mut apics) = rtc_setup(Quirks::KVM);
    assert_eq!(rtc_tick(&mut io, &bus, &mut apics).0, LineStatus::Delivered);
    assert_eq!(io.set_irq(RTC_PIN, true).unwrap().status, LineStatus::Coalesced);
    assert!(!io.line(RTC_PIN));
    assert_eq!(io.state().kvm_irr() & (1 << RTC_PIN), 0, "kvm_ioapic_state.irr");
    assert!(take_and_eoi(&mut io, &mut apics, 0));
    assert!(take_and_eoi(&mut io, &mut apics, 1));
    assert_eq!(io.set_irq(RTC_PIN, true).unwrap().status, LineStatus::Delivered);
}

#[test]
fn a_masked_rtc_is_coalesced_while_an_eoi_is_pending_and_not_tracked_otherwise() {
    let (mut io, bus, mut apics) = rtc_setup(Quirks::KVM);
    assert_eq!(rtc_tick(&mut io, &bus, &mut apics).0, LineStatus::Delivered);
    set_mask(&mut io, RTC_PIN, true);
    assert_eq!(rtc_tick(&mut io, &bus, &mut apics).0, LineStatus::Coalesced, "KVM checks before the mask");
    assert!(take_and_eoi(&mut io, &mut apics, 0));
    assert!(take_and_eoi(&mut io, &mut apics, 1));
    assert_eq!(rtc_tick(&mut io, &bus, &mut apics).0, LineStatus::Masked);
    assert_eq!(io.rtc_pending_eoi(), 0);
    // A delivery the VMM reports without a tracked assert before it records nothing.
    let irq = io.interrupt(RTC_PIN).unwrap();
    let delivery = bus.deliver(&mut apics, &irq, None).unwrap();
    assert_eq!(io.rtc_delivered(&delivery), 2);
    assert_eq!(io.rtc_pending_eoi(), 0);
}

#[test]
fn rtc_tracking_is_not_in_the_state_and_is_rebuilt_from_the_lapics() {
    let (mut io, bus, mut apics) = rtc_setup(Quirks::KVM);
    assert_eq!(rtc_tick(&mut io, &bus, &mut apics).0, LineStatus::Delivered);
    assert!(take_and_eoi(&mut io, &mut apics, 0));
    let state = io.state();
    io.restore(&state).unwrap();
    assert_eq!(io.rtc_pending_eoi(), 0, "restore drops the tracking");
    // As KVM's kvm_rtc_eoi_tracking_restore_all: vCPU 1 still has the vector in IRR.
    io.rtc_restore(&bus, &apics);
    assert_eq!(io.rtc_pending_eoi(), 1);
    assert_eq!((io.rtc_awaiting(0), io.rtc_awaiting(1)), (None, Some(RTC_VECTOR)));
    assert_eq!(rtc_tick(&mut io, &bus, &mut apics).0, LineStatus::Coalesced);
    // Per vCPU, as on KVM_SET_LAPIC: vCPU 1's EOI happened in the restored LAPIC.
    let _ = apics[1].acknowledge();
    let _ = apics[1].mmio_write(0xB0, &0u32.to_le_bytes(), 0);
    io.rtc_restore_one(&bus, 1, &apics[1]);
    assert_eq!(io.rtc_pending_eoi(), 0);
    assert_eq!(rtc_tick(&mut io, &bus, &mut apics).0, LineStatus::Delivered);
    // set_irqchip and reset drop it too.
    let _ = io.set_irqchip(&state).unwrap();
    assert_eq!(io.rtc_pending_eoi(), 0);
    assert_eq!(rtc_tick(&mut io, &bus, &mut apics).0, LineStatus::Delivered);
    io.reset();
    assert_eq!(io.rtc_pending_eoi(), 0);
}

#[test]
fn rtc_tracking_survives_entry_writes_as_in_kvm() {
    // KVM's ioapic_write_indirect leaves rtc_status alone.
    let (mut io, bus, mut apics) = rtc_setup(Quirks::KVM);
    assert_eq!(rtc_tick(&mut io, &bus, &mut apics).0, LineStatus::Delivered);
    write_entry(&mut io, RTC_PIN, entry(RTC_VECTOR + 1, false, 0xFF));
    assert_eq!(io.rtc_pending_eoi(), 2);
    assert_eq!(rtc_tick(&mut io, &bus, &mut apics).0, LineStatus::Coalesced);
    // The EOIs count against the vector each vCPU took, not the entry's new one.
    assert!(!io.rtc_eoi(0, RTC_VECTOR + 1));
    assert!(io.rtc_eoi(0, RTC_VECTOR));
}
