//! KVM's in-kernel interrupt-controller state and the models' state, in both directions:
//! KVM_GET/SET_IRQCHIP (PIC master, slave, IOAPIC), KVM_GET/SET_PIT2 (the 8254 and port
//! 0x61's speaker bits), KVM_GET/SET_LAPIC with IA32_APIC_BASE and IA32_TSC_DEADLINE
//! (KVM_GET/SET_MSRS), and the vCPU's own registers and pending events.
//!
//! Used by snapshots (kernel state as bytes) and by the `kvm-migrate` backend, which moves a
//! running guest from `kvm-kernel` into the models on `kvm-userspace` and back.
//!
//! The PIT goes through vm-timer's `kvm_pit_state2` conversion (`vm_timer::pit::kvm`), with
//! [`Now::ns`] as its `now`: the harness's host time is CLOCK_MONOTONIC, the clock of KVM's
//! `count_load_time`. What KVM's format cannot carry is listed there; for the harness it means
//! that counter 0 restarts its count at every move (KVM_SET_PIT2 restarts it, and KVM keeps no
//! phase for it that KVM_GET_PIT2 could report), so a periodic IRQ0 comes up to one period late
//! after a move and a one-shot up to its elapsed time late. Port 0x61's NMI bits (2, 3) are not
//! KVM's (its speaker port reads them as 0) and do not cross.

use kvm_bindings::{
    kvm_ioapic_state, kvm_irqchip, kvm_lapic_state, kvm_msr_entry, kvm_pic_state, kvm_pit_state2, kvm_regs,
    kvm_sregs, kvm_vcpu_events, Msrs,
};
use kvm_ioctls::{VcpuFd, VmFd};
use vm_apic::IoApicState;
use vm_timer::pit::PitState;

use crate::irqchip::{Irqchip, Now, IA32_APIC_BASE};

/// IA32_TSC_DEADLINE.
const IA32_TSC_DEADLINE: u32 = 0x6E0;
/// KVM_GET_IRQCHIP chip ids.
const PIC_MASTER: u32 = 0;
const PIC_SLAVE: u32 = 1;
const IOAPIC: u32 = 2;

/// The in-kernel PIC pair and IOAPIC (KVM_GET_IRQCHIP chips 0, 1, 2).
#[derive(Clone, Copy)]
pub struct ChipState {
    /// Master and slave.
    pub pic: [kvm_pic_state; 2],
    /// The IOAPIC.
    pub ioapic: kvm_ioapic_state,
}

/// One vCPU's LAPIC: the register page and the two MSRs outside it.
#[derive(Clone, Copy)]
pub struct LapicState {
    /// KVM_GET_LAPIC's page.
    pub page: kvm_lapic_state,
    /// IA32_APIC_BASE.
    pub apic_base: u64,
    /// IA32_TSC_DEADLINE (0 outside TSC-deadline mode).
    pub tsc_deadline: u64,
}

/// A vCPU's registers and pending events, moved with the guest.
#[derive(Clone, Copy)]
pub struct CpuState {
    /// General registers.
    pub regs: kvm_regs,
    /// Segment and control registers (CR8 included).
    pub sregs: kvm_sregs,
    /// Pending exception, interrupt, NMI; interrupt shadow.
    pub events: kvm_vcpu_events,
}

fn get_chip(vm: &VmFd, chip_id: u32) -> Result<kvm_irqchip, String> {
    let mut chip = kvm_irqchip { chip_id, ..Default::default() };
    vm.get_irqchip(&mut chip).map_err(|e| format!("KVM_GET_IRQCHIP({chip_id}): {e}"))?;
    Ok(chip)
}

/// KVM_GET_IRQCHIP of the three chips.
pub fn get_chips(vm: &VmFd) -> Result<ChipState, String> {
    let (master, slave, ioapic) =
        (get_chip(vm, PIC_MASTER)?, get_chip(vm, PIC_SLAVE)?, get_chip(vm, IOAPIC)?);
    // SAFETY: chips 0 and 1 are PICs (KVM filled the `pic` member of the union), chip 2 the
    // IOAPIC (`ioapic`); both members are plain integers.
    unsafe { Ok(ChipState { pic: [master.chip.pic, slave.chip.pic], ioapic: ioapic.chip.ioapic }) }
}

/// KVM_SET_IRQCHIP of the three chips (the IOAPIC re-asserts the lines of its `irr`).
pub fn set_chips(vm: &VmFd, state: &ChipState) -> Result<(), String> {
    for (chip_id, pic) in [(PIC_MASTER, state.pic[0]), (PIC_SLAVE, state.pic[1])] {
        let mut chip = kvm_irqchip { chip_id, ..Default::default() };
        chip.chip.pic = pic;
        vm.set_irqchip(&chip).map_err(|e| format!("KVM_SET_IRQCHIP({chip_id}): {e}"))?;
    }
    let mut chip = kvm_irqchip { chip_id: IOAPIC, ..Default::default() };
    chip.chip.ioapic = state.ioapic;
    vm.set_irqchip(&chip).map_err(|e| format!("KVM_SET_IRQCHIP({IOAPIC}): {e}"))
}

/// KVM_GET_PIT2: the in-kernel PIT (the VM must have one: KVM_CREATE_PIT2).
pub fn get_pit(vm: &VmFd) -> Result<kvm_pit_state2, String> {
    vm.get_pit2().map_err(|e| format!("KVM_GET_PIT2: {e}"))
}

/// KVM_SET_PIT2. KVM reloads every counter from its `count` at the ioctl (counter 0's timer
/// starts a full period from now).
pub fn set_pit(vm: &VmFd, state: &kvm_pit_state2) -> Result<(), String> {
    vm.set_pit2(state).map_err(|e| format!("KVM_SET_PIT2: {e}"))
}

/// The models' PIT for KVM_SET_PIT2 at `now` (the caller has run [`Irqchip::advance`], so no
/// IRQ0 edge is left unreported).
pub fn pit_from_models(chip: &Irqchip, now: Now) -> kvm_pit_state2 {
    chip.pit.state().to_kvm(now.ns)
}

/// The bytes of a plain-old-data KVM struct.
pub fn plain_bytes<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: T is a plain-old-data KVM struct (integers and arrays of them, no padding whose
    // value matters, no pointers); reading its bytes is defined for the size of the value.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
}

/// The 16 `kvm_pic_state` bytes, in field order.
pub fn pic_state_bytes(k: &kvm_pic_state) -> [u8; 16] {
    [
        k.last_irr,
        k.irr,
        k.imr,
        k.isr,
        k.priority_add,
        k.irq_base,
        k.read_reg_select,
        k.poll,
        k.special_mask,
        k.init_state,
        k.auto_eoi,
        k.rotate_on_auto_eoi,
        k.special_fully_nested_mode,
        k.init4,
        k.elcr,
        k.elcr_mask,
    ]
}

fn msrs(indices: &[u32]) -> Result<Msrs, String> {
    let entries: Vec<kvm_msr_entry> =
        indices.iter().map(|&index| kvm_msr_entry { index, ..Default::default() }).collect();
    Msrs::from_entries(&entries).map_err(|e| format!("MSR list: {e:?}"))
}

/// KVM_GET_LAPIC with IA32_APIC_BASE and IA32_TSC_DEADLINE.
pub fn get_lapic(vcpu: &VcpuFd) -> Result<LapicState, String> {
    let page = vcpu.get_lapic().map_err(|e| format!("KVM_GET_LAPIC: {e}"))?;
    let mut list = msrs(&[IA32_APIC_BASE, IA32_TSC_DEADLINE])?;
    let n = vcpu.get_msrs(&mut list).map_err(|e| format!("KVM_GET_MSRS: {e}"))?;
    if n != 2 {
        return Err(format!("KVM_GET_MSRS read {n} of IA32_APIC_BASE, IA32_TSC_DEADLINE"));
    }
    let values = list.as_slice();
    Ok(LapicState { page, apic_base: values[0].data, tsc_deadline: values[1].data })
}

fn set_msr(vcpu: &VcpuFd, index: u32, data: u64) -> Result<(), String> {
    let list = Msrs::from_entries(&[kvm_msr_entry { index, data, ..Default::default() }])
        .map_err(|e| format!("MSR list: {e:?}"))?;
    match vcpu.set_msrs(&list) {
        Ok(1) => Ok(()),
        Ok(n) => Err(format!("KVM_SET_MSRS({index:#x} = {data:#x}) set {n} MSRs")),
        Err(e) => Err(format!("KVM_SET_MSRS({index:#x} = {data:#x}): {e}")),
    }
}

/// IA32_APIC_BASE (a host write: any mode transition), then KVM_SET_LAPIC, then
/// IA32_TSC_DEADLINE (KVM takes it only in TSC-deadline mode, which the page sets).
pub fn set_lapic(vcpu: &VcpuFd, state: &LapicState) -> Result<(), String> {
    set_msr(vcpu, IA32_APIC_BASE, state.apic_base)?;
    vcpu.set_lapic(&state.page).map_err(|e| format!("KVM_SET_LAPIC: {e}"))?;
    set_msr(vcpu, IA32_TSC_DEADLINE, state.tsc_deadline)
}

/// The vCPU's registers and events.
pub fn get_cpu(vcpu: &VcpuFd) -> Result<CpuState, String> {
    Ok(CpuState {
        regs: vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?,
        sregs: vcpu.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?,
        events: vcpu.get_vcpu_events().map_err(|e| format!("KVM_GET_VCPU_EVENTS: {e}"))?,
    })
}

/// Puts registers and events into a vCPU (of another VM). Segment registers first: with an
/// in-kernel LAPIC, KVM_SET_SREGS writes CR8 into the TPR, which [`set_lapic`] then refines.
pub fn set_cpu(vcpu: &VcpuFd, state: &CpuState) -> Result<(), String> {
    vcpu.set_sregs(&state.sregs).map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    vcpu.set_regs(&state.regs).map_err(|e| format!("KVM_SET_REGS: {e}"))?;
    vcpu.set_vcpu_events(&state.events).map_err(|e| format!("KVM_SET_VCPU_EVENTS: {e}"))
}

/// Restores KVM's state into the models: the PIC pair (its INT output re-derived, as
/// KVM_SET_IRQCHIP does), the IOAPIC (lines as KVM's `irr` reports them), the PIT (taken at
/// `now`: counters 1 and 2 continue from their load time, counter 0 is loaded at `now`), each
/// vCPU's LAPIC (its timer restarts from the page's current count at `now`).
pub fn models_from_kernel(
    chip: &mut Irqchip,
    chips: &ChipState,
    pit: &kvm_pit_state2,
    lapics: &[LapicState],
    now: Now,
) -> Result<(), String> {
    let pit =
        PitState::from_kvm(pit, now.ns).map_err(|e| format!("KVM's PIT state does not convert: {e}"))?;
    chip.pit.restore(&pit).map_err(|e| format!("PIT restore: {e}"))?;
    let pic = vm_pic::PicState::from_kvm(&chips.pic[0], &chips.pic[1])
        .map_err(|e| format!("KVM's PIC state does not convert: {e:?}"))?;
    chip.pic.restore(&pic).map_err(|e| format!("PIC restore: {e:?}"))?;
    // KVM's INT output is not in kvm_pic_state; re-derive it as KVM_SET_IRQCHIP does.
    chip.pic.update_output();
    let ioapic = IoApicState::from_kvm(&chips.ioapic)
        .map_err(|e| format!("KVM's IOAPIC state does not convert: {e}"))?;
    chip.ioapic.restore(&ioapic).map_err(|e| format!("IOAPIC restore: {e}"))?;
    for (index, state) in lapics.iter().enumerate() {
        let lapic = chip.lapics.get_mut(index).ok_or_else(|| format!("no LAPIC model for vCPU {index}"))?;
        lapic
            .restore_kvm(&state.page, state.apic_base, state.tsc_deadline, now.tsc)
            .map_err(|e| format!("vCPU {index}: KVM's LAPIC state does not convert: {e}"))?;
    }
    Ok(())
}

/// The models' state for KVM_SET_IRQCHIP (the PIC pair and the IOAPIC).
pub fn chips_from_models(chip: &Irqchip) -> ChipState {
    ChipState { pic: chip.pic.state().to_kvm(), ioapic: chip.ioapic.state().to_kvm() }
}

/// vCPU `index`'s LAPIC model for KVM_SET_LAPIC and the MSRs, at `now`.
pub fn lapic_from_model(chip: &Irqchip, index: usize, now: Now) -> Result<LapicState, String> {
    let lapic = chip.lapics.get(index).ok_or_else(|| format!("no LAPIC model for vCPU {index}"))?;
    let mut deadline = lapic.state().timer.tsc_deadline;
    if lapic.apic_base() & (1 << 11) == 0 {
        deadline = 0;
    }
    Ok(LapicState {
        page: lapic.to_kvm(now.tsc, vm_apic::lapic::kvm::KvmLapicFormat::default()),
        apic_base: lapic.apic_base(),
        tsc_deadline: deadline,
    })
}
