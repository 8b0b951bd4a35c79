//! The guest side of `software-apicv`: what each of the scripted CPU's interrupt-related
//! operations does on an APICv processor (virtualized, or an exit the VMM handles with the
//! models), see the [parent module](super).

use vm_apic::apicv::{Controls, MsrRead, MsrWrite, PostedIpi, VmExit};
use vm_apic::lapic::regs;
use vm_apic::lapic::PendingEvents;

use super::super::software::{ExitReason, InterruptPath};
use super::vmm::{Apicv, PidTable, Run};
use crate::irqchip::{Irqchip, MsrAnswer, Now};
use crate::trace::Snapshot;

/// The x2APIC MSRs whose reads KVM passes through with APIC-register virtualization
/// (`kvm_lapic_readable_reg_mask` less TMCCT; LVT CMCI is left to the model, which knows
/// whether it has one).
fn x2apic_read_passes(msr: u32) -> bool {
    let offset = msr.wrapping_sub(regs::X2APIC_MSR_BASE) << 4;
    (regs::X2APIC_MSR_BASE..=0x8FF).contains(&msr)
        && matches!(
            offset,
            regs::ID
                | regs::VERSION
                | regs::TPR
                | regs::PPR
                | regs::LDR
                | regs::SVR
                | 0x100..=0x270
                | regs::ESR
                | regs::ICR_LOW
                | regs::LVT_TIMER..=regs::LVT_ERROR
                | regs::TIMER_INITIAL_COUNT
                | regs::TIMER_DIVIDE_CONFIG
        )
}

/// The x2APIC MSRs whose writes KVM passes through: TPR, EOI, SELF IPI, and the ICR with IPI
/// virtualization.
fn x2apic_write_passes(msr: u32, controls: Controls) -> bool {
    let icr = controls.contains(Controls::IPI_VIRTUALIZATION).then_some(regs::ICR_LOW);
    [regs::TPR, regs::EOI, regs::SELF_IPI]
        .into_iter()
        .chain(icr)
        .any(|offset| msr == regs::X2APIC_MSR_BASE | offset >> 4)
}

impl InterruptPath for Apicv {
    fn chip(&self) -> &Irqchip {
        &self.chip
    }

    fn vmm<R>(
        &mut self,
        exit: Option<(usize, ExitReason)>,
        now: Now,
        f: impl FnOnce(&mut Irqchip) -> R,
    ) -> R {
        let exiting = exit.filter(|(vcpu, _)| self.vcpus[*vcpu].run == Run::InGuest);
        if let Some((vcpu, reason)) = exiting {
            self.exit(vcpu, reason);
        }
        self.sync_in();
        let result = f(&mut self.chip);
        self.sync_out(now);
        if let Some((vcpu, _)) = exiting {
            self.enter(vcpu);
        }
        result
    }

    fn mmio_read(&mut self, vcpu: usize, addr: u64, data: &mut [u8], now: Now) -> bool {
        if self.apic_access_page(vcpu) != Some(addr & !0xFFF) {
            return self.vmm(Some((vcpu, ExitReason::Mmio)), now, |c| c.mmio_read(vcpu, addr, data, now));
        }
        let offset = (addr & 0xFFF) as u32;
        match self.vcpus[vcpu].vapic.read_apic_access(offset, data.len()) {
            Ok(value) => {
                for (byte, value) in data.iter_mut().zip(value.to_le_bytes()) {
                    *byte = value;
                }
                self.virtualized(vcpu);
                true
            }
            Err(_) => {
                self.vmm(Some((vcpu, ExitReason::ApicAccess)), now, |c| c.mmio_read(vcpu, addr, data, now))
            }
        }
    }

    fn mmio_write(&mut self, vcpu: usize, addr: u64, data: &[u8], now: Now) -> bool {
        let Some(page) = self.apic_access_page(vcpu).filter(|page| *page == addr & !0xFFF) else {
            return self.vmm(Some((vcpu, ExitReason::Mmio)), now, |c| c.mmio_write(vcpu, addr, data, now));
        };
        let offset = (addr & 0xFFF) as u32;
        let table = PidTable { pids: &self.pids, lapics: &self.chip.lapics };
        match self.vcpus[vcpu].vapic.write_apic_access(offset, data, &table) {
            Ok(None) => self.virtualized(vcpu),
            Ok(Some(posted)) => self.ipi_virtualized(vcpu, posted),
            Err(VmExit::EoiInduced { vector }) => self.eoi_induced(vcpu, vector, now),
            Err(VmExit::ApicWrite { offset }) => {
                // Trap-like: the value is in the page; the model's register takes it.
                let value = self.page(vcpu).read(offset).to_le_bytes();
                let addr = page + u64::from(offset);
                return self.vmm(Some((vcpu, ExitReason::ApicWrite)), now, |c| {
                    c.mmio_write(vcpu, addr, &value, now)
                });
            }
            // Fault-like: the write did not happen; the model performs it.
            Err(VmExit::ApicAccess { .. }) => {
                return self
                    .vmm(Some((vcpu, ExitReason::ApicAccess)), now, |c| c.mmio_write(vcpu, addr, data, now))
            }
            Err(other) => self.fail(format!("vCPU {vcpu}: an APIC write caused {other:?}")),
        }
        true
    }

    fn rdmsr(&mut self, vcpu: usize, msr: u32, now: Now) -> MsrAnswer {
        let vapic = &self.vcpus[vcpu].vapic;
        if vapic.controls().contains(Controls::VIRTUALIZE_X2APIC_MODE) && x2apic_read_passes(msr) {
            if let MsrRead::Value(value) = vapic.rdmsr(msr) {
                self.virtualized(vcpu);
                return MsrAnswer::Value(value);
            }
        }
        self.vmm(Some((vcpu, ExitReason::Msr)), now, |c| c.rdmsr(vcpu, msr, now))
    }

    fn wrmsr(&mut self, vcpu: usize, msr: u32, value: u64, now: Now) -> MsrAnswer {
        let controls = self.vcpus[vcpu].vapic.controls();
        if controls.contains(Controls::VIRTUALIZE_X2APIC_MODE) && x2apic_write_passes(msr, controls) {
            let table = PidTable { pids: &self.pids, lapics: &self.chip.lapics };
            match self.vcpus[vcpu].vapic.wrmsr(msr, value, &table) {
                MsrWrite::Done => {
                    self.virtualized(vcpu);
                    return MsrAnswer::Value(0);
                }
                MsrWrite::Posted(posted) => {
                    self.ipi_virtualized(vcpu, posted);
                    return MsrAnswer::Value(0);
                }
                MsrWrite::GeneralProtection => return MsrAnswer::Fault,
                MsrWrite::Exit(VmExit::EoiInduced { vector }) => {
                    self.eoi_induced(vcpu, vector, now);
                    return MsrAnswer::Value(0);
                }
                MsrWrite::Exit(VmExit::ApicWrite { offset }) => {
                    // A SELF IPI of vector 0-15, or an ICR command IPI virtualization does not
                    // handle: trap-like, the model sends it (the write itself has completed,
                    // whatever the model answers).
                    let written = self.page(vcpu).read64(offset);
                    let msr = regs::X2APIC_MSR_BASE | offset >> 4;
                    self.vmm(Some((vcpu, ExitReason::ApicWrite)), now, |c| c.wrmsr(vcpu, msr, written, now));
                    return MsrAnswer::Value(0);
                }
                MsrWrite::Exit(other) => {
                    self.fail(format!("vCPU {vcpu}: WRMSR {msr:#x} caused {other:?}"));
                    return MsrAnswer::Value(0);
                }
                MsrWrite::NotVirtualized => {}
            }
        }
        self.vmm(Some((vcpu, ExitReason::Msr)), now, |c| c.wrmsr(vcpu, msr, value, now))
    }

    fn write_cr8(&mut self, vcpu: usize, cr8: u64) -> bool {
        // With virtual-interrupt delivery, TPR virtualization never exits.
        if let Some(exit) = self.vcpus[vcpu].vapic.write_cr8((cr8 & 0xF) as u8) {
            self.fail(format!("vCPU {vcpu}: MOV to CR8 caused {exit:?}"));
        }
        self.virtualized(vcpu);
        true
    }

    fn read_cr8(&self, vcpu: usize) -> Option<u64> {
        self.vcpus.get(vcpu).map(|v| u64::from(v.vapic.read_cr8()))
    }

    fn snapshot(&mut self, vcpu: usize, label: &str, now: Now) -> Snapshot {
        // The doorbell's exit; KVM_GET_LAPIC syncs PIR into IRR first (vmx_sync_pir_to_irr).
        let in_guest = self.vcpus[vcpu].run == Run::InGuest;
        if in_guest {
            self.exit(vcpu, ExitReason::Io);
        }
        let v = &mut self.vcpus[vcpu];
        if v.vapic.sync_posted_interrupts(&self.pids[vcpu]) {
            v.counters.pir_syncs += 1;
        }
        let snapshot = self.vmm(None, now, |c| c.snapshot(vcpu, label, now));
        if in_guest {
            self.enter(vcpu);
        }
        snapshot
    }

    fn take_events(&mut self, vcpu: usize) -> PendingEvents {
        // Events bypass IRR: nothing of the page changes.
        self.chip.take_events(vcpu)
    }

    fn init(&mut self, vcpu: usize, now: Now) {
        self.vmm(None, now, |c| c.init(vcpu));
        // INIT cleared the LAPIC's IRR; vectors still in PIR go with it.
        let _ = self.pids[vcpu].harvest();
    }

    fn halt(&mut self, vcpu: usize) -> bool {
        if self.vcpus[vcpu].run == Run::InGuest {
            if self.chip.extint_vector(vcpu).is_some() || self.vcpus[vcpu].vapic.recognized() {
                return true;
            }
            self.exit(vcpu, ExitReason::Hlt);
            self.vcpus[vcpu].run = Run::Halted;
        }
        // Blocked in the VMM: sync PIR before deciding to sleep again (ON stays set until a
        // harvest, so a vCPU that only peeked at it would miss every later notification).
        let (v, pid) = (&mut self.vcpus[vcpu], &self.pids[vcpu]);
        if v.vapic.sync_posted_interrupts(pid) {
            v.counters.pir_syncs += 1;
        }
        if self.chip.extint_vector(vcpu).is_some() || v.vapic.has_deliverable(pid) {
            self.enter(vcpu);
            return true;
        }
        false
    }

    fn take(&mut self, vcpu: usize) -> Option<u8> {
        if self.chip.extint_vector(vcpu).is_some() {
            self.vcpus[vcpu].counters.injections += 1;
            return Some(self.chip.pic.acknowledge().vector);
        }
        let v = &mut self.vcpus[vcpu];
        let vector = v.vapic.deliver(true)?;
        v.counters.deliveries += 1;
        Some(vector)
    }

    fn start(&mut self, vcpu: usize) {
        self.enter(vcpu);
    }

    fn resume(&mut self, vcpu: usize) {
        if self.vcpus[vcpu].run != Run::InGuest {
            self.enter(vcpu);
        }
    }

    fn stop(&mut self, vcpu: usize) {
        // The probe ends in HLT.
        if self.vcpus[vcpu].run == Run::InGuest {
            self.exit(vcpu, ExitReason::Hlt);
        }
    }

    fn failure(&mut self) -> Option<String> {
        self.failure.take()
    }
}

impl Apicv {
    /// vCPU `vcpu`'s ICR write was completed by IPI virtualization (the table's entry `n` is
    /// vCPU `n`): no exit on the sender; the destination processes the notification or is
    /// woken.
    fn ipi_virtualized(&mut self, vcpu: usize, posted: PostedIpi) {
        self.virtualized(vcpu);
        self.vcpus[vcpu].counters.ipis_virtualized += 1;
        self.posted(posted.destination as usize, posted.outcome);
    }
}
