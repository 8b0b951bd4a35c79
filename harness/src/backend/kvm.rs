//! The three KVM backends: `kvm-kernel`, `kvm-split`, `kvm-userspace`. One implementation,
//! parameterised by [`Mode`]; what differs is in [`crate::kvm::Machine::new`] (VM setup),
//! [`KvmBackend::supports`] (what each can run) and [`crate::irqchip::Irqchip`] (which
//! models own which exits).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Backend, BackendId, RunError, RunOptions, RunOutput, Stats, Unsupported};
use crate::guest::{self, layout};
use crate::irqchip::{Irqchip, IrqchipConfig};
use crate::kvm::kick::Kicker;
use crate::kvm::vcpu::{self, Shared};
use crate::kvm::{Machine, Mode};
use crate::scenario::{Profile, Scenario};

/// Why the virtual-TSC scenarios need `kvm-userspace`.
pub const NO_VIRTUAL_TSC: &str = "KVM on this host cannot offset the guest TSC (KVM_SET_MSRS(IA32_TSC) and \
     KVM_VCPU_TSC_OFFSET are ignored), and with KVM's LAPIC the TSC MSRs stay KVM's: the virtual TSC \
     exists only where our TSC model owns MSRs 0x10/0x3B (kvm-userspace)";

/// A KVM backend.
#[derive(Clone, Copy, Debug)]
pub struct KvmBackend {
    mode: Mode,
    profile: Profile,
}

impl KvmBackend {
    /// The backend for `mode`; `profile` is our PIC's (ignored in kernel mode).
    pub fn new(mode: Mode, profile: Profile) -> Self {
        KvmBackend { mode, profile: if mode == Mode::Kernel { Profile::Kvm } else { profile } }
    }
}

impl Backend for KvmBackend {
    fn id(&self) -> BackendId {
        match self.mode {
            Mode::Kernel => BackendId::KvmKernel,
            Mode::Split => BackendId::KvmSplit(self.profile),
            Mode::Userspace => BackendId::KvmUserspace(self.profile),
        }
    }

    fn supports(&self, scenario: &Scenario) -> Result<(), Unsupported> {
        let needs = scenario.needs();
        match self.mode {
            Mode::Kernel | Mode::Split if needs.virtual_tsc => Err(Unsupported(NO_VIRTUAL_TSC.into())),
            Mode::Split if needs.ioapic => Err(Unsupported(
                "needs the IOAPIC model (vm-apic) behind KVM_SIGNAL_MSI, not plugged in yet".into(),
            )),
            Mode::Userspace if needs.lapic || needs.ioapic => Err(Unsupported(
                "needs the LAPIC/IOAPIC models (vm-apic), not plugged into the userspace irqchip yet".into(),
            )),
            _ => Ok(()),
        }
    }

    fn run(&self, scenario: &Scenario, options: &RunOptions) -> Result<RunOutput, RunError> {
        let started = Instant::now();
        scenario.validate(layout::MAILBOX_CAPACITY).map_err(|e| RunError::new(e.to_string()))?;
        if let Err(Unsupported(why)) = self.supports(scenario) {
            return Err(RunError::new(format!("{} cannot run {}: {why}", self.id(), scenario.name)));
        }
        let programs: Vec<_> = scenario.programs().collect();
        let vcpus = programs.len();
        let mut machine = Machine::new(self.mode, vcpus).map_err(RunError::new)?;
        for (index, program) in programs.iter().enumerate() {
            let region = layout::vcpu_region(index);
            let setup = || -> Result<(), String> {
                machine.mem.write(region + u64::from(layout::ctrl::MAILBOX), &guest::encode(program))?;
                machine.mem.write_u32(region + u64::from(layout::ctrl::LOG_HEAD), 0)?;
                machine.mem.write(
                    region + u64::from(layout::ctrl::EOI_POLICY),
                    &[guest::eoi_byte(scenario.eoi), guest::slave_base_byte(scenario.eoi), 0],
                )
            };
            setup().map_err(RunError::new)?;
        }
        let chip = (self.mode != Mode::Kernel).then(|| {
            let mut chip = Irqchip::new(IrqchipConfig {
                profile: self.profile,
                vcpus,
                owns_tsc: self.mode == Mode::Userspace,
            });
            chip.start_tsc(vcpu::now());
            Mutex::new(chip)
        });
        let kicker = Kicker::new(vcpus);
        let shared = Shared {
            vm: &machine.vm,
            mem: &machine.mem,
            mode: self.mode,
            chip: chip.as_ref(),
            kicker: &kicker,
            options: *options,
            started,
            vcpus,
            tsc_hz: u64::from(machine.tsc_khz) * 1000,
        };
        let mut fds: Vec<_> = machine.vcpus.iter_mut().map(|v| v.take()).collect();
        let results: Vec<Result<vcpu::VcpuOutcome, RunError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = fds
                .iter_mut()
                .zip(&programs)
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
        let mut traces = Vec::new();
        let mut stats = Stats::default();
        let mut first_error = None;
        let mut model_ticks = 0u64;
        for result in results {
            match result {
                Ok(out) => {
                    stats.exits += out.exits;
                    stats.vcpu_time += out.loop_time;
                    model_ticks += out.model_ticks;
                    traces.push(out.trace);
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
        stats.interrupts = traces.iter().map(|t| t.interrupts() as u64).sum();
        stats.wall = started.elapsed();
        let tsc_hz = shared.tsc_hz;
        if tsc_hz > 0 {
            stats.model_time =
                Duration::from_nanos((u128::from(model_ticks) * 1_000_000_000 / u128::from(tsc_hz)) as u64);
        }
        Ok(RunOutput { traces, stats })
    }
}
