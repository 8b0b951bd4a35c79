//! `cargo run --release`: runs every built-in scenario on every backend this machine supports
//! and prints a table (scenario × backend: pass/fail, interrupts taken, VM exits, wall time)
//! and the differential checks. Exits non-zero if anything fails.
//!
//! ```text
//! irq-harness [--backend NAME]... [--scenario NAME]... [--vcpus N] [--json]
//!             [--replay FILE] [--list] [--bench [--bench-irqs N]]
//! ```
//! `--backend` takes a family (`kvm-userspace`) or a full name (`kvm-userspace/datasheet`,
//! also spelled `kvm-userspace/sdm`). `--vcpus N` adds recording APs to every scenario that has
//! none of its own (the SMP scenarios keep their two vCPUs). `--bench` runs the PIC, IOAPIC and
//! x2APIC self-IPI loops on every backend.

use std::process::ExitCode;

use irq_harness::backend::{self, BackendId, RunOptions};
use irq_harness::scenario::Scenario;
use irq_harness::{bench, diff, scenarios};

struct Args {
    backends: Vec<String>,
    scenarios: Vec<String>,
    vcpus: usize,
    json: bool,
    replay: Option<String>,
    list: bool,
    bench: bool,
    bench_irqs: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        backends: vec![],
        scenarios: vec![],
        vcpus: 1,
        json: false,
        replay: None,
        list: false,
        bench: false,
        bench_irqs: 20_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--backend" => args.backends.extend(value("--backend")?.split(',').map(str::to_string)),
            "--scenario" => args.scenarios.extend(value("--scenario")?.split(',').map(str::to_string)),
            "--vcpus" => {
                args.vcpus = value("--vcpus")?.parse().map_err(|_| "--vcpus needs a number".to_string())?;
                if args.vcpus == 0 || args.vcpus > irq_harness::MAX_VCPUS {
                    return Err(format!("--vcpus must be 1-{}", irq_harness::MAX_VCPUS));
                }
            }
            "--json" => args.json = true,
            "--replay" => args.replay = Some(value("--replay")?),
            "--list" => args.list = true,
            "--bench" => args.bench = true,
            "--bench-irqs" => {
                args.bench_irqs =
                    value("--bench-irqs")?.parse().map_err(|_| "--bench-irqs needs a number".to_string())?
            }
            "-h" | "--help" => {
                println!(
                    "usage: irq-harness [--backend NAME]... [--scenario NAME]... [--vcpus N] [--json] [--replay FILE] [--list] [--bench [--bench-irqs N]]\nbackends: {} (/sdm = /datasheet)",
                    BackendId::ALL.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("irq-harness: {e}");
            return ExitCode::from(2);
        }
    };
    let (mut backends, mut skipped) = backend::available();
    if !args.backends.is_empty() {
        for pattern in &args.backends {
            if !BackendId::ALL.iter().any(|id| id.matches(pattern)) {
                eprintln!("irq-harness: unknown backend `{pattern}`");
                return ExitCode::from(2);
            }
        }
        backends.retain(|b| args.backends.iter().any(|p| b.id().matches(p)));
        skipped.retain(|(id, _)| args.backends.iter().any(|p| id.matches(p)));
    }
    if args.bench {
        let result = bench::run(&backends, args.bench_irqs);
        print!("{}", result.table());
        for (id, why) in &skipped {
            println!("skipped backend {id}: {why}");
        }
        return if result.failed() { ExitCode::FAILURE } else { ExitCode::SUCCESS };
    }
    let mut list: Vec<Scenario> = match &args.replay {
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| Scenario::parse(&text).map_err(|e| format!("{path}: {e}")))
        {
            Ok(s) => vec![s],
            Err(e) => {
                eprintln!("irq-harness: malformed scenario: {e}");
                return ExitCode::from(2);
            }
        },
        None => scenarios::all(),
    };
    if !args.scenarios.is_empty() {
        for name in &args.scenarios {
            if !list.iter().any(|s| &s.name == name) {
                eprintln!("irq-harness: unknown scenario `{name}` (see --list)");
                return ExitCode::from(2);
            }
        }
        list.retain(|s| args.scenarios.contains(&s.name));
    }
    if args.list {
        for s in &list {
            println!("{:<34} {}", s.name, s.description);
        }
        return ExitCode::SUCCESS;
    }
    if args.vcpus > 1 {
        list = list.into_iter().map(|s| diff::with_vcpus(s, args.vcpus)).collect();
    }
    let mut report = diff::run_matrix(&list, &backends, &RunOptions::default());
    report.skipped = skipped;
    if args.json {
        println!("{}", report.json());
    } else {
        println!(
            "vm-irq harness: {} scenarios × {} backends\n",
            report.scenarios.len(),
            report.backends.len()
        );
        print!("{}", report.table());
        println!("\n{}", if report.failed() { "FAILED" } else { "all passed" });
    }
    if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
