//! The vCPU run loop shared by the three KVM backends.
//!
//! Before every KVM_RUN (userspace and split modes) the loop advances the models, takes what
//! they produced for the VM (this vCPU's NMIs for KVM_NMI; split mode: the IOAPIC's MSIs for
//! KVM_SIGNAL_MSI and its level routes), kicks the vCPUs they made something deliverable to,
//! injects the pending vector with KVM_INTERRUPT when the last exit said
//! `ready_for_interrupt_injection && if_flag` (KVM ignores IF otherwise) or sets
//! `request_interrupt_window`, hands the LAPIC model's TPR to KVM in `kvm_run.cr8`, and arms
//! the kicker for the earlier of the models' next deadline and the watchdog. After every exit
//! it reads the guest's CR8 back (CR8 writes never exit on our hosts). Exits go to the models
//! ([`Irqchip`]), doorbells to the scenario's host operations and the log drain.
//!
//! INIT/SIPI: an AP of an [`crate::scenario::ApStart::WaitForSipi`] scenario waits for its
//! start-up IPI, in KVM_RUN with the in-kernel LAPIC, or held in this loop until its LAPIC model
//! latches one ([`Machine::start_ap`]); either way it then runs the trampoline, whose doorbell
//! puts it in long mode at its program.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_run, KVM_EXIT_INTERNAL_ERROR};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use super::kick::Kicker;
use super::memory::GuestMemory;
use super::{raw, split, state, Machine, Mode};
use crate::backend::{RunError, RunOptions};
use crate::guest::{self, layout};
use crate::irqchip::{Irqchip, MsrAnswer, Now};
use crate::scenario::{HostOp, Op};
use crate::trace::{Snapshot, Trace};

/// What every vCPU thread of one run shares.
pub struct Shared<'a> {
    /// The VM (KVM_IRQ_LINE, KVM_GET_IRQCHIP, KVM_SIGNAL_MSI).
    pub vm: &'a VmFd,
    /// Guest RAM (logs, mailboxes).
    pub mem: &'a GuestMemory,
    /// Interrupt split.
    pub mode: Mode,
    /// Our models; `None` in kernel mode.
    pub chip: Option<&'a Mutex<Irqchip>>,
    /// Kicks out of KVM_RUN.
    pub kicker: &'a Kicker,
    /// Bounds.
    pub options: RunOptions,
    /// When the run started (for the timeout).
    pub started: Instant,
    /// vCPUs in the run.
    pub vcpus: usize,
    /// Host TSC frequency (Hz), for model-time accounting.
    pub tsc_hz: u64,
    /// The APs wait for their start-up IPI (userspace mode: this loop holds them).
    pub aps_wait_for_sipi: bool,
    /// A [`HostOp::Migrate`] doorbell ends the run (the `kvm-migrate` backend then moves the
    /// guest and calls [`run`] again); otherwise it is a no-op.
    pub stop_at_migrate: bool,
    /// When any vCPU last made progress (an exit or a log entry), ns after `started`: the
    /// watchdog fires only when the whole guest has stalled, so that a vCPU waiting for an
    /// interrupt another, slower vCPU is still on its way to send is not taken for lost.
    pub progress: AtomicU64,
}

/// What one vCPU did.
#[derive(Debug, Default)]
pub struct VcpuOutcome {
    /// Its log and snapshots.
    pub trace: Trace,
    /// KVM_RUN returns.
    pub exits: u64,
    /// Time in the loop.
    pub loop_time: Duration,
    /// Time inside the models (TSC ticks).
    pub model_ticks: u64,
    /// The run stopped at this migration doorbell (op index) instead of the program's end.
    pub migrate_at: Option<u32>,
}

fn lock(chip: &Mutex<Irqchip>) -> MutexGuard<'_, Irqchip> {
    chip.lock().unwrap_or_else(|e| e.into_inner())
}

/// The host TSC.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no preconditions on x86_64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The host's CLOCK_MONOTONIC in ns: the clock of KVM's `ktime_get()`, so that the models'
/// host times and KVM's (the PIT's `count_load_time` in `kvm_pit_state2`) are one clock.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer; CLOCK_MONOTONIC is
    // always available on Linux, so it cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// One instant on both clocks: [`Instant`] (for sleeping) and CLOCK_MONOTONIC ns.
static ORIGIN: std::sync::OnceLock<(Instant, u64)> = std::sync::OnceLock::new();

fn origin() -> (Instant, u64) {
    *ORIGIN.get_or_init(|| (Instant::now(), monotonic_ns()))
}

/// Host time as the models take it: CLOCK_MONOTONIC ns (KVM's ktime) and the host TSC.
pub fn now() -> Now {
    Now { ns: monotonic_ns(), tsc: rdtsc() }
}

/// The instant of model time `ns` (Rust's `Instant` reads CLOCK_MONOTONIC too on Linux; the
/// pair in [`ORIGIN`] ties the two within the nanoseconds between its two readings).
fn instant_of(ns: u64) -> Instant {
    let (instant, mono) = origin();
    if ns >= mono {
        instant + Duration::from_nanos(ns - mono)
    } else {
        instant.checked_sub(Duration::from_nanos(mono - ns)).unwrap_or(instant)
    }
}

/// What to do after an exit, once the exit's borrow of the vCPU is over.
enum After {
    Progress,
    Host(u32),
    End,
    Halt,
    Kicked,
    Retry,
    ApStarted,
    Fail(String),
}

/// How a run of the loop ended.
enum Ended {
    /// The program's END doorbell.
    Program,
    /// A migration doorbell (op index) of a `kvm-migrate` segment.
    Migrate(u32),
}

/// Runs vCPU `index` on `program` (already in its mailbox) until its END doorbell (or, with
/// [`Shared::stop_at_migrate`], a migration doorbell).
pub fn run(
    shared: &Shared<'_>,
    index: usize,
    vcpu: &mut VcpuFd,
    program: &[Op],
) -> Result<VcpuOutcome, RunError> {
    let kvm_run: *mut kvm_run = vcpu.get_kvm_run();
    // SAFETY: `kvm_run` points at the vCPU's mapped kvm_run, live as long as `vcpu`.
    let immediate_exit = unsafe { std::ptr::addr_of_mut!((*kvm_run).immediate_exit) };
    shared.kicker.register(index, immediate_exit);
    struct Unregister<'k>(&'k Kicker, usize);
    impl Drop for Unregister<'_> {
        fn drop(&mut self) {
            self.0.unregister(self.1);
        }
    }
    let _unregister = Unregister(shared.kicker, index);
    let mut state = Loop {
        out: VcpuOutcome::default(),
        last_progress: Instant::now(),
        last_head: 0,
        last_regs: None,
        kvm_run,
    };
    let started = Instant::now();
    let mut result = state.run(shared, index, vcpu, program);
    state.out.loop_time = started.elapsed();
    if result.is_err() {
        // Keep what the guest logged up to the error (best effort: the log may be mid-append).
        if let Err(e) = state.drain(shared.mem, layout::vcpu_region(index)) {
            result = result.map_err(|m| format!("{m} (and the log could not be read: {e})"));
        }
    }
    match result {
        Ok(ended) => {
            if let Ended::Migrate(op) = ended {
                state.out.migrate_at = Some(op);
            }
            Ok(state.out)
        }
        Err(message) => Err(RunError {
            message: format!("vCPU {index}: {message}"),
            registers: Some(registers(vcpu, program)),
            partial: vec![state.out.trace],
        }),
    }
}

struct Loop {
    out: VcpuOutcome,
    last_progress: Instant,
    last_head: u32,
    /// The guest's registers at the last kick: a vCPU that runs guest code inside KVM
    /// (emulated ring-0 code, an AP's trampoline) without exiting or logging still changes
    /// them (RIP alone can read the same in a short loop).
    last_regs: Option<[u64; 6]>,
    /// The vCPU's kvm_run, for fields read while an exit borrows the VcpuFd (CR8).
    kvm_run: *mut kvm_run,
}

impl Loop {
    /// This vCPU made progress now (and so did the guest).
    fn progressed(&mut self, shared: &Shared<'_>) {
        self.last_progress = Instant::now();
        let ns = u64::try_from(self.last_progress.saturating_duration_since(shared.started).as_nanos());
        shared.progress.fetch_max(ns.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// When the guest, any of its vCPUs, last made progress.
    fn last_progress(&self, shared: &Shared<'_>) -> Instant {
        let any = shared.started + Duration::from_nanos(shared.progress.load(Ordering::Relaxed));
        self.last_progress.max(any)
    }

    fn run(
        &mut self,
        shared: &Shared<'_>,
        index: usize,
        vcpu: &mut VcpuFd,
        program: &[Op],
    ) -> Result<Ended, String> {
        let ctrl = layout::vcpu_region(index);
        if index > 0 && shared.aps_wait_for_sipi && shared.mode == Mode::Userspace {
            self.hold_until_sipi(shared, index, vcpu)?;
        }
        loop {
            if shared.started.elapsed() > shared.options.timeout {
                return Err(format!("run exceeded its {:?} timeout", shared.options.timeout));
            }
            // The watchdog's deadline; and a re-entry at least every quarter of it, so that a
            // vCPU halted inside KVM whose wake-up the host missed re-checks its interrupts.
            let watchdog = shared.options.watchdog;
            let mut deadline = (self.last_progress(shared) + watchdog).min(Instant::now() + watchdog / 4);
            if let Some(chip) = shared.chip {
                if let Some(at) = self.before_entry(shared, chip, index, vcpu)? {
                    deadline = deadline.min(at);
                }
            }
            shared.kicker.arm(index, deadline);
            self.out.exits += 1;
            let after = match vcpu.run() {
                Ok(exit) => self.on_exit(shared, index, exit),
                Err(e) if e.errno() == libc::EINTR => After::Kicked,
                // An AP's first KVM_RUN with the in-kernel irqchip.
                Err(e) if e.errno() == libc::EAGAIN => After::Retry,
                Err(e) => After::Fail(format!("KVM_RUN: {e}")),
            };
            match after {
                After::Retry => {}
                After::Progress => self.progressed(shared),
                After::Host(op) => {
                    self.progressed(shared);
                    self.drain(shared.mem, ctrl)?;
                    let host = match program.get(op as usize) {
                        Some(Op::Host(host)) => host,
                        other => return Err(format!("host doorbell at op {op}, which is {other:?}")),
                    };
                    if *host == HostOp::Migrate && shared.stop_at_migrate {
                        return Ok(Ended::Migrate(op));
                    }
                    self.host_op(shared, index, vcpu, host)?;
                }
                After::End => {
                    self.drain(shared.mem, ctrl)?;
                    return Ok(Ended::Program);
                }
                After::Halt => {
                    self.progressed(shared);
                    let if_flag = vcpu.get_kvm_run().if_flag != 0;
                    self.halt(shared, index, if_flag)?;
                }
                After::ApStarted => {
                    self.progressed(shared);
                    Machine::enter_probe(vcpu, index)?;
                }
                After::Kicked => {
                    self.sync_cr8(shared, index);
                    vcpu.set_kvm_immediate_exit(0);
                    let head = shared.mem.read_u32(ctrl + u64::from(layout::ctrl::LOG_HEAD))?;
                    let now = Instant::now();
                    let regs = vcpu.get_regs().ok().map(|r| [r.rip, r.rflags, r.rax, r.rcx, r.rdx, r.rsp]);
                    if head != self.last_head || regs != self.last_regs {
                        self.last_head = head;
                        self.last_regs = regs;
                        self.progressed(shared);
                    } else if now >= self.last_progress(shared) + shared.options.watchdog {
                        return Err(format!(
                            "{} {:?} (no exit, nothing logged, registers unchanged): a lost interrupt, or a guest stuck",
                            crate::known::WATCHDOG,
                            shared.options.watchdog
                        ));
                    }
                }
                After::Fail(message) => return Err(message),
            }
        }
    }

    /// The guest's CR8 after an exit, into the LAPIC model's TPR.
    fn sync_cr8(&self, shared: &Shared<'_>, index: usize) {
        if shared.mode != Mode::Userspace {
            return;
        }
        // SAFETY: `kvm_run` is the vCPU's mapping (see `run`); KVM wrote cr8 before returning
        // to userspace and nothing writes it concurrently; the read does not overlap the
        // exit's data the VcpuExit borrows.
        let cr8 = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*self.kvm_run).cr8)) };
        if let Some(chip) = shared.chip {
            lock(chip).sync_cr8(index, cr8);
        }
    }

    /// Userspace mode, an AP before its start-up IPI: hold its thread until its LAPIC model
    /// latched one (taking the INIT before it), then put the vCPU where the SIPI starts it.
    fn hold_until_sipi(&mut self, shared: &Shared<'_>, index: usize, vcpu: &VcpuFd) -> Result<(), String> {
        let Some(chip) = shared.chip else { return Err("an AP waits for SIPI without a LAPIC model".into()) };
        loop {
            let sipi = {
                let mut chip = lock(chip);
                let events = chip.take_events(index);
                if events.init {
                    chip.init(index);
                }
                if events.sipi.is_some() {
                    chip.sipi_taken(index);
                }
                events.sipi
            };
            if let Some(vector) = sipi {
                self.progressed(shared);
                return Machine::start_ap(vcpu, vector);
            }
            let watchdog = self.last_progress(shared) + shared.options.watchdog;
            if Instant::now() >= watchdog {
                return Err(format!(
                    "waited {:?} for a start-up IPI that never came",
                    shared.options.watchdog
                ));
            }
            std::thread::park_timeout(watchdog.saturating_duration_since(Instant::now()));
        }
    }

    /// Userspace and split modes: advance the models, hand KVM what they produced, and inject
    /// or ask for a window. Returns the models' next deadline for this vCPU.
    fn before_entry(
        &mut self,
        shared: &Shared<'_>,
        chip: &Mutex<Irqchip>,
        index: usize,
        vcpu: &mut VcpuFd,
    ) -> Result<Option<Instant>, String> {
        let t0 = rdtsc();
        let now = now();
        let mut guard = lock(chip);
        guard.advance(now);
        let events = guard.take_events(index);
        if events.init || events.sipi.is_some() {
            return Err("INIT or start-up IPI to a running vCPU, which the harness does not model".into());
        }
        let routes = if shared.mode == Mode::Split { guard.take_route_update() } else { None };
        let msis = guard.take_msis();
        let wakeups = guard.take_wakeups();
        let (ready, if_flag) = {
            let run = vcpu.get_kvm_run();
            if let Some(cr8) = guard.cr8(index) {
                run.cr8 = cr8;
            }
            (run.ready_for_interrupt_injection != 0, run.if_flag != 0)
        };
        let mut want_window = false;
        let mut ioctl_ticks = 0u64;
        if let Some(vector) = guard.pending_vector(index) {
            if ready && if_flag {
                let t_ioctl = rdtsc();
                let injected = raw::interrupt(vcpu, vector);
                ioctl_ticks = rdtsc().wrapping_sub(t_ioctl);
                match injected {
                    Ok(()) => {
                        let acked = guard.acknowledge(index);
                        if acked != vector {
                            return Err(format!(
                                "the models announced vector {vector:#x} but acknowledged {acked:#x}"
                            ));
                        }
                        want_window = guard.pending_vector(index).is_some();
                    }
                    // Split mode: KVM still holds the previous ExtINT.
                    Err(e) if e.errno() == libc::EEXIST => want_window = true,
                    Err(e) => return Err(format!("KVM_INTERRUPT({vector:#x}): {e}")),
                }
            } else {
                want_window = true;
            }
        }
        vcpu.get_kvm_run().request_interrupt_window = u8::from(want_window);
        let deadline = guard.next_deadline(index, now).map(instant_of);
        drop(guard);
        // Model time only: the KVM ioctls are KVM's.
        self.out.model_ticks += rdtsc().wrapping_sub(t0).saturating_sub(ioctl_ticks);
        for _ in 0..events.nmi {
            vcpu.nmi().map_err(|e| format!("KVM_NMI: {e}"))?;
        }
        if let Some(routes) = routes {
            split::set_level_routes(shared.vm, &routes)?;
        }
        for msi in &msis {
            if split::signal(shared.vm, msi)? == Some(0) {
                lock(chip).msi_result(msi.pin, 0);
            }
        }
        for target in wakeups.into_iter().filter(|&v| v != index) {
            shared.kicker.kick_now(target);
        }
        Ok(deadline)
    }

    fn on_exit(&mut self, shared: &Shared<'_>, index: usize, exit: VcpuExit<'_>) -> After {
        self.sync_cr8(shared, index);
        let t0 = rdtsc();
        let now = now();
        let chip = shared.chip;
        let after = match exit {
            VcpuExit::IoOut(port, data) => {
                let word = data.iter().rev().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
                match port {
                    layout::port::HOST => return After::Host(word),
                    layout::port::END => return After::End,
                    layout::port::AP_STARTED if index > 0 => return After::ApStarted,
                    layout::port::BAD_OP => {
                        return After::Fail(format!("the guest found an unknown operation at op {word}"))
                    }
                    _ => match chip {
                        Some(chip) if lock(chip).pio_write(port, data, now) => After::Progress,
                        _ => After::Fail(format!("unexpected port write: {port:#x} <- {data:02x?}")),
                    },
                }
            }
            VcpuExit::IoIn(port, data) => match chip {
                Some(chip) if lock(chip).pio_read(port, data, now) => After::Progress,
                _ => After::Fail(format!("unexpected port read: {port:#x} ({} bytes)", data.len())),
            },
            VcpuExit::MmioRead(addr, data) => match chip {
                Some(chip) if lock(chip).mmio_read(index, addr, data, now) => After::Progress,
                _ => After::Fail(format!(
                    "unexpected MMIO read at {addr:#x} ({} bytes): no model decodes it",
                    data.len()
                )),
            },
            VcpuExit::MmioWrite(addr, data) => match chip {
                Some(chip) if lock(chip).mmio_write(index, addr, data, now) => After::Progress,
                _ => After::Fail(format!(
                    "unexpected MMIO write at {addr:#x} <- {data:02x?}: no model decodes it"
                )),
            },
            VcpuExit::X86Rdmsr(exit) => {
                let answer = chip.map_or(MsrAnswer::NotMine, |c| lock(c).rdmsr(index, exit.index, now));
                match answer {
                    MsrAnswer::Value(v) => {
                        *exit.data = v;
                        *exit.error = 0;
                    }
                    MsrAnswer::Fault | MsrAnswer::NotMine => *exit.error = 1, // #GP in the guest
                }
                After::Progress
            }
            VcpuExit::X86Wrmsr(exit) => {
                let answer =
                    chip.map_or(MsrAnswer::NotMine, |c| lock(c).wrmsr(index, exit.index, exit.data, now));
                *exit.error = u8::from(!matches!(answer, MsrAnswer::Value(_)));
                After::Progress
            }
            VcpuExit::IoapicEoi(vector) => {
                if let Some(chip) = chip {
                    lock(chip).ioapic_eoi(vector, now);
                }
                After::Progress
            }
            VcpuExit::Hlt => return After::Halt,
            VcpuExit::IrqWindowOpen => After::Progress,
            VcpuExit::Intr => return After::Kicked,
            VcpuExit::Shutdown => return After::Fail("the guest shut down (triple fault)".into()),
            VcpuExit::FailEntry(reason, cpu) => {
                return After::Fail(format!("KVM_EXIT_FAIL_ENTRY: hardware reason {reason:#x} on cpu {cpu}"))
            }
            VcpuExit::InternalError => return After::Fail("KVM_EXIT_INTERNAL_ERROR".into()),
            other => return After::Fail(format!("unexpected exit {other:?}")),
        };
        self.out.model_ticks += rdtsc().wrapping_sub(t0);
        after
    }

    /// Userspace mode: the guest halted. Wait for the models to have an interrupt or an NMI
    /// for it.
    fn halt(&mut self, shared: &Shared<'_>, index: usize, if_flag: bool) -> Result<(), String> {
        let Some(chip) = shared.chip else { return Err("HLT exit with the in-kernel irqchip".into()) };
        if !if_flag {
            return Err("hlt with IF=0: the guest can never wake".into());
        }
        loop {
            let now = now();
            let (deadline, wakeups) = {
                let mut chip = lock(chip);
                chip.advance(now);
                if chip.pending_vector(index).is_some() || chip.has_events(index) {
                    return Ok(());
                }
                (chip.next_deadline(index, now), chip.take_wakeups())
            };
            for target in wakeups.into_iter().filter(|&v| v != index) {
                shared.kicker.kick_now(target);
            }
            let watchdog = self.last_progress(shared) + shared.options.watchdog;
            if Instant::now() >= watchdog {
                return Err(format!(
                    "halted for {:?} and no interrupt came (lost interrupt)",
                    shared.options.watchdog
                ));
            }
            let until = match deadline {
                Some(ns) => instant_of(ns).min(watchdog),
                None if shared.vcpus == 1 => {
                    return Err("halted with no interrupt pending and no timer armed (lost interrupt)".into())
                }
                None => watchdog,
            };
            std::thread::park_timeout(until.saturating_duration_since(Instant::now()));
        }
    }

    /// Copies the guest's log into the trace and empties it.
    fn drain(&mut self, mem: &GuestMemory, ctrl: u64) -> Result<(), String> {
        let head_gpa = ctrl + u64::from(layout::ctrl::LOG_HEAD);
        let head = mem.read_u32(head_gpa)?;
        if head > layout::LOG_CAPACITY {
            return Err(format!(
                "log overflow: {head} entries between two doorbells, room for {} (add host operations to drain it)",
                layout::LOG_CAPACITY
            ));
        }
        let mut bytes = vec![0u8; head as usize * layout::LOG_ENTRY_SIZE];
        mem.read(ctrl + u64::from(layout::ctrl::LOG), &mut bytes)?;
        let base = self.out.trace.entries.len();
        for (i, raw) in bytes.chunks_exact(layout::LOG_ENTRY_SIZE).enumerate() {
            let mut entry = guest::decode_entry(raw)?;
            entry.seq = u32::try_from(base + i).unwrap_or(u32::MAX);
            self.out.trace.entries.push(entry);
        }
        mem.write_u32(head_gpa, 0)?;
        self.last_head = 0;
        Ok(())
    }

    fn host_op(
        &mut self,
        shared: &Shared<'_>,
        index: usize,
        vcpu: &VcpuFd,
        op: &HostOp,
    ) -> Result<(), String> {
        let set_irq = |irq: u8, level: bool| -> Result<(), String> {
            match shared.chip {
                Some(chip) => {
                    lock(chip).set_irq(irq, level, now());
                    Ok(())
                }
                None => shared
                    .vm
                    .set_irq_line(u32::from(irq), level)
                    .map_err(|e| format!("KVM_IRQ_LINE({irq}): {e}")),
            }
        };
        match op {
            HostOp::SetIrq { irq, level } => set_irq(*irq, *level)?,
            HostOp::PulseIrq(irq) => {
                set_irq(*irq, true)?;
                set_irq(*irq, false)?;
            }
            // Capped by the run's wall-clock bound: a sleep past it fails the run at once.
            HostOp::Sleep(ns) => {
                let left = shared.options.timeout.saturating_sub(shared.started.elapsed());
                let sleep = Duration::from_nanos(*ns);
                if sleep > left {
                    return Err(format!(
                        "host sleep of {sleep:?} goes past the run's {:?} timeout",
                        shared.options.timeout
                    ));
                }
                std::thread::sleep(sleep);
            }
            HostOp::Snapshot(label) => {
                let snapshot = snapshot(shared, index, vcpu, label)?;
                self.out.trace.snapshots.push(snapshot);
            }
            HostOp::SetGuestTsc(value) => {
                let ok = shared.chip.is_some_and(|chip| lock(chip).host_set_tsc(index, *value, now()));
                if !ok {
                    return Err("the virtual TSC needs the TSC model (kvm-userspace)".into());
                }
            }
            // Not a kvm-migrate segment: nothing moves.
            HostOp::Migrate => {}
        }
        Ok(())
    }
}

/// The controllers' state in KVM's layouts: from KVM for what KVM owns, from the models for
/// the rest.
fn snapshot(shared: &Shared<'_>, index: usize, vcpu: &VcpuFd, label: &str) -> Result<Snapshot, String> {
    let mut snap = match shared.chip {
        Some(chip) => lock(chip).snapshot(index, label, now()),
        None => Snapshot { label: label.to_string(), ..Snapshot::default() },
    };
    if shared.mode == Mode::Kernel {
        let chips = state::get_chips(shared.vm)?;
        snap.pic = Some([state::pic_state_bytes(&chips.pic[0]), state::pic_state_bytes(&chips.pic[1])]);
        snap.ioapic = Some(state::plain_bytes(&chips.ioapic));
    }
    if shared.mode != Mode::Userspace {
        let lapic = vcpu.get_lapic().map_err(|e| format!("KVM_GET_LAPIC: {e}"))?;
        snap.lapic = Some(lapic.regs.iter().map(|b| *b as u8).collect());
    }
    Ok(snap)
}

/// The guest's registers and the operation it was at, for error reports.
pub fn registers(vcpu: &mut VcpuFd, program: &[Op]) -> String {
    let internal = {
        let run = vcpu.get_kvm_run();
        (run.exit_reason == KVM_EXIT_INTERNAL_ERROR).then(|| {
            // SAFETY: the exit reason says the `internal` member of the union is valid.
            let internal = unsafe { run.__bindgen_anon_1.internal };
            let n = (internal.ndata as usize).min(internal.data.len());
            format!("  internal error: suberror {} data {:x?}\n", internal.suberror, &internal.data[..n])
        })
    };
    let mut out = internal.unwrap_or_default();
    match (vcpu.get_regs(), vcpu.get_sregs()) {
        (Ok(r), Ok(s)) => {
            let op = r.r12 as usize;
            out.push_str(&format!(
                "  rip {:#x} rsp {:#x} rflags {:#x} rax {:#x} rcx {:#x} rdx {:#x} rsi {:#x} rdi {:#x}\n  r12 (op) {} = {:?}\n  cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x} cs {:#x}",
                r.rip, r.rsp, r.rflags, r.rax, r.rcx, r.rdx, r.rsi, r.rdi, op, program.get(op), s.cr0, s.cr3, s.cr4, s.efer, s.cs.selector
            ));
        }
        (Err(e), _) | (_, Err(e)) => out.push_str(&format!("  registers unavailable: {e}")),
    }
    out
}
