//! VM and vCPU setup on /dev/kvm for the three KVM backends, and the vCPU run loop.
//!
//! * [`Mode::Kernel`]: KVM_CREATE_IRQCHIP + KVM_CREATE_PIT2, everything in KVM.
//! * [`Mode::Split`]: KVM_CAP_SPLIT_IRQCHIP with 24 routes: KVM's LAPIC, our PIC and PIT.
//! * [`Mode::Userspace`]: no in-kernel irqchip; KVM_CAP_X86_USER_SPACE_MSR and an MSR filter
//!   hand the TSC MSRs (and, with vm-apic, the x2APIC MSRs) to our models.

pub mod cpu;
pub mod kick;
pub mod memory;
pub mod raw;
pub mod vcpu;

use kvm_bindings::{
    kvm_enable_cap, kvm_mp_state, kvm_pit_config, kvm_userspace_memory_region, KVM_CAP_SPLIT_IRQCHIP,
    KVM_CAP_X86_USER_SPACE_MSR, KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE, KVM_MSR_EXIT_REASON_FILTER,
    KVM_MSR_EXIT_REASON_INVAL, KVM_MSR_EXIT_REASON_UNKNOWN, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VcpuFd, VmFd};

use crate::guest::layout;
use crate::irqchip::USERSPACE_MSR_FILTER;
use memory::GuestMemory;

/// How the VM's interrupt controllers are split between KVM and our models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Everything in KVM.
    Kernel,
    /// KVM's LAPIC; PIC, PIT (and, with vm-apic, the IOAPIC) in userspace.
    Split,
    /// No in-kernel irqchip.
    Userspace,
}

/// What /dev/kvm on this machine offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// KVM_CAP_IRQCHIP and KVM_CAP_PIT2.
    pub kernel_irqchip: bool,
    /// KVM_CAP_SPLIT_IRQCHIP.
    pub split_irqchip: bool,
    /// KVM_CAP_X86_USER_SPACE_MSR and KVM_CAP_X86_MSR_FILTER.
    pub user_space_msr: bool,
}

/// Opens /dev/kvm and reads its capabilities; `Err` says why KVM cannot be used.
pub fn probe() -> Result<Caps, String> {
    let kvm = Kvm::new().map_err(|e| format!("/dev/kvm cannot be opened ({e})"))?;
    let version = kvm.get_api_version();
    if version != 12 {
        return Err(format!("/dev/kvm is not a usable KVM (KVM_GET_API_VERSION gave {version}, not 12)"));
    }
    Ok(Caps {
        kernel_irqchip: kvm.check_extension(Cap::Irqchip) && kvm.check_extension(Cap::Pit2),
        split_irqchip: kvm.check_extension(Cap::SplitIrqchip),
        user_space_msr: kvm.check_extension(Cap::X86UserSpaceMsr) && kvm.check_extension(Cap::X86MsrFilter),
    })
}

impl Caps {
    /// The backend for `id`, or why this KVM cannot run it.
    pub fn backend(&self, id: crate::backend::BackendId) -> Result<crate::backend::kvm::KvmBackend, String> {
        use crate::backend::BackendId;
        let (mode, ok, missing) = match id {
            BackendId::KvmKernel => (Mode::Kernel, self.kernel_irqchip, "KVM_CAP_IRQCHIP/KVM_CAP_PIT2"),
            BackendId::KvmSplit(_) => (Mode::Split, self.split_irqchip, "KVM_CAP_SPLIT_IRQCHIP"),
            BackendId::KvmUserspace(_) => {
                (Mode::Userspace, self.user_space_msr, "KVM_CAP_X86_USER_SPACE_MSR/KVM_CAP_X86_MSR_FILTER")
            }
            BackendId::Software(_) => return Err("not a KVM backend".into()),
        };
        if ok {
            Ok(crate::backend::kvm::KvmBackend::new(mode, id.profile()))
        } else {
            Err(format!("this KVM lacks {missing}"))
        }
    }
}

/// A VM with guest memory holding the probe, and its vCPUs in long mode at the probe's entry.
///
/// Field order matters for drop: vCPUs, then the VM, then the memory it mapped.
pub struct Machine {
    /// vCPU fds, index = vCPU id (taken by the run loop's threads).
    pub vcpus: Vec<Option<VcpuFd>>,
    /// The VM.
    pub vm: VmFd,
    /// Guest RAM.
    pub mem: GuestMemory,
    /// How interrupts are split.
    pub mode: Mode,
    /// The guest TSC frequency (kHz), from KVM_GET_TSC_KHZ.
    pub tsc_khz: u32,
}

impl Machine {
    /// Creates the VM for `mode` with `vcpus` vCPUs, all started directly in long mode (as if
    /// firmware had already brought the APs up; INIT/SIPI scenarios will instead call
    /// [`Machine::start_ap`] when the guest sends the SIPI).
    pub fn new(mode: Mode, vcpus: usize) -> Result<Machine, String> {
        if vcpus == 0 || vcpus > layout::MAX_VCPUS {
            return Err(format!("{vcpus} vCPUs: the probe guest has room for 1-{}", layout::MAX_VCPUS));
        }
        let kvm = Kvm::new().map_err(|e| format!("/dev/kvm cannot be opened ({e})"))?;
        let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
        match mode {
            Mode::Kernel => {
                vm.create_irq_chip().map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
                let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
                vm.create_pit2(pit).map_err(|e| format!("KVM_CREATE_PIT2: {e}"))?;
            }
            Mode::Split => {
                let mut cap = kvm_enable_cap { cap: KVM_CAP_SPLIT_IRQCHIP, ..Default::default() };
                cap.args[0] = 24; // IOAPIC pins routed through KVM's MSI routing
                vm.enable_cap(&cap).map_err(|e| format!("KVM_ENABLE_CAP(SPLIT_IRQCHIP): {e}"))?;
            }
            Mode::Userspace => {
                let mut cap = kvm_enable_cap { cap: KVM_CAP_X86_USER_SPACE_MSR, ..Default::default() };
                // INVAL: MSRs KVM does not emulate without an in-kernel LAPIC (x2APIC);
                // UNKNOWN: MSRs KVM does not know; FILTER: MSRs our filter denies.
                cap.args[0] = u64::from(
                    KVM_MSR_EXIT_REASON_INVAL | KVM_MSR_EXIT_REASON_UNKNOWN | KVM_MSR_EXIT_REASON_FILTER,
                );
                vm.enable_cap(&cap).map_err(|e| format!("KVM_ENABLE_CAP(X86_USER_SPACE_MSR): {e}"))?;
                set_msr_filter(&vm)?;
            }
        }
        let mem = GuestMemory::new(layout::MEMORY_SIZE)?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: mem.size() as u64,
            userspace_addr: mem.host_address(),
        };
        // SAFETY: the region is our live anonymous mapping of `memory_size` bytes, which outlives
        // the VM (field order of Machine).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
        cpu::write_boot_tables(&mem)?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
        let mut fds = Vec::new();
        let mut tsc_khz = 0;
        for index in 0..vcpus {
            let vcpu = vm.create_vcpu(index as u64).map_err(|e| format!("KVM_CREATE_VCPU {index}: {e}"))?;
            let mut cpuid = cpuid.clone();
            for entry in cpuid.as_mut_slice() {
                if entry.function == 1 {
                    entry.ebx = (entry.ebx & 0x00FF_FFFF) | ((index as u32) << 24);
                    // initial APIC ID
                }
            }
            vcpu.set_cpuid2(&cpuid).map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
            if mode != Mode::Userspace && index > 0 {
                // With the in-kernel LAPIC an AP waits for SIPI; start it directly instead.
                vcpu.set_mp_state(kvm_mp_state { mp_state: KVM_MP_STATE_RUNNABLE })
                    .map_err(|e| format!("KVM_SET_MP_STATE {index}: {e}"))?;
            }
            Self::enter_probe(&vcpu, index)?;
            tsc_khz = vcpu.get_tsc_khz().unwrap_or(0);
            fds.push(Some(vcpu));
        }
        Ok(Machine { vcpus: fds, vm, mem, mode, tsc_khz })
    }

    /// Puts `vcpu` at the probe's entry in long mode with vCPU `index`'s stack, control block
    /// and mailbox. This is also INIT/SIPI emulation for userspace-LAPIC scenarios: hold the AP's
    /// thread until the model reports the SIPI, then call this and release it (mp_state stays
    /// RUNNABLE, the only state KVM accepts without an in-kernel irqchip).
    pub fn enter_probe(vcpu: &VcpuFd, index: usize) -> Result<(), String> {
        let mut sregs = vcpu.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        cpu::set_long_mode(&mut sregs);
        vcpu.set_sregs(&sregs).map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
        vcpu.set_regs(&cpu::initial_regs(index)).map_err(|e| format!("KVM_SET_REGS: {e}"))
    }

    /// See [`Machine::enter_probe`].
    pub fn start_ap(vcpu: &VcpuFd, index: usize) -> Result<(), String> {
        Self::enter_probe(vcpu, index)
    }
}

/// Default allow; deny (so they exit with reason FILTER) the MSRs of [`USERSPACE_MSR_FILTER`].
fn set_msr_filter(vm: &VmFd) -> Result<(), String> {
    let bitmaps: Vec<[u8; 1]> = USERSPACE_MSR_FILTER.iter().map(|_| [0u8]).collect(); // bit 0 clear = deny
    let ranges: Vec<MsrFilterRange<'_>> = USERSPACE_MSR_FILTER
        .iter()
        .zip(&bitmaps)
        .map(|(&msr, bitmap)| MsrFilterRange {
            flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
            base: msr,
            msr_count: 1,
            bitmap,
        })
        .collect();
    vm.set_msr_filter(MsrFilterDefaultAction::ALLOW, &ranges)
        .map_err(|e| format!("KVM_X86_SET_MSR_FILTER: {e}"))
}
