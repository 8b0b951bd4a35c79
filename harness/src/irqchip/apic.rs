//! The vm-apic models behind the exits: MMIO of the LAPIC and IOAPIC pages, the outputs of
//! their register writes (EOI broadcasts, IPIs, IOAPIC messages), the APIC bus between the
//! LAPIC models, and the split irqchip's MSIs and level routes.
//!
//! Who delivers an IOAPIC message: with LAPIC models (`kvm-userspace`, software) the bus, as
//! KVM's `ioapic_service` does with `kvm_irq_delivery_to_apic`; a level message no LAPIC
//! accepted leaves Remote IRR clear (KVM profile, [`vm_apic::IoApic::not_accepted`]). Without them
//! (`kvm-split`) KVM_SIGNAL_MSI, whose return value says how many LAPICs accepted.

use vm_apic::bus::Delivery;
use vm_apic::lapic::{regs, Effects as LapicEffects, LocalApic, MsrError, PendingEvents};
use vm_apic::{Interrupt, MsiFormat};

use super::{Irqchip, LevelRoute, Msi, MsrAnswer, Now};
use crate::scenario::IOAPIC_PAGE;

/// The answer to the guest for a LAPIC MSR access.
pub(super) fn msr_answer(result: Result<u64, MsrError>) -> MsrAnswer {
    match result {
        Ok(value) => MsrAnswer::Value(value),
        Err(MsrError::GeneralProtection) => MsrAnswer::Fault,
        Err(MsrError::NotApicMsr) => MsrAnswer::NotMine,
    }
}

/// The LAPIC's `kvm_lapic_state` bytes at host TSC `now` (KVM_GET_LAPIC's layout, the ID in
/// the xAPIC format: the harness does not enable KVM_X2APIC_API_USE_32BIT_IDS).
pub fn lapic_bytes(lapic: &LocalApic, now: Now) -> Option<Vec<u8>> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        Some(
            lapic
                .to_kvm(now.tsc, vm_apic::lapic::kvm::KvmLapicFormat::default())
                .regs
                .iter()
                .map(|b| *b as u8)
                .collect(),
        )
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        let _ = (lapic, now);
        None
    }
}

/// The IOAPIC's `kvm_ioapic_state` bytes: vm-apic's own conversion
/// (`IoApicState::to_kvm_bytes`) where it exists, the harness's encoding of the same layout
/// elsewhere.
pub fn ioapic_bytes(state: &vm_apic::IoApicState) -> Vec<u8> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        state.to_kvm_bytes().to_vec()
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        crate::trace::ioapic_state_bytes(state).to_vec()
    }
}

/// The guest-physical page of a LAPIC's xAPIC registers (decoded, or answering all ones, at
/// the base IA32_APIC_BASE names, whatever its mode: KVM's LAPIC MMIO hole quirk).
fn lapic_page(lapic: &LocalApic) -> u64 {
    lapic.apic_base() & regs::APIC_BASE_ADDRESS_MASK
}

impl Irqchip {
    /// A guest MMIO load of `data.len()` bytes at `addr` on vCPU `vcpu`. Returns `false` if
    /// no model decodes the address.
    pub fn mmio_read(&mut self, vcpu: usize, addr: u64, data: &mut [u8], now: Now) -> bool {
        let page = addr & !0xFFF;
        if page == IOAPIC_PAGE {
            let _ = self.ioapic.mmio_read(addr & 0xFFF, data);
            return true;
        }
        let Some(lapic) = self.lapics.get_mut(vcpu).filter(|l| lapic_page(l) == page) else {
            return false;
        };
        let effects = lapic.mmio_read(addr & 0xFFF, data, now.tsc);
        self.lapic_effects(vcpu, effects, now);
        true
    }

    /// A guest MMIO store. Returns `false` if no model decodes the address (see
    /// [`Irqchip::mmio_read`]).
    pub fn mmio_write(&mut self, vcpu: usize, addr: u64, data: &[u8], now: Now) -> bool {
        let page = addr & !0xFFF;
        if page == IOAPIC_PAGE {
            let effects = self.ioapic.mmio_write(addr & 0xFFF, data);
            self.ioapic_effects(effects, now);
            return true;
        }
        let Some(lapic) = self.lapics.get_mut(vcpu).filter(|l| lapic_page(l) == page) else {
            return false;
        };
        let effects = lapic.mmio_write(addr & 0xFFF, data, now.tsc);
        self.lapic_effects(vcpu, effects, now);
        true
    }

    /// What a LAPIC register access of vCPU `vcpu` caused: an EOI of a level vector goes to
    /// the IOAPIC (the LAPIC left it out under EOI-broadcast suppression), an IPI to the bus.
    pub(super) fn lapic_effects(&mut self, vcpu: usize, effects: LapicEffects, now: Now) {
        if let Some(vector) = effects.eoi {
            let effects = self.ioapic.end_of_interrupt(vector);
            self.ioapic_effects(effects, now);
        }
        if let Some(ipi) = effects.ipi {
            let _ = self.deliver(&ipi, Some(vcpu));
        }
    }

    /// What an IOAPIC call caused: pins to deliver now, a storm recheck to schedule.
    pub(super) fn ioapic_effects(&mut self, effects: vm_apic::ioapic::Effects, now: Now) {
        for pin in effects.deliver {
            self.deliver_pin(pin, now);
        }
        if let Some(delay) = effects.recheck_after_ns {
            let at = now.ns.saturating_add(delay);
            self.storm_recheck_ns = Some(self.storm_recheck_ns.map_or(at, |t| t.min(at)));
        }
    }

    /// Sends IOAPIC pin `pin`'s message: over the bus to the LAPIC models, or out through
    /// [`Irqchip::take_msis`] when KVM has the LAPICs.
    pub(super) fn deliver_pin(&mut self, pin: u8, now: Now) {
        let _ = now;
        let Some(message) = self.ioapic.message(pin) else { return };
        if !self.config.owns_lapic {
            self.msis.push(Msi { pin, address: message.address, data: message.data });
            return;
        }
        // KVM's ioapic_service keeps Remote IRR unless kvm_irq_delivery_to_apic returned 0.
        let result = match message.decode(self.ioapic.config().msi_format) {
            Some(irq) => self.deliver(&irq, None).map_or(0, |d| d.kvm_result),
            None => 0,
        };
        if result == 0 {
            let _ = self.ioapic.not_accepted(pin);
        }
    }

    /// Puts `irq` on the APIC bus (`source`: the sending vCPU of an IPI) and wakes every vCPU
    /// that took it.
    fn deliver(&mut self, irq: &Interrupt, source: Option<usize>) -> Option<Delivery> {
        let delivery = self.bus.deliver(&mut self.lapics, irq, source).ok()?;
        for vcpu in delivery.accepted.iter() {
            self.wake(vcpu);
        }
        Some(delivery)
    }

    /// NMI, SMI, INIT, SIPI and ExtINT events vCPU `vcpu`'s LAPIC latched, cleared (nothing
    /// without LAPIC models).
    pub fn take_events(&mut self, vcpu: usize) -> PendingEvents {
        self.lapics.get_mut(vcpu).map(LocalApic::take_events).unwrap_or_default()
    }

    /// Whether vCPU `vcpu`'s LAPIC has latched an event (an NMI wakes a halted vCPU).
    pub fn has_events(&self, vcpu: usize) -> bool {
        self.lapics.get(vcpu).is_some_and(|lapic| lapic.events().any())
    }

    /// vCPU `vcpu` took an INIT: its LAPIC goes to its INIT state (an AP then waits for a
    /// start-up IPI).
    pub fn init(&mut self, vcpu: usize) {
        if let Some(lapic) = self.lapics.get_mut(vcpu) {
            lapic.init();
        }
    }

    /// vCPU `vcpu` took its start-up IPI.
    pub fn sipi_taken(&mut self, vcpu: usize) {
        if let Some(lapic) = self.lapics.get_mut(vcpu) {
            lapic.sipi_taken();
        }
    }

    /// `KVM_EXIT_IOAPIC_EOI` (kvm-split): KVM's LAPIC ended a vector of a level route. The
    /// IOAPIC clears Remote IRR of the entries with that vector and re-delivers a line still
    /// asserted.
    pub fn ioapic_eoi(&mut self, vector: u8, now: Now) {
        let effects = self.ioapic.end_of_interrupt(vector);
        self.ioapic_effects(effects, now);
    }

    /// IOAPIC messages for KVM_SIGNAL_MSI (kvm-split), in delivery order.
    pub fn take_msis(&mut self) -> Vec<Msi> {
        std::mem::take(&mut self.msis)
    }

    /// KVM_SIGNAL_MSI said `accepted` LAPICs took pin `pin`'s message: a level message the
    /// resolved destinations refused leaves Remote IRR clear (KVM profile). (When KVM found no
    /// destination at all it returns -1, and its own IOAPIC keeps Remote IRR: do not call this.)
    pub fn msi_result(&mut self, pin: u8, accepted: usize) {
        if accepted == 0 {
            let _ = self.ioapic.not_accepted(pin);
        }
    }

    /// The IOAPIC's level-triggered routes as MSIs on GSI = pin, if they changed since the last
    /// call (kvm-split: KVM_SET_GSI_ROUTING, from which KVM computes the vectors whose EOI it
    /// reports with KVM_EXIT_IOAPIC_EOI).
    pub fn take_route_update(&mut self) -> Option<Vec<LevelRoute>> {
        let format = MsiFormat::default();
        let routes: Vec<LevelRoute> = self
            .ioapic
            .level_routes()
            .map(|(pin, irq)| {
                let msi = irq.to_msi(format);
                (pin, Msi { pin, address: msi.address, data: msi.data })
            })
            .collect();
        if routes == self.routes {
            return None;
        }
        self.routes.clone_from(&routes);
        Some(routes)
    }
}
