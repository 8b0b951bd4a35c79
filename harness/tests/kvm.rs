//! The KVM backends against their expectations and against each other. Skipped (with a
//! message) where /dev/kvm cannot be opened; `VM_IRQ_REQUIRE_KVM=1` makes that a failure.

mod common;

use std::time::{Duration, Instant};

use irq_harness::backend::{BackendId, RunOptions};
use irq_harness::report::Outcome;
use irq_harness::scenario::{HostOp, Op, Profile, Scenario};
use irq_harness::scenarios::{self, linux_init, out, PIC_EOI};
use irq_harness::{diff, known};

#[test]
fn every_builtin_scenario_passes_on_every_kvm_backend_and_they_agree() {
    let Some(backends) = common::kvm_backends() else { return };
    let mut all = backends;
    all.insert(0, Box::new(irq_harness::backend::software::Software::new(Profile::Kvm)));
    all.insert(1, Box::new(irq_harness::backend::software::Software::new(Profile::Datasheet)));
    all.insert(2, Box::new(irq_harness::backend::apicv::SoftwareApicv::new(Profile::Kvm)));
    all.insert(3, Box::new(irq_harness::backend::apicv::SoftwareApicv::new(Profile::Datasheet)));
    let report = diff::run_matrix(&scenarios::all(), &all, &RunOptions::default());
    assert!(!report.failed(), "\n{}", report.table(true));
    // Something was compared with the kernel, bit for bit: every scenario kvm-kernel runs
    // without a host divergence, against at least the two KVM-profile model backends.
    let kernel_checks = report.diffs.iter().filter(|d| d.1.starts_with("kvm-kernel vs")).count();
    assert!(kernel_checks >= 2 * 25, "{kernel_checks} checks against kvm-kernel\n{}", report.table(true));
    // A known cell is exactly one of the table's entries, and every entry that applies on
    // this host still shows (a fixed model or host would make it stale).
    for cell in &report.cells {
        if let Outcome::Known { tag, .. } = &cell.outcome {
            let alternatives = known::find_all(&cell.scenario, cell.backend);
            assert!(alternatives.iter().any(|k| k.cause == *tag), "{} on {}", cell.scenario, cell.backend);
        }
    }
    for k in known::KNOWN {
        for backend in k.backends {
            let Some(cell) =
                report.cells.iter().find(|c| c.scenario == k.scenario && c.backend.to_string() == *backend)
            else {
                continue;
            };
            // (A host race may not show on a given run.)
            if !k.race && known::find(k.scenario, cell.backend).is_some() {
                assert!(
                    matches!(cell.outcome, Outcome::Known { .. }),
                    "{} on {backend} no longer diverges: remove it from known::KNOWN",
                    k.scenario
                );
            }
        }
    }
}

/// Every scenario with snapshots that both run without a host divergence.
fn snapshot_scenarios() -> Vec<Scenario> {
    scenarios::all()
        .into_iter()
        .filter(|s| s.programs().flatten().any(|op| matches!(op, Op::Host(HostOp::Snapshot(_)))))
        .filter(|s| known::find(&s.name, BackendId::KvmKernel).is_none())
        .filter(|s| known::find(&s.name, BackendId::KvmUserspace(Profile::Kvm)).is_none())
        .collect()
}

#[test]
fn kernel_pic_ioapic_and_lapic_state_equal_the_kvm_profile_models_at_every_snapshot() {
    let Some(kernel) = common::kvm_backend(BackendId::KvmKernel) else { return };
    let Some(user) = common::kvm_backend(BackendId::KvmUserspace(Profile::Kvm)) else { return };
    let (mut pic, mut ioapic, mut lapic) = (0, 0, 0);
    for scenario in snapshot_scenarios() {
        if kernel.supports(&scenario).is_err() || user.supports(&scenario).is_err() {
            continue;
        }
        let a = kernel.run(&scenario, &RunOptions::default()).unwrap();
        let b = user.run(&scenario, &RunOptions::default()).unwrap();
        for (x, y) in a.traces.iter().zip(&b.traces) {
            for s in x.snapshots.iter().chain(&y.snapshots) {
                assert!(s.pic.is_some() && s.ioapic.is_some() && s.lapic.is_some(), "{}", scenario.name);
            }
            pic += x.snapshots.len();
            ioapic += x.snapshots.len();
            lapic += x.snapshots.len();
        }
        diff::compare_runs(&scenario, &a, &b, diff::Comparable::ALL)
            .unwrap_or_else(|e| panic!("{}: {e}", scenario.name));
    }
    assert!(pic >= 30 && ioapic >= 30 && lapic >= 30, "only {pic}/{ioapic}/{lapic} snapshots compared");
}

#[test]
fn the_split_irqchip_ioapic_model_matches_the_kernel_ioapic() {
    let Some(kernel) = common::kvm_backend(BackendId::KvmKernel) else { return };
    let Some(split) = common::kvm_backend(BackendId::KvmSplit(Profile::Kvm)) else { return };
    for name in ["ioapic-registers", "ioapic-edge", "ioapic-level", "pit-ioapic"] {
        let scenario = scenarios::by_name(name).unwrap();
        let a = kernel.run(&scenario, &RunOptions::default()).unwrap();
        let b = split.run(&scenario, &RunOptions::default()).unwrap();
        diff::check(&scenario, Profile::Kvm, &b).unwrap_or_else(|e| panic!("{name} on kvm-split: {e}"));
        let what = diff::Comparable::between(BackendId::KvmKernel, BackendId::KvmSplit(Profile::Kvm));
        diff::compare_runs(&scenario, &a, &b, what).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn two_vcpus_start_by_init_sipi_and_exchange_ipis_on_every_kvm_backend() {
    let Some(backends) = common::kvm_backends() else { return };
    for name in ["smp-init-sipi", "smp-ipi-broadcast", "smp-lowest-priority"] {
        let scenario = scenarios::by_name(name).unwrap();
        for backend in backends.iter().filter(|b| b.supports(&scenario).is_ok()) {
            let out = backend
                .run(&scenario, &RunOptions::default())
                .unwrap_or_else(|e| panic!("{name} on {}: {e}", backend.id()));
            let profile = backend.id().profile_for(&scenario).unwrap();
            diff::check(&scenario, profile, &out)
                .unwrap_or_else(|e| panic!("{name} on {}: {e}", backend.id()));
            assert_eq!(out.traces.len(), 2);
        }
    }
    // The AP logged its APIC ID (1) before its first IPI: it really was started by the SIPI.
    let scenario = scenarios::by_name("smp-init-sipi").unwrap();
    let user = common::kvm_backend(BackendId::KvmUserspace(Profile::Kvm)).unwrap();
    let out = user.run(&scenario, &RunOptions::default()).unwrap();
    assert_eq!(out.traces[1].summary(), "val:0x1000000 irq:0x6f val:0xa9");
}

#[test]
fn lowest_priority_ipis_follow_kvm_vector_hashing_on_kvm_and_the_sdm_elsewhere() {
    let Some(kernel) = common::kvm_backend(BackendId::KvmKernel) else { return };
    let Some(sdm) = common::kvm_backend(BackendId::KvmUserspace(Profile::Datasheet)) else { return };
    let scenario = scenarios::by_name("smp-lowest-priority").unwrap();
    let k = kernel.run(&scenario, &RunOptions::default()).unwrap();
    let s = sdm.run(&scenario, &RunOptions::default()).unwrap();
    // KVM: 0x6c to the BSP, 0x6d to the AP. SDM: both to the AP (lower arbitration priority).
    assert_eq!(k.traces[0].summary(), "irq:0x7f val:0x1000 val:0x1");
    assert_eq!(k.traces[1].summary(), "irq:0x7e val:0x2000 val:0x2");
    assert_eq!(s.traces[0].summary(), "irq:0x7f val:0x0 val:0x1");
    assert_eq!(s.traces[1].summary(), "irq:0x7e val:0x3000 val:0x2");
}

#[test]
fn a_lost_interrupt_fails_in_well_under_a_second_with_the_registers() {
    let Some(backends) = common::kvm_backends() else { return };
    let mut ops = linux_init();
    ops.extend([out(0x21, 0x00), Op::Wait]); // nothing will ever interrupt
    let scenario = Scenario::new("lost-interrupt", "", PIC_EOI, ops);
    for backend in backends {
        let started = Instant::now();
        let err = backend.run(&scenario, &RunOptions::default()).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{}: took {:?}",
            backend.id(),
            started.elapsed()
        );
        assert!(
            err.message.contains("lost interrupt") || err.message.contains("no progress"),
            "{}: {err}",
            backend.id()
        );
        let regs = err.registers.unwrap_or_default();
        assert!(regs.contains("rip") && regs.contains("Some(Wait)"), "{}: {regs}", backend.id());
    }
}

#[test]
fn an_ap_whose_start_up_ipi_never_comes_fails_under_the_watchdog() {
    let Some(backends) = common::kvm_backends() else { return };
    let scenario = Scenario::new("no-sipi", "", PIC_EOI, vec![Op::Record(1)])
        .ap(vec![Op::Record(2)])
        .aps_wait_for_sipi();
    for backend in backends.iter().filter(|b| b.supports(&scenario).is_ok()) {
        let started = Instant::now();
        let err = backend.run(&scenario, &RunOptions::default()).unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(900), "{}", backend.id());
        assert!(err.message.contains("vCPU 1"), "{}: {err}", backend.id());
        assert_eq!(err.partial[0].summary(), "val:0x1", "{}: the BSP finished", backend.id());
    }
}

#[test]
fn an_unexpected_port_exit_is_a_reported_error_with_registers() {
    let Some(backends) = common::kvm_backends() else { return };
    let scenario = Scenario::new("port-80", "", PIC_EOI, vec![Op::Record(1), out(0x80, 0x42)]);
    for backend in backends {
        let err = backend.run(&scenario, &RunOptions::default()).unwrap_err();
        assert!(err.message.contains("unexpected port write: 0x80"), "{}: {err}", backend.id());
        assert!(err.registers.as_deref().unwrap_or("").contains("efer"), "{}", backend.id());
        assert_eq!(err.partial[0].summary(), "val:0x1", "{}: the log up to the error is kept", backend.id());
    }
}

#[test]
fn a_malformed_scenario_is_refused_before_the_vm_starts() {
    let Some(backends) = common::kvm_backends() else { return };
    let scenario = Scenario::new("bad-loop", "", PIC_EOI, vec![Op::Loop { target: 5, count: 2 }]);
    for backend in backends {
        let err = backend.run(&scenario, &RunOptions::default()).unwrap_err();
        assert!(err.message.contains("loop must jump back"), "{}: {err}", backend.id());
    }
}

#[test]
fn application_processors_run_their_own_programs() {
    let Some(backends) = common::kvm_backends() else { return };
    let scenario = diff::with_vcpus(scenarios::by_name("pic-irq-lines").unwrap(), 3);
    for backend in backends.iter().filter(|b| b.supports(&scenario).is_ok()) {
        let out = backend
            .run(&scenario, &RunOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", backend.id()));
        diff::check(&scenario, backend.id().profile(), &out)
            .unwrap_or_else(|e| panic!("{}: {e}", backend.id()));
        assert_eq!(out.traces[2].summary(), "val:0xa002 val:0xb002");
    }
}

#[test]
fn virtual_tsc_reads_the_model_offset_on_kvm_userspace() {
    let Some(user) = common::kvm_backend(BackendId::KvmUserspace(Profile::Kvm)) else { return };
    let scenario = scenarios::by_name("tsc-virtual").unwrap();
    let out = user.run(&scenario, &RunOptions::default()).unwrap();
    out.traces[0].check(scenario.expected(Profile::Kvm).unwrap()).unwrap();
    // Five MSR exits answered by the model (reads and writes of 0x10/0x3B), each an exit.
    assert!(out.stats.exits >= 9, "{:?}", out.stats);
}

#[test]
fn lapic_accesses_exit_to_the_models_on_kvm_userspace_and_stay_in_kvm_elsewhere() {
    let Some(user) = common::kvm_backend(BackendId::KvmUserspace(Profile::Kvm)) else { return };
    let Some(kernel) = common::kvm_backend(BackendId::KvmKernel) else { return };
    let scenario = scenarios::by_name("lapic-self-ipi-x2apic").unwrap();
    let u = user.run(&scenario, &RunOptions::default()).unwrap();
    let k = kernel.run(&scenario, &RunOptions::default()).unwrap();
    // 12 LAPIC MSR and MMIO accesses and two EOIs by MSR are exits on kvm-userspace only.
    assert!(u.stats.exits >= 14 && k.stats.exits <= 4, "userspace {:?}, kernel {:?}", u.stats, k.stats);
    assert_eq!(u.traces[0].summary(), k.traces[0].summary());
}
