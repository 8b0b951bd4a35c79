//! The vCPU run loop shared by the three KVM backends.
//!
//! Before every KVM_RUN (userspace and split modes) the loop advances the models, injects
//! the pending vector with KVM_INTERRUPT when the last exit said `ready_for_interrupt_injection
//! && if_flag` (KVM ignores IF otherwise), or sets `request_interrupt_window`, and arms the
//! kicker for the earlier of the models' next deadline and the watchdog. Exits go to the
//! models ([`Irqchip`]), doorbells to the scenario's host operations and the log drain.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_irqchip, kvm_lapic_state, KVM_EXIT_INTERNAL_ERROR};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use super::kick::Kicker;
use super::memory::GuestMemory;
use super::{raw, Mode};
use crate::backend::{RunError, RunOptions};
use crate::guest::{self, layout};
use crate::irqchip::{Irqchip, MsrAnswer, Now};
use crate::scenario::{HostOp, Op};
use crate::trace::{Snapshot, Trace};

/// What every vCPU thread of one run shares.
pub struct Shared<'a> {
    /// The VM (KVM_IRQ_LINE, KVM_GET_IRQCHIP).
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
}

fn lock(chip: &Mutex<Irqchip>) -> MutexGuard<'_, Irqchip> {
    chip.lock().unwrap_or_else(|e| e.into_inner())
}

/// The host TSC.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no preconditions on x86_64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Host monotonic time as the models take it: ns since the first call, plus one second.
pub fn now() -> Now {
    let origin = *ORIGIN.get_or_init(Instant::now);
    let ns = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX).saturating_add(1_000_000_000);
    Now { ns, tsc: rdtsc() }
}

/// The instant of model time `ns`.
fn instant_of(ns: u64) -> Instant {
    let origin = *ORIGIN.get_or_init(Instant::now);
    origin + Duration::from_nanos(ns.saturating_sub(1_000_000_000))
}

/// What to do after an exit, once the exit's borrow of the vCPU is over.
enum After {
    Progress,
    Host(u32),
    End,
    Halt,
    Kicked,
    Retry,
    Fail(String),
}

/// Runs vCPU `index` on `program` (already in its mailbox) until its END doorbell.
pub fn run(
    shared: &Shared<'_>,
    index: usize,
    vcpu: &mut VcpuFd,
    program: &[Op],
) -> Result<VcpuOutcome, RunError> {
    let immediate_exit = std::ptr::addr_of_mut!(vcpu.get_kvm_run().immediate_exit);
    shared.kicker.register(index, immediate_exit);
    struct Unregister<'k>(&'k Kicker, usize);
    impl Drop for Unregister<'_> {
        fn drop(&mut self) {
            self.0.unregister(self.1);
        }
    }
    let _unregister = Unregister(shared.kicker, index);
    let mut state = Loop { out: VcpuOutcome::default(), last_progress: Instant::now(), last_head: 0 };
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
        Ok(()) => Ok(state.out),
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
}

impl Loop {
    fn run(
        &mut self,
        shared: &Shared<'_>,
        index: usize,
        vcpu: &mut VcpuFd,
        program: &[Op],
    ) -> Result<(), String> {
        let ctrl = layout::vcpu_region(index);
        loop {
            if shared.started.elapsed() > shared.options.timeout {
                return Err(format!("run exceeded its {:?} timeout", shared.options.timeout));
            }
            let mut deadline = self.last_progress + shared.options.watchdog;
            if let Some(chip) = shared.chip {
                if let Some(at) = self.before_entry(chip, index, vcpu)? {
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
                After::Progress => self.last_progress = Instant::now(),
                After::Host(op) => {
                    self.last_progress = Instant::now();
                    self.drain(shared.mem, ctrl)?;
                    let host = match program.get(op as usize) {
                        Some(Op::Host(host)) => host,
                        other => return Err(format!("host doorbell at op {op}, which is {other:?}")),
                    };
                    self.host_op(shared, index, vcpu, host)?;
                }
                After::End => {
                    self.drain(shared.mem, ctrl)?;
                    return Ok(());
                }
                After::Halt => {
                    self.last_progress = Instant::now();
                    let if_flag = vcpu.get_kvm_run().if_flag != 0;
                    self.halt(shared, index, if_flag)?;
                }
                After::Kicked => {
                    vcpu.set_kvm_immediate_exit(0);
                    let head = shared.mem.read_u32(ctrl + u64::from(layout::ctrl::LOG_HEAD))?;
                    let now = Instant::now();
                    if head != self.last_head {
                        self.last_head = head;
                        self.last_progress = now;
                    } else if now >= self.last_progress + shared.options.watchdog {
                        return Err(format!(
                            "no progress for {:?} (no exit, nothing logged): a lost interrupt, or a guest stuck",
                            shared.options.watchdog
                        ));
                    }
                }
                After::Fail(message) => return Err(message),
            }
        }
    }

    /// Userspace and split modes: advance the models and inject or ask for a window.
    /// Returns the models' next deadline.
    fn before_entry(
        &mut self,
        chip: &Mutex<Irqchip>,
        index: usize,
        vcpu: &mut VcpuFd,
    ) -> Result<Option<Instant>, String> {
        let t0 = rdtsc();
        let now = now();
        let mut chip = lock(chip);
        chip.advance(now);
        let (ready, if_flag) = {
            let run = vcpu.get_kvm_run();
            if let Some(cr8) = chip.cr8(index) {
                run.cr8 = cr8;
            }
            (run.ready_for_interrupt_injection != 0, run.if_flag != 0)
        };
        let mut want_window = false;
        let mut ioctl_ticks = 0u64;
        if let Some(vector) = chip.pending_vector(index) {
            if ready && if_flag {
                let t_ioctl = rdtsc();
                let injected = raw::interrupt(vcpu, vector);
                ioctl_ticks = rdtsc().wrapping_sub(t_ioctl);
                match injected {
                    Ok(()) => {
                        let acked = chip.acknowledge(index);
                        if acked != vector {
                            return Err(format!(
                                "PIC announced vector {vector:#x} but acknowledged {acked:#x}"
                            ));
                        }
                        want_window = chip.pending_vector(index).is_some();
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
        let deadline = chip.next_deadline(now).map(instant_of);
        drop(chip);
        // Model time only: the KVM_INTERRUPT ioctl is KVM's.
        self.out.model_ticks += rdtsc().wrapping_sub(t0).saturating_sub(ioctl_ticks);
        Ok(deadline)
    }

    fn on_exit(&mut self, shared: &Shared<'_>, index: usize, exit: VcpuExit<'_>) -> After {
        let t0 = rdtsc();
        let now = now();
        let chip = shared.chip;
        let after = match exit {
            VcpuExit::IoOut(port, data) => {
                let word = data.iter().rev().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
                match port {
                    layout::port::HOST => return After::Host(word),
                    layout::port::END => return After::End,
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
                    lock(chip).ioapic_eoi(vector);
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
        let _ = shared;
        after
    }

    /// Userspace mode: the guest halted. Wait for the models to have an interrupt for it.
    fn halt(&mut self, shared: &Shared<'_>, index: usize, if_flag: bool) -> Result<(), String> {
        let Some(chip) = shared.chip else { return Err("HLT exit with the in-kernel irqchip".into()) };
        if !if_flag {
            return Err("hlt with IF=0: the guest can never wake".into());
        }
        loop {
            let now = now();
            let deadline = {
                let mut chip = lock(chip);
                chip.advance(now);
                if chip.pending_vector(index).is_some() {
                    return Ok(());
                }
                chip.next_deadline(now)
            };
            let watchdog = self.last_progress + shared.options.watchdog;
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
                    lock(chip).set_irq(irq, level);
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
            HostOp::Sleep(ns) => std::thread::sleep(Duration::from_nanos(*ns)),
            HostOp::Snapshot(label) => {
                let snapshot = snapshot(shared, vcpu, label)?;
                self.out.trace.snapshots.push(snapshot);
            }
            HostOp::SetGuestTsc(value) => {
                let ok = shared.chip.is_some_and(|chip| lock(chip).host_set_tsc(index, *value, now()));
                if !ok {
                    return Err("the virtual TSC needs the TSC model (kvm-userspace)".into());
                }
            }
        }
        Ok(())
    }
}

/// The controllers' state in KVM's layouts: from KVM for what KVM owns, from the models for
/// the rest.
fn snapshot(shared: &Shared<'_>, vcpu: &VcpuFd, label: &str) -> Result<Snapshot, String> {
    let mut snap = match shared.chip {
        Some(chip) => lock(chip).snapshot(label),
        None => Snapshot { label: label.to_string(), ..Snapshot::default() },
    };
    if shared.mode == Mode::Kernel {
        let mut pic = [[0u8; 16]; 2];
        for (id, bytes) in pic.iter_mut().enumerate() {
            let mut chip = kvm_irqchip { chip_id: id as u32, ..Default::default() };
            shared.vm.get_irqchip(&mut chip).map_err(|e| format!("KVM_GET_IRQCHIP({id}): {e}"))?;
            // SAFETY: chips 0 and 1 are PICs: KVM filled the `pic` member of the union.
            let state = unsafe { chip.chip.pic };
            *bytes = pic_state_bytes(&state);
        }
        snap.pic = Some(pic);
        let mut chip = kvm_irqchip { chip_id: 2, ..Default::default() };
        shared.vm.get_irqchip(&mut chip).map_err(|e| format!("KVM_GET_IRQCHIP(IOAPIC): {e}"))?;
        // SAFETY: chip 2 is the IOAPIC: KVM filled the `ioapic` member; it is plain bytes.
        let ioapic = unsafe { chip.chip.ioapic };
        snap.ioapic = Some(plain_bytes(&ioapic));
    }
    if shared.mode != Mode::Userspace {
        let lapic: kvm_lapic_state = vcpu.get_lapic().map_err(|e| format!("KVM_GET_LAPIC: {e}"))?;
        snap.lapic = Some(lapic.regs.iter().map(|b| *b as u8).collect());
    }
    Ok(snap)
}

fn pic_state_bytes(k: &kvm_bindings::kvm_pic_state) -> [u8; 16] {
    [
        k.last_irr,
        k.irr,
        k.imr,
        k.isr,
        k.priority_add,
        k.irq_base,
        k.read_reg_select,
        k.poll,
        k.special_mask,
        k.init_state,
        k.auto_eoi,
        k.rotate_on_auto_eoi,
        k.special_fully_nested_mode,
        k.init4,
        k.elcr,
        k.elcr_mask,
    ]
}

fn plain_bytes<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: T is a plain-old-data KVM struct (no padding-sensitive invariants, no pointers);
    // reading its bytes is defined for the size of the value.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
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
