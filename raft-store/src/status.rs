//! A plain view of this node's Raft state for the admin API, metrics and readiness: who leads,
//! in which term, how far the log is committed and applied, and who the members are.
//!
//! Derived from openraft's metrics plus the committed index the log store saves; openraft types
//! do not leak past this module.

use std::fmt;

use openraft::ServerState;
use tokio::time::Instant;

use crate::node::MeridianNode;
use crate::type_config::RaftMetrics;

/// This node's role in the Raft group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RaftRole {
    Leader,
    Follower,
    /// A non-voting member, or a node not yet part of any group.
    Learner,
    Candidate,
    Shutdown,
}

impl RaftRole {
    pub fn as_str(&self) -> &'static str {
        match self {
            RaftRole::Leader => "leader",
            RaftRole::Follower => "follower",
            RaftRole::Learner => "learner",
            RaftRole::Candidate => "candidate",
            RaftRole::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for RaftRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<ServerState> for RaftRole {
    fn from(s: ServerState) -> Self {
        match s {
            ServerState::Leader => RaftRole::Leader,
            ServerState::Follower => RaftRole::Follower,
            ServerState::Learner => RaftRole::Learner,
            ServerState::Candidate => RaftRole::Candidate,
            ServerState::Shutdown => RaftRole::Shutdown,
        }
    }
}

/// Snapshot of this node's Raft state.
#[derive(Clone, Debug)]
pub struct RaftStatus {
    /// This node's raft id.
    pub id: u64,
    /// The leader this node currently follows (itself when leading).
    pub leader: Option<u64>,
    pub leader_node: Option<MeridianNode>,
    pub term: u64,
    pub role: RaftRole,
    /// Highest log index known committed; `None` before the first commit.
    pub commit_index: Option<u64>,
    /// Highest log index applied to the state machine.
    pub applied_index: Option<u64>,
    /// Highest log index in this node's log.
    pub last_log_index: Option<u64>,
    /// Highest log index covered by this node's latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Highest log index removed from this node's log (covered by a snapshot).
    pub purged_index: Option<u64>,
    pub voters: Vec<MeridianNode>,
    pub learners: Vec<MeridianNode>,
    /// On the leader: the highest log index each other member is known to hold (`None` while
    /// nothing has been replicated to it). Empty on other nodes.
    pub replication: std::collections::BTreeMap<u64, Option<u64>>,
    /// When `leader` last changed (or the store opened).
    pub last_leader_change: Instant,
}

impl RaftStatus {
    pub(crate) fn initial(id: u64, now: Instant) -> Self {
        Self {
            id,
            leader: None,
            leader_node: None,
            term: 0,
            role: RaftRole::Learner,
            commit_index: None,
            applied_index: None,
            last_log_index: None,
            snapshot_index: None,
            purged_index: None,
            voters: Vec::new(),
            learners: Vec::new(),
            replication: std::collections::BTreeMap::new(),
            last_leader_change: now,
        }
    }

    /// The status after openraft reported `metrics`; `now` stamps a leader change.
    pub(crate) fn next(&self, metrics: &RaftMetrics, commit_index: Option<u64>, now: Instant) -> Self {
        let membership = metrics.membership_config.membership();
        let node = |id: u64| membership.get_node(&id).cloned();
        let last_leader_change =
            if metrics.current_leader != self.leader { now } else { self.last_leader_change };
        let applied_index = metrics.last_applied.map(|l| l.index);
        Self {
            id: metrics.id,
            leader: metrics.current_leader,
            leader_node: metrics.current_leader.and_then(node),
            term: metrics.current_term,
            role: metrics.state.into(),
            // The saved committed index can trail what is already applied for a moment.
            commit_index: commit_index.max(applied_index),
            applied_index,
            last_log_index: metrics.last_log_index,
            snapshot_index: metrics.snapshot.map(|l| l.index),
            purged_index: metrics.purged.map(|l| l.index),
            voters: membership.voter_ids().filter_map(node).collect(),
            learners: membership.learner_ids().filter_map(node).collect(),
            replication: metrics
                .replication
                .as_ref()
                .map(|r| r.iter().map(|(id, matched)| (*id, matched.map(|l| l.index))).collect())
                .unwrap_or_default(),
            last_leader_change,
        }
    }

    /// The status once the Raft core has stopped.
    pub(crate) fn stopped(&self) -> Self {
        Self { role: RaftRole::Shutdown, leader: None, leader_node: None, ..self.clone() }
    }

    /// The leader as `(raft id, node)`, when known.
    pub fn leader_pair(&self) -> Option<(u64, MeridianNode)> {
        self.leader.zip(self.leader_node.clone())
    }
}
