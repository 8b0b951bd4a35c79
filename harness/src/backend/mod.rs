//! Backends: one trait, one scenario format ([`crate::scenario`]), one trace format
//! ([`crate::trace`]).
//!
//! | backend | PIC | PIT | LAPIC | IOAPIC | TSC MSRs |
//! |---|---|---|---|---|---|
//! | `software/{kvm,datasheet}` | vm-pic | vm-timer | vm-apic | vm-apic | vm-timer |
//! | `software-apicv/{kvm,datasheet}` | vm-pic | vm-timer | vm-apic's APICv model (posted interrupts) in front of vm-apic | vm-apic | vm-timer |
//! | `kvm-userspace/{kvm,datasheet}` | vm-pic | vm-timer | vm-apic (MMIO, x2APIC MSRs, MSR filter) | vm-apic | vm-timer (MSR filter) |
//! | `kvm-split/{kvm,datasheet}` | vm-pic (ExtINT) | vm-timer | KVM | vm-apic (KVM_SIGNAL_MSI) | KVM |
//! | `kvm-kernel` | KVM | KVM | KVM | KVM | KVM |
//! | `kvm-migrate` | KVM ⇄ vm-pic | KVM ⇄ vm-timer | KVM ⇄ vm-apic | KVM ⇄ vm-apic | KVM |
//!
//! The `datasheet` profile is the hardware documents' (8259A, ICH IOxAPIC version 0x20, the
//! SDM's LAPIC and APIC bus); `sdm` is accepted as its alias (`kvm-userspace/sdm`).
//! `kvm-migrate` starts on `kvm-kernel` and moves the running guest to `kvm-userspace/kvm` and
//! back at every [`crate::scenario::HostOp::Migrate`]. `software-apicv` is `software` with
//! each vCPU's interrupt path an APICv processor's ([`apicv`]): KVM on the project's hosts
//! cannot run APICv, so posted interrupts are exercised there.

pub mod apicv;
pub mod host;
pub mod software;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod kvm;

use std::fmt;
use std::time::Duration;

use crate::scenario::{Device, Profile, Scenario};
use crate::trace::Trace;

/// Which backend, with its PIC profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendId {
    /// The models driven by a scripted CPU.
    Software(Profile),
    /// The scripted CPU with APICv vCPUs: posted interrupts, virtualized TPR/EOI/self-IPI,
    /// the models behind the exits.
    SoftwareApicv(Profile),
    /// No in-kernel irqchip: our models own every exit.
    KvmUserspace(Profile),
    /// KVM's LAPIC, our PIC (ExtINT) and PIT.
    KvmSplit(Profile),
    /// Everything in KVM: the reference.
    KvmKernel,
    /// `kvm-kernel`, moved to `kvm-userspace/kvm` and back at every migration point.
    KvmMigrate,
}

impl BackendId {
    /// Every backend, in table order.
    pub const ALL: [BackendId; 10] = [
        BackendId::Software(Profile::Kvm),
        BackendId::Software(Profile::Datasheet),
        BackendId::SoftwareApicv(Profile::Kvm),
        BackendId::SoftwareApicv(Profile::Datasheet),
        BackendId::KvmUserspace(Profile::Kvm),
        BackendId::KvmUserspace(Profile::Datasheet),
        BackendId::KvmSplit(Profile::Kvm),
        BackendId::KvmSplit(Profile::Datasheet),
        BackendId::KvmKernel,
        BackendId::KvmMigrate,
    ];

    /// The behaviour profile of its models (KVM's for the in-kernel ones).
    pub fn profile(self) -> Profile {
        match self {
            BackendId::Software(p)
            | BackendId::SoftwareApicv(p)
            | BackendId::KvmUserspace(p)
            | BackendId::KvmSplit(p) => p,
            BackendId::KvmKernel | BackendId::KvmMigrate => Profile::Kvm,
        }
    }

    /// The profile of one device: `kvm-split`'s LAPIC is KVM's whatever its PIC and IOAPIC
    /// profile.
    pub fn device_profile(self, device: Device) -> Profile {
        match (self, device) {
            (BackendId::KvmSplit(_), Device::Lapic) => Profile::Kvm,
            _ => self.profile(),
        }
    }

    /// Whether the LAPIC is one of our models (not KVM's).
    pub fn models_lapic(self) -> bool {
        matches!(self, BackendId::Software(_) | BackendId::SoftwareApicv(_) | BackendId::KvmUserspace(_))
    }

    /// Which expectations of `scenario` this backend is held to: the profile its devices have
    /// for the devices the scenario's datasheet expectation describes, or why neither applies
    /// (their profiles are mixed on this backend).
    pub fn profile_for(self, scenario: &Scenario) -> Result<Profile, Unsupported> {
        if !scenario.has_datasheet_expectation() {
            return Ok(self.profile());
        }
        let profiles: Vec<Profile> =
            scenario.datasheet_devices.iter().map(|d| self.device_profile(*d)).collect();
        match profiles.split_first() {
            None => Ok(self.profile()),
            Some((first, rest)) if rest.iter().all(|p| p == first) => Ok(*first),
            Some(_) => Err(Unsupported(format!(
                "its expectations follow the {} profiles together, and on {self} they differ (the LAPIC is KVM's, the other models are {})",
                scenario.datasheet_devices.iter().map(|d| d.name()).collect::<Vec<_>>().join(" and "),
                self.profile().name()
            ))),
        }
    }

    /// `software`, `software-apicv`, `kvm-userspace`, `kvm-split`, `kvm-kernel` or
    /// `kvm-migrate`.
    pub fn family(self) -> &'static str {
        match self {
            BackendId::Software(_) => "software",
            BackendId::SoftwareApicv(_) => "software-apicv",
            BackendId::KvmUserspace(_) => "kvm-userspace",
            BackendId::KvmSplit(_) => "kvm-split",
            BackendId::KvmKernel => "kvm-kernel",
            BackendId::KvmMigrate => "kvm-migrate",
        }
    }

    /// A name of at most five characters, for table columns: `sw/k`, `apv/d`, `usr/k`,
    /// `spl/d`, `kern`, `migr`.
    pub fn short_name(self) -> String {
        let family = match self {
            BackendId::Software(_) => "sw",
            BackendId::SoftwareApicv(_) => "apv",
            BackendId::KvmUserspace(_) => "usr",
            BackendId::KvmSplit(_) => "spl",
            BackendId::KvmKernel => return "kern".into(),
            BackendId::KvmMigrate => return "migr".into(),
        };
        format!("{family}/{}", &self.profile().name()[..1])
    }

    /// Whether it needs /dev/kvm.
    pub fn uses_kvm(self) -> bool {
        !matches!(self, BackendId::Software(_) | BackendId::SoftwareApicv(_))
    }

    /// Parses a name as printed by `Display` (`kvm-userspace/datasheet`, `kvm-kernel`, …;
    /// `/sdm` for `/datasheet`).
    pub fn parse(name: &str) -> Option<BackendId> {
        BackendId::ALL
            .into_iter()
            .find(|id| id.matches(name) && id.to_string().contains('/') == name.contains('/'))
    }

    /// Does `pattern` select this backend: its full name (`/sdm` for `/datasheet`) or its
    /// family.
    pub fn matches(self, pattern: &str) -> bool {
        let name = self.to_string();
        let alias = name.strip_suffix("/datasheet").map(|family| format!("{family}/sdm"));
        name == pattern || self.family() == pattern || alias.as_deref() == Some(pattern)
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendId::KvmKernel | BackendId::KvmMigrate => f.write_str(self.family()),
            other => write!(f, "{}/{}", other.family(), other.profile().name()),
        }
    }
}

/// Why a backend cannot run a scenario; printed in the report instead of a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported(pub String);

/// Counters of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    /// Interrupts the guest took (all vCPUs).
    pub interrupts: u64,
    /// VM exits (KVM_RUN returns, including kicks); on `software-apicv` the exits its APICv
    /// model took; 0 on `software`.
    pub exits: u64,
    /// Wall time of the run, VM creation included.
    pub wall: Duration,
    /// Wall time of the vCPU loop alone (KVM_RUN and exit handling).
    pub vcpu_time: Duration,
    /// Part of `vcpu_time` spent inside our models (exit decoding excluded).
    pub model_time: Duration,
    /// Times the guest was moved between irqchips (`kvm-migrate`).
    pub migrations: u32,
}

/// The result of a run: each vCPU's trace and the counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunOutput {
    /// Per vCPU, the boot vCPU first.
    pub traces: Vec<Trace>,
    /// Counters.
    pub stats: Stats,
}

/// A run that did not complete: a lost interrupt (watchdog), an unexpected exit, a
/// malformed scenario, a KVM error. Carries what the guest logged until then.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunError {
    /// What went wrong.
    pub message: String,
    /// The guest's registers at the time, when a vCPU was involved.
    pub registers: Option<String>,
    /// What the vCPUs logged before the error.
    pub partial: Vec<Trace>,
}

impl RunError {
    /// An error with no guest context.
    pub fn new(message: impl Into<String>) -> Self {
        RunError { message: message.into(), ..RunError::default() }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(regs) = &self.registers {
            write!(f, "\n{regs}")?;
        }
        if let Some(trace) = self.partial.first() {
            write!(f, "\n  logged before the error: {}", trace.summary())?;
        }
        Ok(())
    }
}

impl std::error::Error for RunError {}

/// Options of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// A guest none of whose vCPUs makes progress (no exit handled, no log entry, registers
    /// unchanged between two re-entries) for this long has lost an interrupt: the run fails.
    pub watchdog: Duration,
    /// A run that takes longer than this fails, whatever the progress.
    pub timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { watchdog: Duration::from_millis(250), timeout: Duration::from_secs(20) }
    }
}

/// A way to run scenarios.
pub trait Backend {
    /// Which backend this is.
    fn id(&self) -> BackendId;

    /// Whether this backend can run `scenario`; `Err` says why not.
    fn supports(&self, scenario: &Scenario) -> Result<(), Unsupported>;

    /// Runs `scenario` to its end.
    fn run(&self, scenario: &Scenario, options: &RunOptions) -> Result<RunOutput, RunError>;
}

/// A backend that vCPU threads can share.
pub type SharedBackend = Box<dyn Backend + Send + Sync>;

/// The backends this machine can run, and for each other one why not.
pub fn available() -> (Vec<SharedBackend>, Vec<(BackendId, String)>) {
    let mut backends: Vec<SharedBackend> = Vec::new();
    let mut skipped = Vec::new();
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    let kvm = crate::kvm::probe();
    for id in BackendId::ALL {
        match id {
            BackendId::Software(profile) => backends.push(Box::new(software::Software::new(profile))),
            BackendId::SoftwareApicv(profile) => backends.push(Box::new(apicv::SoftwareApicv::new(profile))),
            #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
            _ => match &kvm {
                Ok(caps) => match caps.backend(id) {
                    Ok(b) => backends.push(Box::new(b)),
                    Err(why) => skipped.push((id, why)),
                },
                Err(why) => skipped.push((id, why.clone())),
            },
            #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
            _ => skipped.push((id, "KVM backends need Linux on x86_64".to_string())),
        }
    }
    (backends, skipped)
}

/// The backend with this id, if this machine can run it.
pub fn get(id: BackendId) -> Result<SharedBackend, String> {
    let (backends, skipped) = available();
    if let Some(b) = backends.into_iter().find(|b| b.id() == id) {
        return Ok(b);
    }
    Err(skipped.into_iter().find(|(s, _)| *s == id).map_or_else(|| "unknown backend".into(), |(_, why)| why))
}
