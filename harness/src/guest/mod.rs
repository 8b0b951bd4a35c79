//! The probe guest: its machine code ([`probe`]), its memory layout and protocol
//! ([`layout`]), and the host side of that protocol: encoding a program into the mailbox
//! ([`encode`]) and decoding the log ([`decode_entry`]).

pub mod layout;
pub mod probe;

use crate::scenario::{EoiPolicy, IoWidth, Op};
use crate::trace::{Entry, Event};
use layout::{entry, eoi, kind, OP_SIZE};

/// The EOI policy byte of the control block.
pub fn eoi_byte(policy: EoiPolicy) -> u8 {
    match policy {
        EoiPolicy::None => eoi::NONE,
        EoiPolicy::Pic { .. } => eoi::PIC,
        EoiPolicy::LapicMmio => eoi::LAPIC_MMIO,
        EoiPolicy::X2apicMsr => eoi::X2APIC_MSR,
    }
}

/// The slave vector base byte that goes with a policy.
pub fn slave_base_byte(policy: EoiPolicy) -> u8 {
    match policy {
        EoiPolicy::Pic { slave_base } => slave_base,
        _ => 0xFF,
    }
}

fn encode_op(op: &Op) -> [u8; OP_SIZE] {
    let (k, a, b): (u8, u64, u64) = match op {
        Op::Out { port, width, value } => (
            match width {
                IoWidth::Byte => kind::OUT8,
                IoWidth::Word => kind::OUT16,
                IoWidth::Dword => kind::OUT32,
            },
            u64::from(*port),
            u64::from(*value),
        ),
        Op::In { port, width } => (
            match width {
                IoWidth::Byte => kind::IN8,
                IoWidth::Word => kind::IN16,
                IoWidth::Dword => kind::IN32,
            },
            u64::from(*port),
            0,
        ),
        Op::MmioRead { addr, wide } => (if *wide { kind::MMIO_READ64 } else { kind::MMIO_READ32 }, *addr, 0),
        Op::MmioWrite { addr, wide, value } => {
            (if *wide { kind::MMIO_WRITE64 } else { kind::MMIO_WRITE32 }, *addr, *value)
        }
        Op::Rdmsr(msr) => (kind::RDMSR, u64::from(*msr), 0),
        Op::Wrmsr(msr, value) => (kind::WRMSR, u64::from(*msr), *value),
        Op::WrmsrTscDelta(msr, delta) => (kind::WRMSR_TSC_DELTA, u64::from(*msr), *delta),
        Op::Rdtsc => (kind::RDTSC, 0, 0),
        Op::Sti => (kind::STI, 0, 0),
        Op::Cli => (kind::CLI, 0, 0),
        Op::Wait => (kind::WAIT, 0, 0),
        Op::WriteCr8(v) => (kind::WRITE_CR8, 0, *v),
        Op::ReadCr8 => (kind::READ_CR8, 0, 0),
        Op::Record(v) => (kind::RECORD, 0, *v),
        Op::Spin(n) => (kind::SPIN, 0, *n),
        Op::Ud2 => (kind::UD2, 0, 0),
        Op::SetEoi(policy) => {
            (kind::SET_EOI, 0, u64::from(eoi_byte(*policy)) | (u64::from(slave_base_byte(*policy)) << 8))
        }
        Op::Loop { target, count } => (kind::LOOP, *target as u64, *count),
        Op::Host(_) => (kind::HOST, 0, 0),
    };
    let mut bytes = [0u8; OP_SIZE];
    bytes[0] = k;
    bytes[layout::op::A as usize..][..8].copy_from_slice(&a.to_le_bytes());
    bytes[layout::op::B as usize..][..8].copy_from_slice(&b.to_le_bytes());
    bytes
}

/// A program as mailbox bytes, END appended.
pub fn encode(program: &[Op]) -> Vec<u8> {
    let mut out = Vec::with_capacity((program.len() + 1) * OP_SIZE);
    for op in program {
        out.extend_from_slice(&encode_op(op));
    }
    out.extend_from_slice(&[kind::END; 1]);
    out.resize((program.len() + 1) * OP_SIZE, 0);
    out
}

/// Decodes one 16-byte log entry.
pub fn decode_entry(raw: &[u8]) -> Result<Entry, String> {
    let word = |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
    if raw.len() < layout::LOG_ENTRY_SIZE {
        return Err("short log entry".into());
    }
    let head = word(0);
    let seq = word(4);
    let mut value = [0u8; 8];
    value.copy_from_slice(&raw[8..16]);
    let value = u64::from_le_bytes(value);
    let vector = ((head >> 8) & 0xFF) as u8;
    let event = match head & 0xFF {
        entry::IRQ => Event::Irq(vector),
        entry::EXCEPTION => Event::Exception { vector, error_code: value },
        entry::NMI => Event::Nmi,
        entry::VALUE => Event::Value(value),
        other => return Err(format!("corrupt log entry {raw:02x?} (kind {other})")),
    };
    Ok(Entry { event, op: (head >> 16) as u16, seq })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_code_has_a_header_and_256_stubs() {
        let code = probe::code();
        let stubs = probe::stub_offset(0) as usize;
        assert!(probe::entry_offset() > 0 && (probe::entry_offset() as usize) < stubs);
        assert_eq!(
            code.len(),
            stubs + 256 * 16 - (16 - 11),
            "every stub is push rax; mov eax, imm32; jmp rel32"
        );
        // Stub 0x30: push rax (50), mov eax, 0x30 (b8 30 00 00 00), jmp rel32 (e9 ..).
        let s = &code[probe::stub_offset(0x30) as usize..][..6];
        assert_eq!(s, [0x50, 0xb8, 0x30, 0x00, 0x00, 0x00]);
    }

    #[test]
    fn programs_end_with_an_end_operation() {
        let bytes = encode(&[Op::Out { port: 0x21, width: IoWidth::Byte, value: 0xFB }]);
        assert_eq!(bytes.len(), 2 * OP_SIZE);
        assert_eq!((bytes[0], bytes[8], bytes[16], bytes[OP_SIZE]), (kind::OUT8, 0x21, 0xFB, kind::END));
    }
}
