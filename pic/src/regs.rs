//! Port addresses and command-word bit names, as the 8259A datasheet and the PIIX/ICH
//! datasheets spell them.
//!
//! The guest talks to each 8259A through two I/O ports selected by address line A0:
//! A0=0 takes ICW1, OCW2 and OCW3 and reads IRR/ISR/poll; A0=1 takes ICW2–ICW4 during
//! initialisation and OCW1 (the mask) afterwards, and reads the mask.

use bitflags::bitflags;

/// Master 8259A, A0=0: ICW1, OCW2, OCW3; reads IRR, ISR or the poll byte.
pub const MASTER_COMMAND: u16 = 0x20;
/// Master 8259A, A0=1: ICW2–ICW4, OCW1 (IMR); reads IMR.
pub const MASTER_DATA: u16 = 0x21;
/// Slave 8259A, A0=0: ICW1, OCW2, OCW3; reads IRR, ISR or the poll byte.
pub const SLAVE_COMMAND: u16 = 0xA0;
/// Slave 8259A, A0=1: ICW2–ICW4, OCW1 (IMR); reads IMR.
pub const SLAVE_DATA: u16 = 0xA1;
/// PIIX/ICH edge/level control register for IRQ0–7 (ELCR1).
pub const ELCR1: u16 = 0x4D0;
/// PIIX/ICH edge/level control register for IRQ8–15 (ELCR2).
pub const ELCR2: u16 = 0x4D1;
/// Every port the PIC pair decodes, for registering it on a VMM's I/O bus.
pub const PORTS: [u16; 6] = [MASTER_COMMAND, MASTER_DATA, SLAVE_COMMAND, SLAVE_DATA, ELCR1, ELCR2];

/// ELCR1 bits that can be programmed: IRQ0, IRQ1 and IRQ2 are hard-wired edge on PIIX.
pub const ELCR1_MASK: u8 = 0xF8;
/// ELCR2 bits that can be programmed: IRQ8 and IRQ13 are hard-wired edge on PIIX.
pub const ELCR2_MASK: u8 = 0xDE;

/// The master input that the slave's INT output drives (IR2).
pub const CASCADE_IRQ: u8 = 2;

/// The PC's master ICW3: a slave on IR2 only. The state holds it until the guest writes
/// ICW3, and always in a profile with [`crate::Quirks::ICW3_IGNORED`].
pub const PC_MASTER_ICW3: u8 = 1 << CASCADE_IRQ;
/// The PC's slave ICW3: slave ID 2, the cascade address of master IR2.
pub const PC_SLAVE_ICW3: u8 = CASCADE_IRQ;
/// The bits of a slave's ICW3 that hold its ID (the datasheet's ID2:0; bits 7:3 are 0).
pub const SLAVE_ID_MASK: u8 = 0x07;

/// What the CPU reads as the vector when the master addresses a slave that does not answer:
/// no chip drives the data bus in the second INTA cycle, and the floating bus reads all ones.
pub const FLOATING_BUS: u8 = 0xFF;

bitflags! {
    /// Initialisation command word 1 (A0=0, D4=1). Writing it always restarts initialisation.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Icw1: u8 {
        /// ICW4 needed: the sequence ends with ICW4.
        const IC4 = 1 << 0;
        /// Single: no slave, so no ICW3 in the sequence.
        const SNGL = 1 << 1;
        /// Call address interval (8080 mode only; ignored in 8086 mode).
        const ADI = 1 << 2;
        /// Level-triggered mode for all eight inputs.
        const LTIM = 1 << 3;
        /// D4=1 is what marks the byte as ICW1.
        const ICW1 = 1 << 4;
    }
}

bitflags! {
    /// Initialisation command word 4 (A0=1, only when ICW1.IC4=1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Icw4: u8 {
        /// 8086/8088 mode (µPM); 0 selects the 8080/85 CALL sequence, which the model treats as 8086 mode.
        const UPM = 1 << 0;
        /// Automatic end of interrupt: ISR is cleared at the end of the acknowledge.
        const AEOI = 1 << 1;
        /// Master/slave in buffered mode (bus-level; no effect in the model).
        const MS = 1 << 2;
        /// Buffered mode (bus-level; no effect in the model).
        const BUF = 1 << 3;
        /// Special fully nested mode: the master does not lock out further slave requests
        /// while one is in service.
        const SFNM = 1 << 4;
    }
}

bitflags! {
    /// Operation command word 3 (A0=0, D4:3 = 01).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Ocw3: u8 {
        /// Read in-service register (honoured only together with RR).
        const RIS = 1 << 0;
        /// Read register: RIS selects what A0=0 reads.
        const RR = 1 << 1;
        /// Poll: the next read is an interrupt acknowledge that returns the poll byte.
        const P = 1 << 2;
        /// D3=1 (with D4=0) is what marks the byte as OCW3.
        const OCW3 = 1 << 3;
        /// Special mask mode value (honoured only together with ESMM).
        const SMM = 1 << 5;
        /// Enable special mask mode change.
        const ESMM = 1 << 6;
    }
}

/// The command encoded in bits D7:5 (R, SL, EOI) of operation command word 2 (A0=0, D4:3 = 00);
/// bits D2:0 carry the level L used by the specific commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ocw2 {
    /// 000: rotate in automatic EOI mode (clear).
    ClearRotateInAutoEoi,
    /// 001: non-specific EOI: clear the highest-priority in-service bit.
    NonSpecificEoi,
    /// 010: no operation.
    Nop,
    /// 011: specific EOI: clear the in-service bit of level L.
    SpecificEoi(u8),
    /// 100: rotate in automatic EOI mode (set).
    SetRotateInAutoEoi,
    /// 101: rotate on non-specific EOI: clear the highest in-service bit and make it lowest priority.
    RotateOnNonSpecificEoi,
    /// 110: set priority: level L becomes the lowest priority.
    SetPriority(u8),
    /// 111: rotate on specific EOI: clear the in-service bit of L and make L lowest priority.
    RotateOnSpecificEoi(u8),
}

impl Ocw2 {
    /// Decodes an OCW2 byte. Every byte decodes: D4:3 are not checked here.
    pub const fn decode(value: u8) -> Self {
        let level = value & 7;
        match value >> 5 {
            0 => Ocw2::ClearRotateInAutoEoi,
            1 => Ocw2::NonSpecificEoi,
            2 => Ocw2::Nop,
            3 => Ocw2::SpecificEoi(level),
            4 => Ocw2::SetRotateInAutoEoi,
            5 => Ocw2::RotateOnNonSpecificEoi,
            6 => Ocw2::SetPriority(level),
            _ => Ocw2::RotateOnSpecificEoi(level),
        }
    }

    /// Encodes the command as the byte a guest writes to the A0=0 port.
    pub const fn encode(self) -> u8 {
        match self {
            Ocw2::ClearRotateInAutoEoi => 0x00,
            Ocw2::NonSpecificEoi => 0x20,
            Ocw2::Nop => 0x40,
            Ocw2::SpecificEoi(l) => 0x60 | (l & 7),
            Ocw2::SetRotateInAutoEoi => 0x80,
            Ocw2::RotateOnNonSpecificEoi => 0xA0,
            Ocw2::SetPriority(l) => 0xC0 | (l & 7),
            Ocw2::RotateOnSpecificEoi(l) => 0xE0 | (l & 7),
        }
    }
}

/// Poll byte bit 7: an interrupt was pending (bits 2:0 then hold its level).
pub const POLL_INT: u8 = 0x80;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ocw2_decode_encode_round_trips_every_byte_with_d4_d3_clear() {
        for value in 0..=255u8 {
            if value & 0x18 == 0 {
                let cmd = Ocw2::decode(value);
                // Commands without a level ignore L2:0, so compare only what they encode.
                let expected = match cmd {
                    Ocw2::SpecificEoi(_) | Ocw2::SetPriority(_) | Ocw2::RotateOnSpecificEoi(_) => value,
                    _ => value & 0xE0,
                };
                assert_eq!(cmd.encode(), expected, "byte {value:#04x}");
            }
        }
    }
}
