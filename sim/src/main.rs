//! `meridian-sim --seed S [--regions R] [--nodes-per-region N] [--duration-s D] [--faults SPEC]`
//!
//! Prints the report of one simulated run; its last line is one JSON object. Exit status 0 when
//! every invariant held, 1 on a violation (the seed, the event trace before it and the command
//! that reproduces it are printed), 2 on bad arguments.

use clap::Parser;
use meridian_sim::{run, scenario};

#[derive(Parser, Debug)]
#[command(name = "meridian-sim", about = "Deterministic simulation of a Meridian cluster")]
struct Args {
    /// The seed: the same seed gives the same run, byte for byte.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 3)]
    regions: usize,
    #[arg(long, default_value_t = 3)]
    nodes_per_region: usize,
    /// Simulated seconds.
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// Faults, `;`-separated: region-down:R@S-E, upstream-down:R@S-E, partition:R,R|R@S-E,
    /// crash:NODE@S-E, leader-crash@S-E, rolling-restart@S-E, loss:P. Replaces the scenario's.
    #[arg(long)]
    faults: Option<String>,
    /// baseline, region-loss, partition, rolling-restart or quota-skew.
    #[arg(long, default_value = "region-loss")]
    scenario: String,
}

fn main() {
    let args = Args::parse();
    if args.regions == 0 || args.nodes_per_region == 0 || args.duration_s == 0 {
        eprintln!("meridian-sim: --regions, --nodes-per-region and --duration-s must be at least 1");
        std::process::exit(2);
    }
    let cfg = match scenario::config(
        &args.scenario,
        args.seed,
        args.regions,
        args.nodes_per_region,
        args.duration_s,
        args.faults.as_deref(),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("meridian-sim: {e:#}");
            std::process::exit(2);
        }
    };
    let report = match run::run(cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meridian-sim: {e:#}");
            std::process::exit(2);
        }
    };
    print!("{}", meridian_sim::run::render(&report, &args.scenario));
    let code = i32::from(report.violation.is_some());
    println!("{}", serde_json::to_string(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")));
    std::process::exit(code);
}
