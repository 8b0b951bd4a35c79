//! One counter's behaviour: the data-port byte sequencing (read and write flip-flops,
//! output latch, status latch), the control word, the gate, and the counting element and OUT
//! as functions of host time.

use super::regs::{Access, Mode, Status, BCD, M_SHIFT, RW_SHIFT};
use super::state::{ChannelState, Counting, Phase};
use super::wave;

/// Clocks elapsed since the start of a counting run.
#[inline]
fn tick(run: &Counting, now: u64) -> u64 {
    wave::ns_to_ticks(now.saturating_sub(run.start_ns))
}

/// A fresh run whose clock 0 is `now`, at waveform position 0.
#[inline]
fn run_from(now: u64, position: u64) -> Phase {
    Phase::Counting(Counting { start_ns: now, origin_tick: 0, origin_position: position, reload_at: None })
}

/// A BCD digit as the counter uses it; A–F (undefined on the datasheet) count as 9.
#[inline]
fn digit(raw: u16, shift: u32) -> u32 {
    u32::from((raw >> shift) & 0xF).min(9)
}

impl ChannelState {
    /// The mode as the counter behaves (6 and 7 are 2 and 3).
    #[inline]
    pub(crate) fn kind(&self) -> Mode {
        Mode::from_bits(self.mode)
    }

    /// One more than the largest value the element holds: 2^16 binary, 10^4 BCD.
    #[inline]
    fn modulus(&self) -> u32 {
        if self.bcd {
            10_000
        } else {
            65_536
        }
    }

    /// The initial count N a raw count register value stands for: 0 is the largest count,
    /// 65536 binary or 10000 BCD.
    #[inline]
    pub(crate) fn initial(&self, raw: u16) -> u32 {
        let value = if self.bcd {
            digit(raw, 12)
                .wrapping_mul(1000)
                .wrapping_add(digit(raw, 8).wrapping_mul(100))
                .wrapping_add(digit(raw, 4).wrapping_mul(10))
                .wrapping_add(digit(raw, 0))
        } else {
            u32::from(raw)
        };
        if value == 0 {
            self.modulus()
        } else {
            value
        }
    }

    /// The raw element bits for a value below [`Self::modulus`].
    #[inline]
    pub(super) fn encode(&self, value: u32) -> u16 {
        if self.bcd {
            let d = |div: u32| u16::try_from(value.checked_div(div).unwrap_or(0) % 10).unwrap_or(0);
            (d(1000) << 12) | (d(100) << 8) | (d(10) << 4) | d(1)
        } else {
            u16::try_from(value & 0xFFFF).unwrap_or(0)
        }
    }

    /// Where a deferred mode 2/3 reload at clock `at` starts the new waveform: a period
    /// start (0), or the low half when it ends a mode-3 high half.
    #[inline]
    fn reload_phase(&self, run: &Counting, at: u64) -> u64 {
        let old = run.origin_position.saturating_add(at.saturating_sub(run.origin_tick));
        let n_old = u64::from(self.initial(self.loaded));
        if self.kind() == Mode::SquareWave && old.checked_rem(n_old).unwrap_or(0) != 0 {
            wave::high_half(self.initial(self.count))
        } else {
            0
        }
    }

    /// The raw initial count and the waveform position at clock `t` of `run`.
    #[inline]
    pub(super) fn wave_at(&self, run: &Counting, t: u64) -> (u16, u64) {
        match run.reload_at {
            Some(at) if t >= at => {
                (self.count, self.reload_phase(run, at).saturating_add(t.wrapping_sub(at)))
            }
            _ => (self.loaded, run.origin_position.saturating_add(t.saturating_sub(run.origin_tick))),
        }
    }

    /// The raw value of the counting element at `now`.
    #[inline]
    pub(crate) fn element(&self, now: u64) -> u16 {
        let (raw, position) = match self.phase {
            Phase::Idle | Phase::Waiting => return self.held,
            Phase::Paused { position } => (self.loaded, position),
            Phase::Counting(run) => self.wave_at(&run, tick(&run, now)),
        };
        self.encode(wave::count(self.kind(), self.initial(raw), position, self.modulus()))
    }

    /// The level of OUT at `now`.
    #[inline]
    pub(crate) fn output(&self, now: u64) -> bool {
        let (raw, position) = match self.phase {
            Phase::Idle => return self.kind().initial_output(),
            Phase::Waiting => return true,
            Phase::Paused { position } => (self.loaded, position),
            Phase::Counting(run) => self.wave_at(&run, tick(&run, now)),
        };
        wave::output(self.kind(), self.initial(raw), position)
    }

    /// NULL COUNT at `now` (a deferred reload that has happened has loaded its count).
    fn null_count_at(&self, now: u64) -> bool {
        match self.phase {
            Phase::Counting(run) if run.reload_at.is_some_and(|at| tick(&run, now) >= at) => false,
            _ => self.null_count,
        }
    }

    /// The read-back status byte at `now`.
    pub(crate) fn status(&self, now: u64) -> u8 {
        let mut status = Status::from_bits_retain(
            ((self.access as u8) << RW_SHIFT) | (self.mode << M_SHIFT) | if self.bcd { BCD } else { 0 },
        );
        status.set(Status::OUTPUT, self.output(now));
        status.set(Status::NULL_COUNT, self.null_count_at(now));
        status.bits()
    }

    /// Makes a deferred reload that is due part of the run's origin (same waveform, simpler
    /// state). Called before any change.
    pub(crate) fn settle(&mut self, now: u64) {
        if let Phase::Counting(mut run) = self.phase {
            if let Some(at) = run.reload_at.filter(|&at| tick(&run, now) >= at) {
                run.origin_position = self.reload_phase(&run, at);
                run.origin_tick = at;
                run.reload_at = None;
                self.loaded = self.count;
                self.null_count = false;
                self.phase = Phase::Counting(run);
            }
        }
    }

    /// A control word for this counter: the control logic resets, counting stops with the
    /// element holding its value, OUT takes the mode's initial level, both latches and both
    /// flip-flops clear, and NULL COUNT sets.
    pub(crate) fn program(&mut self, access: Access, mode: u8, bcd: bool, now: u64) {
        self.held = self.element(now);
        self.phase = Phase::Idle;
        self.access = access;
        self.mode = mode & 7;
        self.bcd = bcd;
        self.null_count = true;
        self.write_msb_next = false;
        self.read_msb_next = false;
        self.count_latch = None;
        self.status_latch = None;
    }

    /// The counter latch command: latch the element unless a latched count is still unread.
    pub(crate) fn latch_count(&mut self, now: u64) {
        if self.count_latch.is_none() {
            self.count_latch = Some(self.element(now));
        }
    }

    /// Read-back's status latch: latch the status unless a latched status is still unread.
    pub(crate) fn latch_status(&mut self, now: u64) {
        if self.status_latch.is_none() {
            self.status_latch = Some(self.status(now));
        }
    }

    /// A data-port read: a latched status first, then the latched count, else the live
    /// element, one byte at a time as the access format and read flip-flop select.
    pub(crate) fn read(&mut self, now: u64) -> u8 {
        if let Some(status) = self.status_latch.take() {
            return status;
        }
        let latched = self.count_latch.is_some();
        let [lsb, msb] = self.count_latch.unwrap_or_else(|| self.element(now)).to_le_bytes();
        let (byte, done) = match self.access {
            Access::Lsb => (lsb, true),
            Access::Msb => (msb, true),
            Access::LsbMsb if !self.read_msb_next => (lsb, false),
            Access::LsbMsb => (msb, true),
        };
        if self.access == Access::LsbMsb {
            self.read_msb_next = !done;
        }
        if latched && done {
            self.count_latch = None;
        }
        byte
    }

    /// A data-port write: a byte of the count register, as the access format and write
    /// flip-flop select. A complete count is then loaded as the mode says.
    pub(crate) fn write(&mut self, value: u8, now: u64) {
        self.settle(now);
        let count = match self.access {
            Access::Lsb => u16::from(value),
            Access::Msb => u16::from(value) << 8,
            Access::LsbMsb if !self.write_msb_next => {
                self.write_msb_next = true;
                self.write_lsb = value;
                if self.kind() == Mode::InterruptOnTerminalCount {
                    // Mode 0: writing the first byte disables counting and sets OUT low.
                    self.held = self.element(now);
                    self.phase = Phase::Idle;
                }
                return;
            }
            Access::LsbMsb => {
                self.write_msb_next = false;
                u16::from_le_bytes([self.write_lsb, value])
            }
        };
        self.count = count;
        self.null_count = true;
        self.load_written(now);
    }

    /// What a newly written count does, per mode.
    fn load_written(&mut self, now: u64) {
        match self.kind() {
            // Modes 0 and 4: load at once and count (re-arm), or hold at the start while the
            // gate is low.
            Mode::InterruptOnTerminalCount | Mode::SoftwareTriggeredStrobe => {
                self.loaded = self.count;
                self.null_count = false;
                self.phase = if self.gate { run_from(now, 0) } else { Phase::Paused { position: 0 } };
            }
            // Modes 2 and 3: a count written while counting waits for the end of the current
            // period (mode 2) or half-period (mode 3); otherwise it loads now.
            Mode::RateGenerator | Mode::SquareWave => match self.phase {
                Phase::Counting(mut run) => {
                    if run.reload_at.is_none() {
                        // A `now` earlier than the waveform's origin (two vCPUs that read
                        // the clock before taking the PIT lock) counts as the origin.
                        let t = tick(&run, now).max(run.origin_tick);
                        let (raw, position) = self.wave_at(&run, t);
                        let end = wave::next_reload(self.kind(), self.initial(raw), position);
                        run.reload_at = Some(t.saturating_add(end.saturating_sub(position)));
                        self.phase = Phase::Counting(run);
                    }
                }
                _ => {
                    self.loaded = self.count;
                    self.null_count = false;
                    if self.gate {
                        self.phase = run_from(now, 0);
                    } else {
                        self.held =
                            self.encode(self.initial(self.count).checked_rem(self.modulus()).unwrap_or(0));
                        self.phase = Phase::Waiting;
                    }
                }
            },
            // Modes 1 and 5: the count waits for the next gate trigger.
            Mode::HardwareRetriggerableOneShot | Mode::HardwareTriggeredStrobe => {
                if self.phase == Phase::Idle {
                    self.phase = Phase::Waiting;
                }
            }
        }
    }

    /// The GATE input goes to `level` at `now`.
    ///
    /// Falling edge: modes 0 and 4 suspend counting; modes 2 and 3 stop and force OUT high.
    /// Rising edge: modes 0 and 4 resume; modes 1, 2, 3 and 5 load the count register and
    /// count from the start (a trigger). Modes 1 and 5 ignore the level itself.
    pub(crate) fn set_gate(&mut self, level: bool, now: u64) {
        self.settle(now);
        if level == self.gate {
            return;
        }
        self.gate = level;
        let mode = self.kind();
        match (mode, self.phase, level) {
            (Mode::InterruptOnTerminalCount | Mode::SoftwareTriggeredStrobe, Phase::Counting(run), false) => {
                let (_, position) = self.wave_at(&run, tick(&run, now));
                self.phase = Phase::Paused { position };
            }
            (
                Mode::InterruptOnTerminalCount | Mode::SoftwareTriggeredStrobe,
                Phase::Paused { position },
                true,
            ) => {
                self.phase = run_from(now, position);
            }
            (Mode::RateGenerator | Mode::SquareWave, Phase::Counting(_), false) => {
                self.held = self.element(now);
                self.phase = Phase::Waiting;
            }
            (_, Phase::Waiting | Phase::Counting(_), true) if mode.gate_triggers() => {
                self.loaded = self.count;
                self.null_count = false;
                self.phase = run_from(now, 0);
            }
            _ => {}
        }
    }

    /// Rising edges of OUT caused by counting in the host-time interval `(from_ns, to_ns]`.
    pub(crate) fn rising_edges(&self, from_ns: u64, to_ns: u64) -> u64 {
        let Phase::Counting(run) = self.phase else { return 0 };
        let (t1, t2) = (tick(&run, from_ns), tick(&run, to_ns));
        if t2 <= t1 {
            return 0;
        }
        let mode = self.kind();
        let old = |t: u64| run.origin_position.saturating_add(t.saturating_sub(run.origin_tick));
        let n_old = self.initial(self.loaded);
        match run.reload_at {
            Some(at) if at <= t2 => {
                let before = if t1 < at { wave::rising_edges(mode, n_old, old(t1), old(at)) } else { 0 };
                let phase = self.reload_phase(&run, at);
                let new = |t: u64| phase.saturating_add(t.saturating_sub(at));
                let after = wave::rising_edges(mode, self.initial(self.count), new(t1.max(at)), new(t2));
                before.saturating_add(after)
            }
            _ => wave::rising_edges(mode, n_old, old(t1), old(t2)),
        }
    }

    /// The first host nanosecond after `after_ns` at which counting makes OUT rise, if any
    /// (`None` also when that is beyond `u64::MAX` ns).
    pub(crate) fn next_rising_edge_ns(&self, after_ns: u64) -> Option<u64> {
        let Phase::Counting(run) = self.phase else { return None };
        // Before the waveform's origin the position stands still (as `rising_edges` counts).
        let t = tick(&run, after_ns).max(run.origin_tick);
        let mode = self.kind();
        let (raw, position) = self.wave_at(&run, t);
        let next = wave::next_rising_edge(mode, self.initial(raw), position)
            .map(|edge| t.saturating_add(edge.saturating_sub(position)));
        let edge_tick = match run.reload_at {
            // The old waveform ends at `at`; past it, the new count's first rise.
            Some(at) if t < at && next.is_none_or(|edge| edge > at) => {
                let phase = self.reload_phase(&run, at);
                let edge = wave::next_rising_edge(mode, self.initial(self.count), phase)?;
                at.saturating_add(edge.saturating_sub(phase))
            }
            _ => next?,
        };
        run.start_ns.checked_add(wave::ticks_to_ns_ceil(edge_tick)?)
    }
}
