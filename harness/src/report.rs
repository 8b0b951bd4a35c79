//! The main job's results: one row per scenario, one column per backend, as a table or JSON.

use std::fmt::Write as _;
use std::time::Duration;

use crate::backend::{BackendId, Stats};

/// What happened to one scenario on one backend.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The trace matched the expectation (and the differential checks passed).
    Pass(Stats),
    /// It ran but the trace or a differential check was wrong, or the run failed.
    Fail {
        /// Why.
        reason: String,
        /// Counters, if the run completed.
        stats: Option<Stats>,
    },
    /// The backend cannot run it.
    Unsupported(String),
    /// It ran and did not match, for a documented reason outside the models (a host quirk,
    /// [`crate::backend::host`]): not a failure, always printed.
    Known {
        /// What happened.
        reason: String,
        /// Why it is expected.
        why: String,
        /// Counters, if the run completed.
        stats: Option<Stats>,
    },
}

impl Outcome {
    /// Whether this is a failure.
    pub fn failed(&self) -> bool {
        matches!(self, Outcome::Fail { .. })
    }
}

/// One cell of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    /// Scenario name.
    pub scenario: String,
    /// Backend.
    pub backend: BackendId,
    /// Result.
    pub outcome: Outcome,
}

/// The whole report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Backends that ran, in column order.
    pub backends: Vec<BackendId>,
    /// Backends skipped on this machine, and why.
    pub skipped: Vec<(BackendId, String)>,
    /// Scenarios in row order.
    pub scenarios: Vec<String>,
    /// Every cell.
    pub cells: Vec<Cell>,
    /// Differential checks between backends: (scenario, description, Ok or the difference).
    pub diffs: Vec<(String, String, Result<(), String>)>,
    /// Differences a documented divergence explains: (scenario, description, difference,
    /// reason). Not failures, always printed.
    pub known: Vec<(String, String, String, String)>,
}

/// A short tag for a known-divergence reason, to cite it on each line.
fn why_tag(why: &str) -> String {
    let hash = why.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("K{:04X}", hash & 0xFFFF)
}

fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1e3)
}

impl Report {
    /// Whether anything failed (a cell or a differential check).
    pub fn failed(&self) -> bool {
        self.cells.iter().any(|c| c.outcome.failed()) || self.diffs.iter().any(|d| d.2.is_err())
    }

    fn cell(&self, scenario: &str, backend: BackendId) -> Option<&Outcome> {
        self.cells.iter().find(|c| c.scenario == scenario && c.backend == backend).map(|c| &c.outcome)
    }

    /// The human-readable table, then failures, unsupported reasons and skipped backends.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let width = self.scenarios.iter().map(String::len).max().unwrap_or(8).max(8);
        let _ = write!(s, "{:width$}", "scenario");
        for b in &self.backends {
            let _ = write!(s, " | {:<24}", b.to_string());
        }
        s.push('\n');
        let _ = writeln!(s, "{}", "-".repeat(width + self.backends.len() * 27));
        for name in &self.scenarios {
            let _ = write!(s, "{name:width$}");
            for b in &self.backends {
                let text = match self.cell(name, *b) {
                    Some(Outcome::Pass(st)) => {
                        format!("PASS {}i {}x {}", st.interrupts, st.exits, ms(st.wall))
                    }
                    Some(Outcome::Fail { .. }) => "FAIL".to_string(),
                    Some(Outcome::Known { why, .. }) => format!("KNOWN [{}]", why_tag(why)),
                    Some(Outcome::Unsupported(_)) => "n/a".to_string(),
                    None => "-".to_string(),
                };
                let _ = write!(s, " | {text:<24}");
            }
            s.push('\n');
        }
        s.push_str("(PASS interrupts-taken i, VM exits x, wall time; n/a: the backend cannot run it; KNOWN [tag]: a documented divergence, listed below)\n");
        let mut reasons: Vec<(String, BackendId, String)> = Vec::new();
        for c in &self.cells {
            match &c.outcome {
                Outcome::Fail { reason, .. } => {
                    let _ = writeln!(
                        s,
                        "\nFAIL {} on {}:\n  {}",
                        c.scenario,
                        c.backend,
                        reason.replace('\n', "\n  ")
                    );
                }
                Outcome::Unsupported(why) => reasons.push((c.scenario.clone(), c.backend, why.clone())),
                Outcome::Known { reason, why, .. } => {
                    let first = reason.lines().next().unwrap_or("");
                    let _ =
                        writeln!(s, "\nKNOWN {} on {} [{}]: {first}", c.scenario, c.backend, why_tag(why));
                }
                Outcome::Pass(_) => {}
            }
        }
        if !self.diffs.is_empty() || !self.known.is_empty() {
            let ok = self.diffs.iter().filter(|d| d.2.is_ok()).count();
            let _ = writeln!(
                s,
                "\ndifferential checks: {ok} of {} agree ({} known divergences)",
                self.diffs.len() + self.known.len(),
                self.known.len()
            );
            for (scenario, what, result) in &self.diffs {
                if let Err(diff) = result {
                    let _ = writeln!(s, "  DIFF {scenario}: {what}: {}", diff.replace('\n', "\n    "));
                }
            }
        }
        for (scenario, what, diff, reason) in &self.known {
            let first = diff.lines().next().unwrap_or("");
            let _ = writeln!(s, "  KNOWN {scenario}: {what} [{}]: {first}", why_tag(reason));
        }
        let mut whys: Vec<&str> = self
            .cells
            .iter()
            .filter_map(
                |c| if let Outcome::Known { why, .. } = &c.outcome { Some(why.as_str()) } else { None },
            )
            .chain(self.known.iter().map(|k| k.3.as_str()))
            .collect();
        whys.sort_unstable();
        whys.dedup();
        if !whys.is_empty() {
            let _ = writeln!(s, "\nknown divergences (not failures):");
            for why in whys {
                let _ = writeln!(s, "  [{}] {why}", why_tag(why));
            }
        }
        if !reasons.is_empty() {
            let _ = writeln!(s, "\nnot run:");
            for (scenario, backend, why) in reasons {
                let _ = writeln!(s, "  {scenario} on {backend}: {why}");
            }
        }
        for (backend, why) in &self.skipped {
            let _ = writeln!(s, "skipped backend {backend}: {why}");
        }
        s
    }

    /// The report as JSON (hand-written: no serde in the harness).
    pub fn json(&self) -> String {
        let q = |s: &str| {
            let mut out = String::from("\"");
            for ch in s.chars() {
                match ch {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c if (c as u32) < 0x20 => {
                        let _ = write!(out, "\\u{:04x}", c as u32);
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        };
        let stats = |st: &Stats| {
            format!(
                "\"interrupts\":{},\"exits\":{},\"wall_ms\":{:.3},\"model_ms\":{:.3}",
                st.interrupts,
                st.exits,
                st.wall.as_secs_f64() * 1e3,
                st.model_time.as_secs_f64() * 1e3
            )
        };
        let cells: Vec<String> = self
            .cells
            .iter()
            .map(|c| {
                let body = match &c.outcome {
                    Outcome::Pass(st) => format!("\"result\":\"pass\",{}", stats(st)),
                    Outcome::Fail { reason, stats: Some(st) } => {
                        format!("\"result\":\"fail\",\"reason\":{},{}", q(reason), stats(st))
                    }
                    Outcome::Fail { reason, stats: None } => {
                        format!("\"result\":\"fail\",\"reason\":{}", q(reason))
                    }
                    Outcome::Unsupported(why) => format!("\"result\":\"unsupported\",\"reason\":{}", q(why)),
                    Outcome::Known { reason, why, .. } => {
                        format!("\"result\":\"known\",\"reason\":{},\"why\":{}", q(reason), q(why))
                    }
                };
                format!(
                    "{{\"scenario\":{},\"backend\":{},{body}}}",
                    q(&c.scenario),
                    q(&c.backend.to_string())
                )
            })
            .collect();
        let skipped: Vec<String> = self
            .skipped
            .iter()
            .map(|(b, why)| format!("{{\"backend\":{},\"reason\":{}}}", q(&b.to_string()), q(why)))
            .collect();
        let mut diffs: Vec<String> = self
            .diffs
            .iter()
            .map(|(sc, what, r)| {
                let result = match r {
                    Ok(()) => "\"agree\":true".to_string(),
                    Err(d) => format!("\"agree\":false,\"difference\":{}", q(d)),
                };
                format!("{{\"scenario\":{},\"check\":{},{result}}}", q(sc), q(what))
            })
            .collect();
        diffs.extend(self.known.iter().map(|(sc, what, d, reason)| {
            format!(
                "{{\"scenario\":{},\"check\":{},\"agree\":false,\"known\":true,\"difference\":{},\"reason\":{}}}",
                q(sc),
                q(what),
                q(d),
                q(reason)
            )
        }));
        format!(
            "{{\"passed\":{},\"results\":[{}],\"differential\":[{}],\"skipped\":[{}]}}",
            !self.failed(),
            cells.join(","),
            diffs.join(","),
            skipped.join(",")
        )
    }
}
