//! `cargo run --release`: runs every built-in scenario on every backend this machine supports
//! and prints a table (scenario × backend) and the differential checks. Exits non-zero if
//! anything fails. `--help` lists the subcommands (`run`, the default; `list`, `replay`,
//! `bench`) and their flags.

use std::io::{IsTerminal, Write as _};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

use irq_harness::backend::{self, BackendId, RunOptions, SharedBackend};
use irq_harness::report::{json_string, Cell, Outcome};
use irq_harness::scenario::Scenario;
use irq_harness::{bench, diff, scenarios};

/// Runs the vm-irq models and Linux KVM's irqchip under a probe guest and compares them.
#[derive(Parser, Debug)]
#[command(name = "irq-harness", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `run`'s flags, when no subcommand is given.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run scenarios on backends and compare them (the default).
    Run(RunArgs),
    /// List the built-in scenarios and the backends, with what this machine can run.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run one scenario from a file in the text form (as a failing property test prints it).
    Replay {
        /// The scenario file.
        file: std::path::PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Interrupts per second per backend: the PIC, IOAPIC and x2APIC self-IPI loops.
    Bench {
        /// Interrupts per backend and loop.
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        irqs: u64,
        /// Backends (a family such as `kvm-userspace`, or a full name such as `kvm-split/sdm`);
        /// repeat or separate with commas. Default: every backend this machine has.
        #[arg(long, value_delimiter = ',', value_parser = parse_backend)]
        backend: Vec<String>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug, Default)]
struct RunArgs {
    /// Backends (a family such as `kvm-userspace`, or a full name such as `kvm-split/sdm`);
    /// repeat or separate with commas. Default: every backend this machine has.
    #[arg(long, value_delimiter = ',', value_parser = parse_backend)]
    backend: Vec<String>,
    /// Scenarios by name (see `list`); repeat or separate with commas. Default: all.
    #[arg(long, value_delimiter = ',')]
    scenario: Vec<String>,
    /// Add recording application processors to scenarios that have none, up to this many
    /// vCPUs in all (the probe guest has room for 4).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=irq_harness::MAX_VCPUS as i64))]
    vcpus: u8,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Show per-cell counters, every agreeing known comparison and why cells were not run.
    #[arg(long, short)]
    verbose: bool,
}

/// Accepts a backend family or full name.
fn parse_backend(s: &str) -> Result<String, String> {
    if BackendId::ALL.iter().any(|id| id.matches(s)) {
        Ok(s.to_string())
    } else {
        let names: Vec<String> = BackendId::ALL.iter().map(ToString::to_string).collect();
        Err(format!("unknown backend (one of {}, a family, or /sdm for /datasheet)", names.join(", ")))
    }
}

/// The backends `patterns` select (all when empty), and those this machine cannot run.
fn select_backends(patterns: &[String]) -> (Vec<SharedBackend>, Vec<(BackendId, String)>) {
    let (mut backends, mut skipped) = backend::available();
    if !patterns.is_empty() {
        backends.retain(|b| patterns.iter().any(|p| b.id().matches(p)));
        skipped.retain(|(id, _)| patterns.iter().any(|p| id.matches(p)));
    }
    (backends, skipped)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run(scenarios::all(), &cli.run),
        Some(Command::Run(args)) => run(scenarios::all(), &args),
        Some(Command::Replay { file, run: args }) => {
            let scenario = std::fs::read_to_string(&file)
                .map_err(|e| format!("{}: {e}", file.display()))
                .and_then(|text| Scenario::parse(&text).map_err(|e| format!("{}: {e}", file.display())));
            match scenario {
                Ok(s) => run(vec![s], &args),
                Err(e) => {
                    eprintln!("irq-harness: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Command::List { json }) => list(json),
        Some(Command::Bench { irqs, backend, json }) => {
            let (backends, skipped) = select_backends(&backend);
            let result = bench::run(&backends, irqs);
            if json {
                println!("{}", result.json());
            } else {
                print!("{}", result.table());
                for (id, why) in &skipped {
                    println!("skipped backend {id}: {why}");
                }
            }
            if result.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

fn list(json: bool) -> ExitCode {
    let all = scenarios::all();
    let (backends, skipped) = backend::available();
    if json {
        let s: Vec<String> = all
            .iter()
            .map(|s| {
                format!(
                    "{{\"name\":{},\"description\":{}}}",
                    json_string(&s.name),
                    json_string(&s.description)
                )
            })
            .collect();
        let b: Vec<String> = BackendId::ALL
            .iter()
            .map(|id| {
                let why = skipped.iter().find(|(s, _)| s == id).map(|(_, why)| why.as_str());
                match why {
                    None => format!("{{\"name\":\"{id}\",\"available\":true}}"),
                    Some(why) => {
                        format!("{{\"name\":\"{id}\",\"available\":false,\"reason\":{}}}", json_string(why))
                    }
                }
            })
            .collect();
        println!("{{\"scenarios\":[{}],\"backends\":[{}]}}", s.join(","), b.join(","));
        return ExitCode::SUCCESS;
    }
    println!("scenarios:");
    for s in &all {
        println!("  {:<32} {}", s.name, s.description);
    }
    println!("\nbackends (/sdm is an alias of /datasheet):");
    for id in BackendId::ALL {
        let here = backends.iter().any(|b| b.id() == id);
        let why = skipped.iter().find(|(s, _)| *s == id).map_or(String::new(), |(_, w)| format!(": {w}"));
        println!(
            "  {:<26} {:<5} {}{why}",
            id.to_string(),
            id.short_name(),
            if here { "available" } else { "skipped" }
        );
    }
    ExitCode::SUCCESS
}

fn run(mut list: Vec<Scenario>, args: &RunArgs) -> ExitCode {
    for name in &args.scenario {
        if !list.iter().any(|s| &s.name == name) {
            eprintln!("irq-harness: unknown scenario `{name}` (see `irq-harness list`)");
            return ExitCode::from(2);
        }
    }
    if !args.scenario.is_empty() {
        list.retain(|s| args.scenario.contains(&s.name));
    }
    if args.vcpus > 1 {
        list = list.into_iter().map(|s| diff::with_vcpus(s, usize::from(args.vcpus))).collect();
    }
    let (backends, skipped) = select_backends(&args.backend);
    let started = Instant::now();
    let total = list.len();
    let tty = std::io::stderr().is_terminal();
    let mut done = 0;
    let mut report = diff::run_matrix_with(&list, &backends, &RunOptions::default(), |scenario, cells| {
        done += 1;
        progress(tty, done, total, &scenario.name, cells, started);
    });
    if tty {
        eprintln!();
    }
    report.skipped = skipped;
    if args.json {
        println!("{}", report.json());
    } else {
        println!(
            "vm-irq harness: {} scenarios × {} backends\n",
            report.scenarios.len(),
            report.backends.len()
        );
        print!("{}", report.table(args.verbose));
        println!("\n{}", if report.failed() { "FAILED" } else { "all passed" });
    }
    if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// One line per finished scenario on stderr: rewritten in place on a terminal, appended
/// otherwise (CI logs).
fn progress(tty: bool, done: usize, total: usize, name: &str, cells: &[Cell], started: Instant) {
    let summary: Vec<String> = cells
        .iter()
        .filter(|c| !matches!(c.outcome, Outcome::Pass(_) | Outcome::Unsupported(_)))
        .map(|c| format!("{} {}", c.outcome.short(), c.backend.short_name()))
        .collect();
    let status = if summary.is_empty() { "ok".to_string() } else { summary.join(", ") };
    let line = format!("[{done:>3}/{total}] {:>6.1}s {name}: {status}", started.elapsed().as_secs_f64());
    let mut err = std::io::stderr().lock();
    if tty {
        let bar = "#".repeat(done * 20 / total.max(1));
        let _ = write!(err, "\r\x1b[2K[{bar:<20}] {line}");
    } else {
        let _ = writeln!(err, "{line}");
    }
    let _ = err.flush();
}
