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
                    Some(Outcome::Unsupported(_)) => "n/a".to_string(),
                    None => "-".to_string(),
                };
                let _ = write!(s, " | {text:<24}");
            }
            s.push('\n');
        }
        s.push_str("(PASS interrupts-taken i, VM exits x, wall time; n/a: the backend cannot run it, reason below)\n");
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
                Outcome::Pass(_) => {}
            }
        }
        if !self.diffs.is_empty() {
            let ok = self.diffs.iter().filter(|d| d.2.is_ok()).count();
            let _ = writeln!(s, "\ndifferential checks: {ok} of {} agree", self.diffs.len());
            for (scenario, what, result) in &self.diffs {
                if let Err(diff) = result {
                    let _ = writeln!(s, "  DIFF {scenario}: {what}: {}", diff.replace('\n', "\n    "));
                }
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
        let diffs: Vec<String> = self
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
        format!(
            "{{\"passed\":{},\"results\":[{}],\"differential\":[{}],\"skipped\":[{}]}}",
            !self.failed(),
            cells.join(","),
            diffs.join(","),
            skipped.join(",")
        )
    }
}
