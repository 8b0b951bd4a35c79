//! Known divergences, each stated as the exact difference it expects.
//!
//! A [`Known`] entry names one scenario, the backends on which it diverges, and what it changes:
//! which log entries of which vCPU read which value instead of the expected one
//! ([`EntryDiff`]), which snapshot fields hold which value ([`FieldDiff`]), and whether the run
//! stops at the progress watchdog after a given number of entries ([`Known::hang_after`]).
//! Only that difference is excused: a run is judged by undoing the named differences and
//! holding what remains to the scenario's expectation, bit for bit. Anything else in the cell
//! (another entry, another value, a hang the entry does not name, a named difference that did
//! not show) is a failure.
//!
//! Every entry cites a [`Cause`] by its tag, a stable name chosen once (never derived from
//! the text, so editing a reason renames nothing). Host causes apply only where their
//! detection says this host has them ([`Cause::applies`]).

use crate::backend::{host, BackendId, RunError, RunOutput};
use crate::scenario::{Profile, Scenario};
use crate::trace::{field_bytes, Event, Trace};

/// Why a known divergence happens.
#[derive(Clone, Copy, Debug)]
pub struct Cause {
    /// Stable name, cited in the report.
    pub tag: &'static str,
    /// What differs and why.
    pub reason: &'static str,
    /// Whether this host shows it (host causes are detected at run time; model causes always
    /// apply).
    pub applies: fn() -> bool,
}

/// One log entry that a divergence changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryDiff {
    /// The vCPU whose log it is.
    pub vcpu: usize,
    /// Position in the log.
    pub entry: usize,
    /// What the expectation (and a backend without the divergence) logs there.
    pub expected: Event,
    /// What the diverging backend logs there.
    pub got: Event,
}

/// One snapshot field that a divergence changes, as [`crate::trace`] names the fields
/// (`lapic.ISR3`, `ioapic.redirtbl[17]`, `master.irr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldDiff {
    /// The vCPU that took the snapshot.
    pub vcpu: usize,
    /// The snapshot's label.
    pub snapshot: &'static str,
    /// The field.
    pub field: &'static str,
    /// Its value on a backend without the divergence.
    pub expected: u128,
    /// Its value on the diverging backend.
    pub got: u128,
}

/// A known divergence: on `backends`, `scenario` differs from its expectation by exactly
/// `entries`, `fields` and `hang_after`.
#[derive(Clone, Copy, Debug)]
pub struct Known {
    /// The [`Cause`] (its tag).
    pub cause: &'static str,
    /// The built-in scenario.
    pub scenario: &'static str,
    /// Full backend names.
    pub backends: &'static [&'static str],
    /// Log entries that differ.
    pub entries: &'static [EntryDiff],
    /// Snapshot fields that differ.
    pub fields: &'static [FieldDiff],
    /// vCPU 0 stops making progress after this many log entries: the run ends at the
    /// progress watchdog, with exactly these entries logged.
    pub hang_after: Option<usize>,
    /// One outcome of a race on the host: a run shows exactly this difference, or exactly
    /// another entry of the same scenario and backend, or passes its expectation.
    pub race: bool,
}

impl Known {
    /// The cause it cites.
    pub fn cause(&self) -> &'static Cause {
        cause(self.cause).unwrap_or(&UNKNOWN_CAUSE)
    }
}

const UNKNOWN_CAUSE: Cause = Cause { tag: "?", reason: "a known divergence cites no cause", applies: never };

fn always() -> bool {
    true
}

fn never() -> bool {
    false
}

/// The cause with tag `tag`.
pub fn cause(tag: &str) -> Option<&'static Cause> {
    CAUSES.iter().find(|c| c.tag == tag)
}

/// The known divergences of `scenario` on backend `id` on this host: none, one, or the
/// alternatives of a host race.
pub fn find_all(scenario: &str, id: BackendId) -> Vec<&'static Known> {
    let name = id.to_string();
    KNOWN
        .iter()
        .filter(|k| k.scenario == scenario && k.backends.contains(&name.as_str()) && (k.cause().applies)())
        .collect()
}

/// The (first) known divergence of `scenario` on backend `id` on this host, if any.
pub fn find(scenario: &str, id: BackendId) -> Option<&'static Known> {
    find_all(scenario, id).into_iter().next()
}

/// Tag of [`host::LAPIC_EOI_AT_DELIVERY`].
pub const PVM_EOI_AT_DELIVERY: &str = "pvm-eoi-at-delivery";
/// Tag of [`host::EOI_EXIT_LOST_IN_HLT`].
pub const PVM_EOI_EXIT_LOST_IN_HLT: &str = "pvm-eoi-exit-lost-in-hlt";

/// Every cause of a known divergence.
pub const CAUSES: &[Cause] = &[
    Cause {
        tag: PVM_EOI_AT_DELIVERY,
        reason: host::LAPIC_EOI_AT_DELIVERY,
        applies: host::lapic_ends_interrupts_at_delivery,
    },
    Cause {
        tag: PVM_EOI_EXIT_LOST_IN_HLT,
        reason: host::EOI_EXIT_LOST_IN_HLT,
        applies: host::lapic_ends_interrupts_at_delivery,
    },
    Cause {
        tag: "timer-reserved-mode",
        reason: "in LVT timer mode 11b (reserved) a TMICT write stops vm-apic's countdown \
            (TimerState::start: expiry None, TMCCT 0), while KVM keeps the previous one-shot's period and \
            target (start_apic_timer sets neither in that mode) and TMCCT reads the old count, non-zero; \
            found by the random APIC test",
        applies: always,
    },
    Cause {
        tag: "apicv-self-ipi-stale-tmr",
        reason: "APICv's self-IPI virtualization only sets VIRR (SDM \"Self-IPI Virtualization\"): VTMR \
            keeps the level bit of the vector's last level-triggered acceptance, which a LAPIC clears when \
            it accepts the edge self-IPI, so the guest reads TMR = 1 and its EOI (an EOI-exit bitmap vector) \
            is forwarded to the IOAPIC as a level EOI; KVM with APICv does the same (kvm_ioapic_send_eoi \
            reads TMR from the virtual-APIC page). Hardware behaviour, not a model bug",
        applies: always,
    },
    Cause {
        tag: "apicv-self-ipi-disabled-apic",
        reason: "APICv's self-IPI virtualization does not look at the virtual SVR: with the APIC \
            software-disabled, a LAPIC refuses the fixed self-IPI, the processor sets VIRR (and would \
            deliver it); KVM keeps APICv active on a software-disabled APIC (no inhibit reason) and behaves \
            the same. Hardware behaviour, not a model bug",
        applies: always,
    },
];

/// The backends with this host's in-kernel LAPIC.
const KERNEL_LAPIC: &[&str] = &["kvm-split/kvm", "kvm-split/datasheet", "kvm-kernel", "kvm-migrate"];
/// The backends with our IOAPIC behind this host's in-kernel LAPIC.
const KVM_SPLIT: &[&str] = &["kvm-split/kvm", "kvm-split/datasheet"];
/// The KVM-profile LAPIC models (`software-apicv` emulates every LAPIC exit with vm-apic).
const KVM_PROFILE_LAPIC_MODELS: &[&str] = &["software/kvm", "software-apicv/kvm", "kvm-userspace/kvm"];
/// The APICv backends.
const APICV: &[&str] = &["software-apicv/kvm", "software-apicv/datasheet"];

const fn value(v: u64) -> Event {
    Event::Value(v)
}

/// vCPU 0's entry `entry` reads `got` instead of `expected`.
const fn bsp(entry: usize, expected: u64, got: u64) -> EntryDiff {
    EntryDiff { vcpu: 0, entry, expected: value(expected), got: value(got) }
}

/// At snapshot `end`, IOAPIC entry `pin` reads `got` (Remote IRR still set by the
/// re-delivery the EOI at delivery caused) instead of `expected`.
const fn end(pin: usize, expected: u128, got: u128) -> FieldDiff {
    const NAMES: [&str; 24] = [
        "ioapic.redirtbl[0]",
        "ioapic.redirtbl[1]",
        "ioapic.redirtbl[2]",
        "ioapic.redirtbl[3]",
        "ioapic.redirtbl[4]",
        "ioapic.redirtbl[5]",
        "ioapic.redirtbl[6]",
        "ioapic.redirtbl[7]",
        "ioapic.redirtbl[8]",
        "ioapic.redirtbl[9]",
        "ioapic.redirtbl[10]",
        "ioapic.redirtbl[11]",
        "ioapic.redirtbl[12]",
        "ioapic.redirtbl[13]",
        "ioapic.redirtbl[14]",
        "ioapic.redirtbl[15]",
        "ioapic.redirtbl[16]",
        "ioapic.redirtbl[17]",
        "ioapic.redirtbl[18]",
        "ioapic.redirtbl[19]",
        "ioapic.redirtbl[20]",
        "ioapic.redirtbl[21]",
        "ioapic.redirtbl[22]",
        "ioapic.redirtbl[23]",
    ];
    FieldDiff { vcpu: 0, snapshot: "end", field: NAMES[pin], expected, got }
}

/// At snapshot `end`, IRR word 3 holds the re-delivered vector (`got`) instead of nothing.
const fn irr3(got: u128) -> FieldDiff {
    FieldDiff { vcpu: 0, snapshot: "end", field: "lapic.IRR3", expected: 0, got }
}

/// Every known divergence.
pub const KNOWN: &[Known] = &[
    // The minimal scenario of the host quirk: ISR and PPR read 0 right after the interrupt.
    Known {
        cause: PVM_EOI_AT_DELIVERY,
        scenario: "lapic-in-service",
        backends: KERNEL_LAPIC,
        entries: &[bsp(1, 0x1, 0x0), bsp(2, 0x60, 0x0)],
        fields: &[],
        hang_after: None,
        race: false,
    },
    // 0x4a is ended at delivery: ISR and PPR do not show it, and 0x41 is no longer blocked
    // by it, so it is taken at once and IRR is empty.
    Known {
        cause: PVM_EOI_AT_DELIVERY,
        scenario: "lapic-priority-classes",
        backends: KERNEL_LAPIC,
        entries: &[bsp(4, 0x400, 0x0), bsp(5, 0x40, 0x0)],
        fields: &[],
        hang_after: None,
        race: false,
    },
    Known {
        cause: PVM_EOI_AT_DELIVERY,
        scenario: "ioapic-level-eoi",
        backends: &["kvm-kernel", "kvm-migrate"],
        entries: &[bsp(3, 0x8071, 0xc071), bsp(6, 0x8071, 0xc071)],
        fields: &[end(17, 0x8071, 0xc071), irr3(0x20000)],
        hang_after: None,
        race: false,
    },
    // With our IOAPIC the EOI-at-delivery raises KVM_EXIT_IOAPIC_EOI, which is lost when
    // the guest halts before its next exit to userspace: the line is high, Remote IRR stays
    // set and the re-delivery never comes.
    Known {
        cause: PVM_EOI_EXIT_LOST_IN_HLT,
        scenario: "ioapic-level-eoi",
        backends: KVM_SPLIT,
        entries: &[bsp(3, 0x8071, 0xc071)],
        fields: &[],
        hang_after: Some(5),
        race: true,
    },
    // The same where the vCPU left the guest before its `hlt` (host load): the EOI exits come,
    // each when the vCPU next enters the guest: after the last read (only the read after the
    // guest's EOI shows Remote IRR set), or also after the end (as on kvm-kernel).
    Known {
        cause: PVM_EOI_AT_DELIVERY,
        scenario: "ioapic-level-eoi",
        backends: KVM_SPLIT,
        entries: &[bsp(3, 0x8071, 0xc071)],
        fields: &[],
        hang_after: None,
        race: true,
    },
    Known {
        cause: PVM_EOI_AT_DELIVERY,
        scenario: "ioapic-level-eoi",
        backends: KVM_SPLIT,
        entries: &[bsp(3, 0x8071, 0xc071), bsp(6, 0x8071, 0xc071)],
        fields: &[end(17, 0x8071, 0xc071), irr3(0x20000)],
        hang_after: None,
        race: true,
    },
    Known {
        cause: PVM_EOI_EXIT_LOST_IN_HLT,
        scenario: "ioapic-eoi-lost-in-hlt",
        backends: KVM_SPLIT,
        entries: &[],
        fields: &[],
        hang_after: Some(1),
        race: true,
    },
    Known {
        cause: PVM_EOI_AT_DELIVERY,
        scenario: "ioapic-level-masked",
        backends: &["kvm-kernel", "kvm-migrate"],
        entries: &[bsp(5, 0x18072, 0x1c072)],
        fields: &[end(18, 0x18072, 0x1c072), irr3(0x40000)],
        hang_after: None,
        race: false,
    },
    // kvm-split: when the EOI at delivery reaches our IOAPIC is a race (the exit is serviced
    // at the vCPU's next entry), so each of these may or may not show.
    Known {
        cause: PVM_EOI_AT_DELIVERY,
        scenario: "ioapic-level-masked",
        backends: KVM_SPLIT,
        entries: &[bsp(5, 0x18072, 0x1c072)],
        fields: &[end(18, 0x18072, 0x1c072), irr3(0x40000)],
        hang_after: None,
        race: true,
    },
    Known {
        cause: PVM_EOI_AT_DELIVERY,
        scenario: "ioapic-eoi-register",
        backends: &["kvm-split/kvm"],
        // Usually the EOI exit comes before the first read: Remote IRR is already clear.
        entries: &[bsp(1, 0xc073, 0x8073)],
        fields: &[],
        hang_after: None,
        race: true,
    },
    // Under load it comes only after the guest's own EOI: still set at both reads and at
    // `end`, with the vector pending again, as on kvm-kernel.
    Known {
        cause: PVM_EOI_AT_DELIVERY,
        scenario: "ioapic-eoi-register",
        backends: &["kvm-split/kvm"],
        entries: &[bsp(2, 0x8073, 0xc073)],
        fields: &[end(19, 0x8073, 0xc073), irr3(0x80000)],
        hang_after: None,
        race: true,
    },
    Known {
        cause: PVM_EOI_AT_DELIVERY,
        scenario: "ioapic-eoi-register",
        backends: &["kvm-kernel", "kvm-migrate"],
        entries: &[bsp(2, 0x8073, 0xc073)],
        fields: &[end(19, 0x8073, 0xc073), irr3(0x80000)],
        hang_after: None,
        race: false,
    },
    Known {
        cause: PVM_EOI_AT_DELIVERY,
        scenario: "ioapic-directed-eoi",
        backends: &["kvm-kernel", "kvm-migrate"],
        entries: &[bsp(3, 0x8075, 0xc075), bsp(4, 0x8075, 0xc075)],
        fields: &[end(21, 0x8075, 0xc075), irr3(0x200000)],
        hang_after: None,
        race: false,
    },
    Known {
        cause: "timer-reserved-mode",
        scenario: "lapic-timer-reserved-mode",
        backends: KVM_PROFILE_LAPIC_MODELS,
        // KVM reads a count in 1..=0x40000000 (its old one-shot's); undone as the top of it.
        entries: &[bsp(0, 0x4000_0000, 0)],
        fields: &[],
        hang_after: None,
        race: false,
    },
    Known {
        cause: "apicv-self-ipi-stale-tmr",
        scenario: "posted-self-ipi-stale-tmr",
        backends: APICV,
        entries: &[bsp(2, 0x0, 0x20000), bsp(4, 0x0, 0x20000)],
        fields: &[FieldDiff { vcpu: 0, snapshot: "end", field: "lapic.TMR3", expected: 0, got: 0x20000 }],
        hang_after: None,
        race: false,
    },
    Known {
        cause: "apicv-self-ipi-disabled-apic",
        scenario: "posted-self-ipi-disabled-apic",
        backends: APICV,
        entries: &[bsp(1, 0x0, 0x1), bsp(2, 0x0, 0x1)],
        fields: &[FieldDiff { vcpu: 0, snapshot: "end", field: "lapic.IRR3", expected: 0, got: 0x1 }],
        hang_after: None,
        race: false,
    },
];

/// The words that start the progress watchdog's error (the KVM vCPU loop writes them).
pub const WATCHDOG: &str = "no progress for";

/// Undoes the differences `known` names on `traces`: every named entry or field that holds
/// its `got` value gets its `expected` one. Returns the named differences that did not show.
pub fn undo(known: &Known, traces: &mut [Trace]) -> Vec<String> {
    let mut missing = Vec::new();
    for d in known.entries {
        match traces.get_mut(d.vcpu).and_then(|t| t.entries.get_mut(d.entry)) {
            Some(entry) if entry.event == d.got => entry.event = d.expected,
            Some(entry) => missing.push(format!(
                "vCPU {} entry {}: {} where [{}] expects {}",
                d.vcpu, d.entry, entry.event, known.cause, d.got
            )),
            None => missing.push(format!(
                "vCPU {} entry {}: not logged where [{}] expects {}",
                d.vcpu, d.entry, known.cause, d.got
            )),
        }
    }
    for f in known.fields {
        let snapshot =
            traces.get_mut(f.vcpu).and_then(|t| t.snapshots.iter_mut().find(|s| s.label == f.snapshot));
        let field = snapshot.and_then(|s| field_bytes(s, f.field));
        match field {
            Some(bytes) if le(bytes) == f.got => {
                for (i, b) in bytes.iter_mut().enumerate() {
                    *b = (f.expected >> (8 * i)) as u8;
                }
            }
            Some(bytes) => missing.push(format!(
                "vCPU {} `{}` {}: {:#x} where [{}] expects {:#x}",
                f.vcpu,
                f.snapshot,
                f.field,
                le(bytes),
                known.cause,
                f.got
            )),
            None => missing.push(format!(
                "vCPU {} `{}` {}: not in the snapshot where [{}] expects {:#x}",
                f.vcpu, f.snapshot, f.field, known.cause, f.got
            )),
        }
    }
    missing
}

fn le(bytes: &[u8]) -> u128 {
    bytes.iter().rev().fold(0, |acc, b| (acc << 8) | u128::from(*b))
}

/// A run of a scenario, with the known divergence it showed undone.
#[derive(Clone, Debug)]
pub enum Judged {
    /// The run, as it ran (no known divergence applies).
    Plain(RunOutput),
    /// The run with `known`'s differences undone: what remains held its expectation.
    Undone(RunOutput, &'static Known),
}

impl Judged {
    /// The run (with the known divergence undone).
    pub fn output(&self) -> &RunOutput {
        match self {
            Judged::Plain(out) | Judged::Undone(out, _) => out,
        }
    }

    /// The known divergence that was undone.
    pub fn known(&self) -> Option<&'static Known> {
        match self {
            Judged::Plain(_) => None,
            Judged::Undone(_, k) => Some(k),
        }
    }
}

/// What a check of one run concluded.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// It matched its expectation.
    Pass,
    /// It differed by exactly the known divergence.
    Known(&'static Known, String),
    /// Anything else.
    Fail(String),
}

/// Judges a run of `scenario` on backend `id` (held to `profile`'s expectation, as
/// [`crate::diff::check`] does). With a known divergence, its named differences are undone
/// first and must all have shown; of a host race's alternatives, one must match, or the run
/// must pass.
pub fn judge(
    scenario: &Scenario,
    profile: Profile,
    id: BackendId,
    run: &Result<RunOutput, RunError>,
) -> (Verdict, Option<Judged>) {
    let alternatives = find_all(&scenario.name, id);
    let Some(first) = alternatives.first() else {
        return judge_one(scenario, profile, None, run);
    };
    let mut failures = Vec::new();
    let mut judged_first = None;
    for k in &alternatives {
        match judge_one(scenario, profile, Some(k), run) {
            (Verdict::Fail(why), judged) => {
                failures.push(why);
                judged_first.get_or_insert(judged);
            }
            known => return known,
        }
    }
    // A host race whose outcome this time was the expected one.
    if alternatives.iter().any(|k| k.race) {
        if let (Verdict::Pass, judged) = judge_one(scenario, profile, None, run) {
            return (Verdict::Pass, judged);
        }
    }
    let why = if failures.len() == 1 {
        failures.remove(0)
    } else {
        format!(
            "none of the {} known alternatives of [{}] matched:\n  {}",
            failures.len(),
            first.cause,
            failures.join("\n  ")
        )
    };
    (Verdict::Fail(why), judged_first.flatten())
}

/// Judges a run against one known divergence, or none.
fn judge_one(
    scenario: &Scenario,
    profile: Profile,
    known: Option<&'static Known>,
    run: &Result<RunOutput, RunError>,
) -> (Verdict, Option<Judged>) {
    let check = |out: &RunOutput| crate::diff::check(scenario, profile, out);
    // A run that stopped after `n` entries: vCPU 0's log is the expectation's first `n`.
    let check_prefix = |t: &Trace, n: usize| match scenario.expected(profile) {
        Some(expect) => t.check(expect.get(..n).unwrap_or(expect)),
        None => Ok(()),
    };
    match (run, known) {
        (Ok(out), None) => match check(out) {
            Ok(()) => (Verdict::Pass, Some(Judged::Plain(out.clone()))),
            Err(e) => (Verdict::Fail(e), Some(Judged::Plain(out.clone()))),
        },
        (Err(e), None) => (Verdict::Fail(e.to_string()), None),
        (Ok(out), Some(k)) => {
            let mut undone = out.clone();
            let missing = undo(k, &mut undone.traces);
            let verdict = if let Some(n) = k.hang_after {
                Verdict::Fail(format!(
                    "[{}] expects vCPU 0 to hang after {n} entries, but the run ended{}",
                    k.cause,
                    check(out).err().map(|e| format!(": {e}")).unwrap_or_else(|| " and passed".into())
                ))
            } else if !missing.is_empty() {
                Verdict::Fail(format!(
                    "the known divergence [{}] did not show: {}{}",
                    k.cause,
                    missing.join("; "),
                    check(out).err().map(|e| format!("\n  the run: {e}")).unwrap_or_default()
                ))
            } else {
                match check(&undone) {
                    Ok(()) => Verdict::Known(k, difference(k)),
                    Err(e) => Verdict::Fail(format!("besides the known divergence [{}]: {e}", k.cause)),
                }
            };
            (verdict, Some(Judged::Undone(undone, k)))
        }
        (Err(e), Some(k)) => {
            let Some(n) = k.hang_after else {
                return (
                    Verdict::Fail(format!("{e}\n  (the known divergence [{}] names no hang)", k.cause)),
                    None,
                );
            };
            if !e.message.starts_with(&format!("vCPU 0: {WATCHDOG}")) {
                return (
                    Verdict::Fail(format!(
                        "{e}\n  ([{}] expects a watchdog hang after {n} entries)",
                        k.cause
                    )),
                    None,
                );
            }
            let mut partial = e.partial.clone();
            let missing = undo(k, &mut partial);
            let verdict = match partial.first() {
                _ if !missing.is_empty() => Verdict::Fail(format!(
                    "{e}\n  the known divergence [{}] did not show: {}",
                    k.cause,
                    missing.join("; ")
                )),
                Some(t) if t.entries.len() == n => match check_prefix(t, n) {
                    Ok(()) => Verdict::Known(k, format!("{}; hangs after {n} entries", difference(k))),
                    Err(why) => {
                        Verdict::Fail(format!("{e}\n  besides the known divergence [{}]: {why}", k.cause))
                    }
                },
                Some(t) => Verdict::Fail(format!(
                    "{e}\n  [{}] expects a hang after {n} entries, after {} here",
                    k.cause,
                    t.entries.len()
                )),
                None => Verdict::Fail(format!("{e}\n  (no log to compare with [{}])", k.cause)),
            };
            (verdict, None)
        }
    }
}

/// The differences `known` names, on one line.
pub fn difference(known: &Known) -> String {
    let mut parts: Vec<String> = known
        .entries
        .iter()
        .map(|d| format!("vCPU {} entry {}: {} vs {}", d.vcpu, d.entry, d.expected, d.got))
        .chain(known.fields.iter().map(|f| {
            format!("vCPU {} `{}` {}: {:#x} vs {:#x}", f.vcpu, f.snapshot, f.field, f.expected, f.got)
        }))
        .collect();
    if parts.is_empty() {
        parts.push("as the scenario's expectation says".into());
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{software::Software, Backend, RunOptions};
    use crate::scenario::Profile;
    use crate::scenarios;

    /// Judges `run` of `name` on software/kvm as the main job does.
    fn judged(name: &str, run: &Result<RunOutput, RunError>) -> Verdict {
        let scenario = scenarios::by_name(name).unwrap();
        judge(&scenario, Profile::Kvm, BackendId::Software(Profile::Kvm), run).0
    }

    fn reserved_mode_run() -> Result<RunOutput, RunError> {
        let scenario = scenarios::by_name("lapic-timer-reserved-mode").unwrap();
        Ok(Software::new(Profile::Kvm).run(&scenario, &RunOptions::default()).unwrap())
    }

    #[test]
    fn a_known_cell_showing_exactly_its_difference_is_known() {
        let verdict = judged("lapic-timer-reserved-mode", &reserved_mode_run());
        assert!(matches!(verdict, Verdict::Known(k, _) if k.cause == "timer-reserved-mode"), "{verdict:?}");
    }

    #[test]
    fn a_broken_model_in_a_known_cell_fails_another_entry() {
        // A model that also got the LVT timer read wrong: entry 1 differs from the expectation.
        let mut run = reserved_mode_run();
        if let Ok(out) = &mut run {
            out.traces[0].entries[1].event = Event::Value(0x1_0020);
        }
        let verdict = judged("lapic-timer-reserved-mode", &run);
        assert!(matches!(&verdict, Verdict::Fail(why) if why.contains("entry 1")), "{verdict:?}");
    }

    #[test]
    fn a_broken_model_in_a_known_cell_fails_another_value_of_the_named_entry() {
        // The named entry reads 5, not the 0 the divergence names.
        let mut run = reserved_mode_run();
        if let Ok(out) = &mut run {
            out.traces[0].entries[0].event = Event::Value(5);
        }
        let verdict = judged("lapic-timer-reserved-mode", &run);
        assert!(matches!(&verdict, Verdict::Fail(why) if why.contains("did not show")), "{verdict:?}");
    }

    #[test]
    fn a_watchdog_hang_in_a_known_cell_that_names_none_fails() {
        let partial = reserved_mode_run().unwrap().traces;
        let run = Err(RunError {
            message: format!("vCPU 0: {WATCHDOG} 250ms (no exit, nothing logged)"),
            registers: None,
            partial,
        });
        let verdict = judged("lapic-timer-reserved-mode", &run);
        assert!(matches!(&verdict, Verdict::Fail(why) if why.contains("names no hang")), "{verdict:?}");
    }

    #[test]
    fn a_hang_after_another_entry_than_the_named_one_fails() {
        let k = KNOWN.iter().find(|k| k.scenario == "ioapic-eoi-lost-in-hlt").unwrap();
        let scenario = scenarios::by_name(k.scenario).unwrap();
        let expect = scenario.expected(Profile::Kvm).unwrap();
        let hang = |entries: usize| {
            let mut trace = Trace::default();
            for (i, e) in expect.iter().take(entries).enumerate() {
                let crate::scenario::Expect::Irq(v) = e else { unreachable!() };
                trace.entries.push(crate::trace::Entry { event: Event::Irq(*v), op: 0, seq: i as u32 });
            }
            Err(RunError {
                message: format!("vCPU 0: {WATCHDOG} 250ms"),
                registers: None,
                partial: vec![trace],
            })
        };
        // Judged against the entry itself, on any host.
        let judge_hang = |entries| judge_one(&scenario, Profile::Kvm, Some(k), &hang(entries)).0;
        assert!(matches!(judge_hang(1), Verdict::Known(..)));
        assert!(matches!(judge_hang(0), Verdict::Fail(..)));
        assert!(matches!(judge_hang(2), Verdict::Fail(..)));
    }

    /// An outcome of a host race is all or nothing: a run that shows part of it fails.
    #[test]
    fn a_race_outcome_shown_in_part_fails() {
        static PART: Known = Known {
            cause: "timer-reserved-mode",
            scenario: "lapic-timer-reserved-mode",
            backends: &["software/kvm"],
            entries: &[bsp(0, 0x4000_0000, 0), bsp(1, 0x60020, 0x1)],
            fields: &[],
            hang_after: None,
            race: true,
        };
        let scenario = scenarios::by_name(PART.scenario).unwrap();
        // The software run shows entry 0's difference, not entry 1's.
        let verdict = judge_one(&scenario, Profile::Kvm, Some(&PART), &reserved_mode_run()).0;
        assert!(matches!(&verdict, Verdict::Fail(why) if why.contains("entry 1")), "{verdict:?}");
    }

    #[test]
    fn every_known_divergence_cites_a_cause_and_names_an_existing_scenario_and_backends() {
        let scenarios = crate::scenarios::all();
        for k in KNOWN {
            assert!(cause(k.cause).is_some(), "{}: no cause {}", k.scenario, k.cause);
            let scenario = scenarios.iter().find(|s| s.name == k.scenario);
            let scenario = scenario.unwrap_or_else(|| panic!("no scenario {}", k.scenario));
            for b in k.backends {
                assert!(BackendId::parse(b).is_some_and(|id| id.to_string() == *b), "{b}");
            }
            // It names a difference (an empty entry would call a passing run known).
            assert!(
                !k.entries.is_empty() || !k.fields.is_empty() || k.hang_after.is_some(),
                "{} names no difference",
                k.scenario
            );
            // Every field it names is one a snapshot has.
            for f in k.fields {
                let mut snapshot = crate::trace::Snapshot {
                    pic: Some([[0; 16]; 2]),
                    ioapic: Some(vec![0; crate::trace::IOAPIC_STATE_SIZE]),
                    lapic: Some(vec![0; 1024]),
                    ..Default::default()
                };
                assert!(field_bytes(&mut snapshot, f.field).is_some(), "{}: {}", k.scenario, f.field);
            }
            // A named entry difference is a real difference from the expectation: its
            // `expected` satisfies the scenario's expectation there, its `got` does not.
            for d in k.entries {
                let expect = scenario.expected(crate::scenario::Profile::Kvm).expect("built-ins expect");
                let want = expect.get(d.entry).unwrap_or_else(|| panic!("{} entry {}", k.scenario, d.entry));
                let trace = |event| Trace {
                    entries: vec![crate::trace::Entry { event, op: 0, seq: 0 }],
                    ..Trace::default()
                };
                assert_eq!(d.vcpu, 0, "{}: AP entries are not used yet", k.scenario);
                assert!(trace(d.expected).check(std::slice::from_ref(want)).is_ok(), "{} {d:?}", k.scenario);
                assert!(trace(d.got).check(std::slice::from_ref(want)).is_err(), "{} {d:?}", k.scenario);
            }
        }
        let mut tags: Vec<&str> = CAUSES.iter().map(|c| c.tag).collect();
        tags.sort_unstable();
        let n = tags.len();
        tags.dedup();
        assert_eq!(tags.len(), n, "cause tags are unique");
    }
}
