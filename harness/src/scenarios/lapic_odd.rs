//! Local APIC reads that KVM's `kvm_lapic_reg_read` does not decode: it writes nothing, so
//! the guest reads what the instruction emulator's read cache held, the bytes of the last
//! emulated read (vm-apic `lapic::Quirks::UNDECODED_READS_UNWRITTEN`; the SDM's LAPIC returns
//! the slot's bytes).
//!
//! Which read was last depends on the host: where KVM emulates the probe's own load of the
//! access's address from RAM (this project's hosts emulate guest code in batches) the cache
//! holds that address; elsewhere it holds the last MMIO read, and the kvm-userspace backend's
//! `kvm_run.mmio.data` and the software backends' cache do too. So each odd read is preceded
//! by a 32-bit IOAPIC read whose value *is* its address (an unmasked, unrouted redirection
//! entry programmed with it): every host and backend then shows the same value. The reads
//! are 32 bits wide, so that every IOAPIC decodes the primer, and none is an offset APIC-
//! register virtualization reads from the virtual-APIC page (an APICv host would answer an
//! EOI-register read with 0 without an exit).

use super::apic::*;
use crate::scenario::Expect::Value;
use crate::scenario::{Device, EoiPolicy, Op, Scenario, LAPIC_PAGE};

/// The unused IOAPIC pin whose entry holds the primers.
const PRIMER_PIN: u8 = 5;

/// The odd reads: crossing the register's four bytes, and bytes 4-7 of the slot (TPR's).
const ODD: [u32; 2] = [reg::TPR + 2, reg::TPR + 4];

/// The scenarios of this file.
pub fn all() -> Vec<Scenario> {
    vec![odd_reads()]
}

fn odd_reads() -> Scenario {
    let mut ops = vec![lapic_enable(), lapic_write(reg::TPR, 0x20)];
    let mut kvm = Vec::new();
    let mut sdm = Vec::new();
    for offset in ODD {
        let address = LAPIC_PAGE + u64::from(offset);
        // The primer: entry low dword = the address (vector, bits 31:17; unmasked, edge).
        ops.extend(ioapic_write(ioreg::low(PRIMER_PIN), address as u32));
        ops.extend(ioapic_read(ioreg::low(PRIMER_PIN)));
        ops.push(Op::MmioRead { addr: address, wide: false });
        kvm.extend([Value(address), Value(address)]);
        sdm.extend([Value(address), Value(0)]);
    }
    ops.extend(ioapic_write(ioreg::low(PRIMER_PIN), rte::MASKED));
    ops.push(lapic_read(reg::TPR)); // an ordinary read, last (APICv may virtualize it)
    kvm.push(Value(0x20));
    sdm.push(Value(0x20));
    Scenario::new(
        "lapic-odd-reads",
        "LAPIC reads KVM does not decode (crossing the register's four bytes, bytes 4-7 of its slot) leave the emulator's buffer as the last emulated read left it; the SDM's LAPIC returns the slot's bytes",
        EoiPolicy::None,
        ops,
    )
    .expect(kvm)
    .expect_datasheet(sdm)
    .datasheet_follows(&[Device::Lapic])
}
