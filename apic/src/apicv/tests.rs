//! APIC-virtualization behaviour, checked where the guest sees it: which vector it takes at
//! which instruction boundary, and which VM exit ends each operation. Several tests replay the
//! matrices of kvm-unit-tests `x86/vmx_tests.c` (`vmx_basic_vid_test`, `vmx_eoi_virt_test`,
//! `vmx_posted_interrupts_test`, `apic_reg_virt_test`, `virt_x2apic_mode_test`).

extern crate std;

use std::vec::Vec;

use super::*;
use crate::lapic::regs::*;

/// APICv with a notification vector of 0xF2, entered.
fn entered(controls: Controls) -> VirtualApic {
    let mut v = VirtualApic::new(controls);
    v.set_notification_vector(0xF2);
    v.vm_entry().unwrap();
    v
}

/// Every vector the guest takes at consecutive interruptible boundaries, EOIing each through
/// the APIC-access page.
fn take_all(v: &mut VirtualApic) -> Vec<u8> {
    let mut taken = Vec::new();
    while let Some(vector) = v.deliver(true) {
        taken.push(vector);
        assert_eq!(v.write_apic_access(EOI, &[0; 4], &NoPidTable), Ok(None));
    }
    taken
}

#[test]
fn a_virtual_interrupt_is_delivered_iff_its_class_beats_tpr() {
    // vmx_basic_vid_test: every vector 0x21–0xFF against TPR values, via VM entry.
    for tpr in (0u8..=0xF0).step_by(0x10).chain([0x2F, 0x85]) {
        for vector in (0x21u8..=0xFF).step_by(7) {
            let mut v = VirtualApic::new(Controls::APICV);
            v.page_mut().write(VTPR, tpr.into());
            v.request(vector);
            v.vm_entry().unwrap();
            let expected = (vector >> 4 > tpr >> 4).then_some(vector);
            assert_eq!(v.deliver(true), expected, "vector {vector:#x} TPR {tpr:#x}");
            // RVI afterwards: cleared by delivery, kept while blocked.
            assert_eq!(v.rvi(), if expected.is_some() { 0 } else { vector });
        }
    }
}

#[test]
fn lowering_tpr_through_cr8_or_the_page_delivers_at_once() {
    let mut v = VirtualApic::new(Controls::APICV);
    v.page_mut().write(VTPR, 0x50);
    v.request(0x45);
    v.vm_entry().unwrap();
    assert_eq!(v.deliver(true), None);
    assert_eq!(v.write_cr8(3), None);
    assert_eq!(v.page().vtpr(), 0x30);
    assert_eq!(v.page().vppr(), 0x30, "PPR virtualization");
    assert_eq!(v.deliver(true), Some(0x45));
    // Through the page: the write clears bytes 3:1 of VTPR.
    let mut v = VirtualApic::new(Controls::APICV);
    v.page_mut().write(VTPR, 0x50);
    v.request(0x45);
    v.vm_entry().unwrap();
    assert_eq!(v.write_apic_access(TPR, &0xFFFF_FF20u32.to_le_bytes(), &NoPidTable), Ok(None));
    assert_eq!(v.page().read(VTPR), 0x20);
    assert_eq!(v.deliver(true), Some(0x45));
}

#[test]
fn raising_tpr_withdraws_a_recognized_interrupt() {
    let mut v = VirtualApic::new(Controls::APICV);
    v.request(0x45);
    v.vm_entry().unwrap();
    assert!(v.recognized());
    v.write_cr8(4);
    assert!(!v.recognized());
    assert_eq!(v.deliver(true), None);
}

#[test]
fn a_recognized_interrupt_waits_for_the_guest_to_be_interruptible() {
    let mut v = VirtualApic::new(Controls::APICV);
    v.request(0x61);
    v.vm_entry().unwrap();
    assert_eq!(v.deliver(false), None, "IF=0 or an interrupt shadow");
    assert_eq!(v.deliver(true), Some(0x61));
}

#[test]
fn eoi_virtualization_delivers_the_next_lower_vector() {
    // vmx_eoi_virt_test: two vectors, the EOI of the first delivers the second.
    let mut v = VirtualApic::new(Controls::APICV);
    v.request(0x80);
    v.request(0x70);
    v.vm_entry().unwrap();
    assert_eq!(v.deliver(true), Some(0x80));
    assert_eq!(v.deliver(true), None, "0x70 is below the in-service class");
    assert_eq!((v.svi(), v.rvi()), (0x80, 0x70));
    assert_eq!(v.write_apic_access(EOI, &[0; 4], &NoPidTable), Ok(None));
    assert_eq!(v.svi(), 0);
    assert_eq!(v.deliver(true), Some(0x70));
    assert_eq!(take_all(&mut v), Vec::<u8>::new());
    assert!(v.page().visr().contains(0x70) && !v.page().visr().contains(0x80));
}

#[test]
fn the_eoi_exit_bitmap_turns_an_eoi_into_an_eoi_induced_exit() {
    // vmx_eoi_virt_test with a full bitmap: one EOI-induced exit per EOI.
    let mut v = VirtualApic::new(Controls::APICV);
    v.set_eoi_exit_bitmap(VectorSet([!0; 4]));
    v.request(0x80);
    v.request(0x70);
    v.vm_entry().unwrap();
    for vector in [0x80, 0x70] {
        assert_eq!(v.deliver(true), Some(vector));
        assert_eq!(v.write_apic_access(EOI, &[0; 4], &NoPidTable), Err(VmExit::EoiInduced { vector }));
        // The processor already updated VISR/SVI/VPPR; the VMM re-enters.
        v.vm_entry().unwrap();
    }
    assert_eq!(v.page().visr(), VectorSet::EMPTY);
}

#[test]
fn loading_a_lapic_sets_rvi_and_svi() {
    use crate::lapic::LapicConfig;
    use crate::Interrupt;
    let mut apic = LocalApic::new(LapicConfig::default());
    let _ = apic.mmio_write(SVR.into(), &0x1FFu32.to_le_bytes(), 0);
    let _ = apic.accept(&Interrupt { vector: 0x70, level: true, ..Interrupt::default() });
    let _ = apic.acknowledge();
    let _ = apic.accept(&Interrupt { vector: 0x50, level: true, ..Interrupt::default() });
    let _ = apic.accept(&Interrupt { vector: 0x90, level: true, ..Interrupt::default() });
    let mut v = VirtualApic::new(Controls::APICV);
    v.load_lapic(&apic, 0);
    assert_eq!((v.rvi(), v.svi()), (0x90, 0x70));
    v.vm_entry().unwrap();
    // 0x50 waits behind the loaded in-service 0x70 until its EOI.
    assert_eq!(take_all(&mut v), [0x90]);
    assert_eq!(v.write_apic_access(EOI, &[0; 4], &NoPidTable), Ok(None));
    assert_eq!(take_all(&mut v), [0x50]);
}

#[test]
fn eoi_ends_svi_so_svi_must_match_visr() {
    // A VMM that restores VISR must update SVI (KVM's hwapic_isr_update).
    let mut v = VirtualApic::new(Controls::APICV);
    v.page_mut().set_bit(VISR, 0x90, true);
    v.page_mut().set_bit(VISR, 0x40, true);
    v.update_svi();
    v.vm_entry().unwrap();
    assert_eq!(v.write_apic_access(EOI, &[0; 4], &NoPidTable), Ok(None));
    assert_eq!(v.page().visr().iter().collect::<Vec<_>>(), [0x40]);
    assert_eq!(v.svi(), 0x40);
}

#[test]
fn a_self_ipi_through_the_icr_is_virtualized_and_others_exit() {
    let mut v = entered(Controls::APICV);
    // Fixed, edge, self shorthand (bits 19:18 = 01), vector 0x55; bit 14 (assert) is ignored.
    assert_eq!(v.write_apic_access(ICR_LOW, &0x0004_4055u32.to_le_bytes(), &NoPidTable), Ok(None));
    assert_eq!(v.deliver(true), Some(0x55));
    for (icr, why) in [
        (0x0000_4055u32, "no shorthand"),
        (0x0004_8055, "level-triggered"),
        (0x0004_4455, "NMI"),
        (0x0004_400F, "vector below 16"),
        (0x0014_4055, "reserved bit 20"),
    ] {
        assert_eq!(
            v.write_apic_access(ICR_LOW, &icr.to_le_bytes(), &NoPidTable),
            Err(VmExit::ApicWrite { offset: ICR_LOW }),
            "{why}"
        );
        assert_eq!(v.page().read(VICR_LO), icr, "the value is in the page for the VMM");
        v.vm_entry().unwrap();
    }
}

/// Two vCPUs' descriptors, APIC IDs 0 and 1, notifying physical CPUs 0x10 and 0x11 with 0xF2.
fn two_descriptors() -> [PostedInterruptDescriptor; 2] {
    [0x10, 0x11]
        .map(|cpu| PostedInterruptDescriptor::with_notification(0xF2, NotificationDestination::x2apic(cpu)))
}

/// vCPU 0 with IPI virtualization in xAPIC mode sends `icr` to APIC ID `destination`; the
/// outcome of the post, checked to name that destination and vector.
fn xapic_ipi(
    v: &mut VirtualApic,
    destination: u8,
    icr: u32,
    pids: &[PostedInterruptDescriptor],
) -> Result<Option<PostOutcome>, VmExit> {
    let high = (u32::from(destination) << 24).to_le_bytes();
    assert_eq!(v.write_apic_access(ICR_HIGH, &high, pids), Ok(None));
    let result = v.write_apic_access(ICR_LOW, &icr.to_le_bytes(), pids);
    Ok(result?.map(|posted| {
        assert_eq!((posted.destination, posted.vector), (destination.into(), icr as u8));
        posted.outcome
    }))
}

#[test]
fn ipi_virtualization_posts_a_fixed_physical_ipi_and_notifies_the_destination() {
    let pids = two_descriptors();
    let mut sender = entered(Controls::APICV | Controls::IPI_VIRTUALIZATION);
    let mut target = entered(Controls::APICV);
    // Fixed, edge, physical, no shorthand, vector 0x61 to APIC ID 1: no exit on the sender.
    let notification = Notification { vector: 0xF2, destination: NotificationDestination::x2apic(0x11) };
    assert_eq!(xapic_ipi(&mut sender, 1, 0x4061, &pids), Ok(Some(PostOutcome::Notify(notification))));
    assert!(!sender.page().virr().contains(0x61), "the sender's own requests are untouched");
    assert_eq!(pids[1].pir().iter().collect::<Vec<_>>(), [0x61]);
    assert!(pids[0].pir().is_empty());
    // ON is set: a second IPI before the target processes the first sends no notification.
    assert_eq!(xapic_ipi(&mut sender, 1, 0x4070, &pids), Ok(Some(PostOutcome::Pending)));
    assert_eq!(xapic_ipi(&mut sender, 1, 0x4070, &pids), Ok(Some(PostOutcome::Coalesced)));
    // The notification arrives at the target's processor: both vectors, highest first.
    assert_eq!(target.process_posted_interrupt(&pids[1], 0xF2), None);
    assert_eq!(take_all(&mut target), [0x70, 0x61]);
    // SN (the target is preempted): posted without a notification.
    let _ = pids[1].suppress_notifications(true);
    assert_eq!(xapic_ipi(&mut sender, 1, 0x4080, &pids), Ok(Some(PostOutcome::Suppressed)));
    assert!(pids[1].pir().contains(0x80));
}

#[test]
fn ipi_virtualization_notifies_for_a_vector_left_in_pir_without_on() {
    // SDM pseudo-code: PIR[V] ← 1, then ON and SN are examined whether or not PIR[V] was
    // already set. A descriptor with 0x61 requested but ON clear (as a VMM may write it):
    // hardware posting notifies, a VMM's `post` merges silently.
    let mut image = [0u8; 64];
    image[(0x61 / 8) as usize] = 1 << (0x61 % 8);
    image[34] = 0xF2; // NV
    let pids = [PostedInterruptDescriptor::new(), PostedInterruptDescriptor::from_bytes(&image)];
    assert_eq!(pids[1].post(0x61), PostOutcome::Coalesced);
    assert!(!pids[1].outstanding(), "post leaves ON clear");
    let mut v = entered(Controls::APICV | Controls::IPI_VIRTUALIZATION);
    assert!(
        matches!(xapic_ipi(&mut v, 1, 0x4061, &pids), Ok(Some(PostOutcome::Notify(n))) if n.vector == 0xF2)
    );
    assert!(pids[1].outstanding());
    // ON now set: a repeat of the same vector merges.
    assert_eq!(xapic_ipi(&mut v, 1, 0x4061, &pids), Ok(Some(PostOutcome::Coalesced)));
    // With SN set a repeat still merges, and a new vector is suppressed.
    let _ = pids[1].harvest();
    let _ = pids[1].suppress_notifications(true);
    assert_eq!(xapic_ipi(&mut v, 1, 0x4070, &pids), Ok(Some(PostOutcome::Suppressed)));
    assert_eq!(xapic_ipi(&mut v, 1, 0x4070, &pids), Ok(Some(PostOutcome::Coalesced)));
}

#[test]
fn ipi_virtualization_to_itself_arrives_as_its_own_notification() {
    let pids = two_descriptors();
    let mut v = entered(Controls::APICV | Controls::IPI_VIRTUALIZATION);
    let Ok(Some(PostOutcome::Notify(n))) = xapic_ipi(&mut v, 0, 0x4045, &pids) else { panic!() };
    assert_eq!(v.deliver(true), None, "nothing is evaluated until the notification arrives");
    assert_eq!(v.process_posted_interrupt(&pids[0], n.vector), None);
    assert_eq!(v.deliver(true), Some(0x45));
}

#[test]
fn ipis_ipi_virtualization_cannot_handle_are_apic_write_exits() {
    let pids = two_descriptors();
    let mut v = entered(Controls::APICV | Controls::IPI_VIRTUALIZATION);
    for (destination, icr, why) in [
        (1u8, 0x0000_4861u32, "logical destination"),
        (1, 0x0000_C061, "level-triggered"),
        (1, 0x0000_4461, "NMI"),
        (1, 0x0000_4161, "lowest priority"),
        (1, 0x0000_4500, "INIT"),
        (1, 0x000C_4061, "all-excluding-self shorthand"),
        (1, 0x0008_4061, "all-including-self shorthand"),
        (1, 0x0000_6061, "reserved bit 13"),
        (1, 0x0000_400F, "vector below 16"),
        (2, 0x0000_4061, "past the last PID-pointer index"),
        (0xFF, 0x0000_4061, "broadcast"),
    ] {
        assert_eq!(
            xapic_ipi(&mut v, destination, icr, &pids),
            Err(VmExit::ApicWrite { offset: ICR_LOW }),
            "{why}"
        );
        assert_eq!(v.page().read(VICR_LO), icr, "{why}: the command is in the page for the VMM");
        assert_eq!(v.page().read(VICR_HI) >> 24, u32::from(destination));
        v.vm_entry().unwrap();
    }
    assert!(pids.iter().all(|pid| pid.pir().is_empty()), "nothing was posted");
    // An invalid entry exits too; with the control clear every non-self IPI exits.
    let sparse = [Some(&pids[0]), None];
    let high = 1u32 << 24;
    assert_eq!(v.write_apic_access(ICR_HIGH, &high.to_le_bytes(), &sparse[..]), Ok(None));
    assert_eq!(
        v.write_apic_access(ICR_LOW, &0x4061u32.to_le_bytes(), &sparse[..]),
        Err(VmExit::ApicWrite { offset: ICR_LOW })
    );
    let mut v = entered(Controls::APICV);
    assert_eq!(xapic_ipi(&mut v, 1, 0x4061, &pids), Err(VmExit::ApicWrite { offset: ICR_LOW }));
    assert!(pids[1].pir().is_empty());
}

#[test]
fn x2apic_icr_writes_are_virtualized_with_ipi_virtualization() {
    let pids = two_descriptors();
    let mut v = entered(Controls::APICV_X2APIC | Controls::IPI_VIRTUALIZATION);
    // The 32-bit destination is bits 63:32.
    assert!(matches!(
        v.wrmsr(0x830, 1 << 32 | 0x61, &pids),
        MsrWrite::Posted(PostedIpi { destination: 1, vector: 0x61, outcome: PostOutcome::Notify(_) })
    ));
    assert!(pids[1].pir().contains(0x61));
    assert_eq!(v.page().read64(VICR_LO), 1 << 32 | 0x61, "the ICR is in the page as 64 bits");
    assert_eq!(v.wrmsr(0x830, 1 << 32 | 1 << 13 | 0x61, &pids), MsrWrite::GeneralProtection);
    assert_eq!(v.wrmsr(0x830, 1 << 32 | 1 << 20 | 0x61, &pids), MsrWrite::GeneralProtection);
    let exit = MsrWrite::Exit(VmExit::ApicWrite { offset: ICR_LOW });
    assert_eq!(v.wrmsr(0x830, 1 << 32 | 0x0800 | 0x61, &pids), exit, "logical");
    v.vm_entry().unwrap();
    assert_eq!(v.wrmsr(0x830, 2 << 32 | 0x61, &pids), exit, "APIC ID 2: no entry");
    assert_eq!(v.page().read64(VICR_LO), 2 << 32 | 0x61, "the VMM reads the command from the page");
    v.vm_entry().unwrap();
    assert_eq!(v.wrmsr(0x830, 1 << 32 | 0x0F, &pids), exit, "vector below 16");
    v.vm_entry().unwrap();
    // Without the control the ICR MSR is the VMM's.
    let mut v = entered(Controls::APICV_X2APIC);
    assert_eq!(v.wrmsr(0x830, 1 << 32 | 0x61, &pids), MsrWrite::NotVirtualized);
}

#[test]
fn icr_high_writes_keep_the_destination_byte_only() {
    let mut v = entered(Controls::APICV);
    assert_eq!(v.write_apic_access(ICR_HIGH, &0x03AB_CDEFu32.to_le_bytes(), &NoPidTable), Ok(None));
    assert_eq!(v.page().read(VICR_HI), 0x0300_0000);
}

#[test]
fn other_register_writes_are_apic_write_exits_with_the_value_in_the_page() {
    let mut v = entered(Controls::APICV);
    for offset in [LVT_TIMER, TIMER_INITIAL_COUNT, SVR, LDR, ESR] {
        assert_eq!(
            v.write_apic_access(offset, &0x1234u32.to_le_bytes(), &NoPidTable),
            Err(VmExit::ApicWrite { offset })
        );
        assert_eq!(v.page().read(offset), 0x1234);
        v.vm_entry().unwrap();
    }
    // Without register virtualization these are APIC-access exits and the page is untouched.
    let mut v = entered(Controls::APICV.difference(Controls::APIC_REGISTER_VIRTUALIZATION));
    assert_eq!(
        v.write_apic_access(LVT_TIMER, &0x99u32.to_le_bytes(), &NoPidTable),
        Err(VmExit::ApicAccess { offset: LVT_TIMER, write: true })
    );
    assert_eq!(v.page().read(LVT_TIMER), 0);
}

#[test]
fn apic_access_reads_follow_the_virtualization_table() {
    // apic_reg_virt_test: virtualized vs APIC-access exit, by offset and control.
    let mut v = entered(Controls::APICV);
    v.page_mut().write(ISR + 0x40, 0xDEAD_BEEF);
    assert_eq!(v.read_apic_access(ISR + 0x40, 4), Ok(0xDEAD_BEEF));
    assert_eq!(v.read_apic_access(ISR + 0x41, 1), Ok(0x00DE_ADBE), "a byte read is shifted down");
    for offset in [PPR, APR, RRD, TIMER_CURRENT_COUNT, 0x3F0, 0x400] {
        assert_eq!(
            v.read_apic_access(offset, 4),
            Err(VmExit::ApicAccess { offset, write: false }),
            "{offset:#x}"
        );
    }
    assert!(v.read_apic_access(ISR + 2, 4).is_err(), "crosses byte 3");
    assert!(v.read_apic_access(ISR + 4, 4).is_err(), "bytes 7:4");
    let mut shadow_only = entered(Controls::USE_TPR_SHADOW | Controls::VIRTUALIZE_APIC_ACCESSES);
    assert_eq!(shadow_only.read_apic_access(TPR, 4), Ok(0));
    assert!(shadow_only.read_apic_access(ISR, 4).is_err(), "only TPR without register virtualization");
}

#[test]
fn without_virtual_interrupt_delivery_tpr_below_threshold_exits() {
    let controls = Controls::USE_TPR_SHADOW | Controls::VIRTUALIZE_APIC_ACCESSES;
    let mut v = VirtualApic::new(controls);
    v.page_mut().write(VTPR, 0x50);
    v.set_tpr_threshold(4);
    v.vm_entry().unwrap();
    assert_eq!(v.write_cr8(4), None, "not below");
    assert_eq!(v.write_cr8(3), Some(VmExit::TprBelowThreshold));
    // A threshold above VTPR's class: with APIC accesses virtualized, a TPR-below-threshold
    // exit right after entry; without, a VM-entry failure.
    v.set_tpr_threshold(5);
    assert_eq!(v.vm_entry(), Ok(Some(VmExit::TprBelowThreshold)));
    v.set_controls(Controls::USE_TPR_SHADOW);
    assert_eq!(v.vm_entry(), Err(ControlError::TprThresholdAboveVtpr));
}

#[test]
fn invalid_control_combinations_fail_vm_entry() {
    for (controls, error) in [
        (
            Controls::VIRTUAL_INTERRUPT_DELIVERY | Controls::EXTERNAL_INTERRUPT_EXITING,
            ControlError::NeedsTprShadow,
        ),
        (Controls::APICV | Controls::VIRTUALIZE_X2APIC_MODE, ControlError::X2apicAndApicAccess),
        (
            Controls::APICV.difference(Controls::EXTERNAL_INTERRUPT_EXITING),
            ControlError::DeliveryNeedsExternalInterruptExiting,
        ),
        (
            Controls::APICV.difference(Controls::ACKNOWLEDGE_INTERRUPT_ON_EXIT),
            ControlError::PostedNeedsDeliveryAndAcknowledge,
        ),
    ] {
        assert_eq!(VirtualApic::new(controls).vm_entry(), Err(error), "{controls:?}");
    }
}

#[test]
fn interrupt_window_exiting_blocks_recognition() {
    let mut v = VirtualApic::new(Controls::APICV | Controls::INTERRUPT_WINDOW_EXITING);
    v.request(0x60);
    v.vm_entry().unwrap();
    assert_eq!(v.deliver(true), None);
    v.set_controls(Controls::APICV);
    v.vm_entry().unwrap();
    assert_eq!(v.deliver(true), Some(0x60));
}

#[test]
fn a_posted_interrupt_is_processed_on_the_notification_vector() {
    // vmx_posted_interrupts_test: posted while the guest runs, for several TPR classes.
    for tpr in [0x00u8, 0x40, 0x50, 0xF0] {
        let mut v = VirtualApic::new(Controls::APICV);
        v.set_notification_vector(0xF2);
        v.page_mut().write(VTPR, tpr.into());
        v.vm_entry().unwrap();
        let pid = PostedInterruptDescriptor::new();
        let _ = pid.post(0x45);
        assert_eq!(v.process_posted_interrupt(&pid, 0xF2), None);
        assert!(v.page().virr().contains(0x45), "moved to VIRR whatever TPR");
        assert_eq!(v.rvi(), 0x45);
        let expected = (0x4 > tpr >> 4).then_some(0x45);
        assert_eq!(v.deliver(true), expected, "TPR {tpr:#x}");
        assert!(pid.harvest().is_none(), "PIR is empty");
    }
}

#[test]
fn any_other_physical_interrupt_is_an_external_interrupt_exit() {
    let mut v = entered(Controls::APICV);
    let pid = PostedInterruptDescriptor::new();
    let _ = pid.post(0x45);
    assert_eq!(v.process_posted_interrupt(&pid, 0x30), Some(VmExit::ExternalInterrupt { vector: 0x30 }));
    assert!(!v.page().virr().contains(0x45), "the descriptor was not touched");
    // The VMM syncs before the next entry instead.
    assert!(v.sync_posted_interrupts(&pid));
    assert_eq!(v.rvi(), 0x45);
    assert!(!v.recognized(), "a software sync evaluates nothing");
    v.vm_entry().unwrap();
    assert_eq!(v.deliver(true), Some(0x45));
}

#[test]
fn x2apic_msrs_are_virtualized_as_the_sdm_says() {
    // virt_x2apic_mode_test.
    let mut v = entered(Controls::APICV_X2APIC);
    v.page_mut().write64(VICR_LO, 0x0000_0003_0000_4041);
    assert_eq!(v.rdmsr(0x830), MsrRead::Value(0x0000_0003_0000_4041), "64 bits at 0x300");
    assert_eq!(v.rdmsr(0x8FF), MsrRead::Value(0), "no existence check");
    assert_eq!(v.rdmsr(0x900), MsrRead::NotVirtualized);
    assert_eq!(v.wrmsr(0x808, 0x100, &NoPidTable), MsrWrite::GeneralProtection);
    assert_eq!(v.wrmsr(0x808, 0x20, &NoPidTable), MsrWrite::Done);
    assert_eq!(v.rdmsr(0x808), MsrRead::Value(0x20));
    assert_eq!(v.wrmsr(0x83F, 0x61, &NoPidTable), MsrWrite::Done);
    assert_eq!(v.deliver(true), Some(0x61));
    assert_eq!(v.wrmsr(0x80B, 1, &NoPidTable), MsrWrite::GeneralProtection);
    assert_eq!(v.wrmsr(0x80B, 0, &NoPidTable), MsrWrite::Done);
    assert_eq!(v.wrmsr(0x83F, 0x07, &NoPidTable), MsrWrite::Exit(VmExit::ApicWrite { offset: SELF_IPI }));
    v.vm_entry().unwrap();
    assert_eq!(v.wrmsr(0x83F, 1 << 32, &NoPidTable), MsrWrite::GeneralProtection);
    assert_eq!(v.wrmsr(0x832, 0x30, &NoPidTable), MsrWrite::NotVirtualized, "LVT writes are the VMM's");
    // Without register virtualization only TPR reads are virtualized.
    let v = entered(Controls::APICV_X2APIC.difference(Controls::APIC_REGISTER_VIRTUALIZATION));
    assert_eq!(v.rdmsr(0x808), MsrRead::Value(0));
    assert_eq!(v.rdmsr(0x830), MsrRead::NotVirtualized);
}

#[test]
fn the_eoi_exit_bitmap_covers_the_level_routes_that_reach_the_vcpu() {
    use crate::ioapic::{regs::*, IoApicConfig};
    use crate::lapic::{LapicConfig, Quirks};
    let mut ioapic = IoApic::new(IoApicConfig::default());
    let program = |ioapic: &mut IoApic, pin: u8, low: u32, dest: u8| {
        let _ = ioapic.mmio_write(IOREGSEL, &u32::from(IOREDTBL + 2 * pin).to_le_bytes());
        let _ = ioapic.mmio_write(IOWIN, &low.to_le_bytes());
        let _ = ioapic.mmio_write(IOREGSEL, &u32::from(IOREDTBL + 2 * pin + 1).to_le_bytes());
        let _ = ioapic.mmio_write(IOWIN, &(u32::from(dest) << 24).to_le_bytes());
    };
    program(&mut ioapic, 1, 0x0000_8051, 0); // level, vector 0x51, to APIC 0
    program(&mut ioapic, 2, 0x0000_8052, 1); // level, to APIC 1
    program(&mut ioapic, 3, 0x0000_0053, 0); // edge: never needs an EOI exit
    program(&mut ioapic, 4, 0x0001_8054, 0); // level but masked
    let apics: Vec<LocalApic> = (0..2)
        .map(|id| {
            let mut apic = LocalApic::new(LapicConfig {
                id,
                bsp: id == 0,
                quirks: Quirks::SDM,
                ..LapicConfig::default()
            });
            let _ = apic.mmio_write(SVR.into(), &0x1FFu32.to_le_bytes(), 0);
            apic
        })
        .collect();
    let bus = ApicBus::default();
    let none = VectorSet::EMPTY;
    assert!(eoi_exit_bitmap(&ioapic, &bus, &apics, 0, &none).iter().eq([0x51]));
    assert!(eoi_exit_bitmap(&ioapic, &bus, &apics, 1, &none).iter().eq([0x52]));
    // The guest moves pin 1 to APIC 1 while 0x51 is still in service on vCPU 0: vCPU 0 must
    // keep exiting on its EOI, or the IOAPIC never sees it.
    program(&mut ioapic, 1, 0x0000_8051, 1);
    assert!(eoi_exit_bitmap(&ioapic, &bus, &apics, 0, &none).iter().eq([] as [u8; 0]));
    let in_service: VectorSet = [0x51].into_iter().collect();
    assert!(eoi_exit_bitmap(&ioapic, &bus, &apics, 0, &in_service).iter().eq([0x51]));
}
