//! Structure-aware fuzzing of the `vm-apic` APICv model against the local-APIC model.
//!
//! An input picks xAPIC (APIC-access page) or x2APIC (MSR) virtualization and a bounded list of
//! operations in any order: posts from other agents (with the notification processed when the
//! vCPU runs), physical interrupts of any vector, suppress-notification changes, VMM syncs,
//! guest TPR/CR8/EOI/self-IPI writes, IPIs through the ICR with IPI virtualization (to itself,
//! to a second vCPU's descriptor, or to an APIC ID without a table entry, with commands that
//! qualify and that do not), arbitrary APIC-access reads and writes and x2APIC
//! RDMSR/WRMSR of any offset, width and value, interruptibility changes, instruction boundaries,
//! VM exits and entries (an entry clears SN and syncs PIR, as KVM's `vcpu_load` and
//! `vcpu_enter_guest` do). [`run`] applies them to a [`VirtualApic`] + descriptor and, for the
//! operations a local APIC also sees, to a [`LocalApic`], and asserts after every operation:
//!
//! 1. nothing panics;
//! 2. RVI is the highest VIRR vector (0 if none), SVI the highest VISR vector, and VPPR is
//!    `VTPR` if its class is at least SVI's, else SVI's class;
//! 3. a delivered vector had a class above VPPR, the guest was interruptible, and it moved
//!    from VIRR to VISR;
//! 4. no posted vector is ever lost or duplicated: every vector a post added is in PIR or VIRR
//!    until delivered; an IPI is posted (to the right descriptor) exactly when its command,
//!    vector and destination qualify, and otherwise ends in an APIC-write exit for the ICR;
//! 5. as long as only operations with the same meaning on both sides have run (arbitrary page
//!    writes end this), the guest took the same vectors in the same order on both, with the
//!    same IRR (VIRR ∪ PIR) and ISR, and the same PPR while the vCPU runs.
//!
//! This file is the `apicv` module of the `vm-irq-fuzz` crate and is also included by
//! `apic/tests/fuzz_corpus_apicv.rs`, which replays the seed corpus on stable.

use arbitrary::{Arbitrary, Unstructured};
use vm_apic::apicv::pid::{NotificationDestination, PostOutcome, PostedInterruptDescriptor};
use vm_apic::apicv::{Controls, MsrRead, MsrWrite, PostedIpi, VirtualApic, VmExit, VIRR};
use vm_apic::lapic::{regs, LapicConfig, LocalApic, Quirks};
use vm_apic::{Interrupt, VectorSet};

/// The most operations one input applies.
pub const MAX_OPS: usize = 256;
/// The posted-interrupt notification vector.
const NV: u8 = 0xF2;

/// One fuzz case.
// `run` decodes this layout lazily rather than through `Input` itself; the type is the
// format's definition (and what the seed encoders of the tests build).
#[allow(dead_code)]
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// x2APIC virtualization (MSRs) instead of the APIC-access page.
    pub x2apic: bool,
    /// The operations.
    pub ops: Vec<Op>,
}

/// One thing that happens.
#[derive(Arbitrary, Clone, Debug)]
pub enum Op {
    /// Another agent posts `vector` (0–15 are raised to 16: posters are trusted).
    Post(u8),
    /// A physical interrupt of `vector` reaches the processor.
    Physical(u8),
    /// Set or clear SN.
    Suppress(bool),
    /// The VMM syncs PIR into VIRR.
    Sync,
    /// The guest writes TPR.
    Tpr(u8),
    /// MOV to CR8.
    Cr8(u8),
    /// The guest writes EOI.
    Eoi,
    /// The guest sends itself an IPI (vector raised to ≥ 16).
    SelfIpi(u8),
    /// The guest sends an IPI through the ICR: `destination % 4` is the APIC ID (0 itself, 1
    /// the second vCPU, 2 and 3 without a PID-pointer table entry); `command % 8` picks fixed
    /// physical edge (0, with the assert bit 1, with bit 12 2: the commands IPI virtualization
    /// handles, bit 12 only in x2APIC mode), logical, level, NMI, the all-excluding-self
    /// shorthand or a reserved bit.
    Ipi { destination: u8, vector: u8, command: u8 },
    /// An arbitrary APIC-access read.
    Read { offset: u16, len: u8 },
    /// An arbitrary APIC-access write.
    Write { offset: u16, len: u8, bytes: [u8; 4] },
    /// An arbitrary x2APIC RDMSR.
    Rdmsr(u8),
    /// An arbitrary x2APIC WRMSR.
    Wrmsr(u8, u64),
    /// STI / CLI.
    Interruptible(bool),
    /// An instruction boundary.
    Step,
    /// A VM exit.
    Exit,
    /// The VMM syncs and re-enters.
    Entry,
}

struct Step<'a> {
    index: usize,
    op: &'a Op,
}

impl Step<'_> {
    fn check(&self, ok: bool, what: &str) {
        if !ok {
            panic!("op {} {:?}: {what}", self.index, self.op);
        }
    }
}

/// Runs one fuzz input.
pub fn run(data: &[u8]) {
    // Decoded as `Input::arbitrary_take_rest` decodes it, but lazily: the operations come one
    // at a time from `arbitrary_take_rest_iter` (the iterator `Vec::arbitrary_take_rest`
    // collects), so no `Vec` is built and nothing past the first `MAX_OPS` is decoded. An
    // operation that does not decode ends the case after the ones before it (the collecting
    // decoder refused the whole input: this runs strictly more).
    let mut u = Unstructured::new(data);
    let Ok(x2apic) = bool::arbitrary(&mut u) else { return };
    let Ok(ops) = u.arbitrary_take_rest_iter::<Op>() else { return };
    let controls = if x2apic { Controls::APICV_X2APIC } else { Controls::APICV };
    let mut vapic = VirtualApic::new(controls | Controls::IPI_VIRTUALIZATION);
    vapic.set_notification_vector(NV);
    vapic.page_mut().write(regs::SVR, 0x1FF);
    // The PID-pointer table: APIC ID 0 is this vCPU, 1 another one (never running here).
    let pids = [
        PostedInterruptDescriptor::with_notification(NV, NotificationDestination::x2apic(0)),
        PostedInterruptDescriptor::with_notification(NV, NotificationDestination::x2apic(1)),
    ];
    let [pid, other] = &pids;
    let table: &[PostedInterruptDescriptor] = &pids;
    let mut posted_other = VectorSet::EMPTY;
    // KVM profile: no ESR, so an illegal vector is accepted on both sides alike.
    let mut apic = LocalApic::new(LapicConfig { quirks: Quirks::KVM, bsp: false, ..LapicConfig::default() });
    let _ = apic.mmio_write(regs::SVR.into(), &0x1FFu32.to_le_bytes(), 0);
    if x2apic {
        let _ = apic.wrmsr(regs::IA32_APIC_BASE, 0xFEE0_0C00, 0);
        let _ = apic.wrmsr(0x80F, 0x1FF, 0);
    }
    let mut running = vapic.vm_entry().is_ok();
    let mut equivalent = true;
    let mut interruptible = true;
    let mut posted = VectorSet::EMPTY; // added by posts, not yet delivered
    let (mut taken_v, mut taken_l) = (Vec::new(), Vec::new());
    for (index, op) in ops.take(MAX_OPS).enumerate() {
        let Ok(op) = op else { return };
        let op = &op;
        let at = Step { index, op };
        let mut delivered = None;
        let before = vapic.clone();
        match *op {
            Op::Post(vector) => {
                let vector = vector.max(16);
                let _ = apic.accept(&Interrupt { vector, level: true, ..Interrupt::default() });
                let outcome = pid.post(vector);
                if outcome.is_new() {
                    posted.insert(vector);
                }
                if let PostOutcome::Notify(n) = outcome {
                    if running {
                        at.check(
                            vapic.process_posted_interrupt(pid, n.vector).is_none(),
                            "notification exit",
                        );
                    }
                }
            }
            Op::Physical(vector) if running => {
                running = vapic.process_posted_interrupt(pid, vector).is_none();
            }
            Op::Suppress(on) => {
                // A vCPU runs with SN set only when a VMM misconfigures it: posts then wait in
                // PIR, which the LAPIC model cannot express.
                equivalent &= !(on && running);
                if let Some(n) = pid.suppress_notifications(on) {
                    if running {
                        at.check(
                            vapic.process_posted_interrupt(pid, n.vector).is_none(),
                            "notification exit",
                        );
                    }
                }
            }
            Op::Sync if !running => {
                vapic.sync_posted_interrupts(pid);
            }
            Op::Tpr(tpr) if running => {
                let bytes = u32::from(tpr).to_le_bytes();
                if x2apic {
                    let _ = vapic.wrmsr(0x808, tpr.into(), table);
                    let _ = apic.wrmsr(0x808, tpr.into(), 0);
                } else {
                    let _ = vapic.write_apic_access(regs::TPR, &bytes, table);
                    let _ = apic.mmio_write(regs::TPR.into(), &bytes, 0);
                }
            }
            Op::Cr8(cr8) if running => {
                let _ = vapic.write_cr8(cr8 & 0xF);
                apic.set_cr8(u64::from(cr8 & 0xF));
            }
            Op::Eoi if running => {
                let exit = if x2apic {
                    let _ = apic.wrmsr(0x80B, 0, 0);
                    match vapic.wrmsr(0x80B, 0, table) {
                        MsrWrite::Exit(exit) => Some(exit),
                        _ => None,
                    }
                } else {
                    let _ = apic.mmio_write(regs::EOI.into(), &[0; 4], 0);
                    vapic.write_apic_access(regs::EOI, &[0; 4], table).err()
                };
                if exit.is_some() {
                    running = vapic.vm_entry().is_ok();
                }
            }
            Op::SelfIpi(vector) if running => {
                let vector = vector.max(16);
                if x2apic {
                    let _ = vapic.wrmsr(0x83F, vector.into(), table);
                    let _ = apic.wrmsr(0x83F, vector.into(), 0);
                } else {
                    let icr = (0x0004_4000u32 | u32::from(vector)).to_le_bytes();
                    let _ = vapic.write_apic_access(regs::ICR_LOW, &icr, table);
                    if let Some(ipi) = apic.mmio_write(regs::ICR_LOW.into(), &icr, 0).ipi {
                        let _ = apic.accept(&ipi);
                    }
                }
            }
            Op::Ipi { destination, vector, command } if running => {
                let destination = destination % 4;
                let (bits, qualifies) = match command % 8 {
                    0 => (0, true),
                    1 => (1 << 14, true), // level assert, as Linux sends fixed IPIs
                    // Delivery status: ignored by the x2APIC ICR, reserved for the xAPIC checks.
                    2 => (1 << 12, x2apic),
                    3 => (1 << 11, false),           // logical
                    4 => (1 << 15 | 1 << 14, false), // level
                    5 => (0b100 << 8, false),        // NMI
                    6 => (0b11 << 18, false),        // all excluding self
                    _ => (1 << 13, false),           // reserved
                };
                let icr = bits | u32::from(vector);
                let result = if x2apic {
                    match vapic.wrmsr(0x830, u64::from(destination) << 32 | u64::from(icr), table) {
                        MsrWrite::Posted(ipi) => Ok(Some(ipi)),
                        MsrWrite::Exit(exit) => Err(exit),
                        MsrWrite::GeneralProtection => {
                            at.check(icr & 1 << 13 != 0, "#GP without a reserved bit");
                            Ok(None)
                        }
                        other => panic!("op {index}: ICR WRMSR gave {other:?}"),
                    }
                } else {
                    let high = (u32::from(destination) << 24).to_le_bytes();
                    at.check(vapic.write_apic_access(regs::ICR_HIGH, &high, table) == Ok(None), "ICR high");
                    vapic.write_apic_access(regs::ICR_LOW, &icr.to_le_bytes(), table)
                };
                let gp = x2apic && icr & 1 << 13 != 0;
                let posts = qualifies && vector >= 16 && destination < 2;
                match result {
                    Ok(Some(PostedIpi { destination: to, vector: posted_vector, outcome })) => {
                        at.check(posts, "an IPI that does not qualify was posted");
                        at.check((to, posted_vector) == (destination.into(), vector), "posted elsewhere");
                        let target = if destination == 0 { pid } else { other };
                        at.check(target.pir().contains(vector), "posted into the wrong descriptor");
                        if outcome.is_new() {
                            if destination == 0 {
                                posted.insert(vector);
                                let _ =
                                    apic.accept(&Interrupt { vector, level: true, ..Interrupt::default() });
                            } else {
                                posted_other.insert(vector);
                            }
                        }
                        notify_self(&mut vapic, pid, &Some(outcome), destination == 0 && running, &at);
                    }
                    Ok(None) => at.check(gp, "an ICR write neither posted nor exited"),
                    Err(exit) => {
                        at.check(!posts && !gp, "a qualifying IPI exited");
                        at.check(
                            exit == VmExit::ApicWrite { offset: regs::ICR_LOW },
                            "not an ICR APIC-write exit",
                        );
                        // The VMM would send it; here it is dropped on both sides alike.
                        running = vapic.vm_entry().is_ok();
                    }
                }
            }
            Op::Read { offset, len } if running => {
                let len = usize::from(len % 9);
                if vapic.read_apic_access(u32::from(offset), len).is_err() {
                    running = vapic.vm_entry().is_ok();
                }
            }
            Op::Write { offset, len, bytes } if running => {
                let data = &bytes[..usize::from(len % 5)];
                let result = vapic.write_apic_access(u32::from(offset), data, table);
                // Only TPR, EOI and ICR writes have the same meaning for the LAPIC model.
                equivalent = false;
                if let Ok(Some(ipi)) = result {
                    record(&mut posted, &mut posted_other, ipi);
                    notify_self(&mut vapic, pid, &Some(ipi.outcome), running, &at);
                }
                if result.is_err() {
                    running = vapic.vm_entry().is_ok();
                }
            }
            // An MSR-read exit: the VMM emulates it and re-enters.
            Op::Rdmsr(low) if running && vapic.rdmsr(0x800 | u32::from(low)) == MsrRead::NotVirtualized => {
                vapic.vm_exit();
                running = vapic.vm_entry().is_ok();
            }
            Op::Wrmsr(low, value) if running => {
                let msr = 0x800 | u32::from(low);
                let result = vapic.wrmsr(msr, value, table);
                if result != MsrWrite::NotVirtualized && result != MsrWrite::GeneralProtection {
                    equivalent = false;
                }
                if let MsrWrite::Posted(ipi) = result {
                    at.check(
                        ipi.destination == (value >> 32) as u32 && ipi.vector == value as u8,
                        "ICR fields",
                    );
                    record(&mut posted, &mut posted_other, ipi);
                    notify_self(&mut vapic, pid, &Some(ipi.outcome), running, &at);
                }
                if matches!(result, MsrWrite::Exit(_) | MsrWrite::NotVirtualized) {
                    running = vapic.vm_entry().is_ok();
                }
            }
            Op::Interruptible(on) => interruptible = on,
            Op::Step if running => {
                delivered = vapic.deliver(interruptible);
                if let Some(v) = delivered {
                    taken_v.push(v);
                    posted.remove(v);
                }
                if interruptible && apic.pending_interrupt().is_some() {
                    taken_l.push(apic.acknowledge().vector);
                }
            }
            Op::Exit if running => {
                vapic.vm_exit();
                running = false;
            }
            Op::Entry if !running => {
                // As KVM's vcpu_load: notifications back on, then the sync before entry.
                let _ = pid.suppress_notifications(false);
                vapic.sync_posted_interrupts(pid);
                running = vapic.vm_entry().is_ok();
            }
            _ => {}
        }
        // 2. Guest interrupt status and VPPR.
        let page = vapic.page();
        at.check(vapic.rvi() == page.highest(VIRR).unwrap_or(0), "RVI = highest VIRR");
        at.check(vapic.svi() == page.visr().highest().unwrap_or(0), "SVI = highest VISR");
        let (vtpr, svi) = (page.vtpr(), vapic.svi());
        let ppr = if vtpr & 0xF0 >= svi & 0xF0 { vtpr } else { svi & 0xF0 };
        at.check(page.vppr() == ppr, "VPPR = f(VTPR, SVI)");
        // 3. The delivery gate and effect.
        if let Some(v) = delivered {
            at.check(interruptible && v >> 4 > before.page().vppr() >> 4, "delivery gate");
            at.check(!page.virr().contains(v) && page.visr().contains(v), "VIRR → VISR");
        }
        // 4. No posted vector is lost.
        let held = page.virr().union(&pid.pir());
        at.check(posted.intersection(&held) == posted, "a posted vector was lost");
        at.check(other.pir() == posted_other, "the other vCPU's PIR lost or gained a vector");
        // 5. Equivalence with the LAPIC model.
        if equivalent {
            at.check(taken_v == taken_l, "different vectors taken");
            let lapic = apic.state();
            at.check(held == lapic.irr, "IRR differs");
            at.check(page.visr() == lapic.isr, "ISR differs");
            if running {
                at.check(page.vppr() == apic.ppr(), "PPR differs");
            }
        }
    }
}

/// A post to this vCPU's own descriptor (through IPI virtualization) that set ON sent the
/// notification to this processor: processed at once while it runs, else a wake-up.
fn notify_self(
    vapic: &mut VirtualApic,
    pid: &PostedInterruptDescriptor,
    outcome: &Option<PostOutcome>,
    running: bool,
    at: &Step<'_>,
) {
    if let (Some(PostOutcome::Notify(n)), true) = (outcome, running) {
        if n.destination == NotificationDestination::x2apic(0) {
            at.check(vapic.process_posted_interrupt(pid, n.vector).is_none(), "notification exit");
        }
    }
}

/// Accounts an arbitrary ICR write's post: this vCPU's posted vectors must not be lost, and the
/// second vCPU's PIR must hold exactly what was posted to it.
fn record(posted: &mut VectorSet, posted_other: &mut VectorSet, ipi: PostedIpi) {
    if ipi.outcome.is_new() {
        match ipi.destination {
            0 => posted.insert(ipi.vector),
            1 => posted_other.insert(ipi.vector),
            _ => false,
        };
    }
}
