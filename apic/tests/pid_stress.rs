//! Multi-threaded stress of the posted-interrupt descriptor: three posting threads and one
//! consuming thread (which also toggles SN, as a VMM does when the vCPU is preempted and
//! scheduled in), millions of posts, exact accounting.
//!
//! Whatever the interleaving, these equalities hold, and the test asserts them:
//!
//! * for every vector, the number of posts that added it to PIR (every outcome but
//!   `Coalesced`) equals the number of times a harvest took it: nothing lost, nothing
//!   duplicated, nothing harvested that was not posted;
//! * new posts + coalesced posts = posts;
//! * `Notify` outcomes + `Some` answers of clearing SN (the ON 0→1 transitions) = harvests that
//!   found ON set (the ON 1→0 transitions), with ON clear and PIR empty at the end.
//!
//! Bounded: the posters never wait for the consumer, the consumer stops when they are done, and
//! a deadline turns a hang into a failure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use vm_apic::apicv::pid::{NotificationDestination, PostOutcome, PostedInterruptDescriptor};

const POSTERS: usize = 3;
/// Posts per posting thread: 3 × 2 000 000 in all.
const POSTS_PER_THREAD: u64 = 2_000_000;
/// The consumer sets SN every this many harvests, and clears it again half-way to the next.
const SN_PERIOD: u64 = 64;
/// A run that takes longer than this has hung (it takes well under a few seconds).
const DEADLINE: Duration = Duration::from_secs(120);

/// What one poster saw.
struct PosterTally {
    /// Per vector: posts that added the vector to PIR.
    new_posts: [u64; 256],
    notify: u64,
    pending: u64,
    suppressed: u64,
    coalesced: u64,
}

/// What the consumer saw.
struct ConsumerTally {
    /// Per vector: how often a harvest took it.
    harvested: [u64; 256],
    harvests: u64,
    /// Harvests that found ON set.
    on_periods: u64,
    /// Clearing SN set ON again (a notification was due).
    sn_notifies: u64,
}

/// The vector of post `i` of thread `t`: all of 0x20–0xFF, in a different order per thread, so
/// that threads collide on vectors and on PIR words.
fn vector(t: usize, i: u64) -> u8 {
    let step = [1u64, 7, 31][t % 3];
    (0x20 + (i.wrapping_mul(step).wrapping_add(t as u64 * 50)) % 0xE0) as u8
}

fn poster(pid: &PostedInterruptDescriptor, t: usize, finished: &AtomicUsize) -> PosterTally {
    let mut tally = PosterTally { new_posts: [0; 256], notify: 0, pending: 0, suppressed: 0, coalesced: 0 };
    for i in 0..POSTS_PER_THREAD {
        let v = vector(t, i);
        match pid.post(v) {
            PostOutcome::Notify(n) => {
                assert_eq!(n.vector, 0xF2);
                tally.notify += 1;
            }
            PostOutcome::Pending => tally.pending += 1,
            PostOutcome::Suppressed => tally.suppressed += 1,
            PostOutcome::Coalesced => {
                tally.coalesced += 1;
                continue;
            }
        }
        tally.new_posts[usize::from(v)] += 1;
    }
    finished.fetch_add(1, Ordering::Release);
    tally
}

fn consumer(pid: &PostedInterruptDescriptor, finished: &AtomicUsize, start: Instant) -> ConsumerTally {
    let mut tally = ConsumerTally { harvested: [0; 256], harvests: 0, on_periods: 0, sn_notifies: 0 };
    let take = |tally: &mut ConsumerTally| {
        let harvest = pid.harvest_detailed();
        tally.harvests += 1;
        tally.on_periods += u64::from(harvest.outstanding);
        for v in harvest.vectors.iter() {
            tally.harvested[usize::from(v)] += 1;
        }
    };
    let clear_sn = |tally: &mut ConsumerTally| {
        if pid.suppress_notifications(false).is_some() {
            tally.sn_notifies += 1;
        }
    };
    let mut round = 0u64;
    while finished.load(Ordering::Acquire) < POSTERS {
        assert!(start.elapsed() < DEADLINE, "stress run hung");
        take(&mut tally);
        round += 1;
        match round % SN_PERIOD {
            0 => {
                let _ = pid.suppress_notifications(true);
            }
            r if r == SN_PERIOD / 2 => clear_sn(&mut tally),
            _ => {}
        }
        std::hint::spin_loop();
    }
    // Every post happened before this point (Acquire above). Schedule the vCPU in one last time.
    clear_sn(&mut tally);
    take(&mut tally);
    tally
}

#[test]
fn three_posters_one_consumer_exact_accounting() {
    let pid = PostedInterruptDescriptor::with_notification(0xF2, NotificationDestination::x2apic(0));
    let finished = AtomicUsize::new(0);
    let start = Instant::now();
    let (posters, consumer) = thread::scope(|s| {
        let handles: Vec<_> = (0..POSTERS)
            .map(|t| {
                s.spawn({
                    let (pid, finished) = (&pid, &finished);
                    move || poster(pid, t, finished)
                })
            })
            .collect();
        let consumer = consumer(&pid, &finished, start);
        let posters: Vec<PosterTally> = handles.into_iter().map(|h| h.join().expect("poster")).collect();
        (posters, consumer)
    });
    let elapsed = start.elapsed();

    assert!(pid.pir().is_empty(), "PIR not empty at the end: {pid:?}");
    assert!(!pid.outstanding(), "ON set at the end: {pid:?}");
    assert!(!pid.notifications_suppressed());

    for v in 0..256 {
        let posted: u64 = posters.iter().map(|p| p.new_posts[v]).sum();
        assert_eq!(posted, consumer.harvested[v], "vector {v:#x}: new posts vs harvested");
    }
    let sum = |f: fn(&PosterTally) -> u64| posters.iter().map(f).sum::<u64>();
    let (notify, pending, suppressed, coalesced) =
        (sum(|p| p.notify), sum(|p| p.pending), sum(|p| p.suppressed), sum(|p| p.coalesced));
    let new: u64 = consumer.harvested.iter().sum();
    assert_eq!(notify + pending + suppressed, new);
    assert_eq!(new + coalesced, POSTERS as u64 * POSTS_PER_THREAD);
    assert_eq!(
        notify + consumer.sn_notifies,
        consumer.on_periods,
        "ON 0→1 transitions vs ON 1→0 transitions"
    );

    eprintln!(
        "pid_stress: {} posts by {POSTERS} threads in {elapsed:.2?}: {new} new ({notify} notify, {pending} pending, \
         {suppressed} suppressed), {coalesced} coalesced; {} harvests, {} ON periods, {} SN re-notifications",
        POSTERS as u64 * POSTS_PER_THREAD,
        consumer.harvests,
        consumer.on_periods,
        consumer.sn_notifies
    );
}
