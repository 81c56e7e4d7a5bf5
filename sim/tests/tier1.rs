//! Tier 1 over many seeds: every standard scenario holds every invariant, and a seed always gives
//! the same output (and different seeds different ones).

use meridian_sim::run::{self, render};
use meridian_sim::scenario;

fn output(name: &str, seed: u64, regions: usize, nodes: usize, secs: u64) -> (String, bool) {
    let cfg = scenario::config(name, seed, regions, nodes, secs, None).expect("scenario");
    let report = run::run(cfg).expect("run");
    let text = format!("{}{}", render(&report, name), serde_json::to_string(&report).expect("json"));
    (text, report.violation.is_none())
}

#[test]
fn hundreds_of_seeds_hold_every_invariant() {
    let mut runs = 0;
    for name in scenario::NAMES {
        for seed in 0..60u64 {
            let (regions, nodes) = (2 + (seed % 4) as usize, 1 + (seed % 3) as usize);
            let (text, ok) = output(name, seed, regions, nodes, 20);
            assert!(ok, "scenario {name} seed {seed}:\n{text}");
            runs += 1;
        }
    }
    assert_eq!(runs, 300);
}

#[test]
fn the_same_seed_prints_the_same_bytes_and_other_seeds_differ() {
    for name in scenario::NAMES {
        let (a, _) = output(name, 11, 4, 3, 30);
        let (b, _) = output(name, 11, 4, 3, 30);
        assert_eq!(a, b, "scenario {name}: two runs of seed 11 differ");
        let (c, _) = output(name, 12, 4, 3, 30);
        assert_ne!(a, c, "scenario {name}: seeds 11 and 12 printed the same");
    }
}

#[test]
fn faults_from_the_command_line_replace_the_scenario() {
    let cfg =
        scenario::config("baseline", 1, 3, 2, 20, Some("upstream-down:us@5-15;loss:0.01")).expect("cfg");
    let report = run::run(cfg).expect("run");
    assert_eq!(report.faults, "upstream-down:us@5-15;loss:0.01");
    assert!(report.forwarded_share > 0.0, "us requests were forwarded while its upstream was down");
    assert!(report.violation.is_none(), "{report:?}");
    assert!(scenario::config("nope", 1, 3, 2, 20, None).is_err());
}

#[test]
fn a_quota_under_skew_is_held_to_its_limit() {
    let cfg = scenario::config("quota-skew", 5, 3, 3, 30, None).expect("cfg");
    let report = run::run(cfg).expect("run");
    let (mean, _, max) = report.quota_accuracy.expect("saturated windows were measured");
    assert!(report.violation.is_none(), "{report:?}");
    assert!(mean > 0.9, "mean accuracy {mean}");
    assert!(max <= 1.2, "max {max}: only a restarted leader's fallback may overshoot, by its local share");
}
