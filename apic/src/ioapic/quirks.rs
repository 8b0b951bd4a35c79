//! Behaviour profiles: the 82093AA datasheet (no quirks) and Linux KVM's in-kernel IOAPIC.
//!
//! Each flag reproduces one documented divergence of KVM's `arch/x86/kvm/ioapic.c` from the
//! datasheet, so that a differential test can demand agreement with the kernel while the
//! default stays faithful to the hardware. Flags are independent: any combination is valid.

use bitflags::bitflags;

bitflags! {
    /// Divergences from the datasheet that an [`crate::ioapic::IoApic`] reproduces.
    ///
    /// `Quirks::empty()` ([`Quirks::DATASHEET`]) is the datasheet profile; [`Quirks::KVM`] sets
    /// every flag and follows Linux KVM's in-kernel IOAPIC.
    ///
    /// Behaviour every profile shares, because every emulator (KVM included) does it: the
    /// polarity bit is stored and ignored, delivery status always reads 0, a level→edge
    /// write clears Remote IRR, and the interrupt-storm throttle of
    /// [`crate::ioapic::IoApicConfig::storm_threshold`] applies.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
    pub struct Quirks: u16 {
        /// KVM reads 0xFFFF_FFFF from the reserved indirect registers 0x03–0x0F (an unsigned
        /// index underflow in `ioapic_read_indirect`) and from redirection-table indices past
        /// the last entry (0x40–0xFF). Datasheet profile: reserved registers read 0.
        const RESERVED_READS_ALL_ONES = 1 << 0;
        /// KVM decodes 1-, 2-, 4- and 8-byte accesses to IOREGSEL, IOWIN (and, in this model,
        /// EOIR): a write takes the low 1, 2 or 4 bytes (an 8-byte write its low dword)
        /// zero-extended to 32 bits, so a byte write to IOWIN clears bits 31:8 of the
        /// selected register; a read returns the low bytes of the 32-bit value (8 bytes:
        /// zero-extended). Other widths are ignored (reads give zeros). Datasheet profile:
        /// IOWIN and EOIR take only 32-bit accesses; IOREGSEL takes its low byte at any width
        /// from 1 to 8. Either way a width other than 4 is reported as
        /// [`crate::ioapic::AccessError::Width`].
        const ANY_ACCESS_WIDTH = 1 << 1;
        /// A rising edge on a masked edge-triggered pin is not delivered (as the datasheet
        /// says) but KVM keeps the pin's `irr` bit while the line stays high, so it shows in
        /// `kvm_ioapic_state.irr` and KVM_SET_IRQCHIP ([`crate::ioapic::IoApic::set_irqchip`])
        /// re-asserts it, delivering it if the entry is unmasked by then. Datasheet profile:
        /// the edge is dropped and not held pending (82093AA: "masked edges are ignored").
        const MASKED_EDGE_KEEPS_IRR = 1 << 2;
        /// KVM sets Remote IRR only if at least one LAPIC accepted the level-triggered
        /// message. The IOAPIC cannot see that; the VMM reports a message that no LAPIC
        /// accepted with [`crate::ioapic::IoApic::not_accepted`], which then clears Remote
        /// IRR (the interrupt is re-sent on the next EOI of its vector, RTE write, line
        /// assert or storm timer). Datasheet profile: Remote IRR is set on every level
        /// delivery and `not_accepted` changes nothing (as QEMU).
        const REMOTE_IRR_NEEDS_ACCEPT = 1 << 3;
        /// KVM's EOI acts on every entry with the EOI'd vector, edge-triggered ones included:
        /// it clears their Remote IRR and re-sends an unmasked edge entry whose line is still
        /// high (and counts it for the storm throttle). Datasheet profile: an EOI affects
        /// level-triggered entries only.
        const EOI_ANY_TRIGGER_MODE = 1 << 4;
        /// KVM keeps a pin's successive-EOI storm counter across redirection-entry writes.
        /// Datasheet profile: an entry write restarts the count (as QEMU does).
        const STORM_COUNT_KEPT_ON_WRITE = 1 << 5;
        /// KVM's RTC EOI tracking (`rtc_status`, for `KVM_IRQ_LINE_STATUS`): while the last
        /// RTC interrupt (GSI 8) that an assert delivered still awaits the EOI of some vCPU
        /// that took it, an assert of pin 8 is [`crate::ioapic::LineStatus::Coalesced`]
        /// (KVM: 0) and nothing is sent, edge- or level-triggered, masked or not (Windows
        /// counts lost RTC ticks with it). The VMM feeds the tracking:
        /// [`crate::ioapic::IoApic::rtc_delivered`] with the bus's
        /// [`crate::bus::Delivery`] of that message, [`crate::ioapic::IoApic::rtc_eoi`] with
        /// every vector a vCPU EOIs (edge-triggered ones too), and
        /// [`crate::ioapic::IoApic::rtc_restore`] after a state restore; a VMM that never
        /// calls `rtc_delivered` sees no coalescing. Datasheet profile: pin 8 is an ordinary
        /// pin.
        const RTC_EOI_TRACKING = 1 << 6;
    }
}

impl Quirks {
    /// The datasheet profile: no divergences.
    pub const DATASHEET: Quirks = Quirks::empty();
    /// The profile of Linux KVM's in-kernel IOAPIC (`arch/x86/kvm/ioapic.c`).
    pub const KVM: Quirks = Quirks::RESERVED_READS_ALL_ONES
        .union(Quirks::ANY_ACCESS_WIDTH)
        .union(Quirks::MASKED_EDGE_KEEPS_IRR)
        .union(Quirks::REMOTE_IRR_NEEDS_ACCEPT)
        .union(Quirks::EOI_ANY_TRIGGER_MODE)
        .union(Quirks::STORM_COUNT_KEPT_ON_WRITE)
        .union(Quirks::RTC_EOI_TRACKING);
}
