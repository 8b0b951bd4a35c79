//! The differential engine: runs scenarios on several backends, checks each trace against
//! its expectation, and compares backends with each other: guest traces between backends of
//! the same PIC profile, and PIC state at every snapshot point, bit for bit, between
//! `kvm-kernel` (KVM_GET_IRQCHIP) and every KVM-profile model (`PicState::to_kvm`).

use crate::backend::{BackendId, RunOptions, RunOutput, SharedBackend};
use crate::report::{Cell, Outcome, Report};
use crate::scenario::{Expect, Op, Profile, Scenario};
use crate::trace::{pic_difference, Trace};

/// The expectation for AP `ap`'s trace: its recorded values, in order (APs started by
/// `--vcpus` only record).
pub fn ap_expectation(program: &[Op]) -> Vec<Expect> {
    program
        .iter()
        .filter_map(|op| if let Op::Record(v) = op { Some(Expect::Value(*v)) } else { None })
        .collect()
}

/// Adds `vcpus - 1` application processors that each record a marker.
pub fn with_vcpus(mut scenario: Scenario, vcpus: usize) -> Scenario {
    for ap in 1..vcpus {
        scenario.aps.push(vec![Op::Record(0xA000 + ap as u64), Op::Record(0xB000 + ap as u64)]);
    }
    scenario
}

/// Checks one run against the scenario's expectations.
pub fn check(scenario: &Scenario, profile: Profile, out: &RunOutput) -> Result<(), String> {
    let Some(bsp) = out.traces.first() else { return Err("no trace".into()) };
    if let Some(expect) = scenario.expected(profile) {
        bsp.check(expect).map_err(|e| format!("vCPU 0: {e}"))?;
    }
    for (i, (program, trace)) in scenario.aps.iter().zip(out.traces.iter().skip(1)).enumerate() {
        trace.check(&ap_expectation(program)).map_err(|e| format!("vCPU {}: {e}", i + 1))?;
    }
    Ok(())
}

/// Compares two runs of `scenario`: the boot vCPU's log (rdtsc values aside) and the PIC
/// bytes of every snapshot both have.
pub fn compare(scenario: &Scenario, a: &Trace, b: &Trace) -> Result<(), String> {
    if let Some(d) = a.diff_events(b, &scenario.ops) {
        return Err(format!("guest traces differ at {d}\n  {}\n  {}", a.summary(), b.summary()));
    }
    compare_snapshots(a, b)
}

/// Compares the PIC state of every snapshot label present in both traces.
pub fn compare_snapshots(a: &Trace, b: &Trace) -> Result<(), String> {
    if a.snapshots.len() != b.snapshots.len() {
        return Err(format!("{} snapshots vs {}", a.snapshots.len(), b.snapshots.len()));
    }
    for (x, y) in a.snapshots.iter().zip(&b.snapshots) {
        if let (Some(p), Some(q)) = (&x.pic, &y.pic) {
            let diff = pic_difference(p, q);
            if !diff.is_empty() {
                return Err(format!("PIC state at snapshot `{}` differs: {}", x.label, diff.join(", ")));
            }
        }
    }
    Ok(())
}

/// Runs every scenario on every backend and fills a report, differential checks included.
pub fn run_matrix(scenarios: &[Scenario], backends: &[SharedBackend], options: &RunOptions) -> Report {
    let mut report = Report {
        backends: backends.iter().map(|b| b.id()).collect(),
        scenarios: scenarios.iter().map(|s| s.name.clone()).collect(),
        ..Report::default()
    };
    for scenario in scenarios {
        let mut outputs: Vec<(BackendId, RunOutput)> = Vec::new();
        for backend in backends {
            let id = backend.id();
            let outcome = match backend.supports(scenario) {
                Err(why) => Outcome::Unsupported(why.0),
                Ok(()) => match backend.run(scenario, options) {
                    Ok(out) => match check(scenario, id.profile(), &out) {
                        Ok(()) => {
                            let stats = out.stats;
                            outputs.push((id, out));
                            Outcome::Pass(stats)
                        }
                        Err(reason) => {
                            let stats = Some(out.stats);
                            outputs.push((id, out));
                            Outcome::Fail { reason, stats }
                        }
                    },
                    Err(e) => Outcome::Fail { reason: e.to_string(), stats: None },
                },
            };
            report.cells.push(Cell { scenario: scenario.name.clone(), backend: id, outcome });
        }
        // Every backend against the first one of its profile that ran (kvm-kernel is the
        // reference of the KVM profile when it ran).
        for profile in [Profile::Kvm, Profile::Datasheet] {
            let of_profile: Vec<&(BackendId, RunOutput)> =
                outputs.iter().filter(|(id, _)| id.profile() == profile).collect();
            let reference = of_profile
                .iter()
                .find(|(id, _)| *id == BackendId::KvmKernel)
                .or_else(|| of_profile.first())
                .copied();
            let Some((ref_id, ref_out)) = reference else { continue };
            for (id, out) in of_profile.iter().map(|(id, out)| (*id, out)) {
                if id == *ref_id {
                    continue;
                }
                let (Some(a), Some(b)) = (ref_out.traces.first(), out.traces.first()) else { continue };
                report.diffs.push((
                    scenario.name.clone(),
                    format!("{ref_id} vs {id}"),
                    compare(scenario, a, b),
                ));
            }
        }
    }
    report
}
