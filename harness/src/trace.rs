//! The trace format: what a program logged, in order, and the controller state at each
//! snapshot point. Every backend produces the same format.

use std::fmt;

use crate::scenario::{Expect, Op};

/// One thing the guest logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// An interrupt (vector 32–255).
    Irq(u8),
    /// An exception, with its error code (0 for exceptions without one).
    Exception {
        /// Vector 0–31.
        vector: u8,
        /// Error code pushed by the CPU, or 0.
        error_code: u64,
    },
    /// An NMI.
    Nmi,
    /// A value read (port, MMIO, MSR, TSC, CR8) or recorded.
    Value(u64),
}

/// A log entry: the event and where the program was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// What happened.
    pub event: Event,
    /// Index of the operation being interpreted (for an interrupt: the one it arrived
    /// after or during; for a value: the one that produced it).
    pub op: u16,
    /// Position in the log (0, 1, 2, …).
    pub seq: u32,
}

/// Interrupt-controller state at a snapshot point, in KVM's byte layouts so that every
/// backend's snapshot can be compared bit for bit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The label of the [`crate::scenario::HostOp::Snapshot`].
    pub label: String,
    /// PIC master and slave as `kvm_pic_state` bytes (KVM_GET_IRQCHIP chips 0 and 1, or the
    /// model's `PicState::to_kvm`).
    pub pic: Option<[[u8; 16]; 2]>,
    /// The IOAPIC as the 216 `kvm_ioapic_state` bytes (KVM_GET_IRQCHIP chip 2, or the model's
    /// state through [`ioapic_state_bytes`]).
    pub ioapic: Option<Vec<u8>>,
    /// The snapshotting vCPU's LAPIC as the 1 KiB `kvm_lapic_state` (KVM_GET_LAPIC, or the
    /// LAPIC model's `to_kvm` at the time of the snapshot).
    pub lapic: Option<Vec<u8>>,
}

/// The names of the `kvm_pic_state` bytes, for printing differences.
pub const PIC_FIELDS: [&str; 16] = [
    "last_irr",
    "irr",
    "imr",
    "isr",
    "priority_add",
    "irq_base",
    "read_reg_select",
    "poll",
    "special_mask",
    "init_state",
    "auto_eoi",
    "rotate_on_auto_eoi",
    "special_fully_nested_mode",
    "init4",
    "elcr",
    "elcr_mask",
];

/// `items` on one line; a long list as its first and last [`SUMMARY_ENDS`] items and a
/// count of those between.
fn summarise(items: &[String]) -> String {
    let n = items.len();
    if n <= 2 * SUMMARY_ENDS + 1 {
        return items.join(" ");
    }
    format!(
        "{} … {} more … {} ({n} entries)",
        items[..SUMMARY_ENDS].join(" "),
        n - 2 * SUMMARY_ENDS,
        items[n - SUMMARY_ENDS..].join(" ")
    )
}

/// How many entries [`Trace::summary`] shows at each end of a long log.
pub const SUMMARY_ENDS: usize = 16;

/// What one vCPU logged during a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// The log, in order.
    pub entries: Vec<Entry>,
    /// Snapshots, in order.
    pub snapshots: Vec<Snapshot>,
    /// Software backend only: the virtual time (ns) at which each interrupt was taken, in
    /// log order. Empty on KVM backends, whose timing is not deterministic.
    pub irq_times_ns: Vec<u64>,
}

impl Trace {
    /// Interrupts taken (IRQ and NMI entries).
    pub fn interrupts(&self) -> usize {
        self.entries.iter().filter(|e| matches!(e.event, Event::Irq(_) | Event::Nmi)).count()
    }

    /// The events alone.
    pub fn events(&self) -> Vec<Event> {
        self.entries.iter().map(|e| e.event).collect()
    }

    /// Checks the log against `expect`; on mismatch, says where.
    pub fn check(&self, expect: &[Expect]) -> Result<(), String> {
        for (i, want) in expect.iter().enumerate() {
            let Some(got) = self.entries.get(i) else {
                return Err(format!(
                    "log ends after {} entries, expected {} (next: {})",
                    self.entries.len(),
                    expect.len(),
                    ExpectDisplay(want)
                ));
            };
            let ok = match (*want, got.event) {
                (Expect::Irq(v), Event::Irq(g)) => v == g,
                (Expect::Exception(v), Event::Exception { vector, .. }) => v == vector,
                (Expect::Nmi, Event::Nmi) => true,
                (Expect::Value(v), Event::Value(g)) => v == g,
                (Expect::ValueIn(lo, hi), Event::Value(g)) => (lo..=hi).contains(&g),
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "entry {i}: expected {}, got {} (at op {})\n  expected: {}\n  got:      {}",
                    ExpectDisplay(want),
                    got.event,
                    got.op,
                    summarise(&expect.iter().map(|e| ExpectDisplay(e).to_string()).collect::<Vec<_>>()),
                    self.summary()
                ));
            }
        }
        if self.entries.len() > expect.len() {
            return Err(format!(
                "{} unexpected extra entries after the expected {}\n  got: {}",
                self.entries.len() - expect.len(),
                expect.len(),
                self.summary()
            ));
        }
        Ok(())
    }

    /// The log on one line; a long one as its first and last [`SUMMARY_ENDS`] entries and a
    /// count of those between.
    pub fn summary(&self) -> String {
        summarise(&self.entries.iter().map(|e| e.event.to_string()).collect::<Vec<_>>())
    }

    /// Whether two logs are the same, entry by entry, given the program that produced them:
    /// values that depend on time (`rdtsc`, IA32_TSC and TSC_ADJUST reads) are compared only
    /// for presence. Returns the first difference.
    pub fn diff_events(&self, other: &Trace, program: &[Op]) -> Option<String> {
        let n = self.entries.len().max(other.entries.len());
        for i in 0..n {
            match (self.entries.get(i), other.entries.get(i)) {
                (Some(a), Some(b)) => {
                    let nondeterministic = matches!(a.event, Event::Value(_))
                        && matches!(b.event, Event::Value(_))
                        && a.op == b.op
                        && program.get(usize::from(a.op)).is_some_and(reads_time);
                    if a.event != b.event && !nondeterministic {
                        return Some(format!(
                            "entry {i}: {} (op {}) vs {} (op {})",
                            a.event, a.op, b.event, b.op
                        ));
                    }
                }
                (Some(a), None) => {
                    return Some(format!("entry {i}: {} (op {}) vs end of log", a.event, a.op))
                }
                (None, Some(b)) => {
                    return Some(format!("entry {i}: end of log vs {} (op {})", b.event, b.op))
                }
                (None, None) => {}
            }
        }
        None
    }
}

/// Whether the value `op` logs depends on when it runs: the TSC, the TSC MSRs, the LAPIC
/// timer's current count (xAPIC 0xFEE00390, x2APIC MSR 0x839).
fn reads_time(op: &Op) -> bool {
    matches!(op, Op::Rdtsc | Op::Rdmsr(0x10 | 0x3B | 0x839) | Op::MmioRead { addr: 0xFEE0_0390, .. })
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Irq(v) => write!(f, "irq:{v:#04x}"),
            Event::Exception { vector, error_code } => write!(f, "exc:{vector}/{error_code:#x}"),
            Event::Nmi => write!(f, "nmi"),
            Event::Value(v) => write!(f, "val:{v:#x}"),
        }
    }
}

struct ExpectDisplay<'a>(&'a Expect);

impl fmt::Display for ExpectDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Expect::Irq(v) => write!(f, "irq:{v:#04x}"),
            Expect::Exception(v) => write!(f, "exc:{v}"),
            Expect::Nmi => write!(f, "nmi"),
            Expect::Value(v) => write!(f, "val:{v:#x}"),
            Expect::ValueIn(lo, hi) => write!(f, "val:{lo:#x}..{hi:#x}"),
        }
    }
}

/// The `kvm_pic_state` bytes of a vm-pic chip, in KVM's field order.
pub fn pic_chip_bytes(chip: &vm_pic::ChipState) -> [u8; 16] {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        crate::kvm::state::pic_state_bytes(&chip.to_kvm())
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        [
            chip.last_irr,
            chip.irr,
            chip.imr,
            chip.isr,
            chip.priority_add,
            chip.irq_base,
            u8::from(chip.read_reg_select),
            u8::from(chip.poll),
            u8::from(chip.special_mask),
            chip.init_state as u8,
            u8::from(chip.auto_eoi),
            u8::from(chip.rotate_on_auto_eoi),
            u8::from(chip.special_fully_nested_mode),
            u8::from(chip.init4),
            chip.elcr,
            chip.elcr_mask,
        ]
    }
}

/// The PIC pair's snapshot bytes.
pub fn pic_bytes(state: &vm_pic::PicState) -> [[u8; 16]; 2] {
    [pic_chip_bytes(&state.master), pic_chip_bytes(&state.slave)]
}

/// Describes every byte that differs between two PIC snapshots, by chip and field name.
pub fn pic_difference(a: &[[u8; 16]; 2], b: &[[u8; 16]; 2]) -> Vec<String> {
    let mut out = Vec::new();
    for (chip, (x, y)) in ["master", "slave"].iter().zip(a.iter().zip(b.iter())) {
        for (field, (p, q)) in PIC_FIELDS.iter().zip(x.iter().zip(y.iter())) {
            if p != q {
                out.push(format!("{chip}.{field}: {p:#04x} vs {q:#04x}"));
            }
        }
    }
    out
}

/// The `kvm_ioapic_state` bytes of an IOAPIC model's state (little-endian uAPI layout:
/// `base_address` u64, `ioregsel`, `id` (unshifted), `irr` (asserted lines minus delivered
/// edges), `pad` u32 each, then 24 raw 64-bit redirection entries), the same bytes as vm-apic's
/// `IoApicState::to_kvm_bytes` but available on every host.
pub fn ioapic_state_bytes(state: &vm_apic::IoApicState) -> [u8; IOAPIC_STATE_SIZE] {
    let mut bytes = [0u8; IOAPIC_STATE_SIZE];
    bytes[0..8].copy_from_slice(&state.base_address.to_le_bytes());
    bytes[8..12].copy_from_slice(&u32::from(state.ioregsel).to_le_bytes());
    bytes[12..16].copy_from_slice(&u32::from(state.id).to_le_bytes());
    bytes[16..20].copy_from_slice(&state.kvm_irr().to_le_bytes());
    for (pin, entry) in state.redirtbl.iter().enumerate() {
        bytes[24 + 8 * pin..32 + 8 * pin].copy_from_slice(&entry.0.to_le_bytes());
    }
    bytes
}

/// `size_of::<kvm_ioapic_state>()`.
pub const IOAPIC_STATE_SIZE: usize = 216;

fn le(bytes: &[u8], at: usize, len: usize) -> u64 {
    bytes.get(at..at + len).map_or(0, |b| b.iter().rev().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
}

/// Describes every field that differs between two `kvm_ioapic_state` snapshots.
pub fn ioapic_difference(a: &[u8], b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if a.len() != b.len() {
        out.push(format!("size {} vs {}", a.len(), b.len()));
        return out;
    }
    for (name, at, len) in
        [("base_address", 0, 8), ("ioregsel", 8, 4), ("id", 12, 4), ("irr", 16, 4), ("pad", 20, 4)]
    {
        let (x, y) = (le(a, at, len), le(b, at, len));
        if x != y {
            out.push(format!("ioapic.{name}: {x:#x} vs {y:#x}"));
        }
    }
    for pin in 0..24 {
        let (x, y) = (le(a, 24 + 8 * pin, 8), le(b, 24 + 8 * pin, 8));
        if x != y {
            out.push(format!("ioapic.redirtbl[{pin}]: {x:#018x} vs {y:#018x}"));
        }
    }
    out
}

/// The name of the `kvm_lapic_state` register at `offset` (a 16-byte slot).
pub fn lapic_register_name(offset: usize) -> String {
    let fixed = match offset {
        0x020 => "ID",
        0x030 => "VERSION",
        0x080 => "TPR",
        0x090 => "APR",
        0x0A0 => "PPR",
        0x0B0 => "EOI",
        0x0C0 => "RRD",
        0x0D0 => "LDR",
        0x0E0 => "DFR",
        0x0F0 => "SVR",
        0x280 => "ESR",
        0x2F0 => "LVT_CMCI",
        0x300 => "ICR",
        0x310 => "ICR2",
        0x320 => "LVT_TIMER",
        0x330 => "LVT_THERMAL",
        0x340 => "LVT_PERF",
        0x350 => "LVT_LINT0",
        0x360 => "LVT_LINT1",
        0x370 => "LVT_ERROR",
        0x380 => "TMICT",
        0x390 => "TMCCT",
        0x3E0 => "TDCR",
        0x3F0 => "SELF_IPI",
        _ => "",
    };
    match offset {
        _ if !fixed.is_empty() => fixed.to_string(),
        0x100..=0x170 => format!("ISR{}", (offset - 0x100) >> 4),
        0x180..=0x1F0 => format!("TMR{}", (offset - 0x180) >> 4),
        0x200..=0x270 => format!("IRR{}", (offset - 0x200) >> 4),
        _ => format!("slot {offset:#05x}"),
    }
}

/// Offset of the timer current count in `kvm_lapic_state`.
pub const LAPIC_TMCCT: usize = 0x390;
/// Offset of the version register in `kvm_lapic_state`.
pub const LAPIC_VERSION: usize = 0x30;

/// How two `kvm_lapic_state` pages may legitimately differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LapicTolerance {
    /// VERSION bits not compared: bit 24 (EOI-broadcast suppression) when one side is KVM's
    /// LAPIC in split mode, which advertises it (`kvm_apic_set_version`: x2APIC in CPUID and
    /// no in-kernel IOAPIC) while the kernel-irqchip reference does not.
    pub version_ignore: u32,
}

/// Describes every register that differs between two `kvm_lapic_state` pages, by name. The
/// timer current count (TMCCT) depends on when each snapshot was taken, so it is compared only
/// for being zero or not (a one-shot that expired, a stopped timer, TSC-deadline mode read 0).
pub fn lapic_difference(a: &[u8], b: &[u8], tolerance: LapicTolerance) -> Vec<String> {
    let mut out = Vec::new();
    if a.len() != b.len() {
        out.push(format!("size {} vs {}", a.len(), b.len()));
        return out;
    }
    for slot in (0..a.len()).step_by(16) {
        let (mut x, mut y) = (le(a, slot, 8) as u128 | (le(a, slot + 8, 8) as u128) << 64, 0u128);
        y |= le(b, slot, 8) as u128 | (le(b, slot + 8, 8) as u128) << 64;
        if slot == LAPIC_VERSION {
            x &= !u128::from(tolerance.version_ignore);
            y &= !u128::from(tolerance.version_ignore);
        }
        let same = if slot == LAPIC_TMCCT { (x == 0) == (y == 0) } else { x == y };
        if !same {
            let name = lapic_register_name(slot);
            if slot == LAPIC_TMCCT {
                out.push(format!("lapic.{name}: {x:#x} vs {y:#x} (compared as zero/non-zero)"));
            } else {
                out.push(format!("lapic.{name}: {x:#x} vs {y:#x}"));
            }
        }
    }
    out
}

/// The bytes of snapshot field `name`, as this module's difference functions name them (`lapic.IRR2`,
/// `ioapic.redirtbl[17]`, `master.irr`).
pub fn field_bytes<'a>(snapshot: &'a mut Snapshot, name: &str) -> Option<&'a mut [u8]> {
    if let Some(register) = name.strip_prefix("lapic.") {
        let slot = (0..0x400).step_by(16).find(|&slot| lapic_register_name(slot) == register)?;
        return snapshot.lapic.as_mut()?.get_mut(slot..slot + 16);
    }
    if let Some(pin) = name.strip_prefix("ioapic.redirtbl[").and_then(|p| p.strip_suffix(']')) {
        let pin: usize = pin.parse().ok()?;
        return snapshot.ioapic.as_mut()?.get_mut(24 + 8 * pin..32 + 8 * pin);
    }
    let (chip, field) = name.split_once('.')?;
    let chip = ["master", "slave"].iter().position(|c| *c == chip)?;
    let at = PIC_FIELDS.iter().position(|f| *f == field)?;
    snapshot.pic.as_mut()?.get_mut(chip)?.get_mut(at..=at)
}

/// Clears bits `mask` of field `field` of every snapshot labelled `label` (for state that
/// host timing decides, [`crate::scenario::Scenario::timing_dependent`]).
pub fn clear_bits(trace: &mut Trace, label: &str, field: &str, mask: u128) {
    for snapshot in trace.snapshots.iter_mut().filter(|s| s.label == label) {
        if let Some(bytes) = field_bytes(snapshot, field) {
            for (i, b) in bytes.iter_mut().enumerate() {
                *b &= !((mask >> (8 * i)) as u8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: u64) -> Trace {
        let entries = (0..n).map(|v| Entry { event: Event::Value(v), op: 0, seq: v as u32 }).collect();
        Trace { entries, ..Trace::default() }
    }

    #[test]
    fn a_long_log_is_summarised_by_its_ends_and_a_count() {
        let summary = values(1_000_000).summary();
        assert!(summary.len() < 600, "{} characters", summary.len());
        assert!(summary.starts_with("val:0x0 val:0x1 "), "{summary}");
        assert!(summary.ends_with("val:0xf423f (1000000 entries)"), "{summary}");
        assert!(summary.contains("999968 more"), "{summary}");
        assert_eq!(values(3).summary(), "val:0x0 val:0x1 val:0x2");
    }
}
