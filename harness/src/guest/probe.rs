//! The probe guest's machine code: 64-bit long mode, ring 0, position independent.
//!
//! Assembled by rustc's integrated assembler (`global_asm!`) into a non-executable data
//! section of the host binary, between the symbols `irq_probe_start` and `irq_probe_end`;
//! [`code`] returns those bytes and the host copies them to [`super::layout::CODE`] in guest
//! memory. Every code reference is RIP-relative; data are reached through `r15` (this vCPU's
//! control block) and `rsi` (the current operation), so the blob runs at any address and one
//! copy serves every vCPU.
//!
//! Registers while interpreting: `rsi` = address of the current operation, `r12` = its index,
//! `r15` = this vCPU's control block, `rsp` = the top of this vCPU's stack (nothing stays
//! pushed across operations, so an exception handler can reset it).
//!
//! Guest code is emulated on the project's hosts (about 0.3–1.2 µs per instruction), so the
//! dispatch is a jump table and each handler is a handful of instructions.

use super::layout::{ctrl, eoi, kind, op, port, LOG_CAPACITY, LOG_ENTRY_SIZE, OP_SIZE};

// Exceptions that push an error code: #DF 8, #TS 10, #NP 11, #SS 12, #GP 13, #PF 14, #AC 17,
// #CP 21, #VC 29, #SX 30.
const ERROR_CODE_VECTORS: u32 = (1 << 8)
    | (1 << 10)
    | (1 << 11)
    | (1 << 12)
    | (1 << 13)
    | (1 << 14)
    | (1 << 17)
    | (1 << 21)
    | (1 << 29)
    | (1 << 30);

core::arch::global_asm!(
    ".pushsection .rodata.irq_probe, \"a\"",
    ".balign 16",
    ".globl irq_probe_start",
    "irq_probe_start:",
    // Header read by the host (offsets from the start of the blob).
    ".long 2f - irq_probe_start", // entry point
    ".long 3f - irq_probe_start", // first interrupt stub; stub n is 16 bytes further per vector
    ".long 0, 0",
    // ---- entry: the host set rsp, rsi (operation 0), r12 = 0, r15 (control block) ----------
    "2:",
    "jmp 10f",
    // ---- interpreter ---------------------------------------------------------------------
    // 11: op_next: advance to the following operation.
    "11:",
    "add rsi, {op_size}",
    "inc r12d",
    // 10: dispatch on the kind byte through a table of relative offsets.
    "10:",
    "movzx eax, byte ptr [rsi]",
    "cmp eax, {n_kinds}",
    "jae 90f",
    "lea rdx, [rip + 20f]",
    "movsxd rax, dword ptr [rdx + rax*4]",
    "add rax, rdx",
    "jmp rax",
    // 90: unknown kind: tell the host, which ends the run with an error.
    "90:",
    "mov dx, {port_bad}",
    "mov eax, r12d",
    "out dx, eax",
    "jmp 90b",
    // The table, in `kind` order.
    ".balign 4",
    "20:",
    ".long 30f - 20b", // END
    ".long 31f - 20b", // HOST
    ".long 32f - 20b", // OUT8
    ".long 33f - 20b", // OUT16
    ".long 34f - 20b", // OUT32
    ".long 35f - 20b", // IN8
    ".long 36f - 20b", // IN16
    ".long 37f - 20b", // IN32
    ".long 38f - 20b", // MMIO_READ32
    ".long 39f - 20b", // MMIO_READ64
    ".long 40f - 20b", // MMIO_WRITE32
    ".long 41f - 20b", // MMIO_WRITE64
    ".long 42f - 20b", // RDMSR
    ".long 43f - 20b", // WRMSR
    ".long 44f - 20b", // RDTSC
    ".long 45f - 20b", // STI
    ".long 46f - 20b", // CLI
    ".long 47f - 20b", // WAIT
    ".long 48f - 20b", // WRITE_CR8
    ".long 49f - 20b", // READ_CR8
    ".long 50f - 20b", // RECORD
    ".long 51f - 20b", // SPIN
    ".long 55f - 20b", // UD2
    ".long 53f - 20b", // SET_EOI
    ".long 54f - 20b", // LOOP
    ".long 58f - 20b", // WRMSR_TSC_DELTA
    // END: ring the end doorbell (data = index of this op); the host stops the vCPU.
    "30:",
    "mov dx, {port_end}",
    "mov eax, r12d",
    "out dx, eax",
    "jmp 30b",
    // HOST: ring the host doorbell; the host performs its operation before resuming us.
    "31:",
    "mov dx, {port_host}",
    "mov eax, r12d",
    "out dx, eax",
    "jmp 11b",
    // OUT8/16/32: port in a, value in b.
    "32:",
    "mov edx, dword ptr [rsi + {op_a}]",
    "mov eax, dword ptr [rsi + {op_b}]",
    "out dx, al",
    "jmp 11b",
    "33:",
    "mov edx, dword ptr [rsi + {op_a}]",
    "mov eax, dword ptr [rsi + {op_b}]",
    "out dx, ax",
    "jmp 11b",
    "34:",
    "mov edx, dword ptr [rsi + {op_a}]",
    "mov eax, dword ptr [rsi + {op_b}]",
    "out dx, eax",
    "jmp 11b",
    // IN8/16/32: every op that logs a value runs with IF=0 (pushfq; cli ... popfq in 60),
    // so an interrupt never lands between the access and its log entry.
    "35:",
    "pushfq",
    "cli",
    "mov edx, dword ptr [rsi + {op_a}]",
    "xor eax, eax",
    "in al, dx",
    "jmp 60f",
    "36:",
    "pushfq",
    "cli",
    "mov edx, dword ptr [rsi + {op_a}]",
    "xor eax, eax",
    "in ax, dx",
    "jmp 60f",
    "37:",
    "pushfq",
    "cli",
    "mov edx, dword ptr [rsi + {op_a}]",
    "in eax, dx",
    "jmp 60f",
    // MMIO reads and writes: address in a, value in b.
    "38:",
    "pushfq",
    "cli",
    "mov rdx, qword ptr [rsi + {op_a}]",
    "mov eax, dword ptr [rdx]",
    "jmp 60f",
    "39:",
    "pushfq",
    "cli",
    "mov rdx, qword ptr [rsi + {op_a}]",
    "mov rax, qword ptr [rdx]",
    "jmp 60f",
    "40:",
    "mov rdx, qword ptr [rsi + {op_a}]",
    "mov eax, dword ptr [rsi + {op_b}]",
    "mov dword ptr [rdx], eax",
    "jmp 11b",
    "41:",
    "mov rdx, qword ptr [rsi + {op_a}]",
    "mov rax, qword ptr [rsi + {op_b}]",
    "mov qword ptr [rdx], rax",
    "jmp 11b",
    // RDMSR a / WRMSR a = b.
    "42:",
    "pushfq",
    "cli",
    "mov ecx, dword ptr [rsi + {op_a}]",
    "rdmsr",
    "shl rdx, 32",
    "or rax, rdx",
    "jmp 60f",
    "43:",
    "mov ecx, dword ptr [rsi + {op_a}]",
    "mov eax, dword ptr [rsi + {op_b}]",
    "mov edx, dword ptr [rsi + {op_b} + 4]",
    "wrmsr",
    "jmp 11b",
    // WRMSR_TSC_DELTA: wrmsr a = rdtsc + b (a TSC deadline relative to now).
    "58:",
    "rdtsc",
    "shl rdx, 32",
    "or rax, rdx",
    "add rax, qword ptr [rsi + {op_b}]",
    "mov rdx, rax",
    "shr rdx, 32",
    "mov ecx, dword ptr [rsi + {op_a}]",
    "wrmsr",
    "jmp 11b",
    // RDTSC.
    "44:",
    "pushfq",
    "cli",
    "rdtsc",
    "shl rdx, 32",
    "or rax, rdx",
    "jmp 60f",
    // STI / CLI; the control block mirrors IF for the exception handler.
    "45:",
    "mov byte ptr [r15 + {ctrl_if}], 1",
    "sti",
    "jmp 11b",
    "46:",
    "cli",
    "mov byte ptr [r15 + {ctrl_if}], 0",
    "jmp 11b",
    // WAIT: sti; hlt (woken by an interrupt, which runs first); cli. IF is 0 afterwards.
    "47:",
    "sti",
    "hlt",
    "cli",
    "mov byte ptr [r15 + {ctrl_if}], 0",
    "jmp 11b",
    // CR8 write (b) / read.
    "48:",
    "mov rax, qword ptr [rsi + {op_b}]",
    "mov cr8, rax",
    "jmp 11b",
    "49:",
    "pushfq",
    "cli",
    "mov rax, cr8",
    "jmp 60f",
    // RECORD b into the log.
    "50:",
    "pushfq",
    "cli",
    "mov rax, qword ptr [rsi + {op_b}]",
    "jmp 60f",
    // SPIN b iterations (b >= 1).
    "51:",
    "mov rcx, qword ptr [rsi + {op_b}]",
    "57:",
    "dec rcx",
    "jnz 57b",
    "jmp 11b",
    // SET_EOI: policy byte b, slave vector base byte b+1.
    "53:",
    "mov ax, word ptr [rsi + {op_b}]",
    "mov word ptr [r15 + {ctrl_eoi}], ax",
    "jmp 11b",
    // LOOP: jump back to operation a until the body ran b times; c counts down.
    "54:",
    "mov rax, qword ptr [rsi + {op_c}]",
    "test rax, rax",
    "jnz 56f",
    "mov rax, qword ptr [rsi + {op_b}]",
    "56:",
    "dec rax",
    "mov qword ptr [rsi + {op_c}], rax",
    "jz 11b",
    "mov r12, qword ptr [rsi + {op_a}]",
    "mov rsi, r12",
    "shl rsi, 5",
    "lea rsi, [r15 + rsi + {ctrl_mailbox}]",
    "jmp 10b",
    // 60: log rax as a value (called with the caller's RFLAGS pushed), restore IF, next op.
    "60:",
    "mov rdx, rax",
    "mov eax, {kind_value}",
    "call 70f",
    "popfq",
    "jmp 11b",
    // 70: append (eax = kind | vector << 8, rdx = value) to the log; clobbers eax, ecx.
    // The slot is taken with one xadd, so an interrupt between two appends cannot share it;
    // past the capacity the entry is dropped and the host reports the overflow.
    "70:",
    "mov ecx, r12d",
    "shl ecx, 16",
    "or eax, ecx",
    "mov ecx, 1",
    "xadd dword ptr [r15 + {ctrl_head}], ecx",
    "cmp ecx, {log_capacity}",
    "jae 71f",
    "push rdi",
    "lea rdi, [rcx + rcx]",
    "lea rdi, [r15 + rdi*8 + {ctrl_log}]",
    "mov dword ptr [rdi], eax",
    "mov dword ptr [rdi + 4], ecx",
    "mov qword ptr [rdi + 8], rdx",
    "pop rdi",
    "71:",
    "ret",
    // ---- interrupt and exception handlers --------------------------------------------------
    // 80: every stub pushed rax and loaded eax with its vector.
    "80:",
    "cmp eax, 32",
    "jb 83f",
    "push rcx",
    "push rdx",
    "push rdi",
    "mov edi, eax",
    "shl eax, 8",
    "or eax, {kind_irq}",
    "xor edx, edx",
    "call 70b",
    "movzx eax, byte ptr [r15 + {ctrl_eoi}]",
    "cmp eax, {eoi_pic}",
    "je 84f",
    "cmp eax, {eoi_lapic}",
    "je 85f",
    "cmp eax, {eoi_x2apic}",
    "je 86f",
    "81:",
    "pop rdi",
    "pop rdx",
    "pop rcx",
    "pop rax",
    "iretq",
    // EOI by port: non-specific EOI (OCW2 0x20) to the slave if the vector is in its range,
    // then to the master.
    "84:",
    "mov eax, edi",
    "and eax, 0xF8",
    "cmp al, byte ptr [r15 + {ctrl_slave_base}]",
    "jne 87f",
    "mov al, 0x20",
    "out 0xA0, al",
    "87:",
    "mov al, 0x20",
    "out 0x20, al",
    "jmp 81b",
    // EOI by LAPIC MMIO: write 0 to the EOI register at 0xFEE000B0.
    "85:",
    "mov eax, 0xFEE000B0",
    "mov dword ptr [rax], 0",
    "jmp 81b",
    // EOI by x2APIC MSR 0x80B.
    "86:",
    "mov ecx, 0x80B",
    "xor eax, eax",
    "xor edx, edx",
    "wrmsr",
    "jmp 81b",
    // 83: vectors 0-31: NMI (2) is logged and returns; exceptions are logged with their error
    // code and resume at the next operation, with the stack reset and IF as the interpreter
    // had it, so the faulting operation is skipped in a controlled way.
    "83:",
    "cmp eax, 2",
    "je 88f",
    "push rcx",
    "push rdx",
    "push rdi",
    "mov edi, eax",
    "mov edx, {error_code_vectors}",
    "bt edx, edi",
    "jnc 89f",
    // With an error code: frame = rdi rdx rcx rax err rip cs rflags rsp ss.
    "mov rdx, qword ptr [rsp + 32]",
    "mov eax, edi",
    "shl eax, 8",
    "or eax, {kind_exception}",
    "call 70b",
    "lea rax, [rsp + 40]",
    "jmp 91f",
    // Without an error code: frame = rdi rdx rcx rax rip cs rflags rsp ss.
    "89:",
    "xor edx, edx",
    "mov eax, edi",
    "shl eax, 8",
    "or eax, {kind_exception}",
    "call 70b",
    "lea rax, [rsp + 32]",
    // 91: rax = address of the iretq frame: return to op_next on the interpreter's stack
    // top with the interpreter's IF.
    "91:",
    "lea rcx, [rip + 11b]",
    "mov qword ptr [rax], rcx",
    "mov rcx, qword ptr [rax + 16]",
    "and ecx, 0xFFFFFDFF",
    "movzx edx, byte ptr [r15 + {ctrl_if}]",
    "shl edx, 9",
    "or ecx, edx",
    "mov qword ptr [rax + 16], rcx",
    "lea rcx, [r15 + {ctrl_stack_top}]",
    "mov qword ptr [rax + 24], rcx",
    // The interpreter keeps nothing in rax, rcx, rdx or rdi across operations.
    "mov rsp, rax",
    "iretq",
    "88:",
    "push rcx",
    "push rdx",
    "mov eax, {kind_nmi} | (2 << 8)",
    "xor edx, edx",
    "call 70b",
    "pop rdx",
    "pop rcx",
    "pop rax",
    "iretq",
    // UD2 (kind 22): raises #UD, which resumes at the next operation.
    "55:",
    "ud2",
    "jmp 11b",
    // ---- 256 stubs, 16 bytes apart ---------------------------------------------------------
    ".balign 16",
    "3:",
    ".set irq_probe_vector, 0",
    ".rept 256",
    ".balign 16",
    "push rax",
    "mov eax, irq_probe_vector",
    "jmp 80b",
    ".set irq_probe_vector, irq_probe_vector + 1",
    ".endr",
    ".globl irq_probe_end",
    "irq_probe_end:",
    ".popsection",
    op_size = const OP_SIZE,
    n_kinds = const kind::COUNT,
    port_bad = const port::BAD_OP,
    port_end = const port::END,
    port_host = const port::HOST,
    op_a = const op::A,
    op_b = const op::B,
    op_c = const op::C,
    ctrl_if = const ctrl::IF_FLAG,
    ctrl_eoi = const ctrl::EOI_POLICY,
    ctrl_slave_base = const ctrl::SLAVE_BASE,
    ctrl_head = const ctrl::LOG_HEAD,
    ctrl_log = const ctrl::LOG,
    ctrl_mailbox = const ctrl::MAILBOX,
    ctrl_stack_top = const ctrl::STACK_TOP,
    log_capacity = const LOG_CAPACITY,
    kind_value = const super::layout::entry::VALUE,
    kind_irq = const super::layout::entry::IRQ,
    kind_exception = const super::layout::entry::EXCEPTION,
    kind_nmi = const super::layout::entry::NMI,
    eoi_pic = const eoi::PIC,
    eoi_lapic = const eoi::LAPIC_MMIO,
    eoi_x2apic = const eoi::X2APIC_MSR,
    error_code_vectors = const ERROR_CODE_VECTORS,
);

const _: () = assert!(LOG_ENTRY_SIZE == 16 && OP_SIZE == 32);

extern "C" {
    static irq_probe_start: u8;
    static irq_probe_end: u8;
}

/// The probe guest's machine code, to be copied to [`super::layout::CODE`].
pub fn code() -> &'static [u8] {
    // SAFETY: both symbols are defined by the global_asm! block above in one section, start
    // before end; the bytes between them are immutable data for the life of the program.
    unsafe {
        let start = core::ptr::addr_of!(irq_probe_start);
        let end = core::ptr::addr_of!(irq_probe_end);
        let len = (end as usize).saturating_sub(start as usize);
        core::slice::from_raw_parts(start, len)
    }
}

/// Offset of the entry point within [`code`].
pub fn entry_offset() -> u64 {
    header(0)
}

/// Offset of the interrupt stub for `vector` within [`code`].
pub fn stub_offset(vector: u8) -> u64 {
    header(4) + 16 * u64::from(vector)
}

fn header(at: usize) -> u64 {
    let c = code();
    let bytes = [c[at], c[at + 1], c[at + 2], c[at + 3]];
    u64::from(u32::from_le_bytes(bytes))
}
