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
//! A second follows from it where our IOAPIC sits behind KVM's LAPIC (kvm-split): **the
//! `KVM_EXIT_IOAPIC_EOI` that the EOI at delivery raises is lost when the guest halts before
//! its next exit to userspace.** KVM asks for the exit with a vCPU request
//! (`KVM_REQ_IOAPIC_EOI_EXIT`, serviced at the next guest entry). Guest ring-0 code is emulated
//! on this host, so the guest goes on from the handler to its `hlt` without a guest entry; the
//! halted vCPU then blocks (`KVM_MP_STATE_HALTED`), and a blocked vCPU services no request:
//! KVM_RUN returns only for signals, re-entering it blocks again, and the IOAPIC never hears
//! the EOI. With the line still high, the re-delivery never comes and the guest sleeps for
//! ever, the bug class that hangs real guests in HLT. Shown by the harness on this host: after
//! the watchdog fired, `KVM_GET_MP_STATE` read HALTED and IRR/ISR were empty; setting the
//! vCPU RUNNABLE made the next KVM_RUN return `KVM_EXIT_IOAPIC_EOI` for the vector at once.
//! Minimal scenario: `ioapic-eoi-lost-in-hlt` (a level pin held high, a handler that EOIs,
//! a second `Wait`): `irq:0x79 irq:0x79` expected, a watchdog hang after `irq:0x79` on
//! kvm-split.
//!
//! Each scenario these affect names the exact difference it shows in [`crate::known`].

use std::sync::OnceLock;

use super::BackendId;

/// What the in-kernel LAPIC of this host does with every interrupt.
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

/// What is lost where KVM's LAPIC ends a level interrupt at delivery in front of our IOAPIC.
pub const EOI_EXIT_LOST_IN_HLT: &str = "this host's KVM (kvm_pvm) loses KVM_EXIT_IOAPIC_EOI when the guest halts \
     before its next exit to userspace: the EOI at delivery raises KVM_REQ_IOAPIC_EOI_EXIT, the emulated guest \
     reaches hlt without a guest entry, and a halted vCPU services no request, so our IOAPIC keeps Remote IRR, \
     the line stays high and the re-delivery never comes (minimal scenario: ioapic-eoi-lost-in-hlt)";
