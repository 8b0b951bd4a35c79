//! Kicking vCPU threads out of KVM_RUN at a deadline: model timers (the PIT) and the watchdog.
//!
//! A kick sets the vCPU's `kvm_run.immediate_exit` and sends SIGUSR1 to its thread; the
//! handler does nothing and is installed without SA_RESTART, so a KVM_RUN in progress returns
//! EINTR, and one about to start returns at once because of `immediate_exit`. The vCPU thread
//! clears `immediate_exit` before it reads the clock, so no deadline is lost in between.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;
use std::time::Instant;

extern "C" fn on_kick(_signal: libc::c_int) {}

/// Installs the no-op SIGUSR1 handler (once per process).
pub fn install_signal_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid starting point; the handler is an
        // async-signal-safe function that does nothing; flags exclude SA_RESTART on purpose.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = 0;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut());
        }
    });
}

#[derive(Debug)]
struct Slot {
    thread: libc::pthread_t,
    /// The same thread, to unpark it when it waits outside KVM_RUN (halted, or an AP held
    /// until its start-up IPI).
    handle: std::thread::Thread,
    /// Address of the vCPU's `kvm_run.immediate_exit` byte.
    immediate_exit: usize,
    deadline: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    slots: Vec<Option<Slot>>,
    /// When the kicker thread will next wake up on its own (None: not before a notify).
    wake_at: Option<Instant>,
    stop: bool,
}

/// One thread per VM that kicks vCPUs at their deadlines.
#[derive(Debug)]
pub struct Kicker {
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// Sets `immediate_exit` and signals the thread.
fn kick(slot: &Slot) {
    // SAFETY: `immediate_exit` points into the vCPU's kvm_run mapping, which stays mapped
    // while the slot is registered (the vCPU thread unregisters before dropping its VcpuFd);
    // a byte store through an atomic is what the kernel expects of a concurrent writer.
    unsafe { (*(slot.immediate_exit as *const AtomicU8)).store(1, Ordering::SeqCst) };
    // SAFETY: the thread is alive while registered (it unregisters, under the same lock
    // held by our caller, before it exits).
    unsafe {
        libc::pthread_kill(slot.thread, libc::SIGUSR1);
    }
}

impl Kicker {
    /// Starts the kicker thread for `vcpus` vCPUs.
    pub fn new(vcpus: usize) -> Self {
        install_signal_handler();
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        shared.0.lock().unwrap_or_else(|e| e.into_inner()).slots = (0..vcpus).map(|_| None).collect();
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("irq-harness-kicker".into())
            .spawn(move || Self::work(&worker))
            .ok();
        Kicker { shared, thread }
    }

    fn work(shared: &(Mutex<State>, Condvar)) {
        let (lock, cvar) = shared;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.stop {
                return;
            }
            let now = Instant::now();
            for slot in state.slots.iter_mut().flatten() {
                if slot.deadline.is_some_and(|d| d <= now) {
                    slot.deadline = None;
                    kick(slot);
                }
            }
            let next = state.slots.iter().flatten().filter_map(|s| s.deadline).min();
            state.wake_at = next;
            state = match next {
                Some(at) => {
                    cvar.wait_timeout(state, at.saturating_duration_since(now))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => cvar.wait(state).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// Registers the calling thread as vCPU `vcpu`, whose `kvm_run.immediate_exit` is at
    /// `immediate_exit`.
    pub fn register(&self, vcpu: usize, immediate_exit: *mut u8) {
        let mut state = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = state.slots.get_mut(vcpu) {
            // SAFETY: pthread_self has no preconditions.
            let thread = unsafe { libc::pthread_self() };
            *slot = Some(Slot {
                thread,
                handle: std::thread::current(),
                immediate_exit: immediate_exit as usize,
                deadline: None,
            });
        }
    }

    /// Unregisters vCPU `vcpu`; call before its thread ends or its VcpuFd is dropped.
    pub fn unregister(&self, vcpu: usize) {
        let mut state = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = state.slots.get_mut(vcpu) {
            *slot = None;
        }
    }

    /// Kick vCPU `vcpu` at `deadline` (replacing its previous deadline).
    pub fn arm(&self, vcpu: usize, deadline: Instant) {
        let (lock, cvar) = &*self.shared;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Some(slot)) = state.slots.get_mut(vcpu) {
            slot.deadline = Some(deadline);
        }
        // Wake the kicker only if it would sleep past the new deadline: re-arming a later
        // watchdog on every entry then costs no context switch.
        if state.wake_at.is_none_or(|w| deadline < w) {
            state.wake_at = Some(deadline);
            cvar.notify_one();
        }
    }

    /// Kicks vCPU `vcpu` now (another vCPU made something deliverable to it): out of KVM_RUN
    /// if it runs, out of its park if it waits in the loop.
    pub fn kick_now(&self, vcpu: usize) {
        let state = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Some(slot)) = state.slots.get(vcpu) {
            kick(slot);
            slot.handle.unpark();
        }
    }
}

impl Drop for Kicker {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        cvar.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
