//! The driver: bootstraps the cluster, then walks simulated time in [`STEP`]s — firing the
//! schedule's actions and the ends of its faults, collecting proposal outcomes, sampling every
//! node and running the invariants after each step — until the schedule ends.
//!
//! The clock is tokio's, paused: between steps it jumps straight to the next timer any node has
//! set, and stands still while a node waits on its disk.

use std::collections::BTreeSet;
use std::time::Duration;

use meridian_raft_store::CommandResult;
use meridian_raft_store::ProposeError;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::cluster::SimCluster;
use super::committed_versions::CommittedVersions;
use super::convergence::Convergence;
use super::failover::FailoverClock;
use super::one_leader::OneLeaderPerTerm;
use super::quota_ledger::QuotaLedgerCheck;
use super::report::Observed;
use super::report::Tier2Report;
use super::report::Traffic;
use super::sample::NodeSample;
use super::sample::Sampler;
use super::schedule::Action;
use super::schedule::Fault;
use super::schedule::Schedule;
use super::workload;
use super::Tier2Config;

/// Simulated time between two samples of the cluster.
pub const STEP: Duration = Duration::from_millis(10);

/// The end of a fault, due at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Recovery {
    Restart(usize),
    Reconnect(usize),
    EndSplit,
}

/// What a proposal task reports back.
enum Outcome {
    Table { seq: u64, result: Result<CommandResult, ProposeError> },
    Round { result: Result<CommandResult, ProposeError> },
}

/// The invariants and measurements, fed every sample.
struct Checks {
    one_leader: OneLeaderPerTerm,
    committed: CommittedVersions,
    convergence: Convergence,
    quota: QuotaLedgerCheck,
    failover: FailoverClock,
}

impl Checks {
    fn new(ids: &[String], raft_ids: Vec<u64>) -> Self {
        let keys = workload::KEYS.iter().chain([&workload::COLD_KEY]).map(|k| k.to_string()).collect();
        Checks {
            one_leader: OneLeaderPerTerm::new(ids.to_vec()),
            committed: CommittedVersions::new(ids.to_vec()),
            convergence: Convergence::new(ids.to_vec(), raft_ids),
            quota: QuotaLedgerCheck::new(ids.to_vec(), workload::terms(), keys),
            failover: FailoverClock::default(),
        }
    }

    fn observe(&mut self, at_ms: u64, samples: &[NodeSample], usable_leader: bool) {
        self.one_leader.observe(at_ms, samples);
        self.committed.observe(at_ms, samples);
        self.convergence.observe(at_ms, samples);
        self.quota.observe(at_ms, samples);
        self.failover.observe(at_ms, usable_leader);
    }
}

/// Runs one schedule on `cluster`; the caller shuts the cluster down, also on error.
pub async fn drive(
    cfg: &Tier2Config,
    schedule: &Schedule,
    cluster: &mut SimCluster,
) -> anyhow::Result<Tier2Report> {
    cluster.bootstrap().await?;
    let ids: Vec<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();
    let mut checks = Checks::new(&ids, cluster.nodes.iter().map(|n| n.raft.raft_id()).collect());
    let mut sampler = Sampler::new(ids.len());
    let mut traffic = Traffic::default();
    let mut recoveries: BTreeSet<(u64, Recovery)> = BTreeSet::new();
    let (outcome_tx, mut outcomes) = mpsc::unbounded_channel();
    let mut actions = schedule.actions.iter().peekable();
    let start = Instant::now();
    checks.convergence.whole(0);
    loop {
        let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        while let Some(&(at, recovery)) = recoveries.first().filter(|(at, _)| *at <= now) {
            recoveries.remove(&(at, recovery));
            match recovery {
                Recovery::Restart(i) => cluster.start(i).await?,
                Recovery::Reconnect(i) => cluster.reconnect(i).await,
                Recovery::EndSplit => cluster.heal_split().await,
            }
            if cluster.is_whole() {
                checks.convergence.whole(now);
            }
        }
        while let Some(timed) = actions.next_if(|t| t.at_ms <= now) {
            let at = timed.at_ms;
            match &timed.action {
                Action::Fault(fault) => {
                    checks.convergence.disturbed();
                    inject(cluster, &mut recoveries, &mut traffic, at, fault).await;
                }
                Action::WriteTable { seq } => {
                    let Some(leader) = cluster.leader() else {
                        traffic.writes_without_leader += 1;
                        continue;
                    };
                    let Some(running) = &cluster.nodes[leader].up else { continue };
                    let cmd = workload::put_table(cfg.seed, *seq, &ids[leader], at);
                    checks.committed.proposed(&workload::table_json(cfg.seed, *seq));
                    traffic.writes_proposed += 1;
                    let (store, tx, seq) = (running.store.clone(), outcome_tx.clone(), *seq);
                    tokio::spawn(async move {
                        let _ = tx.send(Outcome::Table { seq, result: store.propose(cmd).await });
                    });
                }
                Action::QuotaRound { round } => {
                    let Some(leader) = cluster.leader() else {
                        traffic.rounds_without_leader += 1;
                        continue;
                    };
                    let Some(running) = &cluster.nodes[leader].up else { continue };
                    // Only nodes that can reach the leader get their demand into the round.
                    let reporters: Vec<(usize, &str)> = (0..ids.len())
                        .filter(|i| cluster.is_up(*i) && cluster.linked(leader, *i))
                        .map(|i| (i, ids[i].as_str()))
                        .collect();
                    let cmd = workload::quota_round(cfg.seed, *round, at, cfg.regions, &reporters);
                    traffic.rounds_proposed += 1;
                    let (store, tx) = (running.store.clone(), outcome_tx.clone());
                    tokio::spawn(async move {
                        let _ = tx.send(Outcome::Round { result: store.propose(cmd).await });
                    });
                }
                Action::Heal => {
                    // Every fault has ended by now; this only makes sure of it.
                    recoveries.clear();
                    if !cluster.is_whole() {
                        cluster.heal_all().await?;
                        checks.convergence.whole(now);
                    }
                }
            }
        }
        while let Ok(outcome) = outcomes.try_recv() {
            match outcome {
                Outcome::Table { seq, result: Ok(CommandResult::Committed { version }) } => {
                    traffic.writes_committed += 1;
                    checks.committed.acknowledged(now, version, &workload::table_json(cfg.seed, seq));
                }
                Outcome::Table { .. } => traffic.writes_failed += 1,
                Outcome::Round { result: Ok(_) } => traffic.rounds_committed += 1,
                Outcome::Round { result: Err(_) } => traffic.rounds_failed += 1,
            }
        }

        let samples = sampler.sample(cluster);
        let usable_leader = cluster.leader_among(|i| cluster.in_majority(i)).is_some();
        checks.observe(now, &samples, usable_leader);
        cluster.publish_facts().await;

        if now >= schedule.end_ms {
            return Ok(report(cfg, schedule, &checks, traffic, &samples, now));
        }
        tokio::time::sleep(STEP).await;
    }
}

fn report(
    cfg: &Tier2Config,
    schedule: &Schedule,
    checks: &Checks,
    traffic: Traffic,
    last: &[NodeSample],
    now: u64,
) -> Tier2Report {
    let mut violations = Vec::new();
    violations.extend_from_slice(checks.one_leader.violations());
    violations.extend_from_slice(checks.committed.violations());
    violations.extend(checks.convergence.verdict(now - schedule.heal_at_ms, last));
    violations.extend_from_slice(checks.quota.violations());
    Tier2Report {
        seed: cfg.seed,
        nodes: cfg.nodes,
        regions: cfg.regions,
        duration_s: cfg.duration_s,
        schedule_digest: schedule.digest(),
        schedule: schedule.summary(),
        violations,
        observed: Observed {
            leader_changes: checks.one_leader.terms_led().saturating_sub(1),
            leaderless_periods: checks.failover.periods,
            max_failover_ms: checks.failover.max_ms,
            convergence_ms: checks.convergence.convergence_ms(),
            committed_versions: checks.committed.versions_seen(),
            quota_windows_checked: checks.quota.windows_checked(),
            traffic,
        },
    }
}

/// Injects `fault`, scheduled at `at`, and books its end.
async fn inject(
    cluster: &mut SimCluster,
    recoveries: &mut BTreeSet<(u64, Recovery)>,
    traffic: &mut Traffic,
    at: u64,
    fault: &Fault,
) {
    match fault {
        Fault::Crash { node, down_ms } => {
            if cluster.is_up(*node) {
                cluster.crash(*node).await;
                recoveries.insert((at + down_ms, Recovery::Restart(*node)));
            }
        }
        Fault::CrashLeader { down_ms } => match cluster.leader() {
            Some(leader) => {
                cluster.crash(leader).await;
                recoveries.insert((at + down_ms, Recovery::Restart(leader)));
            }
            None => traffic.leader_crashes_without_leader += 1,
        },
        Fault::Isolate { node, for_ms } => {
            cluster.isolate(*node).await;
            recoveries.insert((at + for_ms, Recovery::Reconnect(*node)));
        }
        Fault::Split { minority, for_ms } => {
            cluster.split(minority).await;
            recoveries.insert((at + for_ms, Recovery::EndSplit));
        }
    }
}
