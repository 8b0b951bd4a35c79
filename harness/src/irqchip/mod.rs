//! The userspace interrupt controller: our device models behind the VMM's exits.
//!
//! [`Irqchip`] owns every model a backend without KVM's in-kernel irqchip needs and answers
//! the exits that reach them. The software backend drives it from a scripted CPU; the
//! `kvm-userspace` and `kvm-split` backends from KVM exits. Each method is one kind of exit,
//! so the vCPU loops do not know which model answers:
//!
//! * PIC (vm-pic): ports 0x20/0x21, 0xA0/0xA1, ELCR 0x4D0/0x4D1; its INT output is ExtINT
//!   through LINT0 of every vCPU whose LAPIC accepts PIC interrupts (without a LAPIC model:
//!   the BSP).
//! * PIT (vm-timer): ports 0x40–0x43 and 0x61; OUT0 drives IRQ0 of the PIC and IOAPIC pin 0
//!   (KVM's default GSI routing is 1:1: GSI n is PIC IRQ n and IOAPIC pin n, no IRQ0→pin 2
//!   override).
//! * TSC (vm-timer): IA32_TSC and IA32_TSC_ADJUST per vCPU (`kvm-userspace`, software).
//! * LAPIC (vm-apic), one per vCPU (`kvm-userspace`, software): the xAPIC page at its
//!   IA32_APIC_BASE, x2APIC MSRs 0x800–0xBFF, IA32_APIC_BASE, IA32_TSC_DEADLINE, CR8 (through
//!   [`Irqchip::sync_cr8`]/[`Irqchip::cr8`]), its timer, and the APIC bus between them
//!   ([`apic`]).
//! * IOAPIC (vm-apic, every backend but `kvm-kernel`): MMIO at
//!   [`crate::scenario::IOAPIC_PAGE`]; its messages go to the LAPIC models over the APIC bus, or,
//!   without LAPIC models (`kvm-split`), out through [`Irqchip::take_msis`] for
//!   KVM_SIGNAL_MSI with the level routes of [`Irqchip::take_route_update`] so that KVM reports
//!   level EOIs ([`Irqchip::ioapic_eoi`]).
//!
//! Time is an input ([`Now`]): host nanoseconds for the PIT and the IOAPIC's storm throttle,
//! host TSC ticks for the TSC and the LAPIC (whose timer counts a 1 GHz bus, as KVM's does).

pub mod apic;
#[cfg(test)]
mod tests;

use vm_apic::bus::ApicBus;
use vm_apic::lapic::{BusClock, LapicConfig, LocalApic};
use vm_apic::IoApic;
use vm_pic::Pic;
use vm_timer::pit::Pit;
use vm_timer::tsc::{
    ScalingFormat, Tsc, TscScaling, IA32_TIME_STAMP_COUNTER, IA32_TSC_ADJUST, IA32_TSC_DEADLINE,
};

use crate::scenario::Profile;
use crate::trace::{pic_bytes, Snapshot};

/// IA32_APIC_BASE.
pub const IA32_APIC_BASE: u32 = 0x1B;

/// MSRs the `kvm-userspace` backend takes from KVM with an MSR filter (the guest's accesses
/// exit with reason FILTER and are answered by [`Irqchip::rdmsr`]/[`Irqchip::wrmsr`]). The
/// x2APIC MSRs need no filter: without an in-kernel LAPIC they exit with reason INVAL.
pub const USERSPACE_MSR_FILTER: [u32; 4] =
    [IA32_TIME_STAMP_COUNTER, IA32_TSC_ADJUST, IA32_TSC_DEADLINE, IA32_APIC_BASE];

/// The APIC bus frequency KVM's LAPIC timer counts (one tick per ns).
pub const APIC_BUS_HZ: u64 = 1_000_000_000;

/// The IOAPIC source that the PIT drives pin 0 with (KVM's in-kernel PIT has its own IRQ
/// source too, so a host line on GSI 0 and the PIT do not mask each other's edges).
const PIT_SOURCE: u8 = 1;

/// The time of an exit, in the two units the models take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Host monotonic nanoseconds (PIT, IOAPIC storm throttle).
    pub ns: u64,
    /// Host TSC ticks (TSC and LAPIC models).
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
    /// Behaviour profile of every model.
    pub profile: Profile,
    /// vCPUs (one TSC model and, with `owns_lapic`, one LAPIC model each).
    pub vcpus: usize,
    /// The TSC MSRs are ours (kvm-userspace, software); with the in-kernel LAPIC they are KVM's.
    pub owns_tsc: bool,
    /// The local APICs are ours (kvm-userspace, software); `kvm-split` uses KVM's.
    pub owns_lapic: bool,
    /// The rate of [`Now::tsc`] in Hz (the host TSC), against which the LAPIC timer counts.
    pub tsc_hz: u64,
}

/// An IOAPIC message for KVM_SIGNAL_MSI (kvm-split).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msi {
    /// The IOAPIC pin that sent it (to report a level message nobody accepted).
    pub pin: u8,
    /// MSI address.
    pub address: u64,
    /// MSI data.
    pub data: u32,
}

/// A level-triggered IOAPIC route for the split irqchip: GSI `pin` → this MSI.
pub type LevelRoute = (u8, Msi);

/// What the firmware leaves in the BSP's LAPIC for the OS (MP specification §3.6.2.2, virtual
/// wire mode): LVT LINT0 = ExtINT, unmasked (0x700), so that the 8259A's interrupts reach the
/// BSP before the OS programs its APIC. KVM's LAPIC starts that way itself
/// (`KVM_X86_QUIRK_LINT0_REENABLED`); the SDM's LAPIC masks every LVT entry at RESET, and the
/// harness plays the firmware (the probe starts in long mode, past any BIOS).
fn virtual_wire(lapic: &mut LocalApic) {
    use vm_apic::lapic::regs::LvtEntry;
    let mut state = lapic.state();
    if state.lvt(LvtEntry::Lint0) != 0x700 {
        state.set_lvt(LvtEntry::Lint0, 0x700);
        // A state the model itself produced, with an LVT value it accepts: cannot fail.
        let _ = lapic.restore(&state);
    }
}

/// PIC + PIT + IOAPIC + per-vCPU TSC and LAPIC models.
#[derive(Clone, Debug)]
pub struct Irqchip {
    /// The 8259A pair.
    pub pic: Pic,
    /// The 8254 (ports 0x40–0x43, 0x61); counter 0's OUT drives IRQ0.
    pub pit: Pit,
    /// Per vCPU: IA32_TSC, IA32_TSC_ADJUST (when `owns_tsc`).
    pub tsc: Vec<Tsc>,
    /// Per vCPU, index = vCPU = APIC ID (empty without `owns_lapic`).
    pub lapics: Vec<LocalApic>,
    /// The I/O APIC.
    pub ioapic: IoApic,
    bus: ApicBus,
    config: IrqchipConfig,
    /// Port 0x61 bits the PIT does not own (2, 3: NMI enables; stored, read back).
    port61_other: u8,
    /// vCPUs a model made something deliverable to since the last [`Irqchip::take_wakeups`].
    wakeups: Vec<usize>,
    /// Messages for KVM_SIGNAL_MSI (kvm-split).
    msis: Vec<Msi>,
    /// When the IOAPIC's storm throttle wants [`IoApic::deliver_deferred`] (host ns).
    storm_recheck_ns: Option<u64>,
    /// The level routes last handed to KVM (kvm-split).
    routes: Vec<LevelRoute>,
}

impl Irqchip {
    /// Models in their power-on state.
    pub fn new(config: IrqchipConfig) -> Self {
        let bus_clock = BusClock::new(APIC_BUS_HZ, config.tsc_hz).unwrap_or_default();
        let lapics = if config.owns_lapic {
            (0..config.vcpus)
                .map(|index| {
                    let mut lapic = LocalApic::new(LapicConfig {
                        id: index as u32,
                        bsp: index == 0,
                        quirks: config.profile.lapic_quirks(),
                        bus: bus_clock,
                        directed_eoi: config.profile.directed_eoi(),
                        smm: config.profile.smm(),
                        ..LapicConfig::default()
                    });
                    if index == 0 {
                        virtual_wire(&mut lapic);
                    }
                    lapic
                })
                .collect()
        } else {
            Vec::new()
        };
        Irqchip {
            pic: Pic::new(config.profile.quirks()),
            pit: Pit::new(),
            tsc: vec![Tsc::new(TscScaling::identity(ScalingFormat::Vmx)); config.vcpus],
            lapics,
            ioapic: IoApic::new(config.profile.ioapic_config()),
            bus: ApicBus::new(config.profile.bus_quirks()),
            config,
            port61_other: 0,
            wakeups: Vec::new(),
            msis: Vec::new(),
            storm_recheck_ns: None,
            routes: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> IrqchipConfig {
        self.config
    }

    /// Resets each TSC model to read `host_tsc` (offset 0), as the guest TSC does at VM start.
    pub fn start_tsc(&mut self, now: Now) {
        for vcpu in 0..self.tsc.len() {
            self.tsc[vcpu].host_set_tsc(now.tsc, now.tsc);
            self.sync_guest_tsc(vcpu);
        }
    }

    /// Hands vCPU `vcpu`'s TSC mapping to its LAPIC (TSC-deadline mode compares the TSC the
    /// guest reads through IA32_TSC; the raw `rdtsc` instruction is the host's on our hosts).
    fn sync_guest_tsc(&mut self, vcpu: usize) {
        if let (Some(tsc), Some(lapic)) = (self.tsc.get(vcpu), self.lapics.get_mut(vcpu)) {
            lapic.set_guest_tsc(tsc.guest_tsc());
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

    /// A guest RDMSR on vCPU `vcpu`: IA32_TSC and TSC_ADJUST (TSC model), IA32_APIC_BASE,
    /// IA32_TSC_DEADLINE and the x2APIC MSRs (LAPIC model).
    pub fn rdmsr(&mut self, vcpu: usize, msr: u32, now: Now) -> MsrAnswer {
        match msr {
            IA32_TIME_STAMP_COUNTER | IA32_TSC_ADJUST => {
                let Some(tsc) = self.tsc.get(vcpu).filter(|_| self.config.owns_tsc) else {
                    return MsrAnswer::NotMine;
                };
                MsrAnswer::Value(if msr == IA32_TSC_ADJUST {
                    tsc.read_tsc_adjust()
                } else {
                    tsc.read_tsc(now.tsc)
                })
            }
            _ => match self.lapics.get_mut(vcpu) {
                Some(lapic) => apic::msr_answer(lapic.rdmsr(msr, now.tsc)),
                None => MsrAnswer::NotMine,
            },
        }
    }

    /// A guest WRMSR on vCPU `vcpu` (see [`Irqchip::rdmsr`]).
    pub fn wrmsr(&mut self, vcpu: usize, msr: u32, value: u64, now: Now) -> MsrAnswer {
        match msr {
            IA32_TIME_STAMP_COUNTER | IA32_TSC_ADJUST => {
                let Some(tsc) = self.tsc.get_mut(vcpu).filter(|_| self.config.owns_tsc) else {
                    return MsrAnswer::NotMine;
                };
                // The TSC model's own deadline is unused: the LAPIC owns IA32_TSC_DEADLINE.
                let _ = if msr == IA32_TSC_ADJUST {
                    tsc.guest_write_tsc_adjust(value, now.tsc)
                } else {
                    tsc.guest_write_tsc(value, now.tsc)
                };
                self.sync_guest_tsc(vcpu);
                MsrAnswer::Value(0)
            }
            _ => {
                let Some(lapic) = self.lapics.get_mut(vcpu) else { return MsrAnswer::NotMine };
                match lapic.wrmsr(msr, value, now.tsc) {
                    Ok(effects) => {
                        self.lapic_effects(vcpu, effects, now);
                        MsrAnswer::Value(0)
                    }
                    Err(e) => apic::msr_answer(Err(e)),
                }
            }
        }
    }

    /// A host write of IA32_TSC on vCPU `vcpu` (restore): TSC_ADJUST unchanged.
    pub fn host_set_tsc(&mut self, vcpu: usize, value: u64, now: Now) -> bool {
        match self.tsc.get_mut(vcpu).filter(|_| self.config.owns_tsc) {
            Some(tsc) => {
                tsc.host_set_tsc(value, now.tsc);
                self.sync_guest_tsc(vcpu);
                true
            }
            None => false,
        }
    }

    /// A device drives line `irq`: PIC IRQ `irq` (0–15) and IOAPIC pin `irq` (0–23), as KVM's
    /// default routing does for GSI `irq`. Returns `false` if no model has the line.
    pub fn set_irq(&mut self, irq: u8, level: bool, now: Now) -> bool {
        let pic = irq < 16 && self.pic.set_irq(irq, level).is_ok();
        let ioapic = self.ioapic.set_irq(irq, level);
        if let Ok(vm_apic::ioapic::LineResult { message: Some(_), .. }) = ioapic {
            self.deliver_pin(irq, now);
        }
        pic || ioapic.is_ok()
    }

    /// Time reached `now`: PIT edges since the last call become one IRQ0 pulse (several edges
    /// would coalesce in IRR anyway; the guest-visible count is what the tests assert), LAPIC
    /// timers fire, and the IOAPIC's storm throttle re-delivers what it held back.
    pub fn advance(&mut self, now: Now) {
        let edges = self.pit.advance(now.ns);
        if edges > 0 {
            let _ = self.pic.pulse_irq(0);
            let assert = self.ioapic.set_irq_source(0, PIT_SOURCE, true);
            let _ = self.ioapic.set_irq_source(0, PIT_SOURCE, false);
            if let Ok(vm_apic::ioapic::LineResult { message: Some(_), .. }) = assert {
                self.deliver_pin(0, now);
            }
        }
        for vcpu in 0..self.lapics.len() {
            if self.lapics[vcpu].advance(now.tsc) {
                self.wake(vcpu);
            }
        }
        if self.storm_recheck_ns.is_some_and(|at| now.ns >= at) {
            self.storm_recheck_ns = None;
            let effects = self.ioapic.deliver_deferred();
            self.ioapic_effects(effects, now);
        }
    }

    /// The earliest host instant (ns) at which vCPU `vcpu` may need [`Irqchip::advance`]: the
    /// PIT's next edge, its LAPIC timer, the IOAPIC's storm recheck.
    pub fn next_deadline(&self, vcpu: usize, now: Now) -> Option<u64> {
        let lapic = self.lapics.get(vcpu).and_then(|lapic| lapic.next_deadline(now.tsc)).map(|tsc| {
            let ticks = tsc.saturating_sub(now.tsc);
            let ns = vm_timer::tsc::host_tsc_ticks_to_ns(ticks, self.config.tsc_hz).unwrap_or(0);
            now.ns.saturating_add(ns)
        });
        [self.pit.next_deadline(now.ns), lapic, self.storm_recheck_ns].into_iter().flatten().min()
    }

    /// Whether the PIC's INT reaches vCPU `vcpu`: through LINT0 when its LAPIC accepts PIC
    /// interrupts (virtual wire, or globally disabled); without LAPIC models, the BSP.
    fn pic_reaches(&self, vcpu: usize) -> bool {
        match self.lapics.get(vcpu) {
            Some(lapic) => lapic.accepts_pic_interrupts(),
            None => vcpu == 0,
        }
    }

    /// The vector vCPU `vcpu` would take now if it can take an external interrupt: the PIC's
    /// ExtINT first (KVM's `kvm_cpu_get_interrupt` asks the PIC before the LAPIC), then the
    /// LAPIC's highest deliverable vector.
    pub fn pending_vector(&self, vcpu: usize) -> Option<u8> {
        self.extint_vector(vcpu).or_else(|| self.lapics.get(vcpu).and_then(LocalApic::pending_interrupt))
    }

    /// The PIC's pending vector if its INT reaches vCPU `vcpu` (ExtINT through LINT0, or the
    /// BSP without LAPIC models): what a VMM injects itself, APIC virtualization or not.
    pub fn extint_vector(&self, vcpu: usize) -> Option<u8> {
        self.pic_reaches(vcpu).then(|| self.pic.pending_vector()).flatten()
    }

    /// The APIC bus between the LAPIC models (its routing decides which vCPUs an IOAPIC route
    /// reaches: [`vm_apic::apicv::eoi_exit_bitmap`]).
    pub fn bus(&self) -> &ApicBus {
        &self.bus
    }

    /// vCPU `vcpu` takes the interrupt [`Irqchip::pending_vector`] announced (INTA).
    pub fn acknowledge(&mut self, vcpu: usize) -> u8 {
        let pic = self.pic_reaches(vcpu) && self.pic.pending_vector().is_some();
        match self.lapics.get_mut(vcpu) {
            Some(lapic) if !pic => lapic.acknowledge().vector,
            _ => self.pic.acknowledge().vector,
        }
    }

    /// The guest's TPR as `kvm_run.cr8` reports it after an exit (CR8 writes never exit on our
    /// hosts). Only a change is applied: an unchanged CR8 keeps the TPR's subclass bits 3:0,
    /// which a CR8 write would clear.
    pub fn sync_cr8(&mut self, vcpu: usize, cr8: u64) {
        if let Some(lapic) = self.lapics.get_mut(vcpu) {
            if lapic.cr8() != cr8 & 0xF {
                lapic.set_cr8(cr8);
            }
        }
    }

    /// The TPR to hand to KVM in `kvm_run.cr8` before entry, when a LAPIC model owns it.
    pub fn cr8(&self, vcpu: usize) -> Option<u64> {
        self.lapics.get(vcpu).map(LocalApic::cr8)
    }

    /// vCPUs that must be kicked because a model made something deliverable to them (IPIs,
    /// IOAPIC messages, LAPIC timers, INIT/SIPI). May include the caller.
    pub fn take_wakeups(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.wakeups)
    }

    fn wake(&mut self, vcpu: usize) {
        if !self.wakeups.contains(&vcpu) {
            self.wakeups.push(vcpu);
        }
    }

    /// The models' state in KVM's layouts, the LAPIC being vCPU `vcpu`'s.
    pub fn snapshot(&self, vcpu: usize, label: &str, now: Now) -> Snapshot {
        Snapshot {
            label: label.to_string(),
            pic: Some(pic_bytes(&self.pic.state())),
            ioapic: Some(apic::ioapic_bytes(&self.ioapic.state())),
            lapic: self.lapics.get(vcpu).and_then(|lapic| apic::lapic_bytes(lapic, now)),
        }
    }
}
