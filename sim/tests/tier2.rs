//! Tier 2 end to end: the real Raft store and gossip layer, tens of nodes under simulated time,
//! driven through seeded faults; every run must break no invariant.
//!
//! What a seed reproduces is its schedule and, on a correct cluster, the empty violation list —
//! the report's `Display`. The measurements printed after it (`observed`) vary from run to run.

use meridian_sim::tier2;
use meridian_sim::tier2::Schedule;
use meridian_sim::tier2::Tier2Config;
use meridian_sim::tier2::Tier2Report;

fn run(cfg: &Tier2Config) -> Tier2Report {
    let report = tier2::run(cfg).expect("the run completes");
    eprintln!("{report}\n{}", report.observed);
    assert!(report.violations.is_empty(), "{report}");
    assert_eq!(Schedule::generate(cfg).digest(), report.schedule_digest, "the seed names the schedule");
    report
}

#[test]
fn t10_three_seeds_of_ten_nodes() {
    for seed in 1..=3 {
        run(&Tier2Config::new(seed, 10));
    }
}

#[test]
fn t20_thirty_nodes() {
    run(&Tier2Config { duration_s: 12, ..Tier2Config::new(4, 30) });
}

#[test]
fn t30_a_seed_reproduces_its_report() {
    let cfg = Tier2Config { duration_s: 10, ..Tier2Config::new(5, 10) };
    let (a, b) = (run(&cfg), run(&cfg));
    assert_eq!(a.to_string(), b.to_string());
}
