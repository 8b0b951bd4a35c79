//! The KVM backends against their expectations and against each other. Skipped (with a
//! message) where /dev/kvm cannot be opened; `VM_IRQ_REQUIRE_KVM=1` makes that a failure.

mod common;

use std::time::{Duration, Instant};

use irq_harness::backend::{BackendId, RunOptions};
use irq_harness::diff;
use irq_harness::scenario::{Op, Profile, Scenario};
use irq_harness::scenarios::{self, linux_init, out, PIC_EOI};

#[test]
fn every_builtin_scenario_passes_on_every_kvm_backend_and_they_agree() {
    let Some(backends) = common::kvm_backends() else { return };
    let mut all = backends;
    all.insert(0, Box::new(irq_harness::backend::software::Software::new(Profile::Kvm)));
    all.insert(1, Box::new(irq_harness::backend::software::Software::new(Profile::Datasheet)));
    let report = diff::run_matrix(&scenarios::all(), &all, &RunOptions::default());
    assert!(!report.failed(), "\n{}", report.table());
    // Something was compared with the kernel, bit for bit.
    assert!(report.diffs.iter().filter(|d| d.1.starts_with("kvm-kernel vs")).count() >= 3 * 12);
}

#[test]
fn kernel_pic_state_equals_the_kvm_profile_models_at_every_snapshot() {
    let Some(kernel) = common::kvm_backend(BackendId::KvmKernel) else { return };
    let Some(user) = common::kvm_backend(BackendId::KvmUserspace(Profile::Kvm)) else { return };
    let mut compared = 0;
    for scenario in scenarios::all()
        .into_iter()
        .filter(|s| s.ops.iter().any(|op| matches!(op, Op::Host(irq_harness::scenario::HostOp::Snapshot(_)))))
    {
        let a = kernel.run(&scenario, &RunOptions::default()).unwrap();
        let b = user.run(&scenario, &RunOptions::default()).unwrap();
        assert!(a.traces[0]
            .snapshots
            .iter()
            .all(|s| s.pic.is_some() && s.ioapic.is_some() && s.lapic.is_some()));
        diff::compare_snapshots(&a.traces[0], &b.traces[0])
            .unwrap_or_else(|e| panic!("{}: {e}", scenario.name));
        compared += a.traces[0].snapshots.len();
    }
    assert!(compared >= 10, "only {compared} snapshots compared");
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
    for backend in backends {
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
