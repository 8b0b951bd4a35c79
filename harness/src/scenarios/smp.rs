//! Two-vCPU scenarios: INIT/SIPI, fixed IPIs (physical, logical, broadcast and all-but-self)
//! and lowest-priority delivery.
//!
//! The AP waits for the BSP's INIT and start-up IPI ([`crate::scenario::ApStart::WaitForSipi`]);
//! the BSP enables its LAPIC first, so the AP's first act, an IPI to the BSP ("hello"), cannot
//! be lost, and the AP enables its own LAPIC before it, so the BSP's answer cannot be either.
//! Then the two take turns: each waits for the other's IPI before it sends. The handler does
//! not EOI (`EoiPolicy::None`): each `Wait` is followed by an explicit EOI with IF=0, so that
//! a second interrupt that arrives while the first is in service waits for the next `Wait`
//! (each vCPU's vectors decrease in the order it takes them, so when two are pending they are
//! taken in program order).

use super::apic::*;
use super::snapshot;
use crate::scenario::Expect::{Irq, Value};
use crate::scenario::{Device, EoiPolicy, Op, Scenario};

/// The SMP scenarios.
pub fn all() -> Vec<Scenario> {
    vec![init_sipi(), ipi_logical(), ipi_broadcast(), lowest_priority()]
}

/// `Wait`, then EOI.
pub(super) fn take() -> [Op; 2] {
    [Op::Wait, eoi()]
}

/// The BSP: LAPIC on, `setup`, INIT/SIPI to APIC 1, then wait for the AP's hello (0x7f).
pub(super) fn bsp_start(setup: &[Op]) -> Vec<Op> {
    let mut ops = vec![lapic_enable()];
    ops.extend_from_slice(setup);
    ops.extend(start_ap(1));
    ops.extend(take());
    ops
}

/// The AP: LAPIC on, `setup`, hello (fixed 0x7f) to APIC 0.
pub(super) fn ap_start(setup: &[Op]) -> Vec<Op> {
    let mut ops = vec![lapic_enable()];
    ops.extend_from_slice(setup);
    ops.extend(ipi(0, 0x7F));
    ops
}

fn init_sipi() -> Scenario {
    let mut bsp = bsp_start(&[]);
    bsp.extend(ipi(1, 0x6F)); // fixed, physical, to the AP
    bsp.extend(take()); // its answer
    bsp.push(Op::Record(0xB5));
    let mut ap = vec![lapic_read(reg::ID)]; // APIC ID 1, after INIT
    ap.extend(ap_start(&[]));
    ap.extend(take());
    ap.extend(ipi(0, 0x7E));
    ap.push(Op::Record(0xA9));
    ap.push(snapshot("ap-end"));
    Scenario::new(
        "smp-init-sipi",
        "INIT and start-up IPI start the AP (trampoline at vector 0x09); fixed physical IPIs both ways",
        EoiPolicy::None,
        bsp,
    )
    .ap(ap)
    .aps_wait_for_sipi()
    .expect(vec![Irq(0x7F), Irq(0x7E), Value(0xB5)])
    .expect_aps(vec![vec![Value(0x0100_0000), Irq(0x6F), Value(0xA9)]])
}

fn ipi_logical() -> Scenario {
    // Flat model (DFR all ones): logical IDs 0x01 (BSP) and 0x02 (AP).
    let mut bsp = bsp_start(&[lapic_write(reg::LDR, 0x0100_0000)]);
    bsp.extend(ipi(0x02, icr::LOGICAL | 0x6F)); // to the AP
    bsp.extend(take()); // the AP's answer, logical too
    bsp.extend(ipi(0x03, icr::LOGICAL | 0x7D)); // to both
    bsp.extend(take());
    bsp.push(lapic_read(reg::LDR));
    let mut ap = ap_start(&[lapic_write(reg::LDR, 0x0200_0000)]);
    ap.extend(take());
    ap.extend(ipi(0x01, icr::LOGICAL | 0x7E));
    ap.extend(take());
    ap.push(lapic_read(reg::LDR));
    Scenario::new(
        "smp-ipi-logical",
        "flat logical IPIs: to one vCPU each way, then to both (destination 0x03)",
        EoiPolicy::None,
        bsp,
    )
    .ap(ap)
    .aps_wait_for_sipi()
    .expect(vec![Irq(0x7F), Irq(0x7E), Irq(0x7D), Value(0x0100_0000)])
    .expect_aps(vec![vec![Irq(0x6F), Irq(0x7D), Value(0x0200_0000)]])
}

fn ipi_broadcast() -> Scenario {
    let mut bsp = bsp_start(&[]);
    bsp.push(lapic_write(reg::ICR, icr::OTHERS | 0x6F)); // all but self: the AP
    bsp.extend(take()); // its ack 0x7e
    bsp.push(lapic_write(reg::ICR, icr::ALL | 0x7D)); // all including self
    bsp.extend(take()); // our own 0x7d
    bsp.extend(take()); // the AP's ack 0x7c
    bsp.extend(ipi(0xFF, 0x7B)); // physical broadcast
    bsp.extend(take()); // our own 0x7b
    bsp.extend(take()); // the AP's ack 0x7a
    let mut ap = ap_start(&[]);
    ap.extend(take()); // 0x6f
    ap.extend(ipi(0, 0x7E));
    ap.extend(take()); // 0x7d
    ap.extend(ipi(0, 0x7C));
    ap.extend(take()); // 0x7b
    ap.extend(ipi(0, 0x7A));
    Scenario::new(
        "smp-ipi-broadcast",
        "shorthands all-but-self and all-including-self, and the physical broadcast 0xFF, reach the right vCPUs",
        EoiPolicy::None,
        bsp,
    )
    .ap(ap)
    .aps_wait_for_sipi()
    .expect([0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x7A].map(Irq).to_vec())
    .expect_aps(vec![vec![Irq(0x6F), Irq(0x7D), Irq(0x7B)]])
}

/// Lowest-priority IPIs to both vCPUs (logical 0x03), with the BSP at TPR 0x70 and the AP at
/// 0x60 so that neither takes them (class 6) before the scenario reads IRR. KVM's vector hashing sends
/// vector v to the (v mod 2)-th candidate: 0x6c to the BSP, 0x6d to the AP. The SDM's
/// arbitration sends each to the lowest arbitration priority: the AP both times.
fn lowest_priority() -> Scenario {
    let mut bsp = bsp_start(&[lapic_write(reg::LDR, 0x0100_0000)]);
    bsp.push(lapic_write(reg::TPR, 0x70));
    bsp.extend(ipi(0x03, icr::LOGICAL | icr::LOWEST | 0x6C));
    bsp.push(lapic_write(reg::ICR, icr::LOGICAL | icr::LOWEST | 0x6D));
    bsp.push(lapic_read(reg::IRR + 0x30));
    bsp.extend(ipi(1, 0x7E)); // "look now", above the AP's TPR
    bsp.push(Op::Record(1));
    let mut ap = ap_start(&[lapic_write(reg::LDR, 0x0200_0000), lapic_write(reg::TPR, 0x60)]);
    ap.push(Op::Wait); // 0x7e, above any lowest-priority vector it holds
    ap.push(lapic_read(reg::IRR + 0x30));
    ap.push(eoi());
    ap.push(Op::Record(2));
    Scenario::new(
        "smp-lowest-priority",
        "lowest-priority IPIs to two vCPUs: KVM hashes the vector over the candidates, the SDM picks the lowest arbitration priority",
        EoiPolicy::None,
        bsp,
    )
    .ap(ap)
    .aps_wait_for_sipi()
    .expect(vec![Irq(0x7F), Value(1 << (0x6C - 0x60)), Value(1)])
    .expect_datasheet(vec![Irq(0x7F), Value(0), Value(1)])
    .expect_aps(vec![vec![Irq(0x7E), Value(1 << (0x6D - 0x60)), Value(2)]])
    .expect_aps_datasheet(vec![vec![Irq(0x7E), Value(1 << (0x6C - 0x60) | 1 << (0x6D - 0x60)), Value(2)]])
    .datasheet_follows(&[Device::Lapic])
}
