//! The Intel 8254 programmable interval timer of the PC, with the port 0x61 bits that gate
//! counter 2 and show its output.
//!
//! * Three counters clocked at 1,193,182 Hz ([`regs::CLOCK_HZ`]), modes 0–5 (6 and 7 alias 2
//!   and 3), binary and BCD counting, LSB / MSB / LSB-then-MSB access with separate read and
//!   write flip-flops, the counter latch command and the read-back command (count and/or
//!   status of several counters; a latched status is read before a latched count; a second
//!   latch before the first is read is ignored), NULL COUNT, and count 0 meaning 65536
//!   (10000 in BCD).
//! * Counters 0 and 1 have their gates tied high. Counter 2's gate is port 0x61 bit 0 and its
//!   OUT reads at bit 5; bit 1 (speaker data) is stored; bit 4 toggles every 18 PIT clocks
//!   (15.085 µs) as a function of host time.
//! * Time is an input: every call that depends on time takes `now`, host nanoseconds of a
//!   monotonic clock. Counting is exact: `ticks = ⌊(now − start)·1193182/10⁹⌋` in 128-bit
//!   integers, where `start` is the host time at which the run began (the count write or the
//!   gate trigger).
//! * IRQ0 is counter 0's OUT. [`Pit::next_deadline`] gives the host instant of OUT0's next
//!   rising edge, rounded up so it is never early; the VMM arms a host timer for it and on
//!   expiry calls [`Pit::advance`], which returns how many rising edges happened since the
//!   last call, so the VMM pulses IRQ0 (e.g. `vm_pic::Pic::pulse_irq(0)`) once or per edge as
//!   its lost-tick policy says.
//! * [`PitState`] is plain data with a validating [`Pit::restore`]; feature `serde` derives
//!   serialization, and feature `kvm` (x86_64 Linux) converts it to and from KVM's
//!   `kvm_pit_state2` (module `kvm`: KVM_GET_PIT2 / KVM_SET_PIT2), as losslessly as KVM's
//!   format and KVM_SET_PIT2's restart of every counter allow.
//!
//! No guest input can panic the model: every port, width and byte has a defined answer.
//!
//! # OUT follows the datasheet
//!
//! OUT is modelled as the 8254 pin: mode 0 low from the count write until terminal count;
//! mode 1 low from the trigger until terminal count; mode 2 low for the one clock in which the
//! count is 1; mode 3 high for ⌈N/2⌉ clocks, then low for ⌊N/2⌋; modes 4 and 5 low for the one
//! clock in which the count is 0. KVM (`arch/x86/kvm/i8254.c`), QEMU (`hw/timer/i8254_common.c`)
//! and crosvm model OUT in modes 1, 2 and 4 as a short *high* pulse or a "counting" flag, so
//! the read-back status bit 7 and port 0x61 bit 5 differ from them in those modes; IRQ0's
//! rising edges fall within one PIT clock of theirs. Also unlike KVM: NULL COUNT is
//! implemented, gate edges act on every mode, a count written in modes 2 and 3 during
//! counting takes effect at the end of the current period / half-period instead of at once,
//! mode 5 counts, and there is no minimum-period clamp (a VMM policy).
//!
//! # Modelling choices where the datasheet is silent
//!
//! * The count is loaded at the write instant (the datasheet loads it on the next CLK edge;
//!   KVM and QEMU do the same as this model), so a mode-0 count of N raises OUT exactly N
//!   clocks after the write.
//! * Power-on (undefined on the datasheet): every counter as after control word "LSB then MSB,
//!   mode 0, binary": not counting, element 0, OUT low, NULL COUNT set.
//! * A count of 1 is illegal in modes 2 and 3: OUT then stays low (mode 2) or high (mode 3),
//!   with no edges. BCD digits A–F count as 9.
//! * A control word clears an unread latched count and status ("held until read or the
//!   counter is reprogrammed").
//! * `now` earlier than a previous call is treated as no time passing for IRQ0 bookkeeping.
//! * At power-on OUT0 is low (mode 0, no count), so the first control word that selects mode
//!   1–5 for counter 0 raises OUT0: [`Pit::advance`] reports that rising edge, and a guest
//!   sees one IRQ0 while it programs the PIT (KVM and QEMU start with OUT0 high and do not).
//! * A state holds host times; to restore it under another host clock, pass it through
//!   [`PitState::moved`].
//!
//! ```
//! use vm_timer::pit::{regs::*, Pit};
//!
//! let mut pit = Pit::default();
//! let t0 = 1_000_000;
//! // Linux's periodic tick (`init_pit_timer`, HZ=100).
//! let _ = pit.write(CONTROL_WORD, 0x34, t0); // counter 0, LSB then MSB, mode 2, binary
//! let _ = pit.write(COUNTER0, 0x9c, t0); // LSB of 11932
//! let _ = pit.write(COUNTER0, 0x2e, t0); // MSB of 11932
//! assert_eq!(pit.advance(t0), 1); // OUT0 went high with the control word: one edge
//! let deadline = pit.next_deadline(t0).unwrap();
//! assert_eq!(deadline - t0, 10000151); // ⌈11932·10⁹/1193182⌉ ns
//! assert_eq!(pit.advance(deadline - 1), 0);
//! assert_eq!(pit.advance(deadline), 1);
//! ```

mod channel;
#[cfg(all(feature = "kvm", target_arch = "x86_64", target_os = "linux"))]
pub mod kvm;
pub mod regs;
mod state;
mod wave;

pub use state::{ChannelState, Counting, Phase, PitState, StateError};

use regs::{ControlWord, Counter, NmiSc, ReadBack, CONTROL_WORD, NMI_SC, REFRESH_TOGGLE_CLOCKS};

/// A guest access the PIT does not decode as such. It still got the documented answer; the
/// value is for the VMM to log or count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessError {
    /// The port is not one of [`regs::PORTS`]: writes are ignored, reads return 0xFF.
    UnknownPort(u16),
    /// A read of the control word register (0x43), a no-operation on the 8254 (the bus
    /// floats): reads return 0xFF.
    ReadOfControlWord,
    /// The access was this many bytes wide (saturating at `u16::MAX`), not one. The bytes
    /// went to (or came from) consecutive ports, as the PC bus splits a wide access to an
    /// 8-bit device.
    Width(u16),
}

impl core::fmt::Display for AccessError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AccessError::UnknownPort(port) => write!(f, "PIT does not decode port {port:#x}"),
            AccessError::ReadOfControlWord => write!(f, "PIT control word register (0x43) is write-only"),
            AccessError::Width(len) => write!(f, "PIT access of {len} bytes, not 1"),
        }
    }
}

impl core::error::Error for AccessError {}

/// What an access caused, for the VMM to act on.
///
/// IRQ0 edges are not reported here: they accumulate until [`Pit::advance`].
#[must_use]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Effects {
    /// Counter 0 was written (a control word or a count byte): OUT0's next rising edge may
    /// have moved or already happened; ask [`Pit::next_deadline`] again and re-arm.
    pub rearm: bool,
    /// The access was not one the hardware decodes (see [`AccessError`]).
    pub invalid: Option<AccessError>,
}

impl Effects {
    const REARM: Effects = Effects { rearm: true, invalid: None };

    const fn invalid(error: AccessError) -> Self {
        Effects { rearm: false, invalid: Some(error) }
    }
}

/// The 8254 PIT with port 0x61's timer bits.
///
/// `Default` is the power-on state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pit {
    state: PitState,
}

impl Pit {
    /// A PIT in its power-on state.
    pub fn new() -> Self {
        Pit::default()
    }

    // ----- guest port I/O -------------------------------------------------------------

    /// A one-byte guest write to `port` at host time `now` (ns).
    ///
    /// 0x40–0x42 write count bytes; 0x43 takes control words (program, counter latch,
    /// read-back); 0x61 takes bit 0 (counter 2's gate) and bit 1 (speaker data) and ignores
    /// the rest, which the VMM decodes from the same byte for its own bits.
    pub fn write(&mut self, port: u16, value: u8, now: u64) -> Effects {
        match port {
            regs::COUNTER0 => self.on_counter0(now, |ch| ch.write(value, now)),
            regs::COUNTER1 => {
                self.state.channels[1].write(value, now);
                Effects::default()
            }
            regs::COUNTER2 => {
                self.state.channels[2].write(value, now);
                Effects::default()
            }
            CONTROL_WORD => self.write_control_word(ControlWord::decode(value), now),
            NMI_SC => {
                let bits = NmiSc::from_bits_retain(value);
                self.state.speaker_data = bits.contains(NmiSc::SPKR_DAT_EN);
                self.state.channels[2].set_gate(bits.contains(NmiSc::TIM_CNT2_EN), now);
                Effects::default()
            }
            _ => Effects::invalid(AccessError::UnknownPort(port)),
        }
    }

    /// A one-byte guest read of `port` at host time `now` (ns). Reads have effects on the
    /// model (latches empty, the read flip-flop toggles) but none for the VMM to act on.
    ///
    /// Port 0x61 returns only the bits the PIT owns ([`NmiSc`]: gate 2, speaker data,
    /// refresh toggle, OUT2); the VMM ORs in its own (bits 2, 3, 6, 7).
    pub fn read(&mut self, port: u16, now: u64) -> (u8, Effects) {
        match port {
            regs::COUNTER0 => (self.state.channels[0].read(now), Effects::default()),
            regs::COUNTER1 => (self.state.channels[1].read(now), Effects::default()),
            regs::COUNTER2 => (self.state.channels[2].read(now), Effects::default()),
            CONTROL_WORD => (0xFF, Effects::invalid(AccessError::ReadOfControlWord)),
            NMI_SC => (self.nmi_sc(now).bits(), Effects::default()),
            _ => (0xFF, Effects::invalid(AccessError::UnknownPort(port))),
        }
    }

    /// A guest write of any width starting at `port`, as a VMM's I/O bus delivers it.
    ///
    /// One byte is [`Pit::write`]. Wider (or empty) accesses are flagged with
    /// [`AccessError::Width`]; their bytes go to consecutive ports, lowest first.
    pub fn pio_write(&mut self, port: u16, data: &[u8], now: u64) -> Effects {
        if let [value] = data {
            return self.write(port, *value, now);
        }
        let (mut rearm, mut port) = (false, port);
        for value in data {
            rearm |= self.write(port, *value, now).rearm;
            port = port.wrapping_add(1);
        }
        Effects { rearm, invalid: Some(width(data.len())) }
    }

    /// A guest read of any width starting at `port`; see [`Pit::pio_write`]. Bytes from
    /// ports the PIT does not decode read as 0xFF.
    pub fn pio_read(&mut self, port: u16, data: &mut [u8], now: u64) -> Effects {
        if let [value] = data {
            let (v, effects) = self.read(port, now);
            *value = v;
            return effects;
        }
        let mut port = port;
        for value in data.iter_mut() {
            *value = self.read(port, now).0;
            port = port.wrapping_add(1);
        }
        Effects { rearm: false, invalid: Some(width(data.len())) }
    }

    // ----- IRQ0 -------------------------------------------------------------------------

    /// Rising edges of OUT0 (IRQ0 edges) since the previous call, up to and including `now`.
    /// Edges caused by guest writes (e.g. a control word raising OUT0) are included.
    pub fn advance(&mut self, now: u64) -> u64 {
        self.sync_irq0(now);
        core::mem::take(&mut self.state.irq0_pending)
    }

    /// The host instant (ns) of the first IRQ0 edge not yet returned by [`Pit::advance`], or
    /// `None` if OUT0 will not rise without a guest write.
    ///
    /// The instant is the first nanosecond at which the PIT clock count reaches the edge
    /// (rounded up, never early). It may be at or before `now`: edges are waiting, so call
    /// [`Pit::advance`] at once. Recompute it after every access whose [`Effects::rearm`] is set.
    pub fn next_deadline(&self, now: u64) -> Option<u64> {
        if self.state.irq0_pending > 0 {
            return Some(now);
        }
        self.state.channels[0].next_rising_edge_ns(self.state.irq0_synced_ns)
    }

    /// The level of `counter`'s OUT pin at `now`.
    pub fn output(&self, counter: Counter, now: u64) -> bool {
        self.channel(counter).output(now)
    }

    /// Port 0x61's PIT bits at `now`.
    pub fn nmi_sc(&self, now: u64) -> NmiSc {
        let mut bits = NmiSc::empty();
        bits.set(NmiSc::TIM_CNT2_EN, self.state.channels[2].gate);
        bits.set(NmiSc::SPKR_DAT_EN, self.state.speaker_data);
        let half_periods = clocks_since_host_zero(now).wrapping_div(REFRESH_TOGGLE_CLOCKS);
        bits.set(NmiSc::REF_TOGGLE, half_periods & 1 == 1);
        bits.set(NmiSc::TMR2_OUT_STS, self.state.channels[2].output(now));
        bits
    }

    // ----- state ------------------------------------------------------------------------

    /// A copy of the complete state.
    pub fn state(&self) -> PitState {
        self.state
    }

    /// Replaces the state after validating it; on error the PIT is unchanged. Deadlines are
    /// not part of the state: ask [`Pit::next_deadline`] after restoring.
    pub fn restore(&mut self, state: &PitState) -> Result<(), StateError> {
        state.validate()?;
        self.state = *state;
        Ok(())
    }

    /// System reset: the power-on state (unreported IRQ0 edges are dropped).
    pub fn reset(&mut self) {
        self.state = PitState::default();
    }

    // ----- internals ----------------------------------------------------------------------

    fn channel(&self, counter: Counter) -> &state::ChannelState {
        match counter {
            Counter::Counter0 => &self.state.channels[0],
            Counter::Counter1 => &self.state.channels[1],
            Counter::Counter2 => &self.state.channels[2],
        }
    }

    fn channel_mut(&mut self, counter: Counter) -> &mut state::ChannelState {
        match counter {
            Counter::Counter0 => &mut self.state.channels[0],
            Counter::Counter1 => &mut self.state.channels[1],
            Counter::Counter2 => &mut self.state.channels[2],
        }
    }

    /// Counts OUT0's rising edges from counting up to `now`.
    fn sync_irq0(&mut self, now: u64) {
        let state = &mut self.state;
        if now > state.irq0_synced_ns {
            let edges = state.channels[0].rising_edges(state.irq0_synced_ns, now);
            state.irq0_pending = state.irq0_pending.saturating_add(edges);
            state.irq0_synced_ns = now;
        }
    }

    /// Applies a change to counter 0, counting the edges before it and the one it may cause.
    fn on_counter0(&mut self, now: u64, change: impl FnOnce(&mut state::ChannelState)) -> Effects {
        self.sync_irq0(now);
        let channel = &mut self.state.channels[0];
        let before = channel.output(now);
        change(channel);
        if !before && channel.output(now) {
            self.state.irq0_pending = self.state.irq0_pending.saturating_add(1);
        }
        Effects::REARM
    }

    fn write_control_word(&mut self, word: ControlWord, now: u64) -> Effects {
        match word {
            ControlWord::Program { counter: Counter::Counter0, access, mode, bcd } => {
                self.on_counter0(now, |ch| ch.program(access, mode, bcd, now))
            }
            ControlWord::Program { counter, access, mode, bcd } => {
                self.channel_mut(counter).program(access, mode, bcd, now);
                Effects::default()
            }
            ControlWord::CounterLatch(counter) => {
                self.channel_mut(counter).latch_count(now);
                Effects::default()
            }
            ControlWord::ReadBack(rb) => {
                for counter in Counter::ALL {
                    if !rb.contains(counter.read_back_bit()) {
                        continue;
                    }
                    let channel = self.channel_mut(counter);
                    if !rb.contains(ReadBack::COUNT) {
                        channel.latch_count(now);
                    }
                    if !rb.contains(ReadBack::STATUS) {
                        channel.latch_status(now);
                    }
                }
                Effects::default()
            }
        }
    }
}

/// PIT clocks since host time 0 (the refresh toggle's time base).
fn clocks_since_host_zero(now: u64) -> u64 {
    wave::ns_to_ticks(now)
}

fn width(len: usize) -> AccessError {
    AccessError::Width(u16::try_from(len).unwrap_or(u16::MAX))
}

#[cfg(test)]
mod tests;
