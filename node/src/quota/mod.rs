//! Global rate limits on the node: the per-request check, the leases it reads, and the headers
//! it answers with.
//!
//! A request on a route with a quota is counted by the [`QuotaLimiter`] of that quota against
//! this node's share for the current window. The share comes from the replicated ledger
//! (`meridian_raft_store::quota`) this node has applied — read from an atomically swapped
//! snapshot, never waited for. Where the ledger has no lease for this node (it expired, or the
//! node has not joined the window's participants yet), the quota's `on_partition` decides:
//! `local_share` admits `limit / live members` (live as gossip sees them), `closed` nothing,
//! `open` everything. A standalone node is the whole cluster: its share is the limit.
//!
//! - `key.rs`: which key a request counts under.
//! - `rounds.rs`: once per round, each node's demand to the leader and the leader's round
//!   into Raft.
//! - `view.rs`: `/quotas` and the quota metrics.

pub mod key;
pub mod rounds;
pub mod view;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue};
use meridian_raft_store::quota::{Lease, QuotaState};

use crate::core::limiter::{Allowance, Decision, QuotaLimiter};
use crate::core::table::{OnPartition, QuotaSpec};
use key::KeySource;

/// A route's quota, compiled into the routing snapshot.
pub struct RouteQuota {
    pub name: Arc<str>,
    pub spec: QuotaSpec,
    pub key: KeySource,
    pub limiter: Arc<QuotaLimiter>,
    /// `ratelimit-policy` value, ready-made.
    pub policy: HeaderValue,
}

/// What the response says about the limit (`ratelimit`, `ratelimit-policy`, `retry-after`).
pub struct RateLimitInfo {
    pub policy: HeaderValue,
    pub name: Arc<str>,
    pub decision: Decision,
}

impl RateLimitInfo {
    pub fn apply(&self, headers: &mut HeaderMap) {
        let d = &self.decision;
        let reset_s = d.reset_ms.div_ceil(1000).max(1);
        let remaining = if d.share == u64::MAX { u64::from(u32::MAX) } else { d.remaining };
        if let Ok(v) = HeaderValue::from_str(&format!("\"{}\";r={remaining};t={reset_s}", self.name)) {
            headers.insert("ratelimit", v);
        }
        headers.insert("ratelimit-policy", self.policy.clone());
        if !d.admitted {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(reset_s));
        }
    }
}

/// The node's quota state that outlives routing snapshots.
pub struct QuotaPlane {
    ledger: ArcSwap<QuotaState>,
    /// Moves whenever what a share depends on moves (ledger, live members); counters re-ask.
    generation: AtomicU64,
    live_members: AtomicU64,
    clustered: AtomicBool,
    limiters: Mutex<HashMap<String, Arc<QuotaLimiter>>>,
    pub stats: rounds::RoundStats,
}

impl Default for QuotaPlane {
    fn default() -> Self {
        QuotaPlane {
            ledger: ArcSwap::from_pointee(QuotaState::default()),
            generation: AtomicU64::new(1),
            live_members: AtomicU64::new(1),
            clustered: AtomicBool::new(false),
            limiters: Mutex::new(HashMap::new()),
            stats: rounds::RoundStats::default(),
        }
    }
}

impl QuotaPlane {
    /// From now on shares come from the ledger (cluster mode).
    pub fn set_clustered(&self) {
        self.clustered.store(true, Ordering::Relaxed);
        self.bump();
    }

    pub fn is_clustered(&self) -> bool {
        self.clustered.load(Ordering::Relaxed)
    }

    pub fn install_ledger(&self, ledger: Arc<QuotaState>) {
        self.ledger.store(ledger);
        self.bump();
    }

    pub fn ledger(&self) -> Arc<QuotaState> {
        self.ledger.load_full()
    }

    pub fn set_live_members(&self, n: u64) {
        if self.live_members.swap(n.max(1), Ordering::Relaxed) != n.max(1) {
            self.bump();
        }
    }

    pub fn live_members(&self) -> u64 {
        self.live_members.load(Ordering::Relaxed)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// The limiter of quota `name`, kept across table versions while its window stays the same.
    pub fn limiter(&self, name: &str, window_ms: u64) -> Arc<QuotaLimiter> {
        let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(name) {
            Some(l) if l.window_ms() == window_ms => l.clone(),
            _ => {
                let l = Arc::new(QuotaLimiter::new(window_ms));
                map.insert(name.to_string(), l.clone());
                l
            }
        }
    }

    /// Forget limiters of quotas no longer in the table.
    pub fn retain_limiters(&self, names: &[&str]) {
        let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|name, _| names.contains(&name.as_str()));
    }

    /// Every limiter with its quota name, sorted by name.
    pub fn limiters(&self) -> Vec<(String, Arc<QuotaLimiter>)> {
        let map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = map.iter().map(|(k, l)| (k.clone(), l.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Counts one request against `quota` at `now_ms` for node `node`.
    pub fn check(
        &self,
        quota: &RouteQuota,
        node: &str,
        headers: &HeaderMap,
        client_ip: IpAddr,
        route: &str,
        now_ms: u64,
    ) -> Decision {
        let generation = self.generation.load(Ordering::Relaxed);
        quota.key.with_key(headers, client_ip, route, |key| {
            quota.limiter.check(key, now_ms, generation, |window| self.allowance(quota, node, key, window))
        })
    }

    fn allowance(&self, quota: &RouteQuota, node: &str, key: &str, window: u64) -> Allowance {
        if !self.is_clustered() {
            return Allowance { share: quota.spec.limit, fallback: false, hot: false };
        }
        allowance(&self.ledger.load(), &quota.name, &quota.spec, node, key, window, self.live_members())
    }

    /// What this node admits per window per key without a lease.
    pub fn fallback_share(&self, spec: &QuotaSpec) -> u64 {
        fallback_share(spec, self.live_members())
    }
}

/// What `node` may admit for `key` of quota `name` in `window`: its lease, when the applied
/// `ledger` holds one under the same terms, else the quota's `on_partition` fallback with `live`
/// members seen. The node and the simulator both decide with this.
pub fn allowance(
    ledger: &QuotaState,
    name: &str,
    spec: &QuotaSpec,
    node: &str,
    key: &str,
    window: u64,
    live: u64,
) -> Allowance {
    let same_terms = ledger.ledger(name).is_some_and(|l| l.window_ms == spec.window_ms);
    match ledger.lease(name, key, node, window) {
        Lease::Share { share, hot } if same_terms => Allowance { share, fallback: false, hot },
        _ => Allowance { share: fallback_share(spec, live), fallback: true, hot: false },
    }
}

/// What a node admits per window per key without a lease, seeing `live` members.
pub fn fallback_share(spec: &QuotaSpec, live: u64) -> u64 {
    match spec.on_partition {
        OnPartition::Closed => 0,
        OnPartition::Open => u64::MAX,
        OnPartition::LocalShare => spec.limit / live.max(1),
    }
}

/// The `ratelimit-policy` value of a quota: `"NAME";q=LIMIT;w=SECONDS` (window rounded up).
pub fn policy_header(name: &str, spec: &QuotaSpec) -> HeaderValue {
    let w = spec.window_ms.div_ceil(1000).max(1);
    HeaderValue::from_str(&format!("\"{name}\";q={};w={w}", spec.limit))
        .unwrap_or_else(|_| HeaderValue::from_static("\"quota\""))
}
