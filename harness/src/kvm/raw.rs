//! The KVM ioctls kvm-ioctls 0.25 does not wrap on x86_64.

use kvm_bindings::{kvm_interrupt, KVMIO};
use kvm_ioctls::VcpuFd;
use vmm_sys_util::errno;
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

ioctl_iow_nr!(KVM_INTERRUPT, KVMIO, 0x86, kvm_interrupt);

/// `KVM_INTERRUPT`: queue external interrupt `vector` on `vcpu`. Without an in-kernel irqchip
/// KVM delivers it at the next entry whatever the guest's IF (gate it on
/// `ready_for_interrupt_injection && if_flag`); with the split irqchip it is an ExtINT that
/// waits for IF=1, and a second one before delivery fails with EEXIST.
pub fn interrupt(vcpu: &VcpuFd, vector: u8) -> Result<(), errno::Error> {
    let irq = kvm_interrupt { irq: u32::from(vector) };
    // SAFETY: KVM_INTERRUPT reads one `kvm_interrupt` from the pointer, which is valid for
    // the duration of the call; `vcpu` is an open vCPU fd.
    let ret = unsafe { ioctl_with_ref(vcpu, KVM_INTERRUPT(), &irq) };
    if ret == 0 {
        Ok(())
    } else {
        Err(errno::Error::last())
    }
}
