//! The split irqchip's side of our IOAPIC: its messages go to KVM's LAPICs with
//! KVM_SIGNAL_MSI, and its level-triggered entries are mirrored as MSI routes on GSI = pin so
//! that KVM reports their EOIs.
//!
//! KVM computes the vectors whose EOI exits to userspace (KVM_EXIT_IOAPIC_EOI) only from
//! level-triggered MSI routes on GSIs below the reserved IOAPIC pin count
//! (`kvm_scan_ioapic_routes`), so pin n must be GSI n, and the routes must follow the guest's
//! redirection-table writes. Deliveries do not use the routes: KVM_SIGNAL_MSI carries the
//! message itself and returns how many LAPICs accepted it.

use kvm_bindings::{kvm_irq_routing_entry, kvm_msi, KvmIrqRouting, KVM_IRQ_ROUTING_MSI};
use kvm_ioctls::VmFd;

use crate::irqchip::{LevelRoute, Msi};

/// IOAPIC pins, reserved as GSIs 0–23 by KVM_CAP_SPLIT_IRQCHIP.
pub const IOAPIC_PINS: u8 = 24;

/// KVM_SET_GSI_ROUTING with one MSI route per level-triggered pin (GSI = pin); the other
/// GSIs have no route.
pub fn set_level_routes(vm: &VmFd, routes: &[LevelRoute]) -> Result<(), String> {
    let mut table = KvmIrqRouting::new(0).map_err(|e| format!("KVM_SET_GSI_ROUTING table: {e:?}"))?;
    for (gsi, msi) in routes {
        let mut entry =
            kvm_irq_routing_entry { gsi: u32::from(*gsi), type_: KVM_IRQ_ROUTING_MSI, ..Default::default() };
        entry.u.msi.address_lo = msi.address as u32;
        entry.u.msi.address_hi = (msi.address >> 32) as u32;
        entry.u.msi.data = msi.data;
        table.push(entry).map_err(|e| format!("KVM_SET_GSI_ROUTING table: {e:?}"))?;
    }
    vm.set_gsi_routing(&table).map_err(|e| format!("KVM_SET_GSI_ROUTING: {e}"))
}

/// KVM_SIGNAL_MSI: how many LAPICs accepted the message, `Some(0)` when the destinations
/// it resolved refused it, `None` when KVM found no destination at all (its
/// `kvm_irq_delivery_to_apic` returned -1, which the ioctl reports as EPERM). KVM's own
/// IOAPIC sets Remote IRR unless the result is 0, so only `Some(0)` is "not accepted".
pub fn signal(vm: &VmFd, msi: &Msi) -> Result<Option<usize>, String> {
    let message = kvm_msi {
        address_lo: msi.address as u32,
        address_hi: (msi.address >> 32) as u32,
        data: msi.data,
        ..Default::default()
    };
    match vm.signal_msi(message) {
        Ok(n) => Ok(Some(usize::try_from(n).unwrap_or(0))),
        // KVM returns -1 (EPERM) when the message addressed no LAPIC.
        Err(e) if e.errno() == libc::EPERM => Ok(None),
        Err(e) => Err(format!("KVM_SIGNAL_MSI({:#x}, {:#x}): {e}", msi.address, msi.data)),
    }
}
