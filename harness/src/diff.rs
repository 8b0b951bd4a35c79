//! The differential engine: runs scenarios on several backends, checks each trace against
//! its expectation, and compares backends with each other.
//!
//! * Guest traces: every vCPU's log, entry by entry, between backends held to the same
//!   expectation (values that depend on time, `rdtsc` and the TSC MSRs, only for presence).
//! * Device state at every snapshot point, in KVM's layouts, between backends whose device has
//!   the same profile: the PIC (`kvm_pic_state` ×2) and the IOAPIC (`kvm_ioapic_state`) bit for
//!   bit; the snapshotting vCPU's LAPIC (`kvm_lapic_state`) bit for bit except the timer's
//!   current count, which depends on when the snapshot was taken and is compared only for
//!   being zero or not, and VERSION bit 24 against `kvm-split`'s LAPIC (see
//!   [`LapicTolerance`]). `kvm-kernel` (KVM_GET_IRQCHIP, KVM_GET_LAPIC) is the reference of the
//!   KVM profile.
//! * A difference that a documented divergence of a model from KVM explains is reported as
//!   known ([`KNOWN_DIVERGENCES`]), with its reason, never silently dropped.

use crate::backend::{host, BackendId, RunOptions, RunOutput, SharedBackend};
use crate::report::{Cell, Outcome, Report};
use crate::scenario::{Device, Expect, Op, Profile, Scenario};
use crate::trace::{ioapic_difference, lapic_difference, pic_difference, LapicTolerance, Trace};

/// The expectation for AP `ap`'s trace when the scenario has none: its recorded values, in
/// order (APs started by `--vcpus` only record).
pub fn ap_expectation(program: &[Op]) -> Vec<Expect> {
    program
        .iter()
        .filter_map(|op| if let Op::Record(v) = op { Some(Expect::Value(*v)) } else { None })
        .collect()
}

/// Adds `vcpus - 1` application processors that each record a marker, to a scenario that has
/// none of its own (an SMP scenario's vCPUs are part of what it tests: an extra AP would take
/// its broadcasts and change its lowest-priority arbitration).
pub fn with_vcpus(mut scenario: Scenario, vcpus: usize) -> Scenario {
    if !scenario.aps.is_empty() {
        return scenario;
    }
    for ap in 1..vcpus {
        scenario.aps.push(vec![Op::Record(0xA000 + ap as u64), Op::Record(0xB000 + ap as u64)]);
    }
    scenario
}

/// Checks one run against the scenario's expectations for `profile`.
pub fn check(scenario: &Scenario, profile: Profile, out: &RunOutput) -> Result<(), String> {
    let Some(bsp) = out.traces.first() else { return Err("no trace".into()) };
    if let Some(expect) = scenario.expected(profile) {
        bsp.check(expect).map_err(|e| format!("vCPU 0: {e}"))?;
    }
    for (i, (program, trace)) in scenario.aps.iter().zip(out.traces.iter().skip(1)).enumerate() {
        let ap = i + 1;
        let fallback;
        let expect = match scenario.expected_ap(profile, ap) {
            Some(expect) => expect,
            None => {
                fallback = ap_expectation(program);
                &fallback
            }
        };
        trace.check(expect).map_err(|e| format!("vCPU {ap}: {e}"))?;
    }
    if out.traces.len() != scenario.aps.len() + 1 {
        return Err(format!("{} traces for {} vCPUs", out.traces.len(), scenario.aps.len() + 1));
    }
    Ok(())
}

/// Which devices' snapshots two backends can be compared on, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Comparable {
    /// Same PIC profile.
    pub pic: bool,
    /// Same IOAPIC profile.
    pub ioapic: bool,
    /// Same LAPIC profile.
    pub lapic: bool,
    /// Tolerances of the LAPIC comparison.
    pub tolerance: LapicTolerance,
}

impl Comparable {
    /// Every device, no tolerance beyond the timer count.
    pub const ALL: Comparable =
        Comparable { pic: true, ioapic: true, lapic: true, tolerance: LapicTolerance { version_ignore: 0 } };

    /// What backends `a` and `b` can be compared on.
    pub fn between(a: BackendId, b: BackendId) -> Comparable {
        let same = |d| a.device_profile(d) == b.device_profile(d);
        let split = |id| matches!(id, BackendId::KvmSplit(_));
        Comparable {
            pic: same(Device::Pic),
            ioapic: same(Device::Ioapic),
            lapic: same(Device::Lapic),
            tolerance: LapicTolerance { version_ignore: if split(a) != split(b) { 1 << 24 } else { 0 } },
        }
    }
}

/// Compares two runs of `scenario`: the boot vCPU's log (time-dependent values aside) and
/// every device state of every snapshot both have.
pub fn compare(scenario: &Scenario, a: &Trace, b: &Trace) -> Result<(), String> {
    if let Some(d) = a.diff_events(b, &scenario.ops) {
        return Err(format!("guest traces differ at {d}\n  {}\n  {}", a.summary(), b.summary()));
    }
    compare_snapshots(a, b)
}

/// Compares every vCPU's log and snapshots of two runs, on the devices `what` allows.
pub fn compare_runs(
    scenario: &Scenario,
    a: &RunOutput,
    b: &RunOutput,
    what: Comparable,
) -> Result<(), String> {
    if a.traces.len() != b.traces.len() {
        return Err(format!("{} vCPU traces vs {}", a.traces.len(), b.traces.len()));
    }
    for (cpu, ((x, y), program)) in a.traces.iter().zip(&b.traces).zip(scenario.programs()).enumerate() {
        if let Some(d) = x.diff_events(y, program) {
            return Err(format!(
                "vCPU {cpu}: guest traces differ at {d}\n  {}\n  {}",
                x.summary(),
                y.summary()
            ));
        }
        compare_snapshots_on(x, y, what).map_err(|e| format!("vCPU {cpu}: {e}"))?;
    }
    Ok(())
}

/// Compares the device state of every snapshot of two traces (all devices both have).
pub fn compare_snapshots(a: &Trace, b: &Trace) -> Result<(), String> {
    compare_snapshots_on(a, b, Comparable::ALL)
}

/// Compares the state of the devices `what` allows at every snapshot of two traces.
pub fn compare_snapshots_on(a: &Trace, b: &Trace, what: Comparable) -> Result<(), String> {
    if a.snapshots.len() != b.snapshots.len() {
        return Err(format!("{} snapshots vs {}", a.snapshots.len(), b.snapshots.len()));
    }
    for (x, y) in a.snapshots.iter().zip(&b.snapshots) {
        let mut diff = Vec::new();
        if let (Some(p), Some(q), true) = (&x.pic, &y.pic, what.pic) {
            diff.extend(pic_difference(p, q));
        }
        if let (Some(p), Some(q), true) = (&x.ioapic, &y.ioapic, what.ioapic) {
            diff.extend(ioapic_difference(p, q));
        }
        if let (Some(p), Some(q), true) = (&x.lapic, &y.lapic, what.lapic) {
            diff.extend(lapic_difference(p, q, what.tolerance));
        }
        if !diff.is_empty() {
            return Err(format!("state at snapshot `{}` differs: {}", x.label, diff.join(", ")));
        }
    }
    Ok(())
}

/// A difference between a model and KVM that is understood and reported to the model's
/// owners, with the minimal scenario that shows it: the scenario's expectation is KVM's, and on
/// the listed backends the check and the differential comparison report it as known instead of
/// failing (or passing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownDivergence {
    /// The minimal scenario that shows it (a built-in).
    pub scenario: &'static str,
    /// The backends (full names) whose models diverge.
    pub backends: &'static [&'static str],
    /// What differs and why.
    pub reason: &'static str,
}

/// The KVM-profile model backends (vm-apic's `Quirks::KVM` LAPIC; `software-apicv` emulates
/// every LAPIC exit with it).
const KVM_PROFILE_LAPIC_MODELS: &[&str] = &["software/kvm", "software-apicv/kvm", "kvm-userspace/kvm"];

/// The known divergences of the models from KVM (and of APIC virtualization from a LAPIC).
pub const KNOWN_DIVERGENCES: &[KnownDivergence] = &[
    KnownDivergence {
        scenario: "lapic-timer-reserved-mode",
        backends: KVM_PROFILE_LAPIC_MODELS,
        reason:
            "in LVT timer mode 11b (reserved) a TMICT write stops vm-apic's countdown (TimerState::start: \
            expiry None, TMCCT 0), while KVM keeps the previous one-shot's period and target \
            (start_apic_timer sets neither in that mode) and TMCCT reads the old count, non-zero; found \
            by the random APIC test",
    },
    KnownDivergence {
        scenario: "posted-self-ipi-stale-tmr",
        backends: &["software-apicv/kvm", "software-apicv/datasheet"],
        reason:
            "APICv's self-IPI virtualization only sets VIRR (SDM \"Self-IPI Virtualization\"): VTMR keeps \
            the level bit of the vector's last level-triggered acceptance, which a LAPIC clears when it \
            accepts the edge self-IPI, so the guest reads TMR = 1 and its EOI (an EOI-exit bitmap vector) \
            is forwarded to the IOAPIC as a level EOI; KVM with APICv does the same (kvm_ioapic_send_eoi \
            reads TMR from the virtual-APIC page). Hardware behaviour, not a model bug",
    },
    KnownDivergence {
        scenario: "posted-self-ipi-disabled-apic",
        backends: &["software-apicv/kvm", "software-apicv/datasheet"],
        reason: "APICv's self-IPI virtualization does not look at the virtual SVR: with the APIC \
            software-disabled, a LAPIC refuses the fixed self-IPI, the processor sets VIRR (and would \
            deliver it); KVM keeps APICv active on a software-disabled APIC (no inhibit reason) and \
            behaves the same. Hardware behaviour, not a model bug",
    },
];

/// The known divergence that scenario `scenario` shows on backend `id`, if one does.
pub fn known_divergence(scenario: &str, id: BackendId) -> Option<&'static KnownDivergence> {
    let name = id.to_string();
    KNOWN_DIVERGENCES.iter().find(|k| k.scenario == scenario && k.backends.contains(&name.as_str()))
}

/// Runs every scenario on every backend and fills a report, differential checks included.
pub fn run_matrix(scenarios: &[Scenario], backends: &[SharedBackend], options: &RunOptions) -> Report {
    let mut report = Report {
        backends: backends.iter().map(|b| b.id()).collect(),
        scenarios: scenarios.iter().map(|s| s.name.clone()).collect(),
        ..Report::default()
    };
    for scenario in scenarios {
        let mut outputs: Vec<(BackendId, Profile, RunOutput)> = Vec::new();
        for backend in backends {
            let id = backend.id();
            let host = host::divergence(id, scenario)
                .or_else(|| known_divergence(&scenario.name, id).map(|k| k.reason));
            let outcome = match backend.supports(scenario).and_then(|()| id.profile_for(scenario)) {
                Err(why) => Outcome::Unsupported(why.0),
                Ok(profile) => match backend.run(scenario, options) {
                    Ok(out) => {
                        let stats = Some(out.stats);
                        let outcome = match (check(scenario, profile, &out), host) {
                            (Ok(()), _) => Outcome::Pass(out.stats),
                            (Err(reason), Some(why)) => Outcome::Known { reason, why: why.into(), stats },
                            (Err(reason), None) => Outcome::Fail { reason, stats },
                        };
                        outputs.push((id, profile, out));
                        outcome
                    }
                    Err(e) => match host {
                        Some(why) => Outcome::Known { reason: e.to_string(), why: why.into(), stats: None },
                        None => Outcome::Fail { reason: e.to_string(), stats: None },
                    },
                },
            };
            report.cells.push(Cell { scenario: scenario.name.clone(), backend: id, outcome });
        }
        // Every backend against one reference held to the same expectation: kvm-kernel when it
        // ran and no host divergence applies to it, else the first one of the group that is
        // not affected either.
        for profile in [Profile::Kvm, Profile::Datasheet] {
            let group: Vec<&(BackendId, Profile, RunOutput)> =
                outputs.iter().filter(|(_, p, _)| *p == profile).collect();
            let unaffected = |id: &BackendId| {
                host::divergence(*id, scenario).is_none() && known_divergence(&scenario.name, *id).is_none()
            };
            let reference = group
                .iter()
                .find(|(id, _, _)| *id == BackendId::KvmKernel && unaffected(id))
                .or_else(|| group.iter().find(|(id, _, _)| unaffected(id)))
                .or_else(|| group.first())
                .copied();
            let Some((ref_id, _, ref_out)) = reference else { continue };
            for (id, _, out) in group.iter().map(|(id, p, out)| (*id, p, out)) {
                if id == *ref_id {
                    continue;
                }
                let what = format!("{ref_id} vs {id}");
                let result = compare_runs(scenario, ref_out, out, Comparable::between(*ref_id, id));
                let why = [id, *ref_id].into_iter().find_map(|b| {
                    host::divergence(b, scenario)
                        .or_else(|| known_divergence(&scenario.name, b).map(|k| k.reason))
                });
                match (result, why) {
                    (Err(diff), Some(why)) => {
                        report.known.push((scenario.name.clone(), what, diff, why.into()))
                    }
                    (result, _) => report.diffs.push((scenario.name.clone(), what, result)),
                }
            }
        }
    }
    report
}
