//! The contract between the host and the probe guest: guest-physical addresses, the control
//! block, the operation encoding, the log entry format and the doorbell ports.
//!
//! ```text
//! GPA 0x0000_1000  GDT                     (kvm::cpu)
//!     0x0000_2000  IDT, 256 gates          (kvm::cpu)
//!     0x0000_3000  PML4, PDPT, 4 PDs: 0-4 GiB identity mapped with 2 MiB pages (kvm::cpu)
//!     0x0000_9000  the start-up IPI trampoline (real mode, SIPI vector 0x09)
//!     0x0001_0000  probe code              (guest::probe)
//!     0x0010_0000  vCPU 0 region, 1 MiB:   control block, stack, log, mailbox
//!     0x0020_0000  vCPU 1 region ...       (up to MAX_VCPUS)
//! ```
//!
//! No memory slot covers 0xFEC0_0000 (IOAPIC) or 0xFEE0_0000 (LAPIC): guest accesses there
//! are MMIO exits unless an in-kernel device claims them.

/// Guest-physical address of the GDT.
pub const GDT: u64 = 0x1000;
/// Guest-physical address of the IDT (256 × 16 bytes).
pub const IDT: u64 = 0x2000;
/// Guest-physical address of the PML4; the PDPT and four page directories follow it.
pub const PML4: u64 = 0x3000;
/// Guest-physical address of the real-mode trampoline an AP enters on a start-up IPI with
/// vector [`crate::scenario::SIPI_VECTOR`] (`vector << 12`).
pub const TRAMPOLINE: u64 = (crate::scenario::SIPI_VECTOR as u64) << 12;

/// The trampoline: the first instructions an AP runs after its start-up IPI, in real mode at
/// CS = `SIPI_VECTOR << 8`, IP = 0. It tells the host it started; the host then puts it in
/// long mode at the probe's entry (so no 16- or 32-bit probe code is needed).
pub const TRAMPOLINE_CODE: [u8; 6] = [
    0xBA, 0x13, 0x05, // mov dx, 0x0513 (port::AP_STARTED)
    0xEE, // out dx, al
    0xEB, 0xFE, // jmp $ (the host never resumes it here)
];

const _: () = assert!(TRAMPOLINE >= PML4 + 6 * 0x1000 && TRAMPOLINE + 0x1000 <= CODE);

/// Guest-physical address of the probe code.
pub const CODE: u64 = 0x1_0000;
/// Largest probe code blob the layout has room for.
pub const CODE_MAX: usize = 0xF_0000;
/// Guest-physical address of vCPU 0's region; vCPU n's is `n` × [`VCPU_REGION_SIZE`] higher.
pub const VCPU_REGIONS: u64 = 0x10_0000;
/// Size of one vCPU's region.
pub const VCPU_REGION_SIZE: u64 = 0x10_0000;
/// vCPUs the layout has regions for.
pub const MAX_VCPUS: usize = 4;
/// Guest RAM size (one memory slot at GPA 0).
pub const MEMORY_SIZE: usize = 0x80_0000;

/// Bytes per operation in the mailbox.
pub const OP_SIZE: usize = 32;
/// Operations a mailbox holds.
pub const MAILBOX_CAPACITY: usize = 16384;
/// Bytes per log entry.
pub const LOG_ENTRY_SIZE: usize = 16;
/// Log entries between two drains (the host drains at every doorbell).
pub const LOG_CAPACITY: u32 = 16384;

/// The guest-physical base of vCPU `index`'s region (its control block).
pub const fn vcpu_region(index: usize) -> u64 {
    VCPU_REGIONS + VCPU_REGION_SIZE * index as u64
}

/// Offsets in a vCPU's region (the guest reaches them through `r15`).
pub mod ctrl {
    /// u32: log entries written since the last drain (may exceed the capacity: overflow).
    pub const LOG_HEAD: u32 = 0x00;
    /// u8: the EOI policy of the interrupt handler ([`super::eoi`]).
    pub const EOI_POLICY: u32 = 0x04;
    /// u8: the slave PIC's vector base, for [`super::eoi::PIC`] (must follow EOI_POLICY).
    pub const SLAVE_BASE: u32 = 0x05;
    /// u8: IF as the interpreter last set it, restored after an exception.
    pub const IF_FLAG: u32 = 0x06;
    /// Top of the stack (it grows down towards the control block).
    pub const STACK_TOP: u32 = 0x1_0000;
    /// The log: [`super::LOG_CAPACITY`] entries of [`super::LOG_ENTRY_SIZE`] bytes.
    pub const LOG: u32 = 0x1_0000;
    /// The mailbox: [`super::MAILBOX_CAPACITY`] operations of [`super::OP_SIZE`] bytes.
    pub const MAILBOX: u32 = 0x5_0000;
}

const _: () = assert!(ctrl::LOG as usize + LOG_CAPACITY as usize * LOG_ENTRY_SIZE <= ctrl::MAILBOX as usize);
const _: () = assert!(ctrl::MAILBOX as usize + MAILBOX_CAPACITY * OP_SIZE <= VCPU_REGION_SIZE as usize);
const _: () = assert!(vcpu_region(MAX_VCPUS) as usize <= MEMORY_SIZE);
const _: () = assert!(CODE as usize + CODE_MAX <= VCPU_REGIONS as usize);

/// Byte offsets of an operation's fields: kind (u8 at 0), then three u64 operands.
pub mod op {
    /// Operand a: port, address, MSR, loop target.
    pub const A: u32 = 8;
    /// Operand b: value, count.
    pub const B: u32 = 16;
    /// Operand c: the guest's own loop counter (the host writes 0).
    pub const C: u32 = 24;
}

/// Operation kinds (byte 0 of an operation), in the order of the guest's jump table.
pub mod kind {
    /// Ring [`super::port::END`]: the program is done.
    pub const END: u8 = 0;
    /// Ring [`super::port::HOST`]: the host runs this operation's host-side action.
    pub const HOST: u8 = 1;
    /// `out` of 1 byte: a = port, b = value.
    pub const OUT8: u8 = 2;
    /// `out` of 2 bytes.
    pub const OUT16: u8 = 3;
    /// `out` of 4 bytes.
    pub const OUT32: u8 = 4;
    /// `in` of 1 byte, logged: a = port.
    pub const IN8: u8 = 5;
    /// `in` of 2 bytes, logged.
    pub const IN16: u8 = 6;
    /// `in` of 4 bytes, logged.
    pub const IN32: u8 = 7;
    /// 32-bit MMIO read, logged: a = address.
    pub const MMIO_READ32: u8 = 8;
    /// 64-bit MMIO read, logged.
    pub const MMIO_READ64: u8 = 9;
    /// 32-bit MMIO write: a = address, b = value.
    pub const MMIO_WRITE32: u8 = 10;
    /// 64-bit MMIO write.
    pub const MMIO_WRITE64: u8 = 11;
    /// `rdmsr`, logged: a = MSR.
    pub const RDMSR: u8 = 12;
    /// `wrmsr`: a = MSR, b = value.
    pub const WRMSR: u8 = 13;
    /// `rdtsc`, logged.
    pub const RDTSC: u8 = 14;
    /// `sti`.
    pub const STI: u8 = 15;
    /// `cli`.
    pub const CLI: u8 = 16;
    /// `sti; hlt; cli`: wait for an interrupt.
    pub const WAIT: u8 = 17;
    /// `mov cr8, b`.
    pub const WRITE_CR8: u8 = 18;
    /// `mov rax, cr8`, logged.
    pub const READ_CR8: u8 = 19;
    /// Log b.
    pub const RECORD: u8 = 20;
    /// Spin b iterations of `dec; jnz`.
    pub const SPIN: u8 = 21;
    /// `ud2`.
    pub const UD2: u8 = 22;
    /// Set the EOI policy (byte b) and the slave vector base (byte b+1).
    pub const SET_EOI: u8 = 23;
    /// Jump back to operation a until the body ran b times.
    pub const LOOP: u8 = 24;
    /// `rdtsc`, then `wrmsr` a = the TSC + b.
    pub const WRMSR_TSC_DELTA: u8 = 25;
    /// Number of kinds.
    pub const COUNT: u8 = 26;
}

/// EOI policies of the interrupt handler.
pub mod eoi {
    /// No EOI: the program ends interrupts itself.
    pub const NONE: u8 = 0;
    /// Non-specific EOI (OCW2 0x20) to the slave when the vector is in its range, then to the
    /// master.
    pub const PIC: u8 = 1;
    /// Write 0 to the LAPIC EOI register at 0xFEE000B0.
    pub const LAPIC_MMIO: u8 = 2;
    /// `wrmsr` 0x80B (x2APIC EOI) = 0.
    pub const X2APIC_MSR: u8 = 3;
}

/// Log entry kinds (byte 0 of an entry). An entry is: kind u8, vector u8, index of the
/// operation being interpreted u16, sequence number u32, value u64.
pub mod entry {
    /// An interrupt (vectors 32–255).
    pub const IRQ: u32 = 1;
    /// An exception (vectors 0–31 but 2); value = error code (0 if none).
    pub const EXCEPTION: u32 = 2;
    /// An NMI (vector 2).
    pub const NMI: u32 = 3;
    /// A value the program read or recorded.
    pub const VALUE: u32 = 4;
}

/// Doorbell ports (the guest writes the index of the current operation, 4 bytes).
pub mod port {
    /// A [`super::kind::HOST`] operation.
    pub const HOST: u16 = 0x510;
    /// The program ended.
    pub const END: u16 = 0x511;
    /// The guest found an operation kind it does not know.
    pub const BAD_OP: u16 = 0x512;
    /// An AP reached its start-up trampoline ([`super::TRAMPOLINE_CODE`]).
    pub const AP_STARTED: u16 = 0x513;
}
