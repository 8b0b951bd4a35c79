//! The harness benchmark (`cargo run --release -- --bench`): one guest loop on every backend,
//! measuring interrupts per second, VM exits per interrupt and the share of vCPU-thread time
//! spent inside our models.
//!
//! The loop is closed: the guest rings the host doorbell, the host pulses IRQ3 (KVM_IRQ_LINE
//! on `kvm-kernel`, the PIC model elsewhere), the guest halts until the interrupt and its
//! handler ends it with a non-specific EOI by port. The same program runs everywhere; what
//! differs is who answers the EOI and who injects.

use std::fmt::Write as _;
use std::time::Duration;

use crate::backend::{BackendId, RunOptions, SharedBackend};
use crate::scenario::{Expect, Op, Scenario};
use crate::scenarios::{linux_init, out, pulse, PIC_EOI};

/// The benchmark's guest loop with `irqs` iterations.
pub fn scenario(irqs: u64) -> Scenario {
    let mut ops = linux_init();
    ops.push(out(0x21, 0xF7)); // OCW1: IRQ3 only
    let body = ops.len();
    ops.extend([pulse(3), Op::Wait, Op::Loop { target: body, count: irqs.max(1) }]);
    let expect = vec![Expect::Irq(0x33); irqs.max(1) as usize];
    Scenario::new("bench-irq-loop", "closed loop: doorbell, pulse IRQ3, hlt, EOI by port", PIC_EOI, ops)
        .expect(expect)
}

/// One backend's numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
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
    /// One row per backend.
    pub rows: Vec<Row>,
}

impl BenchResult {
    /// Whether a backend failed the loop.
    pub fn failed(&self) -> bool {
        self.rows.iter().any(|r| r.result.is_err())
    }

    /// The table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "harness benchmark: {} interrupts per backend, closed loop (doorbell -> pulse IRQ3 -> hlt -> handler EOI by port)\n\n",
            self.irqs
        );
        let _ = writeln!(
            s,
            "{:<24} | {:>10} | {:>11} | {:>12} | {:>12}",
            "backend", "irq/s", "exits/irq", "µs/irq", "model share"
        );
        let _ = writeln!(s, "{}", "-".repeat(82));
        for row in &self.rows {
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
        s.push_str("\n(model share: time inside the PIC/PIT/TSC models over the vCPU thread's loop time; the software backend has no exits)\n");
        s
    }
}

/// Runs the loop on each backend.
pub fn run(backends: &[SharedBackend], irqs: u64) -> BenchResult {
    let scenario = scenario(irqs);
    let options = RunOptions { timeout: Duration::from_secs(600), ..RunOptions::default() };
    let mut result = BenchResult { irqs, rows: Vec::new() };
    for backend in backends {
        let id = backend.id();
        let outcome = backend.run(&scenario, &options).map_err(|e| e.message).and_then(|out| {
            let expected = scenario.expected(id.profile()).unwrap_or(&[]);
            out.traces.first().ok_or("no trace".to_string())?.check(expected)?;
            Ok((out.stats.interrupts, out.stats.exits, out.stats.vcpu_time, out.stats.model_time))
        });
        result.rows.push(Row { backend: id, result: outcome });
    }
    result
}
