//! The `software` backend: the models of [`crate::irqchip::Irqchip`] driven by a scripted
//! CPU per vCPU, in virtual time. Always available and deterministic.
//!
//! The scripted CPUs follow the probe guest's rules: operations are atomic, maskable
//! interrupts are taken at `Wait` (all that are deliverable then; the scenarios arrange for
//! exactly one), the handler logs the vector and ends it by the EOI policy, an MSR no model
//! owns raises #GP, and an NMI is taken before the next operation whatever IF says (it also
//! ends a `Wait`). Like KVM on the project's hosts, it does not deliver at `Sti` (see
//! [`crate::scenarios`]).
//!
//! vCPUs run round robin, one operation each per round, so a program's log does not depend on
//! how fast the others run as long as the vCPUs synchronise through interrupts (every
//! built-in SMP scenario does). A vCPU halted in `Wait` with nothing pending waits; when
//! every vCPU waits, virtual time jumps to the earliest model deadline, and with none ahead
//! the run reports a lost interrupt at once. An AP of an [`ApStart::WaitForSipi`] scenario
//! starts its program when its LAPIC latches a start-up IPI (vector [`SIPI_VECTOR`]).

use std::time::Instant;

use super::{Backend, BackendId, RunError, RunOptions, RunOutput, Stats, Unsupported};
use crate::irqchip::{Irqchip, IrqchipConfig, MsrAnswer, Now};
use crate::scenario::{ApStart, EoiPolicy, HostOp, Op, Profile, Scenario, LAPIC_PAGE, SIPI_VECTOR};
use crate::trace::{Entry, Event, Trace};

/// Virtual time at which a software run starts (ns); not 0, so that "time 0" bugs show.
pub const START_NS: u64 = 1_000_000_000;
/// The virtual host TSC frequency (the project's machines' TSC).
pub const TSC_HZ: u64 = 2_596_132_000;
/// Operations one run may execute (loops included) before it is declared a livelock.
pub const MAX_STEPS: u64 = 10_000_000;
/// Successive timer expiries with every vCPU waiting and none taking an interrupt before the
/// run is declared stuck.
pub const MAX_IDLE_EXPIRIES: u32 = 1000;

/// The scripted-CPU backend.
#[derive(Clone, Copy, Debug)]
pub struct Software {
    profile: Profile,
}

impl Software {
    /// A software backend whose models have `profile`.
    pub fn new(profile: Profile) -> Self {
        Software { profile }
    }
}

impl Backend for Software {
    fn id(&self) -> BackendId {
        BackendId::Software(self.profile)
    }

    fn supports(&self, _scenario: &Scenario) -> Result<(), Unsupported> {
        Ok(())
    }

    fn run(&self, scenario: &Scenario, _options: &RunOptions) -> Result<RunOutput, RunError> {
        let started = Instant::now();
        scenario.validate(usize::MAX).map_err(|e| RunError::new(e.to_string()))?;
        let programs: Vec<&[Op]> = scenario.programs().collect();
        let mut machine = Machine {
            chip: Irqchip::new(IrqchipConfig {
                profile: self.profile,
                vcpus: programs.len(),
                owns_tsc: true,
                owns_lapic: true,
                tsc_hz: TSC_HZ,
            }),
            now_ns: START_NS,
            steps: 0,
        };
        machine.chip.start_tsc(machine.now());
        let mut threads: Vec<Thread> = programs
            .iter()
            .enumerate()
            .map(|(vcpu, program)| Thread {
                vcpu,
                program,
                pc: 0,
                loops: vec![0; program.len()],
                if_flag: false,
                eoi: scenario.eoi,
                trace: Trace::default(),
                state: if vcpu > 0 && scenario.ap_start == ApStart::WaitForSipi {
                    State::WaitingForSipi
                } else {
                    State::Running
                },
            })
            .collect();
        let result = machine.schedule(&mut threads);
        let traces: Vec<Trace> = threads.into_iter().map(|t| t.trace).collect();
        if let Err(message) = result {
            return Err(RunError { message, registers: None, partial: traces });
        }
        let wall = started.elapsed();
        let interrupts = traces.iter().map(|t| t.interrupts() as u64).sum();
        Ok(RunOutput { traces, stats: Stats { interrupts, wall, vcpu_time: wall, ..Stats::default() } })
    }
}

/// The machine: the models and virtual time.
struct Machine {
    chip: Irqchip,
    now_ns: u64,
    steps: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// An AP before its start-up IPI.
    WaitingForSipi,
    Running,
    Done,
}

/// What one step of a vCPU did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Executed an operation (or took an NMI).
    Progress,
    /// Halted in `Wait` with nothing to take, or waiting for its start-up IPI.
    Blocked,
    /// Its program ended.
    Done,
}

/// One vCPU's architectural state as the probe guest sees it.
struct Thread<'a> {
    vcpu: usize,
    program: &'a [Op],
    pc: usize,
    loops: Vec<u64>,
    if_flag: bool,
    eoi: EoiPolicy,
    trace: Trace,
    state: State,
}

impl Thread<'_> {
    fn log(&mut self, event: Event, op: usize) {
        let seq = u32::try_from(self.trace.entries.len()).unwrap_or(u32::MAX);
        self.trace.entries.push(Entry { event, op: op as u16, seq });
    }
}

impl Machine {
    fn now(&self) -> Now {
        let tsc = u128::from(self.now_ns) * u128::from(TSC_HZ) / 1_000_000_000;
        Now { ns: self.now_ns, tsc: u64::try_from(tsc).unwrap_or(u64::MAX) }
    }

    /// Runs every vCPU to the end of its program, round robin.
    fn schedule(&mut self, threads: &mut [Thread<'_>]) -> Result<(), String> {
        let mut idle = 0u32;
        loop {
            let mut progressed = false;
            let mut done = true;
            for t in threads.iter_mut() {
                match self.step_thread(t)? {
                    Step::Progress => {
                        progressed = true;
                        done = false;
                    }
                    Step::Blocked => done = false,
                    Step::Done => {}
                }
            }
            let _ = self.chip.take_wakeups();
            if done {
                return Ok(());
            }
            if progressed {
                idle = 0;
                continue;
            }
            // Every vCPU waits: jump to the earliest deadline of any of them.
            let now = self.now();
            let deadline = threads
                .iter()
                .filter(|t| t.state != State::Done)
                .filter_map(|t| self.chip.next_deadline(t.vcpu, now))
                .min();
            let Some(deadline) = deadline else {
                return Err(Self::stuck(
                    threads,
                    "halted with no interrupt pending or scheduled (lost interrupt)",
                ));
            };
            self.now_ns = deadline.max(self.now_ns);
            self.chip.advance(self.now());
            idle += 1;
            if idle > MAX_IDLE_EXPIRIES {
                return Err(Self::stuck(threads, "1000 timer expiries without an interrupt"));
            }
        }
    }

    /// Where each waiting vCPU is, for an error.
    fn stuck(threads: &[Thread<'_>], why: &str) -> String {
        let waiting: Vec<String> = threads
            .iter()
            .filter(|t| t.state != State::Done)
            .map(|t| match t.state {
                State::WaitingForSipi => format!("vCPU {} waits for its start-up IPI", t.vcpu),
                _ => format!("vCPU {} op {} wait", t.vcpu, t.pc),
            })
            .collect();
        format!("{}: {why}", waiting.join(", "))
    }

    /// One operation of `t` (or its NMI, or its start).
    fn step_thread(&mut self, t: &mut Thread<'_>) -> Result<Step, String> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(format!("more than {MAX_STEPS} operations executed: livelock?"));
        }
        let events = self.chip.take_events(t.vcpu);
        if events.init {
            if t.state == State::Running && t.vcpu > 0 {
                return Err(format!("vCPU {}: INIT while running, which the harness does not model", t.vcpu));
            }
            self.chip.init(t.vcpu);
        }
        if let Some(vector) = events.sipi {
            if t.state == State::WaitingForSipi {
                if vector != SIPI_VECTOR {
                    return Err(format!(
                        "vCPU {}: start-up IPI vector {vector:#x}, the harness's trampoline is at vector {SIPI_VECTOR:#x}",
                        t.vcpu
                    ));
                }
                self.chip.sipi_taken(t.vcpu);
                t.state = State::Running;
                return Ok(Step::Progress);
            }
        }
        match t.state {
            State::WaitingForSipi => return Ok(Step::Blocked),
            State::Done => return Ok(Step::Done),
            State::Running => {}
        }
        let nmis = events.nmi;
        for _ in 0..nmis {
            t.log(Event::Nmi, t.pc);
        }
        let Some(op) = t.program.get(t.pc) else {
            t.state = State::Done;
            return Ok(if nmis > 0 { Step::Progress } else { Step::Done });
        };
        let pc = t.pc;
        let mut next = pc + 1;
        match op {
            Op::Loop { target, count } => {
                let left = if t.loops[pc] == 0 { *count } else { t.loops[pc] };
                t.loops[pc] = left - 1;
                if left > 1 {
                    next = *target;
                }
            }
            Op::Wait => {
                // An NMI wakes the halted CPU too; the Wait then ends without an interrupt.
                if nmis == 0 {
                    if self.chip.pending_vector(t.vcpu).is_none() {
                        return Ok(Step::Blocked);
                    }
                    t.if_flag = true;
                    self.take_interrupts(t, pc)?;
                }
                t.if_flag = false;
            }
            _ => self.step(t, op, pc)?,
        }
        t.pc = next;
        Ok(Step::Progress)
    }

    /// Takes every pending interrupt (IF=1): acknowledge, log, EOI by policy.
    fn take_interrupts(&mut self, t: &mut Thread<'_>, pc: usize) -> Result<(), String> {
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
            let now = self.now();
            match t.eoi {
                EoiPolicy::None => {}
                EoiPolicy::Pic { slave_base } => {
                    if vector & 0xF8 == slave_base {
                        self.chip.pio_write(0xA0, &[0x20], now);
                    }
                    self.chip.pio_write(0x20, &[0x20], now);
                }
                EoiPolicy::LapicMmio => {
                    if !self.chip.mmio_write(t.vcpu, LAPIC_PAGE + 0xB0, &[0; 4], now) {
                        return Err(format!("op {pc}: the handler's LAPIC EOI reached no model"));
                    }
                }
                EoiPolicy::X2apicMsr => {
                    if self.chip.wrmsr(t.vcpu, 0x80B, 0, now) != MsrAnswer::Value(0) {
                        t.log(Event::Exception { vector: 13, error_code: 0 }, pc);
                    }
                }
            }
        }
        Err(format!("op {pc}: 256 interrupts in a row without IF=0: interrupt storm"))
    }

    fn step(&mut self, t: &mut Thread<'_>, op: &Op, pc: usize) -> Result<(), String> {
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
            Op::Wrmsr(msr, value) => self.wrmsr(t, *msr, *value, pc, now),
            // The raw TSC instruction is the host's: KVM on our hosts cannot offset it.
            Op::WrmsrTscDelta(msr, delta) => self.wrmsr(t, *msr, now.tsc.wrapping_add(*delta), pc, now),
            Op::Rdtsc => t.log(Event::Value(now.tsc), pc),
            Op::Sti => t.if_flag = true,
            Op::Cli => t.if_flag = false,
            Op::Record(v) => t.log(Event::Value(*v), pc),
            Op::Spin(_) => {}
            Op::Ud2 => t.log(Event::Exception { vector: 6, error_code: 0 }, pc),
            Op::SetEoi(policy) => t.eoi = *policy,
            // MOV to CR8 sets TPR = CR8 << 4, subclass cleared, even when the class is unchanged.
            Op::WriteCr8(v) => match self.chip.lapics.get_mut(t.vcpu) {
                Some(lapic) => lapic.set_cr8(*v),
                None => return Err(format!("op {pc}: CR8 needs a LAPIC model")),
            },
            Op::ReadCr8 => match self.chip.cr8(t.vcpu) {
                Some(v) => t.log(Event::Value(v), pc),
                None => return Err(format!("op {pc}: CR8 needs a LAPIC model")),
            },
            Op::Host(host) => self.host(t, host, pc)?,
            Op::Wait | Op::Loop { .. } => unreachable!("handled by the caller"),
        }
        Ok(())
    }

    fn wrmsr(&mut self, t: &mut Thread<'_>, msr: u32, value: u64, pc: usize, now: Now) {
        match self.chip.wrmsr(t.vcpu, msr, value, now) {
            MsrAnswer::Value(_) => {}
            MsrAnswer::Fault | MsrAnswer::NotMine => {
                t.log(Event::Exception { vector: 13, error_code: 0 }, pc)
            }
        }
    }

    fn host(&mut self, t: &mut Thread<'_>, op: &HostOp, pc: usize) -> Result<(), String> {
        let now = self.now();
        match op {
            HostOp::SetIrq { irq, level } => {
                self.chip.set_irq(*irq, *level, now);
            }
            HostOp::PulseIrq(irq) => {
                self.chip.set_irq(*irq, true, now);
                self.chip.set_irq(*irq, false, now);
            }
            HostOp::Sleep(ns) => {
                self.now_ns = self.now_ns.saturating_add(*ns);
                self.chip.advance(self.now());
            }
            HostOp::Snapshot(label) => t.trace.snapshots.push(self.chip.snapshot(t.vcpu, label, now)),
            HostOp::SetGuestTsc(value) => {
                if !self.chip.host_set_tsc(t.vcpu, *value, now) {
                    return Err(format!("op {pc}: no TSC model"));
                }
            }
            // Nothing to move: the models are the same before and after.
            HostOp::Migrate => {}
        }
        Ok(())
    }
}
