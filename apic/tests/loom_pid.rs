//! Model check (loom: every interleaving, and every value a weakly ordered load may return) of
//! the posted-interrupt descriptor's protocol: two posters and one consuming vCPU.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target-loom \
//!     cargo test -p vm-apic --test loom_pid --release -- --nocapture
//! ```
//!
//! Each test prints the number of executions loom explored. Properties, in every execution:
//!
//! * no vector is lost: every new post is delivered, either by the vCPU's harvest before it
//!   enters the guest or by the posted-interrupt processing of a notification it was sent;
//! * no vector is duplicated: each new post is delivered exactly once (a coalesced post with the
//!   one it merged into), and no harvest takes a bit that was not newly posted;
//! * one notification per ON 0→1 transition: the number of `Notify` outcomes (plus `Some` from
//!   clearing SN) equals the number of harvests that found ON set, and ON is clear at the end;
//! * the wake-up protocols (blocking vCPU, SN, NV switch to a wake-up vector) never leave a
//!   vCPU asleep or a notification on the wrong vector.

#![cfg(loom)]

use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};
use std::time::Instant;

use loom::sync::atomic::{fence, AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;

use vm_apic::apicv::pid::{NotificationDestination, PostOutcome, PostedInterruptDescriptor};
use vm_apic::VectorSet;

/// The notification vector of a running vCPU (KVM's POSTED_INTR_VECTOR).
const NV: u8 = 0xF2;
/// The wake-up vector of a blocked vCPU (KVM's POSTED_INTR_WAKEUP_VECTOR).
const WAKEUP_NV: u8 = 0xF1;

/// Runs `body` under loom and reports how many executions were explored and how long it took.
///
/// `preemptions` bounds the number of preemptions loom explores per execution (`None`: every
/// interleaving); `LOOM_MAX_PREEMPTIONS` in the environment overrides it for every test.
fn model<F: Fn() + Sync + Send + 'static>(name: &str, preemptions: Option<usize>, body: F) {
    let executions = std::sync::Arc::new(StdAtomicUsize::new(0));
    let counter = executions.clone();
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = preemptions;
    }
    let bound = builder.preemption_bound;
    let start = Instant::now();
    builder.check(move || {
        counter.fetch_add(1, StdOrdering::Relaxed);
        body();
    });
    let bound = bound.map_or_else(|| "unbounded".to_string(), |b| format!("at most {b} preemptions"));
    eprintln!(
        "loom {name}: {} executions ({bound}) in {:.2?}",
        executions.load(StdOrdering::Relaxed),
        start.elapsed()
    );
}

/// The preemption bound of the two largest models (two posters posting twice each; two posters
/// against a vCPU clearing SN and entering):
/// about 10^5 executions each, seconds; every other model is explored without a bound.
const LARGE_MODEL_PREEMPTIONS: Option<usize> = Some(4);

fn descriptor() -> PostedInterruptDescriptor {
    PostedInterruptDescriptor::with_notification(NV, NotificationDestination::x2apic(1))
}

/// The world of one vCPU: its descriptor, its run state as posters see it, and what was sent to it.
///
/// The counters are bookkeeping of the test, read after every thread has been joined: plain
/// `std` atomics, which loom does not model (fewer points to interleave).
struct Vcpu {
    pid: PostedInterruptDescriptor,
    /// "In guest mode" (KVM's `vcpu->mode == IN_GUEST_MODE`).
    in_guest: AtomicBool,
    /// Notification IPIs sent while it was in guest mode: each one is taken after VM entry and
    /// processed by the CPU (a harvest).
    ipis: StdAtomicUsize,
    /// `Notify` outcomes (and `Some` from clearing SN): ON 0→1 transitions.
    notifies: StdAtomicUsize,
    /// Whether posters issue `fence(SeqCst)` between `post` and reading the run state.
    poster_fence: bool,
}

/// How the vCPU thread gets ready to enter the guest.
#[derive(Clone, Copy, PartialEq)]
enum Entry {
    /// The protocol: store "in guest", then harvest (whose first step, the read-modify-write
    /// that clears ON, orders it against every post's read-modify-write of the control word),
    /// with no fence on either side.
    Harvest,
    /// KVM's shape: store "in guest", `fence(SeqCst)`, then harvest only if ON is set; posters
    /// fence between `post` and reading the run state.
    FenceThenHarvestIfOn,
    /// A bug: store "in guest", then harvest only if ON is set, with no fence on the vCPU's side
    /// (posters fence): a plain load of ON is not ordered against the poster.
    HarvestIfOnWithoutFence,
}

impl Vcpu {
    fn new(pid: PostedInterruptDescriptor, entry: Entry) -> Arc<Self> {
        Arc::new(Vcpu {
            pid,
            in_guest: AtomicBool::new(false),
            ipis: StdAtomicUsize::new(0),
            notifies: StdAtomicUsize::new(0),
            poster_fence: entry != Entry::Harvest,
        })
    }

    /// A poster following the protocol (post; on Notify look at the target's run state: IPI if
    /// in guest, else wake); returns whether the post was new.
    fn post(&self, vector: u8) -> bool {
        let outcome = self.pid.post(vector);
        if let PostOutcome::Notify(n) = outcome {
            assert_eq!(n.vector, NV);
            self.notifies.fetch_add(1, StdOrdering::Relaxed);
            if self.poster_fence {
                fence(Ordering::SeqCst);
            }
            if self.in_guest.load(Ordering::Relaxed) {
                self.ipis.fetch_add(1, StdOrdering::Relaxed);
            }
            // Else: wake the vCPU thread (a no-op for one that is about to enter: it
            // harvests after setting in_guest).
        }
        outcome.is_new()
    }

    /// The vCPU entering the guest; returns what it harvested and whether that ended an ON period.
    fn enter(&self, entry: Entry) -> (VectorSet, usize) {
        self.in_guest.store(true, Ordering::Relaxed);
        if entry == Entry::FenceThenHarvestIfOn {
            fence(Ordering::SeqCst);
        }
        if entry != Entry::Harvest && !self.pid.outstanding() {
            return (VectorSet::EMPTY, 0);
        }
        let harvest = self.pid.harvest_detailed();
        (harvest.vectors, usize::from(harvest.outstanding))
    }

    /// After every thread has finished: the CPU processes each notification it was sent in guest
    /// mode; returns everything delivered and checks the accounting.
    fn settle(&self, mut delivered: Vec<VectorSet>, mut on_periods: usize) -> Vec<VectorSet> {
        for _ in 0..self.ipis.load(StdOrdering::Relaxed) {
            let harvest = self.pid.harvest_detailed();
            on_periods += usize::from(harvest.outstanding);
            delivered.push(harvest.vectors);
        }
        assert!(self.pid.pir().is_empty(), "vector left in PIR: {:?}", self.pid);
        assert!(!self.pid.outstanding(), "ON left set: {:?}", self.pid);
        assert_eq!(self.notifies.load(StdOrdering::Relaxed), on_periods, "notifications vs ON periods");
        delivered
    }
}

/// Checks that the harvests deliver each vector exactly as many times as it was newly posted
/// (a vector posted, harvested and posted again is new twice and delivered twice; a coalesced
/// post is delivered with the one it merged into).
fn assert_exactly_once(delivered: &[VectorSet], posts: &[(u8, bool)]) {
    let mut count = [0usize; 256];
    for v in delivered.iter().flat_map(|set| set.iter()) {
        count[usize::from(v)] += 1;
    }
    for v in 0..=255u8 {
        let new_posts = posts.iter().filter(|&&(p, new)| p == v && new).count();
        assert_eq!(count[usize::from(v)], new_posts, "vector {v:#x}: deliveries vs new posts");
    }
}

/// Two posters (vectors `a` and `b`, each posted `times` times) against a vCPU entering the
/// guest.
fn posters_vs_entering_vcpu(a: u8, b: u8, times: usize, entry: Entry) {
    let vcpu = Vcpu::new(descriptor(), entry);
    let posters: Vec<_> = [a, b]
        .into_iter()
        .map(|vector| {
            let vcpu = vcpu.clone();
            thread::spawn(move || (0..times).map(|_| (vector, vcpu.post(vector))).collect::<Vec<_>>())
        })
        .collect();
    let (taken, on) = vcpu.enter(entry);
    let posts: Vec<(u8, bool)> = posters.into_iter().flat_map(|p| p.join().unwrap()).collect();
    let delivered = vcpu.settle(vec![taken], on);
    assert_exactly_once(&delivered, &posts);
}

#[test]
fn two_posters_and_an_entering_vcpu_lose_and_duplicate_nothing() {
    // Vectors in different PIR words (1 and 3).
    model("two_posters_entering_vcpu", None, || posters_vs_entering_vcpu(0x41, 0xE5, 1, Entry::Harvest));
}

#[test]
fn two_posters_in_one_pir_word() {
    model("two_posters_one_word", None, || posters_vs_entering_vcpu(0x41, 0x42, 1, Entry::Harvest));
}

#[test]
fn two_posters_of_the_same_vector_coalesce_or_deliver_twice_never_lose() {
    model("same_vector", None, || posters_vs_entering_vcpu(0x41, 0x41, 1, Entry::Harvest));
}

#[test]
fn a_poster_posting_twice_gets_one_notification_per_on_period() {
    model("repeat_posts", LARGE_MODEL_PREEMPTIONS, || {
        posters_vs_entering_vcpu(0x41, 0xE5, 2, Entry::Harvest)
    });
}

/// KVM's entry path: "in guest", full barrier, and sync only if ON is set.
#[test]
fn fence_then_harvest_if_on_is_also_correct() {
    model("fence_then_harvest_if_on", None, || {
        posters_vs_entering_vcpu(0x41, 0xE5, 1, Entry::FenceThenHarvestIfOn)
    });
}

/// The model has teeth: a vCPU that only peeks at ON (a plain load) before deciding to harvest,
/// with no fence after setting "in guest", can miss a post whose poster read a stale "not in
/// guest": the vector stays in PIR with ON set and nobody notifies. Loom finds that execution.
#[test]
#[should_panic(expected = "vector left in PIR")]
fn peeking_at_on_without_a_fence_loses_a_vector() {
    model("peek_without_fence", None, || {
        posters_vs_entering_vcpu(0x41, 0xE5, 1, Entry::HarvestIfOnWithoutFence)
    });
}

/// SN set while the vCPU was preempted; the posters run while it clears SN and enters.
#[test]
fn clearing_sn_races_with_posters() {
    model("sn_clear", LARGE_MODEL_PREEMPTIONS, || {
        let vcpu = Vcpu::new(descriptor(), Entry::Harvest);
        assert_eq!(vcpu.pid.suppress_notifications(true), None);
        let posters: Vec<_> = [0x41u8, 0xE5]
            .into_iter()
            .map(|vector| {
                let vcpu = vcpu.clone();
                thread::spawn(move || (vector, vcpu.post(vector)))
            })
            .collect();
        // The vCPU is scheduled in: clear SN (recomputing ON), then enter.
        if let Some(n) = vcpu.pid.suppress_notifications(false) {
            assert_eq!(n.vector, NV);
            // This thread is the target: the harvest below is its "notification".
            vcpu.notifies.fetch_add(1, StdOrdering::Relaxed);
        }
        let (taken, on) = vcpu.enter(Entry::Harvest);
        let posts: Vec<_> = posters.into_iter().map(|p| p.join().unwrap()).collect();
        let delivered = vcpu.settle(vec![taken], on);
        assert_exactly_once(&delivered, &posts);
    });
}

/// A vCPU about to block (HLT) against a poster: it sleeps only if the poster will wake it.
fn blocking_vcpu(suppressed: bool) {
    let pid = descriptor();
    if suppressed {
        pid.suppress_notifications(true);
    }
    let pid = Arc::new(pid);
    let blocked = Arc::new(AtomicBool::new(false));
    let poster = {
        let (pid, blocked) = (pid.clone(), blocked.clone());
        thread::spawn(move || {
            let outcome = pid.post(0x41);
            assert_eq!(matches!(outcome, PostOutcome::Suppressed), suppressed);
            fence(Ordering::SeqCst);
            // Notify or Suppressed: wake the target if it is blocked.
            blocked.load(Ordering::Relaxed)
        })
    };
    blocked.store(true, Ordering::Relaxed);
    fence(Ordering::SeqCst);
    let sleeps = !pid.is_pending();
    let woken = poster.join().unwrap();
    assert!(!sleeps || woken, "the vCPU went to sleep and nobody wakes it");
}

#[test]
fn a_blocking_vcpu_is_always_woken_or_does_not_sleep() {
    model("blocking", None, || blocking_vcpu(false));
}

#[test]
fn a_blocking_vcpu_with_sn_set_is_always_woken_or_does_not_sleep() {
    model("blocking_sn", None, || blocking_vcpu(true));
}

/// KVM's wake-up vector protocol: a vCPU that blocks switches NV to the wake-up vector; a post
/// notified with the old vector before the switch is caught by the switch returning ON set
/// (the VMM then sends itself the wake-up vector).
#[test]
fn switching_to_the_wakeup_vector_never_loses_the_wakeup() {
    model("wakeup_vector", None, || {
        let pid = Arc::new(descriptor());
        let poster = {
            let pid = pid.clone();
            thread::spawn(move || match pid.post(0x41) {
                PostOutcome::Notify(n) => n.vector,
                other => panic!("the only post must notify, got {other:?}"),
            })
        };
        let previous = pid.set_notification(WAKEUP_NV, NotificationDestination::x2apic(1));
        assert_eq!(previous.nv, NV);
        let notified = poster.join().unwrap();
        assert!(notified == WAKEUP_NV || previous.on, "the wake-up went to the running vector only");
        // Neither ON nor PIR was disturbed by the switch.
        let control = pid.control();
        assert!(control.on && !control.sn);
        assert_eq!(control.nv, WAKEUP_NV);
        assert!(pid.pir().iter().eq([0x41]));
    });
}

/// Two harvesters (a software sync racing with the CPU's processing) never take a bit twice.
#[test]
fn concurrent_harvests_take_each_bit_once() {
    model("two_harvesters", None, || {
        let pid = Arc::new(descriptor());
        let harvester = {
            let pid = pid.clone();
            thread::spawn(move || pid.harvest_detailed())
        };
        let outcomes = [pid.post(0x41), pid.post(0x42)];
        let mine = pid.harvest_detailed();
        let theirs = harvester.join().unwrap();
        let last = pid.harvest_detailed();
        assert_exactly_once(&[mine.vectors, theirs.vectors, last.vectors], &[(0x41, true), (0x42, true)]);
        let notifies = outcomes.iter().filter(|o| matches!(o, PostOutcome::Notify(_))).count();
        let periods = [mine, theirs, last].iter().filter(|h| h.outstanding).count();
        assert_eq!(notifies, periods);
    });
}
