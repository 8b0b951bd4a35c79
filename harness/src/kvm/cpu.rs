//! 64-bit long mode entered directly through KVM_SET_SREGS: identity-mapped page tables,
//! a flat GDT, an IDT pointing at the probe's stubs, and the control and segment registers.
//! (32-bit protected-mode `iret` fails on the project's hosts; `iretq` works.)

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};

use super::memory::GuestMemory;
use crate::guest::layout::{self, ctrl, CODE, GDT, IDT, PML4};
use crate::guest::probe;

/// CR0: PE (protected mode) | MP (monitor coprocessor) | ET (extension type) | NE (native FPU
/// errors) | WP (write protect at CPL0) | AM (alignment mask) | PG (paging).
pub const CR0: u64 = 1 | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 18) | (1 << 31);
/// CR4: PAE (required by long mode) | OSFXSR | OSXMMEXCPT (SSE usable).
pub const CR4: u64 = (1 << 5) | (1 << 9) | (1 << 10);
/// EFER: LME (long mode enable) | LMA (long mode active).
pub const EFER: u64 = (1 << 8) | (1 << 10);
/// RFLAGS at entry: only the always-one bit 1 (IF=0).
pub const RFLAGS: u64 = 0x2;

/// Code segment selector (GDT entry 1).
pub const CODE_SELECTOR: u16 = 0x08;
/// Data segment selector (GDT entry 2).
pub const DATA_SELECTOR: u16 = 0x10;
/// TSS selector (GDT entries 3–4, a 16-byte system descriptor).
pub const TSS_SELECTOR: u16 = 0x18;
/// Guest-physical address of the (unused, all-zero) 64-bit TSS.
pub const TSS: u64 = 0x1800;

/// Page-table entry flags.
mod pte {
    /// Present.
    pub const P: u64 = 1 << 0;
    /// Writable.
    pub const RW: u64 = 1 << 1;
    /// Write-through.
    pub const PWT: u64 = 1 << 3;
    /// Cache disable.
    pub const PCD: u64 = 1 << 4;
    /// Page size: a 2 MiB page in a page directory.
    pub const PS: u64 = 1 << 7;
}

/// GDT descriptors (8 bytes each, SDM Vol. 3 §3.4.5).
mod gdt {
    /// 64-bit code: limit 0xFFFFF, base 0, type 0xB (execute/read, accessed), S=1, DPL 0, P=1,
    /// L=1 (long mode), D=0, G=1 (4 KiB granularity).
    pub const CODE64: u64 = 0x00AF_9B00_0000_FFFF;
    /// Data: limit 0xFFFFF, base 0, type 0x3 (read/write, accessed), S=1, DPL 0, P=1, D/B=1, G=1.
    pub const DATA: u64 = 0x00CF_9300_0000_FFFF;
}

/// Writes the GDT, the IDT (256 interrupt gates to the probe's stubs), the page tables and
/// the probe's code into guest memory.
pub fn write_boot_tables(mem: &GuestMemory) -> Result<(), String> {
    // GDT: null, code, data, then the TSS descriptor (low and high halves).
    let tss_limit = 0x67u64;
    let tss_low = tss_limit | ((TSS & 0xFF_FFFF) << 16) | (0x89 << 40) | (((TSS >> 24) & 0xFF) << 56); // type 9: available 64-bit TSS, P=1
    let tss_high = TSS >> 32;
    for (i, desc) in [0, gdt::CODE64, gdt::DATA, tss_low, tss_high].iter().enumerate() {
        mem.write(GDT + 8 * i as u64, &desc.to_le_bytes())?;
    }
    // IDT: 64-bit interrupt gates (type 0xE, P=1, DPL 0, IST 0) to stub n.
    for vector in 0..=255u8 {
        let target = CODE + probe::stub_offset(vector);
        let mut gate = [0u8; 16];
        gate[0..2].copy_from_slice(&(target as u16).to_le_bytes()); // offset 15:0
        gate[2..4].copy_from_slice(&CODE_SELECTOR.to_le_bytes()); // segment selector
        gate[4] = 0; // IST
        gate[5] = 0x8E; // P=1, DPL=0, type 0xE (64-bit interrupt gate: IF cleared on entry)
        gate[6..8].copy_from_slice(&((target >> 16) as u16).to_le_bytes()); // offset 31:16
        gate[8..12].copy_from_slice(&((target >> 32) as u32).to_le_bytes()); // offset 63:32
        mem.write(IDT + 16 * u64::from(vector), &gate)?;
    }
    // Page tables: PML4[0] -> PDPT; PDPT[0..4] -> four page directories of 2 MiB pages, an
    // identity map of 0-4 GiB. The last GiB (IOAPIC, LAPIC) is uncached.
    let pdpt = PML4 + 0x1000;
    mem.write(PML4, &(pdpt | pte::P | pte::RW).to_le_bytes())?;
    for gib in 0..4u64 {
        let pd = pdpt + 0x1000 * (1 + gib);
        mem.write(pdpt + 8 * gib, &(pd | pte::P | pte::RW).to_le_bytes())?;
        let cache = if gib == 3 { pte::PCD | pte::PWT } else { 0 };
        for entry in 0..512u64 {
            let page = (gib << 30) | (entry << 21);
            mem.write(pd + 8 * entry, &(page | pte::P | pte::RW | pte::PS | cache).to_le_bytes())?;
        }
    }
    let code = probe::code();
    if code.len() > layout::CODE_MAX {
        return Err(format!(
            "probe code is {} bytes, the layout has room for {}",
            code.len(),
            layout::CODE_MAX
        ));
    }
    mem.write(CODE, code)
}

fn segment(selector: u16, type_: u8, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(!code), // 64-bit code requires D=0
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Puts `sregs` in 64-bit long mode with the tables of [`write_boot_tables`].
pub fn set_long_mode(sregs: &mut kvm_sregs) {
    sregs.cs = segment(CODE_SELECTOR, 0xB, true);
    let data = segment(DATA_SELECTOR, 0x3, false);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: TSS,
        limit: 0x67,
        selector: TSS_SELECTOR,
        type_: 0xB, // busy 64-bit TSS, as after LTR
        present: 1,
        s: 0,
        ..kvm_segment::default()
    };
    sregs.gdt.base = GDT;
    sregs.gdt.limit = 5 * 8 - 1;
    sregs.idt.base = IDT;
    sregs.idt.limit = 256 * 16 - 1;
    sregs.cr0 = CR0;
    sregs.cr3 = PML4;
    sregs.cr4 = CR4;
    sregs.efer = EFER;
}

/// The registers with which vCPU `index` enters the probe: at its entry point, on its own
/// stack, with its control block in r15 and its first operation in rsi.
pub fn initial_regs(index: usize) -> kvm_regs {
    let region = layout::vcpu_region(index);
    kvm_regs {
        rip: CODE + probe::entry_offset(),
        rsp: region + u64::from(ctrl::STACK_TOP),
        rsi: region + u64::from(ctrl::MAILBOX),
        r15: region,
        r12: 0,
        rflags: RFLAGS,
        ..kvm_regs::default()
    }
}

/// Puts `sregs` where a start-up IPI with `vector` leaves a processor (SDM "MP
/// Initialization"): real mode, CS selector `vector << 8` with base `vector << 12`, every other
/// segment at 0 with a 64 KiB limit, paging and protection off, EFER 0.
pub fn set_real_mode(sregs: &mut kvm_sregs, vector: u8) {
    let real = |selector: u16, type_: u8| kvm_segment {
        base: u64::from(selector) << 4,
        limit: 0xFFFF,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.cs = real(u16::from(vector) << 8, 0xB); // execute/read, accessed
    let data = real(0, 0x3); // read/write, accessed
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment { limit: 0xFFFF, type_: 0xB, present: 1, ..kvm_segment::default() }; // busy TSS
    sregs.ldt = kvm_segment { limit: 0xFFFF, type_: 0x2, present: 1, ..kvm_segment::default() }; // LDT
    sregs.gdt.base = 0;
    sregs.gdt.limit = 0xFFFF;
    sregs.idt.base = 0;
    sregs.idt.limit = 0xFFFF;
    sregs.cr0 = 1 << 4; // ET only: real mode, no paging
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
}

/// The general registers after a start-up IPI: IP 0 (CS carries the vector), RFLAGS bit 1.
pub fn sipi_regs() -> kvm_regs {
    kvm_regs { rip: 0, rflags: RFLAGS, ..kvm_regs::default() }
}
