//! The scenario text form: [`Scenario::to_text`] and [`Scenario::parse`].

use std::fmt::Write as _;

use super::*;

impl Scenario {
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
pub(crate) const MAX_IRQ: u8 = 23;

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
