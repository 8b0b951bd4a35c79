//! irq-harness: runs scenarios on the vm-irq models and on Linux KVM, and compares them.
//!
//! * [`scenario`]: the scenario language; [`scenarios`]: the built-in scenarios.
//! * [`trace`]: what a run logged.
//! * [`irqchip`]: our models (vm-pic, vm-apic, vm-timer) behind the exits.
//! * [`backend`]: one trait, five backend families (`software`, `kvm-userspace`, `kvm-split`,
//!   `kvm-kernel`, `kvm-migrate`), and [`backend::host`], what this host's KVM does that Linux
//!   KVM does not.
//! * [`guest`] and [`kvm`]: the probe guest and the KVM runner (Linux/x86_64 only).
//! * [`diff`]: differential comparison; [`report`]: the main job's table; [`bench`](mod@bench): the
//!   interrupt-rate benchmark.

pub mod backend;
pub mod bench;
pub mod diff;
pub mod irqchip;
pub mod known;
pub mod report;
pub mod scenario;
pub mod scenarios;
pub mod trace;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod guest;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod kvm;

/// vCPUs a scenario can have (the probe guest's layout has a region for each).
pub const MAX_VCPUS: usize = 4;
