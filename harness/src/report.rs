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
    /// It differed from its expectation by exactly a known divergence ([`crate::known`]): not a
    /// failure, always printed.
    Known {
        /// The cause's tag ([`crate::known::Cause::tag`]).
        tag: &'static str,
        /// The differences it showed.
        difference: String,
        /// Counters, if the run completed.
        stats: Option<Stats>,
    },
}

impl Outcome {
    /// The table's cell text.
    pub fn short(&self) -> &'static str {
        match self {
            Outcome::Pass(_) => "ok",
            Outcome::Fail { .. } => "FAIL",
            Outcome::Known { .. } => "known",
            Outcome::Unsupported(_) => "n/a",
        }
    }

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
    /// Comparisons that agree once the known divergences of either side are undone:
    /// (scenario, description, the causes' tags). Not failures, always printed.
    pub known: Vec<(String, String, Vec<&'static str>)>,
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
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
}

/// The report's width.
const WIDTH: usize = 100;

/// `text` folded at word boundaries to [`WIDTH`] columns, continuation lines indented by
/// `indent`, with a final newline.
fn wrap(text: &str, indent: &str) -> String {
    let mut out = String::new();
    let body = text.trim_start_matches(' ');
    let mut line = text[..text.len() - body.len()].to_string();
    for word in body.split(' ') {
        if !line.trim().is_empty() {
            if line.chars().count() + 1 + word.chars().count() > WIDTH {
                out.push_str(line.trim_end());
                out.push('\n');
                line = indent.to_string();
            } else {
                line.push(' ');
            }
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
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

    /// The human-readable table (fits 100 columns), then failures, known divergences,
    /// unsupported cells (with `verbose`) and skipped backends.
    pub fn table(&self, verbose: bool) -> String {
        let mut s = String::new();
        let width = self.scenarios.iter().map(String::len).max().unwrap_or(8).max(8);
        let _ = write!(s, "{:width$}", "scenario");
        for b in &self.backends {
            let _ = write!(s, " {:>5}", b.short_name());
        }
        s.push('\n');
        for name in &self.scenarios {
            let _ = write!(s, "{name:width$}");
            for b in &self.backends {
                let text = self.cell(name, *b).map_or("-", Outcome::short);
                let _ = write!(s, " {text:>5}");
            }
            s.push('\n');
        }
        s.push_str(
            "(sw software, apv software-apicv, usr kvm-userspace, spl kvm-split, kern kvm-kernel,\n \
             migr kvm-migrate; /k kvm profile, /d datasheet profile; ok passed, FAIL failed,\n \
             known exactly a known divergence listed below, n/a the backend cannot run it)\n",
        );
        if verbose {
            s.push_str("\nper cell: interrupts taken, VM exits, wall time\n");
            for c in &self.cells {
                if let Outcome::Pass(st) = &c.outcome {
                    let _ = writeln!(
                        s,
                        "  {} on {}: {}i {}x {}",
                        c.scenario,
                        c.backend,
                        st.interrupts,
                        st.exits,
                        ms(st.wall)
                    );
                }
            }
        }
        let mut reasons: Vec<(String, BackendId, String)> = Vec::new();
        let mut tags: Vec<&str> = Vec::new();
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
                Outcome::Known { tag, difference, .. } => {
                    tags.push(tag);
                    let line = format!("KNOWN {} on {} [{tag}]: {difference}", c.scenario, c.backend);
                    s.push_str(&wrap(&line, "    "));
                }
                Outcome::Pass(_) => {}
            }
        }
        if !self.diffs.is_empty() || !self.known.is_empty() {
            let ok = self.diffs.iter().filter(|d| d.2.is_ok()).count();
            let _ = writeln!(
                s,
                "\ndifferential checks: {ok} of {} agree, {} more once known divergences are undone",
                self.diffs.len() + self.known.len(),
                self.known.len()
            );
            for (scenario, what, result) in &self.diffs {
                if let Err(diff) = result {
                    let _ = writeln!(s, "  DIFF {scenario}: {what}: {}", diff.replace('\n', "\n    "));
                }
            }
            if verbose {
                for (scenario, what, tags) in &self.known {
                    let _ = writeln!(s, "  KNOWN {scenario}: {what} [{}]", tags.join(", "));
                }
            }
            tags.extend(self.known.iter().flat_map(|k| k.2.iter().copied()));
        }
        tags.sort_unstable();
        tags.dedup();
        if !tags.is_empty() {
            let _ = writeln!(s, "\nknown divergences (not failures):");
            for tag in tags {
                let reason = crate::known::cause(tag).map_or("", |c| c.reason);
                s.push_str(&wrap(&format!("  [{tag}] {reason}"), "    "));
            }
        }
        if verbose && !reasons.is_empty() {
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
        let q = json_string;
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
                    Outcome::Known { tag, difference, .. } => {
                        format!("\"result\":\"known\",\"tag\":{},\"difference\":{}", q(tag), q(difference))
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
        diffs.extend(self.known.iter().map(|(sc, what, tags)| {
            format!(
                "{{\"scenario\":{},\"check\":{},\"agree\":true,\"known\":{}}}",
                q(sc),
                q(what),
                q(&tags.join(", "))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_report_lines_fold_to_the_width_at_words() {
        let text = format!("  [tag] {}", "word ".repeat(60).trim_end());
        let folded = wrap(&text, "    ");
        assert!(folded.lines().all(|l| l.chars().count() <= WIDTH), "{folded}");
        assert!(folded.lines().skip(1).all(|l| l.starts_with("    word")), "{folded}");
        assert_eq!(folded.split_whitespace().filter(|w| *w == "word").count(), 60);
        assert!(folded.starts_with("  [tag] word"), "{folded}");
    }
}
