//! The ledger's promises, checked over many seeded random rounds: a window's shares never add up
//! to more than the limit, and a decided window never changes.

use std::collections::BTreeMap;

use super::*;

fn terms(limit: u64, window_ms: u64) -> Vec<QuotaTerms> {
    vec![QuotaTerms { name: "q".into(), limit, window_ms }]
}

fn report(node: &str, demands: &[(&str, u64)]) -> DemandReport {
    DemandReport {
        node: node.into(),
        demands: demands
            .iter()
            .map(|(k, d)| KeyDemand { quota: "q".into(), key: (*k).into(), demand: *d })
            .collect(),
        counts: vec![QuotaCounts { quota: "q".into(), admitted: 1, rejected: 2 }],
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn windows_never_exceed_the_limit_and_never_change_once_sealed() {
    let nodes = ["a", "b", "c", "d", "e"];
    let keys = ["k1", "k2", "k3", "cold"];
    for seed in 1..40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let window_ms = [100, 250, 1000, 3000][(seed % 4) as usize];
        let mut limit = 1 + rng.next() % 500;
        let mut state = QuotaState::default();
        let mut decided: BTreeMap<(u64, &str, &str), Lease> = BTreeMap::new();
        let mut at = 1_000_000 + rng.next() % 10_000;
        for round in 0..200 {
            at += 50 + rng.next() % 400;
            if round % 50 == 49 {
                at += 5_000; // a leader gap: rounds stop for longer than the lease
            }
            if rng.next().is_multiple_of(40) {
                limit = 1 + rng.next() % 500;
            }
            let mut reports = Vec::new();
            for n in nodes {
                if rng.next().is_multiple_of(4) {
                    continue;
                }
                let mut d: Vec<(&str, u64)> = Vec::new();
                for k in &keys[..3] {
                    if rng.next().is_multiple_of(2) {
                        d.push((k, rng.next() % 900));
                    }
                }
                reports.push(report(n, &d));
            }
            state.apply_round(at, &terms(limit, window_ms), &reports);
            let ledger = state.ledger("q").expect("ledger");
            let current = at / window_ms;
            let Some(sealed) = ledger.sealed_through else { continue };
            for w in current.saturating_sub(1)..=sealed {
                for key in keys {
                    let mut sum = 0;
                    for node in nodes {
                        let lease = state.lease("q", key, node, w);
                        if let Lease::Share { share, .. } = lease {
                            sum += share;
                        }
                        let first = *decided.entry((w, key, node)).or_insert(lease);
                        if !matches!(first, Lease::Expired) {
                            let strip = |l: Lease| match l {
                                Lease::Share { share, .. } => Some(share),
                                Lease::NotParticipant => None,
                                other => panic!("seed {seed}: decided window {w} became {other:?}"),
                            };
                            assert_eq!(
                                strip(first),
                                strip(lease),
                                "seed {seed}: window {w} {key} {node} changed"
                            );
                        } else {
                            decided.insert((w, key, node), lease);
                        }
                    }
                    let cap = state.ledger("q").map_or(0, |_| {
                        // The limit in force when the window was sealed.
                        ledger.epochs.iter().rev().find(|e| e.from <= w).map_or(0, |e| e.limit)
                    });
                    assert!(sum <= cap, "seed {seed}: window {w} key {key}: {sum} > {cap}");
                }
            }
        }
    }
}

#[test]
fn shares_follow_uneven_demand() {
    let mut s = QuotaState::default();
    let mut at = 10_000_000;
    for _ in 0..8 {
        at += 250;
        let reports =
            vec![report("a", &[("t", 400)]), report("b", &[("t", 200)]), report("c", &[("t", 100)])];
        s.apply_round(at, &terms(100, 1000), &reports);
    }
    let w = at / 1000 + 1;
    let share = |n| match s.lease("q", "t", n, w) {
        Lease::Share { share, hot: true } => share,
        other => panic!("{other:?}"),
    };
    assert_eq!(share("a") + share("b") + share("c"), 100);
    assert!(
        share("a") > 50 && share("b") > 25 && share("c") > 10,
        "{} {} {}",
        share("a"),
        share("b"),
        share("c")
    );
    // A key nobody reported is split equally, the remainder rotating by window.
    let cold: Vec<u64> = ["a", "b", "c"]
        .iter()
        .map(|n| match s.lease("q", "other", n, w) {
            Lease::Share { share, hot: false } => share,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(cold.iter().sum::<u64>(), 100);
    assert_eq!(s.lease("q", "t", "stranger", w), Lease::NotParticipant);
    assert_eq!(s.lease("q", "t", "a", w + 100), Lease::Expired);
    assert_eq!(s.lease("nope", "t", "a", w), Lease::Unknown);
    assert_eq!(s.counts("q").len(), 3);
    let hot = s.hot_keys("q", w, 10);
    assert_eq!(hot.len(), 1);
    assert_eq!(hot[0].shares.len(), 3);
}

#[test]
fn the_current_window_is_never_sealed_late() {
    let mut s = QuotaState::default();
    let at = 5_000_500;
    s.apply_round(at, &terms(10, 1000), &[report("a", &[])]);
    assert_eq!(s.lease("q", "k", "a", at / 1000), Lease::Expired, "current window");
    assert!(matches!(s.lease("q", "k", "a", at / 1000 + 1), Lease::Share { share: 10, .. }));
}

#[test]
fn hot_keys_are_bounded_and_expire() {
    let mut s = QuotaState::default();
    let mut at = 1_000_000;
    let mut n = 0u64;
    // 10^5 distinct keys in a burst, in report-sized batches from three nodes.
    while n < 100_000 {
        at += 10;
        let reports: Vec<DemandReport> = ["a", "b", "c"]
            .iter()
            .map(|node| {
                let keys: Vec<String> =
                    (0..MAX_REPORT_KEYS as u64).map(|i| format!("key-{}", n + i)).collect();
                n += MAX_REPORT_KEYS as u64;
                let d: Vec<(&str, u64)> = keys.iter().map(|k| (k.as_str(), 5)).collect();
                report(node, &d)
            })
            .collect();
        s.apply_round(at, &terms(10, 1000), &reports);
        assert!(s.hot_key_count() <= MAX_HOT_KEYS as u64);
    }
    assert_eq!(s.hot_key_count(), MAX_HOT_KEYS as u64);
    // Demand stops: keys cool to the equal split and leave the ledger.
    for _ in 0..20 {
        at += 250;
        s.apply_round(at, &terms(10, 1000), &[report("a", &[])]);
    }
    assert_eq!(s.hot_key_count(), 0);
    assert!(s.shards.iter().all(|sh| sh.is_empty()));
}

#[test]
fn removed_or_reshaped_quotas_start_over() {
    let mut s = QuotaState::default();
    s.apply_round(1_000_000, &terms(10, 1000), &[report("a", &[("k", 50)])]);
    assert_eq!(s.hot_key_count(), 1);
    s.apply_round(1_000_250, &terms(10, 500), &[]);
    assert_eq!(s.hot_key_count(), 0, "a new window size drops the old decisions");
    assert_eq!(s.ledger("q").map(|l| l.window_ms), Some(500));
    s.apply_round(1_000_500, &[], &[]);
    assert!(s.ledger("q").is_none());
}

#[test]
fn images_round_trip() {
    let mut m = crate::machine::MachineState::default();
    let round = crate::Command::QuotaRound {
        at_ms: 2_000_000,
        terms: terms(100, 1000),
        reports: vec![report("a", &[("k", 90)]), report("b", &[("k", 10)])],
    };
    let (_, writes) = m.apply(&round);
    assert!(writes.len() >= 2, "meta and the key's shard are written");
    assert_eq!(crate::machine::MachineState::from_image(m.image()), m);
}
