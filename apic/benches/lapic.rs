//! Hot paths of the local APIC and the APIC bus as a VMM drives them.
//!
//! `cargo bench -p vm-apic --bench lapic` (release profile, opt-level 3, no LTO).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use vm_apic::bus::{ApicBus, BusQuirks};
use vm_apic::lapic::{regs, LapicConfig, LocalApic, Quirks};
use vm_apic::{DestinationMode, Interrupt, Shorthand};

/// SVR: spurious vector 0xFF, software enable (bit 8).
const SVR_ENABLED: u32 = 0x1FF;

fn enabled_apic(id: u32, quirks: Quirks) -> LocalApic {
    let mut apic = LocalApic::new(LapicConfig { id, bsp: id == 0, quirks, ..LapicConfig::default() });
    let _ = apic.mmio_write(regs::SVR.into(), &SVR_ENABLED.to_le_bytes(), 0);
    apic
}

/// One interrupt end to end at one APIC: a fixed edge message is accepted (IRR), the CPU
/// acknowledges it (ISR), the guest writes EOI through the xAPIC page.
fn accept_ack_eoi(c: &mut Criterion) {
    for (name, quirks) in [("sdm", Quirks::SDM), ("kvm", Quirks::KVM)] {
        let mut apic = enabled_apic(0, quirks);
        let irq = Interrupt { vector: 0x41, level: true, ..Interrupt::default() };
        let eoi = 0u32.to_le_bytes();
        c.bench_function(&format!("lapic/accept_ack_eoi/{name}"), |b| {
            b.iter(|| {
                let accepted = apic.accept(black_box(&irq));
                let ack = apic.acknowledge();
                let effects = apic.mmio_write(regs::EOI.into(), &eoi, 0);
                black_box((accepted, ack, effects))
            })
        });
    }
    let mut apic = enabled_apic(0, Quirks::SDM);
    let _ = apic.wrmsr(regs::IA32_APIC_BASE, 0xFEE0_0D00, 0).unwrap();
    let irq = Interrupt { vector: 0x41, level: true, ..Interrupt::default() };
    c.bench_function("lapic/accept_ack_eoi/x2apic_msr", |b| {
        b.iter(|| {
            let accepted = apic.accept(black_box(&irq));
            let ack = apic.acknowledge();
            let effects = apic.wrmsr(0x80B, 0, 0);
            black_box((accepted, ack, effects))
        })
    });
}

/// The injection decision a VMM makes before every entry.
fn pending_interrupt(c: &mut Criterion) {
    let mut apic = enabled_apic(0, Quirks::SDM);
    let _ = apic.accept(&Interrupt { vector: 0x41, level: true, ..Interrupt::default() });
    c.bench_function("lapic/pending_interrupt", |b| b.iter(|| black_box(&apic).pending_interrupt()));
}

/// vCPU 0 writes its ICR (fixed, all excluding self) and the bus delivers to the 63 others.
fn broadcast_ipi(c: &mut Criterion) {
    let mut apics: Vec<LocalApic> = (0..64).map(|id| enabled_apic(id, Quirks::SDM)).collect();
    let bus = ApicBus::new(BusQuirks::SDM);
    // ICR: vector 0x50, fixed, assert (bit 14), all excluding self (bits 19:18 = 11).
    let icr = (0x000C_4050u32).to_le_bytes();
    c.bench_function("bus/broadcast_ipi_64", |b| {
        b.iter(|| {
            let ipi = apics[0].mmio_write(regs::ICR_LOW.into(), &icr, 0).ipi.unwrap();
            black_box(bus.deliver(&mut apics, &ipi, Some(0)).unwrap().count())
        })
    });
    // The same, then every target takes and ends the interrupt.
    c.bench_function("bus/broadcast_ipi_64_ack_eoi", |b| {
        b.iter(|| {
            let ipi = apics[0].mmio_write(regs::ICR_LOW.into(), &icr, 0).ipi.unwrap();
            let delivery = bus.deliver(&mut apics, &ipi, Some(0)).unwrap();
            for apic in &mut apics[1..] {
                let _ = apic.acknowledge();
                let _ = apic.mmio_write(regs::EOI.into(), &[0; 4], 0);
            }
            black_box(delivery.count())
        })
    });
}

/// An MSI to one vCPU of 256 x2APIC-mode vCPUs (physical destination 200).
fn unicast_256(c: &mut Criterion) {
    let mut apics: Vec<LocalApic> = (0..256)
        .map(|id| {
            let mut apic = enabled_apic(id, Quirks::SDM);
            apic.host_write_apic_base(apic.apic_base() | 0xC00).unwrap();
            let _ = apic.wrmsr(0x80F, SVR_ENABLED.into(), 0);
            apic
        })
        .collect();
    let msi = Interrupt {
        vector: 0x60,
        level: true,
        destination: 200,
        destination_mode: DestinationMode::Physical,
        shorthand: Shorthand::None,
        ..Interrupt::default()
    };
    for (name, quirks) in [("sdm", BusQuirks::SDM), ("kvm", BusQuirks::KVM)] {
        let bus = ApicBus::new(quirks);
        c.bench_function(&format!("bus/unicast_msi_256/{name}"), |b| {
            b.iter(|| black_box(bus.deliver(&mut apics, black_box(&msi), None).unwrap().count()))
        });
    }
}

criterion_group!(benches, accept_ack_eoi, pending_interrupt, broadcast_ipi, unicast_256);
criterion_main!(benches);
