//! Behaviour profiles of the local APIC: the Intel SDM (no quirks) and Linux KVM's in-kernel
//! LAPIC (`arch/x86/kvm/lapic.c`).

use bitflags::bitflags;

bitflags! {
    /// Divergences from the SDM that a [`crate::lapic::LocalApic`] reproduces.
    ///
    /// `Quirks::empty()` is the SDM profile; [`Quirks::KVM`] sets every flag and follows
    /// Linux KVM's in-kernel local APIC, so that a differential test can demand agreement
    /// with the kernel register by register.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
    pub struct Quirks: u32 {
        /// KVM does not model the error status register: no error is ever recorded, the
        /// error LVT never fires, ESR reads 0 and ESR writes do nothing (an x2APIC write of a
        /// non-zero value still faults). Illegal vectors 0–15 are sent and accepted like any
        /// other, and reserved xAPIC offsets set no "illegal register address".
        /// SDM profile: illegal vectors are refused with ESR bits 5/6, reserved offsets set
        /// bit 7, the ESR latches on write, and the error LVT reports each error.
        const ESR_NOT_MODELLED = 1 << 0;
        /// KVM's WRMSR to the x2APIC EOI register accepts any value. SDM: a non-zero value
        /// raises #GP.
        const X2APIC_EOI_ANY_VALUE = 1 << 1;
        /// KVM checks only bits 63:32 (and the ICR's and SELF IPI's own reserved bits) on x2APIC
        /// writes and drops other reserved bits silently. SDM: a non-zero write to any reserved
        /// bit raises #GP (TPR 31:8, SVR, LVT, TDCR reserved bits).
        const X2APIC_RESERVED_BITS_DROPPED = 1 << 2;
        /// KVM reads the arbitration priority register as 0. SDM: APR is computed from TPR,
        /// the highest in-service and the highest requested vector.
        const APR_READS_ZERO = 1 << 3;
        /// KVM's `KVM_X86_QUIRK_LINT0_REENABLED`: after RESET and INIT the BSP's LVT LINT0 is
        /// ExtINT and unmasked (0x700), so the 8259A's interrupts reach a guest that never
        /// programs its APIC. SDM: every LVT entry is masked.
        const LINT0_REENABLED = 1 << 4;
        /// KVM ignores an ExtINT message from the IOAPIC, an MSI or an IPI (it takes PIC
        /// interrupts only through LINT0). SDM: the message makes the CPU fetch the vector from
        /// the 8259A ([`crate::lapic::PendingEvents::extint`]).
        const EXTINT_MESSAGE_IGNORED = 1 << 5;
        /// KVM stores some read-only and reserved bits as written: the delivery status bit of
        /// every LVT entry, the remote IRR bit of LVT LINT0/LINT1, and bits 13, 17:16 and 31:20 of
        /// the xAPIC ICR low word. SDM: these bits cannot be written.
        const RESERVED_BITS_STORED = 1 << 6;
        /// KVM keeps every register when IA32_APIC_BASE.EN is cleared. SDM: the register state
        /// is lost (the APIC returns to its power-up state, keeping only its ID).
        const DISABLE_KEEPS_STATE = 1 << 7;
        /// KVM delivers a level-triggered fixed or lowest-priority IPI as level-triggered (the
        /// target sets TMR and broadcasts its EOI), as AMD does. SDM (Intel): such an IPI is
        /// sent as edge-triggered when it asserts and not at all when it de-asserts.
        const LEVEL_IPI_KEPT = 1 << 8;
        /// KVM sends every ICR combination as written. SDM: the shorthands "self" and "all
        /// including self" take only fixed delivery, and the reserved delivery modes (011,
        /// 111) are not sent.
        const ICR_UNCHECKED = 1 << 9;
        /// KVM lets the guest write the BSP flag of IA32_APIC_BASE. SDM profile: it is set at
        /// RESET and guest writes do not change it.
        const BSP_WRITABLE = 1 << 10;
        /// KVM raises a periodic timer's period to at least 200 µs (`min_timer_period_us`),
        /// which also changes what the current count reads. SDM: the period is TMICT · divisor
        /// bus cycles.
        const PERIODIC_MIN_200US = 1 << 11;
        /// KVM starts an AP that was RESET in the "uninitialized" state: it ignores start-up
        /// IPIs until an INIT. SDM: after RESET an AP waits for a SIPI (MP initialization).
        const AP_NEEDS_INIT_AFTER_RESET = 1 << 12;
        /// KVM keeps no remote IRR for level-triggered LINT0/LINT1 interrupts: every local
        /// delivery is taken, and an EOI leaves the bit (which the guest may write) alone. SDM:
        /// remote IRR is set when the APIC takes a level LINT interrupt and cleared by its EOI,
        /// which re-takes a pin still asserted.
        const LINT_REMOTE_IRR_IGNORED = 1 << 13;
        /// KVM's `kvm_lapic_reg_read` writes nothing into the caller's buffer for an xAPIC
        /// read it does not decode: bytes past the register's first four
        /// (`(offset & 0xF) + len > 4`, so every 8-byte read, any read of bytes 4–15 of a slot
        /// and any read running past the page), a length other than 1, 2 or 4, and an offset
        /// with no readable register (reserved slots, EOI, remote read, offsets past 0x3F0).
        /// The guest then sees whatever the buffer held (under KVM, the instruction emulator's
        /// read cache). SDM profile: every in-page read returns the slot's bytes (the register
        /// in bytes 0–3, zeros above; unreadable offsets read 0) and a read past the page reads
        /// all ones.
        const UNDECODED_READS_UNWRITTEN = 1 << 14;
    }
}

impl Quirks {
    /// The SDM profile: no divergences.
    pub const SDM: Quirks = Quirks::empty();
    /// The profile of Linux KVM's in-kernel local APIC (Linux 6.18).
    pub const KVM: Quirks = Quirks::all();
}
