//! Random PIC scenarios on `kvm-kernel` (the reference) and on our KVM-profile model behind
//! `kvm-userspace`: port writes (ICWs, OCWs, masks, ELCR), reads, line changes
//! and interrupts taken. The guest logs and the PIC state (KVM_GET_IRQCHIP vs
//! `PicState::to_kvm`) must agree bit for bit. A divergence is shrunk by proptest and printed
//! as a named scenario in the text form, replayable with `cargo run --release -- --replay FILE`.

mod common;

use irq_harness::backend::{Backend, BackendId, RunOptions};
use irq_harness::diff;
use irq_harness::scenario::{EoiPolicy, HostOp, Op, Scenario};
use irq_harness::scenarios::{inb, linux_init, out, snapshot};
use proptest::prelude::*;
use vm_pic::{InitState, Pic, Quirks};

/// One generated step before it is made safe to run.
#[derive(Clone, Debug)]
enum Step {
    /// A byte to one of the six PIC ports (index into PORTS).
    Write(usize, u8),
    /// A read of a PIC port.
    Read(usize),
    /// Line `irq` to `level`.
    Line(u8, bool),
    /// An edge on `irq`.
    Pulse(u8),
    /// Take an interrupt, if the PIC has one for the CPU.
    Take,
    /// A snapshot.
    Snapshot,
}

const PORTS: [u16; 6] = [0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1];

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..6usize, any::<u8>()).prop_map(|(p, v)| Step::Write(p, v)),
        // Command-port bytes that are OCW2/OCW3 (D4=0) more often than ICW1.
        3 => (prop_oneof![Just(0usize), Just(2usize)], any::<u8>()).prop_map(|(p, v)| Step::Write(p, v & 0xEF)),
        3 => (0..6usize).prop_map(Step::Read),
        3 => (0..16u8, any::<bool>()).prop_map(|(i, l)| Step::Line(i, l)),
        3 => (0..16u8).prop_map(Step::Pulse),
        3 => Just(Step::Take),
        1 => Just(Step::Snapshot),
    ]
}

/// (Accesses wider than a byte are not generated: KVM's in-kernel PIC does not take them,
/// they exit to userspace on `kvm-kernel` too, so there is no kernel behaviour to compare.)
///
/// Turns steps into a program that cannot hang or fault: a `Take` becomes a `Wait` only when
/// the KVM-profile model (replayed alongside) has an interrupt for the CPU, and a vector base
/// written during initialisation is kept at 0x20 or above (vectors below 32 are exceptions).
/// If the model is wrong about a pending interrupt, the kernel run hangs in that `Wait` and
/// the watchdog reports it: a divergence too.
fn compile(name: &str, steps: &[Step]) -> Scenario {
    let mut pic = Pic::new(Quirks::KVM);
    let mut ops = linux_init();
    for op in &ops {
        if let Op::Out { port, value, .. } = op {
            let _ = pic.write(*port, *value as u8);
        }
    }
    let mut snapshots = 0;
    for step in steps {
        match *step {
            Step::Write(p, mut v) => {
                let port = PORTS[p];
                let chip = if port == 0x21 {
                    Some(pic.state().master)
                } else if port == 0xA1 {
                    Some(pic.state().slave)
                } else {
                    None
                };
                if chip.is_some_and(|c| c.init_state == InitState::Icw2) {
                    v |= 0x20;
                }
                let _ = pic.write(port, v);
                ops.push(out(port, v));
            }
            Step::Read(p) => {
                let _ = pic.read(PORTS[p]);
                ops.push(inb(PORTS[p]));
            }
            Step::Line(irq, level) => {
                let _ = pic.set_irq(irq, level);
                ops.push(Op::Host(HostOp::SetIrq { irq, level }));
            }
            Step::Pulse(irq) => {
                let _ = pic.pulse_irq(irq);
                ops.push(Op::Host(HostOp::PulseIrq(irq)));
            }
            Step::Take => {
                if pic.pending_vector().is_some_and(|v| v >= 0x20) {
                    let _ = pic.acknowledge();
                    ops.push(Op::Wait);
                }
            }
            Step::Snapshot => {
                snapshots += 1;
                ops.push(snapshot(&format!("s{snapshots}")));
            }
        }
    }
    ops.push(snapshot("end"));
    Scenario::new(name, "random PIC scenario (proptest)", EoiPolicy::None, ops)
}

fn run_pair(kernel: &dyn Backend, user: &dyn Backend, scenario: &Scenario) -> Result<(), String> {
    let options = RunOptions::default();
    let a = kernel.run(scenario, &options).map_err(|e| format!("kvm-kernel: {e}"))?;
    let b = user.run(scenario, &options).map_err(|e| format!("{}: {e}", user.id()))?;
    diff::compare(scenario, &a.traces[0], &b.traces[0])
}

#[test]
fn random_pic_scenarios_agree_between_kvm_kernel_and_the_kvm_profile_model() {
    let Some(kernel) = common::kvm_backend(BackendId::KvmKernel) else { return };
    let Some(user) = common::kvm_backend(BackendId::KvmUserspace(irq_harness::scenario::Profile::Kvm)) else {
        return;
    };
    // 128 cases take a few seconds; IRQ_HARNESS_PIC_CASES=N runs more.
    let cases = std::env::var("IRQ_HARNESS_PIC_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128);
    let config = ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(steps in proptest::collection::vec(step(), 1..40))| {
        let scenario = compile("pic-random-divergence", &steps);
        if let Err(diff) = run_pair(kernel.as_ref(), user.as_ref(), &scenario) {
            prop_assert!(false, "kvm-kernel and kvm-userspace/kvm diverge: {diff}\n\nreplay: save this as a file and run `cargo run --release -- --replay FILE`\n{}", scenario.to_text());
        }
    });
}

#[test]
fn the_generator_makes_programs_that_take_interrupts_and_snapshot() {
    let steps = vec![Step::Write(1, 0x00), Step::Pulse(4), Step::Take, Step::Snapshot, Step::Read(0)];
    let s = compile("g", &steps);
    assert!(s.ops.contains(&Op::Wait));
    assert_eq!(s.ops.iter().filter(|op| matches!(op, Op::Host(HostOp::Snapshot(_)))).count(), 2);
    // The software backend with the KVM profile runs it (and takes IRQ4 at 0x34).
    let out = irq_harness::backend::software::Software::new(irq_harness::scenario::Profile::Kvm)
        .run(&s, &RunOptions::default())
        .unwrap();
    assert_eq!(out.traces[0].summary(), "irq:0x34 val:0x0");
}
