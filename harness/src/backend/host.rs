//! Behaviour of the KVM on this host that is not Linux KVM's design, detected at run time, and
//! which scenarios it affects on which backends.
//!
//! One is known (measured on the project's machines, `kvm_pvm`, Linux 6.18): **the in-kernel
//! LAPIC ends every interrupt when it delivers it.** After the guest takes a vector, ISR and
//! PPR read as if it had already sent its EOI, KVM_GET_LAPIC agrees, and a level-triggered
//! IOAPIC interrupt is EOI'd to the IOAPIC at once (Remote IRR cleared and, while the line is
//! high, the interrupt re-delivered before the guest's handler ran). PV EOI is off
//! (MSR_KVM_PV_EOI_EN reads 0); it happens with and without `hlt`, in kernel and split mode.
//! Linux KVM's `kvm_get_apic_interrupt` moves the vector from IRR to ISR and only the guest's
//! EOI (`apic_set_eoi`) ends it, as the SDM says, and so do the LAPIC models: this is the
//! host's, not a model divergence. Minimal scenario: [`crate::scenarios::lapic::in_service`]
//! (`lapic-in-service`): a self-IPI taken at a `Wait` with no EOI, then ISR word 3 and PPR:
//! `irq:0x60 val:0x1 val:0x60 val:0x0` expected, `irq:0x60 val:0x0 val:0x0 val:0x0` on this
//! host's `kvm-kernel` and `kvm-split`.
//!
//! Scenarios that observe an interrupt in service ([`Scenario::observes_in_service`]) cannot
//! match on the backends with the in-kernel LAPIC where the quirk is present: their results
//! there are reported as known host divergences, never as passes. Scenarios whose handler
//! ends each interrupt itself do not see it and are compared bit for bit.

use std::sync::OnceLock;

use super::BackendId;
use crate::scenario::Scenario;

/// Why a scenario that observes interrupts in service cannot match on this host's in-kernel
/// LAPIC.
pub const LAPIC_EOI_AT_DELIVERY: &str = "this host's KVM (kvm_pvm) in-kernel LAPIC ends every \
     interrupt at delivery: ISR/PPR never show it and a level interrupt is EOI'd to the IOAPIC at once \
     (re-delivered while the line is high); Linux KVM and the models keep it in service until the \
     guest's EOI (minimal scenario: lapic-in-service)";

/// Whether the in-kernel LAPIC of this host ends interrupts at delivery (run once per process
/// on `kvm-kernel`; `false` where KVM cannot run).
pub fn lapic_ends_interrupts_at_delivery() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn detect() -> bool {
    use super::Backend;
    let Ok(caps) = crate::kvm::probe() else { return false };
    let Ok(kernel) = caps.backend(BackendId::KvmKernel) else { return false };
    let scenario = crate::scenarios::lapic::in_service();
    match kernel.run(&scenario, &super::RunOptions::default()) {
        // The ISR read after the interrupt was taken: 0 where the LAPIC already ended it.
        Ok(out) => {
            out.traces.first().and_then(|t| t.entries.get(1)).map(|e| e.event)
                == Some(crate::trace::Event::Value(0))
        }
        Err(_) => false,
    }
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn detect() -> bool {
    false
}

/// Whether backend `id` has the in-kernel LAPIC (every interrupt of the guest goes through it).
pub fn has_kernel_lapic(id: BackendId) -> bool {
    matches!(id, BackendId::KvmKernel | BackendId::KvmSplit(_) | BackendId::KvmMigrate)
}

/// The host divergence that keeps `scenario` from matching on backend `id`, if any.
pub fn divergence(id: BackendId, scenario: &Scenario) -> Option<&'static str> {
    (has_kernel_lapic(id) && scenario.observes_in_service && lapic_ends_interrupts_at_delivery())
        .then_some(LAPIC_EOI_AT_DELIVERY)
}
