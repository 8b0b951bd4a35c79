//! Hot paths of the posted-interrupt descriptor.
//!
//! `cargo bench -p vm-apic --bench apicv -- --warm-up-time 1 --measurement-time 3`
//! (release profile, opt-level 3, no LTO).
//!
//! * `apicv/post_and_harvest`: one post of a new vector (ON 0→1, a notification due) and the
//!   harvest that takes it, single-threaded: the cost a VMM pays per posted interrupt.
//! * `apicv/post_coalesced`, `apicv/post_pending_pair_and_harvest`, `apicv/harvest_empty`: the
//!   other outcomes (vector already requested; ON already set; nothing to take).
//! * `apicv/post_throughput/N_posters`: N threads posting vectors as fast as they can while one
//!   thread harvests; criterion's throughput is posts per second (all posters together). On a
//!   machine with fewer cores than N + 1 threads this measures contention *and* time slicing.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vm_apic::apicv::pid::{NotificationDestination, PostOutcome, PostedInterruptDescriptor};

/// KVM's posted-interrupt notification vector.
const NV: u8 = 0xF2;

fn descriptor() -> PostedInterruptDescriptor {
    PostedInterruptDescriptor::with_notification(NV, NotificationDestination::x2apic(1))
}

fn single_threaded(c: &mut Criterion) {
    let pid = descriptor();
    c.bench_function("apicv/post_and_harvest", |b| {
        b.iter(|| {
            let outcome = pid.post(black_box(0x41));
            let taken = pid.harvest();
            black_box((outcome, taken))
        })
    });

    let pid = descriptor();
    let _ = pid.post(0x41);
    c.bench_function("apicv/post_coalesced", |b| b.iter(|| black_box(pid.post(black_box(0x41)))));

    // Two new vectors per iteration: the first finds ON clear (Notify), the second finds it set
    // (Pending); one harvest takes both.
    let pid = descriptor();
    c.bench_function("apicv/post_pending_pair_and_harvest", |b| {
        b.iter(|| {
            let first = pid.post(black_box(0x41));
            let second = pid.post(black_box(0x92));
            black_box((first, second, pid.harvest()))
        })
    });

    let pid = descriptor();
    c.bench_function("apicv/harvest_empty", |b| b.iter(|| black_box(pid.harvest())));
}

/// Runs `iters` posts on each of `posters` threads against one harvesting thread; returns the
/// time from the common start to the last poster's end.
fn contended_run(posters: usize, iters: u64) -> Duration {
    let pid = descriptor();
    let finished = AtomicUsize::new(0);
    let start = Barrier::new(posters + 1);
    thread::scope(|s| {
        // The consumer: harvests until every poster has finished, then once more.
        s.spawn(|| {
            while finished.load(Ordering::Acquire) < posters {
                black_box(pid.harvest());
                std::hint::spin_loop();
            }
            black_box(pid.harvest());
        });
        let handles: Vec<_> = (0..posters)
            .map(|t| {
                let (pid, start, finished) = (&pid, &start, &finished);
                s.spawn(move || {
                    start.wait();
                    let mut notifies = 0u64;
                    // Vectors 32–255, a different walk per thread.
                    let mut vector = 32 + (t as u64 * 57) % 224;
                    for _ in 0..iters {
                        if let PostOutcome::Notify(_) = pid.post(vector as u8) {
                            notifies += 1;
                        }
                        vector = if vector >= 255 { 32 } else { vector + 1 };
                    }
                    finished.fetch_add(1, Ordering::Release);
                    black_box(notifies);
                })
            })
            .collect();
        start.wait();
        let begin = Instant::now();
        for handle in handles {
            handle.join().expect("poster thread");
        }
        begin.elapsed()
    })
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("apicv/post_throughput");
    for posters in [2usize, 4] {
        group.throughput(Throughput::Elements(posters as u64));
        group.bench_function(format!("{posters}_posters"), |b| {
            b.iter_custom(|iters| contended_run(posters, iters))
        });
    }
    group.finish();
}

criterion_group!(benches, single_threaded, throughput);
criterion_main!(benches);
