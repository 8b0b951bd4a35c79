//! Plain-data state of the PIT: three counters, the port 0x61 bits and the IRQ0 edge
//! bookkeeping. Time references are host nanoseconds; positions are PIT clocks.

use super::regs::{Access, Counter, Mode};

/// Where a counter's counting element is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Phase {
    /// A control word was written and no (complete) count since: the element holds `held`
    /// and does not count; OUT has the mode's initial level (low in mode 0, else high).
    #[default]
    Idle,
    /// A count was written but counting waits for a gate rising edge (modes 1 and 5 before
    /// their first trigger; modes 2 and 3 while the gate is low). The element holds `held`
    /// and OUT is high.
    Waiting,
    /// Modes 0 and 4 with the gate low: counting is suspended `position` clocks into the
    /// waveform of `loaded`.
    Paused {
        /// Clocks counted so far.
        position: u64,
    },
    /// Counting.
    Counting(Counting),
}

/// The time base of a counting element: at host time `start_ns + t`, with
/// `t = ⌊(now − start_ns)·1193182/10⁹⌋` clocks, the waveform of `loaded` is at position
/// `origin_position + (t − origin_tick)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Counting {
    /// Host nanoseconds at which clock 0 of this run began (the load or the gate trigger).
    pub start_ns: u64,
    /// Clock (since `start_ns`) at which the current waveform is at `origin_position`.
    pub origin_tick: u64,
    /// Waveform position at `origin_tick` (nonzero after a pause or a mode 2/3 reload).
    pub origin_position: u64,
    /// Modes 2 and 3: a count written during counting takes over at this clock (since
    /// `start_ns`), the end of the current period or half-period.
    pub reload_at: Option<u64>,
}

/// One counter's registers and flip-flops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ChannelState {
    /// M2 M1 M0 as written (0–7; 6 and 7 behave as 2 and 3 and read back as written).
    pub mode: u8,
    /// RW1 RW0: the data-port format.
    pub access: Access,
    /// BCD counting.
    pub bcd: bool,
    /// The count register (CR) as last written, raw 16 bits (BCD digits when `bcd`).
    pub count: u16,
    /// The initial count of the waveform now running (or last run), raw.
    pub loaded: u16,
    /// The counting element's raw value while not counting (`Idle`, `Waiting`).
    pub held: u16,
    /// NULL COUNT: a count (or control word) was written and not yet loaded.
    pub null_count: bool,
    /// Write flip-flop (LSB-then-MSB only): the LSB was written, the MSB comes next.
    pub write_msb_next: bool,
    /// The LSB held by the write flip-flop until the MSB arrives.
    pub write_lsb: u8,
    /// Read flip-flop (LSB-then-MSB only): the LSB was read, the MSB comes next.
    pub read_msb_next: bool,
    /// Output latch: a latched count not yet (fully) read.
    pub count_latch: Option<u16>,
    /// A latched status byte not yet read (it is read before a latched count).
    pub status_latch: Option<u8>,
    /// The GATE input (tied high on counters 0 and 1; port 0x61 bit 0 for counter 2).
    pub gate: bool,
    /// Where the counting element is.
    pub phase: Phase,
}

impl ChannelState {
    /// Power-on state of a counter with its gate at `gate`. The datasheet leaves power-on
    /// undefined; the model starts as if the control word "LSB then MSB, mode 0, binary" had
    /// been written: not counting, OUT low, NULL COUNT set, element 0.
    pub const fn reset(gate: bool) -> Self {
        ChannelState {
            mode: 0,
            access: Access::LsbMsb,
            bcd: false,
            count: 0,
            loaded: 0,
            held: 0,
            null_count: true,
            write_msb_next: false,
            write_lsb: 0,
            read_msb_next: false,
            count_latch: None,
            status_latch: None,
            gate,
            phase: Phase::Idle,
        }
    }

    fn validate(&self, counter: Counter) -> Result<(), StateError> {
        let bad = |what: &'static str| Err(StateError::Inconsistent { counter, what });
        if self.mode > 7 {
            return Err(StateError::Mode { counter, value: self.mode });
        }
        if counter != Counter::Counter2 && !self.gate {
            return bad("gate of counters 0 and 1 is tied high");
        }
        if self.access != Access::LsbMsb && (self.write_msb_next || self.read_msb_next) {
            return bad("byte flip-flop set outside LSB-then-MSB access");
        }
        let mode = Mode::from_bits(self.mode);
        let suspending = matches!(mode, Mode::InterruptOnTerminalCount | Mode::SoftwareTriggeredStrobe);
        let gated_periodic = matches!(mode, Mode::RateGenerator | Mode::SquareWave);
        match self.phase {
            Phase::Idle => {}
            Phase::Waiting if suspending => return bad("modes 0 and 4 never wait for a trigger"),
            Phase::Waiting if gated_periodic && self.gate => {
                return bad("modes 2 and 3 wait only while the gate is low")
            }
            Phase::Waiting => {}
            Phase::Paused { .. } if !suspending || self.gate => {
                return bad("only modes 0 and 4 pause, and only while the gate is low")
            }
            Phase::Paused { .. } => {}
            Phase::Counting(c) => {
                if (suspending || gated_periodic) && !self.gate {
                    return bad("modes 0, 2, 3 and 4 do not count while the gate is low");
                }
                if c.reload_at.is_some() && !gated_periodic {
                    return bad("only modes 2 and 3 defer a reload");
                }
                if c.reload_at.is_some_and(|at| at < c.origin_tick) {
                    return bad("reload before the waveform's origin");
                }
            }
        }
        Ok(())
    }
}

impl Default for ChannelState {
    fn default() -> Self {
        ChannelState::reset(true)
    }
}

/// The whole PIT as the VMM saves and restores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PitState {
    /// Counters 0, 1, 2.
    pub channels: [ChannelState; 3],
    /// Port 0x61 bit 1 (SPKR_DAT_EN), stored for the guest to read back.
    pub speaker_data: bool,
    /// Rising edges of OUT0 that happened and were not yet reported by `advance`.
    pub irq0_pending: u64,
    /// Host nanoseconds up to which OUT0's rising edges have been counted.
    pub irq0_synced_ns: u64,
}

impl Default for PitState {
    /// Power-on: counters 0 and 1 gated on, counter 2 gated off (port 0x61 reads 0).
    fn default() -> Self {
        PitState {
            channels: [ChannelState::reset(true), ChannelState::reset(true), ChannelState::reset(false)],
            speaker_data: false,
            irq0_pending: 0,
            irq0_synced_ns: 0,
        }
    }
}

impl PitState {
    /// The same state on another host clock: `saved_at` is when the state was taken, on the
    /// clock it was taken with, and `now` is the same instant on the clock of the PIT it will
    /// be restored into. Every host time in the state moves by the difference (saturating at
    /// 0 and `u64::MAX`), so counting continues where it stopped instead of freezing or
    /// replaying the gap. Use it when a snapshot crosses a host or a process restart.
    pub fn moved(&self, saved_at: u64, now: u64) -> PitState {
        let shift = |t: u64| {
            if t <= saved_at {
                now.saturating_sub(saved_at.wrapping_sub(t))
            } else {
                now.saturating_add(t.wrapping_sub(saved_at))
            }
        };
        let mut moved = *self;
        for channel in &mut moved.channels {
            if let Phase::Counting(run) = &mut channel.phase {
                run.start_ns = shift(run.start_ns);
            }
        }
        moved.irq0_synced_ns = shift(self.irq0_synced_ns);
        moved
    }

    /// Checks every field for combinations the model cannot reach (a state is plain data
    /// and may come from a file or another host).
    pub fn validate(&self) -> Result<(), StateError> {
        for (counter, channel) in Counter::ALL.iter().zip(self.channels.iter()) {
            channel.validate(*counter)?;
        }
        Ok(())
    }
}

/// Why [`super::Pit::restore`] refused a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    /// `mode` must be M2 M1 M0, 0–7.
    Mode {
        /// The counter that holds the value.
        counter: Counter,
        /// The value found.
        value: u8,
    },
    /// Fields that contradict each other.
    Inconsistent {
        /// The counter.
        counter: Counter,
        /// The rule broken.
        what: &'static str,
    },
}

impl core::fmt::Display for StateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StateError::Mode { counter, value } => write!(f, "{counter:?}: mode {value} is not 0-7"),
            StateError::Inconsistent { counter, what } => write!(f, "{counter:?}: {what}"),
        }
    }
}

impl core::error::Error for StateError {}
