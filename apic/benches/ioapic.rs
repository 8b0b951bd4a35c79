//! Hot paths of the IOAPIC as a VMM drives them.
//!
//! `cargo bench -p vm-apic --bench ioapic` (release profile, opt-level 3, no LTO).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use vm_apic::ioapic::{regs::*, IoApic, IoApicConfig};
use vm_apic::MsiMessage;

/// Hands a message to the "bus" the way a VMM's delivery code takes it: its two fields in
/// registers. (`black_box` of the whole `Option<MsiMessage>` would time a 24-byte stack
/// spill and reload instead, which an inlined delivery path never does.)
#[inline(always)]
fn consume(msg: Option<MsiMessage>) {
    if let Some(msg) = msg {
        black_box(msg.address);
        black_box(msg.data);
    }
}

/// Pin 4: vector 0x34, fixed, physical APIC 1, edge. Pin 10: vector 0x3a, level.
fn programmed(config: IoApicConfig) -> IoApic {
    let mut ioapic = IoApic::new(config);
    for (index, value) in [
        (IOREDTBL + 9, 0x0100_0000),  // pin 4 high dword: destination APIC 1
        (IOREDTBL + 8, 0x0000_0034),  // pin 4 low dword: vector 0x34, edge, unmasked
        (IOREDTBL + 21, 0x0100_0000), // pin 10 high dword: destination APIC 1
        (IOREDTBL + 20, 0x0000_803a), // pin 10 low dword: vector 0x3a, level, unmasked
    ] {
        let _ = ioapic.write_register(index, value);
    }
    ioapic
}

/// An edge device interrupt: the line rises (the message is produced) and falls.
fn edge_pin_to_msi(c: &mut Criterion) {
    for (name, config) in [("", IoApicConfig::DATASHEET), ("/kvm", IoApicConfig::KVM)] {
        let mut ioapic = programmed(config);
        c.bench_function(&format!("ioapic/edge_pin_to_msi{name}"), |b| {
            b.iter(|| {
                let msg = ioapic.set_irq(black_box(4), true).map(|r| r.message);
                let _ = ioapic.set_irq(black_box(4), false);
                consume(msg.ok().flatten())
            })
        });
    }
}

/// A level interrupt handled properly: assert, message, the handler silences the device,
/// the LAPIC broadcasts the EOI, nothing is re-delivered.
fn level_assert_eoi(c: &mut Criterion) {
    for (name, config) in [("", IoApicConfig::DATASHEET), ("/kvm", IoApicConfig::KVM)] {
        let mut ioapic = programmed(config);
        c.bench_function(&format!("ioapic/level_assert_eoi{name}"), |b| {
            b.iter(|| {
                let msg = ioapic.set_irq(black_box(10), true).map(|r| r.message);
                consume(msg.ok().flatten());
                let _ = ioapic.set_irq(black_box(10), false);
                let effects = ioapic.end_of_interrupt(black_box(0x3a));
                for pin in effects.deliver {
                    consume(ioapic.message(pin));
                }
            })
        });
    }
}

/// A level EOI that re-delivers: the line is still asserted, so the EOI sends it again and
/// the VMM fetches the message. The storm throttle is off so that every EOI re-delivers.
fn level_eoi_redeliver(c: &mut Criterion) {
    let mut ioapic = programmed(IoApicConfig { storm_threshold: 0, ..IoApicConfig::DATASHEET });
    let _ = ioapic.set_irq(10, true);
    c.bench_function("ioapic/level_eoi_redeliver", |b| {
        b.iter(|| {
            let effects = ioapic.end_of_interrupt(black_box(0x3a));
            for pin in effects.deliver {
                consume(ioapic.message(pin));
            }
        })
    });
}

/// The guest's two-access register write through IOREGSEL/IOWIN (an unmask of pin 4).
fn mmio_entry_write(c: &mut Criterion) {
    let mut ioapic = programmed(IoApicConfig::DATASHEET);
    c.bench_function("ioapic/mmio_entry_write", |b| {
        b.iter(|| {
            let _ = ioapic.mmio_write(IOREGSEL, &u32::from(IOREDTBL + 8).to_le_bytes());
            black_box(ioapic.mmio_write(IOWIN, &black_box(0x0000_0034u32).to_le_bytes()))
        })
    });
}

criterion_group!(benches, edge_pin_to_msi, level_assert_eoi, level_eoi_redeliver, mmio_entry_write);
criterion_main!(benches);
