//! Ports, control-word fields and status bits of the 8254, named as the Intel 8254 datasheet
//! (231164) names them, and the PIT bits of the PC's port 0x61 as Intel's PCH datasheets name
//! them (NMI Status and Control register, NMI_SC).

use bitflags::bitflags;

/// The PIT's input clock on the PC: 14.31818 MHz / 12 = 1,193,181.8 Hz, used as 1,193,182 Hz.
pub const CLOCK_HZ: u64 = 1_193_182;

/// Counter 0 data port (A1 A0 = 00). On the PC its OUT drives IRQ0.
pub const COUNTER0: u16 = 0x40;
/// Counter 1 data port (A1 A0 = 01). On the PC it once timed DRAM refresh.
pub const COUNTER1: u16 = 0x41;
/// Counter 2 data port (A1 A0 = 10). On the PC its GATE and OUT go through port 0x61 and its
/// OUT drives the speaker.
pub const COUNTER2: u16 = 0x42;
/// Control word register (A1 A0 = 11): write-only; a read is a no-operation on the 8254.
pub const CONTROL_WORD: u16 = 0x43;
/// The PC's port 0x61 (NMI_SC, "port B"): counter 2's gate, speaker data, the refresh toggle
/// and counter 2's OUT. Its other bits belong to the VMM (NMI sources and enables).
pub const NMI_SC: u16 = 0x61;
/// Every port the PIT decodes, for registering it on a VMM's I/O bus.
pub const PORTS: [u16; 5] = [COUNTER0, COUNTER1, COUNTER2, CONTROL_WORD, NMI_SC];

/// PIT clocks per half period of the refresh toggle (NMI_SC bit 4): 18 clocks = 15.085 µs,
/// the DRAM refresh request period of the PC/AT (counter 1, mode 2, count 18).
pub const REFRESH_TOGGLE_CLOCKS: u64 = 18;

bitflags! {
    /// The bits of port 0x61 (NMI_SC) that the PIT model owns. Reads return only these bits;
    /// the VMM ORs in the bits it owns (SERR#/IOCHK# status and their enables).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
    pub struct NmiSc: u8 {
        /// Timer counter 2 enable: drives counter 2's GATE input (read/write).
        const TIM_CNT2_EN = 1 << 0;
        /// Speaker data enable: ANDed with OUT2 to drive the speaker (read/write; stored only).
        const SPKR_DAT_EN = 1 << 1;
        /// Refresh cycle toggle: flips every 15.085 µs (read-only).
        const REF_TOGGLE = 1 << 4;
        /// Timer counter 2 OUT status: the level of counter 2's OUT pin (read-only).
        const TMR2_OUT_STS = 1 << 5;
    }
}

impl NmiSc {
    /// The bits a guest write can change.
    pub const WRITABLE: NmiSc = NmiSc::TIM_CNT2_EN.union(NmiSc::SPKR_DAT_EN);
}

/// Control word bits D7:D6 (SC1 SC0): which counter the word programs, or 11 = read-back.
pub const SC_SHIFT: u8 = 6;
/// Control word bits D5:D4 (RW1 RW0): 00 is the counter latch command, else the access mode.
pub const RW_SHIFT: u8 = 4;
/// Control word bits D3:D1 (M2 M1 M0): the mode.
pub const M_SHIFT: u8 = 1;
/// Control word bit D0: binary coded decimal counting (4 decades) instead of 16-bit binary.
pub const BCD: u8 = 1 << 0;

bitflags! {
    /// The read-back command (control word with SC1 SC0 = 11). COUNT and STATUS are active
    /// low: a clear bit latches that item for each selected counter. D0 is reserved (0).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct ReadBack: u8 {
        /// D1: select counter 0.
        const CNT0 = 1 << 1;
        /// D2: select counter 1.
        const CNT1 = 1 << 2;
        /// D3: select counter 2.
        const CNT2 = 1 << 3;
        /// D4 (active low): 0 latches the status of the selected counters.
        const STATUS = 1 << 4;
        /// D5 (active low): 0 latches the count of the selected counters.
        const COUNT = 1 << 5;
    }
}

bitflags! {
    /// The status byte a read-back command latches. D5:D0 repeat the counter's last control
    /// word (RW1 RW0 M2 M1 M0 BCD, as written: mode 6 reads back as 6).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Status: u8 {
        /// D7 OUTPUT: the level of the OUT pin.
        const OUTPUT = 1 << 7;
        /// D6 NULL COUNT: a count was written (or a control word) and has not yet been
        /// loaded into the counting element, so a read would not reflect it.
        const NULL_COUNT = 1 << 6;
        /// D5:D0: the programmed control-word bits.
        const _ = 0x3F;
    }
}

/// One of the three counters (SC1 SC0 = 00, 01, 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Counter {
    /// Counter 0: OUT0 is IRQ0.
    Counter0 = 0,
    /// Counter 1: historically DRAM refresh; nothing is wired to OUT1 in a VM.
    Counter1 = 1,
    /// Counter 2: gate and OUT through port 0x61; the speaker and TSC calibration counter.
    Counter2 = 2,
}

impl Counter {
    /// All three counters, in order.
    pub const ALL: [Counter; 3] = [Counter::Counter0, Counter::Counter1, Counter::Counter2];

    /// The counter whose data port is `port` (0x40–0x42).
    pub const fn from_port(port: u16) -> Option<Counter> {
        match port {
            COUNTER0 => Some(Counter::Counter0),
            COUNTER1 => Some(Counter::Counter1),
            COUNTER2 => Some(Counter::Counter2),
            _ => None,
        }
    }

    /// The counter's data port.
    pub const fn port(self) -> u16 {
        match self {
            Counter::Counter0 => COUNTER0,
            Counter::Counter1 => COUNTER1,
            Counter::Counter2 => COUNTER2,
        }
    }

    /// The counter's select bit in a read-back command.
    pub const fn read_back_bit(self) -> ReadBack {
        match self {
            Counter::Counter0 => ReadBack::CNT0,
            Counter::Counter1 => ReadBack::CNT1,
            Counter::Counter2 => ReadBack::CNT2,
        }
    }
}

/// The read/write format of a counter's data port (RW1 RW0 of its control word).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Access {
    /// 01: least significant byte only (the MSB of a written count is 0).
    Lsb = 1,
    /// 10: most significant byte only (the LSB of a written count is 0).
    Msb = 2,
    /// 11: least significant byte first, then most significant byte (the read and write
    /// flip-flops select the byte).
    #[default]
    LsbMsb = 3,
}

impl Access {
    /// RW1 RW0 as a two-bit value; `None` for 00, the counter latch command.
    pub const fn from_bits(rw: u8) -> Option<Access> {
        match rw & 3 {
            1 => Some(Access::Lsb),
            2 => Some(Access::Msb),
            3 => Some(Access::LsbMsb),
            _ => None,
        }
    }
}

/// The six counter modes (M2 M1 M0; 110 and 111 are modes 2 and 3 again).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Mode 0: OUT goes low when the count is written and high at terminal count; the gate
    /// suspends counting.
    InterruptOnTerminalCount,
    /// Mode 1: a gate rising edge loads the count and sets OUT low until terminal count;
    /// retriggerable.
    HardwareRetriggerableOneShot,
    /// Mode 2: divide by N; OUT goes low for one clock when the count reaches 1, then the
    /// count reloads. The gate suspends counting, and its rising edge reloads.
    RateGenerator,
    /// Mode 3: square wave, OUT high for ⌈N/2⌉ clocks and low for ⌊N/2⌋; the gate behaves as
    /// in mode 2.
    SquareWave,
    /// Mode 4: OUT goes low for one clock when the count reaches 0, once per written count;
    /// the gate suspends counting.
    SoftwareTriggeredStrobe,
    /// Mode 5: as mode 4, but started (and restarted) by a gate rising edge.
    HardwareTriggeredStrobe,
}

impl Mode {
    /// Decodes M2 M1 M0 (the low three bits of `m`); 6 and 7 alias modes 2 and 3.
    pub const fn from_bits(m: u8) -> Mode {
        match m & 7 {
            0 => Mode::InterruptOnTerminalCount,
            1 => Mode::HardwareRetriggerableOneShot,
            2 | 6 => Mode::RateGenerator,
            3 | 7 => Mode::SquareWave,
            4 => Mode::SoftwareTriggeredStrobe,
            _ => Mode::HardwareTriggeredStrobe,
        }
    }

    /// The level OUT takes when a control word selects this mode.
    pub const fn initial_output(self) -> bool {
        !matches!(self, Mode::InterruptOnTerminalCount)
    }

    /// Whether a gate rising edge (re)starts counting from the initial count.
    pub const fn gate_triggers(self) -> bool {
        matches!(
            self,
            Mode::HardwareRetriggerableOneShot
                | Mode::RateGenerator
                | Mode::SquareWave
                | Mode::HardwareTriggeredStrobe
        )
    }
}

/// A decoded write to the control word register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlWord {
    /// RW1 RW0 = 00: latch the counter's count (ignored if a latched count is unread).
    CounterLatch(Counter),
    /// Program a counter: access format, mode bits M2..M0 as written (0–7) and BCD.
    Program {
        /// The counter programmed.
        counter: Counter,
        /// The data-port format.
        access: Access,
        /// M2 M1 M0 as written, 0–7.
        mode: u8,
        /// Count in BCD.
        bcd: bool,
    },
    /// SC1 SC0 = 11: latch count and/or status of several counters at once.
    ReadBack(ReadBack),
}

impl ControlWord {
    /// Decodes any byte written to port 0x43.
    pub const fn decode(value: u8) -> ControlWord {
        let counter = match value >> SC_SHIFT {
            0 => Counter::Counter0,
            1 => Counter::Counter1,
            2 => Counter::Counter2,
            _ => return ControlWord::ReadBack(ReadBack::from_bits_truncate(value)),
        };
        match Access::from_bits(value >> RW_SHIFT) {
            None => ControlWord::CounterLatch(counter),
            Some(access) => {
                ControlWord::Program { counter, access, mode: (value >> M_SHIFT) & 7, bcd: value & BCD != 0 }
            }
        }
    }

    /// Encodes the command as the byte a guest writes to port 0x43 (reserved bits zero).
    pub const fn encode(self) -> u8 {
        match self {
            ControlWord::CounterLatch(counter) => (counter as u8) << SC_SHIFT,
            ControlWord::Program { counter, access, mode, bcd } => {
                ((counter as u8) << SC_SHIFT)
                    | ((access as u8) << RW_SHIFT)
                    | ((mode & 7) << M_SHIFT)
                    | if bcd { BCD } else { 0 }
            }
            ControlWord::ReadBack(rb) => 0xC0 | rb.bits(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_word_decode_encode_round_trips_every_byte_but_read_back_reserved_bit() {
        for value in 0..=255u8 {
            let expected = if value >= 0xC0 { value & !1 } else { value };
            let expected = if value < 0xC0 && value & 0x30 == 0 { value & 0xC0 } else { expected };
            assert_eq!(ControlWord::decode(value).encode(), expected, "byte {value:#04x}");
        }
    }

    #[test]
    fn modes_six_and_seven_alias_rate_generator_and_square_wave() {
        assert_eq!(Mode::from_bits(6), Mode::RateGenerator);
        assert_eq!(Mode::from_bits(7), Mode::SquareWave);
    }
}
