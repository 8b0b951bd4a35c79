#![allow(unused_must_use)] // `out` returns the effects for the tests that check them.

//! Behaviour tests of the PIC pair: each checks what a guest would see (vectors, their
//! order, register reads), not only register bytes.

use super::*;
use regs::*;

/// Master vector base used by Linux (`ISA_IRQ_VECTOR(0)`).
const MBASE: u8 = 0x30;
/// Slave vector base used by Linux.
const SBASE: u8 = 0x38;

fn out(pic: &mut Pic, port: u16, value: u8) -> Effects {
    let effects = pic.write(port, value);
    assert_eq!(effects.invalid, None, "write {value:#04x} to {port:#x}");
    effects
}

fn inb(pic: &mut Pic, port: u16) -> u8 {
    pic.read(port).0
}

/// Linux's `init_8259A` sequence (`arch/x86/kernel/i8259.c`), both chips unmasked at the end.
fn linux_init(pic: &mut Pic) {
    out(pic, MASTER_DATA, 0xFF); // OCW1: mask all of the master
    out(pic, SLAVE_DATA, 0xFF); // OCW1: mask all of the slave
    out(pic, MASTER_COMMAND, 0x11); // ICW1: edge, cascade, ICW4 needed
    out(pic, MASTER_DATA, MBASE); // ICW2: IR0-7 at vectors 0x30-0x37
    out(pic, MASTER_DATA, 0x04); // ICW3: a slave on IR2
    out(pic, MASTER_DATA, 0x01); // ICW4: 8086 mode, normal EOI
    out(pic, SLAVE_COMMAND, 0x11); // ICW1: edge, cascade, ICW4 needed
    out(pic, SLAVE_DATA, SBASE); // ICW2: IR0-7 at vectors 0x38-0x3f
    out(pic, SLAVE_DATA, 0x02); // ICW3: slave ID 2
    out(pic, SLAVE_DATA, 0x01); // ICW4: 8086 mode, normal EOI
    out(pic, MASTER_DATA, 0x00); // OCW1: unmask the master
    out(pic, SLAVE_DATA, 0x00); // OCW1: unmask the slave
}

/// Linux's `mask_and_ack_8259A` EOI: specific EOI to the slave, then to master IR2.
fn linux_eoi(pic: &mut Pic, irq: u8) -> u16 {
    if irq >= 8 {
        out(pic, SLAVE_COMMAND, 0x60 | (irq & 7)).eoi | out(pic, MASTER_COMMAND, 0x62).eoi
    } else {
        out(pic, MASTER_COMMAND, 0x60 | irq).eoi
    }
}

fn linux_pic(quirks: Quirks) -> Pic {
    let mut pic = Pic::new(quirks);
    linux_init(&mut pic);
    pic
}

/// Acknowledges and returns the IRQ line, asserting the vector matches Linux's bases.
fn take(pic: &mut Pic) -> u8 {
    let expected = pic.pending_vector();
    let ack = pic.acknowledge();
    assert_eq!(Some(ack.vector), expected, "pending_vector predicted the acknowledge");
    assert!(!ack.spurious, "unexpected spurious {ack:?}");
    let base = if ack.irq >= 8 { SBASE } else { MBASE };
    assert_eq!(ack.vector, base | (ack.irq & 7));
    ack.irq
}

/// Takes every pending interrupt, EOI-ing each at once, and returns the IRQ order.
fn drain(pic: &mut Pic) -> Vec<u8> {
    let mut order = Vec::new();
    while pic.intr() {
        let irq = take(pic);
        linux_eoi(pic, irq);
        order.push(irq);
        assert!(order.len() <= 32, "interrupt storm: {order:?}");
    }
    order
}

extern crate std;
use std::vec::Vec;

const BOTH: [Quirks; 2] = [Quirks::DATASHEET, Quirks::KVM];

// ----- initialisation ------------------------------------------------------------------

#[test]
fn linux_init_then_every_line_delivers_its_vector_in_fully_nested_order() {
    for quirks in BOTH {
        let mut pic = linux_pic(quirks);
        for irq in (0..16).filter(|&irq| irq != 2) {
            assert_eq!(pic.pulse_irq(irq), Ok(LineStatus::Accepted));
        }
        // IR2 (the slave's IRQ8-15) ranks between IRQ1 and IRQ3.
        assert_eq!(drain(&mut pic), [0, 1, 8, 9, 10, 11, 12, 13, 14, 15, 3, 4, 5, 6, 7], "{quirks:?}");
        assert_eq!(pic.state().master.isr | pic.state().slave.isr, 0);
    }
}

#[test]
fn linux_specific_eoi_of_slave_then_master_ir2_ends_both_and_notifies_the_line() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(12).unwrap();
    assert_eq!(take(&mut pic), 12);
    assert_eq!(pic.state().slave.isr, bit(4));
    assert_eq!(pic.state().master.isr, bit(2));
    let eoi = linux_eoi(&mut pic, 12);
    assert_eq!(eoi, 1 << 12 | 1 << 2);
    assert_eq!((pic.state().slave.isr, pic.state().master.isr), (0, 0));
}

#[test]
fn windows_hal_init_with_all_masked_then_specific_eois() {
    // ReactOS/Windows HAL `HalpInitializeLegacyPICs`: base 0x30/0x38, mask everything
    // after each chip's ICW4, then unmask lines one by one.
    let mut pic = Pic::default();
    out(&mut pic, MASTER_COMMAND, 0x11); // ICW1: edge, cascade, interval 8, ICW4 needed
    out(&mut pic, MASTER_DATA, 0x30); // ICW2: vector base 0x30
    out(&mut pic, MASTER_DATA, 0x04); // ICW3: slave on IR2
    out(&mut pic, MASTER_DATA, 0x01); // ICW4: 8086 mode, normal EOI, not buffered, no SFNM
    out(&mut pic, MASTER_DATA, 0xFF); // OCW1: mask all
    out(&mut pic, SLAVE_COMMAND, 0x11); // ICW1
    out(&mut pic, SLAVE_DATA, 0x38); // ICW2: vector base 0x38
    out(&mut pic, SLAVE_DATA, 0x02); // ICW3: slave ID 2
    out(&mut pic, SLAVE_DATA, 0x01); // ICW4
    out(&mut pic, SLAVE_DATA, 0xFF); // OCW1: mask all
    pic.pulse_irq(1).unwrap();
    pic.pulse_irq(14).unwrap();
    assert!(!pic.intr(), "everything is masked");
    out(&mut pic, MASTER_DATA, !(bit(1) | bit(2))); // unmask keyboard and cascade
    out(&mut pic, SLAVE_DATA, !bit(6)); // unmask IRQ14
    assert_eq!(pic.acknowledge().vector, 0x31);
    out(&mut pic, MASTER_COMMAND, 0x61); // specific EOI IRQ1
    assert_eq!(pic.acknowledge().vector, 0x3E);
    out(&mut pic, SLAVE_COMMAND, 0x66); // specific EOI IRQ14 on the slave
    out(&mut pic, MASTER_COMMAND, 0x62); // specific EOI of the cascade
    assert!(!pic.intr());
}

#[test]
fn init_sequence_states_follow_ic4_and_sngl() {
    let mut pic = Pic::default();
    out(&mut pic, MASTER_COMMAND, 0x11); // ICW1: IC4, cascade
    assert_eq!(pic.state().master.init_state, InitState::Icw2);
    out(&mut pic, MASTER_DATA, 0x20);
    assert_eq!(pic.state().master.init_state, InitState::Icw3);
    out(&mut pic, MASTER_DATA, 0x04);
    assert_eq!(pic.state().master.init_state, InitState::Icw4);
    out(&mut pic, MASTER_DATA, 0x01);
    assert_eq!(pic.state().master.init_state, InitState::Ready);

    out(&mut pic, MASTER_COMMAND, 0x10); // ICW1: no ICW4, cascade
    out(&mut pic, MASTER_DATA, 0x20); // ICW2
    out(&mut pic, MASTER_DATA, 0x04); // ICW3, the last one
    assert_eq!(pic.state().master.init_state, InitState::Ready);
    out(&mut pic, MASTER_DATA, 0x5A); // now OCW1
    assert_eq!(inb(&mut pic, MASTER_DATA), 0x5A);
}

#[test]
fn single_mode_skips_icw3_in_the_datasheet_profile_but_not_in_kvm() {
    let mut pic = Pic::default();
    out(&mut pic, MASTER_COMMAND, 0x13); // ICW1: IC4, SNGL
    out(&mut pic, MASTER_DATA, 0x20); // ICW2
    assert_eq!(pic.state().master.init_state, InitState::Icw4);
    out(&mut pic, MASTER_DATA, 0x01); // ICW4
    assert_eq!(pic.state().master.init_state, InitState::Ready);

    let mut kvm = Pic::new(Quirks::KVM);
    out(&mut kvm, MASTER_COMMAND, 0x13);
    out(&mut kvm, MASTER_DATA, 0x20);
    assert_eq!(kvm.state().master.init_state, InitState::Icw3);
}

#[test]
fn single_mode_master_acknowledges_ir2_with_its_own_vector() {
    let mut pic = Pic::default();
    out(&mut pic, MASTER_COMMAND, 0x12); // ICW1: SNGL, no ICW4
    out(&mut pic, MASTER_DATA, 0x40); // ICW2, the last one
    pic.pulse_irq(2).unwrap();
    let ack = pic.acknowledge();
    assert_eq!((ack.vector, ack.irq, ack.spurious), (0x42, 2, false));
}

#[test]
fn icw1_without_ic4_zeroes_the_icw4_modes() {
    for quirks in BOTH {
        let mut pic = Pic::new(quirks);
        out(&mut pic, MASTER_COMMAND, 0x11);
        out(&mut pic, MASTER_DATA, 0x20);
        out(&mut pic, MASTER_DATA, 0x04);
        out(&mut pic, MASTER_DATA, 0x13); // ICW4: 8086, AEOI, SFNM
        assert!(pic.state().master.auto_eoi && pic.state().master.special_fully_nested_mode);
        out(&mut pic, MASTER_COMMAND, 0x10); // ICW1 without IC4
        assert!(!pic.state().master.auto_eoi && !pic.state().master.special_fully_nested_mode, "{quirks:?}");
    }
}

#[test]
fn icw1_clears_mask_rotation_special_mask_and_selects_irr() {
    for quirks in BOTH {
        let mut pic = linux_pic(quirks);
        out(&mut pic, MASTER_DATA, 0xF0); // OCW1
        out(&mut pic, MASTER_COMMAND, 0xC3); // OCW2: set priority, IR3 lowest
        out(&mut pic, MASTER_COMMAND, 0x6B); // OCW3: set special mask, read ISR
        out(&mut pic, MASTER_COMMAND, 0x11); // ICW1
        let m = pic.state().master;
        assert_eq!(
            (m.imr, m.priority_add, m.special_mask, m.read_reg_select),
            (0, 0, false, false),
            "{quirks:?}"
        );
    }
}

#[test]
fn icw1_restarts_initialisation_from_the_middle_of_a_sequence() {
    let mut pic = Pic::default();
    out(&mut pic, MASTER_COMMAND, 0x11);
    out(&mut pic, MASTER_DATA, 0x20); // ICW2, then abandon
    out(&mut pic, MASTER_COMMAND, 0x11); // ICW1 again
    out(&mut pic, MASTER_DATA, 0x48); // ICW2 of the new sequence
    out(&mut pic, MASTER_DATA, 0x04);
    out(&mut pic, MASTER_DATA, 0x01);
    pic.pulse_irq(5).unwrap();
    assert_eq!(pic.acknowledge().vector, 0x4D);
}

#[test]
fn icw2_ignores_the_low_three_bits() {
    let mut pic = Pic::default();
    out(&mut pic, MASTER_COMMAND, 0x11);
    out(&mut pic, MASTER_DATA, 0x37); // T2:T0 are not part of the base
    out(&mut pic, MASTER_DATA, 0x04);
    out(&mut pic, MASTER_DATA, 0x01);
    pic.pulse_irq(1).unwrap();
    assert_eq!(pic.acknowledge().vector, 0x31);
}

#[test]
fn data_port_reads_the_mask_even_during_initialisation() {
    let mut pic = Pic::default();
    out(&mut pic, MASTER_DATA, 0x77);
    out(&mut pic, MASTER_COMMAND, 0x11); // ICW1 clears IMR
    out(&mut pic, MASTER_DATA, 0x20); // ICW2 is not the mask
    assert_eq!(inb(&mut pic, MASTER_DATA), 0x00);
}

#[test]
fn datasheet_icw1_ends_service_and_drops_edge_requests_but_keeps_level_ones() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    out(&mut pic, ELCR1, bit(5)); // IRQ5 level
    pic.pulse_irq(3).unwrap();
    pic.set_irq(5, true).unwrap();
    pic.pulse_irq(4).unwrap();
    assert_eq!(take(&mut pic), 3); // IRQ3 in service, 4 and 5 pending
    let effects = out(&mut pic, MASTER_COMMAND, 0x11);
    assert_eq!(effects.eoi, u16::from(bit(3) | bit(4)), "ended IRQ3, dropped IRQ4");
    let m = pic.state().master;
    assert_eq!((m.isr, m.irr), (0, bit(5)));
}

#[test]
fn kvm_icw1_keeps_in_service_levels_except_those_with_a_pending_edge() {
    let mut pic = linux_pic(Quirks::KVM);
    pic.pulse_irq(3).unwrap();
    assert_eq!(take(&mut pic), 3);
    pic.pulse_irq(1).unwrap();
    assert_eq!(take(&mut pic), 1); // nests above IRQ3
    pic.pulse_irq(3).unwrap(); // a new IRQ3 edge waits behind ISR3
    let effects = out(&mut pic, MASTER_COMMAND, 0x11);
    assert_eq!(effects.eoi, u16::from(bit(3)));
    let m = pic.state().master;
    assert_eq!((m.isr, m.irr, m.irq_base), (bit(1), 0, MBASE));
}

#[test]
fn datasheet_line_held_high_across_icw1_needs_a_new_edge() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.set_irq(4, true).unwrap();
    linux_init(&mut pic);
    pic.set_irq(4, true).unwrap(); // still high: no transition
    assert!(!pic.intr());
    pic.set_irq(4, false).unwrap();
    pic.set_irq(4, true).unwrap();
    assert_eq!(take(&mut pic), 4);
}

#[test]
fn kvm_icw1_forgets_levels_so_a_repeated_assert_is_a_new_edge() {
    let mut pic = linux_pic(Quirks::KVM);
    pic.set_irq(4, true).unwrap();
    linux_init(&mut pic);
    assert!(!pic.intr());
    pic.set_irq(4, true).unwrap();
    assert_eq!(take(&mut pic), 4);
}

#[test]
fn datasheet_holds_int_low_until_initialisation_completes() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(8).unwrap(); // through the slave
    out(&mut pic, MASTER_COMMAND, 0x11);
    out(&mut pic, MASTER_DATA, 0x50);
    assert!(!pic.intr(), "master between ICW2 and ICW3");
    out(&mut pic, MASTER_DATA, 0x04);
    out(&mut pic, MASTER_DATA, 0x01);
    assert!(pic.intr());
    out(&mut pic, SLAVE_COMMAND, 0x11);
    assert!(!pic.intr(), "slave in initialisation raises no cascade request");
}

#[test]
fn kvm_delivers_from_a_chip_in_initialisation() {
    let mut pic = linux_pic(Quirks::KVM);
    out(&mut pic, MASTER_COMMAND, 0x11);
    pic.pulse_irq(6).unwrap();
    assert_eq!(pic.acknowledge().vector, MBASE | 6, "old base kept, INT live");
}

// ----- OCW1 and input lines ---------------------------------------------------------------

#[test]
fn pulse_while_masked_is_delivered_on_unmask() {
    for quirks in BOTH {
        let mut pic = linux_pic(quirks);
        out(&mut pic, MASTER_DATA, bit(4));
        assert_eq!(pic.pulse_irq(4), Ok(LineStatus::Masked));
        assert!(!pic.intr());
        assert_eq!(inb(&mut pic, MASTER_COMMAND) & bit(4), bit(4), "IRR latches while masked");
        out(&mut pic, MASTER_DATA, 0);
        assert_eq!(drain(&mut pic), [4]);
    }
}

#[test]
fn masked_slave_line_holds_only_that_line() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    out(&mut pic, SLAVE_DATA, bit(3)); // mask IRQ11
    pic.pulse_irq(11).unwrap();
    pic.pulse_irq(14).unwrap();
    assert_eq!(drain(&mut pic), [14]);
    out(&mut pic, SLAVE_DATA, 0);
    assert_eq!(drain(&mut pic), [11]);
}

#[test]
fn masking_the_cascade_holds_every_slave_line() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    out(&mut pic, MASTER_DATA, bit(2));
    pic.pulse_irq(9).unwrap();
    pic.pulse_irq(5).unwrap();
    assert_eq!(drain(&mut pic), [5]);
    out(&mut pic, MASTER_DATA, 0);
    assert_eq!(drain(&mut pic), [9]);
}

#[test]
fn line_status_reports_masked_coalesced_and_accepted() {
    let mut pic = linux_pic(Quirks::KVM);
    assert_eq!(pic.set_irq(3, true), Ok(LineStatus::Accepted));
    assert_eq!(pic.set_irq(3, false), Ok(LineStatus::Accepted));
    assert_eq!(pic.set_irq(3, true), Ok(LineStatus::Coalesced), "IRR3 still pending");
    out(&mut pic, MASTER_DATA, bit(3));
    assert_eq!(pic.set_irq(3, false), Ok(LineStatus::Masked));
}

#[test]
fn shared_line_stays_high_until_every_source_releases_it() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    out(&mut pic, ELCR2, bit(3)); // IRQ11 level-triggered, two PCI functions share it
    pic.set_irq_source(11, 0, true).unwrap();
    pic.set_irq_source(11, 5, true).unwrap();
    assert_eq!(take(&mut pic), 11);
    pic.set_irq_source(11, 0, false).unwrap();
    linux_eoi(&mut pic, 11);
    assert_eq!(take(&mut pic), 11, "source 5 still asserts the line");
    pic.set_irq_source(11, 5, false).unwrap();
    linux_eoi(&mut pic, 11);
    assert!(!pic.intr());
}

#[test]
fn second_source_asserting_a_high_edge_line_makes_no_new_edge() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.set_irq_source(4, 0, true).unwrap();
    assert_eq!(drain(&mut pic), [4]);
    pic.set_irq_source(4, 1, true).unwrap();
    assert!(!pic.intr());
    pic.set_irq_source(4, 0, false).unwrap();
    pic.set_irq_source(4, 1, false).unwrap();
    pic.set_irq_source(4, 1, true).unwrap();
    assert_eq!(drain(&mut pic), [4]);
}

#[test]
fn line_and_source_numbers_out_of_range_are_errors() {
    let mut pic = Pic::default();
    assert_eq!(pic.set_irq(16, true), Err(LineError::NoSuchLine(16)));
    assert_eq!(pic.set_irq_source(3, 32, true), Err(LineError::NoSuchSource(32)));
    assert_eq!(pic.pulse_irq(255), Err(LineError::NoSuchLine(255)));
    assert_eq!(pic.state(), PicState::default());
}

// ----- OCW2 ------------------------------------------------------------------------------

#[test]
fn higher_level_nests_and_non_specific_eoi_ends_the_highest_first() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(3).unwrap();
    assert_eq!(take(&mut pic), 3);
    pic.pulse_irq(5).unwrap();
    assert!(!pic.intr(), "IRQ5 waits behind IRQ3");
    pic.pulse_irq(1).unwrap();
    assert_eq!(take(&mut pic), 1, "IRQ1 nests above IRQ3");
    assert_eq!(out(&mut pic, MASTER_COMMAND, 0x20).eoi, 1 << 1);
    assert!(!pic.intr(), "IRQ3 still in service");
    assert_eq!(out(&mut pic, MASTER_COMMAND, 0x20).eoi, 1 << 3);
    assert_eq!(take(&mut pic), 5);
}

#[test]
fn specific_eoi_ends_only_the_named_level() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(3).unwrap();
    take(&mut pic);
    pic.pulse_irq(1).unwrap();
    take(&mut pic);
    assert_eq!(out(&mut pic, MASTER_COMMAND, 0x63).eoi, 1 << 3);
    assert_eq!(pic.state().master.isr, bit(1));
    assert_eq!(out(&mut pic, MASTER_COMMAND, 0x63).eoi, 0, "already ended: no notification");
}

#[test]
fn eoi_with_nothing_in_service_changes_nothing() {
    for quirks in BOTH {
        let mut pic = linux_pic(quirks);
        let before = pic.state();
        assert_eq!(out(&mut pic, MASTER_COMMAND, 0x20).eoi, 0);
        assert_eq!(out(&mut pic, MASTER_COMMAND, 0xA0).eoi, 0);
        assert_eq!(pic.state(), before);
    }
}

#[test]
fn rotate_on_non_specific_eoi_makes_the_ended_level_lowest() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(0).unwrap();
    assert_eq!(take(&mut pic), 0);
    out(&mut pic, MASTER_COMMAND, 0xA0); // rotate on non-specific EOI
    assert_eq!(pic.state().master.priority_add, 1);
    for irq in [0, 1, 7] {
        pic.pulse_irq(irq).unwrap();
    }
    // IR1 now has the highest priority, IR0 the lowest.
    let mut order = Vec::new();
    while pic.intr() {
        order.push(take(&mut pic));
        out(&mut pic, MASTER_COMMAND, 0x20);
    }
    assert_eq!(order, [1, 7, 0]);
}

#[test]
fn rotate_on_specific_eoi_makes_the_named_level_lowest() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(5).unwrap();
    take(&mut pic);
    assert_eq!(out(&mut pic, MASTER_COMMAND, 0xE5).eoi, 1 << 5);
    for irq in [4, 5, 6] {
        pic.pulse_irq(irq).unwrap();
    }
    let mut order = Vec::new();
    while pic.intr() {
        order.push(take(&mut pic));
        out(&mut pic, MASTER_COMMAND, 0x20);
    }
    assert_eq!(order, [6, 4, 5]);
}

#[test]
fn set_priority_makes_the_named_level_lowest_without_ending_anything() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(3).unwrap();
    take(&mut pic);
    assert_eq!(out(&mut pic, MASTER_COMMAND, 0xC3).eoi, 0); // IR3 lowest, IR4 highest
    assert_eq!(pic.state().master.isr, bit(3));
    pic.pulse_irq(6).unwrap();
    assert_eq!(take(&mut pic), 6, "IR6 now outranks the in-service IR3");
}

#[test]
fn ocw2_nop_changes_nothing() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(3).unwrap();
    take(&mut pic);
    let before = pic.state();
    assert_eq!(out(&mut pic, MASTER_COMMAND, 0x40), Effects::default());
    assert_eq!(pic.state(), before);
}

// ----- automatic EOI ---------------------------------------------------------------------

fn aeoi_pic(quirks: Quirks) -> Pic {
    let mut pic = Pic::new(quirks);
    out(&mut pic, MASTER_COMMAND, 0x11); // ICW1
    out(&mut pic, MASTER_DATA, MBASE); // ICW2
    out(&mut pic, MASTER_DATA, 0x04); // ICW3
    out(&mut pic, MASTER_DATA, 0x03); // ICW4: 8086 mode, AEOI
    pic
}

#[test]
fn auto_eoi_leaves_nothing_in_service_and_notifies_at_acknowledge() {
    let mut pic = aeoi_pic(Quirks::DATASHEET);
    pic.pulse_irq(3).unwrap();
    let ack = pic.acknowledge();
    assert_eq!((ack.vector, ack.eoi), (MBASE | 3, 1 << 3));
    assert_eq!(pic.state().master.isr, 0);
    pic.pulse_irq(5).unwrap();
    assert_eq!(pic.acknowledge().vector, MBASE | 5, "no EOI needed before the next one");
}

#[test]
fn rotate_in_auto_eoi_mode_rotates_on_each_acknowledge_until_cleared() {
    let mut pic = aeoi_pic(Quirks::DATASHEET);
    out(&mut pic, MASTER_COMMAND, 0x80); // rotate in AEOI: set
    pic.pulse_irq(4).unwrap();
    pic.pulse_irq(6).unwrap();
    assert_eq!(pic.acknowledge().irq, 4);
    assert_eq!(pic.state().master.priority_add, 5, "IR4 became the lowest level");
    pic.pulse_irq(4).unwrap();
    assert_eq!(pic.acknowledge().irq, 6, "IR6 now outranks IR4");
    assert_eq!(pic.state().master.priority_add, 7);
    out(&mut pic, MASTER_COMMAND, 0x00); // rotate in AEOI: clear
    pic.pulse_irq(3).unwrap();
    assert_eq!(pic.acknowledge().irq, 3);
    assert_eq!(pic.state().master.priority_add, 7, "no rotation once cleared");
    assert_eq!(pic.acknowledge().irq, 4);
}

#[test]
fn auto_eoi_with_a_level_line_still_high_interrupts_again() {
    let mut pic = aeoi_pic(Quirks::DATASHEET);
    out(&mut pic, ELCR1, bit(5));
    pic.set_irq(5, true).unwrap();
    assert_eq!(pic.acknowledge().irq, 5);
    assert!(pic.intr(), "the manuals' warning: AEOI + level re-interrupts at once");
    pic.set_irq(5, false).unwrap();
    assert!(!pic.intr());
}

// ----- OCW3: register reads, poll, special mask mode ----------------------------------------

#[test]
fn ocw3_selects_irr_or_isr_and_rr_clear_keeps_the_selection() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(3).unwrap();
    take(&mut pic);
    pic.pulse_irq(6).unwrap();
    assert_eq!(inb(&mut pic, MASTER_COMMAND), bit(6), "IRR after init");
    out(&mut pic, MASTER_COMMAND, 0x0B); // OCW3: read ISR
    assert_eq!(inb(&mut pic, MASTER_COMMAND), bit(3));
    out(&mut pic, MASTER_COMMAND, 0x09); // OCW3: RIS without RR is ignored
    assert_eq!(inb(&mut pic, MASTER_COMMAND), bit(3));
    out(&mut pic, MASTER_COMMAND, 0x0A); // OCW3: read IRR
    assert_eq!(inb(&mut pic, MASTER_COMMAND), bit(6));
}

#[test]
fn poll_acknowledges_the_highest_request_and_returns_bit7_and_level() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(6).unwrap();
    pic.pulse_irq(4).unwrap();
    out(&mut pic, MASTER_COMMAND, 0x0C); // OCW3: poll (without RR)
    assert_eq!(pic.read(MASTER_COMMAND), (0x84, Effects::default()));
    assert_eq!(pic.state().master.isr, bit(4), "the poll is an acknowledge");
    assert_eq!(inb(&mut pic, MASTER_COMMAND), bit(6), "only the next read polls");
    out(&mut pic, MASTER_COMMAND, 0x20);
    out(&mut pic, MASTER_COMMAND, 0x0E); // OCW3: poll and read IRR; poll wins
    assert_eq!(inb(&mut pic, MASTER_DATA), 0x86, "either port answers the poll");
}

#[test]
fn poll_with_nothing_pending_has_bit7_clear() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    out(&mut pic, MASTER_COMMAND, 0x0C);
    assert_eq!(inb(&mut pic, MASTER_COMMAND), 0x00);
    assert_eq!(pic.state(), linux_pic(Quirks::DATASHEET).state());
}

#[test]
fn polling_each_chip_of_the_cascade_in_turn() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(13).unwrap();
    out(&mut pic, MASTER_COMMAND, 0x0C);
    assert_eq!(inb(&mut pic, MASTER_COMMAND), 0x82, "master: the cascade level");
    out(&mut pic, SLAVE_COMMAND, 0x0C);
    assert_eq!(inb(&mut pic, SLAVE_COMMAND), 0x85, "slave: IRQ13");
    assert_eq!((pic.state().master.isr, pic.state().slave.isr), (bit(2), bit(5)));
}

#[test]
fn kvm_poll_acknowledges_and_ends_at_once_and_answers_7_when_idle() {
    let mut pic = linux_pic(Quirks::KVM);
    out(&mut pic, ELCR1, bit(4));
    pic.set_irq(4, true).unwrap();
    out(&mut pic, MASTER_COMMAND, 0x0C);
    let (value, effects) = pic.read(MASTER_COMMAND);
    assert_eq!((value, effects.eoi), (0x84, 1 << 4));
    let m = pic.state().master;
    assert_eq!((m.isr, m.irr), (0, 0), "ISR never set; the level request is dropped");
    out(&mut pic, MASTER_COMMAND, 0x0C);
    assert_eq!(inb(&mut pic, MASTER_COMMAND), 0x07);
}

#[test]
fn kvm_slave_poll_clears_the_master_cascade_bits() {
    let mut pic = linux_pic(Quirks::KVM);
    pic.pulse_irq(9).unwrap();
    assert_eq!(pic.state().master.irr, bit(2), "KVM latches the cascade in IRR2");
    out(&mut pic, SLAVE_COMMAND, 0x0C);
    assert_eq!(inb(&mut pic, SLAVE_COMMAND), 0x81);
    assert_eq!((pic.state().master.irr, pic.state().master.isr), (0, 0));
    assert!(!pic.intr());
}

#[test]
fn special_mask_mode_lets_any_unmasked_level_interrupt_the_masked_in_service_one() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(3).unwrap();
    take(&mut pic);
    out(&mut pic, MASTER_DATA, bit(3)); // the handler masks its own level
    out(&mut pic, MASTER_COMMAND, 0x68); // OCW3: ESMM + SMM
    pic.pulse_irq(6).unwrap();
    assert_eq!(take(&mut pic), 6, "lower level let through");
    // Non-specific EOI skips the masked IR3 and ends IR6.
    assert_eq!(out(&mut pic, MASTER_COMMAND, 0x20).eoi, 1 << 6);
    assert_eq!(pic.state().master.isr, bit(3));
    out(&mut pic, MASTER_COMMAND, 0x48); // OCW3: ESMM, SMM clear
    pic.pulse_irq(6).unwrap();
    assert!(!pic.intr(), "normal mode: IR3 in service blocks IR6 again");
}

#[test]
fn kvm_special_mask_mode_has_no_effect() {
    let mut pic = linux_pic(Quirks::KVM);
    pic.pulse_irq(3).unwrap();
    take(&mut pic);
    out(&mut pic, MASTER_DATA, bit(3));
    out(&mut pic, MASTER_COMMAND, 0x68);
    assert!(pic.state().master.special_mask);
    pic.pulse_irq(6).unwrap();
    assert!(!pic.intr());
}

// ----- special fully nested mode ----------------------------------------------------------

fn sfnm_pic(quirks: Quirks) -> Pic {
    let mut pic = linux_pic(quirks);
    out(&mut pic, MASTER_COMMAND, 0x11); // ICW1
    out(&mut pic, MASTER_DATA, MBASE); // ICW2
    out(&mut pic, MASTER_DATA, 0x04); // ICW3
    out(&mut pic, MASTER_DATA, 0x11); // ICW4: 8086 mode, SFNM
    pic
}

#[test]
fn special_fully_nested_mode_lets_a_higher_slave_request_nest() {
    let mut pic = sfnm_pic(Quirks::DATASHEET);
    pic.pulse_irq(12).unwrap();
    assert_eq!(take(&mut pic), 12);
    pic.pulse_irq(9).unwrap();
    assert_eq!(take(&mut pic), 9, "master ISR2 does not lock out the slave");
    pic.pulse_irq(13).unwrap();
    assert!(!pic.intr(), "the slave's own ISR still blocks its lower levels");

    let mut plain = linux_pic(Quirks::DATASHEET);
    plain.pulse_irq(12).unwrap();
    take(&mut plain);
    plain.pulse_irq(9).unwrap();
    assert!(!plain.intr(), "without SFNM the master's ISR2 blocks the slave");
}

#[test]
fn special_fully_nested_mode_still_blocks_lower_master_levels() {
    let mut pic = sfnm_pic(Quirks::DATASHEET);
    pic.pulse_irq(10).unwrap();
    take(&mut pic);
    pic.pulse_irq(3).unwrap();
    assert!(!pic.intr(), "IR3 is below the in-service IR2");

    let mut kvm = sfnm_pic(Quirks::KVM);
    kvm.pulse_irq(10).unwrap();
    take(&mut kvm);
    kvm.pulse_irq(3).unwrap();
    assert_eq!(take(&mut kvm), 3, "KVM ignores ISR2 for every request");
}

// ----- triggering ------------------------------------------------------------------------

#[test]
fn edge_request_stays_latched_after_the_line_drops() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.set_irq(4, true).unwrap();
    pic.set_irq(4, false).unwrap();
    assert_eq!(drain(&mut pic), [4]);
}

#[test]
fn edge_line_held_high_does_not_interrupt_again_after_eoi() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.set_irq(4, true).unwrap();
    assert_eq!(drain(&mut pic), [4]);
    assert!(!pic.intr());
}

#[test]
fn level_line_high_after_eoi_interrupts_again_and_eoi_prompts_resampling() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    out(&mut pic, ELCR2, bit(3)); // IRQ11 level
    pic.set_irq(11, true).unwrap();
    assert_eq!(take(&mut pic), 11);
    let eoi = linux_eoi(&mut pic, 11);
    assert_ne!(eoi & 1 << 11, 0, "the device is told to resample");
    assert_eq!(take(&mut pic), 11, "line still high");
    pic.set_irq(11, false).unwrap();
    linux_eoi(&mut pic, 11);
    assert!(!pic.intr());
}

#[test]
fn level_request_withdrawn_before_acknowledge_gives_spurious_irq7() {
    for quirks in BOTH {
        let mut pic = linux_pic(quirks);
        out(&mut pic, ELCR1, bit(5));
        pic.set_irq(5, true).unwrap();
        assert_eq!(pic.pending_vector(), Some(MBASE | 5));
        pic.set_irq(5, false).unwrap(); // the device lowered it before the INTA
        let ack = pic.acknowledge();
        assert_eq!((ack.vector, ack.irq, ack.spurious), (MBASE | 7, 7, true));
        assert_eq!(pic.state().master.isr, 0, "spurious IRQ7 sets no ISR bit");
    }
}

#[test]
fn acknowledge_with_int_low_is_spurious_irq7() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    let before = pic.state();
    let ack = pic.acknowledge();
    assert_eq!((ack.vector, ack.spurious), (MBASE | 7, true));
    assert_eq!(pic.state(), before);
}

#[test]
fn elcr_keeps_hard_wired_edge_bits_and_supports_read_modify_write() {
    let mut pic = Pic::default();
    out(&mut pic, ELCR1, 0xFF);
    out(&mut pic, ELCR2, 0xFF);
    assert_eq!((inb(&mut pic, ELCR1), inb(&mut pic, ELCR2)), (ELCR1_MASK, ELCR2_MASK));
    // Linux's elcr_set_level_irq: read, OR in one bit, write back.
    out(&mut pic, ELCR2, 0x00);
    for irq in [9u8, 11] {
        let v = inb(&mut pic, ELCR2);
        out(&mut pic, ELCR2, v | bit(irq));
    }
    assert_eq!(inb(&mut pic, ELCR2), bit(9) | bit(11));
}

#[test]
fn ltim_makes_every_input_level_triggered_except_in_kvm() {
    for (quirks, level) in [(Quirks::DATASHEET, true), (Quirks::KVM, false)] {
        let mut pic = Pic::new(quirks);
        out(&mut pic, MASTER_COMMAND, 0x19); // ICW1: LTIM, IC4
        out(&mut pic, MASTER_DATA, MBASE);
        out(&mut pic, MASTER_DATA, 0x04);
        out(&mut pic, MASTER_DATA, 0x01);
        pic.set_irq(1, true).unwrap(); // IRQ1 is edge in ELCR, but LTIM covers it
        assert_eq!(take(&mut pic), 1);
        out(&mut pic, MASTER_COMMAND, 0x20);
        assert_eq!(pic.intr(), level, "{quirks:?}");
    }
}

#[test]
fn switching_a_high_line_to_level_requests_at_once_in_the_datasheet_profile() {
    for (quirks, requested) in [(Quirks::DATASHEET, true), (Quirks::KVM, false)] {
        let mut pic = linux_pic(quirks);
        pic.set_irq(10, true).unwrap();
        assert_eq!(drain(&mut pic), [10]);
        out(&mut pic, ELCR2, bit(2)); // IRQ10 becomes level while high
        assert_eq!(pic.intr(), requested, "{quirks:?}");
    }
}

// ----- cascade and spurious IRQ15 -----------------------------------------------------------

#[test]
fn slave_interrupt_sets_master_isr2_and_blocks_the_slave_until_the_master_eoi() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(12).unwrap();
    assert_eq!(take(&mut pic), 12);
    out(&mut pic, SLAVE_COMMAND, 0x20); // EOI the slave only
    pic.pulse_irq(14).unwrap();
    assert!(!pic.intr(), "master ISR2 still set");
    pic.pulse_irq(1).unwrap();
    assert_eq!(take(&mut pic), 1, "a higher master level still nests");
    out(&mut pic, MASTER_COMMAND, 0x20); // ends IRQ1
    out(&mut pic, MASTER_COMMAND, 0x20); // ends IR2
    assert_eq!(take(&mut pic), 14);
}

#[test]
fn ir2_raised_without_a_slave_request_gives_spurious_irq15_with_master_isr2() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(2).unwrap(); // e.g. HPET legacy routing raising IRQ2 directly
    let ack = pic.acknowledge();
    assert_eq!((ack.vector, ack.irq, ack.spurious), (SBASE | 7, 15, true));
    assert_eq!((pic.state().master.isr, pic.state().slave.isr), (bit(2), 0));
    out(&mut pic, MASTER_COMMAND, 0x62); // Linux EOIs only the master for IRQ15
    assert!(!pic.intr());
}

#[test]
fn withdrawn_slave_request_is_spurious_irq7_on_the_datasheet_and_irq15_on_kvm() {
    for (quirks, irq, master_isr) in [(Quirks::DATASHEET, 7, 0), (Quirks::KVM, 15, bit(2))] {
        let mut pic = linux_pic(quirks);
        out(&mut pic, ELCR2, bit(1)); // IRQ9 level
        pic.set_irq(9, true).unwrap();
        assert!(pic.intr());
        pic.set_irq(9, false).unwrap();
        let ack = pic.acknowledge();
        assert_eq!((ack.irq, ack.spurious), (irq, true), "{quirks:?}");
        assert_eq!(pic.state().master.isr, master_isr, "{quirks:?}");
    }
}

// ----- port decoding and widths --------------------------------------------------------------

#[test]
fn unknown_ports_read_as_floating_bus_and_ignore_writes() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    let before = pic.state();
    assert_eq!(pic.write(0x22, 0x11).invalid, Some(AccessError::UnknownPort(0x22)));
    assert_eq!(pic.read(0x4D2), (0xFF, Effects { eoi: 0, invalid: Some(AccessError::UnknownPort(0x4D2)) }));
    assert_eq!(pic.state(), before);
}

#[test]
fn wide_access_goes_to_consecutive_ports_on_the_datasheet_and_is_dropped_by_kvm() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    let effects = pic.pio_write(ELCR1, &[0x20, 0x08]); // a 16-bit ELCR write
    assert_eq!(effects.invalid, Some(AccessError::Width(2)));
    assert_eq!((inb(&mut pic, ELCR1), inb(&mut pic, ELCR2)), (0x20, 0x08));
    let mut word = [0u8; 4];
    let _ = pic.pio_read(ELCR1, &mut word);
    assert_eq!(word, [0x20, 0x08, 0xFF, 0xFF]);

    let mut kvm = linux_pic(Quirks::KVM);
    let before = kvm.state();
    let _ = kvm.pio_write(ELCR1, &[0x20, 0x08]);
    assert_eq!(kvm.state(), before);
    let mut word = [0xAAu8; 2];
    assert_eq!(kvm.pio_read(MASTER_DATA, &mut word).invalid, Some(AccessError::Width(2)));
    assert_eq!(word, [0, 0]);
}

#[test]
fn byte_wide_pio_access_is_the_plain_port_access() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    assert_eq!(pic.pio_write(MASTER_DATA, &[0x5A]), Effects::default());
    let mut byte = [0u8];
    assert_eq!(pic.pio_read(MASTER_DATA, &mut byte), Effects::default());
    assert_eq!(byte, [0x5A]);
    assert_eq!(pic.pio_write(MASTER_DATA, &[]).invalid, Some(AccessError::Width(0)));
}

// ----- state ------------------------------------------------------------------------------

#[test]
fn restore_of_its_own_state_continues_delivery_where_it_left_off() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(3).unwrap();
    take(&mut pic);
    pic.pulse_irq(1).unwrap();
    pic.pulse_irq(11).unwrap();
    let mut other = Pic::default();
    other.restore(&pic.state()).unwrap();
    assert_eq!(other, pic);
    assert_eq!(drain(&mut other), [1, 11]);
}

#[test]
fn restore_refuses_values_the_hardware_cannot_hold_and_leaves_the_pic_unchanged() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    let good = pic.state();
    let mut bad = good;
    bad.master.priority_add = 8;
    assert_eq!(pic.restore(&bad), Err(StateError::PriorityAdd { chip: Chip::Master, value: 8 }));
    let mut bad = good;
    bad.slave.irq_base = 0x29;
    assert_eq!(pic.restore(&bad), Err(StateError::IrqBase { chip: Chip::Slave, value: 0x29 }));
    let mut bad = good;
    bad.master.elcr = 0x04;
    assert!(matches!(pic.restore(&bad), Err(StateError::ElcrOutsideMask { chip: Chip::Master, .. })));
    assert_eq!(pic.state(), good);
}

#[test]
fn reset_returns_to_power_on_but_keeps_the_device_lines() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.set_irq(4, true).unwrap();
    take(&mut pic);
    let _ = pic.reset();
    let s = pic.state();
    assert_eq!((s.master.isr, s.master.irr, s.master.irq_base), (0, 0, 0));
    assert_eq!(s.sources[4], 1);
    pic.set_irq(4, true).unwrap();
    assert!(!pic.intr(), "still high: no new edge");
}

// ----- KVM's latched INT output ---------------------------------------------------------

#[test]
fn kvm_int_stays_high_after_a_master_poll_of_ir2_and_the_next_acknowledge_is_spurious() {
    let mut pic = linux_pic(Quirks::KVM);
    pic.pulse_irq(9).unwrap();
    out(&mut pic, MASTER_COMMAND, 0x0C); // OCW3: poll
    assert_eq!(inb(&mut pic, MASTER_COMMAND), 0x82, "IR2, cleared from IRR and ISR");
    assert!(pic.intr(), "KVM does not re-evaluate INT after a master poll that answers IR2");
    assert_eq!(pic.pending_vector(), Some(MBASE | 7));
    let ack = pic.acknowledge();
    assert_eq!((ack.vector, ack.spurious), (MBASE | 7, true));
    // The acknowledge's update latches the slave's request again: IRQ9 is not lost.
    assert_eq!(pic.acknowledge().vector, SBASE | 1);
}

#[test]
fn kvm_int_does_not_rise_at_icw1_until_the_next_update_point() {
    let mut pic = linux_pic(Quirks::KVM);
    out(&mut pic, ELCR1, bit(5)); // IRQ5 level
    out(&mut pic, MASTER_DATA, 0xFF);
    pic.set_irq(5, true).unwrap(); // masked: INT low
    out(&mut pic, MASTER_COMMAND, 0x11); // ICW1 clears IMR, but KVM latches nothing here
    assert!(!pic.intr());
    pic.set_irq(3, false).unwrap(); // any line change re-evaluates
    assert!(pic.intr());

    let mut datasheet = linux_pic(Quirks::DATASHEET);
    out(&mut datasheet, ELCR1, bit(5));
    out(&mut datasheet, MASTER_DATA, 0xFF);
    datasheet.set_irq(5, true).unwrap();
    linux_init(&mut datasheet);
    assert!(datasheet.intr(), "the datasheet's INT always reflects the registers");
}

#[test]
fn update_output_reproduces_kvm_set_irqchip_after_a_restore() {
    // A datasheet-profile state with a slave request: KVM would latch IRR2 and INT on SET.
    let mut source = linux_pic(Quirks::DATASHEET);
    source.pulse_irq(12).unwrap();
    let mut kvm = Pic::new(Quirks::KVM);
    kvm.restore(&source.state()).unwrap();
    assert_eq!(kvm.state(), source.state(), "restore alone is the identity");
    assert!(!kvm.intr());
    kvm.update_output();
    assert_eq!(kvm.state().master.irr, bit(2));
    assert_eq!(kvm.acknowledge().vector, SBASE | 4);

    let before = source.state();
    source.update_output();
    assert_eq!(source.state(), before, "nothing to re-evaluate on the datasheet");
}

#[test]
fn restore_refuses_modes_the_profile_ignores() {
    let mut state = linux_pic(Quirks::DATASHEET).state();
    state.slave.ltim = true;
    let mut kvm = Pic::new(Quirks::KVM);
    assert_eq!(kvm.restore(&state), Err(StateError::IgnoredMode { chip: Chip::Slave, field: "ltim" }));
    assert!(Pic::new(Quirks::DATASHEET).restore(&state).is_ok());
}

#[test]
fn master_irr_read_shows_the_slave_request_on_ir2() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(12).unwrap();
    assert_eq!(inb(&mut pic, MASTER_COMMAND), bit(2), "IR2 is the slave's INT");
    assert_eq!(inb(&mut pic, SLAVE_COMMAND), bit(4));
}

#[test]
fn reset_reports_the_levels_it_ends_and_drops() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(3).unwrap();
    take(&mut pic); // IRQ3 in service
    pic.pulse_irq(11).unwrap(); // IRQ11 pending
    assert_eq!(pic.reset().eoi, 1 << 3 | 1 << 11);
}

#[test]
fn huge_wide_access_wraps_the_port_instead_of_panicking() {
    let mut pic = Pic::default();
    let data = std::vec![0u8; 70_000];
    assert_eq!(pic.pio_write(0xFFF0, &data).invalid, Some(AccessError::Width(u16::MAX)));
    let mut buf = std::vec![0u8; 70_000];
    let _ = pic.pio_read(0, &mut buf);
    assert_eq!(buf[0x21], 0, "IMR read at 0x21");
}

#[test]
fn kvm_update_after_ir2_was_seen_high_latches_the_cascade_only_the_second_time() {
    // KVM's pic_update_irq pulses IR2 through the edge detector: if it last saw IR2 high
    // (a device holds line 2, or a restored state says so), the first pulse latches
    // nothing and leaves it low.
    let mut pic = linux_pic(Quirks::KVM);
    let mut state = pic.state();
    state.slave.irr = bit(3); // a slave request KVM has not latched yet (as after SET_IRQCHIP)
    state.master.last_irr |= bit(2);
    pic.restore(&state).unwrap();
    pic.update_output();
    assert_eq!(pic.state().master.irr & bit(2), 0);
    pic.update_output();
    assert_eq!(pic.state().master.irr & bit(2), bit(2));
    assert_eq!(pic.acknowledge().vector, SBASE | 3);
}

// ----- ICW3: which inputs cascade, and the slave's ID ------------------------------------

/// Linux's init with other ICW3 bytes: `master_icw3` is the master's slave map, `slave_icw3`
/// the slave's ID. Both chips unmasked at the end.
fn init_with_icw3(pic: &mut Pic, master_icw3: u8, slave_icw3: u8) {
    out(pic, MASTER_COMMAND, 0x11); // ICW1: edge, cascade, ICW4 needed
    out(pic, MASTER_DATA, MBASE); // ICW2: IR0-7 at vectors 0x30-0x37
    out(pic, MASTER_DATA, master_icw3); // ICW3: a 1 for each IR input with a slave
    out(pic, MASTER_DATA, 0x01); // ICW4: 8086 mode, normal EOI
    out(pic, SLAVE_COMMAND, 0x11); // ICW1: edge, cascade, ICW4 needed
    out(pic, SLAVE_DATA, SBASE); // ICW2: IR0-7 at vectors 0x38-0x3f
    out(pic, SLAVE_DATA, slave_icw3); // ICW3: slave ID in bits 2:0
    out(pic, SLAVE_DATA, 0x01); // ICW4: 8086 mode, normal EOI
}

#[test]
fn master_icw3_without_ir2_makes_ir2_an_ordinary_input_that_the_master_answers() {
    let mut pic = Pic::new(Quirks::DATASHEET);
    init_with_icw3(&mut pic, 0x00, 0x02);
    pic.pulse_irq(10).unwrap(); // slave IR2: the slave's INT still drives master IR2
    assert_eq!(pic.pending_vector(), Some(MBASE | 2));
    let ack = pic.acknowledge();
    assert_eq!((ack.vector, ack.irq, ack.spurious), (MBASE | 2, 2, false));
    let s = pic.state();
    assert_eq!(
        (s.master.isr, s.slave.isr, s.slave.irr),
        (bit(2), 0, bit(2)),
        "the slave was not acknowledged"
    );
}

#[test]
fn slave_with_another_id_does_not_answer_the_cascade_and_the_bus_floats() {
    let mut pic = Pic::new(Quirks::DATASHEET);
    init_with_icw3(&mut pic, 0x04, 0x03); // the master addresses slave 2; this one is ID 3
    pic.pulse_irq(12).unwrap();
    assert_eq!(pic.pending_vector(), Some(0xFF));
    let ack = pic.acknowledge();
    assert_eq!((ack.vector, ack.irq, ack.spurious), (0xFF, 2, false), "no chip drives the data bus");
    let s = pic.state();
    assert_eq!((s.master.isr, s.slave.isr, s.slave.irr), (bit(2), 0, bit(4)));
}

#[test]
fn state_master_irr_is_the_irr_the_guest_reads_with_a_cascaded_request() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(12).unwrap();
    out(&mut pic, MASTER_COMMAND, 0x0A); // OCW3: read IRR
    let read = inb(&mut pic, MASTER_COMMAND);
    assert_eq!(read, bit(2));
    assert_eq!(pic.state().master.irr, read, "state() describes the register the guest reads");
}

#[test]
fn cascaded_master_input_is_answered_by_the_slave_whose_id_is_its_number() {
    let mut pic = Pic::new(Quirks::DATASHEET);
    init_with_icw3(&mut pic, 0x08, 0x03); // a slave on IR3 (address 3), and the slave is ID 3
    pic.pulse_irq(3).unwrap(); // the slave itself has no request: it answers with IR7
    let ack = pic.acknowledge();
    assert_eq!((ack.vector, ack.irq, ack.spurious), (SBASE | 7, 15, true));
    assert_eq!((pic.state().master.isr, pic.state().slave.isr), (bit(3), 0));
}

#[test]
fn cascaded_master_input_without_a_slave_of_that_id_floats_the_bus() {
    let mut pic = Pic::new(Quirks::DATASHEET);
    init_with_icw3(&mut pic, 0x24, 0x02); // slaves on IR2 and IR5; only ID 2 exists
    pic.pulse_irq(5).unwrap();
    pic.pulse_irq(13).unwrap(); // a slave request too: IR2 ranks above IR5
    assert_eq!(take(&mut pic), 13, "address 2 is answered");
    linux_eoi(&mut pic, 13);
    assert_eq!(pic.pending_vector(), Some(FLOATING_BUS));
    let ack = pic.acknowledge();
    assert_eq!((ack.vector, ack.irq, ack.spurious), (FLOATING_BUS, 5, false));
    assert_eq!((pic.state().master.isr, pic.state().slave.isr), (bit(5), 0), "the master put IR5 in service");
}

#[test]
fn single_mode_master_does_not_cascade_whatever_icw3_held() {
    let mut pic = Pic::new(Quirks::DATASHEET);
    init_with_icw3(&mut pic, 0x04, 0x02);
    out(&mut pic, MASTER_COMMAND, 0x13); // ICW1: SNGL, IC4: no ICW3 is read
    out(&mut pic, MASTER_DATA, MBASE); // ICW2
    out(&mut pic, MASTER_DATA, 0x01); // ICW4: 8086 mode
    assert_eq!(pic.state().master.icw3, 0x04, "kept, but single mode has no slave");
    pic.pulse_irq(11).unwrap();
    let ack = pic.acknowledge();
    assert_eq!((ack.vector, ack.irq, ack.spurious), (MBASE | 2, 2, false));
    assert_eq!(pic.state().slave.irr, bit(3));
}

#[test]
fn kvm_ignores_icw3_and_always_cascades_ir2() {
    let mut pic = Pic::new(Quirks::KVM);
    init_with_icw3(&mut pic, 0x00, 0x05);
    let s = pic.state();
    assert_eq!((s.master.icw3, s.slave.icw3), (PC_MASTER_ICW3, PC_SLAVE_ICW3), "not kept");
    pic.pulse_irq(10).unwrap();
    assert_eq!(take(&mut pic), 10);
    assert_eq!(pic.state().slave.isr, bit(2));
}

#[test]
fn icw3_is_state_and_the_slave_keeps_only_its_id() {
    let mut pic = Pic::new(Quirks::DATASHEET);
    assert_eq!((pic.state().master.icw3, pic.state().slave.icw3), (0x04, 0x02), "power-on: the PC wiring");
    init_with_icw3(&mut pic, 0x84, 0xFA);
    assert_eq!((pic.state().master.icw3, pic.state().slave.icw3), (0x84, 0x02));
    let _ = pic.reset();
    assert_eq!((pic.state().master.icw3, pic.state().slave.icw3), (0x04, 0x02));
}

#[test]
fn restore_refuses_slave_icw3_bits_above_the_id_and_icw3_the_profile_ignores() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    let good = pic.state();
    let mut bad = good;
    bad.slave.icw3 = 0x0A;
    assert_eq!(pic.restore(&bad), Err(StateError::SlaveIcw3 { value: 0x0A }));
    let mut other = good;
    other.master.icw3 = 0x00;
    let mut kvm = Pic::new(Quirks::KVM);
    assert_eq!(kvm.restore(&other), Err(StateError::IgnoredMode { chip: Chip::Master, field: "icw3" }));
    assert_eq!(pic.restore(&other), Ok(()));
    assert_eq!(pic.state(), other);
}

#[test]
fn restore_refuses_a_master_irr_without_the_slave_request_on_ir2() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(12).unwrap();
    let mut state = pic.state();
    state.master.irr &= !bit(2); // as KVM holds it before its next update latches IRR2
    let before = pic.clone();
    assert_eq!(pic.restore(&state), Err(StateError::CascadeNotInIrr));
    assert_eq!(pic, before);
    let mut kvm = Pic::new(Quirks::KVM);
    assert_eq!(kvm.restore(&state), Ok(()), "KVM latches the cascade: IRR2 may lag");
}

#[test]
fn restore_of_a_state_with_a_cascaded_request_is_exact_and_irr2_still_follows_the_slave() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(12).unwrap();
    let state = pic.state();
    let mut copy = Pic::default();
    copy.restore(&state).unwrap();
    assert_eq!((copy.state(), &copy), (state, &pic));
    out(&mut copy, SLAVE_DATA, bit(4)); // OCW1: mask IRQ12, the slave's INT falls
    assert_eq!(copy.state().master.irr, 0, "IRR2 was the slave's wire, not a latched edge");
    assert!(!copy.intr());
}

#[test]
fn line2_edge_while_the_slave_holds_ir2_merges_into_the_slave_request() {
    let mut pic = linux_pic(Quirks::DATASHEET);
    pic.pulse_irq(12).unwrap();
    pic.pulse_irq(2).unwrap(); // IR2 is already high: no new edge on the pin
    out(&mut pic, SLAVE_DATA, bit(4)); // OCW1: mask IRQ12
    assert_eq!(pic.state().master.irr, 0);
    // A line-2 edge with the slave quiet is a request of its own (spurious IRQ15 on the PC).
    pic.pulse_irq(2).unwrap();
    assert_eq!(pic.state().master.irr, bit(2));
    assert_eq!(pic.acknowledge().irq, 15);
}
