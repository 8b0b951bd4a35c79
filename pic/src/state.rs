//! Plain-data state of the PIC pair, field-compatible with KVM's `kvm_pic_state`.

use crate::regs::{ELCR1_MASK, ELCR2_MASK, PC_MASTER_ICW3, PC_SLAVE_ICW3, SLAVE_ID_MASK};

/// Where a chip is in its initialisation sequence (KVM's `init_state` encoding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum InitState {
    /// Initialised: A0=1 writes are OCW1.
    #[default]
    Ready = 0,
    /// ICW1 seen; the next A0=1 write is ICW2 (vector base).
    Icw2 = 1,
    /// The next A0=1 write is ICW3 (cascade wiring).
    Icw3 = 2,
    /// The next A0=1 write is ICW4 (mode).
    Icw4 = 3,
}

impl InitState {
    /// Decodes KVM's `init_state` byte; `None` for values KVM never produces.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(InitState::Ready),
            1 => Some(InitState::Icw2),
            2 => Some(InitState::Icw3),
            3 => Some(InitState::Icw4),
            _ => None,
        }
    }
}

/// One 8259A's registers and mode flags.
///
/// The first sixteen fields are `kvm_pic_state`'s, with its names and meanings;
/// `single_mode` and `ltim` are the two ICW1 modes KVM does not keep, and `icw3` is the ICW3
/// byte KVM does not keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ChipState {
    /// Input levels as the edge detector last sampled them (bit n = IRn).
    pub last_irr: u8,
    /// Interrupt request register, as the guest reads it with OCW3 and as `kvm_pic_state`
    /// carries it. On the master without [`crate::Quirks::CASCADE_LATCHED`] (datasheet
    /// profile), bit 2 is set while the slave's INT is high: the slave drives IR2 as a live
    /// wire, so IRR2 falls with it unless line 2 itself latched a request before the slave
    /// raised INT (an edge of line 2 while the slave holds IR2 high merges into the slave's
    /// request, as on the single IR2 pin).
    pub irr: u8,
    /// Interrupt mask register (OCW1).
    pub imr: u8,
    /// In-service register.
    pub isr: u8,
    /// The level that currently has the highest priority (rotation); the lowest is
    /// `priority_add - 1` modulo 8.
    pub priority_add: u8,
    /// Vector base from ICW2 (bits 7:3; the low three bits are the level on acknowledge).
    pub irq_base: u8,
    /// OCW3 read-register select: A0=0 reads ISR when set, IRR when clear.
    pub read_reg_select: bool,
    /// OCW3 poll command pending: the next read is a poll.
    pub poll: bool,
    /// Special mask mode (OCW3 SMM).
    pub special_mask: bool,
    /// Position in the initialisation sequence.
    pub init_state: InitState,
    /// Automatic end of interrupt (ICW4 AEOI).
    pub auto_eoi: bool,
    /// Rotate in automatic EOI mode (OCW2 set/clear).
    pub rotate_on_auto_eoi: bool,
    /// Special fully nested mode (ICW4 SFNM); acts on the master only.
    pub special_fully_nested_mode: bool,
    /// ICW4 expected (ICW1 IC4).
    pub init4: bool,
    /// Edge/level control register: a set bit makes that input level-triggered.
    pub elcr: u8,
    /// ELCR bits the guest may change (0xF8 master, 0xDE slave on PIIX).
    pub elcr_mask: u8,
    /// Single mode (ICW1 SNGL): no ICW3, and on the master IR2 is an ordinary input.
    pub single_mode: bool,
    /// Level-triggered mode for all inputs (ICW1 LTIM).
    pub ltim: bool,
    /// ICW3 as the guest last wrote it (kept across ICW1, and when ICW1.SNGL skips it). On
    /// the master, a 1 for each IR input with a slave: acknowledging such an input puts its
    /// number on CAS2:0 and the slave with that ID supplies the vector. On the slave, its ID
    /// in bits 2:0 (only those are stored; [`crate::Pic::restore`] refuses bits 7:3). Power-on
    /// and KVM: the PC's [`PC_MASTER_ICW3`] and [`PC_SLAVE_ICW3`].
    pub icw3: u8,
}

impl ChipState {
    /// Power-on state of the master: what KVM_CREATE_IRQCHIP gives (everything zero and
    /// ready, nothing masked, vector base 0; the guest initialises the chip before use).
    /// ICW3 holds the PC wiring (slave on IR2) until the guest writes its own.
    pub const MASTER_RESET: ChipState = ChipState::reset(ELCR1_MASK, PC_MASTER_ICW3);
    /// Power-on state of the slave (ICW3: slave ID 2).
    pub const SLAVE_RESET: ChipState = ChipState::reset(ELCR2_MASK, PC_SLAVE_ICW3);

    const fn reset(elcr_mask: u8, icw3: u8) -> Self {
        ChipState {
            last_irr: 0,
            irr: 0,
            imr: 0,
            isr: 0,
            priority_add: 0,
            irq_base: 0,
            read_reg_select: false,
            poll: false,
            special_mask: false,
            init_state: InitState::Ready,
            auto_eoi: false,
            rotate_on_auto_eoi: false,
            special_fully_nested_mode: false,
            init4: false,
            elcr: 0,
            elcr_mask,
            single_mode: false,
            ltim: false,
            icw3,
        }
    }

    fn validate(&self, chip: Chip) -> Result<(), StateError> {
        if self.priority_add > 7 {
            return Err(StateError::PriorityAdd { chip, value: self.priority_add });
        }
        if self.irq_base & 7 != 0 {
            return Err(StateError::IrqBase { chip, value: self.irq_base });
        }
        if self.elcr & !self.elcr_mask != 0 {
            return Err(StateError::ElcrOutsideMask { chip, elcr: self.elcr, mask: self.elcr_mask });
        }
        if chip == Chip::Slave && self.icw3 & !SLAVE_ID_MASK != 0 {
            return Err(StateError::SlaveIcw3 { value: self.icw3 });
        }
        Ok(())
    }
}

/// The state of the master/slave pair: both chips and the input lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PicState {
    /// The master 8259A (IRQ0–7, ports 0x20/0x21, ELCR1).
    pub master: ChipState,
    /// The slave 8259A (IRQ8–15, ports 0xA0/0xA1, ELCR2), cascaded on master IR2.
    pub slave: ChipState,
    /// Per IRQ line, the set of sources (bit n = source n) currently asserting it; a line is
    /// high while any source asserts it.
    pub sources: [u32; 16],
    /// The master's INT output as KVM latches it (`struct kvm_pic`'s `output`, which
    /// KVM_GET_IRQCHIP does not export): with [`crate::Quirks::INT_LATCHED`] INT changes only
    /// where KVM re-evaluates it. The datasheet profile computes INT from the registers and
    /// ignores this field.
    pub output: bool,
}

impl Default for PicState {
    fn default() -> Self {
        PicState {
            master: ChipState::MASTER_RESET,
            slave: ChipState::SLAVE_RESET,
            sources: [0; 16],
            output: false,
        }
    }
}

impl PicState {
    /// Checks every field for values the model cannot hold (a state is plain data and may
    /// come from a file or another host).
    pub fn validate(&self) -> Result<(), StateError> {
        self.master.validate(Chip::Master)?;
        self.slave.validate(Chip::Slave)
    }

    /// Input levels of one chip's eight lines (bit n = line n of that chip).
    pub fn line_levels(&self, chip: Chip) -> u8 {
        let base = match chip {
            Chip::Master => 0,
            Chip::Slave => 8,
        };
        let mut levels = 0u8;
        for (n, sources) in self.sources.iter().skip(base).take(8).enumerate() {
            if *sources != 0 {
                levels |= 1 << n;
            }
        }
        levels
    }
}

/// One of the two chips of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Chip {
    /// The master (IRQ0–7).
    Master,
    /// The slave (IRQ8–15).
    Slave,
}

/// Why a state was refused by [`crate::Pic::restore`] or a KVM conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    /// `priority_add` must be a level, 0–7.
    PriorityAdd {
        /// Chip that holds the value.
        chip: Chip,
        /// The value found.
        value: u8,
    },
    /// `irq_base` must have its low three bits clear (ICW2 T7:T3).
    IrqBase {
        /// Chip that holds the value.
        chip: Chip,
        /// The value found.
        value: u8,
    },
    /// ELCR has a bit set that its mask says is hard-wired edge.
    ElcrOutsideMask {
        /// Chip that holds the value.
        chip: Chip,
        /// ELCR found.
        elcr: u8,
        /// Mask found.
        mask: u8,
    },
    /// The slave's `icw3` has bits 7:3 set; the slave keeps only its ID (bits 2:0).
    SlaveIcw3 {
        /// The value found.
        value: u8,
    },
    /// A mode the PIC's profile ignores is set (SNGL or LTIM in a profile with
    /// [`crate::Quirks::SNGL_IGNORED`] / [`crate::Quirks::LTIM_IGNORED`], or an `icw3` other
    /// than the PC's with [`crate::Quirks::ICW3_IGNORED`]), so the state did not come from
    /// this profile.
    IgnoredMode {
        /// Chip that holds the value.
        chip: Chip,
        /// Field name.
        field: &'static str,
    },
    /// The slave's INT is high but master `irr` bit 2 is clear. Without
    /// [`crate::Quirks::CASCADE_LATCHED`] the slave's INT drives IR2 as a wire, so the guest
    /// would read IRR2 set: the state is not one this profile can be in (a KVM state taken
    /// before KVM latched the slave's request; `update_output` in a KVM-profile PIC latches it).
    CascadeNotInIrr,
    /// `init_state` is not 0–3 (KVM conversion only).
    InitState {
        /// Chip that holds the value.
        chip: Chip,
        /// The value found.
        value: u8,
    },
    /// A flag byte is neither 0 nor 1 (KVM conversion only), so it would not round-trip.
    NotAFlag {
        /// Chip that holds the value.
        chip: Chip,
        /// `kvm_pic_state` field name.
        field: &'static str,
        /// The value found.
        value: u8,
    },
}

impl core::fmt::Display for StateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StateError::PriorityAdd { chip, value } => write!(f, "{chip:?}: priority_add {value} is not 0-7"),
            StateError::IrqBase { chip, value } => {
                write!(f, "{chip:?}: irq_base {value:#04x} has bits 2:0 set")
            }
            StateError::ElcrOutsideMask { chip, elcr, mask } => {
                write!(f, "{chip:?}: elcr {elcr:#04x} sets bits outside elcr_mask {mask:#04x}")
            }
            StateError::SlaveIcw3 { value } => {
                write!(f, "Slave: icw3 {value:#04x} has bits 7:3 set (only the ID, bits 2:0, exists)")
            }
            StateError::CascadeNotInIrr => {
                write!(f, "Master: irr bit 2 is clear while the slave's INT drives IR2")
            }
            StateError::IgnoredMode { chip, field } => {
                write!(f, "{chip:?}: {field} is set but this profile ignores it")
            }
            StateError::InitState { chip, value } => write!(f, "{chip:?}: init_state {value} is not 0-3"),
            StateError::NotAFlag { chip, field, value } => {
                write!(f, "{chip:?}: {field} {value} is not 0 or 1")
            }
        }
    }
}

impl core::error::Error for StateError {}

#[cfg(all(test, feature = "serde"))]
mod serde_tests {
    extern crate std;

    use super::*;
    use crate::{Pic, Quirks};

    #[test]
    fn state_survives_serialization_and_still_validates_on_restore() {
        let mut pic = Pic::new(Quirks::DATASHEET);
        let _ = pic.write(crate::regs::MASTER_COMMAND, 0x19); // ICW1: LTIM, IC4
        pic.set_irq_source(9, 3, true).unwrap();
        let json = serde_json::to_string(&pic.state()).unwrap();
        assert!(json.contains("\"icw3\":4") && json.contains("\"icw3\":2"), "ICW3 is state: {json}");
        let back: PicState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, pic.state());

        // Deserialization accepts any bytes; restore is what refuses an impossible state.
        let tampered = json.replacen("\"priority_add\":0", "\"priority_add\":9", 1);
        let bad: PicState = serde_json::from_str(&tampered).unwrap();
        assert!(matches!(pic.restore(&bad), Err(StateError::PriorityAdd { value: 9, .. })));
    }
}
