//! Local APIC register offsets, MSR numbers and bit names, as the Intel SDM (Vol. 3, "Advanced
//! Programmable Interrupt Controller") spells them.
//!
//! In xAPIC mode each register is the low 32 bits of a 16-byte slot of the 4 KiB page at the
//! APIC base; in x2APIC mode register `offset` is MSR `0x800 + (offset >> 4)`.

use bitflags::bitflags;

/// Local APIC ID register (xAPIC: ID in bits 31:24; x2APIC: the 32-bit x2APIC ID, read-only).
pub const ID: u32 = 0x020;
/// Local APIC version register (read-only).
pub const VERSION: u32 = 0x030;
/// Task priority register.
pub const TPR: u32 = 0x080;
/// Arbitration priority register (xAPIC only).
pub const APR: u32 = 0x090;
/// Processor priority register (read-only).
pub const PPR: u32 = 0x0A0;
/// EOI register (write-only).
pub const EOI: u32 = 0x0B0;
/// Remote read register (xAPIC only; obsolete, reads 0).
pub const RRD: u32 = 0x0C0;
/// Logical destination register (read-only in x2APIC mode).
pub const LDR: u32 = 0x0D0;
/// Destination format register (xAPIC only).
pub const DFR: u32 = 0x0E0;
/// Spurious interrupt vector register.
pub const SVR: u32 = 0x0F0;
/// In-service register, eight 32-bit words at 0x100–0x170 (read-only).
pub const ISR: u32 = 0x100;
/// Trigger mode register, eight words at 0x180–0x1F0 (read-only).
pub const TMR: u32 = 0x180;
/// Interrupt request register, eight words at 0x200–0x270 (read-only).
pub const IRR: u32 = 0x200;
/// Error status register.
pub const ESR: u32 = 0x280;
/// LVT corrected machine-check error interrupt (CMCI).
pub const LVT_CMCI: u32 = 0x2F0;
/// Interrupt command register, low half (xAPIC; a write sends the IPI). In x2APIC mode the
/// whole 64-bit ICR is MSR 0x830.
pub const ICR_LOW: u32 = 0x300;
/// Interrupt command register, high half: destination in bits 31:24 (xAPIC only).
pub const ICR_HIGH: u32 = 0x310;
/// LVT timer register.
pub const LVT_TIMER: u32 = 0x320;
/// LVT thermal sensor register.
pub const LVT_THERMAL: u32 = 0x330;
/// LVT performance monitoring counters register.
pub const LVT_PERF: u32 = 0x340;
/// LVT LINT0 register.
pub const LVT_LINT0: u32 = 0x350;
/// LVT LINT1 register.
pub const LVT_LINT1: u32 = 0x360;
/// LVT error register.
pub const LVT_ERROR: u32 = 0x370;
/// Timer initial count register.
pub const TIMER_INITIAL_COUNT: u32 = 0x380;
/// Timer current count register (read-only).
pub const TIMER_CURRENT_COUNT: u32 = 0x390;
/// Timer divide configuration register.
pub const TIMER_DIVIDE_CONFIG: u32 = 0x3E0;
/// SELF IPI register (x2APIC only, write-only).
pub const SELF_IPI: u32 = 0x3F0;

/// The default physical base of the xAPIC page.
pub const DEFAULT_BASE: u64 = 0xFEE0_0000;
/// Size of the xAPIC MMIO page.
pub const MMIO_SIZE: u64 = 0x1000;

/// IA32_APIC_BASE (MSR 0x1B).
pub const IA32_APIC_BASE: u32 = 0x1B;
/// IA32_TSC_DEADLINE (MSR 0x6E0).
pub const IA32_TSC_DEADLINE: u32 = 0x6E0;
/// First MSR of the x2APIC register space: register `offset` is MSR `0x800 + (offset >> 4)`.
pub const X2APIC_MSR_BASE: u32 = 0x800;
/// Last MSR the x2APIC architecture reserves (0x800–0xBFF; registers exist only up to 0x83F).
pub const X2APIC_MSR_LAST: u32 = 0xBFF;

/// The version this model reports in VERSION bits 7:0 (integrated APIC, as KVM reports).
pub const APIC_VERSION: u32 = 0x14;
/// VERSION bit 24: EOI-broadcast suppression (directed EOI) is supported, so SVR bit 12 is
/// writable.
pub const VERSION_DIRECTED_EOI: u32 = 1 << 24;

bitflags! {
    /// IA32_APIC_BASE flags. The base address is bits MAXPHYADDR-1:12.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct ApicBase: u64 {
        /// BSP: this processor is the bootstrap processor.
        const BSP = 1 << 8;
        /// EXTD: x2APIC mode (with EN).
        const EXTD = 1 << 10;
        /// EN: the APIC is globally enabled.
        const EN = 1 << 11;
    }
}

/// IA32_APIC_BASE bits 11:0 that are not flags (reserved: 7:0 and 9).
pub const APIC_BASE_RESERVED_LOW: u64 = 0x2FF;
/// The base-address field mask before MAXPHYADDR limits it (bits 63:12).
pub const APIC_BASE_ADDRESS_MASK: u64 = !0xFFF;

bitflags! {
    /// Spurious interrupt vector register bits above the vector (bits 7:0).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Svr: u32 {
        /// APIC software enable.
        const APIC_ENABLE = 1 << 8;
        /// Focus processor checking disabled (1) or enabled (0) for lowest-priority delivery.
        const FOCUS_DISABLED = 1 << 9;
        /// EOI-broadcast suppression: EOIs of level-triggered vectors are not broadcast
        /// (writable only if VERSION bit 24 is set).
        const SUPPRESS_EOI_BROADCAST = 1 << 12;
    }
}

/// SVR bits software can write: vector, enable, focus; bit 12 only with directed EOI.
pub const SVR_WRITABLE: u32 = 0x3FF;

bitflags! {
    /// Bits common to the local vector table entries (vector in bits 7:0).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Lvt: u32 {
        /// Delivery status: send pending (read-only; this model never sets it).
        const DELIVERY_STATUS = 1 << 12;
        /// LINT0/LINT1 input pin polarity: 1 = active low.
        const INPUT_POLARITY = 1 << 13;
        /// LINT0/LINT1 remote IRR: a level-triggered fixed interrupt is in service (read-only).
        const REMOTE_IRR = 1 << 14;
        /// LINT0/LINT1 trigger mode: 1 = level.
        const LEVEL_TRIGGERED = 1 << 15;
        /// The entry is masked: its interrupt is not delivered.
        const MASKED = 1 << 16;
    }
}

/// LVT bits 7:0: vector.
pub const LVT_VECTOR: u32 = 0xFF;
/// LVT bits 10:8: delivery mode (CMCI, thermal, perf, LINT0, LINT1).
pub const LVT_DELIVERY_MODE: u32 = 0x700;
/// LVT timer bits 18:17: timer mode.
pub const LVT_TIMER_MODE: u32 = 0x3 << 17;
/// Reset value of every LVT entry: masked, everything else 0.
pub const LVT_RESET: u32 = Lvt::MASKED.bits();

/// The LVT timer's mode (bits 18:17).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum TimerMode {
    /// 00: count down once from the initial count.
    OneShot,
    /// 01: count down and reload from the initial count.
    Periodic,
    /// 10: fire when the TSC reaches IA32_TSC_DEADLINE.
    TscDeadline,
    /// 11: reserved; the timer does not run.
    Reserved,
}

impl TimerMode {
    /// The mode of LVT timer value `lvt`.
    #[inline]
    pub const fn of(lvt: u32) -> Self {
        match (lvt >> 17) & 3 {
            0 => TimerMode::OneShot,
            1 => TimerMode::Periodic,
            2 => TimerMode::TscDeadline,
            _ => TimerMode::Reserved,
        }
    }
}

bitflags! {
    /// Error status register bits (SDM "Error Handling").
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Esr: u32 {
        /// Send checksum error (P6 and Pentium APIC bus only; never set here).
        const SEND_CHECKSUM = 1 << 0;
        /// Receive checksum error (never set here).
        const RECEIVE_CHECKSUM = 1 << 1;
        /// Send accept error (never set here).
        const SEND_ACCEPT = 1 << 2;
        /// Receive accept error (never set here).
        const RECEIVE_ACCEPT = 1 << 3;
        /// Redirectable IPI: a lowest-priority IPI the APIC does not support (never set here:
        /// lowest-priority IPIs are delivered).
        const REDIRECTABLE_IPI = 1 << 4;
        /// Send illegal vector: the ICR or SELF IPI named a vector 0–15.
        const SEND_ILLEGAL_VECTOR = 1 << 5;
        /// Receive illegal vector: a message or local interrupt carried a vector 0–15.
        const RECEIVE_ILLEGAL_VECTOR = 1 << 6;
        /// Illegal register address: an xAPIC access to a reserved offset.
        const ILLEGAL_REGISTER_ADDRESS = 1 << 7;
    }
}

/// ICR bits 7:0: vector.
pub const ICR_VECTOR: u64 = 0xFF;
/// ICR bits 10:8: delivery mode.
pub const ICR_DELIVERY_MODE_SHIFT: u32 = 8;
/// ICR bit 11: destination mode logical.
pub const ICR_DEST_LOGICAL: u64 = 1 << 11;
/// ICR bit 12: delivery status (xAPIC: send pending; x2APIC: reserved). Always 0 here.
pub const ICR_DELIVERY_STATUS: u64 = 1 << 12;
/// ICR bit 14: level assert.
pub const ICR_LEVEL_ASSERT: u64 = 1 << 14;
/// ICR bit 15: trigger mode level.
pub const ICR_TRIGGER_LEVEL: u64 = 1 << 15;
/// ICR bits 19:18: destination shorthand.
pub const ICR_SHORTHAND_SHIFT: u32 = 18;
/// xAPIC ICR bits that can be written in the low half (everything but delivery status and the
/// reserved bits 13, 17:16 and 31:20).
pub const ICR_LOW_WRITABLE: u64 = 0x000C_CFFF;
/// xAPIC ICR high half: destination in bits 31:24 (63:56 of the 64-bit ICR); the rest is
/// reserved and dropped.
pub const ICR_HIGH_XAPIC_DEST: u64 = 0xFF00_0000_0000_0000;
/// x2APIC ICR bits that must be zero: 31:20, 17:16 and 13 (bit 12 is ignored).
pub const ICR_X2APIC_RESERVED: u64 = 0xFFF0_0000 | 0x3_0000 | 1 << 13;

/// TDCR bits that exist: 3, 1 and 0.
pub const TDCR_WRITABLE: u32 = 0xB;

/// The divisor TDCR value `tdcr` selects (bits 3,1,0: 000 ÷2 … 110 ÷128, 111 ÷1).
#[inline]
pub const fn divide_shift(tdcr: u32) -> u32 {
    let v = (tdcr & 3) | ((tdcr & 8) >> 1);
    v.wrapping_add(1) & 7
}

/// The LVT entries, in the order of their LVT index (and of KVM's `apic_lvt_mask`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum LvtEntry {
    /// Timer (0x320).
    Timer = 0,
    /// Thermal sensor (0x330).
    Thermal = 1,
    /// Performance monitoring counters (0x340).
    Perf = 2,
    /// LINT0 pin (0x350).
    Lint0 = 3,
    /// LINT1 pin (0x360).
    Lint1 = 4,
    /// Error (0x370).
    Error = 5,
    /// Corrected machine-check error interrupt (0x2F0); present only with six LVT entries.
    Cmci = 6,
}

impl LvtEntry {
    /// Every entry, in LVT index order.
    pub const ALL: [LvtEntry; 7] = [
        LvtEntry::Timer,
        LvtEntry::Thermal,
        LvtEntry::Perf,
        LvtEntry::Lint0,
        LvtEntry::Lint1,
        LvtEntry::Error,
        LvtEntry::Cmci,
    ];

    /// The register offset.
    #[inline]
    pub const fn offset(self) -> u32 {
        match self {
            LvtEntry::Timer => LVT_TIMER,
            LvtEntry::Thermal => LVT_THERMAL,
            LvtEntry::Perf => LVT_PERF,
            LvtEntry::Lint0 => LVT_LINT0,
            LvtEntry::Lint1 => LVT_LINT1,
            LvtEntry::Error => LVT_ERROR,
            LvtEntry::Cmci => LVT_CMCI,
        }
    }

    /// The entry at register `offset`, if it is one.
    #[inline]
    pub const fn at(offset: u32) -> Option<Self> {
        Some(match offset {
            LVT_TIMER => LvtEntry::Timer,
            LVT_THERMAL => LvtEntry::Thermal,
            LVT_PERF => LvtEntry::Perf,
            LVT_LINT0 => LvtEntry::Lint0,
            LVT_LINT1 => LvtEntry::Lint1,
            LVT_ERROR => LvtEntry::Error,
            LVT_CMCI => LvtEntry::Cmci,
            _ => return None,
        })
    }

    /// The bits software can write in this entry (SDM Figure "Local Vector Table"): vector and
    /// mask everywhere; the delivery mode except on the timer and error entries; the timer
    /// mode on the timer; polarity and trigger mode on LINT0/LINT1. Delivery status and remote
    /// IRR are read-only.
    #[inline]
    pub const fn writable(self) -> u32 {
        let common = LVT_VECTOR | Lvt::MASKED.bits();
        match self {
            LvtEntry::Timer => common | LVT_TIMER_MODE,
            LvtEntry::Error => common,
            LvtEntry::Thermal | LvtEntry::Perf | LvtEntry::Cmci => common | LVT_DELIVERY_MODE,
            LvtEntry::Lint0 | LvtEntry::Lint1 => {
                common | LVT_DELIVERY_MODE | Lvt::INPUT_POLARITY.bits() | Lvt::LEVEL_TRIGGERED.bits()
            }
        }
    }

    /// What KVM stores of a write (`apic_lvt_mask`): as [`LvtEntry::writable`] plus the
    /// delivery status bit, and on LINT0/LINT1 the remote IRR bit too.
    #[inline]
    pub const fn kvm_writable(self) -> u32 {
        let extra = match self {
            LvtEntry::Lint0 | LvtEntry::Lint1 => Lvt::DELIVERY_STATUS.bits() | Lvt::REMOTE_IRR.bits(),
            _ => Lvt::DELIVERY_STATUS.bits(),
        };
        self.writable() | extra
    }
}

/// The two local interrupt pins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Lint {
    /// LINT0: the 8259A's INTR in virtual-wire mode (and INTR itself while the APIC is
    /// globally disabled).
    Lint0,
    /// LINT1: normally NMI (and NMI itself while the APIC is globally disabled).
    Lint1,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divide_configuration_follows_the_sdm_table() {
        // TDCR bits 3,1,0 → divisor.
        let table = [
            (0b0000, 2),
            (0b0001, 4),
            (0b0010, 8),
            (0b0011, 16),
            (0b1000, 32),
            (0b1001, 64),
            (0b1010, 128),
            (0b1011, 1),
        ];
        for (tdcr, divisor) in table {
            assert_eq!(1 << divide_shift(tdcr), divisor, "TDCR {tdcr:#06b}");
        }
        // Bit 2 is reserved and does not change the divisor.
        assert_eq!(divide_shift(0b0100), divide_shift(0b0000));
    }

    #[test]
    fn lvt_entries_round_trip_through_their_offsets() {
        for entry in LvtEntry::ALL {
            assert_eq!(LvtEntry::at(entry.offset()), Some(entry));
        }
        assert_eq!(LvtEntry::at(ICR_LOW), None);
    }
}
