//! Hot paths of the TSC model as a VMM drives them: the guest TSC read (every RDTSC or
//! RDMSR exit, every deadline check) and the conversion of a TSC deadline to host time.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-tsc cargo bench -p vm-timer --bench tsc -- \
//!     --warm-up-time 1 --measurement-time 3
//! ```

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use vm_timer::tsc::{GuestTsc, ScalingFormat, Tsc, TscDeadline, TscScaling};

/// A 1.7 GHz guest on a 2.9 GHz host (a ratio that is not a power of two).
fn scaled() -> TscScaling {
    TscScaling::from_khz(ScalingFormat::Vmx, 1_700_000, 2_900_000).unwrap()
}

/// Guest TSC read: unscaled (ratio 1.0, the multiply is skipped) and scaled (128-bit multiply).
fn guest_tsc_read(c: &mut Criterion) {
    let offset = (-(1i64 << 48)) as u64;
    for (name, scaling) in [
        ("unscaled", TscScaling::identity(ScalingFormat::Vmx)),
        ("scaled_vmx", scaled()),
        ("scaled_svm", TscScaling::from_khz(ScalingFormat::Svm, 1_700_000, 2_900_000).unwrap()),
    ] {
        let clock = GuestTsc::new(scaling, offset);
        let mut host = 1u64 << 40;
        c.bench_function(&format!("tsc/guest_read/{name}"), |b| {
            b.iter(|| {
                host = host.wrapping_add(977);
                black_box(clock.read(black_box(host)))
            })
        });
    }
}

/// Deadline to host TSC ticks (`next_deadline`) and to host nanoseconds, plus the
/// `advance` check a VMM makes when its host timer fires.
fn deadline_to_host(c: &mut Criterion) {
    for (name, scaling) in [("unscaled", TscScaling::identity(ScalingFormat::Vmx)), ("scaled", scaled())] {
        let clock = GuestTsc::new(scaling, 12345);
        let now = 1u64 << 40;
        let mut deadline = TscDeadline::new();
        let _ = deadline.write(clock.read(now) + 1_700_000, &clock, now); // 1 ms of guest time ahead
        c.bench_function(&format!("tsc/next_deadline/{name}"), |b| {
            b.iter(|| black_box(deadline.next_deadline(black_box(&clock), black_box(now))))
        });
        c.bench_function(&format!("tsc/next_deadline_ns/{name}"), |b| {
            b.iter(|| {
                black_box(deadline.next_deadline_ns(
                    black_box(&clock),
                    black_box(now),
                    black_box(5_000_000),
                    black_box(2_900_000_000),
                ))
            })
        });
        c.bench_function(&format!("tsc/host_tsc_at/{name}"), |b| {
            b.iter(|| black_box(clock.host_tsc_at(black_box(0x1234_5678_9abc))))
        });
    }
}

/// A guest arming the deadline and the VMM's host timer firing it, through `Tsc`.
fn arm_and_fire(c: &mut Criterion) {
    let mut tsc = Tsc::new(scaled());
    let now = 1u64 << 40;
    tsc.host_set_tsc(0, now);
    c.bench_function("tsc/arm_then_fire/scaled", |b| {
        b.iter(|| {
            let armed_fired = tsc.guest_write_tsc_deadline(black_box(1_000_000), now);
            let at = tsc.next_deadline(now).unwrap_or(now);
            black_box((armed_fired, tsc.advance(at)))
        })
    });
}

criterion_group!(benches, guest_tsc_read, deadline_to_host, arm_and_fire);
criterion_main!(benches);
