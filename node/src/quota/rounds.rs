//! Once per round: every node sweeps its counters into one demand report for the leader, and the
//! leader proposes one `QuotaRound` carrying the quotas' terms and every report it received.
//! Applying the round (on every node, in the state machine) decides the next windows' leases.
//!
//! Nothing here is on the request path: a slow or failed round only means the next windows are
//! decided from older demand, or — after the lease runs out — that nodes fall back to their
//! `on_partition` policy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meridian_raft_store::quota::{DemandReport, KeyDemand, QuotaCounts, QuotaTerms, MAX_REPORT_KEYS};
use meridian_raft_store::{Command, RaftRole};

use crate::cluster::transport::resolve;
use crate::cluster::Cluster;
use crate::gateway::{unix_ms, Gateway};
use crate::peer::{frame, kind, PeerCall};

/// How often demand is reported and a round proposed.
pub const ROUND_INTERVAL: Duration = Duration::from_millis(250);
const REPORT_TIMEOUT: Duration = Duration::from_millis(500);
const ROUND_TIMEOUT: Duration = Duration::from_secs(1);

/// Counters of the round machinery, for `/metrics`.
#[derive(Default)]
pub struct RoundStats {
    pub rounds_committed: AtomicU64,
    pub rounds_failed: AtomicU64,
    pub reports_sent: AtomicU64,
    pub reports_failed: AtomicU64,
    pub reports_received: AtomicU64,
}

/// Reports the leader received since its last round, latest per node.
#[derive(Default)]
pub struct PendingReports(std::sync::Mutex<BTreeMap<String, DemandReport>>);

impl PendingReports {
    fn put(&self, report: DemandReport) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(report.node.clone(), report);
    }

    fn take(&self) -> Vec<DemandReport> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner())).into_values().collect()
    }
}

/// Runs for the life of the node: sweeps the counters every round (which also bounds their
/// memory on a standalone node) and, in a cluster, reports and proposes.
pub async fn run(gw: Arc<Gateway>) {
    let mut tick = tokio::time::interval(ROUND_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ms = unix_ms();
    loop {
        tick.tick().await;
        let now_ms = unix_ms();
        let report = collect_report(&gw, now_ms, now_ms.saturating_sub(last_ms));
        last_ms = now_ms;
        let Some(cluster) = gw.cluster() else { continue };
        // No quota on this node: nothing to report (the leader still clears a stale ledger).
        let idle = report.counts.is_empty();
        let status = cluster.raft.status();
        if status.role == RaftRole::Leader {
            cluster.quota_reports.put(report);
            propose_round(&gw, &cluster).await;
        } else if let (Some(leader), false) = (status.leader_node, idle) {
            send_report(&gw, &cluster, &leader, &report).await;
        }
    }
}

/// This node's report: demand of the keys worth reporting, and running totals.
pub fn collect_report(gw: &Gateway, now_ms: u64, elapsed_ms: u64) -> DemandReport {
    let mut demands = Vec::new();
    let mut counts = Vec::new();
    for (name, limiter) in gw.quotas.limiters() {
        let room = MAX_REPORT_KEYS.saturating_sub(demands.len());
        for load in limiter.sweep(now_ms, elapsed_ms, room) {
            demands.push(KeyDemand { quota: name.clone(), key: load.key, demand: load.demand });
        }
        let t = limiter.totals();
        counts.push(QuotaCounts { quota: name, admitted: t.admitted, rejected: t.rejected });
    }
    DemandReport { node: gw.identity.id.clone(), demands, counts }
}

async fn send_report(
    gw: &Gateway,
    cluster: &Cluster,
    leader: &meridian_raft_store::MeridianNode,
    report: &DemandReport,
) {
    let stats = &gw.quotas.stats;
    let sent = async {
        let addr = resolve(&cluster.peer_addr_of(leader)).await?;
        let payload = frame::encode(report).map_err(|e| e.to_string())?;
        cluster
            .peer
            .call(&leader.id, addr, kind::QUOTA_REPORT, &payload, REPORT_TIMEOUT)
            .await
            .map_err(|e| e.to_string())
    };
    match sent.await {
        Ok(_) => stats.reports_sent.fetch_add(1, Ordering::Relaxed),
        Err(e) => {
            tracing::debug!(leader = %leader.id, error = %e, "quota report not delivered");
            stats.reports_failed.fetch_add(1, Ordering::Relaxed)
        }
    };
}

async fn propose_round(gw: &Gateway, cluster: &Cluster) {
    let terms: Vec<QuotaTerms> = gw
        .snapshot()
        .map(|s| {
            s.table
                .quotas
                .iter()
                .map(|(name, q)| QuotaTerms { name: name.clone(), limit: q.limit, window_ms: q.window_ms })
                .collect()
        })
        .unwrap_or_default();
    let reports = cluster.quota_reports.take();
    // Nothing to decide and nothing to clear: keep the log quiet.
    if terms.is_empty() && gw.quotas.ledger().quotas().next().is_none() {
        return;
    }
    let cmd = Command::QuotaRound { at_ms: unix_ms(), terms, reports };
    let stats = &gw.quotas.stats;
    match cluster.raft.propose_within(cmd, ROUND_TIMEOUT).await {
        Ok(_) => stats.rounds_committed.fetch_add(1, Ordering::Relaxed),
        Err(e) => {
            tracing::debug!(error = %e, "quota round did not commit");
            stats.rounds_failed.fetch_add(1, Ordering::Relaxed)
        }
    };
}

/// Serves a report another node sent us as leader. The report must name the node its
/// certificate names; an oversized one is refused whole.
pub async fn serve_report(cluster: &Cluster, gw: &Gateway, call: PeerCall) {
    let answer: &[u8] = match frame::decode::<DemandReport>(&call.payload) {
        Err(e) => {
            tracing::debug!(from = %call.from, error = %e, "undecodable quota report");
            b"bad"
        }
        Ok(r) if r.node != call.from || r.demands.len() > MAX_REPORT_KEYS => {
            tracing::warn!(from = %call.from, node = %r.node, keys = r.demands.len(), "quota report refused");
            b"bad"
        }
        Ok(_) if cluster.raft.status().role != RaftRole::Leader => b"not-leader",
        Ok(r) => {
            gw.quotas.stats.reports_received.fetch_add(1, Ordering::Relaxed);
            cluster.quota_reports.put(r);
            b"ok"
        }
    };
    let _ = call.reply(answer).await;
}

/// Installs every applied ledger, and the live member count `local_share` divides by.
pub async fn follow_ledger(cluster: Arc<Cluster>, gw: Arc<Gateway>) {
    let mut ledger = cluster.raft.quota();
    let mut members = cluster.gossip.watch();
    loop {
        gw.quotas.install_ledger(ledger.borrow_and_update().clone());
        let live = members.borrow_and_update().live_count() as u64;
        gw.quotas.set_live_members(live);
        tokio::select! {
            changed = ledger.changed() => if changed.is_err() { return },
            changed = members.changed() => if changed.is_err() { return },
        }
    }
}
