//! The `software` backend: the models of [`crate::irqchip::Irqchip`] driven by a scripted
//! CPU per vCPU, in virtual time. Always available and deterministic.
//!
//! The scripted CPUs follow the probe guest's rules: operations are atomic, maskable
//! interrupts are taken at every operation boundary with IF=1 (after `Sti`, whose shadow ends
//! within the probe's dispatch, and after each later operation until `Cli`) and inside `Wait`
//! (all that are deliverable then), the handler logs the vector and ends it by the EOI policy,
//! an MSR no model owns raises #GP, and an NMI is taken before the next operation whatever IF
//! says (it also ends a `Wait`).
//!
//! vCPUs run round robin, one operation each per round, so a program's log does not depend on
//! how fast the others run as long as the vCPUs synchronise through interrupts (every
//! built-in SMP scenario does). A vCPU halted in `Wait` with nothing pending waits; when
//! every vCPU waits, virtual time jumps to the earliest model deadline, and with none ahead
//! the run reports a lost interrupt at once. An AP of an [`ApStart::WaitForSipi`] scenario
//! starts its program when its LAPIC latches a start-up IPI (vector [`SIPI_VECTOR`]).
//!
//! The scripted CPU is generic over how its interrupt-related operations reach the models
//! (the crate-private `InterruptPath`): straight into the LAPIC models (`Emulated`, this
//! backend), or through the APICv model with posted interrupts ([`super::apicv`],
//! `software-apicv`).

use std::time::Instant;

use vm_apic::lapic::PendingEvents;

use super::{Backend, BackendId, RunError, RunOptions, RunOutput, Stats, Unsupported};
use crate::irqchip::{Irqchip, IrqchipConfig, MsrAnswer, Now};
use crate::scenario::{ApStart, EoiPolicy, HostOp, Op, Profile, Scenario, LAPIC_PAGE, SIPI_VECTOR};
use crate::trace::{Entry, Event, Snapshot, Trace};

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
        let mut path = Emulated { chip: irqchip(self.profile, scenario.programs().count()) };
        let (traces, result) = run_scripted(&mut path, scenario);
        output(started, traces, result, 0)
    }
}

/// The software backends' models for `vcpus` vCPUs, their TSCs started at [`START_NS`].
pub(super) fn irqchip(profile: Profile, vcpus: usize) -> Irqchip {
    let mut chip =
        Irqchip::new(IrqchipConfig { profile, vcpus, owns_tsc: true, owns_lapic: true, tsc_hz: TSC_HZ });
    chip.start_tsc(now_at(START_NS));
    chip
}

/// The time of virtual instant `ns` in both units.
pub(super) fn now_at(ns: u64) -> Now {
    let tsc = u128::from(ns) * u128::from(TSC_HZ) / 1_000_000_000;
    Now { ns, tsc: u64::try_from(tsc).unwrap_or(u64::MAX) }
}

/// A scripted run's result as the backend reports it (`exits`: VM exits the path counted).
pub(super) fn output(
    started: Instant,
    traces: Vec<Trace>,
    result: Result<(), String>,
    exits: u64,
) -> Result<RunOutput, RunError> {
    if let Err(message) = result {
        return Err(RunError { message, registers: None, partial: traces });
    }
    let wall = started.elapsed();
    let interrupts = traces.iter().map(|t| t.interrupts() as u64).sum();
    Ok(RunOutput { traces, stats: Stats { interrupts, exits, wall, vcpu_time: wall, ..Stats::default() } })
}

/// Why a vCPU left guest mode for the VMM (counted by [`super::apicv`]; the emulated path has
/// no guest mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitReason {
    /// Port I/O, the doorbell of a host operation included.
    Io,
    /// An MMIO access outside the APIC-access page (the IOAPIC).
    Mmio,
    /// RDMSR/WRMSR the MSR bitmap intercepts.
    Msr,
    /// APIC access (fault-like): an access to the APIC-access page that is not virtualized.
    ApicAccess,
    /// APIC write (trap-like): a virtualized write the VMM emulates.
    ApicWrite,
    /// EOI-induced: the EOI of a vector in the EOI-exit bitmap.
    EoiInduced,
    /// HLT with nothing to deliver (the vCPU blocks in the VMM).
    Hlt,
}

/// How the scripted CPU's interrupt-related operations reach the models: what a CPU without
/// APIC virtualization does (every LAPIC access is the VMM's, [`Emulated`]), or what an
/// APICv processor does (`super::apicv`). Everything else (ports, the IOAPIC, host actions) goes
/// to the models through [`InterruptPath::vmm`].
pub(crate) trait InterruptPath {
    /// The models (read-only: changes go through [`InterruptPath::vmm`]).
    fn chip(&self) -> &Irqchip;
    /// The VMM runs `f` on the models: handling an exit of `exit.0` for reason `exit.1`, or
    /// (`None`) a host event no vCPU exited for (time passing, INIT, SIPI).
    fn vmm<R>(&mut self, exit: Option<(usize, ExitReason)>, now: Now, f: impl FnOnce(&mut Irqchip) -> R)
        -> R;
    /// A guest MMIO load; `false` if nothing decodes the address.
    fn mmio_read(&mut self, vcpu: usize, addr: u64, data: &mut [u8], now: Now) -> bool;
    /// A guest MMIO store; `false` if nothing decodes the address.
    fn mmio_write(&mut self, vcpu: usize, addr: u64, data: &[u8], now: Now) -> bool;
    /// A guest RDMSR.
    fn rdmsr(&mut self, vcpu: usize, msr: u32, now: Now) -> MsrAnswer;
    /// A guest WRMSR.
    fn wrmsr(&mut self, vcpu: usize, msr: u32, value: u64, now: Now) -> MsrAnswer;
    /// MOV to CR8; `false` without a LAPIC.
    fn write_cr8(&mut self, vcpu: usize, cr8: u64) -> bool;
    /// MOV from CR8; `None` without a LAPIC.
    fn read_cr8(&self, vcpu: usize) -> Option<u64>;
    /// A host snapshot taken at `vcpu`'s doorbell.
    fn snapshot(&mut self, vcpu: usize, label: &str, now: Now) -> Snapshot;
    /// The NMI, SMI, INIT, SIPI and ExtINT events `vcpu`'s LAPIC latched, cleared.
    fn take_events(&mut self, vcpu: usize) -> PendingEvents;
    /// `vcpu` takes an INIT (its LAPIC resets).
    fn init(&mut self, vcpu: usize, now: Now);
    /// `sti; hlt`: whether `vcpu` has an interrupt to take now; `false`: it stays halted (and is
    /// asked again next round).
    fn halt(&mut self, vcpu: usize) -> bool;
    /// `vcpu` at an instruction boundary with IF=1: the interrupt it takes now, acknowledged.
    fn take(&mut self, vcpu: usize) -> Option<u8>;
    /// `vcpu` starts running its program (at the start of the run, or at its start-up IPI).
    fn start(&mut self, vcpu: usize);
    /// `vcpu`'s `Wait` ended (by an interrupt or an NMI): it runs on.
    fn resume(&mut self, vcpu: usize);
    /// `vcpu`'s program ended.
    fn stop(&mut self, vcpu: usize);
    /// A broken invariant of the path since the last call, which ends the run.
    fn failure(&mut self) -> Option<String>;
}

/// The `software` backend's path: no APIC virtualization, every LAPIC access is the models'.
pub(crate) struct Emulated {
    /// The models.
    pub(crate) chip: Irqchip,
}

impl InterruptPath for Emulated {
    fn chip(&self) -> &Irqchip {
        &self.chip
    }

    fn vmm<R>(
        &mut self,
        _exit: Option<(usize, ExitReason)>,
        _now: Now,
        f: impl FnOnce(&mut Irqchip) -> R,
    ) -> R {
        f(&mut self.chip)
    }

    fn mmio_read(&mut self, vcpu: usize, addr: u64, data: &mut [u8], now: Now) -> bool {
        self.chip.mmio_read(vcpu, addr, data, now)
    }

    fn mmio_write(&mut self, vcpu: usize, addr: u64, data: &[u8], now: Now) -> bool {
        self.chip.mmio_write(vcpu, addr, data, now)
    }

    fn rdmsr(&mut self, vcpu: usize, msr: u32, now: Now) -> MsrAnswer {
        self.chip.rdmsr(vcpu, msr, now)
    }

    fn wrmsr(&mut self, vcpu: usize, msr: u32, value: u64, now: Now) -> MsrAnswer {
        self.chip.wrmsr(vcpu, msr, value, now)
    }

    // MOV to CR8 sets TPR = CR8 << 4, subclass cleared, even when the class is unchanged.
    fn write_cr8(&mut self, vcpu: usize, cr8: u64) -> bool {
        self.chip.lapics.get_mut(vcpu).map(|lapic| lapic.set_cr8(cr8)).is_some()
    }

    fn read_cr8(&self, vcpu: usize) -> Option<u64> {
        self.chip.cr8(vcpu)
    }

    fn snapshot(&mut self, vcpu: usize, label: &str, now: Now) -> Snapshot {
        self.chip.snapshot(vcpu, label, now)
    }

    fn take_events(&mut self, vcpu: usize) -> PendingEvents {
        self.chip.take_events(vcpu)
    }

    fn init(&mut self, vcpu: usize, _now: Now) {
        self.chip.init(vcpu);
    }

    fn halt(&mut self, vcpu: usize) -> bool {
        self.chip.pending_vector(vcpu).is_some()
    }

    fn take(&mut self, vcpu: usize) -> Option<u8> {
        self.chip.pending_vector(vcpu)?;
        Some(self.chip.acknowledge(vcpu))
    }

    fn start(&mut self, _vcpu: usize) {}

    fn resume(&mut self, _vcpu: usize) {}

    fn stop(&mut self, _vcpu: usize) {}

    fn failure(&mut self) -> Option<String> {
        None
    }
}

/// Runs `scenario`'s programs on `path`'s models, one scripted CPU per vCPU: each vCPU's
/// trace, and the error that ended the run early, if one did.
pub(crate) fn run_scripted<P: InterruptPath>(
    path: &mut P,
    scenario: &Scenario,
) -> (Vec<Trace>, Result<(), String>) {
    let programs: Vec<&[Op]> = scenario.programs().collect();
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
            read_cache: [0; 8],
        })
        .collect();
    for t in threads.iter().filter(|t| t.state == State::Running) {
        path.start(t.vcpu);
    }
    let mut machine = Machine { path, now_ns: START_NS, steps: 0 };
    let result = machine.schedule(&mut threads);
    (threads.into_iter().map(|t| t.trace).collect(), result)
}

/// The machine: the models behind their path, and virtual time.
struct Machine<'p, P> {
    path: &'p mut P,
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
    /// KVM's instruction-emulator read cache: an MMIO read starts from the bytes the last one
    /// left, so bytes a device does not write read as KVM's guest sees them.
    read_cache: [u8; 8],
}

impl Thread<'_> {
    fn log(&mut self, event: Event, op: usize) {
        let seq = u32::try_from(self.trace.entries.len()).unwrap_or(u32::MAX);
        self.trace.entries.push(Entry { event, op: op as u16, seq });
    }
}

impl<P: InterruptPath> Machine<'_, P> {
    fn now(&self) -> Now {
        now_at(self.now_ns)
    }

    /// Runs every vCPU to the end of its program, round robin.
    fn schedule(&mut self, threads: &mut [Thread<'_>]) -> Result<(), String> {
        let mut idle = 0u32;
        loop {
            let mut progressed = false;
            let mut done = true;
            for t in threads.iter_mut() {
                let step = self.step_thread(t);
                if let Some(failure) = self.path.failure() {
                    return Err(format!("vCPU {} op {}: {failure}", t.vcpu, t.pc));
                }
                match step? {
                    Step::Progress => {
                        progressed = true;
                        done = false;
                    }
                    Step::Blocked => done = false,
                    Step::Done => {}
                }
            }
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
                .filter_map(|t| self.path.chip().next_deadline(t.vcpu, now))
                .min();
            let Some(deadline) = deadline else {
                return Err(Self::stuck(
                    threads,
                    "halted with no interrupt pending or scheduled (lost interrupt)",
                ));
            };
            self.now_ns = deadline.max(self.now_ns);
            let now = self.now();
            self.path.vmm(None, now, |chip| chip.advance(now));
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
        let events = self.path.take_events(t.vcpu);
        if events.init {
            if t.state == State::Running && t.vcpu > 0 {
                return Err(format!("vCPU {}: INIT while running, which the harness does not model", t.vcpu));
            }
            self.path.init(t.vcpu, self.now());
        }
        if let Some(vector) = events.sipi {
            if t.state == State::WaitingForSipi {
                if vector != SIPI_VECTOR {
                    return Err(format!(
                        "vCPU {}: start-up IPI vector {vector:#x}, the harness's trampoline is at vector {SIPI_VECTOR:#x}",
                        t.vcpu
                    ));
                }
                let vcpu = t.vcpu;
                self.path.vmm(None, self.now(), |chip| chip.sipi_taken(vcpu));
                self.path.start(vcpu);
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
            self.path.stop(t.vcpu);
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
                    if !self.path.halt(t.vcpu) {
                        return Ok(Step::Blocked);
                    }
                    t.if_flag = true;
                    self.take_interrupts(t, pc)?;
                }
                self.path.resume(t.vcpu);
                t.if_flag = false;
            }
            _ => {
                self.step(t, op, pc)?;
                // The next instruction boundary with IF=1 takes what is pending, as a CPU does:
                // after `Sti` (its shadow covers the probe's jump to the next operation, not
                // the operation), after a host action the guest rang for, after any operation
                // while IF=1. No operation loads SS, so there is no MOV SS shadow to honour.
                if t.if_flag {
                    self.take_interrupts(t, pc)?;
                }
            }
        }
        t.pc = next;
        Ok(Step::Progress)
    }

    /// Takes every pending interrupt (IF=1): acknowledge, log, EOI by policy.
    fn take_interrupts(&mut self, t: &mut Thread<'_>, pc: usize) -> Result<(), String> {
        for _ in 0..256 {
            let Some(vector) = self.path.take(t.vcpu) else { return Ok(()) };
            match vector {
                2 => t.log(Event::Nmi, pc),
                0..=31 => t.log(Event::Exception { vector, error_code: 0 }, pc),
                _ => t.log(Event::Irq(vector), pc),
            }
            t.trace.irq_times_ns.push(self.now_ns);
            let now = self.now();
            let vcpu = t.vcpu;
            match t.eoi {
                EoiPolicy::None => {}
                EoiPolicy::Pic { slave_base } => {
                    if vector & 0xF8 == slave_base {
                        self.path.vmm(Some((vcpu, ExitReason::Io)), now, |c| c.pio_write(0xA0, &[0x20], now));
                    }
                    self.path.vmm(Some((vcpu, ExitReason::Io)), now, |c| c.pio_write(0x20, &[0x20], now));
                }
                EoiPolicy::LapicMmio => {
                    if !self.path.mmio_write(vcpu, LAPIC_PAGE + 0xB0, &[0; 4], now) {
                        return Err(format!("op {pc}: the handler's LAPIC EOI reached no model"));
                    }
                }
                EoiPolicy::X2apicMsr => {
                    if self.path.wrmsr(vcpu, 0x80B, 0, now) != MsrAnswer::Value(0) {
                        t.log(Event::Exception { vector: 13, error_code: 0 }, pc);
                    }
                }
            }
        }
        Err(format!("op {pc}: 256 interrupts in a row without IF=0: interrupt storm"))
    }

    fn step(&mut self, t: &mut Thread<'_>, op: &Op, pc: usize) -> Result<(), String> {
        let now = self.now();
        let vcpu = t.vcpu;
        let io = Some((vcpu, ExitReason::Io));
        match op {
            Op::Out { port, width, value } => {
                let bytes = value.to_le_bytes();
                if !self.path.vmm(io, now, |c| c.pio_write(*port, &bytes[..width.bytes()], now)) {
                    return Err(format!("op {pc}: out to port {port:#x}, which no model decodes"));
                }
            }
            Op::In { port, width } => {
                let mut bytes = [0u8; 4];
                if !self.path.vmm(io, now, |c| c.pio_read(*port, &mut bytes[..width.bytes()], now)) {
                    return Err(format!("op {pc}: in from port {port:#x}, which no model decodes"));
                }
                t.log(Event::Value(u64::from(u32::from_le_bytes(bytes))), pc);
            }
            Op::MmioRead { addr, wide } => {
                let mut bytes = t.read_cache;
                let len = if *wide { 8 } else { 4 };
                if !self.path.mmio_read(vcpu, *addr, &mut bytes[..len], now) {
                    return Err(format!("op {pc}: MMIO read at {addr:#x}, which no model decodes"));
                }
                t.read_cache = bytes;
                let mut value = [0u8; 8];
                value[..len].copy_from_slice(&bytes[..len]);
                t.log(Event::Value(u64::from_le_bytes(value)), pc);
            }
            Op::MmioWrite { addr, wide, value } => {
                let bytes = value.to_le_bytes();
                let len = if *wide { 8 } else { 4 };
                if !self.path.mmio_write(vcpu, *addr, &bytes[..len], now) {
                    return Err(format!("op {pc}: MMIO write at {addr:#x}, which no model decodes"));
                }
            }
            Op::Rdmsr(msr) => match self.path.rdmsr(vcpu, *msr, now) {
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
            Op::WriteCr8(v) => {
                if !self.path.write_cr8(vcpu, *v) {
                    return Err(format!("op {pc}: CR8 needs a LAPIC model"));
                }
            }
            Op::ReadCr8 => match self.path.read_cr8(vcpu) {
                Some(v) => t.log(Event::Value(v), pc),
                None => return Err(format!("op {pc}: CR8 needs a LAPIC model")),
            },
            Op::Host(host) => self.host(t, host, pc)?,
            Op::Wait | Op::Loop { .. } => unreachable!("handled by the caller"),
        }
        Ok(())
    }

    fn wrmsr(&mut self, t: &mut Thread<'_>, msr: u32, value: u64, pc: usize, now: Now) {
        match self.path.wrmsr(t.vcpu, msr, value, now) {
            MsrAnswer::Value(_) => {}
            MsrAnswer::Fault | MsrAnswer::NotMine => {
                t.log(Event::Exception { vector: 13, error_code: 0 }, pc)
            }
        }
    }

    /// A host action at `t`'s doorbell (a port write: an I/O exit).
    fn host(&mut self, t: &mut Thread<'_>, op: &HostOp, pc: usize) -> Result<(), String> {
        let vcpu = t.vcpu;
        let io = Some((vcpu, ExitReason::Io));
        match op {
            HostOp::SetIrq { irq, level } => {
                let now = self.now();
                self.path.vmm(io, now, |c| c.set_irq(*irq, *level, now));
            }
            HostOp::PulseIrq(irq) => {
                let now = self.now();
                self.path.vmm(io, now, |c| {
                    c.set_irq(*irq, true, now);
                    c.set_irq(*irq, false, now);
                });
            }
            HostOp::Sleep(ns) => {
                self.now_ns = self.now_ns.saturating_add(*ns);
                let now = self.now();
                self.path.vmm(io, now, |c| c.advance(now));
            }
            HostOp::Snapshot(label) => {
                let snapshot = self.path.snapshot(vcpu, label, self.now());
                t.trace.snapshots.push(snapshot);
            }
            HostOp::SetGuestTsc(value) => {
                let now = self.now();
                if !self.path.vmm(io, now, |c| c.host_set_tsc(vcpu, *value, now)) {
                    return Err(format!("op {pc}: no TSC model"));
                }
            }
            // Nothing to move: the models are the same before and after.
            HostOp::Migrate => self.path.vmm(io, self.now(), |_| {}),
        }
        Ok(())
    }
}
