//! The advisory facts one node publishes about itself.
//!
//! Owns the plain data types only. How they are spelled on the wire is the business of
//! [`crate::keys`]; nothing here is trusted for security (see the crate docs).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a node tells the cluster about itself. Every field is advisory: peers use it to pick
/// forwarding targets and to render the dashboard, never to authorise anything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeFacts {
    /// Region the node serves, e.g. `us`.
    pub region: String,
    /// Data-plane address (`host:port`), empty when unknown.
    pub http_addr: String,
    /// Admin address (`host:port`), empty when unknown.
    pub admin_addr: String,
    /// QUIC peer-plane address (`host:port`), empty when unknown. A peer dialled here must still
    /// present a certificate for this node id: gossip only says where to knock.
    pub peer_addr: String,
    /// Version of the routing table the node has applied.
    pub routing_version: u64,
    /// Raft role as last observed by the node itself: `leader`, `follower`, `learner`,
    /// `candidate`, `standalone`, or empty when unknown.
    pub raft_role: String,
    /// Health of each service's upstreams in this node's region.
    pub services: BTreeMap<String, ServiceHealth>,
    /// Requests in flight, a coarse load signal for picking a forwarding peer.
    pub load: u32,
    /// The node is shutting down or shedding: peers should stop sending it new work.
    pub draining: bool,
}

/// How many of a service's upstream endpoints in the node's region are healthy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHealth {
    pub healthy: u32,
    pub total: u32,
}

impl ServiceHealth {
    /// True when at least one endpoint is believed healthy.
    pub fn any_healthy(&self) -> bool {
        self.healthy > 0
    }
}
