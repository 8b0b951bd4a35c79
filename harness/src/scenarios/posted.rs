//! Posted-interrupt scenarios: what APIC virtualization must deliver exactly as a LAPIC does.
//!
//! On `software-apicv` the interrupts of these scenarios are posted into the target's
//! posted-interrupt descriptor and delivered by virtual-interrupt delivery; on every other
//! backend (KVM on the project's hosts has no APICv) the same guest takes them from an
//! emulated or in-kernel LAPIC, and the trace must be the same. Each one pins one path of the
//! posting protocol (the `software-apicv` tests check that the path was taken):
//!
//! * `posted-ipi-running`: an IPI posted to a vCPU that is running: the notification is
//!   processed in guest mode at once, and the `Wait` finds the vector already recognized;
//! * `posted-ipi-halted`: an IPI posted to a halted vCPU: no notification is processed, the
//!   vCPU syncs PIR into VIRR before it enters the guest again;
//! * `posted-tpr-pending`: vectors at and below the target's TPR class stay pending (in VIRR,
//!   read back through IRR) until TPR drops, by MMIO and then by CR8;
//! * `posted-coalesce`: two vCPUs post the same vector to a third before it syncs: the posts
//!   merge in PIR and the vector is delivered once;
//! * `posted-level-eoi-exit`: a level IOAPIC interrupt whose EOI comes back to the VMM through
//!   the EOI-exit bitmap (an edge one's does not): Remote IRR is cleared, the line is still
//!   high, the interrupt is delivered again;
//! * `posted-level-route-moved`: a level interrupt delivered, then its IOAPIC entry moved to
//!   another destination before the guest takes it: its EOI must still reach the IOAPIC (the
//!   vector stays in the EOI-exit bitmap while it is pending EOI, as KVM keeps it);
//! * `posted-eoi-next-lower`: in x2APIC mode, EOI virtualization (MSR 0x80B) lets the next
//!   lower pending vector in, three times in a row, with no VM exit;
//! * `posted-self-ipi-stale-tmr` and `posted-self-ipi-disabled-apic`: where APICv and a LAPIC
//!   differ (documented divergences of `software-apicv`, [`crate::known::KNOWN`]):
//!   a virtualized edge self-IPI leaves VTMR as the vector's last level-triggered acceptance
//!   set it, and is taken into VIRR by a software-disabled APIC.
//!
//! As in [`super::smp`], the vCPUs synchronise through interrupts only: every vector a
//! target must not take yet is held back by its TPR, so the order in which posts land cannot
//! change the trace on a real machine; the handler does not EOI and each `Wait` takes one.

use super::apic::*;
use super::smp::{ap_start, bsp_start, take};
use super::snapshot;
use crate::scenario::Expect::{Irq, Value};
use crate::scenario::{EoiPolicy, Op, Scenario, SIPI_VECTOR};

/// The posted-interrupt scenarios.
pub fn all() -> Vec<Scenario> {
    vec![
        ipi_running(),
        ipi_halted(),
        tpr_pending(),
        coalesce(),
        level_eoi_exit(),
        level_route_moved(),
        eoi_next_lower(),
        self_ipi_stale_tmr(),
        self_ipi_disabled_apic(),
    ]
}

/// Iterations of [`spin`]: long enough that the other vCPU of `software-apicv` reaches the
/// point the scenario is about (one operation per vCPU per round) before the spin ends.
const SPINS: u64 = 16;

/// Busy-waits [`SPINS`] iterations in a loop of two operations starting at index `at`.
fn spin(at: usize) -> [Op; 2] {
    [Op::Spin(1), Op::Loop { target: at, count: SPINS }]
}

/// The bit of `vector` in its 32-bit IRR/ISR/TMR word.
fn bit(vector: u8) -> u64 {
    1 << (vector & 31)
}

fn ipi_running() -> Scenario {
    let mut bsp = bsp_start(&[]); // the AP's hello, 0x7f
    bsp.extend(ipi(1, 0x6F)); // to the AP while it spins
    bsp.extend(take()); // its answer
    bsp.push(Op::Record(0xB5));
    let mut ap = ap_start(&[]);
    let at = ap.len();
    ap.extend(spin(at)); // running (in guest) when 0x6f is posted
    ap.extend(take()); // 0x6f, recognized before the Wait
    ap.extend(ipi(0, 0x7E));
    ap.push(Op::Record(0xA9));
    Scenario::new(
        "posted-ipi-running",
        "an IPI to a running vCPU: APICv processes the notification in guest mode and delivers at the next Wait without a VM exit",
        EoiPolicy::None,
        bsp,
    )
    .ap(ap)
    .aps_wait_for_sipi()
    .expect(vec![Irq(0x7F), Irq(0x7E), Value(0xB5)])
    .expect_aps(vec![vec![Irq(0x6F), Value(0xA9)]])
}

fn ipi_halted() -> Scenario {
    let mut bsp = bsp_start(&[]);
    let at = bsp.len();
    bsp.extend(spin(at)); // the AP halts meanwhile
    bsp.extend(ipi(1, 0x6E)); // to the halted AP
    bsp.extend(take()); // its answer
    bsp.push(Op::Record(0xB5));
    let mut ap = ap_start(&[]);
    ap.extend(take()); // halted until 0x6e: the post wakes it, it syncs PIR before entry
    ap.extend(ipi(0, 0x7D));
    ap.push(Op::Record(0xA9));
    Scenario::new(
        "posted-ipi-halted",
        "an IPI to a halted vCPU: APICv wakes it instead of notifying, and it syncs PIR into VIRR before its next VM entry",
        EoiPolicy::None,
        bsp,
    )
    .ap(ap)
    .aps_wait_for_sipi()
    .expect(vec![Irq(0x7F), Irq(0x7D), Value(0xB5)])
    .expect_aps(vec![vec![Irq(0x6E), Value(0xA9)]])
}

fn tpr_pending() -> Scenario {
    let mut bsp = bsp_start(&[lapic_write(reg::TPR, 0x50)]); // class 5 and below held back
    bsp.extend(take()); // 0x7e, posted after 0x55 and 0x48
    bsp.push(lapic_read(reg::IRR + 0x20)); // both pending in VIRR
    bsp.push(lapic_read(reg::PPR)); // the TPR, nothing in service
    bsp.push(lapic_write(reg::TPR, 0x40)); // class 4: 0x55 may come in
    bsp.extend(take()); // 0x55
    bsp.push(lapic_read(reg::IRR + 0x20)); // 0x48 still pending (class 4)
    bsp.push(Op::WriteCr8(3)); // TPR 0x30: 0x48 may come in
    bsp.extend(take()); // 0x48
    bsp.push(lapic_read(reg::IRR + 0x20));
    bsp.push(Op::Record(0xB5));
    bsp.push(snapshot("end"));
    let mut ap = ap_start(&[]);
    ap.push(lapic_write(reg::ICR, 0x55)); // class 5 = the BSP's TPR class
    ap.push(lapic_write(reg::ICR, 0x48)); // class 4, below it
    ap.push(lapic_write(reg::ICR, 0x7E)); // "done", above it
    ap.push(Op::Record(0xA9));
    Scenario::new(
        "posted-tpr-pending",
        "posted vectors at and below the target's TPR class stay pending in VIRR (read back through IRR) until TPR drops, by MMIO then by CR8",
        EoiPolicy::None,
        bsp,
    )
    .ap(ap)
    .aps_wait_for_sipi()
    .expect(vec![
        Irq(0x7F),
        Irq(0x7E),
        Value(bit(0x55) | bit(0x48)),
        Value(0x50),
        Irq(0x55),
        Value(bit(0x48)),
        Irq(0x48),
        Value(0),
        Value(0xB5),
    ])
}

/// Two posters, one target (the BSP), three vCPUs. The BSP holds class 5 back (TPR 0x50),
/// starts AP 1 then AP 2 (each says hello with 0x7f), and sends both "go" (0x7d, all but
/// self). Both APs post 0x55 to the BSP right after their go, in step; then AP 1 tells AP 2
/// (0x7b: below go, so that AP 2 takes go first if both are pending) and AP 2 tells the BSP
/// (0x7c) that both posts are out. The BSP takes 0x55 once.
fn coalesce() -> Scenario {
    let mut bsp = vec![lapic_enable(), lapic_write(reg::TPR, 0x50)];
    bsp.extend(start_ap(1));
    bsp.extend(take()); // AP 1's hello
    bsp.extend(start_ap(2));
    bsp.extend(take()); // AP 2's hello
    bsp.push(lapic_write(reg::ICR, icr::OTHERS | 0x7D)); // go, to both APs
    bsp.extend(take()); // 0x7c: both posts of 0x55 are out
    bsp.push(lapic_read(reg::IRR + 0x20)); // 0x55 pending, once
    bsp.push(lapic_write(reg::TPR, 0));
    bsp.extend(take()); // 0x55
    bsp.push(lapic_read(reg::IRR + 0x20)); // nothing more
    bsp.push(Op::Record(0xB5));
    bsp.push(snapshot("end"));
    let poster = |tail: &[Op]| {
        let mut ap = ap_start(&[]); // hello to the BSP; ICR2 stays 0 (the BSP)
        ap.extend(take()); // go
        ap.push(lapic_write(reg::ICR, 0x55)); // the post, in step with the other AP
        ap.extend_from_slice(tail);
        ap
    };
    let mut ap1 = poster(&ipi(2, 0x7B)); // AP 2's turn
    ap1.push(Op::Record(0xA1));
    let mut ap2 = poster(&take()); // AP 1's 0x7b
    ap2.extend(ipi(0, 0x7C));
    ap2.push(Op::Record(0xA2));
    Scenario::new(
        "posted-coalesce",
        "two vCPUs post the same vector to a third before it syncs PIR: the posts merge in the descriptor and the vector is delivered once",
        EoiPolicy::None,
        bsp,
    )
    .ap(ap1)
    .ap(ap2)
    .aps_wait_for_sipi()
    .expect(vec![Irq(0x7F), Irq(0x7F), Irq(0x7C), Value(bit(0x55)), Irq(0x55), Value(0), Value(0xB5)])
    .expect_aps(vec![vec![Irq(0x7D), Value(0xA1)], vec![Irq(0x7D), Irq(0x7B), Value(0xA2)]])
}

fn level_eoi_exit() -> Scenario {
    let level = rte::LEVEL | 0x86;
    let mut ops = ioapic_prologue();
    ops.extend(route(16, level)); // pin 16: level, vector 0x86: in the EOI-exit bitmap
    ops.extend(route(20, 0x64)); // pin 20: edge, vector 0x64: its EOI needs no exit
    ops.extend([gsi(20, true), gsi(20, false)]);
    ops.extend(take()); // 0x64
    ops.extend([gsi(16, true), Op::Wait]); // 0x86
    ops.extend(ioapic_read(ioreg::low(16))); // Remote IRR set: in service
    ops.push(eoi()); // EOI exit: Remote IRR cleared, the line is high, delivered again
    ops.extend(ioapic_read(ioreg::low(16))); // Remote IRR set by the new delivery
    ops.push(lapic_read(reg::IRR + 0x40)); // pending again (IF=0)
    ops.push(lapic_read(reg::TMR + 0x40)); // level
    ops.extend([gsi(16, false), Op::Wait]); // taken again
    ops.push(eoi()); // the line is low: over
    ops.extend(ioapic_read(ioreg::low(16)));
    ops.push(lapic_read(reg::IRR + 0x40));
    ops.push(snapshot("end"));
    let (level, remote) = (u64::from(level), u64::from(rte::REMOTE_IRR));
    Scenario::new(
        "posted-level-eoi-exit",
        "a level IOAPIC interrupt's EOI comes back through the EOI-exit bitmap (an edge one's does not): Remote IRR cleared, line still high, delivered again",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![
        Irq(0x64),
        Irq(0x86),
        Value(level | remote),
        Value(level | remote),
        Value(bit(0x86)),
        Value(bit(0x86)),
        Irq(0x86),
        Value(level),
        Value(0),
    ])
}

/// A level interrupt for APIC 0, pending (IF=0) when the guest moves its IOAPIC entry to APIC
/// 1, which does not exist: the EOI after it is taken must still clear Remote IRR (an EOI
/// broadcast matches every entry with the vector, wherever it points), and the pin works again.
fn level_route_moved() -> Scenario {
    let level = rte::LEVEL | 0x93;
    let mut ops = ioapic_prologue();
    ops.extend(route(19, level)); // pin 19: level, vector 0x93, APIC 0
    ops.extend([gsi(19, true), gsi(19, false)]); // delivered: Remote IRR set, 0x93 requested
    ops.extend(ioapic_write(ioreg::high(19), 1 << 24)); // now to APIC 1
    ops.extend(take()); // 0x93; its EOI must reach the IOAPIC all the same
    ops.extend(ioapic_read(ioreg::low(19))); // Remote IRR clear
    ops.extend(ioapic_write(ioreg::high(19), 0)); // back to APIC 0
    ops.extend([gsi(19, true), gsi(19, false)]); // the pin delivers again
    ops.extend(take());
    ops.extend(ioapic_read(ioreg::low(19)));
    ops.push(snapshot("end"));
    Scenario::new(
        "posted-level-route-moved",
        "a level interrupt whose IOAPIC entry moves to another APIC before it is taken: its EOI still clears Remote IRR (the vector stays in the EOI-exit bitmap while pending EOI)",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Irq(0x93), Value(u64::from(level)), Irq(0x93), Value(u64::from(level))])
}

/// An x2APIC ICR write of `low` to x2APIC ID `dest`.
fn x2apic_ipi(dest: u32, low: u32) -> Op {
    Op::Wrmsr(msr::ICR, u64::from(dest) << 32 | u64::from(low))
}

/// EOI by x2APIC MSR.
fn x2apic_eoi() -> Op {
    Op::Wrmsr(msr::EOI, 0)
}

/// `Wait`, then EOI by MSR.
fn x2apic_take() -> [Op; 2] {
    [Op::Wait, x2apic_eoi()]
}

/// Both vCPUs in x2APIC mode. The BSP holds class 6 back (TPR MSR 0x60); the AP posts 0x43,
/// 0x61 and 0x52, then "done" (0x7e). With TPR 0 the BSP takes 0x61, and each EOI (MSR, with
/// IF=0) lets the next lower one in: the following `Wait` finds it recognized.
fn eoi_next_lower() -> Scenario {
    let mut bsp = vec![
        lapic_enable(),
        Op::Wrmsr(msr::APIC_BASE, base::X2APIC),
        Op::Wrmsr(msr::TPR, 0x60),
        x2apic_ipi(1, icr::INIT | icr::ASSERT),
        x2apic_ipi(1, icr::STARTUP | icr::ASSERT | u32::from(SIPI_VECTOR)),
    ];
    bsp.extend(x2apic_take()); // the AP's hello, 0x7f
    bsp.extend(x2apic_take()); // done, 0x7e
    bsp.push(Op::Rdmsr(msr::IRR + 2)); // 0x43 and 0x52
    bsp.push(Op::Rdmsr(msr::IRR + 3)); // 0x61
    bsp.push(Op::Wrmsr(msr::TPR, 0));
    bsp.extend(x2apic_take()); // 0x61; its EOI lets 0x52 in
    bsp.extend(x2apic_take()); // 0x52; its EOI lets 0x43 in
    bsp.extend(x2apic_take()); // 0x43
    bsp.push(Op::Rdmsr(msr::IRR + 2));
    bsp.push(Op::Record(0xB5));
    // No snapshot: in x2APIC mode KVM_GET_LAPIC keeps the 64-bit ICR at 0x300 (its high half
    // at 0x304 too) on VMX-like hosts, where vm-apic's kvm_lapic_state has 0.
    let ap = vec![
        Op::Wrmsr(msr::APIC_BASE, base::AP_X2APIC),
        Op::Wrmsr(msr::SVR, 0x1FF),
        x2apic_ipi(0, 0x7F), // hello
        x2apic_ipi(0, 0x43),
        x2apic_ipi(0, 0x61),
        x2apic_ipi(0, 0x52),
        x2apic_ipi(0, 0x7E), // done
        Op::Record(0xA9),
    ];
    Scenario::new(
        "posted-eoi-next-lower",
        "x2APIC: three posted vectors held back by TPR; after TPR drops, each virtualized EOI (MSR 0x80b) delivers the next lower one",
        EoiPolicy::None,
        bsp,
    )
    .ap(ap)
    .aps_wait_for_sipi()
    .expect(vec![
        Irq(0x7F),
        Irq(0x7E),
        Value(bit(0x43) | bit(0x52)),
        Value(bit(0x61)),
        Irq(0x61),
        Irq(0x52),
        Irq(0x43),
        Value(0),
        Value(0xB5),
    ])
}

/// A vector accepted level-triggered (IOAPIC pin 17), then sent as an edge self-IPI: a LAPIC
/// clears its TMR bit when it accepts the edge message; APICv's self-IPI virtualization only
/// sets VIRR, so VTMR (which the guest reads as TMR) keeps the level bit, and the EOI, an
/// EOI-exit bitmap vector, reaches the IOAPIC as a level EOI. The expectation is the LAPIC's.
fn self_ipi_stale_tmr() -> Scenario {
    let mut ops = ioapic_prologue();
    ops.extend(route(17, rte::LEVEL | 0x71));
    ops.extend([gsi(17, true), gsi(17, false)]);
    ops.extend(take()); // 0x71, level: TMR set
    ops.push(lapic_read(reg::TMR + 0x30));
    ops.push(self_ipi(0x71)); // the same vector, edge
    ops.push(lapic_read(reg::TMR + 0x30)); // a LAPIC: clear; APICv: still set
    ops.extend(take());
    ops.push(lapic_read(reg::TMR + 0x30));
    ops.extend(ioapic_read(ioreg::low(17)));
    ops.push(snapshot("end"));
    Scenario::new(
        "posted-self-ipi-stale-tmr",
        "an edge self-IPI of a vector last accepted level-triggered: a LAPIC clears its TMR bit, APICv's self-IPI virtualization leaves VTMR set",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![
        Irq(0x71),
        Value(bit(0x71)),
        Value(0),
        Irq(0x71),
        Value(0),
        Value(u64::from(rte::LEVEL | 0x71)),
    ])
}

/// A self-IPI (ICR, self shorthand) while the LAPIC is software-disabled (SVR bit 8 clear, as
/// at reset): a LAPIC refuses fixed interrupts then; APICv's self-IPI virtualization does not
/// look at the virtual SVR and sets VIRR. No `Wait`: APICv would deliver it, a LAPIC never.
fn self_ipi_disabled_apic() -> Scenario {
    let ops = vec![
        lapic_read(reg::SVR),        // 0xff: software-disabled
        self_ipi(0x60),              //
        lapic_read(reg::IRR + 0x30), // a LAPIC: not accepted; APICv: 0x60 requested
        lapic_enable(),              //
        lapic_read(reg::IRR + 0x30), // enabling does not request it
        snapshot("end"),
    ];
    Scenario::new(
        "posted-self-ipi-disabled-apic",
        "a self-IPI while the LAPIC is software-disabled: a LAPIC refuses it, APICv's self-IPI virtualization sets VIRR",
        EoiPolicy::None,
        ops,
    )
    .expect(vec![Value(0xFF), Value(0), Value(0)])
}
