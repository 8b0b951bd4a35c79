//! IOAPIC scenarios: registers, edge and level pins with Remote IRR and EOI (LAPIC broadcast,
//! the version-0x20 EOI register, EOI-broadcast suppression), masked lines, and the PIT's
//! IRQ0 through the IOAPIC.
//!
//! Every one starts with [`ioapic_prologue`] (the PIC masked, the LAPIC enabled) and routes
//! pins to APIC 0. Pins 16–23 are the IOAPIC's alone; pins below 16 are shared with the
//! (masked) PIC, as GSIs are under KVM's default routing. The datasheet profile's IOAPIC is
//! the ICH IOxAPIC (version 0x20, EOI register); KVM's is version 0x11 without it.

use super::apic::*;
use super::{linux_init, pit_periodic_program, snapshot};
use crate::scenario::Expect::{Irq, Value};
use crate::scenario::{Device, EoiPolicy, Op, Scenario};

/// The IOAPIC scenarios.
pub fn all() -> Vec<Scenario> {
    vec![
        registers(),
        edge(),
        level(),
        level_eoi(),
        eoi_lost_in_hlt(),
        level_masked(),
        level_not_accepted(),
        level_smi(),
        level_startup(),
        level_lowest_no_candidate(),
        eoi_register(),
        directed_eoi(),
        pit_ioapic(),
    ]
}

fn registers() -> Scenario {
    let mut ops = linux_init();
    ops.extend(ioapic_read(ioreg::VERSION));
    ops.extend(ioapic_write(ioreg::ID, 0x0F00_0000)); // ID 15
    ops.extend(ioapic_read(ioreg::ID));
    ops.extend(ioapic_read(ioreg::ARB)); // the arbitration ID follows the ID
    ops.extend(ioapic_write(ioreg::ID, 0xFFFF_FFFF)); // only bits 27:24 exist
    ops.extend(ioapic_read(ioreg::ID));
    ops.extend(ioapic_write(ioreg::VERSION, 0)); // read-only (Windows writes it)
    ops.extend(ioapic_read(ioreg::VERSION));
    ops.extend(ioapic_read(0x03)); // reserved index
    ops.extend(ioapic_read(ioreg::low(5)));
    ops.extend(ioapic_read(ioreg::high(5)));
    ops.push(Op::MmioRead { addr: crate::scenario::IOAPIC_PAGE, wide: false }); // IOREGSEL reads back
    ops.extend(ioapic_write(ioreg::ID, 0));
    ops.push(snapshot("end"));
    Scenario::new(
        "ioapic-registers",
        "IOAPIC version (KVM 0x11, ICH 0x20, 24 entries), ID and arbitration ID, read-only version, reserved index (KVM: all ones), reset entries",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![
        Value(0x0017_0011),
        Value(0x0F00_0000),
        Value(0x0F00_0000),
        Value(0x0F00_0000),
        Value(0x0017_0011),
        Value(0xFFFF_FFFF),
        Value(u64::from(rte::RESET)),
        Value(0),
        Value(u64::from(ioreg::high(5))),
    ])
    .expect_datasheet(vec![
        Value(0x0017_0020),
        Value(0x0F00_0000),
        Value(0x0F00_0000),
        Value(0x0F00_0000),
        Value(0x0017_0020),
        Value(0),
        Value(u64::from(rte::RESET)),
        Value(0),
        Value(u64::from(ioreg::high(5))),
    ])
    .datasheet_follows(&[Device::Ioapic])
}

fn edge() -> Scenario {
    let mut ops = ioapic_prologue();
    ops.extend(route(4, 0x54)); // pin 4 (GSI 4, shared with the masked PIC): edge, vector 0x54
    ops.extend(route(20, 0x64)); // pin 20: edge, vector 0x64
    ops.extend([gsi(4, true), gsi(4, false), Op::Wait]);
    ops.extend([gsi(20, true), gsi(20, false), Op::Wait]);
    // A masked edge is dropped: nothing in IRR, and nothing on unmask.
    ops.extend(ioapic_write(ioreg::low(20), 0x64 | rte::MASKED));
    ops.extend([gsi(20, true), gsi(20, false)]);
    ops.extend(ioapic_write(ioreg::low(20), 0x64));
    ops.push(lapic_read(reg::IRR + 0x30)); // vectors 0x60-0x7f
                                           // A line held high on a masked edge entry: still not delivered on unmask (KVM keeps it
                                           // in irr, which the snapshot shows).
    ops.extend(ioapic_write(ioreg::low(20), 0x64 | rte::MASKED));
    ops.push(gsi(20, true));
    ops.extend(ioapic_write(ioreg::low(20), 0x64));
    ops.push(lapic_read(reg::IRR + 0x30));
    ops.push(snapshot("held-edge"));
    ops.push(gsi(20, false));
    // An edge while the line is high is no edge.
    ops.extend([gsi(4, true), Op::Wait, gsi(4, true), gsi(4, false)]);
    ops.push(lapic_read(reg::IRR + 0x20)); // vectors 0x40-0x5f
    ops.push(snapshot("end"));
    Scenario::new(
        "ioapic-edge",
        "edge pins 4 and 20 reach their vectors; a masked edge is dropped and not delivered on unmask; a repeated assert is no edge",
        EoiPolicy::LapicMmio,
        ops,
    )
    .expect(vec![Irq(0x54), Irq(0x64), Value(0), Value(0), Irq(0x54), Value(0)])
}

/// Level pins seen from outside the handler, which ends each interrupt (LAPIC EOI by MMIO):
/// the line is lowered before the interrupt is taken, so no EOI ever finds it high (a guest
/// cannot lower it inside its handler here, and a re-delivery while IF=1 in the handler would
/// be a second interrupt in one `Wait`).
fn level() -> Scenario {
    let mut ops = ioapic_prologue();
    ops.extend(route(22, rte::LEVEL | 0x76));
    ops.extend([gsi(22, true), gsi(22, true)]); // two asserts, one message
    ops.extend(ioapic_read(ioreg::low(22))); // Remote IRR set at delivery
    ops.push(lapic_read(reg::IRR + 0x30)); // requested, not yet taken (IF=0)
    ops.extend([gsi(22, false), Op::Wait]); // its EOI finds the line low
    ops.extend(ioapic_read(ioreg::low(22))); // Remote IRR clear
    ops.push(lapic_read(reg::TMR + 0x30)); // accepted level-triggered
    ops.extend([gsi(22, true), gsi(22, false), Op::Wait]); // a new assert is a new interrupt
    ops.extend(ioapic_read(ioreg::low(22)));
    ops.push(lapic_read(reg::IRR + 0x30));
    ops.push(snapshot("end"));
    let level = u64::from(rte::LEVEL | 0x76);
    Scenario::new(
        "ioapic-level",
        "a level pin sets Remote IRR and TMR at delivery (repeated asserts merge), the handler's EOI clears it, a new assert delivers again",
        EoiPolicy::LapicMmio,
        ops,
    )
    .expect(vec![
        Value(level | u64::from(rte::REMOTE_IRR)),
        Value(1 << (0x76 - 0x60)),
        Irq(0x76),
        Value(level),
        Value(1 << (0x76 - 0x60)),
        Irq(0x76),
        Value(level),
        Value(0),
    ])
}

fn level_eoi() -> Scenario {
    let mut ops = ioapic_prologue();
    ops.extend(route(17, rte::LEVEL | 0x71));
    ops.extend([gsi(17, true), Op::Wait]);
    ops.extend(ioapic_read(ioreg::low(17))); // Remote IRR set
    ops.push(lapic_read(reg::TMR + 0x30)); // the LAPIC took it level-triggered
    ops.push(gsi(17, false));
    ops.push(eoi()); // broadcast to the IOAPIC: Remote IRR clear
    ops.extend(ioapic_read(ioreg::low(17)));
    ops.extend([gsi(17, true), Op::Wait]); // delivered again
    ops.push(eoi()); // line still high: the EOI re-delivers it
    ops.extend([Op::Wait, gsi(17, false), eoi()]);
    ops.extend(ioapic_read(ioreg::low(17)));
    ops.push(lapic_read(reg::ISR + 0x30));
    ops.push(snapshot("end"));
    Scenario::new(
        "ioapic-level-eoi",
        "a level pin sets Remote IRR and TMR; the LAPIC's EOI broadcast clears it, and re-delivers while the line is high",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![
        Irq(0x71),
        Value(u64::from(rte::REMOTE_IRR | rte::LEVEL | 0x71)),
        Value(1 << (0x71 - 0x60)),
        Value(u64::from(rte::LEVEL | 0x71)),
        Irq(0x71),
        Irq(0x71),
        Value(u64::from(rte::LEVEL | 0x71)),
        Value(0),
    ])
}

/// The minimal scenario of a lost `KVM_EXIT_IOAPIC_EOI` ([`crate::backend::host`]): a level
/// interrupt EOI'd while its line stays high must come again, so the second `Wait` takes it.
/// Where KVM's LAPIC ends the interrupt at delivery, the EOI exit it raises is not serviced
/// before the guest's next `hlt` blocks: our IOAPIC never hears the EOI, and kvm-split hangs
/// after one interrupt.
fn eoi_lost_in_hlt() -> Scenario {
    let mut ops = ioapic_prologue();
    ops.extend(route(17, rte::LEVEL | 0x79));
    ops.extend([gsi(17, true), Op::Wait]); // taken; the handler sends no EOI
    ops.push(eoi()); // the line is high: the IOAPIC delivers it again
    ops.push(Op::Wait); // and it is taken
    ops.extend([gsi(17, false), eoi()]);
    Scenario::new(
        "ioapic-eoi-lost-in-hlt",
        "a level interrupt EOI'd while its line is high is delivered again to a guest that halts right after the EOI",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Irq(0x79), Irq(0x79)])
}

fn level_masked() -> Scenario {
    let mut ops = ioapic_prologue();
    ops.extend(route(18, rte::MASKED | rte::LEVEL | 0x72));
    ops.push(gsi(18, true));
    ops.push(lapic_read(reg::IRR + 0x30)); // held, not delivered
    ops.extend(ioapic_read(ioreg::low(18)));
    ops.push(snapshot("held"));
    ops.extend(ioapic_write(ioreg::low(18), rte::LEVEL | 0x72)); // unmask: delivered now
    ops.push(Op::Wait);
    ops.extend(ioapic_read(ioreg::low(18)));
    // Masking while in service keeps Remote IRR; the EOI still clears it.
    ops.extend(ioapic_write(ioreg::low(18), rte::MASKED | rte::LEVEL | 0x72));
    ops.extend(ioapic_read(ioreg::low(18)));
    ops.extend([gsi(18, false), eoi()]);
    ops.extend(ioapic_read(ioreg::low(18)));
    ops.push(snapshot("end"));
    Scenario::new(
        "ioapic-level-masked",
        "a level line asserted on a masked entry is held and delivered when unmasked; masking keeps Remote IRR until the EOI",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![
        Value(0),
        Value(u64::from(rte::MASKED | rte::LEVEL | 0x72)),
        Irq(0x72),
        Value(u64::from(rte::REMOTE_IRR | rte::LEVEL | 0x72)),
        Value(u64::from(rte::REMOTE_IRR | rte::MASKED | rte::LEVEL | 0x72)),
        Value(u64::from(rte::MASKED | rte::LEVEL | 0x72)),
    ])
}

/// A level message that no LAPIC accepts: to an APIC ID that does not exist, and to a
/// software-disabled LAPIC (which discards fixed interrupts). KVM sets Remote IRR only when a
/// LAPIC accepted the message (`ioapic_service`); the datasheet sets it on every delivery.
fn level_not_accepted() -> Scenario {
    let mut ops = super::linux_init();
    ops.extend([super::out(0x21, 0xFF), super::out(0xA1, 0xFF)]);
    ops.extend(ioapic_write(ioreg::high(23), 5 << 24)); // pin 23: destination APIC 5
    ops.extend(ioapic_write(ioreg::low(23), rte::LEVEL | 0x77));
    ops.push(gsi(23, true));
    ops.extend(ioapic_read(ioreg::low(23)));
    ops.extend(route(18, rte::LEVEL | 0x72)); // to APIC 0, still software-disabled
    ops.push(gsi(18, true));
    ops.extend(ioapic_read(ioreg::low(18)));
    ops.push(lapic_read(reg::IRR + 0x30)); // dropped, not pending
    ops.push(snapshot("end"));
    ops.extend([gsi(18, false), gsi(23, false)]);
    let (pin23, pin18) = (u64::from(rte::LEVEL | 0x77), u64::from(rte::LEVEL | 0x72));
    let irr = u64::from(rte::REMOTE_IRR);
    Scenario::new(
        "ioapic-level-not-accepted",
        "a level message to a missing APIC ID or a software-disabled LAPIC: KVM leaves Remote IRR clear, the datasheet sets it",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Value(pin23), Value(pin18), Value(0)])
    .expect_datasheet(vec![Value(pin23 | irr), Value(pin18 | irr), Value(0)])
    .datasheet_follows(&[Device::Ioapic])
}

/// A level entry with delivery mode `mode` on pin 19, its line asserted: whether the LAPIC
/// accepted the message shows in Remote IRR (KVM sets it only on acceptance).
fn level_mode(name: &str, description: &str, mode: u32) -> (Scenario, u64) {
    let mut ops = ioapic_prologue();
    ops.extend(route(19, rte::LEVEL | mode << 8 | 0x30));
    ops.push(gsi(19, true));
    ops.push(Op::Host(crate::scenario::HostOp::Sleep(0))); // the message is out before the read
    ops.extend(ioapic_read(ioreg::low(19)));
    ops.push(snapshot("end"));
    ops.push(gsi(19, false));
    let entry = u64::from(rte::LEVEL | mode << 8 | 0x30);
    (Scenario::new(name, description, EoiPolicy::LapicMmio, ops), entry)
}

/// SMI delivery mode: KVM accepts an SMI only if it can inject it (`kvm_inject_smi`), which
/// needs SMM support; this host's KVM has none (no KVM_CAP_X86_SMM), so Remote IRR stays
/// clear. The datasheet IOAPIC sets it on every level delivery.
fn level_smi() -> Scenario {
    let (s, entry) = level_mode(
        "ioapic-level-smi",
        "a level SMI-mode entry: KVM without SMM does not accept the SMI, so Remote IRR stays clear (datasheet: set)",
        2,
    );
    s.expect(vec![Value(entry)])
        .expect_datasheet(vec![Value(entry | u64::from(rte::REMOTE_IRR))])
        .datasheet_follows(&[Device::Ioapic])
}

/// Start-up delivery mode to the running BSP: KVM's LAPIC accepts every start-up message
/// (`__apic_accept_irq` returns 1 and drops it later unless the vCPU waits for SIPI), so
/// Remote IRR is set.
fn level_startup() -> Scenario {
    let (s, entry) = level_mode(
        "ioapic-level-startup",
        "a level start-up-mode entry to a running CPU: KVM counts the message as accepted and sets Remote IRR",
        6,
    );
    s.expect(vec![Value(entry | u64::from(rte::REMOTE_IRR))])
}

/// A level lowest-priority message to the logical broadcast (0xFF) with the only LAPIC
/// software-disabled: nobody takes it. KVM's broadcast goes through the slow path of
/// `kvm_irq_delivery_to_apic`, which finds no software-enabled candidate and returns -1, and
/// `ioapic_service` sets Remote IRR unless the result is 0; the fast path (a unicast
/// destination, even a missing one) returns 0 and leaves it clear
/// (`ioapic-level-not-accepted`).
fn level_lowest_no_candidate() -> Scenario {
    let mut ops = super::linux_init();
    ops.extend([super::out(0x21, 0xFF), super::out(0xA1, 0xFF)]); // the LAPIC stays disabled
    ops.extend(ioapic_write(ioreg::high(19), 0xFF00_0000)); // logical broadcast
    let low = rte::LEVEL | 0x800 | 0x100 | 0x30; // level, logical, lowest priority, 0x30
    ops.extend(ioapic_write(ioreg::low(19), low));
    ops.push(gsi(19, true));
    ops.extend(ioapic_read(ioreg::low(19)));
    ops.push(snapshot("end"));
    ops.push(gsi(19, false));
    let entry = u64::from(low);
    Scenario::new(
        "ioapic-level-lowest-no-candidate",
        "a level lowest-priority broadcast nobody can take: KVM's slow path returns -1 and Remote IRR is set",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Value(entry | u64::from(rte::REMOTE_IRR))])
}

fn eoi_register() -> Scenario {
    let mut ops = ioapic_prologue();
    ops.extend(route(19, rte::LEVEL | 0x73));
    ops.extend([gsi(19, true), Op::Wait, gsi(19, false)]);
    ops.push(ioapic_eoir(0x73)); // version 0x20: clears Remote IRR; 0x11: no such register
    ops.extend(ioapic_read(ioreg::low(19)));
    ops.push(eoi());
    ops.extend(ioapic_read(ioreg::low(19)));
    ops.push(snapshot("end"));
    let level = u64::from(rte::LEVEL | 0x73);
    Scenario::new(
        "ioapic-eoi-register",
        "the version-0x20 EOI register (+0x40) clears Remote IRR; KVM's version-0x11 IOAPIC has none and waits for the LAPIC's EOI",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Irq(0x73), Value(level | u64::from(rte::REMOTE_IRR)), Value(level)])
    .expect_datasheet(vec![Irq(0x73), Value(level), Value(level)])
    .datasheet_follows(&[Device::Ioapic])
}

fn directed_eoi() -> Scenario {
    let mut ops = ioapic_prologue();
    ops.push(lapic_read(reg::VERSION)); // bit 24: EOI-broadcast suppression supported
    ops.push(lapic_write(reg::SVR, 0x11FF)); // ask for suppression (bit 12)
    ops.push(lapic_read(reg::SVR));
    ops.extend(route(21, rte::LEVEL | 0x75));
    ops.extend([gsi(21, true), Op::Wait, gsi(21, false)]);
    ops.push(eoi()); // suppressed: the IOAPIC keeps Remote IRR
    ops.extend(ioapic_read(ioreg::low(21)));
    ops.push(ioapic_eoir(0x75)); // the directed EOI
    ops.extend(ioapic_read(ioreg::low(21)));
    ops.push(snapshot("end"));
    let level = u64::from(rte::LEVEL | 0x75);
    Scenario::new(
        "ioapic-directed-eoi",
        "EOI-broadcast suppression (SVR bit 12) with the EOI register: only with a version-0x20 IOAPIC; KVM's kernel irqchip does not offer it",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Value(0x0005_0014), Value(0x1FF), Irq(0x75), Value(level), Value(level)])
    .expect_datasheet(vec![
        Value(0x0105_0014),
        Value(0x11FF),
        Irq(0x75),
        Value(level | u64::from(rte::REMOTE_IRR)),
        Value(level),
    ])
    .datasheet_follows(&[Device::Lapic, Device::Ioapic])
}

/// PIT counter 0 through IOAPIC pin 0: KVM's default routing sends GSI 0 to pin 0 (no IRQ0
/// → pin 2 override; that is the firmware's MADT and QEMU's routing, not KVM's).
fn pit_ioapic() -> Scenario {
    let ticks = 4;
    let mut ops = ioapic_prologue();
    ops.extend(route(0, 0x50));
    ops.extend(pit_periodic_program(2386)); // 2.0 ms
    for _ in 0..ticks {
        ops.push(Op::Wait);
    }
    ops.extend(ioapic_write(ioreg::low(0), rte::MASKED | 0x50));
    ops.push(Op::Record(ticks));
    let mut expect = vec![Irq(0x50); ticks as usize];
    expect.push(Value(ticks));
    Scenario::new(
        "pit-ioapic",
        "PIT counter 0 mode 2 delivers periodic IRQ0 through IOAPIC pin 0 (KVM's 1:1 GSI routing) with the PIC masked",
        EoiPolicy::LapicMmio,
        ops,
    )
    .expect(expect)
}
