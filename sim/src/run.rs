//! The event loop: a virtual clock, one queue of events ordered by (time, sequence), the world's
//! handlers, and the invariants checked right after each event that could break them.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::faults::FaultKind;
use crate::invariants::{
    committed_version::CommittedVersion, convergence, dead_region, idempotent_served, one_leader_per_term,
    quota_bound, Violation,
};
use crate::world::{
    Config, EntryKind, Outcome, RequestRecord, World, GOSSIP_TICK_US, HEALTH_INTERVAL_US, QUOTA_ROUND_US,
    RAFT_TICK_US, RESTART_DOWN_US, ROUTING_WRITE_EVERY_US,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Request,
    GossipTick,
    RaftTick,
    QuotaRound,
    HealthCheck(usize),
    RoutingWrite,
    FaultStart(usize),
    FaultEnd(usize),
    NodeDown(usize),
    NodeUp(usize),
    Settle,
}

/// What a run found: the figures of the report, and the first violation if any.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub regions: usize,
    pub nodes: usize,
    pub duration_s: u64,
    pub faults: String,
    pub events: u64,
    pub requests: u64,
    pub served: u64,
    pub forwarded_share: f64,
    pub rate_limited: u64,
    pub failed: u64,
    pub failed_idempotent: u64,
    pub refused_by_cross_region_budget: u64,
    /// Failed after trying peers the gossip view still showed live (detection delay).
    pub failed_on_a_stale_view: u64,
    pub sent_to_a_down_node: u64,
    /// Longest time from a fault's start to the last request it made fail (ms).
    pub failover_ms: u64,
    /// Longest time from a fault's end until every live node applied the leader's version (ms).
    pub convergence_ms: Option<u64>,
    pub leader_changes: u64,
    pub committed_versions: u64,
    pub quota_rounds: u64,
    /// Admitted ÷ limit over saturated (window, key) pairs: mean, min, max.
    pub quota_accuracy: Option<(f64, f64, f64)>,
    pub quota_windows_checked: u64,
    pub p50_latency_ms: f64,
    pub p99_latency_ms: f64,
    pub forwarded_p50_ms: Option<f64>,
    pub messages_per_node_per_s: f64,
    pub violation: Option<ViolationReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ViolationReport {
    pub invariant: String,
    pub at_ms: u64,
    pub detail: String,
    pub trace: Vec<String>,
}

struct Loop {
    world: World,
    queue: BTreeMap<(u64, u64), Event>,
    seq: u64,
    trace: VecDeque<(u64, Event)>,
    elections: Vec<(u64, u64, String)>,
    leaders: one_leader_per_term::OneLeaderPerTerm,
    versions: CommittedVersion,
    applied_versions: Vec<u64>,
    fault_windows: Vec<(u64, u64, Option<usize>)>,
    last_failure_in_fault: Vec<Option<u64>>,
    converge_watch: Option<(u64, u64)>,
    /// Faults in progress; convergence is timed from the moment none is.
    active_faults: usize,
    convergence_us: Option<u64>,
    settle_at: u64,
    request_weights: Vec<f64>,
    total_rate: f64,
    events: u64,
}

const TRACE_LEN: usize = 40;

/// Runs one simulation to its end or its first violation.
pub fn run(cfg: Config) -> anyhow::Result<Report> {
    let duration_us = cfg.duration_s * 1_000_000;
    let world = World::new(cfg)?;
    let n = world.nodes.len();
    let skew = world.cfg.quota.as_ref().map_or(1.0, |q| q.region_skew);
    let request_weights: Vec<f64> = world.nodes.iter().map(|node| skew.powi(node.region as i32)).collect();
    let total_rate = world.cfg.rate_per_node * n as f64;
    let last_fault_end = world
        .cfg
        .faults
        .iter()
        .filter(|f| f.end_s.is_finite())
        .map(|f| (f.end_s * 1e6) as u64)
        .max()
        .unwrap_or(0);
    let mut lp = Loop {
        applied_versions: vec![0; n],
        fault_windows: Vec::new(),
        last_failure_in_fault: Vec::new(),
        world,
        queue: BTreeMap::new(),
        seq: 0,
        trace: VecDeque::with_capacity(TRACE_LEN),
        elections: Vec::new(),
        leaders: Default::default(),
        versions: CommittedVersion::default(),
        converge_watch: None,
        active_faults: 0,
        convergence_us: None,
        settle_at: last_fault_end + convergence::SETTLE_US,
        request_weights,
        total_rate,
        events: 0,
    };
    lp.schedule(0, Event::GossipTick);
    lp.schedule(0, Event::RaftTick);
    lp.schedule(QUOTA_ROUND_US, Event::QuotaRound);
    lp.schedule(ROUTING_WRITE_EVERY_US / 5, Event::RoutingWrite);
    for i in 0..n {
        let phase = lp.world.rng.between(0, HEALTH_INTERVAL_US - 1);
        lp.schedule(phase, Event::HealthCheck(i));
    }
    if lp.total_rate > 0.0 {
        let first = lp.world.rng.exp_us(lp.total_rate);
        lp.schedule(first, Event::Request);
    }
    let faults = lp.world.cfg.faults.clone();
    for (i, f) in faults.iter().enumerate() {
        if matches!(f.kind, FaultKind::Loss(_)) {
            continue;
        }
        let (start, end) = ((f.start_s * 1e6) as u64, (f.end_s * 1e6) as u64);
        lp.schedule(start, Event::FaultStart(i));
        lp.schedule(end, Event::FaultEnd(i));
    }
    lp.fault_windows = faults
        .iter()
        .map(|f| ((f.start_s * 1e6) as u64, (f.end_s * 1e6).min(u64::MAX as f64) as u64, None))
        .collect();
    lp.last_failure_in_fault = vec![None; faults.len()];
    if lp.settle_at < duration_us && last_fault_end > 0 {
        lp.schedule(lp.settle_at, Event::Settle);
    }
    let violation = lp.run_until(duration_us).err();
    Ok(lp.report(violation))
}

impl Loop {
    fn schedule(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn run_until(&mut self, end: u64) -> Result<(), Violation> {
        while let Some(((at, _), ev)) = self.queue.pop_first() {
            if at > end {
                break;
            }
            self.world.now = at;
            self.events += 1;
            // The trace keeps what shapes the cluster, not the stream of requests and probes.
            if !matches!(
                ev,
                Event::Request
                    | Event::HealthCheck(_)
                    | Event::GossipTick
                    | Event::QuotaRound
                    | Event::RaftTick
            ) {
                if self.trace.len() == TRACE_LEN {
                    self.trace.pop_front();
                }
                self.trace.push_back((at, ev));
            }
            self.handle(ev)?;
        }
        Ok(())
    }

    fn handle(&mut self, ev: Event) -> Result<(), Violation> {
        let now = self.world.now;
        match ev {
            Event::Request => {
                let node = self.pick_node();
                let rec = self.world.request(node);
                self.check_request(&rec)?;
                let next = self.world.rng.exp_us(self.total_rate);
                self.schedule(now + next, Event::Request);
            }
            Event::GossipTick => {
                self.world.gossip_tick();
                self.schedule(now + GOSSIP_TICK_US, Event::GossipTick);
            }
            Event::RaftTick => {
                if let Some((term, leader)) = self.world.raft_tick() {
                    let id = self.world.nodes[leader].id.clone();
                    self.elections.push((now, term, id.clone()));
                    if self.trace.len() == TRACE_LEN {
                        self.trace.pop_front();
                    }
                    self.trace.push_back((now, Event::RaftTick)); // ticks that elected someone
                    self.leaders.on_elected(now, term, &id)?;
                }
                self.check_applied()?;
                self.schedule(now + RAFT_TICK_US, Event::RaftTick);
            }
            Event::QuotaRound => {
                self.world.quota_round();
                self.schedule(now + QUOTA_ROUND_US, Event::QuotaRound);
            }
            Event::HealthCheck(i) => {
                self.world.health_check(i);
                self.schedule(now + HEALTH_INTERVAL_US, Event::HealthCheck(i));
            }
            Event::RoutingWrite => {
                if let Some((version, hash)) = self.world.routing_write() {
                    self.versions.on_commit(now, version, hash)?;
                }
                self.schedule(now + ROUTING_WRITE_EVERY_US, Event::RoutingWrite);
            }
            Event::FaultStart(i) => {
                self.active_faults += 1;
                self.fault(i, true);
            }
            Event::FaultEnd(i) => {
                self.active_faults = self.active_faults.saturating_sub(1);
                self.fault(i, false);
                if self.active_faults == 0 && self.converge_watch.is_none() {
                    self.converge_watch = Some((now, self.world.routing_version));
                }
            }
            Event::NodeDown(i) => self.world.set_node(i, false),
            Event::NodeUp(i) => self.world.set_node(i, true),
            Event::Settle => {
                let target = self.newest_settled_version();
                let versions: Vec<(String, u64)> = self
                    .world
                    .nodes
                    .iter()
                    .filter(|n| n.alive)
                    .map(|n| (n.id.clone(), n.routing_version))
                    .collect();
                if self.world.leader.is_some() {
                    convergence::check(now, target, &versions)?;
                }
            }
        }
        Ok(())
    }

    /// The newest routing version committed long enough ago to have reached every live node.
    fn newest_settled_version(&self) -> u64 {
        let horizon = self.world.now.saturating_sub(1_000_000);
        self.world
            .log
            .iter()
            .filter(|e| e.commit_at <= horizon)
            .filter_map(|e| match e.what {
                EntryKind::Routing { version, .. } => Some(version),
                EntryKind::Quota { .. } => None,
            })
            .max()
            .unwrap_or(0)
    }

    fn pick_node(&mut self) -> usize {
        let total: f64 = self.request_weights.iter().sum();
        let mut x = self.world.rng.unit() * total;
        for (i, w) in self.request_weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        self.request_weights.len() - 1
    }

    fn fault(&mut self, i: usize, start: bool) {
        let f = self.world.cfg.faults[i].clone();
        match &f.kind {
            FaultKind::RegionDown(r) => {
                if let Some(r) = self.world.region_index(r) {
                    for e in self.world.upstream_up[r].iter_mut() {
                        *e = !start;
                    }
                    let ids: Vec<usize> =
                        (0..self.world.nodes.len()).filter(|&n| self.world.nodes[n].region == r).collect();
                    for n in ids {
                        self.world.set_node(n, !start);
                    }
                }
            }
            FaultKind::UpstreamDown(r) => {
                if let Some(r) = self.world.region_index(r) {
                    for e in self.world.upstream_up[r].iter_mut() {
                        *e = !start;
                    }
                }
            }
            FaultKind::Partition(groups) => {
                self.world.set_partition(if start { Some(groups) } else { None });
            }
            FaultKind::Crash(id) => {
                if let Some(n) = self.world.node_index(id) {
                    self.world.set_node(n, !start);
                }
            }
            FaultKind::LeaderCrash => {
                if start {
                    if let Some(l) = self.world.leader {
                        self.fault_windows[i].2 = Some(l);
                        self.world.set_node(l, false);
                    }
                } else if let Some(l) = self.fault_windows[i].2 {
                    self.world.set_node(l, true);
                }
            }
            FaultKind::RollingRestart => {
                if start {
                    let n = self.world.nodes.len() as u64;
                    let span = ((f.end_s - f.start_s) * 1e6) as u64;
                    let step = (span / n.max(1)).max(RESTART_DOWN_US + 100_000);
                    for k in 0..n {
                        let at = self.world.now + k * step;
                        self.schedule(at, Event::NodeDown(k as usize));
                        self.schedule(at + RESTART_DOWN_US, Event::NodeUp(k as usize));
                    }
                }
            }
            FaultKind::Loss(_) => {}
        }
    }

    fn check_applied(&mut self) -> Result<(), Violation> {
        for (i, node) in self.world.nodes.iter().enumerate() {
            if node.routing_version != self.applied_versions[i] {
                let v = node.routing_version;
                let hash = self.world.log.iter().find_map(|e| match e.what {
                    EntryKind::Routing { version, hash } if version == v => Some(hash),
                    _ => None,
                });
                self.versions.on_apply(self.world.now, &node.id, v, hash.unwrap_or(0))?;
                self.applied_versions[i] = v;
            }
        }
        if let Some((since, target)) = self.converge_watch {
            let done = self.world.nodes.iter().filter(|n| n.alive).all(|n| n.routing_version >= target);
            if done && self.world.leader.is_some() {
                let took = self.world.now - since;
                self.convergence_us = Some(self.convergence_us.map_or(took, |c| c.max(took)));
                self.converge_watch = None;
            }
        }
        Ok(())
    }

    fn check_request(&mut self, rec: &RequestRecord) -> Result<(), Violation> {
        let w = &self.world;
        let now = w.now;
        if let Some(terms) = &w.quota_terms {
            let window = w.now_ms() / terms.window_ms;
            if let Some((leased, fallback, _)) = w.stats.admitted.get(&(window, rec.key.clone())) {
                let bound = w.stats.fallback_bound.get(&(window, rec.key.clone())).copied().unwrap_or(0);
                quota_bound::check(now, window, &rec.key, terms.limit, *leased, *fallback, bound)?;
            }
        }
        if let Some(to) = rec.forwarded_to {
            let view = w.view_of(rec.node);
            let members: Vec<usize> = (0..w.nodes.len()).filter(|&p| w.nodes[p].region == to).collect();
            let all_unreachable = members.iter().all(|&p| !view.reachable[p]);
            let since = all_unreachable.then(|| members.iter().map(|&p| view.since[p]).max().unwrap_or(0));
            dead_region::check(now, &w.nodes[rec.node].id, &w.region_names[to], since)?;
        }
        if let Outcome::Failed { reason } = rec.outcome {
            if reason != "node down" {
                for (i, (start, end, _)) in self.fault_windows.iter().enumerate() {
                    if (*start..=*end).contains(&now) {
                        self.last_failure_in_fault[i] = Some(now);
                    }
                }
                let known = self.known_healthy_region(rec.node);
                let w = &self.world;
                idempotent_served::check(
                    now,
                    &idempotent_served::Facts {
                        node: &w.nodes[rec.node].id,
                        idempotent: rec.idempotent,
                        failed: true,
                        reason,
                        budget_refused: rec.budget_refused,
                        stale_tries: rec.stale_tries,
                        known_healthy_region: known.map(|r| w.region_names[r].as_str()),
                    },
                )?;
            }
        }
        Ok(())
    }

    /// A region other than `node`'s with a working upstream and a node reachable from `node` that
    /// its gossip view shows live and healthy.
    fn known_healthy_region(&self, node: usize) -> Option<usize> {
        let w = &self.world;
        let view = w.view_of(node);
        let own = w.nodes[node].region;
        (0..w.cfg.regions).filter(|&r| r != own && w.region_can_serve(r)).find(|&r| {
            (0..w.nodes.len()).any(|p| {
                w.nodes[p].region == r && w.reachable(node, p) && view.live[p] && view.healthy[p] > 0
            })
        })
    }

    fn report(mut self, violation: Option<Violation>) -> Report {
        let w = &mut self.world;
        let s = &mut w.stats;
        s.latency_us.sort_unstable();
        s.forward_latency_us.sort_unstable();
        let q = |v: &[u64], p: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let i = ((v.len() as f64 - 1.0) * p).round() as usize;
            v[i] as f64 / 1000.0
        };
        let failover_us = self
            .fault_windows
            .iter()
            .zip(&self.last_failure_in_fault)
            .filter_map(|((start, _, _), last)| last.map(|l| l - start))
            .max()
            .unwrap_or(0);
        let (mut acc, mut checked) = (Vec::new(), 0u64);
        if let Some(terms) = &w.quota_terms {
            let warm = crate::world::EPOCH_MS / terms.window_ms + 3_000 / terms.window_ms;
            let last = (crate::world::EPOCH_MS + w.now / 1000) / terms.window_ms;
            for ((window, _), (leased, fallback, offered)) in &s.admitted {
                if *window > warm && *window < last && *offered >= 2 * terms.limit {
                    checked += 1;
                    acc.push((leased + fallback) as f64 / terms.limit as f64);
                }
            }
        }
        let quota_accuracy = (!acc.is_empty()).then(|| {
            let mean = acc.iter().sum::<f64>() / acc.len() as f64;
            let min = acc.iter().copied().fold(f64::INFINITY, f64::min);
            let max = acc.iter().copied().fold(0.0, f64::max);
            (round3(mean), round3(min), round3(max))
        });
        let n = w.nodes.len();
        let secs = (w.now as f64 / 1e6).max(1e-6);
        Report {
            seed: w.cfg.seed,
            regions: w.cfg.regions,
            nodes: n,
            duration_s: w.cfg.duration_s,
            faults: crate::scenario::describe(&w.cfg.faults),
            events: self.events,
            requests: s.requests,
            served: s.served,
            forwarded_share: round3(s.forwarded as f64 / s.requests.max(1) as f64),
            rate_limited: s.rate_limited,
            failed: s.failed,
            failed_idempotent: s.failed_idempotent,
            refused_by_cross_region_budget: s.refused_by_budget,
            failed_on_a_stale_view: s.failed_stale_view,
            sent_to_a_down_node: s.unreachable_node,
            failover_ms: failover_us / 1000,
            convergence_ms: self.convergence_us.map(|c| c / 1000),
            leader_changes: s.leader_changes,
            committed_versions: s.committed_versions,
            quota_rounds: s.quota_rounds,
            quota_accuracy,
            quota_windows_checked: checked,
            p50_latency_ms: round3(q(&s.latency_us, 0.5)),
            p99_latency_ms: round3(q(&s.latency_us, 0.99)),
            forwarded_p50_ms: (!s.forward_latency_us.is_empty())
                .then(|| round3(q(&s.forward_latency_us, 0.5))),
            messages_per_node_per_s: round3(s.messages as f64 / n as f64 / secs),
            violation: violation.map(|v| ViolationReport {
                invariant: v.invariant.to_string(),
                at_ms: v.at_us / 1000,
                detail: v.detail,
                trace: self.trace_lines(),
            }),
        }
    }
}

impl Loop {
    /// The events before a violation, with what they were about.
    fn trace_lines(&self) -> Vec<String> {
        let w = &self.world;
        let name = |i: usize| w.nodes.get(i).map_or("?".to_string(), |n| n.id.clone());
        let fault = |i: usize| {
            w.cfg
                .faults
                .get(i)
                .map_or("?".to_string(), |f| crate::scenario::describe(std::slice::from_ref(f)))
        };
        self.trace
            .iter()
            .map(|(t, e)| {
                let what = match e {
                    Event::FaultStart(i) => format!("fault starts: {}", fault(*i)),
                    Event::FaultEnd(i) => format!("fault ends: {}", fault(*i)),
                    Event::NodeDown(i) => format!("{} goes down", name(*i)),
                    Event::NodeUp(i) => format!("{} comes back", name(*i)),
                    Event::RaftTick => match self.elections.iter().find(|(at, _, _)| at == t) {
                        Some((_, term, id)) => format!("{id} elected leader, term {term}"),
                        None => "raft tick".to_string(),
                    },
                    Event::RoutingWrite => "routing table write through the leader".to_string(),
                    Event::Settle => "settle: convergence check".to_string(),
                    other => format!("{other:?}"),
                };
                format!("{:>10.3} s  {what}", *t as f64 / 1e6)
            })
            .collect()
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The human part of the report (everything but the final JSON line).
pub fn render(r: &Report, scenario: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "meridian-sim seed {} scenario {scenario}: {} regions x {} nodes, {} s simulated, {} events",
        r.seed,
        r.regions,
        r.nodes / r.regions.max(1),
        r.duration_s,
        r.events
    );
    let _ = writeln!(out, "faults: {}", if r.faults.is_empty() { "none" } else { &r.faults });
    let _ = writeln!(
        out,
        "requests {}: served {}, forwarded share {:.3}, rate limited {}, failed {} ({} idempotent; {} refused by the cross-region budget, {} on a stale gossip view), sent to a down node {}",
        r.requests, r.served, r.forwarded_share, r.rate_limited, r.failed, r.failed_idempotent, r.refused_by_cross_region_budget, r.failed_on_a_stale_view, r.sent_to_a_down_node
    );
    let _ = writeln!(
        out,
        "latency p50 {:.3} ms p99 {:.3} ms; forwarded p50 {}",
        r.p50_latency_ms,
        r.p99_latency_ms,
        r.forwarded_p50_ms.map_or("-".into(), |v| format!("{v:.3} ms"))
    );
    let _ = writeln!(
        out,
        "failover {} ms; convergence {}; leader changes {}; routing versions {}; quota rounds {}",
        r.failover_ms,
        r.convergence_ms.map_or("-".into(), |v| format!("{v} ms")),
        r.leader_changes,
        r.committed_versions,
        r.quota_rounds
    );
    if let Some((mean, min, max)) = r.quota_accuracy {
        let _ = writeln!(
            out,
            "quota accuracy (admitted / limit, saturated windows): mean {mean:.3} min {min:.3} max {max:.3} over {}",
            r.quota_windows_checked
        );
    }
    let _ = writeln!(out, "messages per node per second {:.1}", r.messages_per_node_per_s);
    match &r.violation {
        None => {
            let _ = writeln!(out, "invariants: all held");
        }
        Some(v) => {
            let _ = writeln!(
                out,
                "VIOLATION of \"{}\" at {:.3} s: {}",
                v.invariant,
                v.at_ms as f64 / 1000.0,
                v.detail
            );
            let _ = writeln!(out, "events before it:");
            for t in &v.trace {
                let _ = writeln!(out, "  {t}");
            }
            let _ = writeln!(
                out,
                "reproduce: meridian-sim --seed {} --regions {} --nodes-per-region {} --duration-s {} --scenario {scenario} --faults '{}'",
                r.seed,
                r.regions,
                r.nodes / r.regions.max(1),
                r.duration_s,
                r.faults
            );
        }
    }
    out
}
