//! [`NodeSample`]: what the invariants see of one running node at one instant — plain data
//! copied out of the node's watches, so the checks never touch a store, a lock or the clock.

use std::sync::Arc;

use meridian_gossip::Membership;
use meridian_raft_store::quota::QuotaState;
use meridian_raft_store::AppliedTable;
use meridian_raft_store::RaftRole;

use super::cluster::SimCluster;

#[derive(Clone, Debug)]
pub struct NodeSample {
    pub index: usize,
    pub role: RaftRole,
    pub term: u64,
    /// Raft id of the leader this node follows.
    pub leader: Option<u64>,
    pub applied: Option<AppliedTable>,
    /// Versions applied since the previous sample of this node (newest first), from the
    /// store's history: a node catching up applies several between two samples.
    pub newly_applied: Vec<AppliedTable>,
    pub quota: Arc<QuotaState>,
    pub membership: Arc<Membership>,
}

impl NodeSample {
    pub fn version(&self) -> u64 {
        self.applied.as_ref().map_or(0, |t| t.version)
    }
}

/// Takes samples, remembering each node's last version to know what it applied in between.
pub struct Sampler {
    last_version: Vec<u64>,
}

impl Sampler {
    pub fn new(nodes: usize) -> Self {
        Self { last_version: vec![0; nodes] }
    }

    /// One sample of every running node, in node order.
    pub fn sample(&mut self, cluster: &SimCluster) -> Vec<NodeSample> {
        let mut out = Vec::with_capacity(cluster.nodes.len());
        for (index, node) in cluster.nodes.iter().enumerate() {
            let Some(running) = &node.up else { continue };
            let (role, term, leader) = {
                let s = running.status.borrow();
                (s.role, s.term, s.leader)
            };
            let applied = running.applied.borrow().clone();
            let version = applied.as_ref().map_or(0, |t| t.version);
            let newly_applied = if version == self.last_version[index] {
                Vec::new()
            } else {
                // A restarted node reloads its history; anything above what we saw is new.
                let seen = self.last_version[index];
                running.store.history().into_iter().take_while(|t| t.version > seen).collect()
            };
            self.last_version[index] = version;
            out.push(NodeSample {
                index,
                role,
                term,
                leader,
                applied,
                newly_applied,
                quota: running.quota.borrow().clone(),
                membership: running.membership.borrow().clone(),
            });
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A sample of node `index` with nothing applied.
    pub fn sample(index: usize, role: RaftRole, term: u64) -> NodeSample {
        NodeSample {
            index,
            role,
            term,
            leader: None,
            applied: None,
            newly_applied: Vec::new(),
            quota: Arc::new(QuotaState::default()),
            membership: Arc::new(Membership::default()),
        }
    }
}
