//! The VMM side of `software-apicv`: the vCPUs' APIC virtualization state, the
//! register synchronisation around every model call, posting and notifications, VM entry and
//! exit, and the EOI-exit bitmaps (see the [parent module](super)).

use vm_apic::apicv::{
    eoi_exit_bitmap, Controls, NotificationDestination, PidPointerTable, PostOutcome,
    PostedInterruptDescriptor, VirtualApic, VirtualApicPage, VICR_HI, VICR_LO, VIRR, VTMR,
};
use vm_apic::lapic::regs::{Svr, ICR_DELIVERY_STATUS, ICR_LOW_WRITABLE};
use vm_apic::lapic::{ApicMode, LocalApic, Quirks};
use vm_apic::VectorSet;

use super::super::software::{now_at, ExitReason, InterruptPath, START_NS};
use super::{ApicvCounters, NOTIFICATION_VECTOR};
use crate::irqchip::{Irqchip, Now};

/// Where a vCPU is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Run {
    /// Not running: before its start, in an exit, after its program.
    Out,
    /// In VMX non-root operation: notifications are processed at once.
    InGuest,
    /// Blocked in the VMM after a HLT exit.
    Halted,
}

/// One vCPU's APIC virtualization (its descriptor is in [`Apicv::pids`]).
pub(super) struct Vcpu {
    /// The processor's side: VMCS fields, the virtual-APIC page, the recognition latch.
    pub(super) vapic: VirtualApic,
    /// Where the vCPU is (decides between a notification and a wake-up).
    pub(super) run: Run,
    /// What happened, for the tests and the table.
    pub(super) counters: ApicvCounters,
}

/// The `software-apicv` path: APICv vCPUs in front of the models (see the module docs).
pub(crate) struct Apicv {
    /// The models behind the exits (the LAPIC models are the VMM's emulation engine).
    pub(super) chip: Irqchip,
    /// Per vCPU, index = vCPU = APIC ID.
    pub(super) vcpus: Vec<Vcpu>,
    /// The posted-interrupt descriptors the VMM and IPI virtualization post into, index =
    /// vCPU (the PID-pointer table's entries, see [`PidTable`]).
    pub(super) pids: Vec<PostedInterruptDescriptor>,
    /// The first broken invariant since the scripted CPU last asked.
    pub(super) failure: Option<String>,
}

/// The controls for an APIC in `mode`, as KVM's `vmx_set_virtual_apic_mode` picks them, with
/// IPI virtualization as KVM enables it where the processor has it (`enable_ipiv`).
fn controls_for(lapic: &LocalApic) -> Controls {
    match lapic.mode() {
        ApicMode::XApic => Controls::APICV | Controls::IPI_VIRTUALIZATION,
        ApicMode::X2Apic => Controls::APICV_X2APIC | Controls::IPI_VIRTUALIZATION,
        _ => Controls::APICV.difference(Controls::VIRTUALIZE_APIC_ACCESSES),
    }
}

/// The PID-pointer table: entry `n` locates vCPU `n`'s descriptor, as KVM's does, and is only
/// good while that vCPU's APIC ID is still `n` (KVM inhibits APIC virtualization once a guest
/// changes an xAPIC ID) and its APIC is software-enabled. KVM keeps the entry of a
/// software-disabled APIC, so there a fixed IPI is posted although a LAPIC would discard it;
/// this VMM drops the entry instead (it sees every SVR and IA32_APIC_BASE write, as exits), so
/// that such IPIs exit and the models refuse them as a LAPIC does.
pub(super) struct PidTable<'a> {
    /// The descriptors, index = vCPU.
    pub(super) pids: &'a [PostedInterruptDescriptor],
    /// The LAPIC models, whose IDs decide which entries are good.
    pub(super) lapics: &'a [LocalApic],
}

impl PidPointerTable for PidTable<'_> {
    fn descriptor(&self, apic_id: u32) -> Option<&PostedInterruptDescriptor> {
        let index = usize::try_from(apic_id).ok()?;
        let lapic = self.lapics.get(index)?;
        (lapic.id() == apic_id && lapic.is_software_enabled()).then(|| self.pids.get(index)).flatten()
    }
}

/// `a` without the vectors of `b`.
fn difference(a: &VectorSet, b: &VectorSet) -> VectorSet {
    let mut out = *a;
    for (word, other) in out.0.iter_mut().zip(b.0) {
        *word &= !other;
    }
    out
}

impl Apicv {
    /// APICv vCPUs for `chip`'s LAPIC models, their pages loaded from them, none running.
    pub(super) fn new(chip: Irqchip) -> Self {
        let vcpus = chip
            .lapics
            .iter()
            .map(|lapic| {
                let mut vapic = VirtualApic::new(controls_for(lapic));
                vapic.set_notification_vector(NOTIFICATION_VECTOR);
                Vcpu { vapic, run: Run::Out, counters: ApicvCounters::default() }
            })
            .collect();
        // vCPU n runs on physical CPU n (x2APIC ID n).
        let pids = (0..chip.lapics.len() as u32)
            .map(|cpu| {
                PostedInterruptDescriptor::with_notification(
                    NOTIFICATION_VECTOR,
                    NotificationDestination::x2apic(cpu),
                )
            })
            .collect();
        let mut path = Apicv { chip, vcpus, pids, failure: None };
        path.sync_out(now_at(START_NS));
        path
    }

    pub(super) fn fail(&mut self, why: String) {
        self.failure.get_or_insert(why);
    }

    /// Step 1 of every model call: the page's processor-owned registers into the LAPIC model.
    pub(super) fn sync_in(&mut self) {
        let mut failure = None;
        for (index, (vcpu, lapic)) in self.vcpus.iter().zip(self.chip.lapics.iter_mut()).enumerate() {
            let page = vcpu.vapic.page();
            let mut state = lapic.state();
            state.tpr = page.vtpr();
            state.isr = page.visr();
            state.irr = page.virr();
            state.tmr = page.vectors(VTMR);
            if lapic.mode() != ApicMode::X2Apic {
                // The processor stores what the guest wrote; the model holds the bits a write
                // can set.
                let low = if lapic.config().quirks.contains(Quirks::RESERVED_BITS_STORED) {
                    0xFFFF_EFFF
                } else {
                    ICR_LOW_WRITABLE
                };
                state.icr = u64::from(page.read(VICR_HI)) << 32 | (u64::from(page.read(VICR_LO)) & low);
            } else {
                // IPI virtualization writes the 64-bit ICR into the page without an exit (the
                // WRMSR's reserved bits were checked: they #GP).
                state.icr = page.read64(VICR_LO) & !ICR_DELIVERY_STATUS;
            }
            if let Err(e) = lapic.restore(&state) {
                failure.get_or_insert(format!(
                    "vCPU {index}: the page's registers do not fit the LAPIC model: {e:?}"
                ));
            }
        }
        if let Some(why) = failure {
            self.fail(why);
        }
    }

    /// Step 3 of every model call: posts, pages, RVI/SVI, controls, EOI-exit bitmaps.
    pub(super) fn sync_out(&mut self, now: Now) {
        let mut posts = Vec::new();
        let mut failure = None;
        for (index, (vcpu, lapic)) in self.vcpus.iter_mut().zip(self.chip.lapics.iter_mut()).enumerate() {
            let virr = vcpu.vapic.page().virr();
            let mut state = lapic.state();
            // Accepted by the model during the call: posted below, not requested in VIRR. (Bits
            // the model cleared, at INIT, leave VIRR with the reload.)
            let accepted = difference(&state.irr, &virr);
            if !accepted.is_empty() {
                state.irr = state.irr.intersection(&virr);
                if let Err(e) = lapic.restore(&state) {
                    failure.get_or_insert(format!("vCPU {index}: LAPIC model refused its own state: {e:?}"));
                }
            }
            let vapic = &mut vcpu.vapic;
            vapic.page_mut().load_lapic(lapic, now.tsc);
            let rvi = vapic.page().highest(VIRR).unwrap_or(0);
            vapic.set_rvi(rvi);
            vapic.update_svi();
            vapic.set_controls(controls_for(lapic));
            posts.extend(accepted.iter().map(|vector| (index, vector)));
        }
        for index in 0..self.vcpus.len() {
            let bitmap = self.eoi_exit_bitmap(index);
            self.vcpus[index].vapic.set_eoi_exit_bitmap(bitmap);
        }
        if let Some(why) = failure {
            self.fail(why);
        }
        for (index, vector) in posts {
            self.post(index, vector);
        }
    }

    /// vCPU `index`'s EOI-exit bitmap as KVM computes it ([`eoi_exit_bitmap`]): the level
    /// routes that reach it, and those whose vector is still pending EOI on it, in VISR, VIRR
    /// or PIR (`posted-level-route-moved`).
    pub(super) fn eoi_exit_bitmap(&self, index: usize) -> VectorSet {
        let page = self.vcpus[index].vapic.page();
        let pending = page.visr().union(&page.virr()).union(&self.pids[index].pir());
        eoi_exit_bitmap(&self.chip.ioapic, self.chip.bus(), &self.chip.lapics, index, &pending)
    }

    /// The VMM posts `vector` to vCPU `index` and sends the notification the post asks for.
    pub(super) fn post(&mut self, index: usize, vector: u8) {
        let outcome = self.pids[index].post(vector);
        self.posted(index, outcome);
    }

    /// A post into vCPU `index`'s descriptor (by the VMM or by IPI virtualization) ended with
    /// `outcome`: a notification is processed at once by a vCPU in guest mode and is a wake-up
    /// for one out of it.
    pub(super) fn posted(&mut self, index: usize, outcome: PostOutcome) {
        let vcpu = &mut self.vcpus[index];
        vcpu.counters.posts += 1;
        let failure = match outcome {
            PostOutcome::Notify(notification) if vcpu.run == Run::InGuest => {
                vcpu.counters.notified_in_guest += 1;
                vcpu.vapic
                    .process_posted_interrupt(&self.pids[index], notification.vector)
                    .map(|exit| format!("vCPU {index}: the notification caused {exit:?}"))
            }
            // A wake-up: the vCPU syncs PIR while halted or before it enters.
            PostOutcome::Notify(_) => {
                vcpu.counters.notified_outside_guest += 1;
                None
            }
            PostOutcome::Coalesced => {
                vcpu.counters.coalesced += 1;
                None
            }
            PostOutcome::Pending => None,
            PostOutcome::Suppressed => Some(format!("vCPU {index}: SN set, which the VMM never does")),
        };
        if let Some(why) = failure {
            self.fail(why);
        }
    }

    /// vCPU `index` leaves guest mode for `reason`.
    pub(super) fn exit(&mut self, index: usize, reason: ExitReason) {
        let vcpu = &mut self.vcpus[index];
        vcpu.vapic.vm_exit();
        vcpu.run = Run::Out;
        vcpu.counters.exits_by_reason[ApicvCounters::slot(reason)] += 1;
    }

    /// VM entry of vCPU `index`: SN cleared, "in guest" stored, PIR synced, then the
    /// processor's entry (PPR virtualization, evaluation).
    pub(super) fn enter(&mut self, index: usize) {
        let (vcpu, pid) = (&mut self.vcpus[index], &self.pids[index]);
        if pid.notifications_suppressed() {
            let _ = pid.suppress_notifications(false);
        }
        vcpu.run = Run::InGuest;
        if vcpu.vapic.sync_posted_interrupts(pid) {
            vcpu.counters.pir_syncs += 1;
        }
        match vcpu.vapic.vm_entry() {
            Ok(None) => {}
            Ok(Some(exit)) => self.fail(format!("vCPU {index}: VM entry exited at once: {exit:?}")),
            Err(e) => self.fail(format!("vCPU {index}: VM entry failed: {e:?}")),
        }
    }

    /// The guest-physical page the APIC-access page of vCPU `vcpu` is at, while its accesses
    /// are virtualized (xAPIC mode).
    pub(super) fn apic_access_page(&self, vcpu: usize) -> Option<u64> {
        let v = self.vcpus.get(vcpu)?;
        if !v.vapic.controls().contains(Controls::VIRTUALIZE_APIC_ACCESSES) {
            return None;
        }
        self.chip.lapics.get(vcpu)?.mmio_base()
    }

    /// An EOI-induced exit of `vector` on `vcpu`: forwarded to the IOAPIC for a vector the LAPIC
    /// accepted level-triggered, unless EOI-broadcast suppression is on.
    pub(super) fn eoi_induced(&mut self, vcpu: usize, vector: u8, now: Now) {
        let level = self.vcpus[vcpu].vapic.page().test_bit(VTMR, vector);
        let suppressed = self.chip.lapics[vcpu].state().svr & Svr::SUPPRESS_EOI_BROADCAST.bits() != 0;
        let forward = level && !suppressed;
        if forward {
            self.vcpus[vcpu].counters.eoi_forwarded += 1;
        }
        self.vmm(Some((vcpu, ExitReason::EoiInduced)), now, |chip| {
            if forward {
                chip.ioapic_eoi(vector, now);
            }
        });
    }

    pub(super) fn virtualized(&mut self, vcpu: usize) {
        self.vcpus[vcpu].counters.virtualized += 1;
    }

    pub(super) fn page(&self, vcpu: usize) -> &VirtualApicPage {
        self.vcpus[vcpu].vapic.page()
    }
}
