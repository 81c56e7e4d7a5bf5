//! The simulated cluster: regions, nodes, upstreams, the network between them, and the models of
//! gossip and Raft. The decisions are the node's own — route matching, endpoint choice, health and
//! ejection, retry and cross-region budgets, failover choice, the quota limiter and the quota
//! ledger — called with the simulation's clock.
//!
//! What is modelled rather than run:
//! - gossip: every group of mutually reachable nodes shares one view; a member is declared dead
//!   after being unreachable for `GOSSIP_DEAD_AFTER`, live again after being reachable for
//!   `GOSSIP_LIVE_AFTER`; facts (service health) travel within a group every gossip tick;
//! - Raft: a leader among the voters that can reach a majority of them; a new one is elected an
//!   election timeout after the old one is lost; a command commits one quorum round trip after it is
//!   proposed and reaches a node half a round trip later, or when it is reachable again;
//! - requests: decided whole at their arrival (their latency is computed, not simulated), which is
//!   fine at the timescales of faults (seconds) against requests (milliseconds).

#![allow(clippy::needless_range_loop)] // nodes, regions and endpoints are addressed by index throughout

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meridian::core::balancer::{self, Candidate};
use meridian::core::failover::{choose_peer, may_forward, LocalOutcome, PeerView};
use meridian::core::health::{AttemptOutcome, Census, EndpointHealth, HealthPolicy};
use meridian::core::limiter::QuotaLimiter;
use meridian::core::matcher::RouteMatcher;
use meridian::core::retry::{is_retriable, Failure, RequestFacts, RetryBudget};
use meridian::core::table::{self, QuotaSpec, RoutingTable};
use meridian_raft_store::quota::{DemandReport, KeyDemand, QuotaCounts, QuotaState, QuotaTerms};
use tokio::time::Instant;

use crate::faults::{Fault, FaultKind};
use crate::rng::Rng;

pub const GOSSIP_TICK_US: u64 = 200_000;
pub const GOSSIP_DEAD_AFTER_US: u64 = 1_400_000;
pub const GOSSIP_LIVE_AFTER_US: u64 = 400_000;
pub const RAFT_TICK_US: u64 = 50_000;
/// The leader's heartbeat interval (LAN timings).
pub const HEARTBEAT_US: u64 = 100_000;
pub const QUOTA_ROUND_US: u64 = 250_000;
pub const HEALTH_INTERVAL_US: u64 = 1_000_000;
pub const ROUTING_WRITE_EVERY_US: u64 = 5_000_000;
/// Wall-clock ms of simulated time 0 (windows are aligned to it as to the Unix epoch).
pub const EPOCH_MS: u64 = 1_800_000_000_000;
/// A node that dies keeps its data; one that restarts is down this long in a rolling restart.
pub const RESTART_DOWN_US: u64 = 1_000_000;
/// Dialling a peer that does not answer gives up after this (the node's `DIAL_TIMEOUT`).
pub const FORWARD_TIMEOUT_US: u64 = 1_500_000;
/// Peers a forward may try when the first cannot be reached (the node's `PEER_TRIES`).
pub const PEER_TRIES: usize = 2;
const MAX_VOTERS: usize = 5;

pub const REGION_NAMES: [&str; 6] = ["us", "eu", "ap", "sa", "af", "me"];

/// The quota workload: `keys` tenants, the first one hot; one quota on the route.
#[derive(Clone, Debug)]
pub struct QuotaWorkload {
    pub limit: u64,
    pub window_ms: u64,
    pub keys: usize,
    /// Share of requests that go to the hottest tenant.
    pub hot_share: f64,
    /// Requests to region r are weighted `skew^r` (1.0: even).
    pub region_skew: f64,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub regions: usize,
    pub nodes_per_region: usize,
    pub duration_s: u64,
    pub faults: Vec<Fault>,
    /// Client requests per node per second.
    pub rate_per_node: f64,
    pub endpoints_per_region: usize,
    pub quota: Option<QuotaWorkload>,
    /// Share of requests that are POSTs (not idempotent).
    pub post_share: f64,
}

pub struct Node {
    pub id: String,
    pub region: usize,
    pub alive: bool,
    pub endpoints: Vec<EndpointHealth>,
    pub in_flight: Vec<u32>,
    pub budget: RetryBudget,
    pub forward_budget: RetryBudget,
    pub limiter: QuotaLimiter,
    pub ledger: Arc<QuotaState>,
    /// Raft log entries applied here (index into `World::log`).
    pub applied: usize,
    pub routing_version: u64,
    pub last_sweep_ms: u64,
    pub generation: u64,
}

/// One committed log entry of the Raft model.
pub struct Entry {
    pub commit_at: u64,
    pub what: EntryKind,
}

pub enum EntryKind {
    Routing {
        version: u64,
        hash: u64,
    },
    /// The ledger after this round. Only the newest round keeps it (every round carries the whole
    /// ledger, so a node catching up needs only the last one it reaches): memory stays flat.
    Quota {
        ledger: Option<Arc<QuotaState>>,
    },
}

/// One group of mutually reachable nodes and what gossip tells its members.
#[derive(Clone)]
pub struct View {
    /// Per node: believed live.
    pub live: Vec<bool>,
    /// Per node: since when its reachability from this group has been what it is now.
    pub since: Vec<u64>,
    pub reachable: Vec<bool>,
    /// Per node: healthy local endpoints as the node last published them to this group.
    pub healthy: Vec<u32>,
}

pub struct World {
    pub cfg: Config,
    pub now: u64,
    pub rng: Rng,
    pub base: Instant,
    pub region_names: Vec<String>,
    pub nodes: Vec<Node>,
    /// Per region, per endpoint: up.
    pub upstream_up: Vec<Vec<bool>>,
    /// Partition group of each region.
    pub group_of_region: Vec<usize>,
    pub views: Vec<View>,
    pub voters: Vec<usize>,
    pub leader: Option<usize>,
    pub term: u64,
    pub election_at: Option<u64>,
    pub log: Vec<Entry>,
    pub routing_version: u64,
    pub ledger: Arc<QuotaState>,
    pub pending_reports: BTreeMap<usize, DemandReport>,
    /// Per node: since when it has been reachable from the current leader.
    pub leader_contact_since: Vec<Option<u64>>,
    last_quota_entry: Option<usize>,
    pub rtt_us: Vec<Vec<u64>>,
    pub loss: f64,
    pub matcher: RouteMatcher,
    pub policy: HealthPolicy,
    pub quota_terms: Option<QuotaTerms>,
    /// The quota as the routing table states it (what the node's check reads).
    pub quota_spec: Option<QuotaSpec>,
    pub stats: Stats,
    pub hot_key: String,
}

/// Counters the report is made of.
#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub requests: u64,
    pub served: u64,
    pub served_local: u64,
    pub forwarded: u64,
    pub rate_limited: u64,
    pub failed: u64,
    pub failed_idempotent: u64,
    pub refused_by_budget: u64,
    pub failed_stale_view: u64,
    pub unreachable_node: u64,
    pub messages: u64,
    pub leader_changes: u64,
    pub committed_versions: u64,
    pub quota_rounds: u64,
    /// (window, key) → admitted on a lease, admitted on a fallback, offered.
    pub admitted: BTreeMap<(u64, String), (u64, u64, u64)>,
    /// Fallback share per (window, key), summed over the nodes that used one.
    pub fallback_bound: BTreeMap<(u64, String), u64>,
    pub latency_us: Vec<u64>,
    pub forward_latency_us: Vec<u64>,
}

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Served { region: usize, forwarded: bool, latency_us: u64 },
    RateLimited,
    Failed { reason: &'static str },
}

/// A request as the invariants see it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub at: u64,
    pub node: usize,
    pub idempotent: bool,
    pub key: String,
    pub outcome: Outcome,
    /// Region the request was forwarded to, if it was.
    pub forwarded_to: Option<usize>,
    /// The forward was refused by the cross-region budget.
    pub budget_refused: bool,
    /// Peers tried that the node's gossip view showed live but could not be reached: the view
    /// was stale (within gossip's detection delay).
    pub stale_tries: usize,
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn region_name(i: usize) -> String {
    REGION_NAMES.get(i).map_or_else(|| format!("r{i}"), |s| s.to_string())
}

impl World {
    pub fn new(cfg: Config) -> anyhow::Result<World> {
        let mut rng = Rng::new(cfg.seed);
        let region_names: Vec<String> = (0..cfg.regions).map(region_name).collect();
        // Latency: 0.5 ms inside a region; between regions 20-180 ms, symmetric, from the seed.
        let mut rtt_us = vec![vec![500u64; cfg.regions]; cfg.regions];
        for a in 0..cfg.regions {
            for b in (a + 1)..cfg.regions {
                let v = rng.between(20_000, 180_000);
                rtt_us[a][b] = v;
                rtt_us[b][a] = v;
            }
        }
        let mut endpoints = serde_json::Map::new();
        for (r, name) in region_names.iter().enumerate() {
            let urls: Vec<String> =
                (0..cfg.endpoints_per_region).map(|e| format!("http://10.{r}.0.{}:9000", e + 1)).collect();
            endpoints.insert(name.clone(), urls.into());
        }
        let mut table = serde_json::json!({
            "services": { "echo": {
                "endpoints": endpoints,
                "health_check": { "path": "/healthz", "interval_ms": 1000, "timeout_ms": 500 },
                "timeout_ms": 5000, "retries": 2
            }},
            "routes": [ { "name": "all", "path_prefix": "/", "service": "echo" } ]
        });
        if let Some(q) = &cfg.quota {
            table["routes"][0]["quota"] = "per-tenant".into();
            table["quotas"] = serde_json::json!({ "per-tenant": {
                "key": "header:x-tenant", "limit": q.limit, "window_ms": q.window_ms, "on_partition": "local_share"
            }});
        }
        let table: RoutingTable =
            table::parse_json(&table.to_string()).map_err(|e| anyhow::anyhow!("simulated table: {e}"))?;
        let svc = &table.services["echo"];
        let policy = HealthPolicy::new(svc.health_check.as_ref(), svc.outlier.as_ref());
        let quota_terms = cfg.quota.as_ref().map(|q| QuotaTerms {
            name: "per-tenant".into(),
            limit: q.limit,
            window_ms: q.window_ms,
        });
        let mut nodes = Vec::new();
        for r in 0..cfg.regions {
            for i in 0..cfg.nodes_per_region {
                nodes.push(Node {
                    id: format!("{}-{}", region_names[r], i + 1),
                    region: r,
                    alive: true,
                    endpoints: vec![EndpointHealth::default(); cfg.endpoints_per_region],
                    in_flight: vec![0; cfg.endpoints_per_region],
                    budget: RetryBudget::new(0.2, 10),
                    forward_budget: RetryBudget::new(0.2, 1),
                    limiter: QuotaLimiter::new(cfg.quota.as_ref().map_or(1000, |q| q.window_ms)),
                    ledger: Arc::new(QuotaState::default()),
                    applied: 0,
                    routing_version: 0,
                    last_sweep_ms: EPOCH_MS,
                    generation: 1,
                });
            }
        }
        let n = nodes.len();
        // Voters: spread over regions, the first node of each region first.
        let mut voters = Vec::new();
        for i in 0..cfg.nodes_per_region {
            for r in 0..cfg.regions {
                if voters.len() < MAX_VOTERS.min(n) {
                    voters.push(r * cfg.nodes_per_region + i);
                }
            }
        }
        let view =
            View { live: vec![true; n], since: vec![0; n], reachable: vec![true; n], healthy: vec![0; n] };
        let loss = cfg.faults.iter().find_map(|f| match f.kind {
            FaultKind::Loss(p) => Some(p),
            _ => None,
        });
        Ok(World {
            matcher: RouteMatcher::new(&table),
            policy,
            quota_terms,
            quota_spec: table.quotas.get("per-tenant").cloned(),
            now: 0,
            rng,
            base: Instant::now(),
            upstream_up: vec![vec![true; cfg.endpoints_per_region]; cfg.regions],
            group_of_region: vec![0; cfg.regions],
            views: vec![view],
            leader: voters.first().copied(),
            term: 1,
            election_at: None,
            log: Vec::new(),
            routing_version: 0,
            ledger: Arc::new(QuotaState::default()),
            pending_reports: BTreeMap::new(),
            leader_contact_since: vec![Some(0); n],
            last_quota_entry: None,
            rtt_us,
            loss: loss.unwrap_or(0.0),
            stats: Stats { leader_changes: 1, ..Stats::default() },
            hot_key: "tenant-0".into(),
            region_names,
            nodes,
            voters,
            cfg,
        })
    }

    pub fn instant(&self) -> Instant {
        self.base + Duration::from_micros(self.now)
    }

    pub fn now_ms(&self) -> u64 {
        EPOCH_MS + self.now / 1000
    }

    pub fn group_of(&self, node: usize) -> usize {
        self.group_of_region[self.nodes[node].region]
    }

    /// Whether `a` can reach `b` right now (both up, same partition group).
    pub fn reachable(&self, a: usize, b: usize) -> bool {
        self.nodes[a].alive && self.nodes[b].alive && self.group_of(a) == self.group_of(b)
    }

    pub fn rtt(&self, a: usize, b: usize) -> u64 {
        self.rtt_us[self.nodes[a].region][self.nodes[b].region]
    }

    /// A node-to-node message: counted, and lost with the configured probability.
    pub fn send(&mut self) -> bool {
        self.stats.messages += 1;
        self.loss == 0.0 || !self.rng.chance(self.loss)
    }

    /// Healthy endpoints of `node` right now, as it would publish them.
    pub fn local_healthy(&self, node: usize) -> u32 {
        let now = self.instant();
        self.nodes[node].endpoints.iter().filter(|e| e.is_available(now)).count() as u32
    }

    /// Whether region `r` has an upstream endpoint that is actually up and a live node.
    pub fn region_can_serve(&self, r: usize) -> bool {
        self.upstream_up[r].iter().any(|u| *u) && self.nodes.iter().any(|n| n.region == r && n.alive)
    }

    // ---------------------------------------------------------------------------------------
    // Gossip model
    // ---------------------------------------------------------------------------------------

    /// One gossip tick: each group's view follows reachability with the detector's delays, and
    /// members' facts travel within their group.
    pub fn gossip_tick(&mut self) {
        let groups = self.group_of_region.iter().max().map_or(1, |m| m + 1);
        while self.views.len() < groups {
            let first = self.views[0].clone();
            self.views.push(first);
        }
        let n = self.nodes.len();
        let healthy: Vec<u32> = (0..n).map(|i| self.local_healthy(i)).collect();
        for g in 0..groups {
            for x in 0..n {
                let reach = self.nodes[x].alive && self.group_of(x) == g;
                let v = &mut self.views[g];
                if v.reachable[x] != reach {
                    v.reachable[x] = reach;
                    v.since[x] = self.now;
                }
                let held = self.now.saturating_sub(v.since[x]);
                if v.live[x] && !reach && held >= GOSSIP_DEAD_AFTER_US {
                    v.live[x] = false;
                } else if !v.live[x] && reach && held >= GOSSIP_LIVE_AFTER_US {
                    v.live[x] = true;
                }
                if reach {
                    v.healthy[x] = healthy[x];
                }
            }
        }
        // Each live node sends a few digests per round (chitchat's fanout).
        let live = self.nodes.iter().filter(|n| n.alive).count() as u64;
        self.stats.messages += live * 3;
    }

    /// The gossip view `node` holds.
    pub fn view_of(&self, node: usize) -> &View {
        &self.views[self.group_of(node).min(self.views.len() - 1)]
    }

    // ---------------------------------------------------------------------------------------
    // Raft model
    // ---------------------------------------------------------------------------------------

    /// The group holding a majority of the live voters, if any.
    fn majority_group(&self) -> Option<usize> {
        let mut count: BTreeMap<usize, usize> = BTreeMap::new();
        for &v in &self.voters {
            if self.nodes[v].alive {
                *count.entry(self.group_of(v)).or_default() += 1;
            }
        }
        count.into_iter().find(|(_, c)| *c * 2 > self.voters.len()).map(|(g, _)| g)
    }

    /// Leader lost → schedule an election; election due → elect. Returns the new leader's term
    /// when one was elected.
    pub fn raft_tick(&mut self) -> Option<(u64, usize)> {
        let majority = self.majority_group();
        if let Some(l) = self.leader {
            if !self.nodes[l].alive || Some(self.group_of(l)) != majority {
                self.leader = None;
            }
        }
        let mut elected = None;
        if self.leader.is_none() {
            match (self.election_at, majority) {
                (None, Some(_)) => self.election_at = Some(self.now + self.rng.between(300_000, 600_000)),
                (Some(at), Some(g)) if at <= self.now => {
                    let candidates: Vec<usize> = self
                        .voters
                        .iter()
                        .copied()
                        .filter(|&v| self.nodes[v].alive && self.group_of(v) == g)
                        .collect();
                    let pick = candidates[self.rng.below(candidates.len())];
                    self.term += 1;
                    self.leader = Some(pick);
                    self.election_at = None;
                    self.stats.leader_changes += 1;
                    self.stats.messages += self.voters.len() as u64 * 2;
                    elected = Some((self.term, pick));
                }
                (_, None) => self.election_at = None,
                _ => {}
            }
        }
        // Heartbeats to every member, and catch-up of those behind.
        if let Some(l) = self.leader {
            // A heartbeat (or append) to every member each 100 ms, i.e. every other 50 ms tick.
            self.stats.messages += (self.nodes.len() as u64).saturating_sub(1) / 2;
            for x in 0..self.nodes.len() {
                if self.reachable(l, x) {
                    let since = *self.leader_contact_since[x].get_or_insert(self.now);
                    // A follower (re)gaining the leader hears from it at the next heartbeat.
                    if self.now - since >= HEARTBEAT_US + self.rtt(l, x) / 2 || since == 0 {
                        self.catch_up(l, x);
                    }
                } else {
                    self.leader_contact_since[x] = None;
                }
            }
        }
        elected
    }

    fn catch_up(&mut self, leader: usize, x: usize) {
        let lag = self.rtt(leader, x) / 2;
        let mut node_applied = self.nodes[x].applied;
        while node_applied < self.log.len() && self.log[node_applied].commit_at + lag <= self.now {
            match &self.log[node_applied].what {
                EntryKind::Routing { version, .. } => self.nodes[x].routing_version = *version,
                EntryKind::Quota { ledger: Some(ledger) } => {
                    self.nodes[x].ledger = ledger.clone();
                    self.nodes[x].generation += 1;
                }
                EntryKind::Quota { ledger: None } => {}
            }
            node_applied += 1;
        }
        self.nodes[x].applied = node_applied;
    }

    /// When a command proposed now commits: one round trip to the nearest quorum of voters.
    fn commit_time(&self, leader: usize) -> Option<u64> {
        let mut rtts: Vec<u64> = self
            .voters
            .iter()
            .filter(|&&v| v != leader && self.reachable(leader, v))
            .map(|&v| self.rtt(leader, v))
            .collect();
        rtts.sort_unstable();
        let need = self.voters.len() / 2; // besides the leader
        let rtt = if need == 0 { 0 } else { *rtts.get(need - 1)? };
        Some(self.now + rtt + 2_000)
    }

    /// The operator writes a new routing table through the leader.
    pub fn routing_write(&mut self) -> Option<(u64, u64)> {
        let leader = self.leader?;
        let at = self.commit_time(leader)?;
        self.routing_version += 1;
        let hash = fnv(&format!("table-v{}", self.routing_version));
        self.log
            .push(Entry { commit_at: at, what: EntryKind::Routing { version: self.routing_version, hash } });
        self.stats.committed_versions += 1;
        self.stats.messages += self.nodes.len() as u64;
        Some((self.routing_version, hash))
    }

    // ---------------------------------------------------------------------------------------
    // Quota rounds
    // ---------------------------------------------------------------------------------------

    /// Every node sweeps its counters; those that reach the leader report; the leader proposes a
    /// round, which the ledger (the real one) applies.
    pub fn quota_round(&mut self) {
        let Some(terms) = self.quota_terms.clone() else { return };
        let now_ms = self.now_ms();
        let leader = self.leader;
        for i in 0..self.nodes.len() {
            if !self.nodes[i].alive {
                continue;
            }
            let elapsed = now_ms.saturating_sub(self.nodes[i].last_sweep_ms);
            self.nodes[i].last_sweep_ms = now_ms;
            let loads =
                self.nodes[i].limiter.sweep(now_ms, elapsed, meridian_raft_store::quota::MAX_REPORT_KEYS);
            let Some(l) = leader else { continue };
            if !self.reachable(i, l) || !self.send() {
                continue;
            }
            let report = DemandReport {
                node: self.nodes[i].id.clone(),
                demands: loads
                    .into_iter()
                    .map(|k| KeyDemand { quota: terms.name.clone(), key: k.key, demand: k.demand })
                    .collect(),
                counts: vec![QuotaCounts {
                    quota: terms.name.clone(),
                    admitted: self.nodes[i].limiter.admitted(),
                    rejected: self.nodes[i].limiter.rejected(),
                }],
            };
            self.pending_reports.insert(i, report);
        }
        let Some(l) = leader else { return };
        let Some(at) = self.commit_time(l) else { return };
        let reports: Vec<DemandReport> = std::mem::take(&mut self.pending_reports).into_values().collect();
        let mut next = (*self.ledger).clone();
        next.apply_round(now_ms, std::slice::from_ref(&terms), &reports);
        self.ledger = Arc::new(next);
        if let Some(i) = self.last_quota_entry {
            self.log[i].what = EntryKind::Quota { ledger: None };
        }
        self.last_quota_entry = Some(self.log.len());
        self.log.push(Entry { commit_at: at, what: EntryKind::Quota { ledger: Some(self.ledger.clone()) } });
        self.stats.quota_rounds += 1;
    }

    // ---------------------------------------------------------------------------------------
    // Health checks
    // ---------------------------------------------------------------------------------------

    pub fn health_check(&mut self, node: usize) {
        if !self.nodes[node].alive {
            return;
        }
        let r = self.nodes[node].region;
        for e in 0..self.cfg.endpoints_per_region {
            let ok = self.upstream_up[r][e];
            let policy = self.policy.clone();
            self.nodes[node].endpoints[e].on_check(ok, &policy);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Requests
    // ---------------------------------------------------------------------------------------

    /// One client request arriving at `node`, decided whole.
    pub fn request(&mut self, node: usize) -> RequestRecord {
        self.stats.requests += 1;
        let post = self.rng.chance(self.cfg.post_share);
        let key = match &self.cfg.quota {
            Some(q) if self.rng.chance(q.hot_share) => self.hot_key.clone(),
            Some(q) => format!("tenant-{}", 1 + self.rng.below(q.keys.saturating_sub(1).max(1))),
            None => String::new(),
        };
        let mut rec = RequestRecord {
            at: self.now,
            node,
            idempotent: !post,
            key: key.clone(),
            outcome: Outcome::Failed { reason: "node down" },
            forwarded_to: None,
            budget_refused: false,
            stale_tries: 0,
        };
        if !self.nodes[node].alive {
            self.stats.unreachable_node += 1;
            return rec;
        }
        let method = if post { http::Method::POST } else { http::Method::GET };
        let Some(m) = self.matcher.find(None, &method, "/api/x") else {
            rec.outcome = Outcome::Failed { reason: "no route" };
            return rec;
        };
        debug_assert_eq!(m.route_index, 0);
        if self.quota_terms.is_some() && !self.admit(node, &key) {
            self.stats.rate_limited += 1;
            rec.outcome = Outcome::RateLimited;
            return rec;
        }
        let facts = RequestFacts::new(&method, false, true);
        let now = self.instant();
        self.nodes[node].budget.on_request(now);
        self.nodes[node].forward_budget.on_request(now);
        let local = self.attempt_local(node, facts);
        let outcome = match local {
            Ok(latency_us) => {
                self.stats.served_local += 1;
                Outcome::Served { region: self.nodes[node].region, forwarded: false, latency_us }
            }
            Err(local_outcome) => {
                let budget_ok = local_outcome == LocalOutcome::NoHealthyEndpoint
                    || self.nodes[node].forward_budget.try_retry(now);
                if !may_forward(local_outcome, facts, true) {
                    Outcome::Failed { reason: "local failure, not repeatable" }
                } else if !budget_ok {
                    rec.budget_refused = true;
                    self.stats.refused_by_budget += 1;
                    Outcome::Failed { reason: "cross-region budget" }
                } else {
                    self.forward(node, &mut rec)
                }
            }
        };
        match &outcome {
            Outcome::Served { latency_us, forwarded, .. } => {
                self.stats.served += 1;
                self.stats.latency_us.push(*latency_us);
                if *forwarded {
                    self.stats.forwarded += 1;
                    self.stats.forward_latency_us.push(*latency_us);
                }
            }
            Outcome::Failed { .. } => {
                self.stats.failed += 1;
                if rec.idempotent {
                    self.stats.failed_idempotent += 1;
                }
                if rec.stale_tries > 0 {
                    self.stats.failed_stale_view += 1;
                }
            }
            Outcome::RateLimited => {}
        }
        rec.outcome = outcome;
        rec
    }

    /// The quota check, exactly as the node does it: the local counter over this node's lease for
    /// the window, or its `on_partition` fallback (local_share: limit ÷ live members it sees).
    fn admit(&mut self, node: usize, key: &str) -> bool {
        let (Some(terms), Some(spec)) = (self.quota_terms.clone(), self.quota_spec.clone()) else {
            return true;
        };
        let now_ms = self.now_ms();
        let live_seen = self.view_of(node).live.iter().filter(|l| **l).count() as u64;
        let n = &self.nodes[node];
        let ledger = n.ledger.clone();
        let id = n.id.clone();
        let decision = n.limiter.check(key, now_ms, n.generation, |window| {
            meridian::quota::allowance(&ledger, &terms.name, &spec, &id, key, window, live_seen)
        });
        let window = now_ms / terms.window_ms;
        let entry = self.stats.admitted.entry((window, key.to_string())).or_default();
        entry.2 += 1;
        if decision.admitted {
            if decision.fallback {
                entry.1 += 1;
            } else {
                entry.0 += 1;
            }
        }
        if decision.fallback {
            // Counted once per node and window: the first decision of the window records it.
            let first_of_window = decision.admitted && decision.remaining + 1 == decision.share;
            if first_of_window {
                *self.stats.fallback_bound.entry((window, key.to_string())).or_default() += decision.share;
            }
        }
        decision.admitted
    }

    /// Local attempts: P2C among available endpoints, retries within the budget.
    fn attempt_local(&mut self, node: usize, facts: RequestFacts) -> Result<u64, LocalOutcome> {
        let r = self.nodes[node].region;
        let now = self.instant();
        let mut tried: Vec<usize> = Vec::new();
        let mut latency = 0u64;
        let mut last = LocalOutcome::NoHealthyEndpoint;
        for attempt in 0..3 {
            let candidates: Vec<Candidate> = (0..self.cfg.endpoints_per_region)
                .map(|e| Candidate {
                    available: self.nodes[node].endpoints[e].is_available(now),
                    in_flight: self.nodes[node].in_flight[e],
                    tried: tried.contains(&e),
                })
                .collect();
            let (r1, r2) = (self.rng.next_u64(), self.rng.next_u64());
            let Some(e) = balancer::pick(&candidates, r1, r2) else {
                return Err(last);
            };
            tried.push(e);
            let policy = self.policy.clone();
            if self.upstream_up[r][e] {
                latency += 500 + 2_000; // connect + service
                self.nodes[node].endpoints[e].on_attempt(
                    AttemptOutcome::Success,
                    now,
                    Census::default(),
                    &policy,
                );
                return Ok(latency);
            }
            latency += 500; // connect refused
            let census = self.census(node, e);
            self.nodes[node].endpoints[e].on_attempt(AttemptOutcome::ConnectionFailure, now, census, &policy);
            let failure = Failure::NotSent;
            last = LocalOutcome::Failed(failure);
            if attempt == 2 || !is_retriable(failure, facts) || !self.nodes[node].budget.try_retry(now) {
                break;
            }
        }
        Err(last)
    }

    /// How many of `node`'s endpoints other than `except` are ejected.
    fn census(&self, node: usize, except: usize) -> Census {
        let now = self.instant();
        let eps = &self.nodes[node].endpoints;
        Census {
            total: eps.len() as u32,
            ejected_others: eps.iter().enumerate().filter(|(i, e)| *i != except && e.is_ejected(now)).count()
                as u32,
        }
    }

    /// Forward to the best peer of another region, as the node's gossip view shows them; a peer
    /// that cannot be reached at all (nothing sent) costs a dial timeout and the next-best region
    /// is tried, as the node does (`PEER_TRIES`).
    fn forward(&mut self, node: usize, rec: &mut RequestRecord) -> Outcome {
        let view = self.view_of(node);
        let region_of: Vec<&str> = self.nodes.iter().map(|n| self.region_names[n.region].as_str()).collect();
        let candidates: Vec<usize> = (0..self.nodes.len()).filter(|&p| p != node).collect();
        let views: Vec<PeerView<'_>> = candidates
            .iter()
            .map(|&p| PeerView {
                region: region_of[p],
                live: view.live[p],
                draining: false,
                healthy: view.healthy[p],
                rtt_us: Some(self.rtt(node, p)),
                load: 0,
            })
            .collect();
        let mut skip = vec![self.region_names[self.nodes[node].region].clone()];
        let mut waited = 0;
        let mut chosen = Vec::new();
        for _ in 0..PEER_TRIES {
            let Some(i) = choose_peer(&views, region_of[node], &skip) else { break };
            let peer = candidates[i];
            chosen.push(peer);
            skip.push(region_of[peer].to_string());
        }
        if chosen.is_empty() {
            return Outcome::Failed { reason: "no healthy region known" };
        }
        for peer in chosen {
            let to = self.nodes[peer].region;
            rec.forwarded_to = Some(to);
            self.stats.messages += 2; // the request and its answer
            if !self.reachable(node, peer) {
                waited += FORWARD_TIMEOUT_US;
                rec.stale_tries += 1;
                continue;
            }
            // QUIC retransmits what is lost: loss costs time, not the request.
            let retransmit =
                if self.loss > 0.0 && self.rng.chance(self.loss) { 2 * self.rtt(node, peer) } else { 0 };
            let facts = RequestFacts::new(&http::Method::GET, false, true);
            return match self.attempt_local(peer, facts) {
                Ok(latency) => Outcome::Served {
                    region: to,
                    forwarded: true,
                    latency_us: waited + latency + self.rtt(node, peer) + retransmit,
                },
                Err(_) => Outcome::Failed { reason: "forward: the peer's region failed too" },
            };
        }
        Outcome::Failed { reason: "forward: no peer reachable" }
    }

    // ---------------------------------------------------------------------------------------
    // Faults
    // ---------------------------------------------------------------------------------------

    pub fn region_index(&self, name: &str) -> Option<usize> {
        self.region_names.iter().position(|r| r == name)
    }

    pub fn node_index(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    pub fn set_node(&mut self, node: usize, alive: bool) {
        let n = &mut self.nodes[node];
        if n.alive == alive {
            return;
        }
        n.alive = alive;
        if alive {
            // A restart: fresh process state, the Raft data kept (it catches up from the leader).
            let eps = self.cfg.endpoints_per_region;
            let window = self.cfg.quota.as_ref().map_or(1000, |q| q.window_ms);
            n.endpoints = vec![EndpointHealth::default(); eps];
            n.budget = RetryBudget::new(0.2, 10);
            n.forward_budget = RetryBudget::new(0.2, 1);
            n.limiter = QuotaLimiter::new(window);
            n.generation += 1;
        }
    }

    /// Applies a partition: `groups` of region names; regions not listed join the first group.
    pub fn set_partition(&mut self, groups: Option<&[Vec<String>]>) {
        let mut assign = vec![0usize; self.cfg.regions];
        if let Some(groups) = groups {
            for (g, names) in groups.iter().enumerate() {
                for name in names {
                    if let Some(r) = self.region_index(name) {
                        assign[r] = g;
                    }
                }
            }
        }
        self.group_of_region = assign;
    }
}
