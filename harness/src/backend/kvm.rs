//! The KVM backends: `kvm-kernel`, `kvm-split`, `kvm-userspace`, and `kvm-migrate`. One
//! implementation, parameterised by [`Mode`]; what differs is in [`crate::kvm::Machine::start`]
//! (VM setup), [`KvmBackend::supports`] (what each can run) and [`crate::irqchip::Irqchip`]
//! (which models own which exits).
//!
//! `kvm-migrate` runs on `kvm-kernel` and, at each [`crate::scenario::HostOp::Migrate`], stops
//! the guest at its doorbell, reads KVM's in-kernel state (KVM_GET_IRQCHIP ×3, KVM_GET_PIT2,
//! KVM_GET_LAPIC, IA32_APIC_BASE, IA32_TSC_DEADLINE, registers and pending events), restores
//! it into the models of a new `kvm-userspace/kvm` VM on the same guest RAM and continues
//! there; the next migration goes back the same way (KVM_SET_IRQCHIP, KVM_SET_PIT2 into the
//! new VM's KVM_CREATE_PIT2 PIT, KVM_SET_LAPIC, KVM_SET_MSRS). Its trace must equal
//! `kvm-kernel`'s. The PIT's counter 0 restarts its count at each move, as KVM_SET_PIT2
//! restarts it (see [`crate::kvm::state`]): scenarios assert IRQ0 counts and order, not phase.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Backend, BackendId, RunError, RunOptions, RunOutput, Stats, Unsupported};
use crate::guest::{self, layout};
use crate::irqchip::{Irqchip, IrqchipConfig};
use crate::kvm::kick::Kicker;
use crate::kvm::memory::GuestMemory;
use crate::kvm::vcpu::{self, Shared, VcpuOutcome};
use crate::kvm::{state, Machine, Mode, Start};
use crate::scenario::{Op, Profile, Scenario};
use crate::trace::Trace;

/// Why the virtual-TSC scenarios need `kvm-userspace`.
pub const NO_VIRTUAL_TSC: &str = "KVM on this host cannot offset the guest TSC (KVM_SET_MSRS(IA32_TSC) and \
     KVM_VCPU_TSC_OFFSET are ignored), and with KVM's LAPIC the TSC MSRs stay KVM's: the virtual TSC \
     exists only where our TSC model owns MSRs 0x10/0x3B (kvm-userspace)";

/// Why `kvm-split` cannot be held to scenarios that read the LAPIC version or use EOI-broadcast
/// suppression.
pub const SPLIT_DIRECTED_EOI: &str = "kvm-split's LAPIC is KVM's, which in split mode advertises \
     EOI-broadcast suppression (VERSION bit 24, kvm_apic_set_version: x2APIC in CPUID and no in-kernel \
     IOAPIC) and makes SVR bit 12 writable, while the kernel irqchip (the KVM profile's reference) does \
     not and the SDM profile's LAPIC is ours: neither expectation describes it";

/// A KVM backend.
#[derive(Clone, Copy, Debug)]
pub struct KvmBackend {
    mode: Mode,
    profile: Profile,
    migrate: bool,
}

impl KvmBackend {
    /// The backend for `mode`; `profile` is our models' (ignored in kernel mode).
    pub fn new(mode: Mode, profile: Profile) -> Self {
        KvmBackend {
            mode,
            profile: if mode == Mode::Kernel { Profile::Kvm } else { profile },
            migrate: false,
        }
    }

    /// `kvm-migrate`: `kvm-kernel` ⇄ `kvm-userspace/kvm` at every migration point.
    pub fn migrating() -> Self {
        KvmBackend { mode: Mode::Kernel, profile: Profile::Kvm, migrate: true }
    }

    fn config(&self, mode: Mode, vcpus: usize, tsc_hz: u64) -> IrqchipConfig {
        IrqchipConfig {
            profile: self.profile,
            vcpus,
            owns_tsc: mode == Mode::Userspace,
            owns_lapic: mode == Mode::Userspace,
            tsc_hz,
        }
    }
}

impl Backend for KvmBackend {
    fn id(&self) -> BackendId {
        match self.mode {
            _ if self.migrate => BackendId::KvmMigrate,
            Mode::Kernel => BackendId::KvmKernel,
            Mode::Split => BackendId::KvmSplit(self.profile),
            Mode::Userspace => BackendId::KvmUserspace(self.profile),
        }
    }

    fn supports(&self, scenario: &Scenario) -> Result<(), Unsupported> {
        let needs = scenario.needs();
        if self.migrate && needs.smp {
            return Err(Unsupported(
                "kvm-migrate moves a single vCPU (the harness migrates one vCPU's registers and LAPIC)"
                    .into(),
            ));
        }
        match self.mode {
            Mode::Kernel | Mode::Split if needs.virtual_tsc => {
                return Err(Unsupported(NO_VIRTUAL_TSC.into()))
            }
            Mode::Split if needs.directed_eoi => return Err(Unsupported(SPLIT_DIRECTED_EOI.into())),
            _ => {}
        }
        self.id().profile_for(scenario).map(|_| ())
    }

    fn run(&self, scenario: &Scenario, options: &RunOptions) -> Result<RunOutput, RunError> {
        let started = Instant::now();
        scenario.validate(layout::MAILBOX_CAPACITY).map_err(|e| RunError::new(e.to_string()))?;
        if let Err(Unsupported(why)) = self.supports(scenario) {
            return Err(RunError::new(format!("{} cannot run {}: {why}", self.id(), scenario.name)));
        }
        if self.migrate {
            return self.run_migrating(scenario, options, started);
        }
        let programs: Vec<&[Op]> = scenario.programs().collect();
        let start = Start { vcpus: programs.len(), aps_wait_for_sipi: scenario.needs().sipi };
        let mut machine =
            Machine::start(self.mode, start, GuestMemory::new(layout::MEMORY_SIZE).map_err(RunError::new)?)
                .map_err(RunError::new)?;
        load_programs(&machine, scenario).map_err(RunError::new)?;
        let tsc_hz = u64::from(machine.tsc_khz) * 1000;
        let chip = (self.mode != Mode::Kernel).then(|| {
            let mut chip = Irqchip::new(self.config(self.mode, programs.len(), tsc_hz));
            chip.start_tsc(vcpu::now());
            Mutex::new(chip)
        });
        let segment = Segment { machine: &mut machine, chip: chip.as_ref(), options, started };
        let outcomes = segment.run(&programs, start.aps_wait_for_sipi, false)?;
        let mut output = RunOutput::default();
        for out in outcomes {
            add_stats(&mut output.stats, &out, tsc_hz);
            output.traces.push(out.trace);
        }
        output.stats.interrupts = output.traces.iter().map(|t| t.interrupts() as u64).sum();
        output.stats.wall = started.elapsed();
        Ok(output)
    }
}

impl KvmBackend {
    /// `kvm-migrate`: one segment per mode, the guest moved between them.
    fn run_migrating(
        &self,
        scenario: &Scenario,
        options: &RunOptions,
        started: Instant,
    ) -> Result<RunOutput, RunError> {
        let programs: Vec<&[Op]> = scenario.programs().collect();
        let start = Start { vcpus: 1, aps_wait_for_sipi: false };
        let mut mode = Mode::Kernel;
        let mut machine =
            Machine::start(mode, start, GuestMemory::new(layout::MEMORY_SIZE).map_err(RunError::new)?)
                .map_err(RunError::new)?;
        load_programs(&machine, scenario).map_err(RunError::new)?;
        let tsc_hz = u64::from(machine.tsc_khz) * 1000;
        let mut chip: Option<Mutex<Irqchip>> = None;
        let mut output = RunOutput { traces: vec![Trace::default()], ..RunOutput::default() };
        loop {
            let segment = Segment { machine: &mut machine, chip: chip.as_ref(), options, started };
            let result = segment.run(&programs, false, true);
            let outcome = match result {
                Ok(mut outcomes) => outcomes.remove(0),
                Err(mut e) => {
                    let mut trace = std::mem::take(&mut output.traces[0]);
                    for partial in e.partial.drain(..) {
                        append(&mut trace, partial);
                    }
                    e.partial = vec![trace];
                    e.message = format!("kvm-migrate on {mode:?}: {}", e.message);
                    return Err(e);
                }
            };
            add_stats(&mut output.stats, &outcome, tsc_hz);
            let migrate_at = outcome.migrate_at;
            append(&mut output.traces[0], outcome.trace);
            if migrate_at.is_none() {
                break;
            }
            let next = if mode == Mode::Kernel { Mode::Userspace } else { Mode::Kernel };
            let (next_machine, next_chip) =
                self.migrate(machine, chip.take(), mode, next, tsc_hz).map_err(|message| RunError {
                    message: format!("migration {mode:?} -> {next:?}: {message}"),
                    registers: None,
                    partial: vec![output.traces[0].clone()],
                })?;
            machine = next_machine;
            chip = next_chip;
            mode = next;
            output.stats.migrations += 1;
        }
        output.stats.interrupts = output.traces.iter().map(|t| t.interrupts() as u64).sum();
        output.stats.wall = started.elapsed();
        Ok(output)
    }

    /// Moves the stopped guest of `machine` (mode `from`) to a new VM of mode `to` on the same
    /// RAM: registers and events, then the interrupt controllers and the PIT.
    ///
    /// From the kernel, KVM's state is read before the old VM goes. To the kernel, the models'
    /// state is taken once the new VM exists, just before it is set: the models go on counting
    /// while the VM is rebuilt (as KVM's devices run while a guest is stopped), their IRQ0 edges
    /// and LAPIC timers are advanced to that instant first (so that they are in the PIC, IOAPIC
    /// and LAPIC state set into KVM), and KVM_SET_PIT2 restarts each counter from the count
    /// still to go at that same instant.
    fn migrate(
        &self,
        machine: Machine,
        chip: Option<Mutex<Irqchip>>,
        from: Mode,
        to: Mode,
        tsc_hz: u64,
    ) -> Result<(Machine, Option<Mutex<Irqchip>>), String> {
        let vcpu = machine.vcpus.first().and_then(Option::as_ref).ok_or("the vCPU is gone")?;
        let cpu = state::get_cpu(vcpu)?;
        let models = match (from, chip) {
            (Mode::Kernel, _) => {
                let now = vcpu::now();
                let chips = state::get_chips(&machine.vm)?;
                let pit = state::get_pit(&machine.vm)?;
                let lapic = state::get_lapic(vcpu)?;
                let mut models = Irqchip::new(self.config(to, 1, tsc_hz));
                models.start_tsc(now);
                state::models_from_kernel(&mut models, &chips, &pit, &[lapic], now)?;
                models
            }
            (_, Some(chip)) => chip.into_inner().unwrap_or_else(|e| e.into_inner()),
            (_, None) => return Err("no models to migrate from".into()),
        };
        let mem = machine.into_memory();
        let machine = Machine::start(to, Start { vcpus: 1, aps_wait_for_sipi: false }, mem)?;
        let vcpu = machine.vcpus.first().and_then(Option::as_ref).ok_or("the new vCPU is missing")?;
        state::set_cpu(vcpu, &cpu)?;
        if to != Mode::Kernel {
            return Ok((machine, Some(Mutex::new(models))));
        }
        let mut models = models;
        let now = vcpu::now();
        models.advance(now);
        state::set_chips(&machine.vm, &state::chips_from_models(&models))?;
        state::set_pit(&machine.vm, &state::pit_from_models(&models, now))?;
        state::set_lapic(vcpu, &state::lapic_from_model(&models, 0, now)?)?;
        Ok((machine, None))
    }
}

/// Appends a later segment's log and snapshots to `trace`, renumbering the entries.
fn append(trace: &mut Trace, later: Trace) {
    let base = trace.entries.len();
    for (i, mut entry) in later.entries.into_iter().enumerate() {
        entry.seq = u32::try_from(base + i).unwrap_or(u32::MAX);
        trace.entries.push(entry);
    }
    trace.snapshots.extend(later.snapshots);
}

fn add_stats(stats: &mut Stats, out: &VcpuOutcome, tsc_hz: u64) {
    stats.exits += out.exits;
    stats.vcpu_time += out.loop_time;
    if tsc_hz > 0 {
        stats.model_time +=
            Duration::from_nanos((u128::from(out.model_ticks) * 1_000_000_000 / u128::from(tsc_hz)) as u64);
    }
}

/// Writes each program into its vCPU's mailbox, with the log head and the EOI policy.
fn load_programs(machine: &Machine, scenario: &Scenario) -> Result<(), String> {
    for (index, program) in scenario.programs().enumerate() {
        let region = layout::vcpu_region(index);
        machine.mem.write(region + u64::from(layout::ctrl::MAILBOX), &guest::encode(program))?;
        machine.mem.write_u32(region + u64::from(layout::ctrl::LOG_HEAD), 0)?;
        machine.mem.write(
            region + u64::from(layout::ctrl::EOI_POLICY),
            &[guest::eoi_byte(scenario.eoi), guest::slave_base_byte(scenario.eoi), 0],
        )?;
    }
    Ok(())
}

/// One run of every vCPU thread on one VM.
struct Segment<'m, 'c> {
    machine: &'m mut Machine,
    chip: Option<&'c Mutex<Irqchip>>,
    options: &'m RunOptions,
    started: Instant,
}

impl Segment<'_, '_> {
    /// Runs a thread per vCPU until each ends (or stops at a migration doorbell); the first
    /// error, with every vCPU's log so far.
    fn run(
        self,
        programs: &[&[Op]],
        aps_wait_for_sipi: bool,
        stop_at_migrate: bool,
    ) -> Result<Vec<VcpuOutcome>, RunError> {
        let vcpus = programs.len();
        let kicker = Kicker::new(vcpus);
        let shared = Shared {
            vm: &self.machine.vm,
            mem: &self.machine.mem,
            mode: self.machine.mode,
            chip: self.chip,
            kicker: &kicker,
            options: *self.options,
            started: self.started,
            vcpus,
            tsc_hz: u64::from(self.machine.tsc_khz) * 1000,
            aps_wait_for_sipi,
            stop_at_migrate,
            progress: AtomicU64::new(u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)),
        };
        let mut fds: Vec<_> = self.machine.vcpus.iter_mut().map(|v| v.take()).collect();
        let results: Vec<Result<VcpuOutcome, RunError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = fds
                .iter_mut()
                .zip(programs)
                .enumerate()
                .map(|(index, (fd, program))| {
                    let shared = &shared;
                    scope.spawn(move || match fd.as_mut() {
                        Some(fd) => vcpu::run(shared, index, fd, program),
                        None => Err(RunError::new(format!("vCPU {index} missing"))),
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(RunError::new("a vCPU thread panicked"))))
                .collect()
        });
        // Give the fds back (the kvm-migrate backend reads the stopped vCPU's state).
        for (slot, fd) in self.machine.vcpus.iter_mut().zip(fds) {
            *slot = fd;
        }
        let mut outcomes = Vec::new();
        let mut traces = Vec::new();
        let mut first_error = None;
        for result in results {
            match result {
                Ok(out) => {
                    traces.push(out.trace.clone());
                    outcomes.push(out);
                }
                Err(mut e) => {
                    traces.append(&mut e.partial);
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(mut e) = first_error {
            e.partial = traces;
            return Err(e);
        }
        Ok(outcomes)
    }
}
