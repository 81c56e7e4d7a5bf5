//! Node identity: how Meridian's string node ids map onto openraft's numeric ids, and the node
//! record the Raft membership carries.
//!
//! Owns nothing but these two definitions; addresses in [`MeridianNode`] are opaque here — only
//! the transport interprets them.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::Serialize;

use crate::error::StoreError;

/// openraft's node id for a Meridian node id: FNV-1a (64 bit) of the id's UTF-8 bytes.
///
/// A pure function of the string, so every node derives the same number for a peer without a
/// registry, and the id survives restarts. Collisions among a cluster's handful of ids are
/// astronomically unlikely; [`voter_map`] refuses a node set where one happens.
pub fn raft_id(node: &str) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    node.as_bytes().iter().fold(OFFSET_BASIS, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME))
}

/// What the Raft membership records about a node: enough for any member to reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeridianNode {
    /// Meridian node id, e.g. `"us-1"`; its [`raft_id`] is the openraft id.
    pub id: String,
    /// Region the node serves, e.g. `"us"`; used by the caller to spread voters across regions.
    pub region: String,
    /// Where the node's peer plane listens (QUIC); the transport decides how to use it.
    pub peer_addr: String,
}

impl MeridianNode {
    /// Builds a node record.
    pub fn new(id: impl Into<String>, region: impl Into<String>, peer_addr: impl Into<String>) -> Self {
        Self { id: id.into(), region: region.into(), peer_addr: peer_addr.into() }
    }

    /// This node's openraft id.
    pub fn raft_id(&self) -> u64 {
        raft_id(&self.id)
    }
}

/// Keys `nodes` by [`raft_id`], as [`crate::RaftStore::initialize`] takes them; refuses two
/// different ids that hash alike (the same id twice is fine).
pub fn voter_map(
    nodes: impl IntoIterator<Item = MeridianNode>,
) -> Result<BTreeMap<u64, MeridianNode>, StoreError> {
    let mut map = BTreeMap::new();
    for node in nodes {
        if let Some(other) = map.get(&node.raft_id()).filter(|other: &&MeridianNode| other.id != node.id) {
            return Err(StoreError::IdCollision { a: other.id.clone(), b: node.id });
        }
        map.insert(node.raft_id(), node);
    }
    Ok(map)
}

impl fmt::Display for MeridianNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({}@{})", self.id, self.region, self.peer_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_id_is_fnv1a_64() {
        // Reference values of FNV-1a 64: the empty string is the offset basis.
        assert_eq!(raft_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(raft_id("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(raft_id("foobar"), 0x8594_4171_f739_67e8);
        assert_ne!(raft_id("us-1"), raft_id("us-2"));
        assert_eq!(MeridianNode::new("us-1", "us", "x").raft_id(), raft_id("us-1"));
    }

    #[test]
    fn voter_map_keys_by_raft_id() {
        let nodes = ["us-1", "eu-1", "us-1"].map(|id| MeridianNode::new(id, "r", "a"));
        let map = voter_map(nodes).unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map[&raft_id("eu-1")].id, "eu-1");
    }
}
