//! Fuzzing of vm-timer's `kvm_pit_state2` conversion (`vm_timer::pit::kvm`), the state a VMM
//! reads from KVM_GET_PIT2 (or a migration stream) and hands to KVM_SET_PIT2.
//!
//! An input is an arbitrary `kvm_pit_state2` (every field any value), the host instant of the
//! conversion, and guest port I/O with elapsed time afterwards. [`run`] asserts:
//!
//! 1. nothing panics, whatever the bytes;
//! 2. a state `PitState::from_kvm` accepts is one `Pit::restore` accepts;
//! 3. what `PitState::to_kvm` produces, right after the conversion and again after arbitrary
//!    guest accesses and time, `from_kvm` accepts: a PIT moved out to KVM can always come back.

use arbitrary::{Arbitrary, Unstructured};
use kvm_bindings::{kvm_pit_channel_state, kvm_pit_state2};
use vm_timer::pit::{Pit, PitState};

/// One fuzz case.
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// The three channels, field by field.
    pub channels: [Channel; 3],
    /// `flags`.
    pub flags: u32,
    /// Host ns of the conversion.
    pub now: u64,
    /// Guest accesses afterwards.
    pub accesses: Vec<Access>,
}

/// A `kvm_pit_channel_state`, every field arbitrary.
#[derive(Arbitrary, Debug)]
pub struct Channel {
    pub count: u32,
    pub latched_count: u16,
    /// count_latched, status_latched, status, read_state, write_state, write_latch, rw_mode,
    /// mode, bcd, gate.
    pub bytes: [u8; 10],
    pub count_load_time: i64,
}

/// A guest port access `elapsed` ns after the previous one.
#[derive(Arbitrary, Debug)]
pub struct Access {
    /// 0x40–0x43 or 0x61 (`port % 5`).
    pub port: u8,
    /// A write of this byte, or a read.
    pub write: Option<u8>,
    pub elapsed: u32,
}

/// The most accesses one input applies.
pub const MAX_ACCESSES: usize = 64;

fn channel(c: &Channel) -> kvm_pit_channel_state {
    let b = c.bytes;
    kvm_pit_channel_state {
        count: c.count,
        latched_count: c.latched_count,
        count_latched: b[0],
        status_latched: b[1],
        status: b[2],
        read_state: b[3],
        write_state: b[4],
        write_latch: b[5],
        rw_mode: b[6],
        mode: b[7],
        bcd: b[8],
        gate: b[9],
        count_load_time: c.count_load_time,
    }
}

/// Runs one fuzz input.
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else { return };
    let [c0, c1, c2] = &input.channels;
    let kvm = kvm_pit_state2 {
        channels: [channel(c0), channel(c1), channel(c2)],
        flags: input.flags,
        ..kvm_pit_state2::default()
    };
    let mut now = input.now;
    let Ok(state) = PitState::from_kvm(&kvm, now) else { return };
    let mut pit = Pit::new();
    if let Err(e) = pit.restore(&state) {
        panic!("from_kvm gave a state restore refuses: {e:?}\n{state:?}");
    }
    let back = pit.state().to_kvm(now);
    if let Err(e) = PitState::from_kvm(&back, now) {
        panic!("to_kvm right after from_kvm is refused: {e:?}\n{back:?}");
    }
    for access in input.accesses.iter().take(MAX_ACCESSES) {
        now = now.saturating_add(u64::from(access.elapsed));
        let port = [0x40, 0x41, 0x42, 0x43, 0x61][usize::from(access.port % 5)];
        match access.write {
            Some(value) => {
                let _ = pit.write(port, value, now);
            }
            None => {
                let _ = pit.read(port, now);
            }
        }
        let _ = pit.advance(now);
        let _ = pit.next_deadline(now);
        let out = pit.state().to_kvm(now);
        if let Err(e) = PitState::from_kvm(&out, now) {
            panic!("to_kvm after guest accesses is refused: {e:?}\n{out:?}");
        }
    }
}
