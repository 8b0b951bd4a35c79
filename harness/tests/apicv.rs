//! The `software-apicv` backend: every built-in scenario gives `software`'s traces and device
//! state on it (or shows its documented divergence), and each posted-interrupt scenario takes
//! the delivery path it is about, which its counters show.

use irq_harness::backend::apicv::{ApicvCounters, SoftwareApicv};
use irq_harness::backend::software::{ExitReason, Software};
use irq_harness::backend::{self, Backend, BackendId, RunOptions, RunOutput};
use irq_harness::diff::{self, Comparable};
use irq_harness::known;
use irq_harness::report::Outcome;
use irq_harness::scenario::{Profile, Scenario};
use irq_harness::scenarios;

const PROFILES: [Profile; 2] = [Profile::Kvm, Profile::Datasheet];

#[test]
fn every_builtin_scenario_gives_the_software_traces_and_state_on_software_apicv() {
    for profile in PROFILES {
        let (plain, apicv) = (Software::new(profile), SoftwareApicv::new(profile));
        for scenario in scenarios::all() {
            let name = &scenario.name;
            apicv.supports(&scenario).unwrap_or_else(|e| panic!("{name}: {}", e.0));
            let a = plain.run(&scenario, &RunOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
            let b = apicv.run(&scenario, &RunOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
            // The APICv run differs from its expectation by exactly its known divergence (if
            // any), and from the software run by nothing once both are undone.
            let judge = |id, run: RunOutput| known::judge(&scenario, profile, id, &Ok(run));
            let (verdict, judged_b) = judge(apicv.id(), b);
            let (_, judged_a) = judge(plain.id(), a);
            if let known::Verdict::Fail(e) = verdict {
                panic!("{name} on {}: {e}", apicv.id());
            }
            let (a, b) = (judged_a.unwrap(), judged_b.unwrap());
            diff::compare_runs(&scenario, a.output(), b.output(), Comparable::ALL)
                .unwrap_or_else(|e| panic!("{name}: software vs software-apicv: {e}"));
        }
    }
}

/// Runs built-in scenario `name` on `software` and `software-apicv` with `profile`: the
/// APICv run's output and counters, after checking that both runs log the same per vCPU.
fn run_both(name: &str, profile: Profile) -> (RunOutput, Vec<ApicvCounters>) {
    let scenario = scenarios::by_name(name).unwrap();
    let plain = Software::new(profile).run(&scenario, &RunOptions::default()).unwrap();
    let (out, counters) = SoftwareApicv::new(profile).run_counted(&scenario).unwrap();
    let summaries = |o: &RunOutput| o.traces.iter().map(|t| t.summary()).collect::<Vec<_>>();
    assert_eq!(summaries(&plain), summaries(&out), "{name} on {profile:?}");
    (out, counters)
}

/// Each vCPU's log of `out`, as summaries.
fn logs(out: &RunOutput) -> Vec<String> {
    out.traces.iter().map(|t| t.summary()).collect()
}

#[test]
fn an_ipi_to_a_running_vcpu_is_processed_in_guest_mode_and_taken_without_a_vm_exit() {
    for profile in PROFILES {
        let (out, c) = run_both("posted-ipi-running", profile);
        assert_eq!(logs(&out), ["irq:0x7f irq:0x7e val:0xb5", "irq:0x6f val:0xa9"]);
        // The AP got 0x6f while it spun: notification processed in guest mode, no wake-up, no
        // PIR sync; its Wait found the vector recognized (its only HLT is the program's end).
        assert_eq!((c[1].notified_in_guest, c[1].notified_outside_guest, c[1].pir_syncs), (1, 0, 0));
        assert_eq!((c[1].deliveries, c[1].exits_for(ExitReason::Hlt)), (1, 1));
        // IPI virtualization sent the fixed physical IPIs without exits: the BSP's 0x6f, the
        // AP's hello 0x7f and 0x7e. The BSP's APIC-write exits are its SVR write, INIT and
        // SIPI (delivery modes IPI virtualization leaves to the VMM); the AP's its SVR write.
        assert_eq!((c[0].ipis_virtualized, c[1].ipis_virtualized), (1, 2));
        assert_eq!([0, 1].map(|v| c[v].exits_for(ExitReason::ApicWrite)), [3, 1]);
    }
}

#[test]
fn an_ipi_to_a_halted_vcpu_wakes_it_and_it_syncs_pir_before_its_next_entry() {
    for profile in PROFILES {
        let (out, c) = run_both("posted-ipi-halted", profile);
        assert_eq!(logs(&out), ["irq:0x7f irq:0x7d val:0xb5", "irq:0x6e val:0xa9"]);
        // The AP was halted in its Wait: a wake-up instead of a notification, one PIR sync.
        assert_eq!((c[1].notified_in_guest, c[1].notified_outside_guest, c[1].pir_syncs), (0, 1, 1));
        assert_eq!((c[1].deliveries, c[1].exits_for(ExitReason::Hlt)), (1, 2));
    }
}

#[test]
fn posted_vectors_at_or_below_the_tpr_class_wait_in_virr_until_tpr_drops() {
    for profile in PROFILES {
        let (out, c) = run_both("posted-tpr-pending", profile);
        // 0x7f (hello), 0x7e (done); IRR word 2 holds 0x55 and 0x48; PPR 0x50; TPR 0x40 lets
        // 0x55 in, 0x48 stays; CR8 3 lets 0x48 in.
        assert_eq!(
            logs(&out),
            [
                "irq:0x7f irq:0x7e val:0x200100 val:0x50 irq:0x55 val:0x100 irq:0x48 val:0x0 val:0xb5",
                "val:0xa9"
            ]
        );
        // 0x55 and 0x48 were posted while the BSP ran (processed in guest mode, then held by
        // VPPR); the TPR writes (MMIO, CR8) and the IRR reads did not exit, the PPR read did.
        assert_eq!((c[0].posts, c[0].notified_in_guest), (4, 2));
        assert_eq!(c[0].exits_for(ExitReason::ApicAccess), 1);
    }
}

#[test]
fn two_posts_of_one_vector_before_the_target_syncs_coalesce_into_one_delivery() {
    for profile in PROFILES {
        let (out, c) = run_both("posted-coalesce", profile);
        assert_eq!(
            logs(&out),
            [
                "irq:0x7f irq:0x7f irq:0x7c val:0x200000 irq:0x55 val:0x0 val:0xb5",
                "irq:0x7d val:0xa1",
                "irq:0x7d irq:0x7b val:0xa2"
            ]
        );
        // Two hellos, two posts of 0x55 (AP 2's found AP 1's still in PIR), 0x7c: five posts,
        // one coalesced, four deliveries.
        assert_eq!((c[0].posts, c[0].coalesced, c[0].deliveries), (5, 1, 4));
    }
}

#[test]
fn a_level_interrupts_eoi_exits_through_the_bitmap_and_redelivers_while_the_line_is_high() {
    for profile in PROFILES {
        let (out, c) = run_both("posted-level-eoi-exit", profile);
        // Edge 0x64; level 0x86 with Remote IRR set before and after the EOI (re-delivered,
        // pending in IRR, level in TMR); taken again; Remote IRR clear once the line is low.
        assert_eq!(
            logs(&out),
            ["irq:0x64 irq:0x86 val:0xc086 val:0xc086 val:0x40 val:0x40 irq:0x86 val:0x8086 val:0x0"]
        );
        // Two EOI-induced exits (0x86 twice), both forwarded to the IOAPIC; the edge vector's
        // EOI was virtualized. Three posts: 0x64, 0x86, its re-delivery.
        assert_eq!((c[0].exits_for(ExitReason::EoiInduced), c[0].eoi_forwarded), (2, 2));
        assert_eq!((c[0].posts, c[0].deliveries), (3, 3));
    }
}

#[test]
fn the_eoi_of_a_level_interrupt_whose_route_moved_away_still_reaches_the_ioapic() {
    for profile in PROFILES {
        let (out, c) = run_both("posted-level-route-moved", profile);
        // Remote IRR clear after each EOI, the first one after the entry moved to APIC 1.
        assert_eq!(logs(&out), ["irq:0x93 val:0x8093 irq:0x93 val:0x8093"]);
        // 0x93 stayed in the EOI-exit bitmap while pending EOI: both EOIs exited and were
        // forwarded.
        assert_eq!((c[0].exits_for(ExitReason::EoiInduced), c[0].eoi_forwarded), (2, 2));
    }
}

#[test]
fn each_virtualized_eoi_delivers_the_next_lower_pending_vector_without_a_vm_exit() {
    for profile in PROFILES {
        let (out, c) = run_both("posted-eoi-next-lower", profile);
        assert_eq!(
            logs(&out),
            ["irq:0x7f irq:0x7e val:0x40008 val:0x2 irq:0x61 irq:0x52 irq:0x43 val:0x0 val:0xb5", "val:0xa9"]
        );
        // Five deliveries, three HLT exits: the Waits for 0x7f and 0x7e, and the end. The Waits
        // for 0x61, 0x52 and 0x43 found them recognized (after the TPR write, after each EOI).
        // One MSR exit, the x2APIC switch; the TPR, EOI and IRR accesses passed. INIT and SIPI
        // through the ICR MSR are APIC-write exits (IPI virtualization virtualizes the MSR and
        // leaves those delivery modes to the VMM), after the SVR write's.
        assert_eq!((c[0].deliveries, c[0].exits_for(ExitReason::Hlt)), (5, 3));
        assert_eq!(c[0].exits_for(ExitReason::Msr), 1);
        assert_eq!(c[0].exits_for(ExitReason::ApicWrite), 3);
    }
}

#[test]
fn a_self_ipi_virtualized_after_a_level_acceptance_of_its_vector_leaves_vtmr_set() {
    let scenario = scenarios::by_name("posted-self-ipi-stale-tmr").unwrap();
    for profile in PROFILES {
        let plain = Software::new(profile).run(&scenario, &RunOptions::default()).unwrap();
        let (apicv, c) = SoftwareApicv::new(profile).run_counted(&scenario).unwrap();
        assert_eq!(logs(&plain), ["irq:0x71 val:0x20000 val:0x0 irq:0x71 val:0x0 val:0x8071"]);
        assert_eq!(logs(&apicv), ["irq:0x71 val:0x20000 val:0x20000 irq:0x71 val:0x20000 val:0x8071"]);
        // Both EOIs of 0x71 went to the IOAPIC as level EOIs.
        assert_eq!(c[0].eoi_forwarded, 2);
    }
}

#[test]
fn a_self_ipi_virtualized_while_the_apic_is_software_disabled_is_requested_all_the_same() {
    let scenario = scenarios::by_name("posted-self-ipi-disabled-apic").unwrap();
    for profile in PROFILES {
        let plain = Software::new(profile).run(&scenario, &RunOptions::default()).unwrap();
        let (apicv, c) = SoftwareApicv::new(profile).run_counted(&scenario).unwrap();
        assert_eq!(logs(&plain), ["val:0xff val:0x0 val:0x0"]);
        assert_eq!(logs(&apicv), ["val:0xff val:0x1 val:0x1"]);
        // No exit: the ICR write was virtualized (the SVR read and IRR reads too).
        assert_eq!(c[0].exits_for(ExitReason::ApicWrite), 1); // the enabling SVR write only
    }
}

#[test]
fn guest_tpr_eoi_and_self_ipis_complete_without_vm_exits() {
    // xAPIC: SVR, TPR (MMIO, CR8), self-IPIs by ICR shorthand, EOIs, IRR/ISR/TPR reads. Only
    // the SVR write (APIC write), the PPR read (APIC access), the snapshot's doorbell and the
    // end exit.
    let (_, c) = run_both("lapic-tpr-cr8", Profile::Kvm);
    let reasons = [ExitReason::ApicWrite, ExitReason::ApicAccess, ExitReason::Io, ExitReason::Hlt];
    assert_eq!(reasons.map(|r| c[0].exits_for(r)), [1, 1, 1, 1]);
    assert_eq!(c[0].exits(), 4);
    // x2APIC: the SELF IPI MSR and the MSR EOIs pass; SVR exits; the ICR with the self
    // shorthand is an APIC-write exit whose IPI the VMM posts (0x63); the fixed physical IPI
    // to its own ID is posted by IPI virtualization (0x64), and the ICR read after the next
    // exit still gives what the guest wrote.
    let (out, c) = run_both("lapic-self-ipi-x2apic", Profile::Kvm);
    assert_eq!((c[0].deliveries, c[0].posts, c[0].ipis_virtualized), (3, 2, 1));
    assert!(logs(&out)[0].contains("irq:0x64 val:0xfee00d00 val:0x64"), "{:?}", logs(&out));
}

#[test]
fn the_main_job_runs_software_apicv_on_both_profiles() {
    let (backends, _) = backend::available();
    let ids: Vec<BackendId> = backends.iter().map(|b| b.id()).collect();
    for profile in PROFILES {
        assert!(ids.contains(&BackendId::SoftwareApicv(profile)));
    }
    assert_eq!(BackendId::parse("software-apicv/kvm"), Some(BackendId::SoftwareApicv(Profile::Kvm)));
    assert_eq!(BackendId::parse("software-apicv/sdm"), Some(BackendId::SoftwareApicv(Profile::Datasheet)));
    assert!(BackendId::SoftwareApicv(Profile::Kvm).matches("software-apicv"));
    assert!(!BackendId::SoftwareApicv(Profile::Kvm).matches("software"));
    assert!(!BackendId::SoftwareApicv(Profile::Kvm).uses_kvm());
    // The matrix of the two software families: everything passes or is a documented
    // divergence, and every differential check between them agrees or is known.
    let software: Vec<_> = backends.into_iter().filter(|b| !b.id().uses_kvm()).collect();
    let report = diff::run_matrix(&scenarios::all(), &software, &RunOptions::default());
    assert!(!report.failed(), "\n{}", report.table(true));
    let unsupported = report.cells.iter().filter(|c| matches!(c.outcome, Outcome::Unsupported(_))).count();
    assert_eq!(unsupported, 0, "\n{}", report.table(true));
    let apicv_cells = report.cells.iter().filter(|c| matches!(c.backend, BackendId::SoftwareApicv(_)));
    assert_eq!(apicv_cells.count(), 2 * scenarios::all().len());
    assert!(report.table(false).contains(" apv/d"));
}

#[test]
fn a_scenario_the_models_reject_is_a_reported_error_on_software_apicv_too() {
    let scenario =
        Scenario::new("p80", "", irq_harness::scenario::EoiPolicy::None, vec![scenarios::out(0x80, 1)]);
    let err = SoftwareApicv::new(Profile::Kvm).run(&scenario, &RunOptions::default()).unwrap_err();
    assert!(err.message.contains("port 0x80"), "{err}");
}

#[test]
fn an_ipi_to_a_software_disabled_apic_exits_and_is_refused_as_a_lapic_refuses_it() {
    use irq_harness::scenario::Expect::{Irq, Value};
    use irq_harness::scenario::{EoiPolicy, Op};
    use irq_harness::scenarios::apic::{eoi, ipi, lapic_enable, lapic_read, reg, start_ap};
    // The BSP sends fixed 0x6f to the AP right after its start-up IPI, while the AP's APIC is
    // still software-disabled (SVR after INIT); the AP then enables it, reads IRR word 3 and
    // says hello. A LAPIC discards the fixed IPI: the PID-pointer table has no entry for a
    // disabled APIC, so IPI virtualization must not post it either.
    let mut bsp = vec![lapic_enable()];
    bsp.extend(start_ap(1));
    bsp.extend(ipi(1, 0x6F));
    bsp.extend([Op::Wait, eoi()]);
    let mut ap =
        vec![Op::Spin(1), Op::Loop { target: 0, count: 16 }, lapic_enable(), lapic_read(reg::IRR + 0x30)];
    ap.extend(ipi(0, 0x7F));
    let scenario =
        Scenario::new("ipi-to-disabled-apic", "fixed IPI to a software-disabled APIC", EoiPolicy::None, bsp)
            .ap(ap)
            .aps_wait_for_sipi()
            .expect(vec![Irq(0x7F)])
            .expect_aps(vec![vec![Value(0)]]);
    for profile in PROFILES {
        let plain = Software::new(profile).run(&scenario, &RunOptions::default()).unwrap();
        let (apicv, c) = SoftwareApicv::new(profile).run_counted(&scenario).unwrap();
        assert_eq!(logs(&plain), ["irq:0x7f", "val:0x0"]);
        assert_eq!(logs(&apicv), logs(&plain));
        // 0x6f exited (no entry for the disabled APIC); the hello to the enabled BSP did not.
        assert_eq!((c[0].ipis_virtualized, c[1].ipis_virtualized), (0, 1));
    }
}
