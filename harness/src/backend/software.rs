//! The `software` backend: the models of [`crate::irqchip::Irqchip`] driven by a scripted
//! CPU, in virtual time. Always available and deterministic.
//!
//! The scripted CPU follows the probe guest's rules: operations are atomic, interrupts are
//! taken at `Wait` (all that are deliverable then; the scenarios arrange for exactly one), the
//! handler logs the vector and ends it by the EOI policy, an MSR no model owns raises #GP,
//! and `Wait` with nothing pending jumps virtual time to the models' next deadline (a halted
//! CPU with no deadline ahead is a lost interrupt, reported at once). Like KVM on the
//! project's hosts, it does not deliver at `Sti` (see [`crate::scenarios`]).

use std::time::{Duration, Instant};

use super::{Backend, BackendId, RunError, RunOptions, RunOutput, Stats, Unsupported};
use crate::irqchip::{Irqchip, IrqchipConfig, MsrAnswer, Now};
use crate::scenario::{EoiPolicy, HostOp, Op, Profile, Scenario};
use crate::trace::{Entry, Event, Trace};

/// Virtual time at which a software run starts (ns); not 0, so that "time 0" bugs show.
pub const START_NS: u64 = 1_000_000_000;
/// The virtual host TSC frequency (the project's machines' TSC).
pub const TSC_HZ: u64 = 2_596_132_000;
/// Operations one run may execute (loops included) before it is declared a livelock.
pub const MAX_STEPS: u64 = 10_000_000;

/// The scripted-CPU backend.
#[derive(Clone, Copy, Debug)]
pub struct Software {
    profile: Profile,
}

impl Software {
    /// A software backend whose PIC has `profile`.
    pub fn new(profile: Profile) -> Self {
        Software { profile }
    }
}

impl Backend for Software {
    fn id(&self) -> BackendId {
        BackendId::Software(self.profile)
    }

    fn supports(&self, scenario: &Scenario) -> Result<(), Unsupported> {
        let needs = scenario.needs();
        if needs.lapic || needs.ioapic {
            return Err(Unsupported(
                "needs the LAPIC/IOAPIC models (vm-apic), which are not plugged into the harness yet".into(),
            ));
        }
        Ok(())
    }

    fn run(&self, scenario: &Scenario, _options: &RunOptions) -> Result<RunOutput, RunError> {
        let started = Instant::now();
        scenario.validate(usize::MAX).map_err(|e| RunError::new(e.to_string()))?;
        let vcpus = scenario.aps.len() + 1;
        let mut cpu = Cpu {
            chip: Irqchip::new(IrqchipConfig { profile: self.profile, vcpus, owns_tsc: true }),
            now_ns: START_NS,
            steps: 0,
        };
        cpu.chip.start_tsc(cpu.now());
        let mut traces = Vec::new();
        for (index, program) in scenario.programs().enumerate() {
            let mut thread =
                Thread { vcpu: index, if_flag: false, eoi: scenario.eoi, trace: Trace::default() };
            if let Err(message) = cpu.run(&mut thread, program) {
                traces.push(thread.trace);
                return Err(RunError { message, registers: None, partial: traces });
            }
            traces.push(thread.trace);
        }
        let wall = started.elapsed();
        let interrupts = traces.iter().map(|t| t.interrupts() as u64).sum();
        Ok(RunOutput {
            traces,
            stats: Stats { interrupts, exits: 0, wall, vcpu_time: wall, model_time: Duration::ZERO },
        })
    }
}

/// The machine: the models and virtual time.
struct Cpu {
    chip: Irqchip,
    now_ns: u64,
    steps: u64,
}

/// One vCPU's architectural state as the probe guest sees it.
struct Thread {
    vcpu: usize,
    if_flag: bool,
    eoi: EoiPolicy,
    trace: Trace,
}

impl Thread {
    fn log(&mut self, event: Event, op: usize) {
        let seq = u32::try_from(self.trace.entries.len()).unwrap_or(u32::MAX);
        self.trace.entries.push(Entry { event, op: op as u16, seq });
    }
}

impl Cpu {
    fn now(&self) -> Now {
        let tsc = u128::from(self.now_ns) * u128::from(TSC_HZ) / 1_000_000_000;
        Now { ns: self.now_ns, tsc: u64::try_from(tsc).unwrap_or(u64::MAX) }
    }

    fn run(&mut self, t: &mut Thread, program: &[Op]) -> Result<(), String> {
        let mut loops = vec![0u64; program.len()];
        let mut pc = 0;
        while let Some(op) = program.get(pc) {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return Err(format!("more than {MAX_STEPS} operations executed: livelock?"));
            }
            let mut next = pc + 1;
            match op {
                Op::Loop { target, count } => {
                    let left = if loops[pc] == 0 { *count } else { loops[pc] };
                    loops[pc] = left - 1;
                    if left > 1 {
                        next = *target;
                    }
                }
                Op::Wait => {
                    t.if_flag = true;
                    let mut waited = 0;
                    while self.chip.pending_vector(t.vcpu).is_none() {
                        let deadline = self.chip.next_deadline(self.now()).ok_or_else(|| {
                            format!("op {pc} wait: halted with no interrupt pending or scheduled (lost interrupt)")
                        })?;
                        self.now_ns = deadline.max(self.now_ns);
                        self.chip.advance(self.now());
                        waited += 1;
                        if waited > 1000 {
                            return Err(format!("op {pc} wait: 1000 timer expiries without an interrupt"));
                        }
                    }
                    self.take_interrupts(t, pc)?;
                    t.if_flag = false;
                }
                _ => self.step(t, op, pc)?,
            }
            pc = next;
        }
        Ok(())
    }

    /// Takes every pending interrupt (IF=1): acknowledge, log, EOI by policy.
    fn take_interrupts(&mut self, t: &mut Thread, pc: usize) -> Result<(), String> {
        for _ in 0..256 {
            if self.chip.pending_vector(t.vcpu).is_none() {
                return Ok(());
            }
            let vector = self.chip.acknowledge(t.vcpu);
            match vector {
                2 => t.log(Event::Nmi, pc),
                0..=31 => t.log(Event::Exception { vector, error_code: 0 }, pc),
                _ => t.log(Event::Irq(vector), pc),
            }
            t.trace.irq_times_ns.push(self.now_ns);
            if let EoiPolicy::Pic { slave_base } = t.eoi {
                let now = self.now();
                if vector & 0xF8 == slave_base {
                    self.chip.pio_write(0xA0, &[0x20], now);
                }
                self.chip.pio_write(0x20, &[0x20], now);
            }
        }
        Err(format!("op {pc}: 256 interrupts in a row without IF=0: interrupt storm"))
    }

    fn step(&mut self, t: &mut Thread, op: &Op, pc: usize) -> Result<(), String> {
        let now = self.now();
        match op {
            Op::Out { port, width, value } => {
                let bytes = value.to_le_bytes();
                if !self.chip.pio_write(*port, &bytes[..width.bytes()], now) {
                    return Err(format!("op {pc}: out to port {port:#x}, which no model decodes"));
                }
            }
            Op::In { port, width } => {
                let mut bytes = [0u8; 4];
                if !self.chip.pio_read(*port, &mut bytes[..width.bytes()], now) {
                    return Err(format!("op {pc}: in from port {port:#x}, which no model decodes"));
                }
                t.log(Event::Value(u64::from(u32::from_le_bytes(bytes))), pc);
            }
            Op::MmioRead { addr, wide } => {
                let mut bytes = [0u8; 8];
                let len = if *wide { 8 } else { 4 };
                if !self.chip.mmio_read(t.vcpu, *addr, &mut bytes[..len], now) {
                    return Err(format!("op {pc}: MMIO read at {addr:#x}, which no model decodes"));
                }
                t.log(Event::Value(u64::from_le_bytes(bytes)), pc);
            }
            Op::MmioWrite { addr, wide, value } => {
                let bytes = value.to_le_bytes();
                let len = if *wide { 8 } else { 4 };
                if !self.chip.mmio_write(t.vcpu, *addr, &bytes[..len], now) {
                    return Err(format!("op {pc}: MMIO write at {addr:#x}, which no model decodes"));
                }
            }
            Op::Rdmsr(msr) => match self.chip.rdmsr(t.vcpu, *msr, now) {
                MsrAnswer::Value(v) => t.log(Event::Value(v), pc),
                MsrAnswer::Fault | MsrAnswer::NotMine => {
                    t.log(Event::Exception { vector: 13, error_code: 0 }, pc)
                }
            },
            Op::Wrmsr(msr, value) => match self.chip.wrmsr(t.vcpu, *msr, *value, now) {
                MsrAnswer::Value(_) => {}
                MsrAnswer::Fault | MsrAnswer::NotMine => {
                    t.log(Event::Exception { vector: 13, error_code: 0 }, pc)
                }
            },
            // The raw TSC instruction is the host's: KVM on our hosts cannot offset it.
            Op::Rdtsc => t.log(Event::Value(now.tsc), pc),
            Op::Sti => t.if_flag = true,
            Op::Cli => t.if_flag = false,
            Op::Record(v) => t.log(Event::Value(*v), pc),
            Op::Spin(_) => {}
            Op::Ud2 => t.log(Event::Exception { vector: 6, error_code: 0 }, pc),
            Op::SetEoi(policy) => t.eoi = *policy,
            Op::WriteCr8(_) | Op::ReadCr8 => return Err(format!("op {pc}: CR8 needs a LAPIC model")),
            Op::Host(host) => self.host(t, host, pc)?,
            Op::Wait | Op::Loop { .. } => unreachable!("handled by the caller"),
        }
        Ok(())
    }

    fn host(&mut self, t: &mut Thread, op: &HostOp, pc: usize) -> Result<(), String> {
        match op {
            HostOp::SetIrq { irq, level } => {
                self.chip.set_irq(*irq, *level);
            }
            HostOp::PulseIrq(irq) => {
                self.chip.set_irq(*irq, true);
                self.chip.set_irq(*irq, false);
            }
            HostOp::Sleep(ns) => {
                self.now_ns = self.now_ns.saturating_add(*ns);
                self.chip.advance(self.now());
            }
            HostOp::Snapshot(label) => t.trace.snapshots.push(self.chip.snapshot(label)),
            HostOp::SetGuestTsc(value) => {
                let now = self.now();
                if !self.chip.host_set_tsc(t.vcpu, *value, now) {
                    return Err(format!("op {pc}: no TSC model"));
                }
            }
        }
        Ok(())
    }
}
