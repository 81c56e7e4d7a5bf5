//! Cluster mode: gossip membership, the Raft group holding the routing table, and the peer plane
//! they talk over, wired to this node's gateway.
//!
//! - [`transport`]: Raft RPCs over QUIC.
//! - [`writes`]: routing-table writes from any node, forwarded to the leader.
//! - [`autopilot`]: bootstrap with `--expect`, learners and voters.
//! - [`elections`]: when this voter may campaign (not right after a restart, not when cut off).
//! - [`view`]: what `/cluster`, `/readyz` and `/metrics` show.
//!
//! Nothing here sits on the request path: the gateway serves from the snapshot the applied-table
//! watcher installs, and gossip facts are published from a timer.

pub mod autopilot;
pub mod elections;
pub mod transport;
pub mod view;
pub mod writes;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use meridian_gossip::{Gossip, GossipConfig, NodeFacts, ServiceHealth};
use meridian_raft_store::{MeridianNode, RaftConfig, RaftStore, RaftTimings};

use crate::config::NodeConfig;
use crate::core::table;
use crate::gateway::Gateway;
use crate::peer::{kind, CredentialWatch, PeerCall, PeerPlane, TlsFiles};

pub struct Cluster {
    pub id: String,
    pub region: String,
    pub gossip: Gossip,
    pub peer: PeerPlane,
    pub raft: RaftStore,
    pub leader_changes: AtomicU64,
    /// This node has trailed the leader's routing version for longer than `LAG_WARNING_AFTER`.
    pub lagging: std::sync::atomic::AtomicBool,
    /// Demand reports received as leader since the last quota round.
    pub quota_reports: crate::quota::rounds::PendingReports,
}

/// Addresses this node is reached at, as other nodes should dial them.
pub struct Advertised {
    pub gossip: SocketAddr,
    pub peer: String,
    pub http: String,
    pub admin: String,
}

impl Cluster {
    /// Bind the peer plane and gossip, open the Raft store, and start the background tasks.
    pub async fn start(
        cfg: &NodeConfig,
        gw: Arc<Gateway>,
        http: SocketAddr,
        admin: SocketAddr,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Arc<Cluster>> {
        let tls_dir = cfg.tls_dir.as_ref().context("cluster mode needs --tls-dir")?;
        let tls_files = TlsFiles::new(tls_dir, &cfg.id);
        // Taken before loading, so a change made while the node starts is picked up later.
        let tls_fingerprint = tls_files.fingerprint();
        let tls = tls_files.load().map_err(|e| anyhow::anyhow!("tls_dir: {e}"))?;
        let peer = PeerPlane::bind(cfg.peer, tls)
            .await
            .map_err(|e| anyhow::anyhow!("binding the peer plane to {}: {e}", cfg.peer))?;
        let peer_addr = peer.local_addr();
        let adv = advertise(cfg, http, admin, peer_addr).await?;

        let mut gcfg = GossipConfig::new(&cfg.id, &cfg.cluster_id, cfg.gossip);
        gcfg.advertise = adv.gossip;
        gcfg.seeds = cfg.seeds.clone();
        gcfg.gossip_interval = cfg.gossip_interval;
        let facts = NodeFacts {
            region: cfg.region.clone(),
            http_addr: adv.http.clone(),
            admin_addr: adv.admin.clone(),
            peer_addr: adv.peer.clone(),
            raft_role: "learner".into(),
            ..Default::default()
        };
        let gossip = Gossip::start(gcfg, facts).await.map_err(|e| anyhow::anyhow!("starting gossip: {e}"))?;

        let node = MeridianNode::new(&cfg.id, &cfg.region, &adv.peer);
        let mut rcfg = RaftConfig::new(node, cfg.data_dir.join("raft"));
        rcfg.timings = if cfg.raft_wan { RaftTimings::wan() } else { RaftTimings::lan() };
        let transport =
            Arc::new(transport::QuicRaftTransport { peer: peer.clone(), members: gossip.watch() });
        let raft = match RaftStore::open(rcfg, transport).await {
            Ok(raft) => raft,
            Err(e) => {
                // Stop gossip in order (peers hear we left) rather than by dropping the runtime,
                // which looks to gossip's watcher like a crashed server.
                gossip.leave().await;
                return Err(anyhow::anyhow!("opening the raft store in {}: {e}", cfg.data_dir.display()));
            }
        };

        println!("meridian node {} cluster gossip={} peer={peer_addr}", cfg.id, gossip.local_addr());
        let cluster = Arc::new(Cluster {
            id: cfg.id.clone(),
            region: cfg.region.clone(),
            gossip,
            peer,
            raft,
            leader_changes: AtomicU64::new(0),
            lagging: std::sync::atomic::AtomicBool::new(false),
            quota_reports: Default::default(),
        });

        gw.set_cluster(cluster.clone());
        gw.quotas.set_clustered();
        let serving = cluster.clone();
        let serving_gw = gw.clone();
        let mut peer_stop = stop.clone();
        tokio::spawn(async move {
            let handler_cluster = serving.clone();
            serving
                .peer
                .serve(
                    move |call| {
                        let c = handler_cluster.clone();
                        let gw = serving_gw.clone();
                        Box::pin(async move { c.serve_call(gw, call).await })
                    },
                    async move {
                        let _ = peer_stop.wait_for(|s| *s).await;
                    },
                )
                .await;
        });
        // Renewed certificates and CA bundles are picked up without a restart.
        tokio::spawn(
            CredentialWatch::new(cluster.peer.clone(), tls_files, tls_fingerprint).run(stop.clone()),
        );
        tokio::spawn(apply_tables(cluster.clone(), gw.clone()));
        tokio::spawn(publish_facts(cluster.clone(), gw.clone()));
        tokio::spawn(watch_leader(cluster.clone()));
        tokio::spawn(drop_dead_peers(cluster.clone()));
        tokio::spawn(crate::quota::rounds::follow_ledger(cluster.clone(), gw.clone()));
        if let Some(expect) = cfg.expect {
            tokio::spawn(bootstrap_then_seed(cluster.clone(), expect, cfg.routes.clone()));
        }
        tokio::spawn(autopilot::run(cluster.clone(), cfg.voter_dead_after));
        tokio::spawn(elections::run(cluster.clone(), stop.clone()));
        Ok(cluster)
    }

    async fn serve_call(self: Arc<Self>, gw: Arc<Gateway>, call: PeerCall) {
        match call.kind {
            kind::FORWARD => crate::forward::serve::serve(gw, call).await,
            kind::RAFT => {
                let reply = self.raft.handle_rpc(&call.payload).await;
                let _ = call.reply(&reply).await;
            }
            kind::QUOTA_REPORT => crate::quota::rounds::serve_report(&self, &gw, call).await,
            kind::LEADER_WRITE => {
                let reply = self.serve_leader_write(&call.from, &call.payload).await;
                match crate::peer::frame::encode(&reply) {
                    Ok(bytes) => {
                        let _ = call.reply(&bytes).await;
                    }
                    Err(e) => tracing::warn!(error = %e, "encoding a leader-write reply failed"),
                }
            }
            other => {
                // Dropping the call resets its stream: the caller learns at once.
                tracing::debug!(from = %call.from, kind = other, "unsupported peer rpc");
            }
        }
    }

    /// Where `node`'s peer plane is now: gossip's live view first (a node may have restarted on
    /// another port), the address Raft recorded otherwise.
    pub fn peer_addr_of(&self, node: &MeridianNode) -> String {
        match self.gossip.membership().get(&node.id) {
            Some(m) if m.live && !m.facts.peer_addr.is_empty() => m.facts.peer_addr.clone(),
            _ => node.peer_addr.clone(),
        }
    }

    /// Announce departure in gossip, stop Raft and close peer connections.
    pub async fn shutdown(self: Arc<Self>) {
        self.gossip.announce_leave().await;
        self.raft.shutdown().await;
        self.peer.close().await;
        tracing::info!(node = %self.id, "left the cluster");
    }
}

async fn advertise(
    cfg: &NodeConfig,
    http: SocketAddr,
    admin: SocketAddr,
    peer: SocketAddr,
) -> anyhow::Result<Advertised> {
    let host = match &cfg.advertise {
        Some(h) => h.clone(),
        None if !cfg.gossip.ip().is_unspecified() => cfg.gossip.ip().to_string(),
        None => "127.0.0.1".to_string(),
    };
    let gossip_ip = transport::resolve(&format!("{host}:{}", cfg.gossip.port()))
        .await
        .map_err(|e| anyhow::anyhow!("advertise: {e}"))?
        .ip();
    let join =
        |port: u16| if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    Ok(Advertised {
        gossip: SocketAddr::new(gossip_ip, cfg.gossip.port()),
        peer: join(peer.port()),
        http: join(http.port()),
        admin: join(admin.port()),
    })
}

/// Install every committed routing table on this node's gateway.
async fn apply_tables(cluster: Arc<Cluster>, gw: Arc<Gateway>) {
    let mut applied = cluster.raft.applied();
    loop {
        let current = applied.borrow_and_update().clone();
        if let Some(t) = current {
            match table::parse_json(&t.table_json) {
                Ok(parsed) => gw.apply_replicated(t.version, parsed, &t.cause),
                // Validated before proposing; a table that fails here came from a newer node
                // with rules this one does not know. Keep serving the last good one.
                Err(e) => {
                    tracing::error!(version = t.version, error = %e, "committed table rejected locally")
                }
            }
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}

/// How long this node may trail the leader's routing version before it says so.
const LAG_WARNING_AFTER: Duration = Duration::from_secs(10);

/// Keep this node's advisory facts in gossip current, and warn when this node's applied routing
/// version trails the leader's for long.
async fn publish_facts(cluster: Arc<Cluster>, gw: Arc<Gateway>) {
    let mut behind_since: Option<tokio::time::Instant> = None;
    loop {
        let status = cluster.raft.status();
        let snap = gw.snapshot();
        let now = tokio::time::Instant::now();
        let services = snap
            .as_ref()
            .map(|s| {
                s.services
                    .iter()
                    .map(|svc| {
                        let healthy = svc.local.iter().filter(|e| e.is_available(now)).count() as u32;
                        (svc.name.clone(), ServiceHealth { healthy, total: svc.local.len() as u32 })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let version = snap.as_ref().map_or(0, |s| s.version);
        let leader_version = status
            .leader_node
            .as_ref()
            .and_then(|l| cluster.gossip.membership().get(&l.id).map(|m| m.facts.routing_version))
            .unwrap_or(version);
        if leader_version > version {
            let since = *behind_since.get_or_insert(now);
            if now.duration_since(since) >= LAG_WARNING_AFTER {
                tracing::warn!(
                    version,
                    leader_version,
                    behind_for_s = now.duration_since(since).as_secs(),
                    "this node's routing table lags the leader's"
                );
                cluster.lagging.store(true, Ordering::Relaxed);
            }
        } else {
            behind_since = None;
            cluster.lagging.store(false, Ordering::Relaxed);
        }
        let load = gw.in_flight.load(Ordering::Relaxed);
        cluster
            .gossip
            .update(|f| {
                f.routing_version = version;
                // Gossip knows the roles a live member can have; a stopping node has none.
                f.raft_role = match status.role {
                    meridian_raft_store::RaftRole::Shutdown => String::new(),
                    r => r.as_str().to_string(),
                };
                f.services = services;
                f.load = load;
            })
            .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// When gossip declares a member dead, close our QUIC connection to it: streams in flight on it
/// (a forwarded response, say) fail within the detection time instead of the idle timeout.
async fn drop_dead_peers(cluster: Arc<Cluster>) {
    let mut watch = cluster.gossip.watch();
    let mut live: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    loop {
        let now: std::collections::BTreeSet<String> =
            watch.borrow_and_update().live().map(|m| m.id.clone()).collect();
        for gone in live.difference(&now) {
            if *gone != cluster.id {
                tracing::info!(peer = %gone, "gossip reports the peer dead; closing its connection");
                cluster.peer.drop_peer(gone);
            }
        }
        live = now;
        if watch.changed().await.is_err() {
            return;
        }
    }
}

async fn watch_leader(cluster: Arc<Cluster>) {
    let mut status = cluster.raft.watch_status();
    let mut leader = status.borrow().leader;
    while status.changed().await.is_ok() {
        let now = status.borrow_and_update().leader;
        if now != leader {
            cluster.leader_changes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(leader = ?status.borrow().leader_node.as_ref().map(|n| n.id.clone()), "raft leader changed");
            leader = now;
        }
    }
}

/// Bootstrap, then (on the initialising node, once it leads) commit `--routes` as version 1.
async fn bootstrap_then_seed(cluster: Arc<Cluster>, expect: usize, routes: Option<std::path::PathBuf>) {
    autopilot::bootstrap(cluster.clone(), expect).await;
    let Some(path) = routes else { return };
    let table = match crate::node::load_table(&path) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "routes file unusable for seeding");
            return;
        }
    };
    let Ok(json) = serde_json::to_string(&table) else { return };
    // Only the first table: a restarted node must not overwrite what the cluster has moved to.
    for _ in 0..100 {
        if cluster.raft.applied().borrow().is_some() {
            return;
        }
        if cluster.raft.status().role == meridian_raft_store::RaftRole::Leader {
            let cmd = meridian_raft_store::Command::PutTableBy {
                table_json: json.clone(),
                expected_version: Some(0),
                cause: "bootstrap".into(),
                by_node: cluster.id.clone(),
                who: "bootstrap".into(),
                at_ms: crate::gateway::unix_ms(),
            };
            match cluster.raft.propose_within(cmd, writes::WRITE_TIMEOUT).await {
                Ok(r) => {
                    tracing::info!(result = ?r, "seeded the routing table from --routes");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "seeding the routing table failed; retrying"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
