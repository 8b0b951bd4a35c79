//! The scenario language: what the probe guest executes and what the host does in between.
//!
//! A [`Scenario`] is a list of [`Op`]s for the boot vCPU (plus optional programs for
//! application processors), an initial [`EoiPolicy`] and the trace it must produce
//! ([`Expect`], per [`Profile`] where KVM's in-kernel PIC and the datasheet disagree).
//! Guest-side operations run in the probe guest (or the software backend's scripted CPU);
//! [`Op::Host`] makes the guest ring a doorbell and the host performs a [`HostOp`] before
//! the guest continues, so host actions are ordered exactly with the guest's.
//!
//! Interrupts are taken only between operations (operations that log a value run with
//! IF=0) and only while IF=1: after [`Op::Sti`], during [`Op::Wait`]. NMIs are taken at the
//! next VM entry whatever IF says: a scenario that raises one rings a doorbell
//! ([`Op::Host`]) before it logs anything else, so every backend logs the NMI at the same
//! place.
//!
//! Application processors either start directly in long mode with the boot vCPU
//! ([`ApStart::Running`]) or wait for the boot vCPU's INIT and start-up IPIs
//! ([`ApStart::WaitForSipi`]; the start-up vector must be [`SIPI_VECTOR`]).
//!
//! Scenarios also have a line-based text form ([`Scenario::to_text`], [`Scenario::parse`]),
//! which is how a shrunk property-test divergence is printed and replayed
//! (`cargo run --release -- replay FILE`).

use std::fmt::{self, Write as _};

/// Width of a port access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoWidth {
    /// 1 byte (`out dx, al`).
    Byte,
    /// 2 bytes.
    Word,
    /// 4 bytes.
    Dword,
}

impl IoWidth {
    /// Bytes in the access.
    pub fn bytes(self) -> usize {
        match self {
            IoWidth::Byte => 1,
            IoWidth::Word => 2,
            IoWidth::Dword => 4,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            IoWidth::Byte => "8",
            IoWidth::Word => "16",
            IoWidth::Dword => "32",
        }
    }
}

/// How the guest's interrupt handler ends an interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EoiPolicy {
    /// Not at all: the program sends its own EOIs.
    None,
    /// Non-specific EOI (OCW2 0x20) by port: to the slave (0xA0) when the vector is within
    /// `slave_base..slave_base + 8`, then to the master (0x20).
    Pic {
        /// The slave's vector base (ICW2).
        slave_base: u8,
    },
    /// Write 0 to the LAPIC EOI register (MMIO 0xFEE000B0).
    LapicMmio,
    /// `wrmsr` x2APIC EOI (MSR 0x80B) = 0.
    X2apicMsr,
}

/// A host-side action, performed while the guest waits at its doorbell.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostOp {
    /// Drive IRQ line `irq` to `level`: GSI `irq` (0–23) as KVM's default routing has it, the
    /// PIC's IRQ `irq` (0–15) and IOAPIC pin `irq` (0–23).
    SetIrq {
        /// Line number.
        irq: u8,
        /// New level.
        level: bool,
    },
    /// Raise then lower IRQ line `irq` (an edge).
    PulseIrq(u8),
    /// Let this many nanoseconds pass (real time on KVM backends, virtual time on software).
    Sleep(u64),
    /// Record the interrupt controllers' state under this label ([`crate::trace::Snapshot`]).
    Snapshot(String),
    /// Set the guest's virtual TSC to this value (a host write of IA32_TSC: TSC_ADJUST
    /// unchanged). Needs a backend whose models own MSR 0x10.
    SetGuestTsc(u64),
    /// Move the running guest to the other irqchip implementation (the `kvm-migrate` backend:
    /// KVM's in-kernel irqchip state into the models and a `kvm-userspace` VM, or back); a
    /// no-op on every other backend, so that the trace can be compared with theirs.
    Migrate,
}

/// One operation of a program.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `out`.
    Out {
        /// Port.
        port: u16,
        /// Access width.
        width: IoWidth,
        /// Value (the low `width` bytes are written).
        value: u32,
    },
    /// `in`; the value read is logged.
    In {
        /// Port.
        port: u16,
        /// Access width.
        width: IoWidth,
    },
    /// MMIO load; the value is logged.
    MmioRead {
        /// Guest-physical address (identity mapped).
        addr: u64,
        /// 8 bytes instead of 4.
        wide: bool,
    },
    /// MMIO store.
    MmioWrite {
        /// Guest-physical address.
        addr: u64,
        /// 8 bytes instead of 4.
        wide: bool,
        /// Value.
        value: u64,
    },
    /// `rdmsr`; the value is logged (or the #GP it raised).
    Rdmsr(u32),
    /// `wrmsr`.
    Wrmsr(u32, u64),
    /// `rdtsc`, then `wrmsr` of the TSC value plus this delta (a TSC deadline relative to
    /// now; nothing is logged).
    WrmsrTscDelta(u32, u64),
    /// `rdtsc`; the value is logged.
    Rdtsc,
    /// `sti`: pending interrupts are taken from the next operation on.
    Sti,
    /// `cli`.
    Cli,
    /// `sti; hlt; cli`: wait until an interrupt has been taken. IF is 0 afterwards.
    Wait,
    /// `mov cr8, value`.
    WriteCr8(u64),
    /// `mov rax, cr8`; the value is logged.
    ReadCr8,
    /// Log this value (a marker).
    Record(u64),
    /// Busy-loop this many iterations (at least 1).
    Spin(u64),
    /// `ud2` (#UD, which resumes at the next operation).
    Ud2,
    /// Change the interrupt handler's EOI policy.
    SetEoi(EoiPolicy),
    /// Jump back to operation `target` until the body (`target..=this`) ran `count` times.
    Loop {
        /// Index of the first operation of the body.
        target: usize,
        /// Times the body runs (at least 1).
        count: u64,
    },
    /// Ring the doorbell; the host performs the action, then the guest continues.
    Host(HostOp),
}

/// Which behaviour profile a backend's models have: Linux KVM's in-kernel irqchip (the kernel
/// itself, or each model's KVM profile) or the hardware documents: the 8259A and ICH IOxAPIC
/// (version 0x20, with the EOI register) datasheets and the Intel SDM for the local APIC and
/// the APIC bus. Backend names spell the second one `datasheet`; `sdm` is accepted as an
/// alias on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// KVM's behaviour.
    Kvm,
    /// The datasheets' and the SDM's behaviour.
    Datasheet,
}

impl Profile {
    /// The vm-pic quirks of this profile.
    pub fn quirks(self) -> vm_pic::Quirks {
        match self {
            Profile::Kvm => vm_pic::Quirks::KVM,
            Profile::Datasheet => vm_pic::Quirks::DATASHEET,
        }
    }

    /// The IOAPIC of this profile: KVM's (version 0x11, no EOI register) or the ICH IOxAPIC
    /// (version 0x20, EOI register at +0x40, datasheet behaviour otherwise).
    pub fn ioapic_config(self) -> vm_apic::IoApicConfig {
        match self {
            Profile::Kvm => vm_apic::IoApicConfig::KVM,
            Profile::Datasheet => vm_apic::IoApicConfig {
                version: vm_apic::ioapic::Version::V20,
                ..vm_apic::IoApicConfig::DATASHEET
            },
        }
    }

    /// The local APIC quirks of this profile.
    pub fn lapic_quirks(self) -> vm_apic::lapic::Quirks {
        match self {
            Profile::Kvm => vm_apic::lapic::Quirks::KVM,
            Profile::Datasheet => vm_apic::lapic::Quirks::SDM,
        }
    }

    /// The APIC bus routing of this profile.
    pub fn bus_quirks(self) -> vm_apic::bus::BusQuirks {
        match self {
            Profile::Kvm => vm_apic::bus::BusQuirks::KVM,
            Profile::Datasheet => vm_apic::bus::BusQuirks::SDM,
        }
    }

    /// Whether the local APICs advertise EOI-broadcast suppression (VERSION bit 24): only with
    /// an IOAPIC that has the EOI register (KVM stops advertising it with its in-kernel
    /// version-0x11 IOAPIC, `kvm_apic_set_version`).
    pub fn directed_eoi(self) -> bool {
        self == Profile::Datasheet
    }

    /// Whether the LAPIC models take SMIs: the SDM's processor has SMM; KVM on this machine
    /// kind has none (no `KVM_CAP_X86_SMM`, see `kvm-host-notes.md`), so its LAPIC refuses them.
    pub fn smm(self) -> bool {
        self == Profile::Datasheet
    }

    /// `kvm` or `datasheet`.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Kvm => "kvm",
            Profile::Datasheet => "datasheet",
        }
    }
}

/// An interrupt controller, for saying which device's profile an expectation follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// The 8259A pair.
    Pic,
    /// The I/O APIC.
    Ioapic,
    /// The local APICs (and the APIC bus between them).
    Lapic,
}

impl Device {
    /// `pic`, `ioapic` or `lapic`.
    pub fn name(self) -> &'static str {
        match self {
            Device::Pic => "pic",
            Device::Ioapic => "ioapic",
            Device::Lapic => "lapic",
        }
    }
}

/// How the application processors of a scenario start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ApStart {
    /// Already running their programs in long mode when the boot vCPU starts (as if firmware
    /// had brought them up).
    #[default]
    Running,
    /// Waiting for INIT and a start-up IPI with vector [`SIPI_VECTOR`] from the boot vCPU: the
    /// start-up IPI enters a real-mode trampoline at `SIPI_VECTOR << 12` that rings a doorbell,
    /// and the host then puts the AP in long mode at its program.
    WaitForSipi,
}

/// The start-up IPI vector of [`ApStart::WaitForSipi`] scenarios (trampoline at 0x9000).
pub const SIPI_VECTOR: u8 = 0x09;

/// One expected log entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expect {
    /// An interrupt with this vector.
    Irq(u8),
    /// An exception with this vector (the error code is not checked).
    Exception(u8),
    /// An NMI.
    Nmi,
    /// A read or recorded value, exactly.
    Value(u64),
    /// A value within `lo..=hi` (times, TSC readings).
    ValueIn(u64, u64),
}

/// What a scenario needs from a backend, derived from its operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Reads or writes IA32_TSC / IA32_TSC_ADJUST, or sets the virtual TSC.
    pub virtual_tsc: bool,
    /// Touches the LAPIC (MMIO page 0xFEE00000, x2APIC MSRs, CR8, LAPIC EOI policies).
    pub lapic: bool,
    /// Touches the IOAPIC (MMIO page 0xFEC00000).
    pub ioapic: bool,
    /// Programs the PIT (ports 0x40–0x43).
    pub pit: bool,
    /// Uses more than one vCPU.
    pub smp: bool,
    /// The APs wait for INIT/SIPI.
    pub sipi: bool,
    /// Moves the guest between backends ([`HostOp::Migrate`]).
    pub migrate: bool,
    /// Reads the LAPIC version register or sets SVR bit 12 (EOI-broadcast suppression), where
    /// KVM's LAPIC in split mode differs from the kernel irqchip's: it advertises directed EOI
    /// (VERSION bit 24) because the IOAPIC is in userspace.
    pub directed_eoi: bool,
}

/// A named program with the trace it must produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Name (unique among the built-in scenarios).
    pub name: String,
    /// One line on what it checks.
    pub description: String,
    /// The handler's EOI policy at start.
    pub eoi: EoiPolicy,
    /// The boot vCPU's program (an [`Op`] list; END is implied after the last).
    pub ops: Vec<Op>,
    /// Programs of the application processors.
    pub aps: Vec<Vec<Op>>,
    /// How the application processors start.
    pub ap_start: ApStart,
    /// The boot vCPU's expected log, on a backend with the KVM profile (`None`: the
    /// scenario is only compared between backends, e.g. a random one).
    pub expect: Option<Vec<Expect>>,
    /// The expected log on a datasheet-profile backend, where it differs.
    pub expect_datasheet: Option<Vec<Expect>>,
    /// The APs' expected logs (KVM profile), AP 1 first; `None`: each AP logs exactly the
    /// values of its [`Op::Record`]s.
    pub expect_aps: Option<Vec<Vec<Expect>>>,
    /// The APs' expected logs on a datasheet-profile backend, where they differ.
    pub expect_aps_datasheet: Option<Vec<Vec<Expect>>>,
    /// The devices whose datasheet profile the `*_datasheet` expectations describe (default:
    /// the PIC). A backend whose profile for these devices is mixed (`kvm-split/datasheet` has
    /// KVM's LAPIC) cannot be held to either expectation when it holds more than one.
    pub datasheet_devices: Vec<Device>,
    /// Snapshot bits that depend on host timing, not on the scenario, compared on no backend:
    /// (snapshot label, field as [`crate::trace`] names it, the bits). A timer that may
    /// fire once more between the guest's last `Wait` and the op that stops it leaves its
    /// vector in IRR or not, as the host's load decides.
    pub timing_dependent: Vec<TimingDependent>,
}

/// Bits of one snapshot field that host timing decides ([`Scenario::timing_dependent`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimingDependent {
    /// The snapshot's label.
    pub snapshot: String,
    /// The field (`lapic.IRR2`, `master.irr`, `ioapic.redirtbl[3]`).
    pub field: String,
    /// The bits left out of the comparison.
    pub mask: u128,
}

/// Where the scenario text form is malformed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column of the word that is wrong (the end of the line for a missing one).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
    }
}

/// An error at word `.0` of a line (0: the keyword).
type WordError = (usize, String);

impl std::error::Error for ParseError {}

/// Why a scenario is not well formed for running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidScenario(pub String);

impl fmt::Display for InvalidScenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidScenario {}

/// The LAPIC's MMIO page.
pub const LAPIC_PAGE: u64 = 0xFEE0_0000;
/// The IOAPIC's MMIO page.
pub const IOAPIC_PAGE: u64 = 0xFEC0_0000;

impl Scenario {
    /// A scenario with no expectations yet.
    pub fn new(name: &str, description: &str, eoi: EoiPolicy, ops: Vec<Op>) -> Self {
        Scenario {
            name: name.to_string(),
            description: description.to_string(),
            eoi,
            ops,
            aps: Vec::new(),
            ap_start: ApStart::Running,
            expect: None,
            expect_datasheet: None,
            expect_aps: None,
            expect_aps_datasheet: None,
            datasheet_devices: vec![Device::Pic],
            timing_dependent: Vec::new(),
        }
    }

    /// Adds an AP with `program` (AP n is vCPU n).
    pub fn ap(mut self, program: Vec<Op>) -> Self {
        self.aps.push(program);
        self
    }

    /// Makes the APs wait for INIT/SIPI.
    pub fn aps_wait_for_sipi(mut self) -> Self {
        self.ap_start = ApStart::WaitForSipi;
        self
    }

    /// Sets the APs' expected logs (both profiles).
    pub fn expect_aps(mut self, expect: Vec<Vec<Expect>>) -> Self {
        self.expect_aps = Some(expect);
        self
    }

    /// Sets the APs' expected logs on datasheet-profile backends.
    pub fn expect_aps_datasheet(mut self, expect: Vec<Vec<Expect>>) -> Self {
        self.expect_aps_datasheet = Some(expect);
        self
    }

    /// Leaves bits `mask` of field `field` of snapshot `snapshot` out of every comparison:
    /// host timing decides them (see [`Scenario::timing_dependent`]).
    pub fn timing_dependent(mut self, snapshot: &str, field: &str, mask: u128) -> Self {
        self.timing_dependent.push(TimingDependent { snapshot: snapshot.into(), field: field.into(), mask });
        self
    }

    /// Says which devices' datasheet profiles the datasheet expectations describe.
    pub fn datasheet_follows(mut self, devices: &[Device]) -> Self {
        self.datasheet_devices = devices.to_vec();
        self
    }

    /// AP `ap`'s (1-based) expected log for `profile`, if the scenario has one.
    pub fn expected_ap(&self, profile: Profile, ap: usize) -> Option<&[Expect]> {
        let index = ap.checked_sub(1)?;
        let kvm = self.expect_aps.as_ref().and_then(|all| all.get(index)).map(Vec::as_slice);
        match profile {
            Profile::Datasheet => {
                self.expect_aps_datasheet.as_ref().and_then(|all| all.get(index)).map(Vec::as_slice).or(kvm)
            }
            Profile::Kvm => kvm,
        }
    }

    /// Whether the scenario has any datasheet-specific expectation.
    pub fn has_datasheet_expectation(&self) -> bool {
        self.expect_datasheet.is_some() || self.expect_aps_datasheet.is_some()
    }

    /// Sets the expected log (both profiles).
    pub fn expect(mut self, expect: Vec<Expect>) -> Self {
        self.expect = Some(expect);
        self
    }

    /// Sets the expected log of datasheet-profile backends.
    pub fn expect_datasheet(mut self, expect: Vec<Expect>) -> Self {
        self.expect_datasheet = Some(expect);
        self
    }

    /// The expected log for a backend of `profile`.
    pub fn expected(&self, profile: Profile) -> Option<&[Expect]> {
        match profile {
            Profile::Datasheet => self.expect_datasheet.as_deref().or(self.expect.as_deref()),
            Profile::Kvm => self.expect.as_deref(),
        }
    }

    /// Every program: the boot vCPU's, then the APs'.
    pub fn programs(&self) -> impl Iterator<Item = &[Op]> {
        std::iter::once(self.ops.as_slice()).chain(self.aps.iter().map(Vec::as_slice))
    }

    /// What the scenario needs from a backend.
    pub fn needs(&self) -> Needs {
        let mut needs = Needs {
            smp: !self.aps.is_empty(),
            sipi: !self.aps.is_empty() && self.ap_start == ApStart::WaitForSipi,
            ..Needs::default()
        };
        let mut eoi = vec![self.eoi];
        for op in self.programs().flatten() {
            match op {
                Op::Out { port, .. } | Op::In { port, .. } => needs.pit |= (0x40..=0x43).contains(port),
                Op::MmioRead { addr, .. } | Op::MmioWrite { addr, .. } => {
                    needs.lapic |= addr & !0xFFF == LAPIC_PAGE;
                    needs.ioapic |= addr & !0xFFF == IOAPIC_PAGE;
                }
                Op::Rdmsr(msr) | Op::Wrmsr(msr, _) | Op::WrmsrTscDelta(msr, _) => {
                    needs.virtual_tsc |= matches!(msr, 0x10 | 0x3B);
                    needs.lapic |= matches!(msr, 0x1B | 0x6E0 | 0x800..=0x8FF);
                }
                _ => {}
            }
            match op {
                Op::MmioRead { addr: 0xFEE0_0030, .. } | Op::Rdmsr(0x803) => needs.directed_eoi = true,
                Op::MmioWrite { addr: 0xFEE0_00F0, value, .. } | Op::Wrmsr(0x80F, value) => {
                    needs.directed_eoi |= value & 0x1000 != 0
                }
                Op::WriteCr8(_) | Op::ReadCr8 => needs.lapic = true,
                Op::SetEoi(policy) => eoi.push(*policy),
                Op::Host(HostOp::SetGuestTsc(_)) => needs.virtual_tsc = true,
                Op::Host(HostOp::Migrate) => needs.migrate = true,
                _ => {}
            }
        }
        needs.lapic |= eoi.iter().any(|p| matches!(p, EoiPolicy::LapicMmio | EoiPolicy::X2apicMsr));
        needs
    }

    /// Checks what the guest and the backends cannot run: widths, loop targets, sizes.
    pub fn validate(&self, max_ops: usize) -> Result<(), InvalidScenario> {
        if self.aps.len() + 1 > crate::MAX_VCPUS {
            return Err(InvalidScenario(format!(
                "{} vCPUs requested, the probe guest has room for {}",
                self.aps.len() + 1,
                crate::MAX_VCPUS
            )));
        }
        for (cpu, program) in self.programs().enumerate() {
            if program.len() + 1 > max_ops {
                return Err(InvalidScenario(format!(
                    "vCPU {cpu}: {} operations, the mailbox holds {}",
                    program.len(),
                    max_ops - 1
                )));
            }
            for (i, op) in program.iter().enumerate() {
                let bad = |what: &str| Err(InvalidScenario(format!("vCPU {cpu} op {i} ({op:?}): {what}")));
                match op {
                    Op::Loop { target, count } if *target > i || *count == 0 => {
                        return bad("a loop must jump back and run at least once")
                    }
                    Op::Spin(0) => return bad("spin count must be at least 1"),
                    Op::Host(HostOp::SetIrq { irq, .. } | HostOp::PulseIrq(irq)) if *irq > 23 => {
                        return bad("IRQ lines are 0-23")
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The text form: one directive per line (see [`Scenario::parse`]).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "scenario {}", self.name);
        if !self.description.is_empty() {
            let _ = writeln!(s, "# {}", self.description);
        }
        let _ = writeln!(s, "eoi {}", eoi_text(self.eoi));
        if self.ap_start == ApStart::WaitForSipi {
            let _ = writeln!(s, "ap-start sipi");
        }
        if self.datasheet_devices != [Device::Pic] {
            let names: Vec<&str> = self.datasheet_devices.iter().map(|d| d.name()).collect();
            let _ = writeln!(s, "datasheet-follows {}", names.join(" "));
        }
        for t in &self.timing_dependent {
            let _ = writeln!(s, "timing-dependent {} {} {:#x}", t.snapshot, t.field, t.mask);
        }
        for (cpu, program) in self.programs().enumerate() {
            if cpu > 0 {
                let _ = writeln!(s, "ap");
            }
            for op in program {
                let _ = writeln!(s, "{}", op_text(op));
            }
        }
        for (keyword, expect) in [("expect", &self.expect), ("expect-datasheet", &self.expect_datasheet)] {
            if let Some(expect) = expect {
                let items: Vec<String> = expect.iter().map(expect_text).collect();
                let _ = writeln!(s, "{keyword} {}", items.join(" "));
            }
        }
        for (keyword, expect) in
            [("expect-ap", &self.expect_aps), ("expect-ap-datasheet", &self.expect_aps_datasheet)]
        {
            for (i, ap) in expect.iter().flatten().enumerate() {
                let items: Vec<String> = ap.iter().map(expect_text).collect();
                let _ = writeln!(s, "{keyword} {} {}", i + 1, items.join(" "));
            }
        }
        s
    }

    /// Parses the text form:
    ///
    /// ```text
    /// scenario NAME
    /// # description (first comment line)
    /// eoi none|pic SLAVE_BASE|lapic|x2apic
    /// out8|out16|out32 PORT VALUE     in8|in16|in32 PORT
    /// mmio-read32|mmio-read64 ADDR    mmio-write32|mmio-write64 ADDR VALUE
    /// rdmsr MSR   wrmsr MSR VALUE   rdtsc   sti   cli   wait   cr8-write V   cr8-read
    /// record V   spin N   ud2   set-eoi POLICY...   loop TARGET COUNT
    /// host irq IRQ 0|1   host pulse IRQ   host sleep NS   host snapshot LABEL   host tsc VALUE
    /// wrmsr-tsc-delta MSR DELTA   host migrate
    /// ap                              (the following operations are the next AP's program)
    /// ap-start running|sipi           datasheet-follows pic|ioapic|lapic...
    /// timing-dependent LABEL FIELD MASK   (snapshot bits no backend compares)
    /// expect ITEM...   expect-datasheet ITEM...   ITEM = irq:V exc:V nmi val:V val:LO..HI
    /// expect-ap N ITEM...   expect-ap-datasheet N ITEM...   (N: the AP, 1-based)
    /// ```
    ///
    /// Numbers are decimal or 0x-prefixed hexadecimal.
    pub fn parse(text: &str) -> Result<Scenario, ParseError> {
        let mut scenario = Scenario::new("unnamed", "", EoiPolicy::None, Vec::new());
        let mut program: usize = 0;
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let trimmed = raw.trim_end();
            if let Some(comment) = trimmed.trim_start().strip_prefix('#') {
                if scenario.description.is_empty() {
                    scenario.description = comment.trim().to_string();
                }
                continue;
            }
            // Each word with its 1-based column.
            let mut words: Vec<&str> = Vec::new();
            let mut columns: Vec<usize> = Vec::new();
            let mut at = 0;
            for word in trimmed.split_whitespace() {
                let offset = trimmed[at..].find(word).map_or(at, |o| at + o);
                columns.push(trimmed[..offset].chars().count() + 1);
                at = offset + word.len();
                words.push(word);
            }
            let end = trimmed.chars().count() + 2;
            let located = |(word, message): WordError| ParseError {
                line,
                column: columns.get(word).copied().unwrap_or(end),
                message,
            };
            if words.is_empty() {
                continue;
            }
            Self::parse_line(&mut scenario, &mut program, &words).map_err(located)?;
        }
        if scenario.aps.len() >= crate::MAX_VCPUS {
            return Err(ParseError {
                line: text.lines().count(),
                column: 1,
                message: format!(
                    "{} application processors: a scenario has at most {} vCPUs",
                    scenario.aps.len(),
                    crate::MAX_VCPUS
                ),
            });
        }
        Ok(scenario)
    }

    /// One line of the text form, split into words.
    fn parse_line(scenario: &mut Scenario, program: &mut usize, words: &[&str]) -> Result<(), WordError> {
        let Some((&keyword, args)) = words.split_first() else { return Ok(()) };
        // Errors of the whole line point at the keyword; of one argument, at it.
        let at = |i: usize| move |message: String| (i + 1, message);
        let none_after = |n: usize| match args.get(n) {
            Some(extra) => Err((n + 1, format!("unexpected `{extra}` after `{keyword}`"))),
            None => Ok(()),
        };
        match keyword {
            "scenario" => {
                scenario.name = args.first().ok_or((1, "scenario needs a name".to_string()))?.to_string();
                none_after(1)?;
            }
            "eoi" => scenario.eoi = parse_eoi(args, 0)?,
            "ap" => {
                none_after(0)?;
                scenario.aps.push(Vec::new());
                *program += 1;
            }
            "ap-start" => {
                scenario.ap_start = match args.first().copied() {
                    Some("running") => ApStart::Running,
                    Some("sipi") => ApStart::WaitForSipi,
                    other => return Err((1, format!("unknown AP start {other:?} (running or sipi)"))),
                };
                none_after(1)?;
            }
            "timing-dependent" => {
                let snapshot = arg(args, 0, "snapshot label")?.to_string();
                let field = arg(args, 1, "field")?.to_string();
                let mask = num(args, 2, "mask")?;
                none_after(3)?;
                scenario.timing_dependent.push(TimingDependent { snapshot, field, mask });
            }
            "datasheet-follows" => {
                scenario.datasheet_devices = args
                    .iter()
                    .enumerate()
                    .map(|(i, a)| match *a {
                        "pic" => Ok(Device::Pic),
                        "ioapic" => Ok(Device::Ioapic),
                        "lapic" => Ok(Device::Lapic),
                        other => Err((i + 1, format!("unknown device `{other}` (pic, ioapic or lapic)"))),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "expect-ap" | "expect-ap-datasheet" => {
                let (n, items) = args.split_first().ok_or((1, "missing AP number".to_string()))?;
                let n: usize = narrow(n).map_err(at(0))?;
                let items = items
                    .iter()
                    .enumerate()
                    .map(|(i, a)| parse_expect(a).map_err(at(i + 1)))
                    .collect::<Result<Vec<_>, _>>()?;
                let slot = if keyword == "expect-ap" {
                    &mut scenario.expect_aps
                } else {
                    &mut scenario.expect_aps_datasheet
                };
                let all = slot.get_or_insert_with(Vec::new);
                if n == 0 || n != all.len() + 1 {
                    return Err((1, format!("{keyword} {n}: APs are numbered 1, 2, ... in order")));
                }
                all.push(items);
            }
            "expect" | "expect-datasheet" => {
                let items = args
                    .iter()
                    .enumerate()
                    .map(|(i, a)| parse_expect(a).map_err(at(i)))
                    .collect::<Result<Vec<_>, _>>()?;
                if keyword == "expect" {
                    scenario.expect = Some(items);
                } else {
                    scenario.expect_datasheet = Some(items);
                }
            }
            _ => {
                let (op, used) = parse_op(keyword, args)?;
                none_after(used)?;
                match *program {
                    0 => scenario.ops.push(op),
                    n => scenario.aps[n - 1].push(op),
                }
            }
        }
        Ok(())
    }
}

fn eoi_text(policy: EoiPolicy) -> String {
    match policy {
        EoiPolicy::None => "none".into(),
        EoiPolicy::Pic { slave_base } => format!("pic {slave_base:#04x}"),
        EoiPolicy::LapicMmio => "lapic".into(),
        EoiPolicy::X2apicMsr => "x2apic".into(),
    }
}

fn op_text(op: &Op) -> String {
    match op {
        Op::Out { port, width, value } => format!("out{} {port:#x} {value:#x}", width.suffix()),
        Op::In { port, width } => format!("in{} {port:#x}", width.suffix()),
        Op::MmioRead { addr, wide } => format!("mmio-read{} {addr:#x}", if *wide { 64 } else { 32 }),
        Op::MmioWrite { addr, wide, value } => {
            format!("mmio-write{} {addr:#x} {value:#x}", if *wide { 64 } else { 32 })
        }
        Op::Rdmsr(msr) => format!("rdmsr {msr:#x}"),
        Op::Wrmsr(msr, value) => format!("wrmsr {msr:#x} {value:#x}"),
        Op::WrmsrTscDelta(msr, delta) => format!("wrmsr-tsc-delta {msr:#x} {delta:#x}"),
        Op::Rdtsc => "rdtsc".into(),
        Op::Sti => "sti".into(),
        Op::Cli => "cli".into(),
        Op::Wait => "wait".into(),
        Op::WriteCr8(v) => format!("cr8-write {v:#x}"),
        Op::ReadCr8 => "cr8-read".into(),
        Op::Record(v) => format!("record {v:#x}"),
        Op::Spin(n) => format!("spin {n}"),
        Op::Ud2 => "ud2".into(),
        Op::SetEoi(p) => format!("set-eoi {}", eoi_text(*p)),
        Op::Loop { target, count } => format!("loop {target} {count}"),
        Op::Host(HostOp::SetIrq { irq, level }) => format!("host irq {irq} {}", u8::from(*level)),
        Op::Host(HostOp::PulseIrq(irq)) => format!("host pulse {irq}"),
        Op::Host(HostOp::Sleep(ns)) => format!("host sleep {ns}"),
        Op::Host(HostOp::Snapshot(label)) => format!("host snapshot {label}"),
        Op::Host(HostOp::SetGuestTsc(v)) => format!("host tsc {v:#x}"),
        Op::Host(HostOp::Migrate) => "host migrate".into(),
    }
}

fn expect_text(e: &Expect) -> String {
    match e {
        Expect::Irq(v) => format!("irq:{v:#04x}"),
        Expect::Exception(v) => format!("exc:{v}"),
        Expect::Nmi => "nmi".into(),
        Expect::Value(v) => format!("val:{v:#x}"),
        Expect::ValueIn(lo, hi) => format!("val:{lo:#x}..{hi:#x}"),
    }
}

fn number(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("`{s}` is not a number"))
}

fn narrow<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    T::try_from(number(s)?).map_err(|_| format!("`{s}` is out of range"))
}

/// Argument `i` (0-based, after the keyword) or an error pointing past the line.
fn arg<'a>(args: &[&'a str], i: usize, what: &str) -> Result<&'a str, WordError> {
    args.get(i).copied().ok_or_else(|| (i + 1, format!("missing {what}")))
}

/// Argument `i` as a number of type `T`.
fn num<T: TryFrom<u64>>(args: &[&str], i: usize, what: &str) -> Result<T, WordError> {
    narrow(arg(args, i, what)?).map_err(|e| (i + 1, e))
}

/// An EOI policy from `args[first..]`.
fn parse_eoi(args: &[&str], first: usize) -> Result<EoiPolicy, WordError> {
    let policy = match args.get(first).copied() {
        Some("none") => EoiPolicy::None,
        Some("pic") => EoiPolicy::Pic { slave_base: num(args, first + 1, "slave vector base")? },
        Some("lapic") => EoiPolicy::LapicMmio,
        Some("x2apic") => EoiPolicy::X2apicMsr,
        other => {
            return Err((first + 1, format!("unknown EOI policy {other:?} (none, pic BASE, lapic, x2apic)")))
        }
    };
    let used = first + if matches!(policy, EoiPolicy::Pic { .. }) { 2 } else { 1 };
    match args.get(used) {
        Some(extra) => Err((used + 1, format!("unexpected `{extra}` after the EOI policy"))),
        None => Ok(policy),
    }
}

fn parse_expect(item: &str) -> Result<Expect, String> {
    let (tag, value) = item.split_once(':').unwrap_or((item, ""));
    match tag {
        "irq" => Ok(Expect::Irq(narrow(value)?)),
        "exc" => Ok(Expect::Exception(narrow(value)?)),
        "nmi" if value.is_empty() => Ok(Expect::Nmi),
        "val" => match value.split_once("..") {
            Some((lo, hi)) => Ok(Expect::ValueIn(number(lo)?, number(hi)?)),
            None => Ok(Expect::Value(number(value)?)),
        },
        _ => Err(format!("unknown expectation `{item}` (irq:V exc:V nmi val:V val:LO..HI)")),
    }
}

/// The longest host sleep a scenario may ask for: half the KVM backends' wall-clock bound
/// per run ([`crate::backend::RunOptions::timeout`]).
pub const MAX_HOST_SLEEP_NS: u64 = 10_000_000_000;

/// The highest line number a host action can drive: GSIs 0–23 (PIC IRQs are 0–15).
const MAX_IRQ: u8 = 23;

/// An operation and how many arguments it took.
fn parse_op(keyword: &str, args: &[&str]) -> Result<(Op, usize), WordError> {
    let irq = |i: usize| -> Result<u8, WordError> {
        let irq: u8 = num(args, i, "IRQ")?;
        if irq > MAX_IRQ {
            return Err((i + 1, format!("IRQ {irq} does not exist (lines 0-{MAX_IRQ})")));
        }
        Ok(irq)
    };
    let width = match keyword {
        "out8" | "in8" => IoWidth::Byte,
        "out16" | "in16" => IoWidth::Word,
        _ => IoWidth::Dword,
    };
    Ok(match keyword {
        "out8" | "out16" | "out32" => {
            (Op::Out { port: num(args, 0, "port")?, width, value: num(args, 1, "value")? }, 2)
        }
        "in8" | "in16" | "in32" => (Op::In { port: num(args, 0, "port")?, width }, 1),
        "mmio-read32" | "mmio-read64" => {
            (Op::MmioRead { addr: num(args, 0, "address")?, wide: keyword.ends_with("64") }, 1)
        }
        "mmio-write32" | "mmio-write64" => (
            Op::MmioWrite {
                addr: num(args, 0, "address")?,
                wide: keyword.ends_with("64"),
                value: num(args, 1, "value")?,
            },
            2,
        ),
        "rdmsr" => (Op::Rdmsr(num(args, 0, "MSR")?), 1),
        "wrmsr" => (Op::Wrmsr(num(args, 0, "MSR")?, num(args, 1, "value")?), 2),
        "wrmsr-tsc-delta" => (Op::WrmsrTscDelta(num(args, 0, "MSR")?, num(args, 1, "delta")?), 2),
        "rdtsc" => (Op::Rdtsc, 0),
        "sti" => (Op::Sti, 0),
        "cli" => (Op::Cli, 0),
        "wait" => (Op::Wait, 0),
        "cr8-write" => (Op::WriteCr8(num(args, 0, "value")?), 1),
        "cr8-read" => (Op::ReadCr8, 0),
        "record" => (Op::Record(num(args, 0, "value")?), 1),
        "spin" => (Op::Spin(num(args, 0, "count")?), 1),
        "ud2" => (Op::Ud2, 0),
        "set-eoi" => (Op::SetEoi(parse_eoi(args, 0)?), args.len()),
        "loop" => (Op::Loop { target: num(args, 0, "target")?, count: num(args, 1, "count")? }, 2),
        "host" => match arg(args, 0, "host action")? {
            "irq" => {
                let level = match arg(args, 2, "level")? {
                    "0" => false,
                    "1" => true,
                    other => return Err((3, format!("level `{other}` is neither 0 nor 1"))),
                };
                (Op::Host(HostOp::SetIrq { irq: irq(1)?, level }), 3)
            }
            "pulse" => (Op::Host(HostOp::PulseIrq(irq(1)?)), 2),
            "sleep" => {
                let ns: u64 = num(args, 1, "ns")?;
                if ns > MAX_HOST_SLEEP_NS {
                    return Err((2, format!("host sleep {ns} ns: at most {MAX_HOST_SLEEP_NS} ns (10 s)")));
                }
                (Op::Host(HostOp::Sleep(ns)), 2)
            }
            "snapshot" => (Op::Host(HostOp::Snapshot(arg(args, 1, "label")?.to_string())), 2),
            "tsc" => (Op::Host(HostOp::SetGuestTsc(num(args, 1, "value")?)), 2),
            "migrate" => (Op::Host(HostOp::Migrate), 1),
            other => {
                return Err((
                    1,
                    format!("unknown host action `{other}` (irq, pulse, sleep, snapshot, tsc, migrate)"),
                ))
            }
        },
        other => return Err((0, format!("unknown operation `{other}`"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error `text` gives, as "line:column: message".
    fn error_of(text: &str) -> String {
        let e = Scenario::parse(text).unwrap_err();
        format!("{}:{}: {}", e.line, e.column, e.message)
    }

    #[test]
    fn malformed_lines_are_errors_at_their_line_and_column() {
        // A word that only starts like an operation is not one.
        assert_eq!(error_of("scenario s\ninfo hello\n"), "2:1: unknown operation `info`");
        assert_eq!(error_of("scenario s\n  outb 0x20 1\n"), "2:3: unknown operation `outb`");
        // Line numbers that do not exist are refused when read, not per backend later.
        assert_eq!(error_of("host pulse 99"), "1:12: IRQ 99 does not exist (lines 0-23)");
        assert_eq!(error_of("host irq 3 2"), "1:12: level `2` is neither 0 nor 1");
        // Extra words are errors, not ignored.
        assert_eq!(error_of("sti now"), "1:5: unexpected `now` after `sti`");
        assert_eq!(error_of("out8 0x20 0x11 0x12"), "1:16: unexpected `0x12` after `out8`");
        // A missing argument points past the end of the line.
        assert_eq!(error_of("rdmsr"), "1:7: missing MSR");
        assert_eq!(error_of("in8 0x10000"), "1:5: `0x10000` is out of range");
        // Host sleeps are bounded, and so is the vCPU count.
        assert!(error_of("host sleep 18446744073709551615").starts_with("1:12: host sleep"));
        assert!(error_of("ap\nap\nap\nap\n").contains("at most 4 vCPUs"));
    }

    #[test]
    fn text_form_round_trips_every_operation() {
        let ops = vec![
            Op::Out { port: 0x20, width: IoWidth::Byte, value: 0x11 },
            Op::Out { port: 0x4d0, width: IoWidth::Word, value: 0x0800 },
            Op::In { port: 0x21, width: IoWidth::Dword },
            Op::MmioRead { addr: 0xFEE0_0030, wide: false },
            Op::MmioWrite { addr: 0xFEC0_0000, wide: true, value: 0x10 },
            Op::Rdmsr(0x10),
            Op::Wrmsr(0x3B, 1 << 40),
            Op::WrmsrTscDelta(0x6E0, 2_000_000),
            Op::Rdtsc,
            Op::Sti,
            Op::Cli,
            Op::Wait,
            Op::WriteCr8(3),
            Op::ReadCr8,
            Op::Record(7),
            Op::Spin(10),
            Op::Ud2,
            Op::SetEoi(EoiPolicy::Pic { slave_base: 0x38 }),
            Op::Loop { target: 0, count: 3 },
            Op::Host(HostOp::SetIrq { irq: 11, level: true }),
            Op::Host(HostOp::PulseIrq(4)),
            Op::Host(HostOp::Sleep(1000)),
            Op::Host(HostOp::Snapshot("end".into())),
            Op::Host(HostOp::SetGuestTsc(5)),
            Op::Host(HostOp::Migrate),
        ];
        let mut scenario = Scenario::new("all-ops", "every operation once", EoiPolicy::X2apicMsr, ops)
            .expect(vec![Expect::Irq(0x30), Expect::Exception(13), Expect::Nmi, Expect::Value(1)])
            .expect_datasheet(vec![Expect::ValueIn(1, 9)]);
        scenario.aps.push(vec![Op::Record(1)]);
        assert_eq!(Scenario::parse(&scenario.to_text()).unwrap(), scenario);
        let scenario = scenario
            .aps_wait_for_sipi()
            .datasheet_follows(&[Device::Lapic, Device::Ioapic])
            .timing_dependent("end", "lapic.IRR2", 1 << 1)
            .expect_aps(vec![vec![Expect::Irq(0x70), Expect::Value(1)]])
            .expect_aps_datasheet(vec![vec![Expect::Nmi]]);
        assert_eq!(Scenario::parse(&scenario.to_text()).unwrap(), scenario);
    }

    #[test]
    fn malformed_text_names_the_line() {
        let err = Scenario::parse("scenario x\nout8 0x20\n").unwrap_err();
        assert_eq!((err.line, err.message.as_str()), (2, "missing value"));
        let err = Scenario::parse("frobnicate 1\n").unwrap_err();
        assert_eq!(err.line, 1);
        let err = Scenario::parse("out8 0x10000 1\n").unwrap_err();
        assert!(err.message.contains("out of range"), "{err}");
    }

    #[test]
    fn needs_follow_from_the_operations() {
        let s = Scenario::new("n", "", EoiPolicy::None, vec![Op::Rdmsr(0x10), Op::ReadCr8]);
        assert_eq!(s.needs(), Needs { virtual_tsc: true, lapic: true, ..Needs::default() });
        let s = Scenario::new("n", "", EoiPolicy::None, vec![Op::Host(HostOp::Migrate)])
            .ap(vec![Op::Wait])
            .aps_wait_for_sipi();
        assert_eq!(s.needs(), Needs { smp: true, sipi: true, migrate: true, ..Needs::default() });
        let s = Scenario::new(
            "n",
            "",
            EoiPolicy::LapicMmio,
            vec![Op::Out { port: 0x43, width: IoWidth::Byte, value: 0x34 }],
        );
        assert_eq!(s.needs(), Needs { lapic: true, pit: true, ..Needs::default() });
    }

    #[test]
    fn a_forward_loop_is_refused() {
        let s = Scenario::new("l", "", EoiPolicy::None, vec![Op::Loop { target: 1, count: 2 }, Op::Sti]);
        assert!(s.validate(100).is_err());
    }
}
