//! Building blocks of the LAPIC, IOAPIC and SMP scenarios: register accesses with the
//! registers named, and the sequences every such scenario starts with.
//!
//! Register offsets and bits are the SDM's (LAPIC) and the 82093AA's (IOAPIC); see
//! `vm_apic::lapic::regs` and `vm_apic::ioapic::regs`.

use crate::scenario::{HostOp, Op, IOAPIC_PAGE, LAPIC_PAGE, SIPI_VECTOR};

/// LAPIC register offsets (xAPIC page).
pub mod reg {
    /// Local APIC ID (bits 31:24).
    pub const ID: u32 = 0x020;
    /// Version.
    pub const VERSION: u32 = 0x030;
    /// Task priority.
    pub const TPR: u32 = 0x080;
    /// Processor priority (read-only).
    pub const PPR: u32 = 0x0A0;
    /// End of interrupt (write-only).
    pub const EOI: u32 = 0x0B0;
    /// Logical destination.
    pub const LDR: u32 = 0x0D0;
    /// Spurious interrupt vector.
    pub const SVR: u32 = 0x0F0;
    /// In-service, word n (vectors 32n..32n+31) at `ISR + 0x10 * n`.
    pub const ISR: u32 = 0x100;
    /// Trigger mode, word n.
    pub const TMR: u32 = 0x180;
    /// Interrupt request, word n.
    pub const IRR: u32 = 0x200;
    /// Error status.
    pub const ESR: u32 = 0x280;
    /// Interrupt command, low half (writing it sends the IPI).
    pub const ICR: u32 = 0x300;
    /// Interrupt command, high half (destination in bits 31:24).
    pub const ICR2: u32 = 0x310;
    /// LVT timer.
    pub const LVT_TIMER: u32 = 0x320;
    /// LVT error.
    pub const LVT_ERROR: u32 = 0x370;
    /// Timer initial count.
    pub const TMICT: u32 = 0x380;
    /// Timer current count.
    pub const TMCCT: u32 = 0x390;
    /// Timer divide configuration.
    pub const TDCR: u32 = 0x3E0;
}

/// ICR bits (low half).
pub mod icr {
    /// Delivery mode 001: lowest priority.
    pub const LOWEST: u32 = 0x100;
    /// Delivery mode 100: NMI.
    pub const NMI: u32 = 0x400;
    /// Delivery mode 101: INIT.
    pub const INIT: u32 = 0x500;
    /// Delivery mode 110: start-up.
    pub const STARTUP: u32 = 0x600;
    /// Destination mode logical.
    pub const LOGICAL: u32 = 0x800;
    /// Level assert.
    pub const ASSERT: u32 = 0x4000;
    /// Shorthand 01: self.
    pub const SELF: u32 = 0x4_0000;
    /// Shorthand 10: all including self.
    pub const ALL: u32 = 0x8_0000;
    /// Shorthand 11: all excluding self.
    pub const OTHERS: u32 = 0xC_0000;
}

/// x2APIC MSRs (register offset >> 4, + 0x800).
pub mod msr {
    /// IA32_APIC_BASE.
    pub const APIC_BASE: u32 = 0x1B;
    /// IA32_TSC_DEADLINE.
    pub const TSC_DEADLINE: u32 = 0x6E0;
    /// x2APIC ID (read-only).
    pub const ID: u32 = 0x802;
    /// Version.
    pub const VERSION: u32 = 0x803;
    /// Reserved (offset 0x040): #GP.
    pub const RESERVED_0X40: u32 = 0x804;
    /// Task priority.
    pub const TPR: u32 = 0x808;
    /// Processor priority.
    pub const PPR: u32 = 0x80A;
    /// EOI (write-only).
    pub const EOI: u32 = 0x80B;
    /// Logical destination (read-only, derived from the ID).
    pub const LDR: u32 = 0x80D;
    /// Spurious interrupt vector.
    pub const SVR: u32 = 0x80F;
    /// In-service, word n (vectors 32n..32n+31) at `ISR + n`.
    pub const ISR: u32 = 0x810;
    /// Interrupt request, word n at `IRR + n`.
    pub const IRR: u32 = 0x820;
    /// Interrupt command, 64 bits.
    pub const ICR: u32 = 0x830;
    /// SELF IPI (write-only).
    pub const SELF_IPI: u32 = 0x83F;
}

/// IA32_APIC_BASE values at the default base 0xFEE00000, with BSP set.
pub mod base {
    /// xAPIC mode (EN).
    pub const XAPIC: u64 = 0xFEE0_0900;
    /// x2APIC mode (EN | EXTD).
    pub const X2APIC: u64 = 0xFEE0_0D00;
    /// x2APIC mode of an application processor (EN | EXTD, no BSP).
    pub const AP_X2APIC: u64 = 0xFEE0_0C00;
    /// Globally disabled (neither).
    pub const DISABLED: u64 = 0xFEE0_0100;
    /// EXTD without EN: the invalid state.
    pub const INVALID: u64 = 0xFEE0_0500;
}

/// A 32-bit write to LAPIC register `offset`.
pub fn lapic_write(offset: u32, value: u32) -> Op {
    Op::MmioWrite { addr: LAPIC_PAGE + u64::from(offset), wide: false, value: u64::from(value) }
}

/// A 32-bit read of LAPIC register `offset` (logged).
pub fn lapic_read(offset: u32) -> Op {
    Op::MmioRead { addr: LAPIC_PAGE + u64::from(offset), wide: false }
}

/// SVR = 0x1FF: software enable, spurious vector 0xFF.
pub fn lapic_enable() -> Op {
    lapic_write(reg::SVR, 0x1FF)
}

/// EOI by MMIO.
pub fn eoi() -> Op {
    lapic_write(reg::EOI, 0)
}

/// Sends `low` (vector, mode, shorthand) to APIC `dest` (ICR2 then ICR).
pub fn ipi(dest: u8, low: u32) -> [Op; 2] {
    [lapic_write(reg::ICR2, u32::from(dest) << 24), lapic_write(reg::ICR, low)]
}

/// A fixed self-IPI of `vector` (ICR shorthand self).
pub fn self_ipi(vector: u8) -> Op {
    lapic_write(reg::ICR, icr::SELF | u32::from(vector))
}

/// INIT, then a start-up IPI with [`SIPI_VECTOR`], to APIC `dest` (the AP starts at the
/// harness's trampoline and then its program).
pub fn start_ap(dest: u8) -> Vec<Op> {
    let mut ops = Vec::new();
    ops.extend(ipi(dest, icr::INIT | icr::ASSERT)); // INIT, level assert, physical
    ops.push(lapic_write(reg::ICR, icr::STARTUP | icr::ASSERT | u32::from(SIPI_VECTOR))); // SIPI
    ops
}

/// IOAPIC indirect register indices.
pub mod ioreg {
    /// IOAPICID (bits 27:24).
    pub const ID: u32 = 0x00;
    /// IOAPICVER.
    pub const VERSION: u32 = 0x01;
    /// IOAPICARB.
    pub const ARB: u32 = 0x02;

    /// Redirection entry `pin`, low dword.
    pub const fn low(pin: u8) -> u32 {
        0x10 + 2 * pin as u32
    }

    /// Redirection entry `pin`, high dword.
    pub const fn high(pin: u8) -> u32 {
        0x11 + 2 * pin as u32
    }
}

/// Redirection-entry low-dword bits.
pub mod rte {
    /// Remote IRR (read-only).
    pub const REMOTE_IRR: u32 = 1 << 14;
    /// Level triggered.
    pub const LEVEL: u32 = 1 << 15;
    /// Masked.
    pub const MASKED: u32 = 1 << 16;
    /// The power-on value.
    pub const RESET: u32 = MASKED;
}

/// IOREGSEL := `index`, IOWIN := `value`.
pub fn ioapic_write(index: u32, value: u32) -> [Op; 2] {
    [
        Op::MmioWrite { addr: IOAPIC_PAGE, wide: false, value: u64::from(index) },
        Op::MmioWrite { addr: IOAPIC_PAGE + 0x10, wide: false, value: u64::from(value) },
    ]
}

/// IOREGSEL := `index`, read IOWIN (logged).
pub fn ioapic_read(index: u32) -> [Op; 2] {
    [
        Op::MmioWrite { addr: IOAPIC_PAGE, wide: false, value: u64::from(index) },
        Op::MmioRead { addr: IOAPIC_PAGE + 0x10, wide: false },
    ]
}

/// Programs pin `pin`: destination APIC 0 (physical), then the low dword `low` (vector,
/// trigger, mask), high dword first as Linux does.
pub fn route(pin: u8, low: u32) -> Vec<Op> {
    let mut ops = Vec::new();
    ops.extend(ioapic_write(ioreg::high(pin), 0));
    ops.extend(ioapic_write(ioreg::low(pin), low));
    ops
}

/// The EOI register of a version-0x20 IOAPIC (+0x40): ends `vector`.
pub fn ioapic_eoir(vector: u8) -> Op {
    Op::MmioWrite { addr: IOAPIC_PAGE + 0x40, wide: false, value: u64::from(vector) }
}

/// Host: drive GSI `irq` (PIC line and IOAPIC pin) to `level`.
pub fn gsi(irq: u8, level: bool) -> Op {
    Op::Host(HostOp::SetIrq { irq, level })
}

/// The prologue of an IOAPIC scenario: the PIC initialised and fully masked (KVM's default
/// routing sends GSIs 0–15 to the PIC as well; an unprogrammed 8259 would deliver them at
/// vector base 0, and ICW1 clears the mask register, so the masks come after the ICWs), then
/// the BSP's LAPIC software-enabled.
pub fn ioapic_prologue() -> Vec<Op> {
    let mut ops = super::linux_init();
    ops.push(super::out(0x21, 0xFF)); // OCW1: mask the master
    ops.push(super::out(0xA1, 0xFF)); // OCW1: mask the slave
    ops.push(lapic_enable());
    ops
}
