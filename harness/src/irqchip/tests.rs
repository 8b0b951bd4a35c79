use super::*;

const TSC_HZ: u64 = 2_000_000_000;

fn chip(profile: Profile, vcpus: usize, owns_lapic: bool) -> Irqchip {
    Irqchip::new(IrqchipConfig { profile, vcpus, owns_tsc: true, owns_lapic, tsc_hz: TSC_HZ })
}

fn at(ns: u64) -> Now {
    Now { ns, tsc: ns * 2 }
}

fn lapic_write(c: &mut Irqchip, vcpu: usize, offset: u64, value: u32) {
    assert!(c.mmio_write(vcpu, 0xFEE0_0000 + offset, &value.to_le_bytes(), at(0)));
}

fn ioapic_write(c: &mut Irqchip, index: u32, value: u32) {
    assert!(c.mmio_write(0, IOAPIC_PAGE, &index.to_le_bytes(), at(0)));
    assert!(c.mmio_write(0, IOAPIC_PAGE + 0x10, &value.to_le_bytes(), at(0)));
}

fn ioapic_read(c: &mut Irqchip, index: u32) -> u32 {
    assert!(c.mmio_write(0, IOAPIC_PAGE, &index.to_le_bytes(), at(0)));
    let mut data = [0u8; 4];
    assert!(c.mmio_read(0, IOAPIC_PAGE + 0x10, &mut data, at(0)));
    u32::from_le_bytes(data)
}

use crate::scenario::IOAPIC_PAGE;

#[test]
fn pit_edges_reach_the_pic_as_irq0() {
    let mut c = chip(Profile::Kvm, 1, false);
    let t0 = Now { ns: 1_000_000, tsc: 0 };
    for (port, byte) in [(0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01), (0x21, 0x00)] {
        assert!(c.pio_write(port, &[byte], t0)); // ICW1-4 (base 0x30), unmask all
    }
    for byte in [0x34, 0x9c, 0x2e] {
        // counter 0 mode 2, count 11932: the control word raises OUT0 once
        assert!(c.pio_write(if byte == 0x34 { 0x43 } else { 0x40 }, &[byte], t0));
    }
    assert_eq!(c.pending_vector(0), Some(0x30));
    assert_eq!(c.acknowledge(0), 0x30);
    assert!(c.pio_write(0x20, &[0x20], t0)); // EOI
    let deadline = c.next_deadline(0, t0).unwrap();
    assert_eq!(deadline - t0.ns, 10_000_151);
    c.advance(Now { ns: deadline, tsc: 0 });
    assert_eq!(c.pending_vector(0), Some(0x30));
}

#[test]
fn tsc_msrs_couple_as_the_sdm_says() {
    let mut c = chip(Profile::Kvm, 1, true);
    let at = |tsc| Now { ns: 0, tsc };
    assert!(c.host_set_tsc(0, 1000, at(500)));
    assert_eq!(c.rdmsr(0, 0x10, at(600)), MsrAnswer::Value(1100));
    assert_eq!(c.wrmsr(0, 0x3B, 50, at(600)), MsrAnswer::Value(0)); // TSC moves by 50
    assert_eq!(c.rdmsr(0, 0x10, at(600)), MsrAnswer::Value(1150));
    assert_eq!(c.wrmsr(0, 0x10, 2150, at(600)), MsrAnswer::Value(0)); // ADJUST moves by 1000
    assert_eq!(c.rdmsr(0, 0x3B, at(700)), MsrAnswer::Value(1050));
    assert_eq!(c.rdmsr(0, 0x1234, at(700)), MsrAnswer::NotMine);
}

#[test]
fn without_tsc_ownership_the_msrs_are_not_ours() {
    let mut c = Irqchip::new(IrqchipConfig {
        profile: Profile::Kvm,
        vcpus: 1,
        owns_tsc: false,
        owns_lapic: false,
        tsc_hz: TSC_HZ,
    });
    assert_eq!(c.rdmsr(0, 0x10, Now { ns: 0, tsc: 0 }), MsrAnswer::NotMine);
    assert_eq!(c.rdmsr(0, 0x802, Now { ns: 0, tsc: 0 }), MsrAnswer::NotMine);
}

#[test]
fn an_ioapic_level_interrupt_reaches_the_lapic_and_its_eoi_clears_remote_irr() {
    let mut c = chip(Profile::Kvm, 1, true);
    lapic_write(&mut c, 0, 0xF0, 0x1FF); // SVR: software enable
    ioapic_write(&mut c, 0x10 + 2 * 17, 0x0000_8051); // pin 17: level, vector 0x51, unmasked
    assert!(c.set_irq(17, true, at(0)));
    assert_eq!(c.pending_vector(0), Some(0x51));
    assert_eq!(c.acknowledge(0), 0x51);
    assert_eq!(ioapic_read(&mut c, 0x10 + 2 * 17), 0x0000_C051, "Remote IRR set");
    assert!(c.set_irq(17, false, at(0)));
    lapic_write(&mut c, 0, 0xB0, 0); // EOI: broadcast, since TMR has 0x51
    assert_eq!(ioapic_read(&mut c, 0x10 + 2 * 17), 0x0000_8051, "Remote IRR cleared");
    assert_eq!(c.pending_vector(0), None);
}

#[test]
fn a_level_message_to_a_software_disabled_lapic_leaves_remote_irr_clear_on_kvm() {
    let mut c = chip(Profile::Kvm, 1, true);
    ioapic_write(&mut c, 0x10 + 2 * 18, 0x0000_8052);
    assert!(c.set_irq(18, true, at(0)));
    assert_eq!(ioapic_read(&mut c, 0x10 + 2 * 18), 0x0000_8052);
    let mut sdm = chip(Profile::Datasheet, 1, true);
    ioapic_write(&mut sdm, 0x10 + 2 * 18, 0x0000_8052);
    assert!(sdm.set_irq(18, true, at(0)));
    assert_eq!(ioapic_read(&mut sdm, 0x10 + 2 * 18), 0x0000_C052);
}

#[test]
fn without_lapic_models_ioapic_messages_leave_as_msis_with_level_routes() {
    let mut c = chip(Profile::Kvm, 1, false);
    ioapic_write(&mut c, 0x10 + 2 * 19, 0x0000_8053);
    let routes = c.take_route_update().unwrap();
    assert_eq!(routes, vec![(19, Msi { pin: 19, address: 0xFEE0_0000, data: 0xC053 })]);
    assert_eq!(c.take_route_update(), None, "unchanged");
    assert!(c.set_irq(19, true, at(0)));
    assert_eq!(c.take_msis(), vec![Msi { pin: 19, address: 0xFEE0_0000, data: 0xC053 }]);
    c.ioapic_eoi(0x53, at(0)); // still high: sent again
    assert_eq!(c.take_msis().len(), 1);
    c.msi_result(19, 0);
    assert_eq!(ioapic_read(&mut c, 0x10 + 2 * 19), 0x0000_8053, "nobody took it");
}

#[test]
fn an_ipi_reaches_the_other_vcpu_and_wakes_it() {
    let mut c = chip(Profile::Kvm, 2, true);
    lapic_write(&mut c, 0, 0xF0, 0x1FF);
    lapic_write(&mut c, 1, 0xF0, 0x1FF);
    lapic_write(&mut c, 0, 0x310, 0x0100_0000); // ICR high: APIC ID 1
    lapic_write(&mut c, 0, 0x300, 0x0000_0070); // fixed, physical, vector 0x70
    assert_eq!(c.take_wakeups(), vec![1]);
    assert_eq!(c.pending_vector(1), Some(0x70));
    assert_eq!(c.pending_vector(0), None);
}

#[test]
fn cr8_sync_keeps_the_tpr_subclass_unless_cr8_changed() {
    let mut c = chip(Profile::Kvm, 1, true);
    lapic_write(&mut c, 0, 0x80, 0x25);
    assert_eq!(c.cr8(0), Some(2));
    c.sync_cr8(0, 2);
    assert_eq!(c.lapics[0].tpr(), 0x25);
    c.sync_cr8(0, 6);
    assert_eq!(c.lapics[0].tpr(), 0x60);
}

#[test]
fn the_lapic_timer_sets_the_deadline_and_fires() {
    let mut c = chip(Profile::Kvm, 1, true);
    lapic_write(&mut c, 0, 0xF0, 0x1FF);
    lapic_write(&mut c, 0, 0x3E0, 0xB); // divide by 1
    lapic_write(&mut c, 0, 0x320, 0x40); // one-shot, vector 0x40
    lapic_write(&mut c, 0, 0x380, 1_000_000); // 1 ms at 1 GHz
    assert_eq!(c.next_deadline(0, at(0)), Some(1_000_000));
    c.advance(at(1_000_000));
    assert_eq!(c.pending_vector(0), Some(0x40));
}

#[test]
fn the_portable_ioapic_encoding_is_the_models_kvm_conversion() {
    let mut c = chip(Profile::Kvm, 1, true);
    ioapic_write(&mut c, 0x10 + 2 * 3, 0x0001_8033); // masked level pin 3
    ioapic_write(&mut c, 0x11 + 2 * 3, 0xFF00_0000);
    ioapic_write(&mut c, 0x00, 0x0A00_0000); // ID 10
    assert!(c.set_irq(3, true, at(0)));
    assert!(c.set_irq(7, true, at(0)));
    let state = c.ioapic.state();
    assert_eq!(crate::trace::ioapic_state_bytes(&state).to_vec(), apic::ioapic_bytes(&state));
}
