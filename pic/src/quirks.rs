//! Behaviour profiles: the datasheet (no quirks) and Linux KVM's in-kernel PIC.
//!
//! Each flag reproduces one documented divergence of KVM's `arch/x86/kvm/i8259.c` from the
//! 8259A datasheet, so that a differential test can demand bit-exact agreement with the
//! kernel while the default stays faithful to the hardware.

use bitflags::bitflags;

bitflags! {
    /// Divergences from the datasheet that a [`crate::Pic`] reproduces.
    ///
    /// `Quirks::empty()` is the datasheet profile; [`Quirks::KVM`] sets every flag and matches
    /// Linux KVM's in-kernel PIC bit for bit (state, vectors, reads, INT output).
    ///
    /// Both profiles keep an edge request latched after its line falls, as every emulator but
    /// Xen does. The datasheet asks a device to hold the line until the acknowledge and answers
    /// IR7 otherwise; that is a timing rule for real devices, which a VMM's [`crate::Pic::pulse_irq`]
    /// cannot meet. A level-triggered request withdrawn before the acknowledge is spurious IRQ7
    /// in both.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
    pub struct Quirks: u16 {
        /// Poll: KVM acknowledges *and* ends the polled level in one step (clears IRR, even of
        /// a level line still high, and ISR), answers 0x07 when nothing is pending, and a poll of
        /// the slave also clears the master's IRR2 and ISR2. Datasheet: the poll read is an
        /// acknowledge (ISR set until EOI) and answers with bit 7 clear when nothing is pending.
        const POLL_ACKS_AND_ENDS = 1 << 0;
        /// ICW1: KVM keeps ISR (except for levels with a pending edge request), the poll and
        /// rotate-in-AEOI flags, and AEOI/SFNM while IC4=1, and forgets the input levels, so a
        /// line held high across ICW1 counts as a fresh edge when it is asserted again. (KVM
        /// ends those levels only when some vCPU accepts PIC interrupts, LVT0 ExtINT unmasked
        /// or the APIC disabled, as at reset; the model assumes one does.)
        /// Datasheet profile: ICW1 clears ISR and those flags, and a held line needs a new edge.
        const ICW1_RETAINS_STATE = 1 << 1;
        /// KVM resolves and delivers requests while a chip is between ICW1 and its last ICW.
        /// Datasheet profile: INT is held low until initialisation completes, as Xen does,
        /// so no vector is taken from a half-programmed base.
        const LIVE_DURING_INIT = 1 << 2;
        /// Special mask mode is recorded but has no effect in KVM (neither in priority
        /// resolution nor in non-specific EOI).
        const SPECIAL_MASK_IGNORED = 1 << 3;
        /// Special fully nested mode: KVM ignores master ISR2 for every request, so a lower
        /// master level (IR3–IR7) passes while a slave interrupt is in service. Datasheet:
        /// only the slave's own (IR2) requests bypass ISR2.
        const SFNM_FOR_EVERY_REQUEST = 1 << 4;
        /// Cascade: KVM pulses master IR2 whenever the slave has a request, latching master
        /// IRR2 as an edge; a slave request withdrawn before the acknowledge then yields the
        /// spurious slave vector (IRQ15) with master ISR2 set. Datasheet profile: IR2 follows
        /// the slave's INT output as a level wire, so a withdrawn request yields spurious IRQ7.
        const CASCADE_LATCHED = 1 << 5;
        /// KVM ignores ICW1.SNGL: ICW3 is always expected and IR2 always cascades.
        const SNGL_IGNORED = 1 << 6;
        /// KVM ignores ICW1.LTIM: only ELCR selects level triggering.
        const LTIM_IGNORED = 1 << 7;
        /// KVM samples level inputs only when a line changes; changing ELCR does not make IRR
        /// follow the line. Datasheet profile: a level-triggered IRR bit always equals the line.
        const ELCR_NO_RESAMPLE = 1 << 8;
        /// KVM ignores accesses wider than one byte (writes dropped, reads return 0).
        /// Datasheet profile: the PC bus splits them into byte accesses at consecutive ports.
        const WIDE_ACCESS_IGNORED = 1 << 9;
        /// KVM latches INT (its `output`) and re-evaluates it only where it calls
        /// `pic_update_irq`: line changes, the acknowledge, EOI and priority commands, OCW1, a
        /// poll (except a master poll that answers IR2) and KVM_SET_IRQCHIP. After ICW1 or a
        /// master poll INT can stay high with nothing pending (the acknowledge then answers
        /// spurious IRQ7) or stay low with a request pending until the next such point.
        /// Datasheet profile: INT always reflects the registers.
        const INT_LATCHED = 1 << 10;
        /// KVM ignores ICW3: master IR2 always cascades to the slave, which always answers,
        /// and no other input cascades; the ICW3 bytes are not kept (the state holds the PC
        /// values 0x04 and 0x02). Datasheet profile: the master cascades the inputs whose
        /// ICW3 bit is set (IR2 without it is an ordinary input with the master's vector) and
        /// the slave answers only the cascade address equal to its ID (ICW3 bits 2:0).
        const ICW3_IGNORED = 1 << 11;
    }
}

impl Quirks {
    /// The datasheet profile: no divergences.
    pub const DATASHEET: Quirks = Quirks::empty();
    /// The profile of Linux KVM's in-kernel PIC (`arch/x86/kvm/i8259.c`; poll as measured on
    /// Linux 6.18).
    pub const KVM: Quirks = Quirks::POLL_ACKS_AND_ENDS
        .union(Quirks::ICW1_RETAINS_STATE)
        .union(Quirks::LIVE_DURING_INIT)
        .union(Quirks::SPECIAL_MASK_IGNORED)
        .union(Quirks::SFNM_FOR_EVERY_REQUEST)
        .union(Quirks::CASCADE_LATCHED)
        .union(Quirks::SNGL_IGNORED)
        .union(Quirks::LTIM_IGNORED)
        .union(Quirks::ELCR_NO_RESAMPLE)
        .union(Quirks::WIDE_ACCESS_IGNORED)
        .union(Quirks::INT_LATCHED)
        .union(Quirks::ICW3_IGNORED);
}
