//! Conversion to and from KVM's `kvm_pit_state2`, the payload of KVM_GET_PIT2 and
//! KVM_SET_PIT2, so that a VMM can move a running guest between KVM's in-kernel PIT and
//! [`Pit`](super::Pit) in either direction.
//!
//! Time is an input here too: both directions take `now`, the host instant (ns) at which the
//! state is taken or will be set, on the clock of `count_load_time`. KVM's is the host's
//! CLOCK_MONOTONIC (`ktime_get()`), so a VMM whose PIT runs on CLOCK_MONOTONIC nanoseconds
//! passes the same clock; any other clock must be moved with [`PitState::moved`] first.
//!
//! # How KVM reads the format
//!
//! What follows is KVM's behaviour (`arch/x86/kvm/i8254.c`, `kvm_vm_ioctl_set_pit2` in
//! `arch/x86/kvm/x86.c`), confirmed with KVM_GET_PIT2/KVM_SET_PIT2 on the project's hosts:
//!
//! * `count` is the initial count N in clocks, 1..=0x10000 (a written 0 is stored as
//!   0x10000). KVM always counts binary, whatever `bcd` says.
//! * KVM's PIT clock is [`KVM_PIT_FREQ`] = 1,193,181 Hz (the model's is 1,193,182 Hz). With
//!   `d` = ⌊(t − `count_load_time`)·1193181/10⁹⌋ clocks since the load, KVM reads the count as
//!   (N − d) mod 2¹⁶ in modes 0, 1, 4, 5, N − (d mod N) in mode 2 and N − (2d mod N) in mode 3,
//!   and OUT as d ≥ N (mode 0), d < N (1), d mod N = 0 and d ≠ 0 (2), d mod N < ⌈N/2⌉ (3),
//!   d = N (4, 5).
//! * `count_load_time` is the host ktime of the load. KVM sets it for counters 1 and 2 at
//!   every count write and at a gate rising edge in modes 1, 2, 3 and 5. It never sets it for
//!   **counter 0**, whose phase lives in an hrtimer that KVM_GET_PIT2 does not report: counter
//!   0's field is 0 after KVM_CREATE_PIT2 and otherwise whatever KVM_SET_PIT2 last stored.
//! * KVM_SET_PIT2 copies the channels and `flags`, then loads every counter again from its
//!   `count`: counters 1 and 2 get `count_load_time` = now, and counter 0's hrtimer starts a
//!   full period (one-shot in modes 0, 1, 4; periodic in 2, 3; none in 5) from now, with its
//!   reinjection bookkeeping reset. No counter keeps its phase through KVM_SET_PIT2.
//! * `mode` is 0–5 (a control word's 6 and 7 are stored as 2 and 3), [`MODE_UNPROGRAMMED`]
//!   (0xFF) before the first control word. `rw_mode` is RW1 RW0 (1, 2, 3), 0 before the first
//!   control word. `read_state` and `write_state` take [`RW_STATE_LSB`], [`RW_STATE_MSB`],
//!   [`RW_STATE_WORD0`] (LSB then MSB, LSB next) and [`RW_STATE_WORD1`] (MSB next): KVM keeps
//!   a read flip-flop, a write flip-flop, and a third one in `count_latched` for a latched
//!   count (0 for none, else the bytes still to read: set to `rw_mode` by the latch, then
//!   [`RW_STATE_MSB`] once the LSB of an LSB-then-MSB latch was read). A control word resets
//!   the read and write flip-flops but does not clear a latch.
//! * `status_latched` (0 or 1) and `status`: a latched read-back status byte, NULL COUNT
//!   always 0. `write_latch`: the LSB of an LSB-then-MSB count waiting for its MSB. `gate`:
//!   1 on counters 0 and 1, port 0x61 bit 0 on counter 2 (KVM restarts counting on its rising
//!   edge in modes 1, 2, 3, 5 and otherwise ignores it).
//! * `flags`: [`KVM_PIT_FLAGS_SPEAKER_DATA_ON`] is port 0x61 bit 1;
//!   [`KVM_PIT_FLAGS_HPET_LEGACY`] stops counter 0 from raising IRQ0.
//!
//! # Field by field
//!
//! | `kvm_pit_channel_state` | the model ([`ChannelState`]) |
//! |---|---|
//! | `mode` 0–5 | `mode`; 6 and 7 go to KVM as 2 and 3 (KVM's own folding) |
//! | `mode` 0xFF | the power-on counter [`ChannelState::reset`], and back (see below) |
//! | `rw_mode` | `access` |
//! | `bcd`, `gate` | `bcd`, `gate` |
//! | `count` | `count` and `loaded`, raw bits, 0x10000 ⇄ 0 (see the phase rows) |
//! | `count_load_time` | the run's start (see the phase rows) |
//! | `write_state` = WORD1, `write_latch` | `write_msb_next`, `write_lsb` (both directions keep the byte even when no MSB is due) |
//! | `read_state` = WORD1 | `read_msb_next` with no latched count |
//! | `count_latched`, `latched_count` | `count_latch` and `read_msb_next`: the bytes the guest reads next are the same |
//! | `status_latched`, `status` | `status_latch` |
//! | `flags` SPEAKER_DATA_ON | [`PitState::speaker_data`] |
//!
//! Counting, to KVM ([`PitState::to_kvm`], at `now`):
//!
//! * a one-shot (modes 0, 1, 4, 5) before its terminal count goes as `count` = the clocks
//!   still to go and `count_load_time` = the start of the current clock, so that KVM_SET_PIT2,
//!   which restarts the counter from `count`, ends it at the same instant and KVM reads the
//!   same counts on the way — except counter 2 in modes 1 and 5, whose gate (port 0x61) can
//!   still rise and restart it from `count`: it goes as its initial count N with its true load
//!   time, so that a later trigger counts N again (KVM_SET_PIT2 restarts the current run, see
//!   below);
//! * a periodic counter (modes 2, 3) goes as its period N with `count_load_time` at the start
//!   of the current period (KVM_SET_PIT2 then restarts the period: see below);
//! * a one-shot past its terminal count goes as N with `count_load_time` at its load, which
//!   KVM's formulas read as the model does (OUT high, the count wrapping).
//!
//! Counting, from KVM ([`PitState::from_kvm`], at `now`): counters 1 and 2 run from
//! `count_load_time`, at the position KVM reads at `now` (the two clocks' rates differ by
//! 0.84 ppm, so the position is re-based at `now` rather than derived with the model's
//! clock). Counter 0 is loaded at `now` from `count`, as KVM_SET_PIT2 would do with the same
//! state, because its `count_load_time` is not maintained by KVM: a counter-0 count written by
//! the guest after the last KVM_SET_PIT2 leaves it stale (0 on a new VM), and trusting it
//! would count such a one-shot as long expired and lose its interrupt.
//!
//! # What cannot be carried
//!
//! * **Counter 0's phase, from KVM.** It is not in the format; counter 0 restarts at `now`:
//!   a one-shot fires up to its elapsed time late (and a one-shot that already fired fires
//!   once more), a periodic counter's next IRQ0 comes one full period after `now`. KVM's own
//!   save/restore (KVM_GET_PIT2 then KVM_SET_PIT2) does exactly the same.
//! * **Periodic phase, to KVM.** KVM_SET_PIT2 restarts every period at the ioctl (the
//!   format carries the phase of counters 1 and 2, KVM discards it). The next IRQ0 comes up
//!   to one period late; none is lost or added. Counter 2 in modes 1 and 5 is restarted the
//!   same way: its current run ends late by the clocks it had already counted (keeping N for
//!   the next gate trigger matters more: that is how software uses those modes). A one-shot that has reached terminal count is
//!   restarted by KVM_SET_PIT2 and fires (mode 0, 1, 4 on counter 0) once more after N clocks.
//! * **Sub-clock phase of counter 0** in both directions: KVM restarts counter 0 at the
//!   ioctl, within a PIT clock (838 ns) of the instant the conversion assumes.
//! * **NULL COUNT.** KVM has none: from KVM it is clear (every count KVM holds is loaded).
//! * **Phases KVM does not have.** KVM counts every written count at once and ignores a low
//!   gate. To KVM, a counter waiting for its count after a control word (`Idle`), for a gate
//!   trigger (`Waiting`) or paused by a low gate (`Paused`) goes as counting from `now`:
//!   `Idle` and `Waiting` with the count register (after a control word KVM goes on counting
//!   the previous count), `Paused` with the clocks still to go. From KVM, a low gate takes
//!   effect at `now`: modes 0 and 4 pause where KVM's count is, modes 2 and 3 wait for the
//!   next rising edge; counter 0 in mode 5 (which KVM gives no timer) waits for a trigger its
//!   tied-high gate never gives.
//! * **A mode 2/3 count written during counting**, which the model defers to the end of the
//!   period or half-period: KVM loads a written count at once, so it goes to KVM loaded now.
//! * **A power-on counter.** KVM's counter before the first control word (mode 0xFF, LSB
//!   access, counted as a mode-0/mode-2 mixture) converts to the model's power-on counter,
//!   dropping what a guest did to it before programming it; the model's power-on counter goes
//!   to KVM as KVM's (so that KVM_SET_PIT2 starts no timer). The model's power-on counter is
//!   also what control word 0x30 (LSB then MSB, mode 0, binary) leaves on a counter that never
//!   had a count, so such a counter goes to KVM unprogrammed, with KVM's LSB-only access.
//! * **Read flip-flops KVM keeps apart.** The model has one read flip-flop for latched and
//!   live reads. A KVM latch with bytes of both left ([`RW_STATE_WORD0`]) under `read_state`
//!   WORD1 loses the live MSB-next; a latch of two bytes under single-byte access keeps only
//!   the first byte; a latch whose bytes no longer match `rw_mode` (KVM's control word does not
//!   clear it) is carried as the byte the guest reads next. A `latched_count`, `status` or
//!   `write_latch` with nothing latched is stale in KVM: only `write_latch` is carried.
//! * **BCD.** `count` is the raw register bits in both directions; KVM counts them in binary,
//!   so a BCD counter counts a different number of clocks in KVM than in the model.
//! * **KVM_PIT_FLAGS_HPET_LEGACY.** The model has no HPET legacy-replacement mode and would
//!   raise IRQ0: [`PitState::from_kvm`] refuses it ([`KvmPitError::HpetLegacy`]).
//! * **IRQ0 bookkeeping.** Edges [`Pit::advance`](super::Pit::advance) has not reported are
//!   not in the format (call it first and deliver them); KVM's reinjection count of ticks the
//!   guest has not acknowledged is not either, and KVM_SET_PIT2 resets it.
//! * **Port 0x61's refresh toggle**: a function of host time on both sides (KVM's toggles
//!   every 2¹⁴ ns, the model's every 18 clocks).

use kvm_bindings::{kvm_pit_channel_state, kvm_pit_state2};
pub use kvm_bindings::{KVM_PIT_FLAGS_HPET_LEGACY, KVM_PIT_FLAGS_SPEAKER_DATA_ON};

use super::regs::{Access, Counter, Mode};
use super::state::{ChannelState, Counting, Phase, PitState, StateError};
use super::wave;

/// The PIT clock of KVM's in-kernel PIT (`KVM_PIT_FREQ` in `arch/x86/kvm/i8254.h`), in Hz.
pub const KVM_PIT_FREQ: u64 = 1_193_181;

/// `read_state`/`write_state`/`count_latched`: least significant byte only.
pub const RW_STATE_LSB: u8 = 1;
/// `read_state`/`write_state`/`count_latched`: most significant byte only (for
/// `count_latched`, also: the LSB of an LSB-then-MSB latch was read).
pub const RW_STATE_MSB: u8 = 2;
/// `read_state`/`write_state`/`count_latched`: LSB then MSB, the LSB comes next.
pub const RW_STATE_WORD0: u8 = 3;
/// `read_state`/`write_state`: LSB then MSB, the MSB comes next.
pub const RW_STATE_WORD1: u8 = 4;

/// KVM's `mode` of a counter no control word has programmed since KVM_CREATE_PIT2.
pub const MODE_UNPROGRAMMED: u8 = 0xFF;

/// The largest `count` KVM holds: a written 0 (65536 clocks).
pub const MAX_COUNT: u32 = 0x1_0000;

const NS_PER_S: u128 = 1_000_000_000;

/// Why [`PitState::from_kvm`] refused a `kvm_pit_state2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvmPitError {
    /// A channel field holds a value KVM never stores there (KVM_SET_PIT2 stores any bytes
    /// it is given, so these come from a VMM or a corrupted snapshot).
    Field {
        /// The counter.
        counter: Counter,
        /// The field of `kvm_pit_channel_state`.
        field: &'static str,
        /// The value found.
        value: i64,
    },
    /// `flags` has bits other than KVM_PIT_FLAGS_HPET_LEGACY and KVM_PIT_FLAGS_SPEAKER_DATA_ON.
    Flags(u32),
    /// KVM_PIT_FLAGS_HPET_LEGACY: KVM's counter 0 raises no IRQ0 while the HPET replaces it;
    /// the model has no such mode and would raise it. A VMM that emulates the HPET's legacy
    /// replacement itself clears the flag and keeps IRQ0 unwired while it is on.
    HpetLegacy,
    /// The converted state contradicts itself (as [`super::Pit::restore`] would say).
    State(StateError),
}

impl core::fmt::Display for KvmPitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KvmPitError::Field { counter, field, value } => {
                write!(f, "{counter:?}: kvm_pit_channel_state.{field} = {value:#x} is not a value KVM stores")
            }
            KvmPitError::Flags(flags) => write!(f, "kvm_pit_state2.flags {flags:#x} has unknown bits"),
            KvmPitError::HpetLegacy => {
                write!(f, "KVM_PIT_FLAGS_HPET_LEGACY: the model has no HPET legacy-replacement mode")
            }
            KvmPitError::State(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for KvmPitError {}

impl From<StateError> for KvmPitError {
    fn from(e: StateError) -> Self {
        KvmPitError::State(e)
    }
}

/// Whole KVM clocks in `elapsed_ns`: ⌊elapsed·1193181/10⁹⌋.
fn kvm_ticks(elapsed_ns: u64) -> u64 {
    let ticks = u128::from(elapsed_ns).wrapping_mul(u128::from(KVM_PIT_FREQ)) / NS_PER_S;
    // Below 2^55: always fits.
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// The first elapsed ns at which [`kvm_ticks`] reaches `ticks`; `None` beyond `u64::MAX`.
fn kvm_ticks_to_ns_ceil(ticks: u64) -> Option<u64> {
    let hz = u128::from(KVM_PIT_FREQ);
    let ns = u128::from(ticks).wrapping_mul(NS_PER_S).wrapping_add(hz.wrapping_sub(1)).checked_div(hz)?;
    u64::try_from(ns).ok()
}

/// KVM's `count` for raw register bits (0 is 65536).
fn kvm_count(raw: u16) -> u32 {
    if raw == 0 {
        MAX_COUNT
    } else {
        u32::from(raw)
    }
}

/// KVM's mode number (6 and 7 folded into 2 and 3).
fn kvm_mode(mode: Mode) -> u8 {
    match mode {
        Mode::InterruptOnTerminalCount => 0,
        Mode::HardwareRetriggerableOneShot => 1,
        Mode::RateGenerator => 2,
        Mode::SquareWave => 3,
        Mode::SoftwareTriggeredStrobe => 4,
        Mode::HardwareTriggeredStrobe => 5,
    }
}

fn periodic(mode: Mode) -> bool {
    matches!(mode, Mode::RateGenerator | Mode::SquareWave)
}

fn ns_to_ktime(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

impl ChannelState {
    /// This counter as KVM's channel state at host time `now`; `gated`: its gate can still rise
    /// (counter 2, on port 0x61), which restarts modes 1 and 5 from `count`.
    fn kvm_channel(&self, now: u64, gated: bool) -> kvm_pit_channel_state {
        if *self == ChannelState::reset(self.gate) {
            return kvm_pit_channel_state {
                count: MAX_COUNT,
                mode: MODE_UNPROGRAMMED,
                gate: u8::from(self.gate),
                count_load_time: ns_to_ktime(now),
                ..kvm_pit_channel_state::default()
            };
        }
        let mut ch = *self;
        ch.settle(now);
        let (count, load) = ch.kvm_count_and_load(now, gated);
        let read_state = match ch.access {
            Access::Lsb => RW_STATE_LSB,
            Access::Msb => RW_STATE_MSB,
            Access::LsbMsb if ch.read_msb_next && ch.count_latch.is_none() => RW_STATE_WORD1,
            Access::LsbMsb => RW_STATE_WORD0,
        };
        let count_latched = match (ch.count_latch, ch.access) {
            (None, _) => 0,
            (Some(_), Access::LsbMsb) if ch.read_msb_next => RW_STATE_MSB,
            (Some(_), access) => access as u8,
        };
        kvm_pit_channel_state {
            count,
            latched_count: ch.count_latch.unwrap_or(0),
            count_latched,
            status_latched: u8::from(ch.status_latch.is_some()),
            status: ch.status_latch.unwrap_or(0),
            read_state,
            write_state: match ch.access {
                Access::Lsb => RW_STATE_LSB,
                Access::Msb => RW_STATE_MSB,
                Access::LsbMsb if ch.write_msb_next => RW_STATE_WORD1,
                Access::LsbMsb => RW_STATE_WORD0,
            },
            write_latch: ch.write_lsb,
            rw_mode: ch.access as u8,
            mode: kvm_mode(ch.kind()),
            bcd: u8::from(ch.bcd),
            gate: u8::from(ch.gate),
            count_load_time: ns_to_ktime(load),
        }
    }

    /// KVM's `count` and `count_load_time` (host ns) for this counter at `now` (`gated`: see
    /// [`Self::kvm_channel`]).
    fn kvm_count_and_load(&self, now: u64, gated: bool) -> (u32, u64) {
        match self.phase {
            // KVM counts at once whatever it is given: from now, the count register.
            Phase::Idle | Phase::Waiting => (kvm_count(self.count), now),
            Phase::Paused { position } => self.kvm_position(self.loaded, position, now, gated),
            Phase::Counting(run) => {
                let t = wave::ns_to_ticks(now.saturating_sub(run.start_ns));
                // The instant clock t began: the position is the same from then to now.
                let began = wave::ticks_to_ns_ceil(t)
                    .and_then(|ns| run.start_ns.checked_add(ns))
                    .map_or(now, |at| at.min(now));
                if run.reload_at.is_some() {
                    // A mode 2/3 count written during counting, not yet taken over: KVM loads
                    // a written count at once.
                    return (kvm_count(self.count), began);
                }
                let (raw, position) = self.wave_at(&run, t);
                self.kvm_position(raw, position, began, gated)
            }
        }
    }

    /// `count` and `count_load_time` for the waveform of raw initial count `raw` at
    /// `position`, in the clock that began at host time `began` (`gated`: see
    /// [`Self::kvm_channel`]).
    fn kvm_position(&self, raw: u16, position: u64, began: u64, gated: bool) -> (u32, u64) {
        let n = u64::from(self.initial(raw));
        // The instant KVM's clock `clocks` before this one began.
        let back = |clocks: u64| kvm_ticks_to_ns_ceil(clocks).map_or(0, |ns| began.saturating_sub(ns));
        // A gate rising edge restarts modes 1 and 5 from `count`: it must stay N.
        let retriggerable = gated && matches!(self.mode, 1 | 5);
        if periodic(self.kind()) {
            (kvm_count(raw), back(position.checked_rem(n).unwrap_or(0)))
        } else if position < n && !retriggerable {
            // Before terminal count: the clocks still to go, loaded now, so that
            // KVM_SET_PIT2's restart ends it at the same instant.
            let remaining = u32::try_from(n.wrapping_sub(position)).unwrap_or(0);
            (kvm_count(self.encode(remaining)), began)
        } else {
            (kvm_count(raw), back(position))
        }
    }

    /// Counter `counter` from KVM's channel state taken at host time `now`.
    fn from_kvm_channel(
        kvm: &kvm_pit_channel_state,
        counter: Counter,
        now: u64,
    ) -> Result<ChannelState, KvmPitError> {
        let field = |field: &'static str, value: i64| KvmPitError::Field { counter, field, value };
        let flag = |name: &'static str, value: u8| match value {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(field(name, value.into())),
        };
        let gate = flag("gate", kvm.gate)?;
        if kvm.mode == MODE_UNPROGRAMMED {
            return Ok(ChannelState::reset(gate));
        }
        if kvm.mode > 5 {
            return Err(field("mode", kvm.mode.into()));
        }
        let access = match kvm.rw_mode {
            1 => Access::Lsb,
            2 => Access::Msb,
            3 => Access::LsbMsb,
            value => return Err(field("rw_mode", value.into())),
        };
        let bcd = flag("bcd", kvm.bcd)?;
        let status_latched = flag("status_latched", kvm.status_latched)?;
        // KVM sets both flip-flops from `rw_mode` and toggles them only in LSB-then-MSB.
        let consistent = |state: u8| match access {
            Access::Lsb => state == RW_STATE_LSB,
            Access::Msb => state == RW_STATE_MSB,
            Access::LsbMsb => state == RW_STATE_WORD0 || state == RW_STATE_WORD1,
        };
        if !consistent(kvm.read_state) {
            return Err(field("read_state", kvm.read_state.into()));
        }
        if !consistent(kvm.write_state) {
            return Err(field("write_state", kvm.write_state.into()));
        }
        if kvm.count > MAX_COUNT {
            return Err(field("count", kvm.count.into()));
        }
        let raw = u16::try_from(kvm.count & 0xFFFF).unwrap_or(0);
        // The bytes a latch still gives, in the model's single read flip-flop: the latch's
        // MSB is what it returns with `read_msb_next` set (or under MSB-only access).
        let latch = kvm.latched_count;
        let [lo, hi] = latch.to_le_bytes();
        let (count_latch, read_msb_next) = match (kvm.count_latched, access) {
            (0, _) => (None, kvm.read_state == RW_STATE_WORD1),
            (RW_STATE_WORD0, Access::LsbMsb) => (Some(latch), false),
            (RW_STATE_MSB, Access::LsbMsb) => (Some(latch), true),
            (RW_STATE_LSB, Access::LsbMsb) => (Some(u16::from_le_bytes([lo, lo])), true),
            (RW_STATE_LSB | RW_STATE_WORD0, Access::Lsb) | (RW_STATE_MSB, Access::Msb) => {
                (Some(latch), false)
            }
            (RW_STATE_MSB, Access::Lsb) => (Some(u16::from_le_bytes([hi, hi])), false),
            (RW_STATE_LSB | RW_STATE_WORD0, Access::Msb) => (Some(u16::from_le_bytes([lo, lo])), false),
            (value, _) => return Err(field("count_latched", value.into())),
        };
        let mut ch = ChannelState {
            mode: kvm.mode,
            access,
            bcd,
            count: raw,
            loaded: raw,
            held: raw,
            null_count: false,
            write_msb_next: kvm.write_state == RW_STATE_WORD1,
            write_lsb: kvm.write_latch,
            read_msb_next,
            count_latch,
            status_latch: status_latched.then_some(kvm.status),
            gate,
            phase: Phase::Idle,
        };
        let mode = ch.kind();
        let run = if counter == Counter::Counter0 {
            // KVM keeps no load time for counter 0: loaded now, as KVM_SET_PIT2 would.
            Counting { start_ns: now, origin_tick: 0, origin_position: 0, reload_at: None }
        } else {
            let load = u64::try_from(kvm.count_load_time)
                .map_err(|_| field("count_load_time", kvm.count_load_time))?;
            // KVM's position at `now`, and the instant KVM's clock reached it.
            let d = kvm_ticks(now.saturating_sub(load));
            let began =
                kvm_ticks_to_ns_ceil(d).and_then(|ns| load.checked_add(ns)).map_or(now, |at| at.min(now));
            let n = u64::from(ch.initial(raw));
            let position = if periodic(mode) { d.checked_rem(n).unwrap_or(0) } else { d };
            Counting { start_ns: began, origin_tick: 0, origin_position: position, reload_at: None }
        };
        ch.phase = Phase::Counting(run);
        ch.phase = match mode {
            // A low gate takes effect now: modes 0 and 4 suspend, modes 2 and 3 wait.
            Mode::InterruptOnTerminalCount | Mode::SoftwareTriggeredStrobe if !gate => Phase::Paused {
                position: run
                    .origin_position
                    .saturating_add(wave::ns_to_ticks(now.saturating_sub(run.start_ns))),
            },
            Mode::RateGenerator | Mode::SquareWave if !gate => {
                ch.held = ch.element(now);
                Phase::Waiting
            }
            // KVM gives counter 0 no timer in mode 5; the model's waits for a trigger.
            Mode::HardwareTriggeredStrobe if counter == Counter::Counter0 => Phase::Waiting,
            _ => Phase::Counting(run),
        };
        Ok(ch)
    }
}

impl PitState {
    /// The PIT as KVM's `kvm_pit_state2` for KVM_SET_PIT2 at host time `now` (ns on the
    /// clock of KVM's `count_load_time`, CLOCK_MONOTONIC). KVM_SET_PIT2 restarts every
    /// counter from the `count` given, so each counter goes with the count that makes KVM
    /// continue it: see the [module documentation](self) for every field and for what KVM
    /// cannot continue. `flags` carries the speaker data bit, never HPET legacy.
    ///
    /// Call [`Pit::advance`](super::Pit::advance) first: IRQ0 edges it has not reported are
    /// not part of the format.
    pub fn to_kvm(&self, now: u64) -> kvm_pit_state2 {
        let [c0, c1, c2] = &self.channels;
        kvm_pit_state2 {
            channels: [c0.kvm_channel(now, false), c1.kvm_channel(now, false), c2.kvm_channel(now, true)],
            flags: if self.speaker_data { KVM_PIT_FLAGS_SPEAKER_DATA_ON } else { 0 },
            reserved: [0; 9],
        }
    }

    /// KVM's state (KVM_GET_PIT2) taken at host time `now` (ns, the clock of
    /// `count_load_time`), validated like [`Pit::restore`](super::Pit::restore). Counters 1
    /// and 2 continue from their `count_load_time`; counter 0, whose load time KVM does not
    /// keep, is loaded at `now` as KVM_SET_PIT2 would load it. No IRQ0 edge is pending.
    ///
    /// Refuses values KVM never stores (a mode other than 0–5 and 0xFF, access 0 on a
    /// programmed counter, a flip-flop that contradicts `rw_mode`, a flag byte other than 0
    /// or 1, `count` above 0x10000, `count_latched` above 3, a negative `count_load_time` on
    /// counter 1 or 2, unknown `flags`), HPET legacy mode, and gates that contradict the PC
    /// (counters 0 and 1 are tied high).
    pub fn from_kvm(kvm: &kvm_pit_state2, now: u64) -> Result<PitState, KvmPitError> {
        if kvm.flags & KVM_PIT_FLAGS_HPET_LEGACY != 0 {
            return Err(KvmPitError::HpetLegacy);
        }
        if kvm.flags & !KVM_PIT_FLAGS_SPEAKER_DATA_ON != 0 {
            return Err(KvmPitError::Flags(kvm.flags));
        }
        let [k0, k1, k2] = &kvm.channels;
        let state = PitState {
            channels: [
                ChannelState::from_kvm_channel(k0, Counter::Counter0, now)?,
                ChannelState::from_kvm_channel(k1, Counter::Counter1, now)?,
                ChannelState::from_kvm_channel(k2, Counter::Counter2, now)?,
            ],
            speaker_data: kvm.flags & KVM_PIT_FLAGS_SPEAKER_DATA_ON != 0,
            irq0_pending: 0,
            irq0_synced_ns: now,
        };
        state.validate()?;
        Ok(state)
    }
}

#[cfg(test)]
mod tests;
