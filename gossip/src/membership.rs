//! The membership view: who is in the cluster, who is live, and what each says about itself.
//!
//! Owns the merge from chitchat incarnations to one [`Member`] per Meridian node id. Pure: it
//! takes plain data copied out of chitchat and never locks, sleeps or reads the network.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize;
use tracing::debug;

use crate::facts::NodeFacts;
use crate::keys;

/// One Meridian node as gossip sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Member {
    pub id: String,
    /// Heard from recently (per the failure detector) and has not announced its departure.
    pub live: bool,
    pub facts: NodeFacts,
    pub gossip_addr: SocketAddr,
    /// Incarnation (process start, unix ms); the highest one seen for an id wins.
    pub generation: u64,
}

/// Every node of our cluster that gossip knows, live or not. Our own node is always present
/// and live. Dead nodes stay listed until the gc grace period forgets them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Membership {
    pub members: BTreeMap<String, Member>,
}

impl Membership {
    pub fn live(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| m.live)
    }

    pub fn get(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    pub fn live_count(&self) -> usize {
        self.live().count()
    }

    pub fn dead_count(&self) -> usize {
        self.members.len() - self.live_count()
    }
}

/// One chitchat incarnation of a peer, copied out of chitchat's state (values still untrusted).
#[derive(Clone, Debug)]
pub(crate) struct Incarnation {
    pub node_id: String,
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    /// The failure detector's verdict.
    pub live: bool,
    pub kvs: Vec<(String, String)>,
}

/// Merges peers' incarnations with our own node into the view.
pub(crate) fn build(cluster_id: &str, local: Member, peers: Vec<Incarnation>) -> Membership {
    let mut members: BTreeMap<String, Member> = BTreeMap::new();
    for peer in peers {
        if peer.node_id == local.id {
            // An earlier incarnation of ourselves, or someone claiming our id: we know better.
            continue;
        }
        let decoded = keys::decode(&peer.node_id, peer.kvs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if decoded.cluster_id.as_deref() != Some(cluster_id) {
            // Another cluster, or a node whose keys have not arrived yet: not (yet) ours.
            let cluster = decoded.cluster_id.as_deref().unwrap_or("<none>");
            debug!(node = %peer.node_id, cluster, "node outside our cluster, not shown");
            continue;
        }
        if members.get(&peer.node_id).is_some_and(|m| m.generation >= peer.generation) {
            continue;
        }
        let member = Member {
            live: peer.live && !decoded.left,
            facts: decoded.facts,
            gossip_addr: peer.gossip_addr,
            generation: peer.generation,
            id: peer.node_id,
        };
        members.insert(member.id.clone(), member);
    }
    let local = Member { live: true, ..local };
    members.insert(local.id.clone(), local);
    Membership { members }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn local() -> Member {
        Member {
            id: "us-1".into(),
            live: true,
            facts: NodeFacts { region: "us".into(), ..Default::default() },
            gossip_addr: addr(1),
            generation: 1,
        }
    }

    fn peer(id: &str, generation: u64, live: bool, kvs: &[(&str, &str)]) -> Incarnation {
        Incarnation {
            node_id: id.into(),
            generation,
            gossip_addr: addr(generation as u16),
            live,
            kvs: kvs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn local_node_is_always_present_and_live() {
        let view = build("prod", Member { live: false, ..local() }, vec![]);
        assert_eq!(view.live_count(), 1);
        assert!(view.get("us-1").unwrap().live);
    }

    #[test]
    fn other_clusters_and_keyless_nodes_are_hidden() {
        let peers = vec![
            peer("eu-1", 5, true, &[("cluster", "prod"), ("region", "eu")]),
            peer("xx-1", 5, true, &[("cluster", "staging"), ("region", "eu")]),
            peer("yy-1", 5, true, &[("region", "eu")]),
        ];
        let view = build("prod", local(), peers);
        assert_eq!(view.members.keys().collect::<Vec<_>>(), ["eu-1", "us-1"]);
        assert_eq!(view.get("eu-1").unwrap().facts.region, "eu");
    }

    #[test]
    fn left_members_are_not_live() {
        let peers = vec![peer("eu-1", 5, true, &[("cluster", "prod"), ("left", "true")])];
        let view = build("prod", local(), peers);
        assert!(!view.get("eu-1").unwrap().live);
        assert_eq!((view.live_count(), view.dead_count()), (1, 1));
    }

    #[test]
    fn newest_generation_wins_in_any_order() {
        let old = peer("eu-1", 5, false, &[("cluster", "prod"), ("region", "old")]);
        let new = peer("eu-1", 9, true, &[("cluster", "prod"), ("region", "new")]);
        for peers in [vec![old.clone(), new.clone()], vec![new, old]] {
            let view = build("prod", local(), peers);
            let m = view.get("eu-1").unwrap();
            assert_eq!((m.generation, m.live, m.facts.region.as_str()), (9, true, "new"));
        }
    }

    #[test]
    fn claims_on_our_own_id_are_ignored() {
        let peers = vec![peer("us-1", 99, true, &[("cluster", "prod"), ("region", "forged")])];
        let view = build("prod", local(), peers);
        assert_eq!(view.get("us-1").unwrap().facts.region, "us");
        assert_eq!(view.get("us-1").unwrap().generation, 1);
    }
}
