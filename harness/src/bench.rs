//! The harness benchmark (`cargo run --release -- bench`): the same guest loops on every
//! backend, measuring interrupts per second, VM exits per interrupt and the share of
//! vCPU-thread time spent inside our models.
//!
//! Three closed loops, each `irqs` interrupts long:
//! * [`BenchLoop::PicIrq3`]: the guest rings the host doorbell, the host pulses IRQ3
//!   (KVM_IRQ_LINE on `kvm-kernel`, the PIC model elsewhere), the guest halts until the
//!   interrupt and its handler ends it with a non-specific EOI by port;
//! * [`BenchLoop::IoapicPin16`]: the same through IOAPIC pin 16 (edge, vector 0x50) and the
//!   LAPIC, the handler's EOI by LAPIC MMIO;
//! * [`BenchLoop::X2apicSelfIpi`]: no host action: the guest sends itself vector 0x60 with the
//!   x2APIC SELF IPI MSR, halts, and its handler EOIs by MSR 0x80B.
//!
//! The same program runs everywhere; what differs is who answers the EOI and who injects.

use std::fmt::Write as _;
use std::time::Duration;

use crate::backend::{BackendId, RunOptions, SharedBackend};
use crate::scenario::{EoiPolicy, Expect, Op, Scenario};
use crate::scenarios::apic::{ioapic_prologue, msr, route};
use crate::scenarios::{linux_init, out, pulse, PIC_EOI};

/// One benchmark loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BenchLoop {
    /// PIC IRQ3, EOI by port.
    PicIrq3,
    /// IOAPIC pin 16 to the LAPIC, EOI by LAPIC MMIO.
    IoapicPin16,
    /// x2APIC self-IPI, EOI by MSR.
    X2apicSelfIpi,
}

impl BenchLoop {
    /// Every loop, in table order.
    pub const ALL: [BenchLoop; 3] = [BenchLoop::PicIrq3, BenchLoop::IoapicPin16, BenchLoop::X2apicSelfIpi];

    /// What the loop does, for the table.
    pub fn description(self) -> &'static str {
        match self {
            BenchLoop::PicIrq3 => "doorbell -> pulse IRQ3 (PIC) -> hlt -> handler EOI by port",
            BenchLoop::IoapicPin16 => {
                "doorbell -> pulse GSI 16 (IOAPIC -> LAPIC) -> hlt -> handler EOI by LAPIC MMIO"
            }
            BenchLoop::X2apicSelfIpi => "x2APIC SELF IPI (wrmsr 0x83f) -> hlt -> handler EOI by wrmsr 0x80b",
        }
    }
}

/// Interrupts between two log drains in the self-IPI loop (the log holds 16384 entries).
const DRAIN: u64 = 1000;

/// The PIC loop with `irqs` iterations (the phase-1 benchmark).
pub fn scenario(irqs: u64) -> Scenario {
    loop_scenario(BenchLoop::PicIrq3, irqs)
}

/// The guest loop `which` with `irqs` iterations.
pub fn loop_scenario(which: BenchLoop, irqs: u64) -> Scenario {
    let irqs = irqs.max(1);
    let (name, eoi, mut ops, vector) = match which {
        BenchLoop::PicIrq3 => {
            let mut ops = linux_init();
            ops.push(out(0x21, 0xF7)); // OCW1: IRQ3 only
            ("bench-irq-loop", PIC_EOI, ops, 0x33)
        }
        BenchLoop::IoapicPin16 => {
            let mut ops = ioapic_prologue();
            ops.extend(route(16, 0x50)); // pin 16: edge, vector 0x50, APIC 0
            ("bench-ioapic-loop", EoiPolicy::LapicMmio, ops, 0x50)
        }
        BenchLoop::X2apicSelfIpi => {
            let ops = vec![Op::Wrmsr(msr::APIC_BASE, 0xFEE0_0D00), Op::Wrmsr(msr::SVR, 0x1FF)];
            ("bench-self-ipi-loop", EoiPolicy::X2apicMsr, ops, 0x60)
        }
    };
    let body = ops.len();
    match which {
        BenchLoop::PicIrq3 => ops.extend([pulse(3), Op::Wait, Op::Loop { target: body, count: irqs }]),
        BenchLoop::IoapicPin16 => ops.extend([pulse(16), Op::Wait, Op::Loop { target: body, count: irqs }]),
        BenchLoop::X2apicSelfIpi => {
            // No host action in the loop: a doorbell every DRAIN interrupts empties the log.
            let inner = irqs.min(DRAIN);
            ops.extend([
                Op::Wrmsr(msr::SELF_IPI, 0x60),
                Op::Wait,
                Op::Loop { target: body, count: inner },
                Op::Host(crate::scenario::HostOp::Sleep(0)),
                Op::Loop { target: body, count: irqs.div_ceil(inner) },
            ]);
        }
    }
    let irqs = if which == BenchLoop::X2apicSelfIpi {
        irqs.div_ceil(irqs.min(DRAIN)) * irqs.min(DRAIN)
    } else {
        irqs
    };
    let expect = vec![Expect::Irq(vector); irqs as usize];
    Scenario::new(name, which.description(), eoi, ops).expect(expect)
}

/// One backend's numbers on one loop.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The loop.
    pub which: BenchLoop,
    /// Backend.
    pub backend: BackendId,
    /// Interrupts taken, exits, vCPU-loop time and time in models; or why it failed.
    pub result: Result<(u64, u64, Duration, Duration), String>,
}

/// The benchmark's table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BenchResult {
    /// Interrupts per backend run.
    pub irqs: u64,
    /// One row per loop and backend.
    pub rows: Vec<Row>,
}

impl BenchResult {
    /// Whether a backend failed a loop.
    pub fn failed(&self) -> bool {
        self.rows.iter().any(|r| r.result.is_err())
    }

    /// The results as JSON: one object per loop and backend.
    pub fn json(&self) -> String {
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|row| {
                let head = format!(
                    "\"loop\":{},\"backend\":\"{}\"",
                    crate::report::json_string(row.which.description()),
                    row.backend
                );
                match &row.result {
                    Ok((irqs, exits, vcpu, model)) => format!(
                        "{{{head},\"interrupts\":{irqs},\"exits\":{exits},\"vcpu_ms\":{:.3},\"model_ms\":{:.3}}}",
                        vcpu.as_secs_f64() * 1e3,
                        model.as_secs_f64() * 1e3
                    ),
                    Err(e) => format!("{{{head},\"error\":{}}}", crate::report::json_string(e)),
                }
            })
            .collect();
        format!("{{\"irqs\":{},\"passed\":{},\"rows\":[{}]}}", self.irqs, !self.failed(), rows.join(","))
    }

    /// The table.
    pub fn table(&self) -> String {
        let mut s =
            format!("harness benchmark: {} interrupts per backend and loop, closed loops\n", self.irqs);
        for which in BenchLoop::ALL {
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.which == which).collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(s, "\n{}", which.description());
            let _ = writeln!(
                s,
                "{:<24} | {:>10} | {:>11} | {:>12} | {:>12}",
                "backend", "irq/s", "exits/irq", "µs/irq", "model share"
            );
            let _ = writeln!(s, "{}", "-".repeat(82));
            for row in rows {
                match &row.result {
                    Ok((irqs, exits, vcpu, model)) => {
                        let secs = vcpu.as_secs_f64().max(1e-9);
                        let share = if row.backend == BackendId::KvmKernel {
                            "-".to_string()
                        } else {
                            format!("{:.3}%", 100.0 * model.as_secs_f64() / secs)
                        };
                        let _ = writeln!(
                            s,
                            "{:<24} | {:>10.0} | {:>11.2} | {:>12.1} | {:>12}",
                            row.backend.to_string(),
                            *irqs as f64 / secs,
                            *exits as f64 / (*irqs).max(1) as f64,
                            secs * 1e6 / (*irqs).max(1) as f64,
                            share
                        );
                    }
                    Err(e) => {
                        let _ = writeln!(s, "{:<24} | FAILED: {e}", row.backend.to_string());
                    }
                }
            }
        }
        s.push_str("\n(model share: time inside the PIC/PIT/TSC/IOAPIC/LAPIC models over the vCPU thread's loop time; `software` counts no exits, `software-apicv` the VM exits of its APICv model)\n");
        s
    }
}

/// Runs every loop on each backend (`kvm-migrate` is `kvm-kernel` without migration points
/// and is left out).
pub fn run(backends: &[SharedBackend], irqs: u64) -> BenchResult {
    let options = RunOptions { timeout: Duration::from_secs(600), ..RunOptions::default() };
    let mut result = BenchResult { irqs, rows: Vec::new() };
    for which in BenchLoop::ALL {
        let scenario = loop_scenario(which, irqs);
        for backend in backends.iter().filter(|b| b.id() != BackendId::KvmMigrate) {
            let id = backend.id();
            let outcome = backend.run(&scenario, &options).map_err(|e| e.message).and_then(|out| {
                let expected = scenario.expected(id.profile()).unwrap_or(&[]);
                out.traces.first().ok_or("no trace".to_string())?.check(expected)?;
                Ok((out.stats.interrupts, out.stats.exits, out.stats.vcpu_time, out.stats.model_time))
            });
            result.rows.push(Row { which, backend: id, result: outcome });
        }
    }
    result
}
