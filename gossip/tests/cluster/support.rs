//! Shared test helpers: starting nodes, bounded waits, sample facts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use meridian_gossip::{Gossip, GossipConfig, Membership, NodeFacts, ServiceHealth};
use tokio::time::Instant;

pub const CLUSTER: &str = "test-cluster";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn phase(what: &str) {
    eprintln!("=== {what}");
}

pub fn facts(region: &str, id: &str) -> NodeFacts {
    let mut services = BTreeMap::new();
    services.insert("echo".to_owned(), ServiceHealth { healthy: 2, total: 2 });
    services.insert("billing".to_owned(), ServiceHealth { healthy: 1, total: 3 });
    NodeFacts {
        region: region.to_owned(),
        http_addr: format!("{id}.{region}.test:8080"),
        admin_addr: "127.0.0.1:9901".to_owned(),
        peer_addr: format!("{id}.{region}.test:7947"),
        routing_version: 1,
        raft_role: "follower".to_owned(),
        services,
        load: 0,
        draining: false,
    }
}

pub fn config(id: &str, cluster: &str, listen: SocketAddr, seeds: &[SocketAddr]) -> GossipConfig {
    let mut cfg = GossipConfig::new(id, cluster, listen);
    cfg.seeds = seeds.iter().map(ToString::to_string).collect();
    cfg
}

pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Starts a node of the test cluster on a free port.
pub async fn start(id: &str, region: &str, seeds: &[SocketAddr]) -> Gossip {
    Gossip::start(config(id, CLUSTER, any_port(), seeds), facts(region, id)).await.expect("gossip starts")
}

/// Waits until `pred` holds for `node`'s view; returns how long it took, panics after `limit`.
pub async fn wait_for(
    node: &Gossip,
    limit: Duration,
    what: &str,
    pred: impl Fn(&Membership) -> bool,
) -> Duration {
    let started = Instant::now();
    let mut rx = node.watch();
    let outcome = tokio::time::timeout(limit, rx.wait_for(|m| pred(m))).await;
    match outcome {
        Ok(Ok(_)) => started.elapsed(),
        Ok(Err(_)) => panic!("{what}: membership watch closed"),
        Err(_) => panic!("{what}: not reached within {limit:?}; last view: {:#?}", node.membership()),
    }
}

pub fn is_live(m: &Membership, id: &str) -> bool {
    m.get(id).is_some_and(|member| member.live)
}

/// All of `ids` are live members, and nobody else is.
pub fn exactly_live(m: &Membership, ids: &[&str]) -> bool {
    m.live_count() == ids.len() && ids.iter().all(|id| is_live(m, id))
}
