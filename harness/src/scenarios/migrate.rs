//! A guest moved between irqchips while interrupts are in flight: on the `kvm-migrate`
//! backend each `host migrate` moves it from KVM's in-kernel irqchip into the models on
//! `kvm-userspace` or back; everywhere else it is a no-op, so the trace must be the same.
//!
//! What crosses each move in `migrate-in-flight`: a level interrupt delivered and not yet
//! taken (LAPIC IRR and TMR, IOAPIC Remote IRR, the line still high), a pending self-IPI in
//! IRR, a TPR with its subclass, a running one-shot timer, x2APIC mode. The handler ends every
//! interrupt, so the trace does not look inside one (see [`crate::backend::host`]).
//!
//! In `migrate-pit` (KVM_GET_PIT2 / KVM_SET_PIT2 through vm-timer's `kvm_pit_state2`
//! conversion): the PIT's write flip-flop between a count's LSB and MSB, a latched read-back
//! status, a running one-shot in both directions, and a periodic IRQ0 through the PIC. Counter
//! 0 restarts its count at every move (KVM_SET_PIT2 restarts it and KVM keeps no phase for it),
//! so IRQ0s come late, never lost or doubled, and the trace asserts counts and order only.

use super::apic::*;
use super::{inb, linux_init, out, pit_periodic_program, snapshot, MASTER_BASE};
use crate::scenario::Expect::{Irq, Value};
use crate::scenario::{EoiPolicy, HostOp, Op, Scenario};

/// The migration scenarios.
pub fn all() -> Vec<Scenario> {
    vec![migrate_in_flight(), migrate_pit()]
}

/// A counter's status byte as KVM's and the model's read-back give it in mode 0 before
/// terminal count: OUT low, NULL COUNT clear, LSB then MSB, mode 0, binary.
const STATUS_MODE0_COUNTING: u8 = 0x30;
/// The status byte in mode 0 after terminal count: OUT high, the rest as above.
const STATUS_MODE0_DONE: u8 = 0xB0;

fn migrate_pit() -> Scenario {
    let migrate = || Op::Host(HostOp::Migrate);
    // IRQ0, then a non-specific EOI with IF=0.
    let tick = [Op::Wait, out(0x20, 0x20)];
    // Counter 0: LSB then MSB, mode 0 (interrupt on terminal count), binary.
    let one_shot_control = out(0x43, 0x30);
    let count_byte = out(0x40, 0x00); // LSB or MSB of 0 = 65536 clocks (54.9 ms)
    let latch_status2 = out(0x43, 0xE8); // read-back: latch counter 2's status (not its count)
    let mut ops = linux_init();
    ops.push(out(0x21, 0xFE)); // OCW1: IRQ0 only
    ops.extend([
        out(0x61, 0x01),       // counter 2's gate high (KVM counts with it low too; the 8254 pauses)
        out(0x43, 0xB0),       // counter 2, LSB then MSB, mode 0, binary
        out(0x42, 0x00),       // count LSB
        out(0x42, 0x00),       // count MSB: 0 = 65536 clocks, ending before counter 0's below
        latch_status2.clone(), // still counting
        one_shot_control.clone(),
        count_byte.clone(),
        count_byte.clone(), // a one-shot starts in KVM (whose load time KVM does not keep)
        migrate(),          // kernel -> models: the latched status, the running one-shot
        inb(0x42),          // the status latched in KVM
    ]);
    ops.extend(tick.clone()); // the one-shot's terminal count, in the models
    ops.extend([out(0x43, 0xE2), inb(0x40)]); // read-back: counter 0's status
    ops.extend([
        one_shot_control.clone(),
        count_byte.clone(),
        count_byte.clone(), // a one-shot starts in the models
        latch_status2,      // counter 2 has reached terminal count
        migrate(),          // models -> kernel: the latched status, the running one-shot
        inb(0x42),          // the status latched in the models
    ]);
    ops.extend(tick.clone()); // the one-shot's terminal count, in KVM
    ops.extend([
        one_shot_control,
        count_byte.clone(), // counter 0's LSB; the MSB comes after the move
        migrate(),          // kernel -> models: the write flip-flop
        count_byte,         // the MSB: a one-shot starts (with a lost flip-flop it never does)
    ]);
    ops.extend(tick.clone()); // its terminal count, in the models
    ops.extend(pit_periodic_program(2386)); // counter 0 mode 2: IRQ0 every 2.0 ms
    for segment in 0..3 {
        if segment > 0 {
            ops.push(migrate()); // models -> kernel, then kernel -> models
        }
        ops.extend(tick.clone());
        ops.extend(tick.clone());
    }
    ops.push(out(0x21, 0xFF)); // mask IRQ0
    ops.push(Op::Record(9));
    let mut expect = vec![
        Value(STATUS_MODE0_COUNTING.into()),
        Irq(MASTER_BASE),
        Value(STATUS_MODE0_DONE.into()),
        Value(STATUS_MODE0_DONE.into()),
        Irq(MASTER_BASE),
        Irq(MASTER_BASE),
    ];
    expect.extend([Irq(MASTER_BASE); 6]);
    expect.push(Value(9));
    Scenario::new(
        "migrate-pit",
        "moved kernel -> models -> kernel -> models -> kernel -> models with the PIT's write flip-flop mid-count, latched statuses, a running one-shot each way and a periodic IRQ0 through the PIC",
        EoiPolicy::None,
        ops,
    )
    .expect(expect)
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
