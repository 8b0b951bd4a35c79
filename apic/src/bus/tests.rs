//! Routing tests: which vCPUs each message reaches, and what their APICs then deliver.

#![allow(unused_must_use)]

extern crate std;

use std::vec::Vec;

use super::*;
use crate::lapic::{regs, LapicConfig, LocalApic, Quirks};
use crate::TriggerMode;

/// `n` software-enabled APICs in xAPIC mode, vCPU i with APIC ID `ids[i]`.
fn apics(ids: &[u32], quirks: Quirks) -> Vec<LocalApic> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            let mut apic = LocalApic::new(LapicConfig { id, bsp: i == 0, quirks, ..LapicConfig::default() });
            apic.mmio_write(regs::SVR.into(), &0x1FFu32.to_le_bytes(), 0);
            apic
        })
        .collect()
}

/// The same APICs switched to x2APIC mode.
fn x2apics(ids: &[u32]) -> Vec<LocalApic> {
    let mut apics = apics(ids, Quirks::SDM);
    for apic in &mut apics {
        apic.host_write_apic_base(apic.apic_base() | 0xC00).unwrap();
        apic.wrmsr(0x80F, 0x1FF, 0).unwrap();
    }
    apics
}

fn write(apic: &mut LocalApic, offset: u32, value: u32) {
    apic.mmio_write(offset.into(), &value.to_le_bytes(), 0);
}

fn msg(vector: u8, mode: DestinationMode, destination: u32) -> Interrupt {
    Interrupt { vector, destination_mode: mode, destination, level: true, ..Interrupt::default() }
}

fn delivered(bus: ApicBus, apics: &mut [LocalApic], irq: &Interrupt, source: Option<usize>) -> Vec<usize> {
    bus.deliver(apics, irq, source).unwrap().accepted.iter().collect()
}

/// The vector each vCPU would take now (`None` if none).
fn pending(apics: &[LocalApic]) -> Vec<Option<u8>> {
    apics.iter().map(LocalApic::pending_interrupt).collect()
}

#[test]
fn physical_destination_reaches_the_apic_with_that_id() {
    let mut apics = apics(&[0, 1, 2, 3], Quirks::SDM);
    let bus = ApicBus::default();
    assert_eq!(delivered(bus, &mut apics, &msg(0x30, DestinationMode::Physical, 2), None), [2]);
    assert_eq!(pending(&apics), [None, None, Some(0x30), None]);
    // No such APIC: nobody, and the delivery says so (KVM's fast path answers 0).
    let d = bus.deliver(&mut apics, &msg(0x31, DestinationMode::Physical, 9), None).unwrap();
    assert!(d.accepted.is_empty() && d.no_destination);
    let kvm = ApicBus::new(BusQuirks::KVM);
    let d = kvm.deliver(&mut apics, &msg(0x31, DestinationMode::Physical, 9), None).unwrap();
    assert_eq!((d.no_destination, d.kvm_result), (true, 0));
    let d = kvm.deliver(&mut apics, &msg(0x32, DestinationMode::Physical, 1), None).unwrap();
    assert_eq!(d.kvm_result, 1);
    // With aliased IDs KVM has no map: its slow path answers -1 for a miss.
    write(&mut apics[3], regs::ID, 2 << 24);
    let d = kvm.deliver(&mut apics, &msg(0x33, DestinationMode::Physical, 9), None).unwrap();
    assert_eq!(d.kvm_result, -1);
}

#[test]
fn aliased_xapic_ids_all_receive() {
    // kvm-unit-tests `test_aliased_xapic_physical_ipi`.
    let mut apics = apics(&[0, 1], Quirks::SDM);
    write(&mut apics[1], regs::ID, 0);
    assert_eq!(
        delivered(ApicBus::default(), &mut apics, &msg(0x40, DestinationMode::Physical, 0), None),
        [0, 1]
    );
}

#[test]
fn broadcast_reaches_everyone_in_both_modes() {
    let mut apics = apics(&[0, 1, 2], Quirks::SDM);
    let bus = ApicBus::default();
    assert_eq!(delivered(bus, &mut apics, &msg(0x30, DestinationMode::Physical, 0xFF), None), [0, 1, 2]);
    assert_eq!(delivered(bus, &mut apics, &msg(0x31, DestinationMode::Logical, 0xFF), None), [0, 1, 2]);
    let mut x2 = x2apics(&[0, 1, 2]);
    assert_eq!(
        delivered(bus, &mut x2, &msg(0x30, DestinationMode::Physical, 0xFFFF_FFFF), Some(0)),
        [0, 1, 2]
    );
}

#[test]
fn logical_flat_matches_any_common_ldr_bit() {
    let mut apics = apics(&[0, 1, 2, 3], Quirks::SDM);
    for (i, apic) in apics.iter_mut().enumerate() {
        write(apic, regs::LDR, 1 << (24 + i)); // Linux flat mode: one bit per CPU
    }
    let bus = ApicBus::default();
    assert_eq!(delivered(bus, &mut apics, &msg(0x30, DestinationMode::Logical, 0b1010), None), [1, 3]);
    assert_eq!(
        delivered(bus, &mut apics, &msg(0x31, DestinationMode::Logical, 0b0000), None),
        Vec::<usize>::new()
    );
}

#[test]
fn logical_cluster_matches_cluster_and_member_bits() {
    let mut apics = apics(&[0, 1, 2, 3], Quirks::SDM);
    // Clusters 1 and 2, members 1 and 2 each.
    for (apic, ldr) in apics.iter_mut().zip([0x11, 0x12, 0x21, 0x22]) {
        write(apic, regs::DFR, 0x0FFF_FFFF);
        write(apic, regs::LDR, ldr << 24);
    }
    let bus = ApicBus::default();
    assert_eq!(delivered(bus, &mut apics, &msg(0x30, DestinationMode::Logical, 0x23), None), [2, 3]);
    assert_eq!(delivered(bus, &mut apics, &msg(0x31, DestinationMode::Logical, 0x12), None), [1]);
}

#[test]
fn x2apic_logical_cluster_matches_the_derived_ldr() {
    // IDs 0x10–0x13 are cluster 1, bits 0–3.
    let mut apics = x2apics(&[0x10, 0x11, 0x12, 0x13, 0x20]);
    let bus = ApicBus::default();
    assert_eq!(
        delivered(bus, &mut apics, &msg(0x30, DestinationMode::Logical, 0x0001_0005), Some(4)),
        [0, 2]
    );
    // 0xFF to an x2APIC is cluster 0, CPUs 0-7 (no one here) — unless KVM's broadcast quirk.
    assert_eq!(
        delivered(bus, &mut apics, &msg(0x31, DestinationMode::Logical, 0xFF), None),
        Vec::<usize>::new()
    );
    let kvm = ApicBus::new(BusQuirks::KVM);
    assert_eq!(delivered(kvm, &mut apics, &msg(0x32, DestinationMode::Logical, 0xFF), None), [0, 1, 2, 3, 4]);
    // The quirk applies to IOAPIC/MSI messages, not IPIs.
    assert_eq!(
        delivered(kvm, &mut apics, &msg(0x33, DestinationMode::Logical, 0xFF), Some(0)),
        Vec::<usize>::new()
    );
}

#[test]
fn shorthands_resolve_against_the_source() {
    let mut apics = apics(&[0, 1, 2], Quirks::SDM);
    let bus = ApicBus::default();
    let with = |shorthand| Interrupt { shorthand, ..msg(0x40, DestinationMode::Physical, 0) };
    assert_eq!(delivered(bus, &mut apics, &with(Shorthand::ToSelf), Some(1)), [1]);
    assert_eq!(delivered(bus, &mut apics, &with(Shorthand::AllIncludingSelf), Some(1)), [0, 1, 2]);
    assert_eq!(delivered(bus, &mut apics, &with(Shorthand::AllExcludingSelf), Some(1)), [0, 2]);
    assert_eq!(bus.deliver(&mut apics, &with(Shorthand::ToSelf), Some(7)), Err(BusError::NoSuchSource(7)));
}

#[test]
fn a_globally_disabled_apic_is_never_addressed() {
    let mut apics = apics(&[0, 1], Quirks::SDM);
    apics[1].wrmsr(regs::IA32_APIC_BASE, 0xFEE0_0000, 0).unwrap();
    let nmi = Interrupt { delivery_mode: DeliveryMode::Nmi, ..msg(0, DestinationMode::Physical, 0xFF) };
    assert_eq!(delivered(ApicBus::default(), &mut apics, &nmi, None), [0]);
}

#[test]
fn a_software_disabled_apic_is_addressed_but_refuses_fixed_interrupts() {
    let mut apics = apics(&[0, 1], Quirks::SDM);
    write(&mut apics[1], regs::SVR, 0xFF);
    let d = ApicBus::default().deliver(&mut apics, &msg(0x50, DestinationMode::Physical, 1), None).unwrap();
    assert!(d.accepted.is_empty());
    assert!(!d.no_destination);
}

#[test]
fn lowest_priority_goes_to_the_lowest_arbitration_priority() {
    let mut apics = apics(&[0, 1, 2], Quirks::SDM);
    for (apic, tpr) in apics.iter_mut().zip([0x40, 0x20, 0x30]) {
        write(apic, regs::TPR, tpr);
    }
    let lowest = Interrupt {
        delivery_mode: DeliveryMode::LowestPriority,
        ..msg(0x60, DestinationMode::Logical, 0xFF)
    };
    assert_eq!(delivered(ApicBus::default(), &mut apics, &lowest, None), [1]);
    // vCPU 1 now has 0x60 pending, which raises its APR to class 6: the next one goes to 2.
    let second = Interrupt { vector: 0x51, ..lowest };
    assert_eq!(delivered(ApicBus::default(), &mut apics, &second, None), [2]);
    // Ties go to the lowest vCPU index.
    let mut fresh = super::tests::apics(&[0, 1, 2], Quirks::SDM);
    write(&mut fresh[0], regs::TPR, 0x40);
    assert_eq!(delivered(ApicBus::default(), &mut fresh, &lowest, None), [1]);
}

#[test]
fn lowest_priority_prefers_the_focus_processor() {
    let mut apics = apics(&[0, 1], Quirks::SDM);
    write(&mut apics[0], regs::TPR, 0x80); // vCPU 0 would lose arbitration
    assert!(apics[0].accept(&msg(0x50, DestinationMode::Physical, 0)));
    let lowest = Interrupt {
        delivery_mode: DeliveryMode::LowestPriority,
        ..msg(0x50, DestinationMode::Logical, 0xFF)
    };
    assert_eq!(
        delivered(ApicBus::default(), &mut apics, &lowest, None),
        [0],
        "0x50 is already pending there"
    );
    // With focus checking disabled (SVR bit 9) arbitration decides.
    write(&mut apics[0], regs::SVR, 0x3FF);
    assert_eq!(delivered(ApicBus::default(), &mut apics, &lowest, None), [1]);
}

#[test]
fn kvm_hashes_the_vector_over_the_candidates() {
    let mut apics = apics(&[0, 1, 2], Quirks::KVM);
    let bus = ApicBus::new(BusQuirks::KVM);
    for (vector, target) in [(0x60u8, 0x60usize % 3), (0x61, 0x61 % 3), (0x62, 0x62 % 3)] {
        let irq = Interrupt {
            delivery_mode: DeliveryMode::LowestPriority,
            ..msg(vector, DestinationMode::Logical, 0xFF)
        };
        // KVM degrades a physical broadcast to fixed, but this one is logical.
        assert_eq!(delivered(bus, &mut apics, &irq, None), [target], "vector {vector:#x}");
    }
    // Software-disabled APICs are not candidates.
    write(&mut apics[0], regs::SVR, 0xFF);
    let irq = Interrupt {
        delivery_mode: DeliveryMode::LowestPriority,
        ..msg(0x60, DestinationMode::Logical, 0xFF)
    };
    assert_eq!(delivered(bus, &mut apics, &irq, None), [[1, 2][0x60 % 2]]);
}

#[test]
fn kvm_result_is_minus_one_when_its_slow_path_addresses_nobody() {
    // A lowest-priority broadcast with no software-enabled candidate: KVM's slow path finds
    // nobody (-1), so its IOAPIC keeps Remote IRR of a level entry.
    let mut apics = apics(&[0, 1], Quirks::KVM);
    for apic in &mut apics {
        write(apic, regs::SVR, 0xFF);
    }
    let irq = Interrupt {
        delivery_mode: DeliveryMode::LowestPriority,
        ..msg(0x30, DestinationMode::Logical, 0xFF)
    };
    let d = ApicBus::new(BusQuirks::KVM).deliver(&mut apics, &irq, None).unwrap();
    assert!(d.no_destination);
    assert_eq!(d.kvm_result, -1);
    // A fixed broadcast to software-disabled APICs addresses them, none takes it: 0.
    let d = ApicBus::new(BusQuirks::KVM)
        .deliver(&mut apics, &msg(0x31, DestinationMode::Physical, 0xFF), None)
        .unwrap();
    assert!(!d.no_destination);
    assert_eq!(d.kvm_result, 0);
}

#[test]
fn kvm_hashes_a_logical_multicast_over_the_logical_id_bits() {
    // Flat mode, vCPU 0 has LDR bit 1 and vCPU 1 bit 0: KVM's map orders the candidates by
    // bit, so vector 0x30 (0x30 % 2 = 0) picks bit 0, which is vCPU 1.
    let mut apics = apics(&[0, 1], Quirks::KVM);
    write(&mut apics[0], regs::LDR, 0x02 << 24);
    write(&mut apics[1], regs::LDR, 0x01 << 24);
    let irq = Interrupt {
        delivery_mode: DeliveryMode::LowestPriority,
        ..msg(0x30, DestinationMode::Logical, 0x03)
    };
    assert_eq!(delivered(ApicBus::new(BusQuirks::KVM), &mut apics, &irq, None), [1]);
    // A bit that no APIC holds drops the message (fast path: 0).
    let irq = Interrupt {
        delivery_mode: DeliveryMode::LowestPriority,
        ..msg(0x31, DestinationMode::Logical, 0x06)
    };
    let d = ApicBus::new(BusQuirks::KVM).deliver(&mut apics, &irq, None).unwrap();
    assert_eq!((d.count(), d.kvm_result), (0, 0), "0x31 % 2 = 1 picks bit 2: nobody");
}

#[test]
fn kvm_sends_a_lowest_priority_x2apic_broadcast_to_one_vcpu() {
    let mut apics = x2apics(&[0, 1, 2, 3]);
    let irq = Interrupt {
        delivery_mode: DeliveryMode::LowestPriority,
        ..msg(0x42, DestinationMode::Physical, X2APIC_BROADCAST)
    };
    assert_eq!(delivered(ApicBus::new(BusQuirks::KVM), &mut apics, &irq, Some(0)), [0x42 % 4]);
}

#[test]
fn kvm_delivers_a_lowest_priority_physical_broadcast_to_everyone() {
    let mut apics = apics(&[0, 1, 2], Quirks::KVM);
    let irq = Interrupt {
        delivery_mode: DeliveryMode::LowestPriority,
        ..msg(0x60, DestinationMode::Physical, 0xFF)
    };
    assert_eq!(delivered(ApicBus::new(BusQuirks::KVM), &mut apics, &irq, None), [0, 1, 2]);
    assert_eq!(delivered(ApicBus::default(), &mut apics, &Interrupt { vector: 0x61, ..irq }, None).len(), 1);
}

#[test]
fn an_msi_redirection_hint_picks_one_destination() {
    let mut apics = apics(&[0, 1], Quirks::SDM);
    let irq = Interrupt { redirection_hint: true, ..msg(0x60, DestinationMode::Logical, 0xFF) };
    assert_eq!(delivered(ApicBus::default(), &mut apics, &irq, None), [0]);
}

#[test]
fn an_xapic_sees_the_low_8_bits_but_kvm_compares_the_x2apic_id() {
    // vCPU 1 has x2APIC ID 0x101 but is still in xAPIC mode (xAPIC ID 0x01).
    let mut apics = apics(&[0, 0x101], Quirks::SDM);
    let irq = msg(0x40, DestinationMode::Physical, 0x101);
    assert_eq!(delivered(ApicBus::default(), &mut apics, &irq, Some(0)), [1], "0x101 & 0xFF = 1");
    let irq = msg(0x41, DestinationMode::Physical, 0x101);
    assert_eq!(delivered(ApicBus::new(BusQuirks::KVM), &mut apics, &irq, Some(0)), [1], "the hotplug hack");
    let irq = msg(0x42, DestinationMode::Physical, 0x201);
    assert_eq!(delivered(ApicBus::new(BusQuirks::KVM), &mut apics, &irq, Some(0)), Vec::<usize>::new());
}

#[test]
fn routing_scales_to_256_x2apic_vcpus() {
    let ids: Vec<u32> = (0..256).collect();
    let mut apics = x2apics(&ids);
    let bus = ApicBus::default();
    assert_eq!(delivered(bus, &mut apics, &msg(0x40, DestinationMode::Physical, 255), None), [255]);
    // Cluster 15 (IDs 0xF0–0xFF), members 0 and 15.
    assert_eq!(
        delivered(bus, &mut apics, &msg(0x41, DestinationMode::Logical, 0x000F_8001), None),
        [240, 255]
    );
    let all: Vec<usize> = (0..256).collect();
    assert_eq!(delivered(bus, &mut apics, &msg(0x42, DestinationMode::Physical, 0xFFFF_FFFF), Some(3)), all);
    assert_eq!(
        ApicBus::default().deliver(
            &mut std::vec![LocalApic::default(); MAX_VCPUS + 1],
            &msg(0, DestinationMode::Physical, 0),
            None
        ),
        Err(BusError::TooManyApics(MAX_VCPUS + 1))
    );
}

#[test]
fn an_ipi_reaches_its_target_through_the_bus() {
    // The whole path: vCPU 0 writes its ICR, the bus delivers, vCPU 2 takes the interrupt.
    let mut apics = apics(&[0, 1, 2], Quirks::SDM);
    write(&mut apics[0], regs::ICR_HIGH, 2 << 24);
    let effects = apics[0].mmio_write(regs::ICR_LOW.into(), &0x4055u32.to_le_bytes(), 0);
    let ipi = effects.ipi.unwrap();
    assert_eq!(delivered(ApicBus::default(), &mut apics, &ipi, Some(0)), [2]);
    assert_eq!(pending(&apics), [None, None, Some(0x55)]);
}

#[test]
fn a_level_triggered_message_sets_tmr_at_the_target() {
    let mut apics = apics(&[0, 1], Quirks::SDM);
    let irq = Interrupt { trigger_mode: TriggerMode::Level, ..msg(0x70, DestinationMode::Physical, 1) };
    delivered(ApicBus::default(), &mut apics, &irq, None);
    assert!(apics[1].state().tmr.contains(0x70));
}

#[test]
fn destinations_report_without_delivering() {
    let apics = apics(&[0, 1, 2], Quirks::SDM);
    let set = ApicBus::default().destinations(&apics, &msg(0x40, DestinationMode::Physical, 0xFF), None);
    assert!(set.iter().eq([0, 1, 2]));
    assert_eq!(pending(&apics), [None, None, None]);
}
