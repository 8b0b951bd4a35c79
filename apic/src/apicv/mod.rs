//! A software model of Intel's APIC virtualization (SDM Vol. 3 "APIC Virtualization and Virtual
//! Interrupts"): the virtual-APIC page, the guest interrupt status (RVI/SVI), virtual-interrupt
//! delivery, TPR, EOI and self-IPI virtualization, posted-interrupt processing, APIC-access and
//! APIC-write handling, x2APIC MSR virtualization and IPI virtualization ([`ipiv`]) — each
//! operation a method that returns the VM exit it causes, if any, as a value.
//!
//! [`VirtualApic`] is what one logical processor holds in VMX non-root operation for one vCPU:
//! the VMCS fields of APIC virtualization ([`Controls`], RVI, SVI, TPR threshold, EOI-exit
//! bitmap, the posted-interrupt notification vector), the [`VirtualApicPage`] and the processor's
//! internal "a virtual interrupt is recognized" latch. The [`PostedInterruptDescriptor`] is
//! shared with the posters (other vCPUs, devices) and lives apart.
//!
//! It serves two purposes:
//! * a simulator: a VMM or test drives the same sequence a CPU would (VM entry, guest TPR and
//!   EOI writes, posts from other threads, instruction boundaries) and sees which vector the
//!   guest takes and which VM exits occur, step by step as the SDM's pseudo-code says;
//! * a specification for a VMM's own APICv code: the operations a VMM performs itself (the PIR
//!   sync before VM entry, keeping SVI coherent with VISR, the EOI-exit bitmap from IOAPIC
//!   routes) are methods here with the SDM's ordering, and the page and descriptor have the
//!   hardware layout.
//!
//! ```
//! use vm_apic::apicv::{Controls, PostedInterruptDescriptor, VirtualApic};
//!
//! let mut vapic = VirtualApic::new(Controls::APICV);
//! vapic.set_notification_vector(0xF2);
//! let pid = PostedInterruptDescriptor::new();
//! vapic.vm_entry().unwrap();
//! // Another vCPU posts vector 0x45 and sends the notification to this processor.
//! let _ = pid.post(0x45);
//! assert_eq!(vapic.process_posted_interrupt(&pid, 0xF2), None);
//! // The guest takes it at the next instruction boundary with interrupts enabled.
//! assert_eq!(vapic.deliver(true), Some(0x45));
//! assert_eq!(vapic.svi(), 0x45);
//! ```

pub mod ipiv;
mod page;
pub mod pid;

pub use ipiv::{NoPidTable, PidPointer, PidPointerTable, PostedIpi};
pub use page::{VirtualApicPage, VEOI, VICR_HI, VICR_LO, VIRR, VISR, VPPR, VTMR, VTPR};
pub use pid::{Notification, NotificationDestination, PostOutcome, PostedInterruptDescriptor};

use bitflags::bitflags;
use core::borrow::Borrow;

use crate::bus::ApicBus;
use crate::ioapic::IoApic;
use crate::lapic::{regs, LocalApic};
use crate::VectorSet;

bitflags! {
    /// The VM-execution, pin-based and VM-exit controls APIC virtualization depends on, named
    /// as the SDM names them. (The VMCS spreads them over four control fields; the bit values
    /// here are this type's own.)
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
    pub struct Controls: u16 {
        /// Primary processor-based control "use TPR shadow": VTPR exists and MOV CR8 uses it.
        const USE_TPR_SHADOW = 1 << 0;
        /// Secondary control "virtualize APIC accesses": accesses to the APIC-access page are
        /// virtualized or cause APIC-access VM exits.
        const VIRTUALIZE_APIC_ACCESSES = 1 << 1;
        /// Secondary control "virtualize x2APIC mode": RDMSR/WRMSR of 0x800–0x8FF use the page.
        const VIRTUALIZE_X2APIC_MODE = 1 << 2;
        /// Secondary control "APIC-register virtualization": most register reads (and writes)
        /// are satisfied from the page.
        const APIC_REGISTER_VIRTUALIZATION = 1 << 3;
        /// Secondary control "virtual-interrupt delivery": RVI/SVI, the EOI-exit bitmap and
        /// delivery through the page.
        const VIRTUAL_INTERRUPT_DELIVERY = 1 << 4;
        /// Pin-based control "process posted interrupts".
        const PROCESS_POSTED_INTERRUPTS = 1 << 5;
        /// Primary processor-based control "interrupt-window exiting": no virtual interrupt is
        /// recognized while it is set.
        const INTERRUPT_WINDOW_EXITING = 1 << 6;
        /// Pin-based control "external-interrupt exiting" (required by virtual-interrupt
        /// delivery).
        const EXTERNAL_INTERRUPT_EXITING = 1 << 7;
        /// VM-exit control "acknowledge interrupt on exit" (required by posted interrupts).
        const ACKNOWLEDGE_INTERRUPT_ON_EXIT = 1 << 8;
        /// Tertiary processor-based control "IPI virtualization": a guest ICR write that sends
        /// a fixed, edge, physical, no-shorthand IPI is posted into the destination's
        /// descriptor through the PID-pointer table, without a VM exit ([`ipiv`]).
        const IPI_VIRTUALIZATION = 1 << 9;
    }
}

impl Controls {
    /// Full xAPIC APICv as KVM enables it: TPR shadow, APIC-access virtualization, register
    /// virtualization, virtual-interrupt delivery and posted interrupts (with the controls
    /// they require).
    pub const APICV: Controls = Controls::USE_TPR_SHADOW
        .union(Controls::VIRTUALIZE_APIC_ACCESSES)
        .union(Controls::APIC_REGISTER_VIRTUALIZATION)
        .union(Controls::VIRTUAL_INTERRUPT_DELIVERY)
        .union(Controls::PROCESS_POSTED_INTERRUPTS)
        .union(Controls::EXTERNAL_INTERRUPT_EXITING)
        .union(Controls::ACKNOWLEDGE_INTERRUPT_ON_EXIT);
    /// The same for an x2APIC guest: x2APIC-mode virtualization instead of the APIC-access page.
    pub const APICV_X2APIC: Controls = Controls::APICV
        .difference(Controls::VIRTUALIZE_APIC_ACCESSES)
        .union(Controls::VIRTUALIZE_X2APIC_MODE);

    /// The VM-entry checks on these controls (SDM "Checks on VM-Execution Control Fields").
    pub fn validate(self) -> Result<(), ControlError> {
        let needs_shadow = Controls::VIRTUALIZE_X2APIC_MODE
            .union(Controls::APIC_REGISTER_VIRTUALIZATION)
            .union(Controls::VIRTUAL_INTERRUPT_DELIVERY);
        if self.intersects(needs_shadow) && !self.contains(Controls::USE_TPR_SHADOW) {
            return Err(ControlError::NeedsTprShadow);
        }
        if self.contains(Controls::VIRTUALIZE_X2APIC_MODE | Controls::VIRTUALIZE_APIC_ACCESSES) {
            return Err(ControlError::X2apicAndApicAccess);
        }
        if self.contains(Controls::VIRTUAL_INTERRUPT_DELIVERY)
            && !self.contains(Controls::EXTERNAL_INTERRUPT_EXITING)
        {
            return Err(ControlError::DeliveryNeedsExternalInterruptExiting);
        }
        if self.contains(Controls::PROCESS_POSTED_INTERRUPTS)
            && !self.contains(Controls::VIRTUAL_INTERRUPT_DELIVERY | Controls::ACKNOWLEDGE_INTERRUPT_ON_EXIT)
        {
            return Err(ControlError::PostedNeedsDeliveryAndAcknowledge);
        }
        Ok(())
    }
}

/// Why VM entry fails on these APIC-virtualization settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlError {
    /// x2APIC-mode virtualization, register virtualization and virtual-interrupt delivery need
    /// "use TPR shadow".
    NeedsTprShadow,
    /// "Virtualize x2APIC mode" and "virtualize APIC accesses" are exclusive.
    X2apicAndApicAccess,
    /// Virtual-interrupt delivery needs "external-interrupt exiting".
    DeliveryNeedsExternalInterruptExiting,
    /// Posted interrupts need virtual-interrupt delivery and "acknowledge interrupt on exit".
    PostedNeedsDeliveryAndAcknowledge,
    /// Without virtual-interrupt delivery, the TPR threshold may not exceed VTPR bits 7:4.
    TprThresholdAboveVtpr,
}

/// A VM exit an APIC-virtualization operation causes. After one the processor is in VMX root
/// operation: the VMM handles it and calls [`VirtualApic::vm_entry`] to resume the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmExit {
    /// TPR below threshold (trap-like; only without virtual-interrupt delivery): VTPR bits
    /// 7:4 fell below the TPR threshold, so an interrupt the VMM holds may now be deliverable.
    TprBelowThreshold,
    /// EOI-induced (trap-like): the guest ended `vector`, whose EOI-exit bitmap bit is set;
    /// VISR, SVI and VPPR are already updated; the VMM forwards the EOI (to the IOAPIC).
    EoiInduced {
        /// The vector ended (the exit qualification).
        vector: u8,
    },
    /// APIC write (trap-like): the guest wrote the register at `offset`, the value is already in
    /// the page; the VMM emulates its effect (and sanitises the value).
    ApicWrite {
        /// The register's offset (the exit qualification).
        offset: u32,
    },
    /// APIC access (fault-like): the access was not virtualized and did not happen; the VMM
    /// emulates it.
    ApicAccess {
        /// The offset in the APIC-access page.
        offset: u32,
        /// A write (else a read).
        write: bool,
    },
    /// External interrupt: a physical interrupt other than the notification vector arrived.
    ExternalInterrupt {
        /// Its vector (acknowledged on exit).
        vector: u8,
    },
}

/// The result of a guest RDMSR in x2APIC range with "virtualize x2APIC mode".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsrRead {
    /// Virtualized: the 64 bits the guest reads.
    Value(u64),
    /// Not virtualized: the MSR bitmap decides (an MSR-read VM exit); the VMM emulates it.
    NotVirtualized,
}

/// The result of a guest WRMSR in x2APIC range with "virtualize x2APIC mode".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsrWrite {
    /// Virtualized and complete, no exit.
    Done,
    /// An ICR write completed by IPI virtualization: the vector was posted into the
    /// destination's descriptor. [`PostOutcome::Notify`] means the processor sent the
    /// notification vector to the notification destination; nothing else is sent.
    Posted(PostedIpi),
    /// Virtualized, then a trap-like VM exit.
    Exit(VmExit),
    /// Virtualized as #GP(0) (reserved bits set): the guest takes a fault.
    GeneralProtection,
    /// Not virtualized: the MSR bitmap decides (an MSR-write VM exit); the VMM emulates it.
    NotVirtualized,
}

/// x2APIC TPR MSR.
const MSR_TPR: u32 = regs::X2APIC_MSR_BASE | (regs::TPR >> 4);
/// x2APIC EOI MSR.
const MSR_EOI: u32 = regs::X2APIC_MSR_BASE | (regs::EOI >> 4);
/// x2APIC SELF IPI MSR.
const MSR_SELF_IPI: u32 = regs::X2APIC_MSR_BASE | (regs::SELF_IPI >> 4);
/// x2APIC ICR MSR.
const MSR_ICR: u32 = regs::X2APIC_MSR_BASE | (regs::ICR_LOW >> 4);

/// One vCPU's APIC virtualization on one logical processor (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VirtualApic {
    page: VirtualApicPage,
    controls: Controls,
    rvi: u8,
    svi: u8,
    tpr_threshold: u8,
    eoi_exit_bitmap: VectorSet,
    notification_vector: u8,
    recognized: bool,
}

impl VirtualApic {
    /// A vCPU with an all-zero page and guest interrupt status, with `controls`.
    pub fn new(controls: Controls) -> Self {
        VirtualApic {
            page: VirtualApicPage::new(),
            controls,
            rvi: 0,
            svi: 0,
            tpr_threshold: 0,
            eoi_exit_bitmap: VectorSet::EMPTY,
            notification_vector: 0,
            recognized: false,
        }
    }

    // ----- VMCS fields, as the VMM sets them between exits -----------------------------------

    /// The virtual-APIC page.
    #[inline]
    pub fn page(&self) -> &VirtualApicPage {
        &self.page
    }

    /// The virtual-APIC page, for the VMM (emulating registers, restoring state). Edits to
    /// VIRR or VISR need a matching RVI/SVI ([`VirtualApic::set_rvi`], [`VirtualApic::update_svi`]),
    /// and take effect at the next VM entry.
    #[inline]
    pub fn page_mut(&mut self) -> &mut VirtualApicPage {
        &mut self.page
    }

    /// The controls.
    #[inline]
    pub fn controls(&self) -> Controls {
        self.controls
    }

    /// Replaces the controls (takes effect at the next VM entry, which checks them).
    #[inline]
    pub fn set_controls(&mut self, controls: Controls) {
        self.controls = controls;
    }

    /// RVI: the guest interrupt status's requesting virtual interrupt (low byte).
    #[inline]
    pub fn rvi(&self) -> u8 {
        self.rvi
    }

    /// SVI: the guest interrupt status's servicing virtual interrupt (high byte).
    #[inline]
    pub fn svi(&self) -> u8 {
        self.svi
    }

    /// The 16-bit guest interrupt status field: SVI in bits 15:8, RVI in bits 7:0.
    #[inline]
    pub fn guest_interrupt_status(&self) -> u16 {
        u16::from(self.svi) << 8 | u16::from(self.rvi)
    }

    /// Writes RVI (the VMM after changing VIRR behind the processor's back).
    #[inline]
    pub fn set_rvi(&mut self, rvi: u8) {
        self.rvi = rvi;
    }

    /// Writes SVI.
    #[inline]
    pub fn set_svi(&mut self, svi: u8) {
        self.svi = svi;
    }

    /// SVI ← the highest VISR bit (0 if none), as KVM's `hwapic_isr_update` does after the VMM
    /// changed VISR (state restore, APICv re-enabled): EOI virtualization ends SVI's vector, so
    /// the two must agree.
    #[inline]
    pub fn update_svi(&mut self) {
        self.svi = self.page.highest(VISR).unwrap_or(0);
    }

    /// The TPR threshold (bits 3:0), used only without virtual-interrupt delivery.
    #[inline]
    pub fn tpr_threshold(&self) -> u8 {
        self.tpr_threshold
    }

    /// Writes the TPR threshold (bits above 3 are dropped).
    #[inline]
    pub fn set_tpr_threshold(&mut self, threshold: u8) {
        self.tpr_threshold = threshold & 0xF;
    }

    /// The EOI-exit bitmap: EOIs of these vectors cause EOI-induced VM exits.
    #[inline]
    pub fn eoi_exit_bitmap(&self) -> VectorSet {
        self.eoi_exit_bitmap
    }

    /// Writes the EOI-exit bitmap (see [`eoi_exit_bitmap`] for computing it).
    #[inline]
    pub fn set_eoi_exit_bitmap(&mut self, bitmap: VectorSet) {
        self.eoi_exit_bitmap = bitmap;
    }

    /// The posted-interrupt notification vector the processor compares arriving interrupts
    /// against.
    #[inline]
    pub fn notification_vector(&self) -> u8 {
        self.notification_vector
    }

    /// Writes the posted-interrupt notification vector.
    #[inline]
    pub fn set_notification_vector(&mut self, vector: u8) {
        self.notification_vector = vector;
    }

    /// Whether the processor has recognized a pending virtual interrupt (it is delivered at the
    /// next instruction boundary where the guest can take interrupts).
    #[inline]
    pub fn recognized(&self) -> bool {
        self.recognized
    }

    fn vid(&self) -> bool {
        self.controls.contains(Controls::VIRTUAL_INTERRUPT_DELIVERY)
    }

    // ----- VMM-side operations -----------------------------------------------------------

    /// Moves the posted interrupts into VIRR in software, as a VMM does before VM entry
    /// (KVM's `vmx_sync_pir_to_irr`): clear ON, take PIR, VIRR |= PIR, RVI ← max(RVI, highest
    /// new vector). Nothing is evaluated until the next VM entry. Returns whether any vector
    /// was taken.
    pub fn sync_posted_interrupts(&mut self, pid: &PostedInterruptDescriptor) -> bool {
        let Some(posted) = pid.harvest() else { return false };
        self.merge_into_virr(&posted);
        true
    }

    /// The VMM requests `vector` for the guest without a descriptor (the vCPU is not running):
    /// `VIRR[vector]` ← 1, RVI ← max(RVI, vector). Evaluated at the next VM entry.
    pub fn request(&mut self, vector: u8) {
        self.page.set_bit(VIRR, vector, true);
        self.rvi = self.rvi.max(vector);
    }

    fn merge_into_virr(&mut self, vectors: &VectorSet) {
        let virr = self.page.virr().union(vectors);
        self.page.set_vectors(VIRR, &virr);
        if let Some(top) = vectors.highest() {
            self.rvi = self.rvi.max(top);
        }
    }

    /// Whether a virtual interrupt could be delivered once the guest is interruptible: RVI's
    /// class above VPPR's (after the next PPR virtualization), or a posted vector above it. A
    /// VMM uses it to decide whether a halted vCPU must wake (checking every post, not only ON
    /// transitions, avoids bhyve's lost wake-up). It reads PIR with plain loads: a vCPU about to
    /// block stores "blocked", issues `fence(SeqCst)`, then asks (see [`pid`]'s protocol).
    pub fn has_deliverable(&self, pid: &PostedInterruptDescriptor) -> bool {
        let posted = pid.pir().highest().unwrap_or(0);
        let highest = self.rvi.max(posted);
        highest >> 4 > self.ppr_value() >> 4
    }

    /// The processor leaves VMX non-root operation: the recognition of a pending virtual
    /// interrupt is dropped (VM entry evaluates again).
    pub fn vm_exit(&mut self) {
        self.recognized = false;
    }

    /// VM entry with these settings: the VM-entry checks, then (with virtual-interrupt delivery)
    /// PPR virtualization and the evaluation of pending virtual interrupts (SDM "Checks on
    /// Guest State", "Virtual-Interrupt Delivery" at VM entry). The recognized interrupt is
    /// delivered by the next [`VirtualApic::deliver`].
    ///
    /// Without virtual-interrupt delivery, a TPR threshold above VTPR bits 7:4 fails the entry
    /// when APIC accesses are not virtualized, and otherwise causes a TPR-below-threshold VM
    /// exit right after it (returned; SDM "VM Exits Induced by the TPR Threshold").
    pub fn vm_entry(&mut self) -> Result<Option<VmExit>, ControlError> {
        self.controls.validate()?;
        let below = self.controls.contains(Controls::USE_TPR_SHADOW)
            && !self.vid()
            && self.tpr_threshold > self.vtpr_class();
        if below && !self.controls.contains(Controls::VIRTUALIZE_APIC_ACCESSES) {
            return Err(ControlError::TprThresholdAboveVtpr);
        }
        if self.vid() {
            self.virtualize_ppr();
            self.evaluate();
        } else {
            self.recognized = false;
        }
        Ok(below.then_some(VmExit::TprBelowThreshold))
    }

    /// Loads the page from `apic`'s registers at host TSC `now` ([`VirtualApicPage::load_lapic`])
    /// and sets RVI and SVI from the loaded VIRR and VISR, as a VMM does when a vCPU moves onto
    /// APIC virtualization (KVM's `apicv_post_state_restore`). Takes effect at the next VM entry.
    pub fn load_lapic(&mut self, apic: &LocalApic, now: u64) {
        self.page.load_lapic(apic, now);
        self.update_rvi();
        self.update_svi();
    }

    /// RVI ← the highest VIRR bit (0 if none), after the VMM changed VIRR.
    #[inline]
    pub fn update_rvi(&mut self) {
        self.rvi = self.page.highest(VIRR).unwrap_or(0);
    }

    // ----- the processor's operations (SDM 29.1–29.6) -------------------------------------------

    /// PPR virtualization: VPPR ← VTPR if VTPR's class is at least SVI's, else SVI's class.
    fn virtualize_ppr(&mut self) {
        let vppr = self.ppr_value();
        self.page.write(VPPR, u32::from(vppr));
    }

    fn ppr_value(&self) -> u8 {
        let vtpr = self.page.vtpr();
        if vtpr & 0xF0 >= self.svi & 0xF0 {
            vtpr
        } else {
            self.svi & 0xF0
        }
    }

    fn vtpr_class(&self) -> u8 {
        self.page.vtpr() >> 4
    }

    /// Evaluation of pending virtual interrupts: recognized iff interrupt-window exiting is off
    /// and RVI's class is above VPPR's.
    fn evaluate(&mut self) {
        self.recognized = !self.controls.contains(Controls::INTERRUPT_WINDOW_EXITING)
            && self.rvi >> 4 > self.page.vppr() >> 4;
    }

    /// An instruction boundary: if a virtual interrupt is recognized and the guest can take it
    /// (`interruptible`: RFLAGS.IF = 1 and no STI or MOV-SS blocking), virtual-interrupt
    /// delivery: `VISR[RVI]` ← 1, SVI ← RVI, VPPR ← its class, `VIRR[RVI]` ← 0, RVI ← highest
    /// remaining VIRR bit, recognition ends, and the guest takes the vector through its IDT
    /// (returned). Also what wakes a processor from HLT.
    pub fn deliver(&mut self, interruptible: bool) -> Option<u8> {
        if !self.recognized || !interruptible || !self.vid() {
            return None;
        }
        let vector = self.rvi;
        self.page.set_bit(VISR, vector, true);
        self.svi = vector;
        self.page.write(VPPR, u32::from(vector & 0xF0));
        self.page.set_bit(VIRR, vector, false);
        self.rvi = self.page.highest(VIRR).unwrap_or(0);
        self.recognized = false;
        Some(vector)
    }

    /// TPR virtualization, after VTPR was written: without virtual-interrupt delivery a TPR
    /// below the threshold exits; with it, PPR virtualization and evaluation.
    fn virtualize_tpr(&mut self) -> Option<VmExit> {
        if !self.vid() {
            return (self.vtpr_class() < self.tpr_threshold).then_some(VmExit::TprBelowThreshold);
        }
        self.virtualize_ppr();
        self.evaluate();
        None
    }

    /// EOI virtualization: SVI's vector leaves VISR, SVI ← the highest remaining VISR bit, PPR
    /// virtualization, then an EOI-induced exit if the vector's EOI-exit bitmap bit is set, else
    /// evaluation.
    fn virtualize_eoi(&mut self) -> Option<VmExit> {
        let vector = self.svi;
        self.page.set_bit(VISR, vector, false);
        self.svi = self.page.highest(VISR).unwrap_or(0);
        self.virtualize_ppr();
        if self.eoi_exit_bitmap.contains(vector) {
            self.recognized = false;
            return Some(VmExit::EoiInduced { vector });
        }
        self.evaluate();
        None
    }

    /// Self-IPI virtualization: `VIRR[vector]` ← 1, RVI ← max(RVI, vector), evaluation.
    fn virtualize_self_ipi(&mut self, vector: u8) {
        self.page.set_bit(VIRR, vector, true);
        self.rvi = self.rvi.max(vector);
        self.evaluate();
    }

    /// MOV to CR8 in the guest with "use TPR shadow": VTPR ← `CR8[3:0]` << 4, then TPR
    /// virtualization. Without the control MOV CR8 is not virtualized (it is the VMM's, by the
    /// CR8-load exiting control): this returns `None` and changes nothing, so check
    /// [`Controls::USE_TPR_SHADOW`] first.
    pub fn write_cr8(&mut self, cr8: u8) -> Option<VmExit> {
        if !self.controls.contains(Controls::USE_TPR_SHADOW) {
            return None;
        }
        self.page.write(VTPR, u32::from(cr8 & 0xF) << 4);
        let exit = self.virtualize_tpr();
        if exit.is_some() {
            self.recognized = false;
        }
        exit
    }

    /// MOV from CR8 with "use TPR shadow": VTPR bits 7:4.
    pub fn read_cr8(&self) -> u8 {
        self.page.vtpr() >> 4
    }

    fn exit_if<T>(&mut self, result: Result<T, VmExit>) -> Result<T, VmExit> {
        if result.is_err() {
            self.recognized = false;
        }
        result
    }

    /// A physical interrupt with `vector` arrives while the guest runs (posted-interrupt
    /// processing, SDM 29.6): anything but the notification vector is an external-interrupt
    /// exit; the notification vector clears ON, is ended at the physical APIC, moves PIR into
    /// VIRR with RVI ← max(RVI, highest posted vector), and evaluates. Without "process posted
    /// interrupts" every interrupt exits.
    pub fn process_posted_interrupt(
        &mut self,
        pid: &PostedInterruptDescriptor,
        vector: u8,
    ) -> Option<VmExit> {
        if !self.controls.contains(Controls::PROCESS_POSTED_INTERRUPTS) || vector != self.notification_vector
        {
            self.recognized = false;
            return Some(VmExit::ExternalInterrupt { vector });
        }
        if let Some(posted) = pid.harvest() {
            self.merge_into_virr(&posted);
        }
        self.evaluate();
        None
    }

    // ----- APIC-access page and x2APIC MSRs ------------------------------------------------------

    /// Whether an access of `len` bytes at `offset` lies within bytes 3:0 of a register slot.
    fn in_low_bytes(offset: u32, len: usize) -> bool {
        // offset & 0xF ≤ 15 and len ≤ 4 here: the sum cannot overflow.
        len != 0 && len <= 4 && ((offset & 0xF) as usize).wrapping_add(len) <= 4
    }

    /// A guest read of `len` bytes at `offset` in the APIC-access page ("virtualize APIC
    /// accesses"). Virtualized reads come from the virtual-APIC page: with APIC-register
    /// virtualization ID, version, TPR, EOI, LDR, DFR, SVR, ISR, TMR, IRR, ESR, LVT CMCI, ICR,
    /// the LVTs, the initial count and the divide configuration — not PPR, APR, RRD or the
    /// current count; without it only TPR (with a TPR shadow). Anything else, or an access
    /// outside a register's low four bytes, is an APIC-access exit.
    pub fn read_apic_access(&mut self, offset: u32, len: usize) -> Result<u32, VmExit> {
        let exit = VmExit::ApicAccess { offset, write: false };
        if !self.controls.contains(Controls::VIRTUALIZE_APIC_ACCESSES) || !Self::in_low_bytes(offset, len) {
            self.recognized = false;
            return Err(exit);
        }
        let register = offset & !0xF;
        let virtualized = if self.controls.contains(Controls::APIC_REGISTER_VIRTUALIZATION) {
            matches!(
                register,
                regs::ID
                    | regs::VERSION
                    | regs::TPR
                    | regs::EOI
                    | regs::LDR
                    | regs::DFR
                    | regs::SVR
                    | 0x100..=0x270
                    | regs::ESR
                    | regs::LVT_CMCI
                    | regs::ICR_LOW
                    | regs::ICR_HIGH
                    | regs::LVT_TIMER..=regs::LVT_ERROR
                    | regs::TIMER_INITIAL_COUNT
                    | regs::TIMER_DIVIDE_CONFIG
            )
        } else {
            register == regs::TPR && self.controls.contains(Controls::USE_TPR_SHADOW)
        };
        if !virtualized {
            self.recognized = false;
            return Err(exit);
        }
        let shift = (offset & 3) << 3;
        Ok(self.page.read(register) >> shift)
    }

    /// A guest write of `data` at `offset` in the APIC-access page. Virtualized writes land in
    /// the virtual-APIC page, then APIC-write emulation runs: TPR → bytes 3:1 cleared, TPR
    /// virtualization; EOI → EOI virtualization (with virtual-interrupt delivery); ICR low → a
    /// self-IPI is virtualized when the command is fixed, edge, self-shorthand, vector ≥ 16 and
    /// its reserved bits are 0; otherwise, with IPI virtualization, a fixed, edge, physical,
    /// no-shorthand command is posted to the APIC ID in VICR_HI bits 31:24 through `pids`
    /// (`Ok(Some(posted))`, see [`ipiv`]); anything else is an APIC-write exit; ICR high →
    /// bytes 2:0 cleared; any other register → an APIC-write exit. Which offsets are
    /// virtualized depends on the controls (TPR alone; TPR, EOI and ICR low with
    /// virtual-interrupt delivery; also ID, LDR, DFR, SVR, ESR, the LVTs, ICR high, the initial
    /// count and the divide configuration with register virtualization); others are APIC-access
    /// exits (the write did not happen).
    ///
    /// `Ok(None)`: virtualized, complete. `Err(exit)`: the VM exit the write caused.
    pub fn write_apic_access(
        &mut self,
        offset: u32,
        data: &[u8],
        pids: &(impl PidPointerTable + ?Sized),
    ) -> Result<Option<PostedIpi>, VmExit> {
        let exit = Err(VmExit::ApicAccess { offset, write: true });
        if !self.controls.contains(Controls::VIRTUALIZE_APIC_ACCESSES)
            || !Self::in_low_bytes(offset, data.len())
        {
            return self.exit_if(exit);
        }
        let register = offset & !0xF;
        let vid = self.vid();
        let virtualized = match register {
            regs::TPR => self.controls.contains(Controls::USE_TPR_SHADOW),
            regs::EOI | regs::ICR_LOW => {
                vid || self.controls.contains(Controls::APIC_REGISTER_VIRTUALIZATION)
            }
            regs::ID
            | regs::LDR
            | regs::DFR
            | regs::SVR
            | regs::ESR
            | regs::LVT_CMCI
            | regs::ICR_HIGH
            | regs::LVT_TIMER..=regs::LVT_ERROR
            | regs::TIMER_INITIAL_COUNT
            | regs::TIMER_DIVIDE_CONFIG => self.controls.contains(Controls::APIC_REGISTER_VIRTUALIZATION),
            _ => false,
        };
        if !virtualized {
            return self.exit_if(exit);
        }
        for (i, &byte) in data.iter().enumerate() {
            self.page.write_byte(register, (offset & 3).wrapping_add(i as u32), byte);
        }
        let result = match register {
            regs::TPR => {
                let vtpr = self.page.read(VTPR) & 0xFF;
                self.page.write(VTPR, vtpr);
                self.virtualize_tpr().map_or(Ok(None), Err)
            }
            regs::EOI if vid => self.virtualize_eoi().map_or(Ok(None), Err),
            regs::ICR_LOW => self.emulate_icr_low_write(vid, pids),
            regs::ICR_HIGH => {
                let high = self.page.read(VICR_HI) & 0xFF00_0000;
                self.page.write(VICR_HI, high);
                Ok(None)
            }
            _ => Err(VmExit::ApicWrite { offset: register }),
        };
        self.exit_if(result)
    }

    /// APIC-write emulation of ICR low (xAPIC): a self-IPI with virtual-interrupt delivery,
    /// else a unicast IPI with IPI virtualization, else an APIC-write exit.
    fn emulate_icr_low_write(
        &mut self,
        vid: bool,
        pids: &(impl PidPointerTable + ?Sized),
    ) -> Result<Option<PostedIpi>, VmExit> {
        let icr = self.page.read(VICR_LO);
        if vid && Self::is_self_ipi(icr) {
            self.virtualize_self_ipi(icr as u8);
            return Ok(None);
        }
        if self.controls.contains(Controls::IPI_VIRTUALIZATION) && Self::is_unicast(icr) {
            let destination = self.page.read(VICR_HI) >> 24;
            return self.virtualize_ipi(icr as u8, destination, pids).map(Some);
        }
        Err(VmExit::ApicWrite { offset: regs::ICR_LOW })
    }

    /// The ICR-low values self-IPI virtualization handles: reserved bits 31:20, 17:16, 13 and
    /// the delivery status 12 clear, shorthand self (01), edge, fixed, vector ≥ 16.
    fn is_self_ipi(icr: u32) -> bool {
        icr & 0xFFF3_3000 == 0 && (icr >> 18) & 3 == 1 && icr & 0x8700 == 0 && icr & 0xF0 != 0
    }

    /// The xAPIC ICR-low values IPI virtualization handles: reserved bits 31:20, 17:16, 13 and
    /// the delivery status 12 clear, no shorthand (00), edge (bit 15 clear), physical (bit 11
    /// clear), fixed (bits 10:8 000). The vector is checked by [`Self::virtualize_ipi`].
    fn is_unicast(icr: u32) -> bool {
        icr & 0xFFF3_3000 == 0 && Self::is_unicast_command(icr)
    }

    /// Shorthand 00, edge, physical, fixed: the command bits IPI virtualization requires.
    fn is_unicast_command(icr: u32) -> bool {
        icr & (0b11 << 18 | 1 << 15 | 1 << 11 | 0b111 << 8) == 0
    }

    /// IPI virtualization of `vector` to APIC ID `destination`: a vector below 16, a
    /// destination past the table's last index or an invalid entry is an APIC-write exit for
    /// the ICR; otherwise the processor posts `vector` into the destination's descriptor as
    /// the SDM's pseudo-code does ([`PostedInterruptDescriptor::post_as_hardware`]: PIR bit
    /// set, then ON set and the notification sent if ON and SN were clear). The sender's own
    /// virtual interrupts are not evaluated: a notification to itself arrives as a physical
    /// interrupt ([`VirtualApic::process_posted_interrupt`]).
    fn virtualize_ipi(
        &self,
        vector: u8,
        destination: u32,
        pids: &(impl PidPointerTable + ?Sized),
    ) -> Result<PostedIpi, VmExit> {
        let exit = VmExit::ApicWrite { offset: regs::ICR_LOW };
        if vector < 16 {
            return Err(exit);
        }
        let pid = pids.descriptor(destination).ok_or(exit)?;
        Ok(PostedIpi { destination, vector, outcome: pid.post_as_hardware(vector) })
    }

    /// A guest RDMSR of `msr` ("virtualize x2APIC mode"): with APIC-register virtualization any
    /// MSR 0x800–0x8FF reads the 64 bits at page offset `(msr & 0xFF) << 4` (the processor does
    /// not check that the register exists, so a VMM must keep intercepting the absent ones, the
    /// current count and the write-only ones); without it only the TPR MSR is virtualized.
    /// [`MsrRead::NotVirtualized`] is an MSR-read exit: call [`VirtualApic::vm_exit`].
    pub fn rdmsr(&self, msr: u32) -> MsrRead {
        if !self.controls.contains(Controls::VIRTUALIZE_X2APIC_MODE) || !(0x800..=0x8FF).contains(&msr) {
            return MsrRead::NotVirtualized;
        }
        if self.controls.contains(Controls::APIC_REGISTER_VIRTUALIZATION) || msr == MSR_TPR {
            return MsrRead::Value(self.page.read64((msr & 0xFF) << 4));
        }
        MsrRead::NotVirtualized
    }

    /// A guest WRMSR of `msr` ("virtualize x2APIC mode"): TPR (bits 63:8 must be 0, else #GP)
    /// writes VTPR and virtualizes TPR; with virtual-interrupt delivery EOI (value 0, else #GP)
    /// virtualizes EOI, and SELF IPI (bits 63:8 0, else #GP) virtualizes a self-IPI of vector ≥
    /// 16 or, for 0–15, ends in an APIC-write exit for offset 0x3F0. With IPI virtualization the
    /// ICR (0x830; bits 31:20, 17:16 and 13 must be 0, else #GP) is written as 64 bits at page
    /// offset 0x300, then a fixed, edge, physical, no-shorthand command is posted to the APIC ID
    /// in bits 63:32 through `pids` ([`MsrWrite::Posted`], see [`ipiv`]) and anything else is
    /// an APIC-write exit for offset 0x300. Every other MSR is the VMM's.
    pub fn wrmsr(&mut self, msr: u32, value: u64, pids: &(impl PidPointerTable + ?Sized)) -> MsrWrite {
        if !self.controls.contains(Controls::VIRTUALIZE_X2APIC_MODE) {
            self.recognized = false;
            return MsrWrite::NotVirtualized;
        }
        let vid = self.vid();
        let result = match msr {
            MSR_TPR => {
                if value >> 8 != 0 {
                    return MsrWrite::GeneralProtection;
                }
                self.page.write64(VTPR, value);
                self.virtualize_tpr().map_or(MsrWrite::Done, MsrWrite::Exit)
            }
            MSR_EOI if vid => {
                if value != 0 {
                    return MsrWrite::GeneralProtection;
                }
                self.virtualize_eoi().map_or(MsrWrite::Done, MsrWrite::Exit)
            }
            MSR_SELF_IPI if vid => {
                if value >> 8 != 0 {
                    return MsrWrite::GeneralProtection;
                }
                self.page.write64(regs::SELF_IPI, value);
                let vector = value as u8;
                if vector >> 4 != 0 {
                    self.virtualize_self_ipi(vector);
                    MsrWrite::Done
                } else {
                    MsrWrite::Exit(VmExit::ApicWrite { offset: regs::SELF_IPI })
                }
            }
            MSR_ICR if self.controls.contains(Controls::IPI_VIRTUALIZATION) => {
                if value & regs::ICR_X2APIC_RESERVED != 0 {
                    return MsrWrite::GeneralProtection;
                }
                self.page.write64(regs::ICR_LOW, value);
                let posted = Self::is_unicast_command(value as u32)
                    .then(|| self.virtualize_ipi(value as u8, (value >> 32) as u32, pids).ok())
                    .flatten();
                posted.map_or(MsrWrite::Exit(VmExit::ApicWrite { offset: regs::ICR_LOW }), MsrWrite::Posted)
            }
            _ => {
                self.recognized = false;
                return MsrWrite::NotVirtualized;
            }
        };
        if matches!(result, MsrWrite::Exit(_)) {
            self.recognized = false;
        }
        result
    }
}

/// The EOI-exit bitmap vCPU `vcpu` needs, as KVM computes it (`kvm_ioapic_scan_entry`): the
/// vectors of the IOAPIC's level-triggered routes that can reach it (a lowest-priority route
/// counts for every candidate), and of those that no longer do but whose vector is still
/// `in_flight` on it — requested or in service (VIRR ∪ VISR, and PIR after a sync; KVM's
/// `kvm_apic_pending_eoi`). Without the second part, a route the guest moves while its
/// interrupt is pending loses its EOI, and Remote IRR stays set for good. KVM computes it from
/// the routes, not from TMR: a vector must exit even before its first delivery. Recompute it
/// whenever a redirection entry or an APIC's addressing changes; edge vectors are left out,
/// since every EOI exit costs a VM exit.
pub fn eoi_exit_bitmap<A: Borrow<LocalApic>>(
    ioapic: &IoApic,
    bus: &ApicBus,
    apics: &[A],
    vcpu: usize,
    in_flight: &VectorSet,
) -> VectorSet {
    ioapic
        .level_routes()
        .filter(|(_, irq)| {
            in_flight.contains(irq.vector) || bus.destinations(apics, irq, None).contains(vcpu)
        })
        .map(|(_, irq)| irq.vector)
        .collect()
}

#[cfg(test)]
mod tests;
