//! Routing-table writes in a cluster: proposed to Raft here when this node leads, else sent to
//! the leader over the peer plane. Any node accepts a write; the caller never needs to know who
//! leads.

use std::time::Duration;

use meridian_raft_store::{Command, CommandResult, ProposeError};
use serde::{Deserialize, Serialize};

use super::transport::resolve;
use super::Cluster;
use crate::peer::{frame, kind};

/// How long a write may wait for a commit before the client is told there is no quorum.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// One forward to the leader; short, so a leader that just died costs little before the retry.
const FORWARD_TIMEOUT: Duration = Duration::from_millis(1500);

/// Why a write did not commit.
#[derive(Debug, thiserror::Error)]
pub enum WriteFailure {
    #[error("no raft leader is known yet")]
    NoLeader,
    #[error("no quorum: the write did not commit within {0:?}")]
    NoQuorum(Duration),
    #[error("table too large: {0}")]
    TooLarge(String),
    #[error("{0}")]
    Internal(String),
}

/// What the leader answers a forwarded write with.
#[derive(Debug, Serialize, Deserialize)]
pub enum LeaderWriteReply {
    Done(CommandResult),
    NotLeader,
    NoQuorum,
    TooLarge(String),
    Failed(String),
}

impl Cluster {
    /// Commit `cmd` through Raft, from whichever node this is, within [`WRITE_TIMEOUT`].
    ///
    /// The leader may be changing under us: a forward that fails or times out is retried against
    /// whoever leads next, and a leader that gossip already reports dead is not tried at all, so a
    /// write right after a leader dies commits as soon as a new one is elected.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, WriteFailure> {
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        let mut last = WriteFailure::NoLeader;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(match last {
                    WriteFailure::NoLeader => WriteFailure::NoLeader,
                    _ => WriteFailure::NoQuorum(WRITE_TIMEOUT),
                });
            }
            match self.raft.propose_within(cmd.clone(), left).await {
                Ok(result) => return Ok(result),
                Err(ProposeError::NotLeader { leader: Some((_, leader)) }) => {
                    let leader_live = self.gossip.membership().get(&leader.id).is_none_or(|m| m.live);
                    if leader_live {
                        match self.forward_write(&leader, &cmd, left.min(FORWARD_TIMEOUT)).await {
                            Ok(LeaderWriteReply::Done(result)) => return Ok(result),
                            Ok(LeaderWriteReply::NoQuorum) => last = WriteFailure::NoQuorum(WRITE_TIMEOUT),
                            Ok(LeaderWriteReply::NotLeader) => last = WriteFailure::NoLeader,
                            Ok(LeaderWriteReply::TooLarge(e)) => return Err(WriteFailure::TooLarge(e)),
                            Ok(LeaderWriteReply::Failed(e)) => return Err(WriteFailure::Internal(e)),
                            Err(e) => {
                                tracing::debug!(leader = %leader.id, error = %e, "forwarding a write failed");
                                last = e;
                            }
                        }
                    }
                }
                Err(ProposeError::NotLeader { leader: None }) => last = WriteFailure::NoLeader,
                Err(ProposeError::NoQuorum) => return Err(WriteFailure::NoQuorum(WRITE_TIMEOUT)),
                Err(ProposeError::TooLarge { bytes, limit }) => {
                    return Err(WriteFailure::TooLarge(format!("{bytes} bytes, the limit is {limit}")))
                }
                Err(e) => return Err(WriteFailure::Internal(e.to_string())),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn forward_write(
        &self,
        leader: &meridian_raft_store::MeridianNode,
        cmd: &Command,
        timeout: Duration,
    ) -> Result<LeaderWriteReply, WriteFailure> {
        let addr = resolve(&self.peer_addr_of(leader)).await.map_err(WriteFailure::Internal)?;
        let payload = frame::encode(cmd).map_err(|e| WriteFailure::Internal(e.to_string()))?;
        let reply = self.peer.call(&leader.id, addr, kind::LEADER_WRITE, &payload, timeout).await.map_err(
            |e| match e {
                crate::peer::PeerError::Timeout { .. }
                | crate::peer::PeerError::RecentlyUnreachable { .. } => WriteFailure::NoQuorum(WRITE_TIMEOUT),
                e => WriteFailure::Internal(format!("forwarding to leader {}: {e}", leader.id)),
            },
        )?;
        frame::decode(&reply).map_err(|e| WriteFailure::Internal(e.to_string()))
    }

    /// Serve a write another node forwarded to us as leader. `from` is the caller's node id as
    /// its certificate proves it; the node a write names as having accepted it (recorded in the
    /// history and the audit trail) must be that node.
    pub(super) async fn serve_leader_write(&self, from: &str, payload: &[u8]) -> LeaderWriteReply {
        let cmd: Command = match frame::decode(payload) {
            Ok(c) => c,
            Err(e) => return LeaderWriteReply::Failed(format!("undecodable write: {e}")),
        };
        let by_node = match &cmd {
            Command::PutTable { by_node, .. }
            | Command::PutTableBy { by_node, .. }
            | Command::Rollback { by_node, .. }
            | Command::RollbackBy { by_node, .. } => by_node.as_str(),
            Command::QuotaRound { .. } => {
                return LeaderWriteReply::Failed("quota rounds are proposed by the leader only".into())
            }
        };
        if by_node != from {
            tracing::warn!(%from, claimed = %by_node, "refused a forwarded write naming another node");
            return LeaderWriteReply::Failed(format!(
                "a write forwarded by {from} must name {from} as the accepting node, not {by_node}"
            ));
        }
        match self.raft.propose_within(cmd, WRITE_TIMEOUT).await {
            Ok(result) => LeaderWriteReply::Done(result),
            Err(ProposeError::NotLeader { .. }) => LeaderWriteReply::NotLeader,
            Err(ProposeError::NoQuorum) => LeaderWriteReply::NoQuorum,
            Err(ProposeError::TooLarge { bytes, limit }) => {
                LeaderWriteReply::TooLarge(format!("{bytes} bytes, the limit is {limit}"))
            }
            Err(e) => LeaderWriteReply::Failed(e.to_string()),
        }
    }
}
