//! The node's shared state: identity, limits, the current routing snapshot and what outlives it.
//!
//! The request path reads one `Arc<Snapshot>` per request and never blocks on anything else.
//! A table change builds a whole new snapshot and swaps it in; requests in flight finish on the
//! one they started with. Per-endpoint state (pools, health, in-flight counts) and per-route
//! metrics live in registries keyed by name so that they survive a table change.

use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::auth::EdgePolicy;
use crate::core::health::{EndpointHealth, HealthPolicy};
use crate::core::matcher::RouteMatcher;
use crate::core::retry::RetryBudget;
use crate::core::table::{parse_endpoint, RoutingTable, ServiceSpec};
use crate::metrics::{Metrics, RouteMetrics};
use crate::proxy::fields::NodeFields;
use crate::proxy::pool::ConnPool;
use crate::quota::key::KeySource;
use crate::quota::{policy_header, QuotaPlane, RouteQuota};
use crate::route_store::{RouteStore, WriteError};

/// Who this node is, with the header values it stamps on responses ready-made.
pub struct Identity {
    pub id: String,
    pub region: String,
    /// `x-meridian-node` and `x-meridian-region`.
    pub fields: Arc<NodeFields>,
}

impl Identity {
    pub fn new(id: &str, region: &str) -> anyhow::Result<Identity> {
        Ok(Identity {
            id: id.to_string(),
            region: region.to_string(),
            fields: Arc::new(NodeFields::new(HeaderValue::from_str(id)?, HeaderValue::from_str(region)?)),
        })
    }
}

/// Data-plane limits, fixed at start-up.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_in_flight: u32,
    pub max_body_bytes: u64,
    /// Request bodies up to this size are buffered so the request can be retried.
    pub retry_buffer_bytes: u64,
    pub connect_timeout: Duration,
    pub retry_budget_ratio: f64,
    pub retry_budget_min_per_sec: u32,
}

pub struct EndpointRuntime {
    pub url: String,
    pub pool: Arc<ConnPool>,
    pub in_flight: Arc<AtomicU32>,
    pub health: Mutex<EndpointHealth>,
}

impl EndpointRuntime {
    pub fn is_available(&self, now: Instant) -> bool {
        self.health.lock().map(|h| h.is_available(now)).unwrap_or(true)
    }
}

pub struct ServiceRuntime {
    pub name: String,
    pub spec: ServiceSpec,
    pub policy: HealthPolicy,
    /// Endpoints in this node's region, the only ones it calls directly.
    pub local: Vec<Arc<EndpointRuntime>>,
    pub budget: Arc<Mutex<RetryBudget>>,
    /// Cross-region forwards after failed local attempts; separate from the local budget.
    pub forward_budget: Arc<Mutex<RetryBudget>>,
    pub failover: crate::core::table::FailoverSpec,
    pub timeout: Duration,
    pub per_try_timeout: Duration,
}

pub struct RouteRuntime {
    pub name: String,
    pub service: usize,
    pub metrics: Arc<RouteMetrics>,
    pub quota: Option<Arc<RouteQuota>>,
    /// IP lists and authentication, compiled; `None` when the route has neither.
    pub edge: Option<EdgePolicy>,
}

/// One applied routing-table version, compiled for the request path.
pub struct Snapshot {
    pub version: u64,
    pub table: Arc<RoutingTable>,
    pub matcher: RouteMatcher,
    pub routes: Vec<RouteRuntime>,
    pub services: Vec<Arc<ServiceRuntime>>,
}

#[derive(Default)]
struct Registry {
    endpoints: HashMap<(String, String), Arc<EndpointRuntime>>,
    budgets: HashMap<String, Arc<Mutex<RetryBudget>>>,
    forward_budgets: HashMap<String, Arc<Mutex<RetryBudget>>>,
}

pub struct Gateway {
    pub identity: Identity,
    pub limits: Limits,
    pub metrics: Metrics,
    /// Requests being served by this node, for load shedding.
    pub in_flight: Arc<AtomicU32>,
    /// Rate-limit counters and the lease ledger they read.
    pub quotas: QuotaPlane,
    snapshot: ArcSwapOption<Snapshot>,
    changes: watch::Sender<Option<Arc<Snapshot>>>,
    registry: Mutex<Registry>,
    store: Mutex<RouteStore>,
    /// Set once in cluster mode; failover reads it (never on the plain request path).
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// Set once when `--https` is on; only `/metrics` reads it here.
    edge_tls: std::sync::OnceLock<Arc<crate::edge_tls::EdgeTls>>,
}

impl Gateway {
    pub fn new(identity: Identity, limits: Limits) -> Arc<Gateway> {
        let (changes, _) = watch::channel(None);
        Arc::new(Gateway {
            identity,
            limits,
            metrics: Metrics::default(),
            in_flight: Arc::new(AtomicU32::new(0)),
            quotas: QuotaPlane::default(),
            snapshot: ArcSwapOption::empty(),
            changes,
            registry: Mutex::new(Registry::default()),
            store: Mutex::new(RouteStore::default()),
            cluster: std::sync::OnceLock::new(),
            edge_tls: std::sync::OnceLock::new(),
        })
    }

    pub fn set_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    pub fn cluster(&self) -> Option<Arc<crate::cluster::Cluster>> {
        self.cluster.get().cloned()
    }

    pub fn set_edge_tls(&self, tls: Arc<crate::edge_tls::EdgeTls>) {
        let _ = self.edge_tls.set(tls);
    }

    pub fn edge_tls(&self) -> Option<&Arc<crate::edge_tls::EdgeTls>> {
        self.edge_tls.get()
    }

    /// The snapshot requests are served from right now.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.load_full()
    }

    /// A watch that sees every applied snapshot (health checking follows it).
    pub fn watch(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.changes.subscribe()
    }

    pub fn store(&self) -> std::sync::MutexGuard<'_, RouteStore> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validate and commit a table as the next version, then apply it.
    pub fn write_table(
        &self,
        table: RoutingTable,
        expected: Option<u64>,
        cause: &str,
        who: &str,
    ) -> Result<u64, WriteError> {
        let mut store = self.store();
        let author = crate::route_store::Author { who, node: &self.identity.id };
        let version = store.write(table, expected, cause, author, unix_ms())?;
        self.apply_current(&store);
        Ok(version)
    }

    pub fn rollback(&self, to: u64, who: &str) -> Result<u64, WriteError> {
        let mut store = self.store();
        let author = crate::route_store::Author { who, node: &self.identity.id };
        let version = store.rollback(to, author, unix_ms())?;
        self.apply_current(&store);
        Ok(version)
    }

    /// Install a table committed by the cluster (never through the local store).
    pub fn apply_replicated(&self, version: u64, table: RoutingTable, cause: &str) {
        if self.snapshot().is_some_and(|s| s.version == version) {
            return;
        }
        let snap = Arc::new(self.compile(version, Arc::new(table)));
        self.snapshot.store(Some(snap.clone()));
        self.changes.send_replace(Some(snap));
        self.metrics.table_swaps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(version, cause, "routing table applied");
    }

    fn apply_current(&self, store: &RouteStore) {
        if let Some(current) = store.current() {
            let snap = Arc::new(self.compile(current.version, current.table.clone()));
            self.snapshot.store(Some(snap.clone()));
            self.changes.send_replace(Some(snap));
            self.metrics.table_swaps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(version = current.version, cause = %current.cause, "routing table applied");
        }
    }

    fn compile(&self, version: u64, table: Arc<RoutingTable>) -> Snapshot {
        let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let mut index = HashMap::new();
        let mut services = Vec::with_capacity(table.services.len());
        let mut live_endpoints = HashMap::new();
        for (name, spec) in &table.services {
            let urls = spec.endpoints.get(&self.identity.region).cloned().unwrap_or_default();
            let local = urls
                .iter()
                .filter_map(|url| {
                    let authority = parse_endpoint(url).ok()?;
                    let key = (name.clone(), url.clone());
                    let ep = reg
                        .endpoints
                        .get(&key)
                        .filter(|ep| ep.pool.protocol() == spec.protocol)
                        .cloned()
                        .unwrap_or_else(|| {
                            Arc::new(EndpointRuntime {
                                url: url.clone(),
                                pool: Arc::new(ConnPool::new(authority, spec.protocol)),
                                in_flight: Arc::new(AtomicU32::new(0)),
                                health: Mutex::new(EndpointHealth::default()),
                            })
                        });
                    live_endpoints.insert(key, ep.clone());
                    Some(ep)
                })
                .collect();
            let budget = reg
                .budgets
                .entry(name.clone())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(RetryBudget::new(
                        self.limits.retry_budget_ratio,
                        self.limits.retry_budget_min_per_sec,
                    )))
                })
                .clone();
            let failover = spec.failover.clone().unwrap_or_default();
            let forward_budget = reg
                .forward_budgets
                .entry(name.clone())
                .or_insert_with(|| Arc::new(Mutex::new(RetryBudget::new(failover.budget_ratio, 1))))
                .clone();
            let timeout = Duration::from_millis(spec.timeout_ms);
            index.insert(name.clone(), services.len());
            services.push(Arc::new(ServiceRuntime {
                name: name.clone(),
                spec: spec.clone(),
                policy: HealthPolicy::new(spec.health_check.as_ref(), spec.outlier.as_ref()),
                local,
                budget,
                forward_budget,
                failover,
                timeout,
                per_try_timeout: spec.per_try_timeout_ms.map_or(timeout, Duration::from_millis),
            }));
        }
        // Endpoints no longer in the table are forgotten (their pools close when the last
        // in-flight request on them ends).
        reg.endpoints = live_endpoints;
        reg.budgets.retain(|name, _| index.contains_key(name));
        reg.forward_budgets.retain(|name, _| index.contains_key(name));
        let quotas: HashMap<&str, Arc<RouteQuota>> = table
            .quotas
            .iter()
            .filter_map(|(name, spec)| {
                let quota = RouteQuota {
                    name: Arc::from(name.as_str()),
                    spec: spec.clone(),
                    key: KeySource::parse(&spec.key)?,
                    limiter: self.quotas.limiter(name, spec.window_ms),
                    policy: policy_header(name, spec),
                };
                Some((name.as_str(), Arc::new(quota)))
            })
            .collect();
        self.quotas.retain_limiters(&quotas.keys().copied().collect::<Vec<_>>());
        let routes = table
            .routes
            .iter()
            .map(|r| RouteRuntime {
                name: r.name.clone(),
                service: index.get(&r.service).copied().unwrap_or(0),
                metrics: self.metrics.route(&r.name, &self.identity.region),
                quota: r.quota.as_deref().and_then(|q| quotas.get(q).cloned()),
                edge: compile_edge(r),
            })
            .collect();
        Snapshot { version, matcher: RouteMatcher::new(&table), table, routes, services }
    }
}

/// A route's edge policy. The table was validated, so this compiles; were it not to, the route
/// refuses every request rather than serving it unchecked.
fn compile_edge(route: &crate::core::table::RouteSpec) -> Option<EdgePolicy> {
    EdgePolicy::compile(route, "route").unwrap_or_else(|problems| {
        tracing::error!(route = %route.name, ?problems, "route access rules do not compile; refusing its requests");
        Some(EdgePolicy::closed())
    })
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
