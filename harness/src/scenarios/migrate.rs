//! A guest moved between irqchips while interrupts are in flight: on the `kvm-migrate`
//! backend each `host migrate` moves it from KVM's in-kernel irqchip into the models on
//! `kvm-userspace` or back; everywhere else it is a no-op, so the trace must be the same.
//!
//! What crosses each move: a level interrupt delivered and not yet taken (LAPIC IRR and TMR,
//! IOAPIC Remote IRR, the line still high), a pending self-IPI in IRR, a TPR with its
//! subclass, a running one-shot timer, x2APIC mode. The handler ends every interrupt, so the
//! trace does not look inside one (see [`crate::backend::host`]).

use super::apic::*;
use super::snapshot;
use crate::scenario::Expect::{Irq, Value};
use crate::scenario::{EoiPolicy, HostOp, Op, Scenario};

/// The migration scenarios.
pub fn all() -> Vec<Scenario> {
    vec![migrate_in_flight()]
}

fn migrate_in_flight() -> Scenario {
    let migrate = Op::Host(HostOp::Migrate);
    let mut ops = ioapic_prologue();
    ops.extend(route(17, rte::LEVEL | 0x71));
    ops.push(gsi(17, true)); // delivered: Remote IRR set, 0x71 in IRR (IF=0), line high
    ops.push(migrate.clone()); // kernel -> models
    ops.extend(ioapic_read(ioreg::low(17)));
    ops.push(lapic_read(reg::IRR + 0x30));
    ops.extend([gsi(17, false), Op::Wait]); // the models' EOI reaches the models' IOAPIC
    ops.extend(ioapic_read(ioreg::low(17)));
    ops.push(lapic_write(reg::TPR, 0x25));
    ops.push(self_ipi(0x66)); // pending in IRR across the next move
    ops.push(snapshot("on-models"));
    ops.push(migrate.clone()); // models -> kernel
    ops.push(lapic_read(reg::TPR));
    ops.push(lapic_read(reg::TMR + 0x30)); // 0x71 was level-triggered
    ops.push(Op::Wait); // 0x66
    ops.extend([lapic_write(reg::TDCR, 0xB), lapic_write(reg::LVT_TIMER, 0x45)]);
    // A 30 ms one-shot, running across the move. It must not expire while the guest is stopped
    // for the move: KVM then holds it in lapic_timer.pending, which KVM_GET_LAPIC does not
    // show (neither TMCCT nor IRR), and it would be lost.
    ops.push(lapic_write(reg::TMICT, 30_000_000));
    ops.push(migrate.clone()); // kernel -> models
    ops.push(Op::Wait); // 0x45
    ops.push(lapic_read(reg::TMCCT));
    // KVM_SET_LAPIC restarts a one-shot from the page's current count, and an expired one
    // (TMCCT 0, TMICT not 0) fires again at once: stop it before moving back to the kernel.
    ops.push(lapic_write(reg::TMICT, 0));
    ops.push(Op::Wrmsr(msr::APIC_BASE, base::X2APIC));
    ops.push(snapshot("x2apic"));
    ops.push(migrate); // models -> kernel
    ops.push(Op::Rdmsr(msr::APIC_BASE));
    ops.push(Op::Rdmsr(msr::LDR));
    ops.push(Op::SetEoi(EoiPolicy::X2apicMsr));
    ops.push(Op::Wrmsr(msr::SELF_IPI, 0x67));
    ops.push(Op::Wait);
    ops.push(snapshot("end"));
    Scenario::new(
        "migrate-in-flight",
        "moved kernel -> models -> kernel -> models -> kernel with a level interrupt pending and Remote IRR set, a pending IPI, TPR with its subclass, a running timer and x2APIC mode",
        EoiPolicy::LapicMmio,
        ops,
    )
    .expect(vec![
        Value(u64::from(rte::REMOTE_IRR | rte::LEVEL | 0x71)),
        Value(1 << (0x71 - 0x60)),
        Irq(0x71),
        Value(u64::from(rte::LEVEL | 0x71)),
        Value(0x25),
        Value(1 << (0x71 - 0x60)),
        Irq(0x66),
        Irq(0x45),
        Value(0),
        Value(base::X2APIC),
        Value(1),
        Irq(0x67),
    ])
}
