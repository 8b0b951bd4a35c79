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
//! * A known divergence ([`crate::known`]) excuses exactly the differences it names: they are
//!   undone, and what remains is checked and compared as if it had none.

use crate::backend::{BackendId, RunOptions, RunOutput, SharedBackend};
use crate::known::{self, Judged, Verdict};
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
    compare_snapshots(&determined(scenario, a), &determined(scenario, b))
}

/// `trace` without the snapshot bits that host timing decides.
fn determined(scenario: &Scenario, trace: &Trace) -> Trace {
    let mut trace = trace.clone();
    for t in &scenario.timing_dependent {
        crate::trace::clear_bits(&mut trace, &t.snapshot, &t.field, t.mask);
    }
    trace
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
        let (x, y) = (&determined(scenario, x), &determined(scenario, y));
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

/// Runs every scenario on every backend and fills a report, differential checks included.
pub fn run_matrix(scenarios: &[Scenario], backends: &[SharedBackend], options: &RunOptions) -> Report {
    run_matrix_with(scenarios, backends, options, |_, _| {})
}

/// [`run_matrix`], telling `progress` of each scenario's cells as soon as they are known.
pub fn run_matrix_with(
    scenarios: &[Scenario],
    backends: &[SharedBackend],
    options: &RunOptions,
    mut progress: impl FnMut(&Scenario, &[Cell]),
) -> Report {
    let mut report = Report {
        backends: backends.iter().map(|b| b.id()).collect(),
        scenarios: scenarios.iter().map(|s| s.name.clone()).collect(),
        ..Report::default()
    };
    for scenario in scenarios {
        let first_cell = report.cells.len();
        // Each run, with the differences its known divergence names undone.
        let mut outputs: Vec<(BackendId, Profile, Judged)> = Vec::new();
        for backend in backends {
            let id = backend.id();
            let outcome = match backend.supports(scenario).and_then(|()| id.profile_for(scenario)) {
                Err(why) => Outcome::Unsupported(why.0),
                Ok(profile) => {
                    let run = backend.run(scenario, options);
                    let stats = run.as_ref().ok().map(|out| out.stats);
                    let (verdict, judged) = known::judge(scenario, profile, id, &run);
                    if let Some(judged) = judged {
                        outputs.push((id, profile, judged));
                    }
                    match verdict {
                        Verdict::Pass => Outcome::Pass(stats.unwrap_or_default()),
                        Verdict::Known(k, difference) => Outcome::Known { tag: k.cause, difference, stats },
                        Verdict::Fail(reason) => Outcome::Fail { reason, stats },
                    }
                }
            };
            report.cells.push(Cell { scenario: scenario.name.clone(), backend: id, outcome });
        }
        // Every backend against one reference held to the same expectation: kvm-kernel when it
        // ran, else the first one of the group. Known divergences are undone on both sides
        // first, so only what they name is excused.
        for profile in [Profile::Kvm, Profile::Datasheet] {
            let group: Vec<&(BackendId, Profile, Judged)> =
                outputs.iter().filter(|(_, p, _)| *p == profile).collect();
            let reference = group
                .iter()
                .find(|(id, _, _)| *id == BackendId::KvmKernel)
                .or_else(|| group.first())
                .copied();
            let Some((ref_id, _, ref_run)) = reference else { continue };
            for (id, _, run) in group.iter().map(|(id, p, run)| (*id, p, run)) {
                if id == *ref_id {
                    continue;
                }
                let what = format!("{ref_id} vs {id}");
                let result =
                    compare_runs(scenario, ref_run.output(), run.output(), Comparable::between(*ref_id, id));
                let tags: Vec<&'static str> =
                    [ref_run.known(), run.known()].into_iter().flatten().map(|k| k.cause).collect();
                match (result, tags.is_empty()) {
                    (Ok(()), false) => report.known.push((scenario.name.clone(), what, tags)),
                    (result, _) => report.diffs.push((scenario.name.clone(), what, result)),
                }
            }
        }
        progress(scenario, &report.cells[first_cell..]);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{field_bytes, Snapshot};

    /// A trace with one `end` snapshot whose LAPIC IRR word 2 is `irr2`.
    fn ended_with_irr2(irr2: u8) -> Trace {
        let mut snapshot =
            Snapshot { label: "end".into(), lapic: Some(vec![0; 1024]), ..Snapshot::default() };
        field_bytes(&mut snapshot, "lapic.IRR2").unwrap()[0] = irr2;
        Trace { snapshots: vec![snapshot], ..Trace::default() }
    }

    #[test]
    fn a_timer_tick_pending_at_a_snapshot_by_host_timing_is_not_a_difference() {
        let scenario = crate::scenarios::by_name("lapic-timer-periodic").unwrap();
        // Vector 0x41 (IRR word 2, bit 1) pending on one side only: the scenario says host
        // timing decides it.
        compare(&scenario, &ended_with_irr2(0), &ended_with_irr2(0b10)).unwrap();
        // Any other vector still counts.
        let err = compare(&scenario, &ended_with_irr2(0), &ended_with_irr2(0b110)).unwrap_err();
        assert!(err.contains("lapic.IRR2: 0x0 vs 0x4"), "{err}");
        // And a scenario that names no such bits compares them all.
        let other = crate::scenarios::by_name("lapic-timer-one-shot").unwrap();
        assert!(compare(&other, &ended_with_irr2(0), &ended_with_irr2(0b10)).is_err());
    }
}
