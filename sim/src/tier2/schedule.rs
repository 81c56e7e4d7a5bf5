//! The seeded schedule of one tier-2 run: when faults strike, when the leader is asked to write
//! a routing table, when it proposes a quota round. A pure function of the config — no clock, no
//! cluster state — so one seed always names the same schedule.
//!
//! A fault that names "the leader" is resolved when it fires (which node leads depends on
//! elections the schedule does not control); every other target is fixed here.

use std::fmt;

use super::mix;
use super::Tier2Config;
use crate::rng::Rng;

/// No faults in the first second: the workload starts on a healthy cluster.
pub const WARMUP_MS: u64 = 1_000;
/// Mean gap between two table writes (each gap is this ±20%).
pub const WRITE_EVERY_MS: u64 = 500;
/// The leader proposes a quota round this often, as the node does.
pub const ROUND_EVERY_MS: u64 = 250;
/// Crashed nodes stay down, and cut links stay cut, for a time in this range.
const FAULT_MIN_MS: u64 = 300;
const FAULT_MAX_MS: u64 = 3_000;
/// Gap between two fault onsets.
const GAP_MIN_MS: u64 = 300;
const GAP_MAX_MS: u64 = 1_500;
/// At most this many nodes are down at once: with five voters, two down keeps a quorum — unless
/// a cut-off or a split takes more.
const MAX_DOWN: usize = 2;

/// One fault the driver injects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Stop node `node` (Raft and gossip, no goodbye); reopen it from its data dir after `down_ms`.
    Crash { node: usize, down_ms: u64 },
    /// Crash whichever node leads when the fault fires.
    CrashLeader { down_ms: u64 },
    /// Cut `node` off from every peer, Raft and gossip, for `for_ms`.
    Isolate { node: usize, for_ms: u64 },
    /// Split the cluster: `minority` on one side, every other node on the other, for `for_ms`.
    Split { minority: Vec<usize>, for_ms: u64 },
}

/// What happens at one instant of the schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Fault(Fault),
    /// The leader proposes routing table number `seq` (0-based).
    WriteTable {
        seq: u64,
    },
    /// The leader proposes quota round number `round`.
    QuotaRound {
        round: u64,
    },
    /// Faults are over: every node is up and connected from here on, and table writes stop.
    Heal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timed {
    /// Milliseconds since the workload began.
    pub at_ms: u64,
    pub action: Action,
}

/// Counts of what the schedule holds, for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScheduleSummary {
    pub crashes: u64,
    pub leader_crashes: u64,
    pub isolations: u64,
    pub splits: u64,
    pub table_writes: u64,
    pub quota_rounds: u64,
}

impl fmt::Display for ScheduleSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} crashes, {} leader crashes, {} isolations, {} splits, {} table writes, {} quota rounds",
            self.crashes,
            self.leader_crashes,
            self.isolations,
            self.splits,
            self.table_writes,
            self.quota_rounds
        )
    }
}

/// Every action of a run, in the order the driver performs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub actions: Vec<Timed>,
    /// When [`Action::Heal`] happens: the end of the fault phase.
    pub heal_at_ms: u64,
    /// When the run ends.
    pub end_ms: u64,
}

impl Schedule {
    pub fn generate(cfg: &Tier2Config) -> Schedule {
        let end_ms = cfg.duration_s * 1000;
        let heal_at_ms = end_ms - cfg.settle_s * 1000;
        let mut rng = Rng::new(mix(&[cfg.seed, cfg.nodes as u64, cfg.regions as u64]));
        let mut actions = faults(cfg, &mut rng, heal_at_ms);
        let mut at = 0;
        let mut seq = 0;
        while at < heal_at_ms {
            actions.push(Timed { at_ms: at, action: Action::WriteTable { seq } });
            seq += 1;
            at += range(&mut rng, WRITE_EVERY_MS * 4 / 5, WRITE_EVERY_MS * 6 / 5 + 1);
        }
        let rounds = end_ms.div_ceil(ROUND_EVERY_MS);
        actions.extend(
            (0..rounds)
                .map(|round| Timed { at_ms: round * ROUND_EVERY_MS, action: Action::QuotaRound { round } }),
        );
        actions.push(Timed { at_ms: heal_at_ms, action: Action::Heal });
        // Stable: at one instant, faults first (in the order drawn), then writes, rounds, heal.
        actions.sort_by_key(|t| t.at_ms);
        Schedule { actions, heal_at_ms, end_ms }
    }

    pub fn summary(&self) -> ScheduleSummary {
        let mut s = ScheduleSummary::default();
        for t in &self.actions {
            match &t.action {
                Action::Fault(Fault::Crash { .. }) => s.crashes += 1,
                Action::Fault(Fault::CrashLeader { .. }) => s.leader_crashes += 1,
                Action::Fault(Fault::Isolate { .. }) => s.isolations += 1,
                Action::Fault(Fault::Split { .. }) => s.splits += 1,
                Action::WriteTable { .. } => s.table_writes += 1,
                Action::QuotaRound { .. } => s.quota_rounds += 1,
                Action::Heal => {}
            }
        }
        s
    }

    /// A fingerprint of every action and its time: equal digests, equal schedules.
    pub fn digest(&self) -> u64 {
        let mut parts = vec![self.heal_at_ms, self.end_ms];
        for t in &self.actions {
            parts.push(t.at_ms);
            match &t.action {
                Action::Fault(Fault::Crash { node, down_ms }) => parts.extend([1, *node as u64, *down_ms]),
                Action::Fault(Fault::CrashLeader { down_ms }) => parts.extend([2, *down_ms]),
                Action::Fault(Fault::Isolate { node, for_ms }) => parts.extend([3, *node as u64, *for_ms]),
                Action::Fault(Fault::Split { minority, for_ms }) => {
                    parts.extend([4, *for_ms, minority.len() as u64]);
                    parts.extend(minority.iter().map(|n| *n as u64));
                }
                Action::WriteTable { seq } => parts.extend([5, *seq]),
                Action::QuotaRound { round } => parts.extend([6, *round]),
                Action::Heal => parts.push(7),
            }
        }
        mix(&parts)
    }
}

/// Draws the faults of the fault phase `[WARMUP_MS, heal_at_ms)`; each ends by `heal_at_ms`.
fn faults(cfg: &Tier2Config, rng: &mut Rng, heal_at_ms: u64) -> Vec<Timed> {
    let mut out = Vec::new();
    // When each node is back up (crash) or reconnected (isolation); when the split ends.
    let mut down_until = vec![0u64; cfg.nodes];
    let mut cut_until = vec![0u64; cfg.nodes];
    let mut leader_down_until: Vec<u64> = Vec::new();
    let mut split_until = 0u64;
    let mut at = WARMUP_MS + range(rng, 0, GAP_MAX_MS);
    while at + FAULT_MIN_MS <= heal_at_ms {
        let length = range(rng, FAULT_MIN_MS, FAULT_MAX_MS.min(heal_at_ms - at) + 1);
        let down_now = down_until.iter().chain(&leader_down_until).filter(|until| **until > at).count();
        let kind = range(rng, 0, 100);
        let node = range(rng, 0, cfg.nodes as u64) as usize;
        let fault = if kind < 30 {
            (down_now < MAX_DOWN && down_until[node] <= at).then(|| {
                down_until[node] = at + length;
                Fault::Crash { node, down_ms: length }
            })
        } else if kind < 55 {
            (down_now < MAX_DOWN).then(|| {
                leader_down_until.push(at + length);
                Fault::CrashLeader { down_ms: length }
            })
        } else if kind < 75 {
            (cut_until[node] <= at).then(|| {
                cut_until[node] = at + length;
                Fault::Isolate { node, for_ms: length }
            })
        } else {
            (split_until <= at && cfg.regions > 1).then(|| {
                split_until = at + length;
                Fault::Split { minority: minority(cfg, rng), for_ms: length }
            })
        };
        if let Some(fault) = fault {
            out.push(Timed { at_ms: at, action: Action::Fault(fault) });
        }
        at += range(rng, GAP_MIN_MS, GAP_MAX_MS);
    }
    out
}

/// Uniform in `[lo, hi)`; `lo` when the range is empty.
fn range(rng: &mut Rng, lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        return lo;
    }
    rng.between(lo, hi - 1)
}

/// The nodes of one region (node `i` is in region `i % regions`), or fewer when a region holds
/// half the cluster or more: a split leaves a strict majority on the other side.
fn minority(cfg: &Tier2Config, rng: &mut Rng) -> Vec<usize> {
    let region = range(rng, 0, cfg.regions as u64) as usize;
    let max = (cfg.nodes - 1) / 2;
    (0..cfg.nodes).filter(|i| i % cfg.regions == region).take(max.max(1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let cfg = Tier2Config::new(42, 10);
        let a = Schedule::generate(&cfg);
        assert_eq!(a, Schedule::generate(&cfg));
        assert_eq!(a.digest(), Schedule::generate(&cfg).digest());
        let other = Schedule::generate(&Tier2Config::new(43, 10));
        assert_ne!(a.digest(), other.digest());
    }

    #[test]
    fn faults_end_before_the_heal_and_actions_are_ordered() {
        for seed in 0..50 {
            let s = Schedule::generate(&Tier2Config::new(seed, 12));
            assert!(s.actions.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
            for t in &s.actions {
                let end = match &t.action {
                    Action::Fault(Fault::Crash { down_ms, .. } | Fault::CrashLeader { down_ms }) => {
                        t.at_ms + down_ms
                    }
                    Action::Fault(Fault::Isolate { for_ms, .. } | Fault::Split { for_ms, .. }) => {
                        t.at_ms + for_ms
                    }
                    Action::WriteTable { .. } => t.at_ms,
                    _ => continue,
                };
                assert!(end <= s.heal_at_ms, "seed {seed}: {t:?} outlasts the heal at {}", s.heal_at_ms);
                assert!(t.at_ms >= WARMUP_MS || !matches!(t.action, Action::Fault(_)));
            }
            assert!(s.summary().crashes + s.summary().leader_crashes > 0, "seed {seed}: no crash");
        }
    }
}
