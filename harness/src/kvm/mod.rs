//! VM and vCPU setup on /dev/kvm for the three KVM backends, and the vCPU run loop.
//!
//! * [`Mode::Kernel`]: KVM_CREATE_IRQCHIP + KVM_CREATE_PIT2, everything in KVM.
//! * [`Mode::Split`]: KVM_CAP_SPLIT_IRQCHIP with 24 routes: KVM's LAPIC; our PIC, PIT and
//!   IOAPIC ([`split`]).
//! * [`Mode::Userspace`]: no in-kernel irqchip; KVM_CAP_X86_USER_SPACE_MSR (the x2APIC MSRs
//!   exit with reason INVAL) and an MSR filter (IA32_APIC_BASE, TSC-deadline, the TSC MSRs:
//!   reason FILTER) hand every LAPIC and TSC register to our models.
//!
//! [`state`] reads and writes KVM's in-kernel irqchip and PIT state (snapshots, migration).

pub mod cpu;
pub mod kick;
pub mod memory;
pub mod raw;
pub mod split;
pub mod state;
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
            BackendId::KvmMigrate => (
                Mode::Kernel,
                self.kernel_irqchip && self.user_space_msr,
                "KVM_CAP_IRQCHIP/KVM_CAP_PIT2 and KVM_CAP_X86_USER_SPACE_MSR/KVM_CAP_X86_MSR_FILTER",
            ),
            BackendId::Software(_) | BackendId::SoftwareApicv(_) => return Err("not a KVM backend".into()),
        };
        if !ok {
            Err(format!("this KVM lacks {missing}"))
        } else if id == BackendId::KvmMigrate {
            Ok(crate::backend::kvm::KvmBackend::migrating())
        } else {
            Ok(crate::backend::kvm::KvmBackend::new(mode, id.profile()))
        }
    }
}

/// CPUID.1:ECX bit 24: the TSC-deadline timer (KVM_GET_SUPPORTED_CPUID leaves it out; KVM's
/// LAPIC takes LVT timer mode 10b and IA32_TSC_DEADLINE only with it).
const CPUID_1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// CPUID.1:ECX bit 21: x2APIC.
const CPUID_1_ECX_X2APIC: u32 = 1 << 21;

/// How the vCPUs start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    /// vCPUs, the BSP included.
    pub vcpus: usize,
    /// The APs wait for INIT and a start-up IPI instead of starting in long mode.
    pub aps_wait_for_sipi: bool,
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
    /// firmware had already brought the APs up).
    pub fn new(mode: Mode, vcpus: usize) -> Result<Machine, String> {
        Self::start(mode, Start { vcpus, aps_wait_for_sipi: false }, GuestMemory::new(layout::MEMORY_SIZE)?)
    }

    /// Creates the VM for `mode` on guest RAM `mem` (fresh, or the RAM of a VM being migrated,
    /// whose probe state it keeps). With `start.aps_wait_for_sipi` the APs do not start: with an
    /// in-kernel LAPIC they are left UNINITIALIZED for KVM's INIT/SIPI; in userspace mode the
    /// vCPU loop holds their threads until the LAPIC model reports the start-up IPI
    /// ([`Machine::start_ap`]). Either way the AP then runs the trampoline at
    /// [`layout::TRAMPOLINE`], which rings [`layout::port::AP_STARTED`], and the loop puts it in
    /// long mode ([`Machine::enter_probe`]).
    pub fn start(mode: Mode, start: Start, mem: GuestMemory) -> Result<Machine, String> {
        let vcpus = start.vcpus;
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
                cap.args[0] = u64::from(split::IOAPIC_PINS); // GSIs 0-23 are the IOAPIC's pins
                vm.enable_cap(&cap).map_err(|e| format!("KVM_ENABLE_CAP(SPLIT_IRQCHIP): {e}"))?;
                // Every entry masked at reset: no level route yet (the vCPU loop updates them
                // as the guest programs the IOAPIC model).
                split::set_level_routes(&vm, &[])?;
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
        mem.write(layout::TRAMPOLINE, &layout::TRAMPOLINE_CODE)?;
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
                    // Initial APIC ID in bits 31:24; x2APIC and the TSC-deadline timer, which
                    // the models advertise too.
                    entry.ebx = (entry.ebx & 0x00FF_FFFF) | ((index as u32) << 24);
                    entry.ecx |= CPUID_1_ECX_TSC_DEADLINE | CPUID_1_ECX_X2APIC;
                }
            }
            vcpu.set_cpuid2(&cpuid).map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
            if mode != Mode::Userspace && index > 0 && !start.aps_wait_for_sipi {
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
    /// and mailbox (at creation, and when an AP rings [`layout::port::AP_STARTED`] from its
    /// trampoline).
    pub fn enter_probe(vcpu: &VcpuFd, index: usize) -> Result<(), String> {
        let mut sregs = vcpu.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        cpu::set_long_mode(&mut sregs);
        vcpu.set_sregs(&sregs).map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
        vcpu.set_regs(&cpu::initial_regs(index)).map_err(|e| format!("KVM_SET_REGS: {e}"))
    }

    /// INIT/SIPI emulation without an in-kernel LAPIC: the AP's thread was held until its LAPIC
    /// model latched the start-up IPI with `vector`; this puts the vCPU where the SIPI starts
    /// a processor (real mode, CS = `vector << 8`, IP = 0) and the loop then releases it
    /// (mp_state stays RUNNABLE, the only state KVM accepts without an in-kernel irqchip).
    pub fn start_ap(vcpu: &VcpuFd, vector: u8) -> Result<(), String> {
        let mut sregs = vcpu.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        cpu::set_real_mode(&mut sregs, vector);
        vcpu.set_sregs(&sregs).map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
        vcpu.set_regs(&cpu::sipi_regs()).map_err(|e| format!("KVM_SET_REGS: {e}"))
    }

    /// Takes the guest RAM out of the machine, dropping its vCPUs and VM (migration).
    pub fn into_memory(self) -> GuestMemory {
        let Machine { vcpus, vm, mem, .. } = self;
        drop(vcpus);
        drop(vm);
        mem
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
