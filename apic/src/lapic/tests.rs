//! Behaviour tests of one local APIC. Interrupts are checked where a guest sees them: which
//! vector the processor takes, in which order, and what an EOI reports.

// Register writes return `Effects`; tests that do not look at them drop them.
#![allow(unused_must_use)]

extern crate std;

use std::vec::Vec;

use super::regs::*;
use super::*;
use crate::{DeliveryMode, DestinationMode, Interrupt, Shorthand, TriggerMode};

/// SVR: spurious vector 0xFF, APIC software enabled (bit 8).
const SVR_ENABLED: u32 = 0x1FF;

fn config(quirks: Quirks) -> LapicConfig {
    LapicConfig { quirks, ..LapicConfig::default() }
}

/// An xAPIC-mode APIC, software enabled, in profile `quirks`.
fn enabled(quirks: Quirks) -> LocalApic {
    let mut apic = LocalApic::new(config(quirks));
    write(&mut apic, SVR, SVR_ENABLED);
    apic
}

/// An x2APIC-mode APIC (ID 3), software enabled.
fn x2apic(quirks: Quirks) -> LocalApic {
    let mut apic = LocalApic::new(LapicConfig { id: 3, ..config(quirks) });
    // IA32_APIC_BASE: default base, EN (bit 11) and EXTD (bit 10), BSP (bit 8).
    apic.wrmsr(IA32_APIC_BASE, 0xFEE0_0D00, 0).unwrap();
    apic.wrmsr(0x80F, u64::from(SVR_ENABLED), 0).unwrap();
    apic
}

fn write(apic: &mut LocalApic, offset: u32, value: u32) -> Effects {
    write_at(apic, offset, value, 0)
}

fn write_at(apic: &mut LocalApic, offset: u32, value: u32, now: u64) -> Effects {
    apic.mmio_write(u64::from(offset), &value.to_le_bytes(), now)
}

fn read(apic: &mut LocalApic, offset: u32) -> u32 {
    read_at(apic, offset, 0)
}

fn read_at(apic: &mut LocalApic, offset: u32, now: u64) -> u32 {
    let mut bytes = [0; 4];
    let _ = apic.mmio_read(u64::from(offset), &mut bytes, now);
    u32::from_le_bytes(bytes)
}

fn fixed(vector: u8) -> Interrupt {
    Interrupt { vector, level: true, ..Interrupt::default() }
}

fn level(vector: u8) -> Interrupt {
    Interrupt { vector, level: true, trigger_mode: TriggerMode::Level, ..Interrupt::default() }
}

/// The processor takes every deliverable interrupt, EOIing each before the next (the common
/// handler shape); returns the vectors in the order taken and the EOIs broadcast.
fn take_all(apic: &mut LocalApic) -> (Vec<u8>, Vec<u8>) {
    let (mut taken, mut eois) = (Vec::new(), Vec::new());
    while apic.pending_interrupt().is_some() {
        taken.push(apic.acknowledge().vector);
        eois.extend(write(apic, EOI, 0).eoi);
    }
    (taken, eois)
}

// ----- reset, identity, mode ---------------------------------------------------------------

#[test]
fn reset_values_are_the_sdm_power_up_state() {
    let mut apic = LocalApic::new(LapicConfig { id: 5, bsp: false, ..LapicConfig::default() });
    assert_eq!(apic.apic_base(), 0xFEE0_0800, "xAPIC mode at the default base, not BSP");
    assert_eq!(read(&mut apic, ID), 5 << 24);
    assert_eq!(read(&mut apic, VERSION), 0x0005_0014, "version 0x14, max LVT 5");
    assert_eq!(read(&mut apic, TPR), 0);
    assert_eq!(read(&mut apic, LDR), 0);
    assert_eq!(read(&mut apic, DFR), 0xFFFF_FFFF);
    assert_eq!(read(&mut apic, SVR), 0xFF);
    for lvt in [LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR] {
        assert_eq!(read(&mut apic, lvt), 0x1_0000, "LVT {lvt:#x} masked");
    }
    assert_eq!(read(&mut apic, TIMER_INITIAL_COUNT), 0);
    assert_eq!(read(&mut apic, TIMER_DIVIDE_CONFIG), 0);
    assert!(!apic.is_software_enabled());
    let bsp = LocalApic::new(LapicConfig::default());
    assert_eq!(bsp.apic_base(), 0xFEE0_0900, "BSP flag");
}

#[test]
fn version_reports_cmci_and_directed_eoi_when_configured() {
    let mut apic = LocalApic::new(LapicConfig { cmci: true, directed_eoi: true, ..LapicConfig::default() });
    assert_eq!(read(&mut apic, VERSION), 0x0106_0014);
    assert_eq!(read(&mut apic, LVT_CMCI), 0x1_0000);
    // Without CMCI the slot is reserved.
    let mut apic = enabled(Quirks::SDM);
    let effects = write(&mut apic, LVT_CMCI, 0x40);
    assert_eq!(effects.invalid, Some(AccessError::Reserved));
}

#[test]
fn xapic_id_is_writable_and_x2apic_id_is_read_only() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, ID, 0x0700_0000);
    assert_eq!(read(&mut apic, ID), 0x0700_0000);
    assert_eq!(apic.id(), 7);
    let mut apic = x2apic(Quirks::SDM);
    assert_eq!(apic.rdmsr(0x802, 0), Ok(3));
    assert_eq!(apic.wrmsr(0x802, 9, 0), Err(MsrError::GeneralProtection));
}

#[test]
fn ldr_keeps_bits_31_24_and_dfr_forces_bits_27_0() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, LDR, 0x1234_5678);
    assert_eq!(read(&mut apic, LDR), 0x1200_0000);
    write(&mut apic, DFR, 0x0000_0000);
    assert_eq!(read(&mut apic, DFR), 0x0FFF_FFFF, "cluster model");
}

#[test]
fn apic_base_follows_the_sdm_transitions() {
    let mut apic = enabled(Quirks::SDM);
    // xAPIC → disabled → x2APIC directly: #GP.
    apic.wrmsr(IA32_APIC_BASE, 0xFEE0_0000, 0).unwrap();
    assert_eq!(apic.mode(), ApicMode::Disabled);
    assert_eq!(apic.wrmsr(IA32_APIC_BASE, 0xFEE0_0C00, 0), Err(MsrError::GeneralProtection));
    // EXTD without EN is the invalid state: #GP.
    assert_eq!(apic.wrmsr(IA32_APIC_BASE, 0xFEE0_0400, 0), Err(MsrError::GeneralProtection));
    // disabled → xAPIC → x2APIC: legal.
    apic.wrmsr(IA32_APIC_BASE, 0xFEE0_0800, 0).unwrap();
    apic.wrmsr(IA32_APIC_BASE, 0xFEE0_0C00, 0).unwrap();
    assert_eq!(apic.mode(), ApicMode::X2Apic);
    // x2APIC → xAPIC directly: #GP; x2APIC → disabled: legal.
    assert_eq!(apic.wrmsr(IA32_APIC_BASE, 0xFEE0_0800, 0), Err(MsrError::GeneralProtection));
    apic.wrmsr(IA32_APIC_BASE, 0xFEE0_0000, 0).unwrap();
    assert_eq!(apic.mode(), ApicMode::Disabled);
    // Reserved bits (7:0, 9, MAXPHYADDR and up) #GP.
    for bad in [0xFEE0_0801, 0xFEE0_0A00, 1 << 46 | 0xFEE0_0800] {
        assert_eq!(apic.wrmsr(IA32_APIC_BASE, bad, 0), Err(MsrError::GeneralProtection), "{bad:#x}");
    }
}

#[test]
fn x2apic_mode_needs_cpuid_support() {
    let mut apic = LocalApic::new(LapicConfig { x2apic: false, ..LapicConfig::default() });
    assert_eq!(apic.wrmsr(IA32_APIC_BASE, 0xFEE0_0D00, 0), Err(MsrError::GeneralProtection));
}

#[test]
fn apic_base_relocates_the_mmio_page() {
    let mut apic = enabled(Quirks::SDM);
    assert_eq!(apic.mmio_base(), Some(0xFEE0_0000));
    // kvm-unit-tests `apicbase` moves it to 0xFED40000.
    apic.wrmsr(IA32_APIC_BASE, 0xFED4_0900, 0).unwrap();
    assert_eq!(apic.mmio_base(), Some(0xFED4_0000));
    apic.wrmsr(IA32_APIC_BASE, 0xFED4_0D00, 0).unwrap();
    assert_eq!(apic.mmio_base(), None, "x2APIC mode does not decode the page");
}

#[test]
fn guest_writes_cannot_change_the_bsp_flag_except_in_kvm() {
    let mut apic = enabled(Quirks::SDM);
    apic.wrmsr(IA32_APIC_BASE, 0xFEE0_0800, 0).unwrap();
    assert!(apic.is_bsp());
    let mut kvm = enabled(Quirks::KVM);
    kvm.wrmsr(IA32_APIC_BASE, 0xFEE0_0800, 0).unwrap();
    assert!(!kvm.is_bsp());
}

#[test]
fn disabling_the_apic_loses_its_state_in_the_sdm_profile_only() {
    for (quirks, kept) in [(Quirks::SDM, false), (Quirks::KVM, true)] {
        let mut apic = enabled(quirks);
        write(&mut apic, TPR, 0x20);
        assert!(apic.accept(&fixed(0x40)));
        apic.wrmsr(IA32_APIC_BASE, 0xFEE0_0100, 0).unwrap(); // EN=0
        apic.wrmsr(IA32_APIC_BASE, 0xFEE0_0900, 0).unwrap(); // EN=1
        assert_eq!(read(&mut apic, TPR) == 0x20, kept, "{quirks:?}");
        assert_eq!(apic.pending_interrupt().is_some(), kept, "{quirks:?}");
        assert_eq!(apic.is_software_enabled(), kept, "{quirks:?}");
    }
}

#[test]
fn switching_to_x2apic_derives_the_ldr_and_reads_the_32_bit_id() {
    let mut apic = LocalApic::new(LapicConfig { id: 0x123, ..LapicConfig::default() });
    apic.wrmsr(IA32_APIC_BASE, 0xFEE0_0D00, 0).unwrap();
    assert_eq!(apic.rdmsr(0x802, 0), Ok(0x123));
    // Cluster 0x12 in bits 31:16, bit 3 set.
    assert_eq!(apic.rdmsr(0x80D, 0), Ok(0x0012_0008));
    assert_eq!(apic.wrmsr(0x80D, 0, 0), Err(MsrError::GeneralProtection), "LDR is read-only");
}

// ----- MMIO and MSR decoding ---------------------------------------------------------------

#[test]
fn mmio_is_not_decoded_when_disabled_or_in_x2apic_mode() {
    let mut apic = enabled(Quirks::SDM);
    apic.wrmsr(IA32_APIC_BASE, 0xFEE0_0D00, 0).unwrap();
    let mut bytes = [0; 4];
    assert_eq!(apic.mmio_read(0x80, &mut bytes, 0).invalid, Some(AccessError::NotDecoded));
    assert_eq!(bytes, [0xFF; 4]);
    assert_eq!(write(&mut apic, TPR, 0x50).invalid, Some(AccessError::NotDecoded));
    assert_eq!(apic.rdmsr(0x808, 0), Ok(0), "the write was dropped");
}

#[test]
fn partial_reads_return_the_slot_bytes_and_odd_writes_are_dropped() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, TPR, 0xA5);
    let mut byte = [0; 1];
    let effects = apic.mmio_read(0x80, &mut byte, 0);
    assert_eq!(byte, [0xA5]);
    assert_eq!(effects.invalid, Some(AccessError::Width));
    let mut wide = [0xEE; 8];
    let _ = apic.mmio_read(0x80, &mut wide, 0);
    assert_eq!(wide, [0xA5, 0, 0, 0, 0, 0, 0, 0], "bytes 4-15 of a slot read 0");
    // A two-byte write and a write into the middle of a slot are dropped.
    assert!(apic.mmio_write(0x80, &[0x10, 0], 0).invalid.is_some());
    assert!(apic.mmio_write(0x84, &0x10u32.to_le_bytes(), 0).invalid.is_some());
    assert_eq!(read(&mut apic, TPR), 0xA5);
    // Past the page.
    assert_eq!(apic.mmio_write(0x1000, &[0; 4], 0).invalid, Some(AccessError::OutOfRange));
}

#[test]
fn kvm_profile_leaves_the_buffer_unwritten_for_reads_it_does_not_decode() {
    // KVM's `kvm_lapic_reg_read` writes nothing when `(offset & 0xF) + len > 4`, for a length
    // other than 1, 2 or 4, and for an offset with no readable register; the SDM profile reads
    // the slot's bytes (zeros for an unreadable offset).
    let odd: [(u64, usize); 9] = [
        (0x80, 8),  // 8-byte read of TPR: bytes 4-7 are past the register
        (0x82, 4),  // crosses the register's 4-byte boundary
        (0x84, 1),  // bytes 4-15 of a slot
        (0x8C, 4),  // the slot's last word
        (0x80, 3),  // a 3-byte read
        (0xB0, 4),  // EOI is write-only
        (0xC0, 4),  // remote read is not readable in KVM
        (0x3F0, 4), // SELF IPI does not exist in xAPIC mode
        (0xFFC, 8), // runs past the page
    ];
    for (offset, len) in odd {
        let mut kvm = enabled(Quirks::KVM);
        write(&mut kvm, TPR, 0xA5);
        let mut data = [0x5A; 8];
        let effects = kvm.mmio_read(offset, &mut data[..len], 0);
        assert_eq!(data, [0x5A; 8], "KVM: {offset:#x}/{len} leaves the buffer as it was");
        assert!(effects.invalid.is_some(), "KVM: {offset:#x}/{len} is reported");
    }
    // What KVM does decode: 1, 2 or 4 bytes within a readable register's first four bytes.
    for quirks in [Quirks::KVM, Quirks::SDM] {
        let mut apic = enabled(quirks);
        write(&mut apic, TPR, 0xA5);
        let mut data = [0x5A; 4];
        let _ = apic.mmio_read(0x80, &mut data[..2], 0);
        assert_eq!(data, [0xA5, 0, 0x5A, 0x5A], "{quirks:?}");
        let _ = apic.mmio_read(0x81, &mut data[..1], 0);
        assert_eq!(data[0], 0, "{quirks:?}");
    }
    // The SDM profile answers every in-page read with the slot's bytes.
    let mut sdm = enabled(Quirks::SDM);
    write(&mut sdm, TPR, 0xA5);
    let mut data = [0x5A; 8];
    let _ = sdm.mmio_read(0x80, &mut data, 0);
    assert_eq!(data, [0xA5, 0, 0, 0, 0, 0, 0, 0]);
    let mut data = [0x5A; 4];
    let _ = sdm.mmio_read(0x82, &mut data, 0);
    assert_eq!(data, [0, 0, 0, 0]);
    let _ = sdm.mmio_read(0xB0, &mut data, 0);
    assert_eq!(data, [0; 4], "EOI reads 0");
}

#[test]
fn kvm_profile_still_reads_all_ones_from_an_undecoded_page() {
    let mut apic = enabled(Quirks::KVM);
    apic.wrmsr(IA32_APIC_BASE, 0xFEE0_0D00, 0).unwrap();
    let mut data = [0x5A; 8];
    assert_eq!(apic.mmio_read(0x84, &mut data, 0).invalid, Some(AccessError::NotDecoded));
    assert_eq!(data, [0xFF; 8], "KVM_X86_QUIRK_LAPIC_MMIO_HOLE");
}

#[test]
fn kvm_profile_x2apic_reads_fault_outside_kvms_readable_mask() {
    // kvm_x2apic_msr_read -> kvm_lapic_reg_read: no ARBPRI, DFR, ICR2, EOI, remote read,
    // SELF IPI or reserved register; past 0x3F0 nothing.
    let mut apic = x2apic(Quirks::KVM);
    for msr in [0x800, 0x801, 0x809, 0x80B, 0x80C, 0x80E, 0x829, 0x82F, 0x831, 0x83A, 0x83F, 0x840, 0x8FF] {
        assert_eq!(apic.rdmsr(msr, 0), Err(MsrError::GeneralProtection), "{msr:#x}");
    }
    for msr in [0x802, 0x803, 0x808, 0x80A, 0x80D, 0x80F, 0x828, 0x830, 0x833, 0x838, 0x839, 0x83E] {
        assert!(apic.rdmsr(msr, 0).is_ok(), "{msr:#x}");
    }
}

#[test]
fn reserved_offsets_record_illegal_register_address_in_the_sdm_profile() {
    for (quirks, esr) in [(Quirks::SDM, 0x80), (Quirks::KVM, 0)] {
        let mut apic = enabled(quirks);
        assert_eq!(read(&mut apic, 0x3F0), 0, "SELF IPI is x2APIC only");
        write(&mut apic, ESR, 0);
        assert_eq!(read(&mut apic, ESR), esr, "{quirks:?}");
    }
}

#[test]
fn read_only_xapic_registers_ignore_writes() {
    let mut apic = enabled(Quirks::SDM);
    let before = read(&mut apic, VERSION);
    let effects = write(&mut apic, VERSION, 0);
    assert_eq!(effects, Effects::default());
    assert_eq!(read(&mut apic, VERSION), before);
    write(&mut apic, ESR, 0);
    assert_eq!(read(&mut apic, ESR), 0, "a read-only register is not an illegal address");
}

#[test]
fn x2apic_msrs_fault_where_the_sdm_says() {
    let mut apic = x2apic(Quirks::SDM);
    let gp = Err(MsrError::GeneralProtection);
    assert_eq!(apic.rdmsr(0x80B, 0).map(|_| ()), gp, "EOI is write-only");
    assert_eq!(apic.rdmsr(0x83F, 0).map(|_| ()), gp, "SELF IPI is write-only");
    assert_eq!(apic.wrmsr(0x803, 0, 0).map(|_| ()), gp, "VERSION is read-only");
    assert_eq!(apic.wrmsr(0x80A, 0, 0).map(|_| ()), gp, "PPR is read-only");
    for absent in [0x809, 0x80C, 0x80E, 0x831, 0x840, 0x8FF, 0xBFF] {
        assert_eq!(apic.rdmsr(absent, 0).map(|_| ()), gp, "{absent:#x}");
    }
    assert_eq!(apic.wrmsr(0x808, 1 << 32, 0).map(|_| ()), gp, "bits 63:32 reserved");
    assert_eq!(apic.wrmsr(0x808, 0x100, 0).map(|_| ()), gp, "TPR bits 31:8 reserved");
    assert_eq!(apic.wrmsr(0x80B, 1, 0).map(|_| ()), gp, "EOI of a non-zero value");
    assert_eq!(apic.wrmsr(0x828, 1, 0).map(|_| ()), gp, "ESR of a non-zero value");
    assert_eq!(apic.wrmsr(0x83E, 0x4, 0).map(|_| ()), gp, "TDCR bit 2 reserved");
    assert_eq!(apic.wrmsr(0x832, 1 << 20, 0).map(|_| ()), gp, "LVT timer bit 20 reserved");
    // Read-only status bits written back by a read-modify-write do not fault.
    apic.wrmsr(0x835, u64::from(Lvt::DELIVERY_STATUS.bits() | 0x30), 0).unwrap();
    assert_eq!(apic.rdmsr(0x835, 0), Ok(0x30));
    assert_eq!(apic.rdmsr(0x1234, 0), Err(MsrError::NotApicMsr));
}

#[test]
fn kvm_drops_x2apic_reserved_bits_and_accepts_any_eoi_value() {
    let mut apic = x2apic(Quirks::KVM);
    apic.wrmsr(0x808, 0x1_23, 0).unwrap();
    assert_eq!(apic.rdmsr(0x808, 0), Ok(0x23));
    assert!(apic.wrmsr(0x80B, 5, 0).is_ok());
    assert_eq!(apic.wrmsr(0x808, 1 << 32, 0).map(|_| ()), Err(MsrError::GeneralProtection));
}

#[test]
fn x2apic_msrs_fault_outside_x2apic_mode() {
    let mut apic = enabled(Quirks::SDM);
    assert_eq!(apic.rdmsr(0x808, 0), Err(MsrError::GeneralProtection));
    assert_eq!(apic.wrmsr(0x80B, 0, 0).map(|_| ()), Err(MsrError::GeneralProtection));
}

// ----- priority, acceptance, acknowledge, EOI ------------------------------------------------

#[test]
fn interrupts_are_taken_highest_priority_first() {
    let mut apic = enabled(Quirks::SDM);
    for v in [0x31, 0x91, 0x55, 0x90] {
        assert!(apic.accept(&fixed(v)));
    }
    // Nested: each acknowledge raises PPR, so take them all before any EOI.
    let mut taken = Vec::new();
    while apic.pending_interrupt().is_some() {
        taken.push(apic.acknowledge().vector);
    }
    // 0x90 shares 0x91's class, so it waits for 0x91's EOI.
    assert_eq!(taken, [0x91]);
    let _ = write(&mut apic, EOI, 0);
    let (rest, _) = take_all(&mut apic);
    assert_eq!(rest, [0x90, 0x55, 0x31]);
}

#[test]
fn a_pending_vector_coalesces() {
    let mut apic = enabled(Quirks::SDM);
    assert!(apic.accept(&fixed(0x40)));
    assert!(apic.accept(&fixed(0x40)));
    assert_eq!(take_all(&mut apic).0, [0x40]);
}

#[test]
fn tpr_blocks_its_own_class_and_below() {
    // kvm selftest xapic_tpr_test: blocked by TPR = class, unblocked by TPR = class − 1.
    let mut apic = enabled(Quirks::SDM);
    assert!(apic.accept(&fixed(0x54)));
    write(&mut apic, TPR, 0x50);
    assert_eq!(apic.pending_interrupt(), None);
    write(&mut apic, TPR, 0x4F);
    assert_eq!(apic.pending_interrupt(), Some(0x54));
    apic.set_cr8(5);
    assert_eq!(apic.pending_interrupt(), None);
    assert_eq!(read(&mut apic, TPR), 0x50, "CR8 writes TPR[7:4]");
    assert_eq!(apic.cr8(), 5);
    apic.set_cr8(4);
    assert_eq!(take_all(&mut apic).0, [0x54]);
}

#[test]
fn ppr_is_tpr_or_the_in_service_class() {
    let mut apic = enabled(Quirks::SDM);
    for (tpr, isr, ppr) in [
        (0x00u32, None, 0x00u32),
        (0x35, None, 0x35),
        (0x35, Some(0x47), 0x40),
        (0x45, Some(0x47), 0x45),
        (0x4F, Some(0x4A), 0x4F),
    ] {
        let mut apic2 = apic.clone();
        write(&mut apic2, TPR, tpr);
        if let Some(v) = isr {
            assert!(apic2.accept(&fixed(v)));
            write(&mut apic2, TPR, 0);
            assert_eq!(apic2.acknowledge().vector, v);
            write(&mut apic2, TPR, tpr);
        }
        assert_eq!(read(&mut apic2, PPR), ppr, "TPR {tpr:#x} ISR {isr:?}");
    }
    write(&mut apic, TPR, 0);
}

#[test]
fn eoi_ends_the_highest_in_service_vector_and_unblocks_the_next() {
    let mut apic = enabled(Quirks::SDM);
    assert!(apic.accept(&fixed(0x30)));
    assert_eq!(apic.acknowledge().vector, 0x30);
    assert!(apic.accept(&fixed(0x60)));
    assert_eq!(apic.acknowledge().vector, 0x60, "a higher class preempts");
    assert!(apic.accept(&fixed(0x40)));
    assert_eq!(apic.pending_interrupt(), None, "0x40 waits behind 0x60");
    let _ = write(&mut apic, EOI, 0); // ends 0x60
    assert_eq!(apic.pending_interrupt(), Some(0x40), "0x40 beats the in-service 0x30");
    assert_eq!(apic.state().isr.iter().collect::<Vec<_>>(), [0x30]);
}

#[test]
fn gratuitous_eoi_changes_nothing() {
    let mut apic = enabled(Quirks::SDM);
    let before = apic.state();
    assert_eq!(write(&mut apic, EOI, 0), Effects::default());
    assert_eq!(apic.state(), before);
}

#[test]
fn acknowledge_with_nothing_deliverable_returns_the_spurious_vector() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, SVR, 0x1EF);
    assert!(apic.accept(&fixed(0x40)));
    write(&mut apic, TPR, 0x40);
    // The request was withdrawn (TPR raised) after the VMM decided to inject.
    assert_eq!(apic.acknowledge(), Ack { vector: 0xEF, spurious: true });
    assert!(apic.state().isr.is_empty(), "a spurious interrupt sets no ISR bit");
}

#[test]
fn level_triggered_eoi_is_broadcast_unless_suppressed() {
    let mut apic = LocalApic::new(LapicConfig { directed_eoi: true, ..LapicConfig::default() });
    write(&mut apic, SVR, SVR_ENABLED);
    assert!(apic.accept(&level(0x61)));
    assert!(apic.accept(&fixed(0x51)));
    assert!(apic.state().tmr.contains(0x61));
    assert!(!apic.state().tmr.contains(0x51));
    let (taken, eois) = take_all(&mut apic);
    assert_eq!(taken, [0x61, 0x51]);
    assert_eq!(eois, [0x61], "only the level-triggered vector");
    // SVR bit 12: the guest EOIs the IOAPIC itself.
    write(&mut apic, SVR, SVR_ENABLED | 0x1000);
    assert!(apic.accept(&level(0x61)));
    assert_eq!(take_all(&mut apic), (std::vec![0x61], std::vec![]));
}

#[test]
fn svr_bit_12_is_writable_only_with_directed_eoi() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, SVR, 0x11FF);
    assert_eq!(read(&mut apic, SVR), 0x1FF);
}

#[test]
fn an_edge_accept_clears_a_stale_tmr_bit() {
    let mut apic = enabled(Quirks::SDM);
    assert!(apic.accept(&level(0x70)));
    assert_eq!(take_all(&mut apic).1, [0x70]);
    assert!(apic.accept(&fixed(0x70)));
    assert_eq!(take_all(&mut apic).1, Vec::<u8>::new());
}

#[test]
fn a_level_deassert_message_is_ignored() {
    let mut apic = enabled(Quirks::SDM);
    assert!(!apic.accept(&Interrupt { level: false, ..level(0x70) }));
    assert_eq!(apic.pending_interrupt(), None);
}

#[test]
fn software_disabled_apic_discards_fixed_interrupts_but_takes_nmi_and_init() {
    let mut apic = LocalApic::new(LapicConfig::default());
    assert!(!apic.accept(&fixed(0x40)));
    assert!(apic.accept(&Interrupt { delivery_mode: DeliveryMode::Nmi, ..fixed(0) }));
    assert!(apic.accept(&Interrupt { delivery_mode: DeliveryMode::Init, ..fixed(0) }));
    let events = apic.take_events();
    assert_eq!((events.nmi, events.init), (1, true));
    assert_eq!(apic.pending_interrupt(), None);
}

#[test]
fn software_disable_masks_every_lvt_and_keeps_it_masked() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, LVT_LINT0, 0x700);
    write(&mut apic, LVT_TIMER, 0x40);
    write(&mut apic, SVR, 0xFF);
    assert_eq!(read(&mut apic, LVT_LINT0), 0x1_0700);
    assert_eq!(read(&mut apic, LVT_TIMER), 0x1_0040);
    write(&mut apic, LVT_TIMER, 0x41);
    assert_eq!(read(&mut apic, LVT_TIMER), 0x1_0041, "writes keep the mask while disabled");
    // Re-enabling does not unmask.
    write(&mut apic, SVR, SVR_ENABLED);
    assert_eq!(read(&mut apic, LVT_TIMER), 0x1_0041);
}

#[test]
fn a_globally_disabled_apic_takes_nothing_and_offers_nothing() {
    let mut apic = enabled(Quirks::SDM);
    assert!(apic.accept(&fixed(0x40)));
    apic.wrmsr(IA32_APIC_BASE, 0xFEE0_0100, 0).unwrap();
    assert_eq!(apic.pending_interrupt(), None);
    assert!(!apic.accept(&Interrupt { delivery_mode: DeliveryMode::Nmi, ..fixed(0) }));
}

// ----- errors ----------------------------------------------------------------------------------

#[test]
fn illegal_vectors_are_refused_with_receive_illegal_vector() {
    let mut apic = enabled(Quirks::SDM);
    assert!(!apic.accept(&fixed(0x0F)));
    assert_eq!(apic.pending_interrupt(), None);
    assert_eq!(read(&mut apic, ESR), 0, "not latched yet");
    write(&mut apic, ESR, 0);
    assert_eq!(read(&mut apic, ESR), Esr::RECEIVE_ILLEGAL_VECTOR.bits());
    write(&mut apic, ESR, 0);
    assert_eq!(read(&mut apic, ESR), 0, "back-to-back writes clear it");
    // KVM takes them like any vector.
    let mut kvm = enabled(Quirks::KVM);
    assert!(kvm.accept(&fixed(0x0F)));
    assert!(kvm.state().irr.contains(0x0F));
    // Class 0 never beats PPR, so it is never delivered.
    assert_eq!(kvm.pending_interrupt(), None);
}

#[test]
fn the_error_lvt_reports_each_error() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, LVT_ERROR, 0xFE);
    assert!(!apic.accept(&fixed(0x03)));
    assert_eq!(take_all(&mut apic).0, [0xFE]);
    // An error LVT with an illegal vector records the error without a second interrupt.
    write(&mut apic, LVT_ERROR, 0x05);
    assert!(!apic.accept(&fixed(0x03)));
    assert_eq!(apic.pending_interrupt(), None);
    write(&mut apic, ESR, 0);
    assert_eq!(read(&mut apic, ESR), Esr::RECEIVE_ILLEGAL_VECTOR.bits());
}

#[test]
fn kvm_never_records_errors() {
    let mut apic = enabled(Quirks::KVM);
    write(&mut apic, LVT_ERROR, 0xFE);
    write(&mut apic, ICR_LOW, 0x4_0005); // self IPI, vector 5
    write(&mut apic, ESR, 0);
    assert_eq!(read(&mut apic, ESR), 0);
    assert_eq!(apic.state().esr_pending, 0);
}

// ----- IPIs --------------------------------------------------------------------------------------

fn ipi_of(effects: Effects) -> Option<Interrupt> {
    effects.ipi
}

#[test]
fn icr_write_sends_the_ipi_with_the_icr_high_destination() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, ICR_HIGH, 0x0300_00FF); // destination 3; bits 23:0 dropped
    assert_eq!(read(&mut apic, ICR_HIGH), 0x0300_0000);
    let ipi = ipi_of(write(&mut apic, ICR_LOW, 0x0000_4841)).unwrap(); // logical, assert, vector 0x41
    assert_eq!(
        ipi,
        Interrupt {
            vector: 0x41,
            delivery_mode: DeliveryMode::Fixed,
            destination_mode: DestinationMode::Logical,
            trigger_mode: TriggerMode::Edge,
            level: true,
            destination: 3,
            shorthand: Shorthand::None,
            redirection_hint: false,
        }
    );
    assert_eq!(read(&mut apic, ICR_LOW) & 0x1000, 0, "delivery status always idle");
}

#[test]
fn every_delivery_mode_and_shorthand_goes_out_as_written_when_valid() {
    let mut apic = enabled(Quirks::SDM);
    // (ICR low, delivery mode, shorthand)
    for (icr, mode, shorthand) in [
        (0x0000_4030, DeliveryMode::Fixed, Shorthand::None),
        (0x0000_4130, DeliveryMode::LowestPriority, Shorthand::None),
        (0x0000_4200, DeliveryMode::Smi, Shorthand::None),
        (0x0000_4400, DeliveryMode::Nmi, Shorthand::None),
        (0x0000_4500, DeliveryMode::Init, Shorthand::None),
        (0x0000_4620, DeliveryMode::StartUp, Shorthand::None),
        (0x0004_4030, DeliveryMode::Fixed, Shorthand::ToSelf),
        (0x0008_4030, DeliveryMode::Fixed, Shorthand::AllIncludingSelf),
        (0x000C_4400, DeliveryMode::Nmi, Shorthand::AllExcludingSelf),
        (0x000C_4500, DeliveryMode::Init, Shorthand::AllExcludingSelf),
        (0x000C_4620, DeliveryMode::StartUp, Shorthand::AllExcludingSelf),
    ] {
        let ipi = ipi_of(write(&mut apic, ICR_LOW, icr)).unwrap_or_else(|| panic!("{icr:#x} sent nothing"));
        assert_eq!((ipi.delivery_mode, ipi.shorthand), (mode, shorthand), "{icr:#x}");
    }
}

#[test]
fn invalid_icr_combinations_are_not_sent_except_by_kvm() {
    for (icr, what) in [
        (0x0004_4400, "NMI to self"),
        (0x0008_4500, "INIT to all including self"),
        (0x0004_4130, "lowest priority to self"),
        (0x0000_4330, "remote read"),
        (0x0000_4730, "ExtINT"),
    ] {
        assert_eq!(ipi_of(write(&mut enabled(Quirks::SDM), ICR_LOW, icr)), None, "{what}");
        assert!(ipi_of(write(&mut enabled(Quirks::KVM), ICR_LOW, icr)).is_some(), "KVM: {what}");
    }
}

#[test]
fn an_illegal_vector_ipi_sets_send_illegal_vector_and_sends_nothing() {
    let mut apic = enabled(Quirks::SDM);
    assert_eq!(ipi_of(write(&mut apic, ICR_LOW, 0x4008)), None);
    write(&mut apic, ESR, 0);
    assert_eq!(read(&mut apic, ESR), Esr::SEND_ILLEGAL_VECTOR.bits());
    // NMI, INIT and SMI ignore the vector.
    assert!(ipi_of(write(&mut apic, ICR_LOW, 0x4400)).is_some());
}

#[test]
fn a_level_triggered_ipi_goes_out_as_edge_except_in_kvm() {
    // Fixed, level trigger (bit 15), assert (bit 14).
    let ipi = ipi_of(write(&mut enabled(Quirks::SDM), ICR_LOW, 0xC050)).unwrap();
    assert_eq!(ipi.trigger_mode, TriggerMode::Edge);
    let ipi = ipi_of(write(&mut enabled(Quirks::KVM), ICR_LOW, 0xC050)).unwrap();
    assert_eq!(ipi.trigger_mode, TriggerMode::Level);
    // De-asserting: not sent by Intel.
    assert_eq!(ipi_of(write(&mut enabled(Quirks::SDM), ICR_LOW, 0x8050)), None);
}

#[test]
fn init_level_deassert_is_not_sent() {
    for quirks in [Quirks::SDM, Quirks::KVM] {
        // INIT (101), level trigger, de-assert, all excluding self: Linux's old INIT de-assert.
        assert_eq!(ipi_of(write(&mut enabled(quirks), ICR_LOW, 0x000C_8500)), None, "{quirks:?}");
    }
}

#[test]
fn x2apic_icr_is_64_bits_with_reserved_bits_that_fault() {
    let mut apic = x2apic(Quirks::SDM);
    let ipi = apic.wrmsr(0x830, 0x0000_0123_0000_4041, 0).unwrap().ipi.unwrap();
    assert_eq!((ipi.vector, ipi.destination), (0x41, 0x123));
    assert_eq!(apic.rdmsr(0x830, 0), Ok(0x0000_0123_0000_4041));
    for bad in [1 << 13, 1 << 16, 1 << 20, 1 << 31] {
        assert_eq!(
            apic.wrmsr(0x830, 0x4041 | bad, 0).map(|_| ()),
            Err(MsrError::GeneralProtection),
            "{bad:#x}"
        );
    }
    // Bit 12 (delivery status) is ignored.
    assert!(apic.wrmsr(0x830, 0x5041, 0).unwrap().ipi.is_some());
    assert_eq!(apic.rdmsr(0x830, 0), Ok(0x4041));
}

#[test]
fn x2apic_self_ipi_is_taken_at_once() {
    let mut apic = x2apic(Quirks::SDM);
    assert_eq!(apic.wrmsr(0x83F, 0x61, 0).unwrap(), Effects::default());
    assert_eq!(apic.pending_interrupt(), Some(0x61));
    assert_eq!(apic.wrmsr(0x83F, 0x161, 0).map(|_| ()), Err(MsrError::GeneralProtection));
    assert!(apic.wrmsr(0x83F, 0x07, 0).is_ok());
    apic.wrmsr(0x828, 0, 0).unwrap();
    assert_eq!(apic.rdmsr(0x828, 0), Ok(u64::from(Esr::SEND_ILLEGAL_VECTOR.bits())));
}

#[test]
fn kvm_stores_reserved_icr_bits_the_sdm_drops() {
    let mut apic = enabled(Quirks::SDM);
    let _ = write(&mut apic, ICR_LOW, 0xFFF3_2040);
    assert_eq!(read(&mut apic, ICR_LOW), 0x000C_4040 & 0xFFF3_2040);
    let mut kvm = enabled(Quirks::KVM);
    let _ = write(&mut kvm, ICR_LOW, 0xFFF3_3040);
    assert_eq!(read(&mut kvm, ICR_LOW), 0xFFF3_2040, "all but delivery status");
}

// ----- INIT, SIPI, NMI, SMI, ExtINT, LINT ------------------------------------------------------

fn message(mode: DeliveryMode, vector: u8) -> Interrupt {
    Interrupt { delivery_mode: mode, ..fixed(vector) }
}

#[test]
fn an_ap_waits_for_a_sipi_after_reset_except_in_kvm() {
    // SDM "MP Initialization": after RESET the APs wait for a start-up IPI.
    let mut ap = LocalApic::new(LapicConfig { id: 1, bsp: false, ..LapicConfig::default() });
    assert!(ap.accept(&message(DeliveryMode::StartUp, 0x20)));
    assert_eq!(ap.take_events().sipi, Some(0x20));
    // KVM's AP starts "uninitialized" and needs an INIT first.
    let mut kvm = LocalApic::new(LapicConfig { id: 1, bsp: false, ..config(Quirks::KVM) });
    assert!(kvm.accept(&message(DeliveryMode::StartUp, 0x20)));
    assert_eq!(kvm.take_events().sipi, None);
}

#[test]
fn init_then_sipi_starts_an_ap_once() {
    let mut ap =
        LocalApic::new(LapicConfig { id: 1, bsp: false, ..config(Quirks::AP_NEEDS_INIT_AFTER_RESET) });
    write(&mut ap, SVR, SVR_ENABLED);
    // A SIPI before INIT is accepted by the APIC and dropped by the processor.
    assert!(ap.accept(&message(DeliveryMode::StartUp, 0x20)));
    assert_eq!(ap.take_events().sipi, None, "no SIPI before INIT");
    assert!(ap.accept(&message(DeliveryMode::Init, 0)));
    // The SIPI can arrive before the VMM processed the INIT.
    assert!(ap.accept(&message(DeliveryMode::StartUp, 0x20)));
    let events = ap.take_events();
    assert_eq!((events.init, events.sipi), (true, Some(0x20)));
    ap.init();
    assert!(ap.state().wait_for_sipi);
    ap.sipi_taken();
    assert!(ap.accept(&message(DeliveryMode::StartUp, 0x30)));
    assert_eq!(ap.take_events().sipi, None, "a second SIPI is ignored");
}

#[test]
fn init_resets_registers_but_keeps_the_id_and_mode() {
    let mut apic = x2apic(Quirks::SDM);
    apic.wrmsr(0x808, 0x20, 0).unwrap();
    assert!(apic.accept(&fixed(0x40)));
    apic.init();
    assert_eq!(apic.mode(), ApicMode::X2Apic);
    assert_eq!(apic.rdmsr(0x802, 0), Ok(3));
    assert_eq!(apic.rdmsr(0x80D, 0), Ok(u64::from(x2apic_ldr(3))));
    assert_eq!(apic.rdmsr(0x808, 0), Ok(0));
    assert_eq!(apic.rdmsr(0x80F, 0), Ok(0xFF));
    assert_eq!(apic.pending_interrupt(), None);
    assert!(!apic.state().wait_for_sipi, "the BSP restarts instead");
    let mut xapic = enabled(Quirks::SDM);
    write(&mut xapic, ID, 0x0900_0000);
    xapic.init();
    assert_eq!(read(&mut xapic, ID), 0x0900_0000);
}

#[test]
fn nmi_smi_and_extint_messages_are_latched_as_events() {
    let mut apic = enabled(Quirks::SDM);
    assert!(apic.accept(&message(DeliveryMode::Nmi, 0)));
    assert!(apic.accept(&message(DeliveryMode::Nmi, 0)));
    assert!(apic.accept(&message(DeliveryMode::Smi, 0)));
    assert!(apic.accept(&message(DeliveryMode::ExtInt, 0)));
    assert_eq!(
        apic.take_events(),
        PendingEvents { nmi: 2, smi: true, init: false, sipi: None, extint: true }
    );
    assert!(!apic.take_events().any());
    let mut kvm = enabled(Quirks::KVM);
    assert!(!kvm.accept(&message(DeliveryMode::ExtInt, 0)), "KVM ignores ExtINT messages");
    let mut no_smm = LocalApic::new(LapicConfig { smm: false, ..LapicConfig::default() });
    assert!(!no_smm.accept(&message(DeliveryMode::Smi, 0)), "without SMM an SMI is refused");
    assert!(!no_smm.take_events().smi);
}

#[test]
fn lint0_in_extint_mode_is_virtual_wire() {
    let mut apic = enabled(Quirks::SDM);
    assert!(!apic.accepts_pic_interrupts(), "masked at reset");
    write(&mut apic, LVT_LINT0, 0x700);
    assert!(apic.accepts_pic_interrupts());
    assert!(!apic.set_lint(Lint::Lint0, true), "the vector comes from the 8259A, not IRR");
    assert_eq!(apic.pending_interrupt(), None);
    write(&mut apic, LVT_LINT0, 0x1_0700);
    assert!(!apic.accepts_pic_interrupts());
    // Globally disabled: LINT0 is INTR.
    apic.wrmsr(IA32_APIC_BASE, 0xFEE0_0100, 0).unwrap();
    assert!(apic.accepts_pic_interrupts());
}

#[test]
fn kvm_reenables_lint0_on_the_bsp_only() {
    let bsp = LocalApic::new(config(Quirks::KVM));
    assert!(bsp.accepts_pic_interrupts());
    assert_eq!(bsp.state().lvt(LvtEntry::Lint0), 0x700);
    let ap = LocalApic::new(LapicConfig { bsp: false, ..config(Quirks::KVM) });
    assert!(!ap.accepts_pic_interrupts());
}

#[test]
fn lint1_nmi_fires_on_each_rising_edge() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, LVT_LINT1, 0x400);
    assert!(apic.set_lint(Lint::Lint1, true));
    assert!(!apic.set_lint(Lint::Lint1, true), "still high: no edge");
    assert!(!apic.set_lint(Lint::Lint1, false));
    assert!(apic.set_lint(Lint::Lint1, true));
    assert_eq!(apic.take_events().nmi, 2);
    // Globally disabled: LINT1 is the NMI pin whatever the LVT says.
    apic.wrmsr(IA32_APIC_BASE, 0xFEE0_0100, 0).unwrap();
    apic.set_lint(Lint::Lint1, false);
    assert!(apic.set_lint(Lint::Lint1, true));
}

#[test]
fn a_level_lint_interrupt_holds_remote_irr_until_eoi_and_repeats_while_asserted() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, LVT_LINT0, 0x8045); // fixed, level, vector 0x45
    assert!(apic.set_lint(Lint::Lint0, true));
    assert_ne!(read(&mut apic, LVT_LINT0) & Lvt::REMOTE_IRR.bits(), 0);
    assert_eq!(apic.acknowledge().vector, 0x45);
    assert!(!apic.set_lint(Lint::Lint0, true), "remote IRR blocks a second delivery");
    // EOI with the pin still asserted: delivered again, and the EOI is broadcast (TMR).
    assert_eq!(write(&mut apic, EOI, 0).eoi, Some(0x45));
    assert_eq!(apic.pending_interrupt(), Some(0x45));
    assert_eq!(apic.acknowledge().vector, 0x45);
    apic.set_lint(Lint::Lint0, false);
    let _ = write(&mut apic, EOI, 0);
    assert_eq!(read(&mut apic, LVT_LINT0), 0x8045);
    assert_eq!(apic.pending_interrupt(), None);
}

#[test]
fn a_level_lint_asserted_while_masked_is_taken_when_unmasked() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, LVT_LINT0, 0x1_8040); // masked, level, fixed 0x40
    assert!(!apic.set_lint(Lint::Lint0, true));
    write(&mut apic, LVT_LINT0, 0x8040);
    assert_eq!(apic.pending_interrupt(), Some(0x40), "the asserted level is sampled at unmask");
}

#[test]
fn kvm_keeps_no_lint_remote_irr() {
    let mut apic = enabled(Quirks::KVM);
    write(&mut apic, LVT_LINT0, 0x8045);
    assert!(apic.set_lint(Lint::Lint0, true));
    assert_eq!(read(&mut apic, LVT_LINT0) & Lvt::REMOTE_IRR.bits(), 0);
    // A guest-written remote IRR bit (KVM stores it) survives the EOI.
    write(&mut apic, LVT_LINT0, 0xC045);
    assert_eq!(apic.acknowledge().vector, 0x45);
    write(&mut apic, EOI, 0);
    assert_ne!(read(&mut apic, LVT_LINT0) & Lvt::REMOTE_IRR.bits(), 0);
}

#[test]
fn a_local_smi_needs_smm_too() {
    let mut apic = LocalApic::new(LapicConfig { smm: false, ..LapicConfig::default() });
    write(&mut apic, SVR, SVR_ENABLED);
    write(&mut apic, LVT_THERMAL, 0x200); // SMI
    assert!(!apic.local_interrupt(LvtEntry::Thermal));
    assert!(!apic.take_events().smi);
}

#[test]
fn a_host_write_out_of_x2apic_mode_restarts_the_xapic_id() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, ID, 0x0900_0000);
    apic.host_write_apic_base(0xFEE0_0D00).unwrap();
    apic.host_write_apic_base(0xFEE0_0900).unwrap();
    assert_eq!(apic.id(), 0);
}

#[test]
fn a_performance_counter_interrupt_masks_its_entry() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, LVT_PERF, 0x400); // NMI
    assert!(apic.local_interrupt(LvtEntry::Perf));
    assert_eq!(read(&mut apic, LVT_PERF), 0x1_0400);
    assert!(!apic.local_interrupt(LvtEntry::Perf));
    assert_eq!(apic.take_events().nmi, 1);
}

#[test]
fn thermal_interrupt_uses_its_vector_and_mode() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, LVT_THERMAL, 0x5A);
    assert!(apic.local_interrupt(LvtEntry::Thermal));
    assert_eq!(take_all(&mut apic).0, [0x5A]);
}

// ----- APR -------------------------------------------------------------------------------------

#[test]
fn apr_follows_the_sdm_formula_and_reads_zero_in_kvm() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, TPR, 0x35);
    assert_eq!(read(&mut apic, APR), 0x35, "nothing requested or in service");
    assert!(apic.accept(&fixed(0x62)));
    assert_eq!(read(&mut apic, APR), 0x60, "a higher request raises it to its class");
    let mut kvm = enabled(Quirks::KVM);
    write(&mut kvm, TPR, 0x35);
    assert_eq!(read(&mut kvm, APR), 0);
}

// ----- timer -----------------------------------------------------------------------------------

/// LVT timer, unmasked, vector 0xEC, in `mode` (bits 18:17).
fn timer_lvt(mode: u32) -> u32 {
    mode << 17 | 0xEC
}

#[test]
fn one_shot_fires_exactly_once_and_not_early() {
    // kvm-unit-tests `test_apic_timer_one_shot`: TDCR ÷1, 0x10000 counts.
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, TIMER_DIVIDE_CONFIG, 0xB);
    write(&mut apic, LVT_TIMER, timer_lvt(0));
    write_at(&mut apic, TIMER_INITIAL_COUNT, 0x10000, 1000);
    assert_eq!(apic.next_deadline(1000), Some(1000 + 0x10000));
    assert!(!apic.advance(1000 + 0xFFFF));
    assert_eq!(read_at(&mut apic, TIMER_CURRENT_COUNT, 1000 + 0x8000), 0x8000);
    assert!(apic.advance(1000 + 0x10000));
    assert_eq!(take_all(&mut apic).0, [0xEC]);
    assert!(!apic.advance(u64::MAX));
    assert_eq!(read_at(&mut apic, TIMER_CURRENT_COUNT, 5_000_000), 0);
    assert_eq!(apic.next_deadline(5_000_000), None);
}

#[test]
fn periodic_reloads_and_delivers_every_period() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, TIMER_DIVIDE_CONFIG, 0x3); // ÷16
    write(&mut apic, LVT_TIMER, timer_lvt(1));
    write_at(&mut apic, TIMER_INITIAL_COUNT, 1000, 0); // 16000 ticks
    let mut fired = Vec::new();
    let mut now = 0;
    while fired.len() < 5 {
        now = apic.next_deadline(now).unwrap();
        assert!(apic.advance(now));
        fired.push(now);
        assert_eq!(take_all(&mut apic).0, [0xEC]);
    }
    assert_eq!(fired, [16_000, 32_000, 48_000, 64_000, 80_000]);
    assert_eq!(read_at(&mut apic, TIMER_CURRENT_COUNT, 80_000), 1000, "reloaded");
    assert_eq!(read_at(&mut apic, TIMER_CURRENT_COUNT, 88_000), 500);
}

#[test]
fn a_masked_timer_counts_but_delivers_nothing() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, LVT_TIMER, 0x1_0000 | timer_lvt(0));
    write_at(&mut apic, TIMER_INITIAL_COUNT, 10, 0);
    assert!(apic.advance(20));
    assert_eq!(apic.pending_interrupt(), None);
    assert_eq!(read_at(&mut apic, TIMER_CURRENT_COUNT, 20), 0);
}

#[test]
fn writing_zero_to_the_initial_count_stops_the_timer() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, LVT_TIMER, timer_lvt(1));
    write_at(&mut apic, TIMER_INITIAL_COUNT, 10, 0);
    write_at(&mut apic, TIMER_INITIAL_COUNT, 0, 5);
    assert_eq!(apic.next_deadline(5), None);
    assert!(!apic.advance(1_000));
}

#[test]
fn changing_between_one_shot_and_periodic_keeps_counting() {
    // kvm-unit-tests `test_apic_change_mode`.
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, TIMER_DIVIDE_CONFIG, 0xB);
    write(&mut apic, LVT_TIMER, timer_lvt(0));
    write_at(&mut apic, TIMER_INITIAL_COUNT, 100, 0);
    // Switch to periodic half-way: TMICT kept, TMCCT not reset.
    write_at(&mut apic, LVT_TIMER, timer_lvt(1), 50);
    assert_eq!(read_at(&mut apic, TIMER_INITIAL_COUNT, 50), 100);
    assert_eq!(read_at(&mut apic, TIMER_CURRENT_COUNT, 50), 50);
    // It wraps and reloads from TMICT.
    assert!(apic.advance(100));
    assert_eq!(read_at(&mut apic, TIMER_CURRENT_COUNT, 110), 90);
    // Back to one-shot: it runs to 0 and stops.
    write_at(&mut apic, LVT_TIMER, timer_lvt(0), 150);
    assert!(apic.advance(200));
    assert_eq!(read_at(&mut apic, TIMER_CURRENT_COUNT, 250), 0);
    // An expired one-shot switched to periodic stays at 0.
    write_at(&mut apic, LVT_TIMER, timer_lvt(1), 260);
    assert_eq!(read_at(&mut apic, TIMER_CURRENT_COUNT, 400), 0);
    assert!(!apic.advance(1_000));
}

#[test]
fn a_divide_change_while_counting_changes_the_rate_not_the_count() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, TIMER_DIVIDE_CONFIG, 0xB); // ÷1
    write(&mut apic, LVT_TIMER, timer_lvt(0));
    write_at(&mut apic, TIMER_INITIAL_COUNT, 1000, 0);
    write_at(&mut apic, TIMER_DIVIDE_CONFIG, 0x0, 400); // ÷2 with 600 counts left
    assert_eq!(read_at(&mut apic, TIMER_CURRENT_COUNT, 400), 600);
    assert_eq!(apic.next_deadline(400), Some(400 + 1200));
}

#[test]
fn a_late_periodic_callback_fires_once() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, TIMER_DIVIDE_CONFIG, 0xB);
    write(&mut apic, LVT_TIMER, timer_lvt(1));
    write_at(&mut apic, TIMER_INITIAL_COUNT, 10, 0);
    // The VMM slept for a thousand periods: one interrupt, no storm.
    assert!(apic.advance(10_005));
    assert!(!apic.advance(10_005));
    assert_eq!(take_all(&mut apic).0, [0xEC]);
    assert_eq!(apic.next_deadline(10_005), Some(10_010));
}

#[test]
fn kvm_clamps_short_periods_to_200_microseconds() {
    let mut apic = enabled(Quirks::KVM);
    write(&mut apic, TIMER_DIVIDE_CONFIG, 0xB);
    write(&mut apic, LVT_TIMER, timer_lvt(1));
    write_at(&mut apic, TIMER_INITIAL_COUNT, 10, 0);
    assert_eq!(apic.next_deadline(0), Some(200_000), "1 GHz bus: 200 µs");
    let mut sdm = enabled(Quirks::SDM);
    write(&mut sdm, TIMER_DIVIDE_CONFIG, 0xB);
    write(&mut sdm, LVT_TIMER, timer_lvt(1));
    write_at(&mut sdm, TIMER_INITIAL_COUNT, 10, 0);
    assert_eq!(sdm.next_deadline(0), Some(10));
}

#[test]
fn the_timer_counts_bus_ticks_against_the_host_tsc() {
    // A 100 MHz bus against a 2.5 GHz TSC: one count at ÷1 is 25 TSC ticks.
    let bus = BusClock::new(100_000_000, 2_500_000_000).unwrap();
    let mut apic = LocalApic::new(LapicConfig { bus, ..LapicConfig::default() });
    write(&mut apic, SVR, SVR_ENABLED);
    write(&mut apic, TIMER_DIVIDE_CONFIG, 0xB);
    write(&mut apic, LVT_TIMER, timer_lvt(0));
    write_at(&mut apic, TIMER_INITIAL_COUNT, 4, 1000); // bus tick 40, expires at 44
    assert_eq!(apic.next_deadline(1000), Some(1100));
    assert!(!apic.advance(1099));
    assert!(apic.advance(1100));
}

#[test]
fn tsc_deadline_fires_once_at_the_deadline_and_then_reads_zero() {
    // kvm-unit-tests `test_tsc_deadline_timer`.
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, LVT_TIMER, timer_lvt(2));
    apic.wrmsr(IA32_TSC_DEADLINE, 5000, 1000).unwrap();
    assert_eq!(apic.rdmsr(IA32_TSC_DEADLINE, 1000), Ok(5000));
    assert_eq!(apic.next_deadline(1000), Some(5000));
    assert!(!apic.advance(4999));
    assert!(apic.advance(5000));
    assert_eq!(apic.rdmsr(IA32_TSC_DEADLINE, 5000), Ok(0));
    assert_eq!(take_all(&mut apic).0, [0xEC]);
    assert!(!apic.advance(10_000));
    // A deadline at or before now fires at once.
    apic.wrmsr(IA32_TSC_DEADLINE, 6000, 7000).unwrap();
    assert_eq!(take_all(&mut apic).0, [0xEC]);
    // Zero disarms.
    apic.wrmsr(IA32_TSC_DEADLINE, 9000, 8000).unwrap();
    apic.wrmsr(IA32_TSC_DEADLINE, 0, 8000).unwrap();
    assert!(!apic.advance(9000));
}

#[test]
fn tsc_deadline_follows_the_guest_tsc_offset() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, LVT_TIMER, timer_lvt(2));
    // The guest TSC runs 1000 ahead of the host's.
    apic.set_guest_tsc(vm_timer::tsc::GuestTsc { offset: 1000, ..Default::default() });
    apic.wrmsr(IA32_TSC_DEADLINE, 5000, 0).unwrap();
    assert_eq!(apic.next_deadline(0), Some(4000));
}

#[test]
fn tsc_deadline_is_ignored_outside_its_mode_and_a_mode_switch_disarms() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, LVT_TIMER, timer_lvt(0));
    apic.wrmsr(IA32_TSC_DEADLINE, 5000, 0).unwrap();
    assert_eq!(apic.rdmsr(IA32_TSC_DEADLINE, 0), Ok(0));
    // One-shot running, then TSC-deadline mode: disarmed, TMICT cleared.
    write_at(&mut apic, TIMER_INITIAL_COUNT, 100, 0);
    write_at(&mut apic, LVT_TIMER, timer_lvt(2), 10);
    assert_eq!(read_at(&mut apic, TIMER_INITIAL_COUNT, 10), 0);
    assert_eq!(apic.next_deadline(10), None);
    // TMICT writes are ignored and TMCCT reads 0 in TSC-deadline mode.
    write_at(&mut apic, TIMER_INITIAL_COUNT, 100, 20);
    assert_eq!(read_at(&mut apic, TIMER_INITIAL_COUNT, 20), 0);
    apic.wrmsr(IA32_TSC_DEADLINE, 5000, 20).unwrap();
    write_at(&mut apic, LVT_TIMER, timer_lvt(0), 30);
    assert_eq!(apic.next_deadline(30), None, "leaving TSC-deadline mode disarms");
    assert!(!apic.advance(10_000));
}

#[test]
fn a_masked_tsc_deadline_still_consumes_the_deadline() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, LVT_TIMER, 0x1_0000 | timer_lvt(2));
    apic.wrmsr(IA32_TSC_DEADLINE, 100, 0).unwrap();
    assert!(apic.advance(100));
    assert_eq!(apic.pending_interrupt(), None);
    write(&mut apic, LVT_TIMER, timer_lvt(2));
    assert_eq!(apic.rdmsr(IA32_TSC_DEADLINE, 100), Ok(0));
}

#[test]
fn tsc_deadline_msr_faults_without_cpuid_support() {
    let mut apic = LocalApic::new(LapicConfig { tsc_deadline: false, ..LapicConfig::default() });
    assert_eq!(apic.rdmsr(IA32_TSC_DEADLINE, 0), Err(MsrError::GeneralProtection));
    write(&mut apic, SVR, SVR_ENABLED);
    write(&mut apic, LVT_TIMER, timer_lvt(2));
    assert_eq!(read(&mut apic, LVT_TIMER), 0xEC, "mode 10b is not writable");
}

#[test]
fn reserved_timer_mode_does_not_start_a_count() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, LVT_TIMER, timer_lvt(3));
    write_at(&mut apic, TIMER_INITIAL_COUNT, 10, 0);
    assert_eq!(apic.next_deadline(0), None);
    assert_eq!(read_at(&mut apic, TIMER_CURRENT_COUNT, 0), 0);
}

// ----- state -----------------------------------------------------------------------------------

#[test]
fn restore_of_state_is_the_identity() {
    let mut apic = enabled(Quirks::SDM);
    write(&mut apic, LVT_TIMER, timer_lvt(1));
    write_at(&mut apic, TIMER_INITIAL_COUNT, 100, 0);
    assert!(apic.accept(&level(0x80)));
    let _ = apic.acknowledge();
    let state = apic.state();
    let mut other = LocalApic::new(config(Quirks::SDM));
    other.restore(&state).unwrap();
    assert_eq!(other, apic);
}

#[test]
fn restore_refuses_states_the_model_cannot_reach_and_changes_nothing() {
    let apic = enabled(Quirks::SDM);
    let good = apic.state();
    let mut bad_states = std::vec![
        LocalApicState { apic_base: good.apic_base | 1, ..good },
        LocalApicState { apic_base: 0xFEE0_0400, ..good },
        LocalApicState { dfr: 0, ..good },
        LocalApicState { ldr: 0x1, ..good },
        LocalApicState { svr: 0x1000, ..good },
        LocalApicState { esr: 0x100, ..good },
    ];
    let mut s = good;
    s.lvt[0] = 1 << 20;
    bad_states.push(s);
    let mut s = good;
    s.timer.tsc_deadline = 5;
    bad_states.push(s);
    let mut s = good;
    s.timer.expiry = Some(5);
    bad_states.push(s);
    let mut s = good;
    s.irr.insert(3);
    bad_states.push(s);
    for state in bad_states {
        let mut target = apic.clone();
        assert!(target.restore(&state).is_err(), "{state:?}");
        assert_eq!(target, apic);
    }
}

#[test]
fn reset_returns_to_power_on_keeping_the_pin_levels() {
    let mut apic = x2apic(Quirks::SDM);
    apic.set_lint(Lint::Lint1, true);
    apic.reset();
    assert_eq!(apic.mode(), ApicMode::XApic);
    assert_eq!(apic.state().lint, [false, true]);
    assert_eq!(
        apic.state(),
        LocalApicState { lint: [false, true], ..LocalApicState::power_on(apic.config()) }
    );
}
