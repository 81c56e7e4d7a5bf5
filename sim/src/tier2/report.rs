//! [`Tier2Report`]: what one tier-2 run found — the part a seed reproduces, and the measurements
//! ([`Observed`]) that vary from run to run of the same seed.

use std::fmt;

use serde::Serialize;

use super::schedule::ScheduleSummary;

/// One run's result. Its `Display` shows only what the seed reproduces: the configuration, the
/// schedule and the violations (none, on a correct cluster). `observed` is printed on its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tier2Report {
    pub seed: u64,
    pub nodes: usize,
    pub regions: usize,
    pub duration_s: u64,
    /// Fingerprint of the schedule: every action and its time.
    pub schedule_digest: u64,
    pub schedule: ScheduleSummary,
    /// Every invariant violation, in the order found; empty on a good run. Reproducible while
    /// empty; a violation may depend on a race a rerun does not hit (rerun the seed a few times).
    pub violations: Vec<String>,
    /// Measurements that depend on openraft's unseeded election timeouts, chitchat's random peer
    /// choice and the order blocking disk writes complete in: they vary between runs of one seed.
    pub observed: Observed,
}

/// What the cluster did with the schedule; not reproducible by seed (see [`Tier2Report`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Observed {
    /// Terms won after the first leader's.
    pub leader_changes: u64,
    /// Periods with no usable leader (up, on the majority side), whatever the cause.
    pub leaderless_periods: u64,
    /// The longest of those periods that ended.
    pub max_failover_ms: u64,
    /// Time from the end of the last fault until every node agreed on the leader, the routing
    /// version and the gossip view; `None` if that never happened (then there is a violation).
    pub convergence_ms: Option<u64>,
    /// Distinct routing versions seen committed.
    pub committed_versions: u64,
    /// (quota, window) pairs checked on some node's ledger, repeats included.
    pub quota_windows_checked: u64,
    pub traffic: Traffic,
}

/// How the workload fared: proposals made, committed, failed, or not made for want of a leader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    pub writes_proposed: u64,
    pub writes_committed: u64,
    pub writes_failed: u64,
    pub writes_without_leader: u64,
    pub rounds_proposed: u64,
    pub rounds_committed: u64,
    pub rounds_failed: u64,
    pub rounds_without_leader: u64,
    /// `CrashLeader` faults that found no leader to crash.
    pub leader_crashes_without_leader: u64,
}

impl fmt::Display for Tier2Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tier2 seed {} ({} nodes, {} regions, {} s): schedule {:016x}: {}",
            self.seed, self.nodes, self.regions, self.duration_s, self.schedule_digest, self.schedule
        )?;
        if self.violations.is_empty() {
            write!(f, "\n  no violations")
        } else {
            write!(f, "\n  {} violations:", self.violations.len())?;
            self.violations.iter().try_for_each(|v| write!(f, "\n    {v}"))
        }
    }
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.traffic;
        let convergence = self.convergence_ms.map_or_else(|| "never".to_string(), |ms| format!("{ms} ms"));
        writeln!(
            f,
            "observed: {} leader changes, {} leaderless periods (longest {} ms), converged after {convergence}, \
             {} versions committed, {} quota windows checked",
            self.leader_changes,
            self.leaderless_periods,
            self.max_failover_ms,
            self.committed_versions,
            self.quota_windows_checked
        )?;
        write!(
            f,
            "  writes {}/{} committed ({} failed, {} without leader), rounds {}/{} ({} failed, {} without leader)",
            t.writes_committed,
            t.writes_proposed,
            t.writes_failed,
            t.writes_without_leader,
            t.rounds_committed,
            t.rounds_proposed,
            t.rounds_failed,
            t.rounds_without_leader
        )
    }
}
