//! The userspace interrupt controller: our device models behind the VMM's exits.
//!
//! [`Irqchip`] owns every model a backend without KVM's in-kernel irqchip needs and answers
//! the exits that reach them. The software backend drives it from a scripted CPU; the
//! `kvm-userspace` and `kvm-split` backends from KVM exits. Each method is one kind of exit,
//! so a new model is plugged in here without touching the vCPU loops:
//!
//! * **LAPIC (vm-apic), `kvm-userspace` only**: add `lapics: Vec<Lapic>` (one per vCPU) and
//!   answer [`Irqchip::mmio_read`]/[`Irqchip::mmio_write`] for [`crate::scenario::LAPIC_PAGE`],
//!   [`Irqchip::rdmsr`]/[`Irqchip::wrmsr`] for 0x800–0x8FF (x2APIC, exits with reason INVAL),
//!   0x1B (APIC_BASE; add it to [`USERSPACE_MSR_FILTER`]) and 0x6E0 (TSC deadline, already
//!   filtered); make [`Irqchip::pending_vector`]/[`Irqchip::acknowledge`] ask the LAPIC first
//!   and take the PIC's ExtINT only when LVT0 accepts it; sync TPR in [`Irqchip::sync_cr8`] /
//!   [`Irqchip::cr8`]; fold the LAPIC timers into [`Irqchip::next_deadline`] and
//!   [`Irqchip::advance`] (kicks out of KVM_RUN then come for free); return IPIs and INIT/SIPI
//!   to other vCPUs through [`Irqchip::take_wakeups`] (the vCPU loops kick those vCPUs; INIT/SIPI
//!   is `kvm::Machine::start_ap`).
//! * **IOAPIC (vm-apic), `kvm-userspace` and `kvm-split`**: add `ioapic: IoApic`; answer MMIO at
//!   [`crate::scenario::IOAPIC_PAGE`]; in [`Irqchip::set_irq`] drive GSI `irq` into it as well
//!   (on the PC the PIC and the IOAPIC share lines 0–15); route its messages to the LAPIC
//!   models (`kvm-userspace`) or return them from [`Irqchip::take_msis`] for `KVM_SIGNAL_MSI`
//!   (`kvm-split`, which also programs level routes so that [`Irqchip::ioapic_eoi`] is called on
//!   `KVM_EXIT_IOAPIC_EOI`).
//!
//! Time is an input ([`Now`]): host nanoseconds for the PIT, host TSC ticks for the TSC.

use vm_pic::Pic;
use vm_timer::pit::Pit;
use vm_timer::tsc::{
    ScalingFormat, Tsc, TscScaling, IA32_TIME_STAMP_COUNTER, IA32_TSC_ADJUST, IA32_TSC_DEADLINE,
};

use crate::scenario::Profile;
use crate::trace::{pic_bytes, Snapshot};

/// MSRs the `kvm-userspace` backend takes from KVM with an MSR filter (the guest's accesses
/// exit with reason FILTER and are answered by [`Irqchip::rdmsr`]/[`Irqchip::wrmsr`]).
pub const USERSPACE_MSR_FILTER: [u32; 3] = [IA32_TIME_STAMP_COUNTER, IA32_TSC_ADJUST, IA32_TSC_DEADLINE];

/// The time of an exit, in the two units the models take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Host monotonic nanoseconds (PIT).
    pub ns: u64,
    /// Host TSC ticks (TSC model).
    pub tsc: u64,
}

/// The answer to an MSR access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrAnswer {
    /// Read value (0 for a write).
    Value(u64),
    /// Raise #GP in the guest.
    Fault,
    /// Not an MSR these models own.
    NotMine,
}

/// Which models the backend's irqchip has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqchipConfig {
    /// PIC behaviour profile.
    pub profile: Profile,
    /// vCPUs (one TSC model each).
    pub vcpus: usize,
    /// The TSC MSRs are ours (kvm-userspace, software); with the in-kernel LAPIC they are KVM's.
    pub owns_tsc: bool,
}

/// PIC + PIT + per-vCPU TSC models, and the places the LAPIC and IOAPIC models plug in.
#[derive(Debug)]
pub struct Irqchip {
    /// The 8259A pair (ports 0x20/0x21, 0xA0/0xA1, ELCR 0x4D0/0x4D1). Its INT output is the
    /// BSP's ExtINT.
    pub pic: Pic,
    /// The 8254 (ports 0x40–0x43, 0x61); counter 0's OUT drives IRQ0.
    pub pit: Pit,
    /// Per vCPU: IA32_TSC, IA32_TSC_ADJUST, IA32_TSC_DEADLINE (when `owns_tsc`).
    pub tsc: Vec<Tsc>,
    config: IrqchipConfig,
    /// Port 0x61 bits the PIT does not own (2, 3: NMI enables; stored, read back).
    port61_other: u8,
}

impl Irqchip {
    /// Models in their power-on state.
    pub fn new(config: IrqchipConfig) -> Self {
        Irqchip {
            pic: Pic::new(config.profile.quirks()),
            pit: Pit::new(),
            tsc: vec![Tsc::new(TscScaling::identity(ScalingFormat::Vmx)); config.vcpus],
            config,
            port61_other: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> IrqchipConfig {
        self.config
    }

    /// Resets each TSC model to read `host_tsc` (offset 0), as the guest TSC does at VM start.
    pub fn start_tsc(&mut self, now: Now) {
        for tsc in &mut self.tsc {
            tsc.host_set_tsc(now.tsc, now.tsc);
        }
    }

    /// A guest `out`. Returns `false` if no model decodes the port.
    pub fn pio_write(&mut self, port: u16, data: &[u8], now: Now) -> bool {
        match port {
            0x20 | 0x21 | 0xA0 | 0xA1 | 0x4D0 | 0x4D1 => {
                let effects = self.pic.pio_write(port, data);
                // Level-triggered devices would resample their line on `effects.eoi`; the
                // harness's lines are driven by host operations, which hold their level.
                let _ = effects.eoi;
            }
            0x40..=0x43 => {
                let _ = self.pit.pio_write(port, data, now.ns);
                self.advance(now);
            }
            0x61 => {
                if let Some(&byte) = data.first() {
                    self.port61_other = byte & 0x0C;
                }
                let _ = self.pit.pio_write(port, data, now.ns);
            }
            _ => return false,
        }
        true
    }

    /// A guest `in`. Returns `false` if no model decodes the port.
    pub fn pio_read(&mut self, port: u16, data: &mut [u8], now: Now) -> bool {
        match port {
            0x20 | 0x21 | 0xA0 | 0xA1 | 0x4D0 | 0x4D1 => {
                let _ = self.pic.pio_read(port, data);
            }
            0x40..=0x43 => {
                let _ = self.pit.pio_read(port, data, now.ns);
            }
            0x61 => {
                let _ = self.pit.pio_read(port, data, now.ns);
                if let Some(byte) = data.first_mut() {
                    *byte |= self.port61_other;
                }
            }
            _ => return false,
        }
        true
    }

    /// A guest MMIO load of `data.len()` bytes at `addr` on vCPU `vcpu`. Returns `false` if
    /// no model decodes the address.
    ///
    /// Plug in: the LAPIC at [`crate::scenario::LAPIC_PAGE`] (kvm-userspace) and the IOAPIC at
    /// [`crate::scenario::IOAPIC_PAGE`].
    pub fn mmio_read(&mut self, vcpu: usize, addr: u64, data: &mut [u8], now: Now) -> bool {
        let _ = (vcpu, addr, data, now);
        false
    }

    /// A guest MMIO store. Returns `false` if no model decodes the address (see
    /// [`Irqchip::mmio_read`]).
    pub fn mmio_write(&mut self, vcpu: usize, addr: u64, data: &[u8], now: Now) -> bool {
        let _ = (vcpu, addr, data, now);
        false
    }

    /// A guest RDMSR on vCPU `vcpu`.
    ///
    /// Plug in: x2APIC 0x800–0x8FF and APIC_BASE 0x1B (LAPIC model).
    pub fn rdmsr(&mut self, vcpu: usize, msr: u32, now: Now) -> MsrAnswer {
        let Some(tsc) = self.tsc.get_mut(vcpu).filter(|_| self.config.owns_tsc) else {
            return MsrAnswer::NotMine;
        };
        match msr {
            IA32_TIME_STAMP_COUNTER => MsrAnswer::Value(tsc.read_tsc(now.tsc)),
            IA32_TSC_ADJUST => MsrAnswer::Value(tsc.read_tsc_adjust()),
            // Without a LAPIC model, the deadline register reads what was written (the
            // LAPIC's mode gating arrives with vm-apic).
            IA32_TSC_DEADLINE => MsrAnswer::Value(tsc.read_tsc_deadline()),
            _ => MsrAnswer::NotMine,
        }
    }

    /// A guest WRMSR on vCPU `vcpu` (see [`Irqchip::rdmsr`]).
    pub fn wrmsr(&mut self, vcpu: usize, msr: u32, value: u64, now: Now) -> MsrAnswer {
        let Some(tsc) = self.tsc.get_mut(vcpu).filter(|_| self.config.owns_tsc) else {
            return MsrAnswer::NotMine;
        };
        // A fired TSC deadline is a LAPIC timer interrupt: it is delivered once the LAPIC
        // model is plugged in; until then it only disarms the register.
        let _fired = match msr {
            IA32_TIME_STAMP_COUNTER => tsc.guest_write_tsc(value, now.tsc),
            IA32_TSC_ADJUST => tsc.guest_write_tsc_adjust(value, now.tsc),
            IA32_TSC_DEADLINE => tsc.guest_write_tsc_deadline(value, now.tsc),
            _ => return MsrAnswer::NotMine,
        };
        MsrAnswer::Value(0)
    }

    /// A host write of IA32_TSC on vCPU `vcpu` (restore): TSC_ADJUST unchanged.
    pub fn host_set_tsc(&mut self, vcpu: usize, value: u64, now: Now) -> bool {
        match self.tsc.get_mut(vcpu).filter(|_| self.config.owns_tsc) {
            Some(tsc) => {
                tsc.host_set_tsc(value, now.tsc);
                true
            }
            None => false,
        }
    }

    /// A device drives IRQ line `irq` (0–15).
    ///
    /// Plug in: drive IOAPIC pin `irq` as well.
    pub fn set_irq(&mut self, irq: u8, level: bool) -> bool {
        self.pic.set_irq(irq, level).is_ok()
    }

    /// Time reached `now`: PIT edges since the last call become one IRQ0 pulse (several edges
    /// would coalesce in IRR anyway; the guest-visible count is what the tests assert).
    ///
    /// Plug in: LAPIC timers (one-shot, periodic, TSC deadline).
    pub fn advance(&mut self, now: Now) {
        let edges = self.pit.advance(now.ns);
        if edges > 0 {
            let _ = self.pic.pulse_irq(0);
        }
        for tsc in &mut self.tsc {
            let _fired = tsc.advance(now.tsc);
        }
    }

    /// The earliest host instant (ns) at which a model needs [`Irqchip::advance`].
    ///
    /// Plug in: LAPIC timer deadlines (TSC deadline via `Tsc::next_deadline_ns`).
    pub fn next_deadline(&self, now: Now) -> Option<u64> {
        self.pit.next_deadline(now.ns)
    }

    /// The vector vCPU `vcpu` would take now if it can take an external interrupt.
    ///
    /// Plug in: the LAPIC's highest deliverable vector first; the PIC's ExtINT only when that
    /// vCPU's LVT0 accepts it (today: the PIC goes to the BSP).
    pub fn pending_vector(&self, vcpu: usize) -> Option<u8> {
        if vcpu == 0 {
            self.pic.pending_vector()
        } else {
            None
        }
    }

    /// vCPU `vcpu` takes the interrupt [`Irqchip::pending_vector`] announced (INTA).
    pub fn acknowledge(&mut self, vcpu: usize) -> u8 {
        let _ = vcpu;
        self.pic.acknowledge().vector
    }

    /// The guest's TPR changed (read from `kvm_run.cr8` after an exit).
    ///
    /// Plug in: the LAPIC's TPR (CR8 = TPR bits 7:4).
    pub fn sync_cr8(&mut self, vcpu: usize, cr8: u64) {
        let _ = (vcpu, cr8);
    }

    /// The TPR to hand to KVM in `kvm_run.cr8` before entry, when a LAPIC model owns it.
    pub fn cr8(&self, vcpu: usize) -> Option<u64> {
        let _ = vcpu;
        None
    }

    /// `KVM_EXIT_IOAPIC_EOI` (kvm-split): the in-kernel LAPIC ended a level-triggered vector.
    ///
    /// Plug in: the IOAPIC model's EOI (clears remote IRR, re-delivers a line still high).
    pub fn ioapic_eoi(&mut self, vector: u8) {
        let _ = vector;
    }

    /// vCPUs that must be kicked because a model made something deliverable to them (IPIs,
    /// INIT/SIPI). Empty until the LAPIC model is plugged in.
    pub fn take_wakeups(&mut self) -> Vec<usize> {
        Vec::new()
    }

    /// MSI messages for KVM_SIGNAL_MSI (kvm-split), as (address, data). Empty until the IOAPIC
    /// model is plugged in.
    pub fn take_msis(&mut self) -> Vec<(u64, u32)> {
        Vec::new()
    }

    /// The models' state in KVM's layouts.
    pub fn snapshot(&self, label: &str) -> Snapshot {
        Snapshot {
            label: label.to_string(),
            pic: Some(pic_bytes(&self.pic.state())),
            ioapic: None,
            lapic: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chip(profile: Profile) -> Irqchip {
        Irqchip::new(IrqchipConfig { profile, vcpus: 1, owns_tsc: true })
    }

    #[test]
    fn pit_edges_reach_the_pic_as_irq0() {
        let mut c = chip(Profile::Kvm);
        let t0 = Now { ns: 1_000_000, tsc: 0 };
        for (port, byte) in [(0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01), (0x21, 0x00)] {
            assert!(c.pio_write(port, &[byte], t0)); // ICW1-4 (base 0x30), unmask all
        }
        for byte in [0x34, 0x9c, 0x2e] {
            // counter 0 mode 2, count 11932: the control word raises OUT0 once
            assert!(c.pio_write(if byte == 0x34 { 0x43 } else { 0x40 }, &[byte], t0));
        }
        assert_eq!(c.pending_vector(0), Some(0x30));
        assert_eq!(c.acknowledge(0), 0x30);
        assert!(c.pio_write(0x20, &[0x20], t0)); // EOI
        let deadline = c.next_deadline(t0).unwrap();
        assert_eq!(deadline - t0.ns, 10_000_151);
        c.advance(Now { ns: deadline, tsc: 0 });
        assert_eq!(c.pending_vector(0), Some(0x30));
    }

    #[test]
    fn tsc_msrs_couple_as_the_sdm_says() {
        let mut c = chip(Profile::Kvm);
        let at = |tsc| Now { ns: 0, tsc };
        assert!(c.host_set_tsc(0, 1000, at(500)));
        assert_eq!(c.rdmsr(0, 0x10, at(600)), MsrAnswer::Value(1100));
        assert_eq!(c.wrmsr(0, 0x3B, 50, at(600)), MsrAnswer::Value(0)); // TSC moves by 50
        assert_eq!(c.rdmsr(0, 0x10, at(600)), MsrAnswer::Value(1150));
        assert_eq!(c.wrmsr(0, 0x10, 2150, at(600)), MsrAnswer::Value(0)); // ADJUST moves by 1000
        assert_eq!(c.rdmsr(0, 0x3B, at(700)), MsrAnswer::Value(1050));
        assert_eq!(c.rdmsr(0, 0x1234, at(700)), MsrAnswer::NotMine);
    }

    #[test]
    fn without_tsc_ownership_the_msrs_are_not_ours() {
        let mut c = Irqchip::new(IrqchipConfig { profile: Profile::Kvm, vcpus: 1, owns_tsc: false });
        assert_eq!(c.rdmsr(0, 0x10, Now { ns: 0, tsc: 0 }), MsrAnswer::NotMine);
    }
}
