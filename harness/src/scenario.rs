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

use std::fmt;

mod text;

pub use text::MAX_HOST_SLEEP_NS;

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
                    Op::Host(HostOp::SetIrq { irq, .. } | HostOp::PulseIrq(irq)) if *irq > text::MAX_IRQ => {
                        return bad("IRQ lines are 0-23")
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}
