//! The `software-apicv` backend: the scripted CPU of [`super::software`], with each vCPU's
//! interrupt path an APICv processor's (vm-apic's [`VirtualApic`] and
//! [`PostedInterruptDescriptor`]) and a VMM around it that emulates every exit with the
//! same models as `software`. Always available and deterministic. KVM on the project's hosts
//! cannot run APICv (`kvm_pvm` on AMD), so this is where posted interrupts run a guest.
//!
//! # Who owns which register
//!
//! The virtual-APIC page is the vCPU's LAPIC register storage, as KVM's `apic->regs` is: the
//! guest reads from it (register virtualization), the processor writes VTPR, VPPR, VISR, VIRR,
//! VICR and VEOI there without exits. The [`LocalApic`] model of [`Irqchip`] is the VMM's
//! emulation engine for everything that exits: it owns the registers only the VMM writes (ID,
//! LDR, DFR, SVR, ESR, the LVTs, the timer, IA32_APIC_BASE and the mode) and it accepts the
//! interrupts the APIC bus, the IOAPIC, its timer and its LVTs deliver. The two are made
//! consistent around every model call (an exit or a host event), for every vCPU:
//!
//! 1. *sync in*: the page's processor-owned registers (TPR, ISR, IRR = VIRR, TMR = VTMR, the
//!    xAPIC ICR) are loaded into the LAPIC model, so it emulates (PPR reads, lowest-priority
//!    arbitration, an IPI's destination in ICR high) with the guest's current values;
//! 2. the models handle the exit;
//! 3. *sync out*: a vector the LAPIC model accepted meanwhile (an IRR bit not in VIRR) is
//!    taken out of its IRR and **posted** into the target's descriptor, VTMR recording its
//!    trigger mode (KVM's `__apic_accept_irq` sets TMR, then `vmx_deliver_posted_interrupt`);
//!    every page is then reloaded from its LAPIC model ([`VirtualApicPage::load_lapic`]),
//!    RVI/SVI recomputed from VIRR/VISR, the controls follow the APIC mode (xAPIC: the
//!    APIC-access page; x2APIC: x2APIC-mode virtualization; disabled: neither) and each
//!    vCPU's EOI-exit bitmap is recomputed as KVM's `vcpu_scan_ioapic` does: the level routes
//!    that reach it ([`eoi_exit_bitmap`]) and those whose vector is still pending EOI on it
//!    (in VISR, VIRR or PIR: `kvm_apic_pending_eoi`), so that the EOI of an interrupt whose
//!    route moved away before it was taken still reaches the IOAPIC.
//!
//! # Posting and notifications in the scripted CPU
//!
//! Each vCPU is in guest mode while it runs its program, out of it during an exit and while
//! halted. A post that sets ON ([`PostOutcome::Notify`]) to a vCPU in guest mode is its
//! notification vector arriving at once: the processor processes it
//! ([`VirtualApic::process_posted_interrupt`], no exit) and delivers at its next `Wait`. To a
//! vCPU out of guest mode the notification is a wake-up: the vCPU syncs PIR into VIRR
//! ([`VirtualApic::sync_posted_interrupts`]) while halted and before every VM entry (SN
//! cleared first, as KVM does). Posts that find their vector in PIR coalesce
//! ([`PostOutcome::Coalesced`]).
//!
//! # The guest's accesses
//!
//! TPR (MMIO 0x80, CR8, MSR 0x808), EOI (MMIO 0xB0, MSR 0x80B), self-IPIs (ICR with the self
//! shorthand, SELF IPI MSR 0x83F) and the register reads the processor virtualizes complete
//! without exits. IPI virtualization is on, as KVM enables it where the processor has it:
//! a fixed, edge, physical IPI without shorthand (ICR at MMIO 0x300 or MSR 0x830) is posted
//! into the destination's descriptor through the PID-pointer table (entry `n` is vCPU `n`'s
//! while its APIC ID is `n`), and the destination processes the notification or is woken, with
//! no exit on the sender. Other APIC writes, other ICR commands included, are APIC-write exits
//! (the value is in the page; the VMM writes it to the LAPIC model) or APIC-access exits (the
//! VMM performs the access on the model); x2APIC MSRs follow KVM's MSR bitmap (reads of the
//! readable registers but TMCCT, writes of TPR, EOI, SELF IPI and the ICR pass through). An EOI-induced exit is forwarded to the
//! IOAPIC for a vector accepted level-triggered (VTMR) unless EOI-broadcast suppression is on,
//! as KVM's `kvm_ioapic_send_eoi` does. `Wait` delivers with [`VirtualApic::deliver`]; with
//! nothing recognized it is a HLT exit. The 8259A's ExtINT is injected by the VMM, before
//! virtual interrupts, as on `software`. The EOI of a level-triggered LINT interrupt (its LVT
//! remote IRR) is not modelled: the harness never drives the LINT pins.
//!
//! Where APIC virtualization itself differs from a LAPIC (an edge self-IPI leaves a stale
//! VTMR bit, and is taken by a software-disabled APIC) the scenarios
//! `posted-self-ipi-stale-tmr` and `posted-self-ipi-disabled-apic` show it, as documented
//! divergences ([`crate::known::KNOWN`]).
//!
//! [`VirtualApic`]: vm_apic::apicv::VirtualApic
//! [`VirtualApic::deliver`]: vm_apic::apicv::VirtualApic::deliver
//! [`VirtualApic::process_posted_interrupt`]: vm_apic::apicv::VirtualApic::process_posted_interrupt
//! [`VirtualApic::sync_posted_interrupts`]: vm_apic::apicv::VirtualApic::sync_posted_interrupts
//! [`VirtualApicPage::load_lapic`]: vm_apic::apicv::VirtualApicPage::load_lapic
//! [`PostedInterruptDescriptor`]: vm_apic::apicv::PostedInterruptDescriptor
//! [`PostOutcome::Notify`]: vm_apic::apicv::PostOutcome::Notify
//! [`PostOutcome::Coalesced`]: vm_apic::apicv::PostOutcome::Coalesced
//! [`eoi_exit_bitmap`]: vm_apic::apicv::eoi_exit_bitmap
//! [`LocalApic`]: vm_apic::LocalApic
//! [`Irqchip`]: crate::irqchip::Irqchip

mod guest;
mod vmm;

use std::time::Instant;

use super::software::{irqchip, output, run_scripted, ExitReason};
use super::{Backend, BackendId, RunError, RunOptions, RunOutput, Unsupported};
use crate::scenario::{Profile, Scenario};
use vmm::Apicv;

/// The posted-interrupt notification vector (KVM's `POSTED_INTR_VECTOR`).
pub const NOTIFICATION_VECTOR: u8 = 0xF2;

/// The scripted-CPU backend with APICv vCPUs.
#[derive(Clone, Copy, Debug)]
pub struct SoftwareApicv {
    profile: Profile,
}

impl SoftwareApicv {
    /// A `software-apicv` backend whose models have `profile`.
    pub fn new(profile: Profile) -> Self {
        SoftwareApicv { profile }
    }

    /// Runs `scenario` and also returns what each vCPU's APIC virtualization did.
    pub fn run_counted(&self, scenario: &Scenario) -> Result<(RunOutput, Vec<ApicvCounters>), RunError> {
        let started = Instant::now();
        scenario.validate(usize::MAX).map_err(|e| RunError::new(e.to_string()))?;
        self.supports(scenario).map_err(|why| RunError::new(why.0))?;
        let mut path = Apicv::new(irqchip(self.profile, scenario.programs().count()));
        let (traces, result) = run_scripted(&mut path, scenario);
        let counters: Vec<ApicvCounters> = path.vcpus.iter().map(|v| v.counters).collect();
        let exits = counters.iter().map(ApicvCounters::exits).sum();
        Ok((output(started, traces, result, exits)?, counters))
    }
}

impl Backend for SoftwareApicv {
    fn id(&self) -> BackendId {
        BackendId::SoftwareApicv(self.profile)
    }

    fn supports(&self, _scenario: &Scenario) -> Result<(), Unsupported> {
        Ok(())
    }

    fn run(&self, scenario: &Scenario, _options: &RunOptions) -> Result<RunOutput, RunError> {
        self.run_counted(scenario).map(|(out, _)| out)
    }
}

/// What one vCPU's APIC virtualization did in a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApicvCounters {
    /// Vectors posted into this vCPU's descriptor (interrupts its LAPIC model accepted).
    pub posts: u64,
    /// Posts that found their vector still in PIR and merged with the earlier one.
    pub coalesced: u64,
    /// Notifications processed by the processor in guest mode (no VM exit).
    pub notified_in_guest: u64,
    /// Notifications due while the vCPU was out of guest mode (halted, in an exit, not
    /// started): a wake-up, the vCPU syncing PIR itself.
    pub notified_outside_guest: u64,
    /// Software PIR→VIRR syncs (while halted, before VM entry) that took vectors.
    pub pir_syncs: u64,
    /// Virtual-interrupt deliveries.
    pub deliveries: u64,
    /// ExtINT vectors injected by the VMM (the 8259A's).
    pub injections: u64,
    /// Guest APIC accesses completed without an exit (TPR, EOI, self-IPI, IPIs, register
    /// reads, CR8).
    pub virtualized: u64,
    /// IPIs this vCPU sent that IPI virtualization posted into their destination's descriptor
    /// without an exit.
    pub ipis_virtualized: u64,
    /// EOI-induced exits forwarded to the IOAPIC.
    pub eoi_forwarded: u64,
    /// VM exits by reason: I/O, MMIO, MSR, APIC access, APIC write, EOI-induced, HLT.
    pub exits_by_reason: [u64; 7],
}

impl ApicvCounters {
    /// VM exits of every reason.
    pub fn exits(&self) -> u64 {
        self.exits_by_reason.iter().sum()
    }

    /// VM exits for `reason`.
    pub fn exits_for(&self, reason: ExitReason) -> u64 {
        self.exits_by_reason[Self::slot(reason)]
    }

    fn slot(reason: ExitReason) -> usize {
        match reason {
            ExitReason::Io => 0,
            ExitReason::Mmio => 1,
            ExitReason::Msr => 2,
            ExitReason::ApicAccess => 3,
            ExitReason::ApicWrite => 4,
            ExitReason::EoiInduced => 5,
            ExitReason::Hlt => 6,
        }
    }
}
