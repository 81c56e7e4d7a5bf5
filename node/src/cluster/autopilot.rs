//! Who is in the Raft group: bootstrap with `--expect`, learners for every live member, and
//! voters kept at up to five, spread across regions, with dead voters replaced.
//!
//! Gossip proposes, Raft decides: membership changes are Raft commits made by the leader, and a
//! node gossip merely claims exists is only ever added as a learner (which votes on nothing).
//! Forged gossip can therefore at worst add a non-voting learner that cannot complete a TLS
//! handshake, which is harmless.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use meridian_gossip::Membership;
use meridian_raft_store::{raft_id, MeridianNode, RaftRole};
use tokio::time::Instant;

use super::Cluster;

/// Most voters the leader keeps: enough to survive two failures, few enough to commit fast.
const MAX_VOTERS: usize = 5;

fn member_node(m: &meridian_gossip::Member) -> Option<MeridianNode> {
    (!m.facts.peer_addr.is_empty()).then(|| MeridianNode::new(&m.id, &m.facts.region, &m.facts.peer_addr))
}

/// Wait until gossip shows `expect` live members that prove their identity on the peer plane;
/// then the lowest id among them initialises Raft with them.
pub async fn bootstrap(cluster: Arc<Cluster>, expect: usize) {
    let mut watch = cluster.gossip.watch();
    loop {
        if cluster.raft.is_initialized().await {
            return;
        }
        let members = watch.borrow_and_update().clone();
        let claimed: Vec<MeridianNode> = members.live().filter_map(member_node).collect();
        if claimed.len() >= expect {
            // Gossip is unauthenticated: only members that prove a cluster certificate on the
            // peer plane count towards `expect`, choose the initialiser or become voters. A
            // forged member can otherwise take a voter seat it can never fill.
            let mut live = Vec::with_capacity(claimed.len());
            for n in claimed {
                if n.id == cluster.id || proves_identity(&cluster, &n).await {
                    live.push(n);
                } else {
                    tracing::debug!(node = %n.id, "gossip member failed the peer-plane identity check; not counted for bootstrap");
                }
            }
            if live.len() < expect {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            let lowest = live.iter().map(|n| n.id.as_str()).min().unwrap_or("");
            if lowest == cluster.id {
                let voters: BTreeMap<u64, MeridianNode> =
                    pick_voters(&live, &BTreeSet::new()).into_iter().map(|n| (n.raft_id(), n)).collect();
                tracing::info!(voters = ?voters.values().map(|n| n.id.as_str()).collect::<Vec<_>>(), "initialising the raft group");
                if let Err(e) = cluster.raft.initialize(voters).await {
                    tracing::warn!(error = %e, "raft initialisation failed; will retry");
                } else {
                    return;
                }
            }
        }
        // Another node may initialise; our store then becomes initialised by replication.
        tokio::select! {
            _ = watch.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Up to `MAX_VOTERS` nodes, keeping `current` ones first, then one per region not yet
/// represented, then the rest by id.
fn pick_voters(live: &[MeridianNode], current: &BTreeSet<u64>) -> Vec<MeridianNode> {
    let mut sorted: Vec<&MeridianNode> = live.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut chosen: Vec<MeridianNode> = Vec::new();
    let take = |n: &MeridianNode, chosen: &mut Vec<MeridianNode>| {
        if chosen.len() < MAX_VOTERS && !chosen.iter().any(|c| c.id == n.id) {
            chosen.push(n.clone());
        }
    };
    for n in sorted.iter().filter(|n| current.contains(&n.raft_id())) {
        take(n, &mut chosen);
    }
    for n in &sorted {
        if !chosen.iter().any(|c| c.region == n.region) {
            take(n, &mut chosen);
        }
    }
    for n in &sorted {
        take(n, &mut chosen);
    }
    chosen
}

/// A learner within this many entries of the leader's log counts as caught up.
const CAUGHT_UP_WITHIN: u64 = 16;

/// Does `node` answer on the peer plane with a certificate from our CA naming it? Gossip is
/// unauthenticated; this is what keeps a node that merely claims to exist out of the group.
async fn proves_identity(cluster: &Cluster, node: &MeridianNode) -> bool {
    let Ok(addr) = super::transport::resolve(&node.peer_addr).await else { return false };
    // Any answer to an (empty, hence rejected) Raft RPC means the mutual TLS handshake succeeded.
    cluster.peer.call(&node.id, addr, crate::peer::kind::RAFT, &[], Duration::from_secs(2)).await.is_ok()
}

/// On the leader: add live members that prove their identity as learners, promote caught-up
/// learners to keep up to five voters spread across regions, and replace dead voters.
pub async fn run(cluster: Arc<Cluster>, voter_dead_after: Duration) {
    let mut dead_since: HashMap<u64, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let status = cluster.raft.status();
        if status.role != RaftRole::Leader {
            dead_since.clear();
            continue;
        }
        let members: Arc<Membership> = cluster.gossip.membership();
        let live: Vec<MeridianNode> = members.live().filter_map(member_node).collect();
        let live_ids: BTreeSet<u64> = live.iter().map(MeridianNode::raft_id).collect();
        let known: BTreeSet<u64> =
            status.voters.iter().chain(status.learners.iter()).map(MeridianNode::raft_id).collect();
        for n in live.iter().filter(|n| !known.contains(&n.raft_id())) {
            if !proves_identity(&cluster, n).await {
                tracing::debug!(node = %n.id, "gossip member failed the peer-plane identity check; not added");
                continue;
            }
            tracing::info!(node = %n.id, region = %n.region, "adding member as raft learner");
            if let Err(e) = cluster.raft.add_learner(n.clone()).await {
                tracing::warn!(node = %n.id, error = %e, "adding learner failed");
            }
        }
        // Voters gossip has not seen alive for long enough are replaced.
        let now = Instant::now();
        let voters: BTreeSet<u64> = status.voters.iter().map(MeridianNode::raft_id).collect();
        for v in &voters {
            if live_ids.contains(v) {
                dead_since.remove(v);
            } else {
                dead_since.entry(*v).or_insert(now);
            }
        }
        let keep: BTreeSet<u64> = voters
            .iter()
            .copied()
            .filter(|v| dead_since.get(v).is_none_or(|t| now.duration_since(*t) < voter_dead_after))
            .collect();
        // Candidates: live members already in the group whose log has caught up with ours (a
        // learner that cannot be reached never does, so it never gets a vote).
        let head = status.last_log_index.unwrap_or(0);
        let caught_up = |id: u64| {
            voters.contains(&id)
                || status
                    .replication
                    .get(&id)
                    .copied()
                    .flatten()
                    .is_some_and(|m| m + CAUGHT_UP_WITHIN >= head)
        };
        let eligible: Vec<MeridianNode> = live
            .iter()
            .filter(|n| known.contains(&n.raft_id()) && caught_up(n.raft_id()))
            .cloned()
            .chain(status.voters.iter().filter(|v| keep.contains(&v.raft_id())).cloned())
            .collect();
        let mut eligible_dedup: Vec<MeridianNode> = Vec::new();
        for n in eligible {
            if !eligible_dedup.iter().any(|e| e.id == n.id) {
                eligible_dedup.push(n);
            }
        }
        let desired: BTreeSet<u64> =
            pick_voters(&eligible_dedup, &keep).iter().map(MeridianNode::raft_id).collect();
        if !desired.is_empty() && desired != voters && desired.contains(&raft_id(&cluster.id)) {
            tracing::info!(from = ?voters, to = ?desired, "changing raft voters");
            if let Err(e) = cluster.raft.change_voters(desired).await {
                tracing::warn!(error = %e, "voter change failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(id: &str, region: &str) -> MeridianNode {
        MeridianNode::new(id, region, "127.0.0.1:1")
    }

    #[test]
    fn voters_spread_across_regions_first() {
        let live = [n("a1", "us"), n("a2", "us"), n("a3", "us"), n("b1", "eu"), n("c1", "ap"), n("a4", "us")];
        let v: Vec<String> = pick_voters(&live, &BTreeSet::new()).into_iter().map(|n| n.id).collect();
        assert_eq!(v.len(), 5);
        assert!(v.contains(&"b1".to_string()) && v.contains(&"c1".to_string()), "{v:?}");
    }

    #[test]
    fn current_voters_are_kept() {
        let live = [n("a", "us"), n("b", "us"), n("c", "eu"), n("d", "eu"), n("e", "ap"), n("f", "ap")];
        let current: BTreeSet<u64> = [raft_id("f"), raft_id("d")].into();
        let v: Vec<String> = pick_voters(&live, &current).into_iter().map(|n| n.id).collect();
        assert!(v.contains(&"f".to_string()) && v.contains(&"d".to_string()), "{v:?}");
        assert!(v.len() <= MAX_VOTERS);
    }
}
