//! Hot paths of the 8254 PIT as a VMM drives them.
//!
//! `cargo bench -p vm-timer --bench pit` (release profile, opt-level 3, no LTO).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use vm_timer::pit::{regs::*, Pit};

/// Linux's periodic tick on counter 0 (mode 2, 11932 clocks) and a mode-0 count on counter 2
/// with its gate on, as `pit_calibrate_tsc` leaves it.
fn linux_pit() -> Pit {
    let mut pit = Pit::default();
    for (port, value) in [
        (CONTROL_WORD, 0x34), // counter 0, LSB then MSB, mode 2, binary
        (COUNTER0, 0x9c),     // LSB of 11932
        (COUNTER0, 0x2e),     // MSB of 11932
        (NMI_SC, 0x01),       // gate 2 on, speaker off
        (CONTROL_WORD, 0xB0), // counter 2, LSB then MSB, mode 0, binary
        (COUNTER2, 0xff),     // LSB of 0xffff
        (COUNTER2, 0xff),     // MSB of 0xffff
    ] {
        let _ = pit.write(port, value, 0);
    }
    pit
}

/// Counter latch command and the two byte reads of the latched count (Linux's `pit_read`).
fn latch_and_read_count(c: &mut Criterion) {
    let mut pit = linux_pit();
    let mut now = 1_000u64;
    c.bench_function("pit/latch_read_count", |b| {
        b.iter(|| {
            now = now.wrapping_add(838);
            let _ = pit.write(CONTROL_WORD, 0x00, black_box(now)); // latch counter 0
            let lsb = pit.read(COUNTER0, now).0;
            let msb = pit.read(COUNTER0, now).0;
            black_box(u16::from_le_bytes([lsb, msb]))
        })
    });
}

/// One live byte read of counter 2 (`quick_pit_calibrate` reads the count this way).
fn read_live_byte(c: &mut Criterion) {
    let mut pit = linux_pit();
    let mut now = 1_000u64;
    c.bench_function("pit/read_live_byte", |b| {
        b.iter(|| {
            now = now.wrapping_add(838);
            black_box(pit.read(COUNTER2, black_box(now)).0)
        })
    });
}

/// Port 0x61 poll (`pit_calibrate_tsc` polls bit 5).
fn read_port_61(c: &mut Criterion) {
    let mut pit = linux_pit();
    let mut now = 1_000u64;
    c.bench_function("pit/read_port_61", |b| {
        b.iter(|| {
            now = now.wrapping_add(838);
            black_box(pit.read(NMI_SC, black_box(now)).0)
        })
    });
}

/// The VMM's timer expiry: count the IRQ0 edges and compute the next deadline.
fn advance_and_next_deadline(c: &mut Criterion) {
    let mut pit = linux_pit();
    let mut now = 0u64;
    c.bench_function("pit/advance_next_deadline", |b| {
        b.iter(|| {
            now = pit.next_deadline(now).unwrap_or(now);
            black_box(pit.advance(black_box(now)))
        })
    });
}

criterion_group!(benches, latch_and_read_count, read_live_byte, read_port_61, advance_and_next_deadline);
criterion_main!(benches);
