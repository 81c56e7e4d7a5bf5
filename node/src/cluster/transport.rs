//! Raft RPCs over the peer plane: `RaftTransport` implemented with a QUIC unary call.

use std::net::SocketAddr;
use std::time::Duration;

use meridian_raft_store::{BoxFuture, MeridianNode, RaftTransport, TransportError};

use crate::peer::{kind, PeerError, PeerPlane};

/// Longest one Raft RPC may take (snapshots included) before openraft is told it failed.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

pub struct QuicRaftTransport {
    pub peer: PeerPlane,
    /// Gossip knows where a node lives now; the Raft membership remembers where it lived when it
    /// joined. A node restarted on another port is found through gossip (TLS still checks that
    /// whoever answers there holds that node's certificate).
    pub members: tokio::sync::watch::Receiver<std::sync::Arc<meridian_gossip::Membership>>,
}

impl RaftTransport for QuicRaftTransport {
    fn call(
        &self,
        target: &MeridianNode,
        request: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        let mut target = target.clone();
        if let Some(m) = self.members.borrow().get(&target.id) {
            if m.live && !m.facts.peer_addr.is_empty() {
                target.peer_addr = m.facts.peer_addr.clone();
            }
        }
        Box::pin(async move {
            let addr = resolve(&target.peer_addr)
                .await
                .map_err(|reason| TransportError::Unreachable { peer: target.id.clone(), reason })?;
            tracing::trace!(peer = %target.id, %addr, "raft rpc");
            self.peer.call(&target.id, addr, kind::RAFT, &request, RPC_TIMEOUT).await.map_err(|e| {
                tracing::debug!(peer = %target.id, %addr, error = %e, "raft rpc failed");
                let reason = e.to_string();
                let peer = target.id.clone();
                match e {
                    PeerError::Timeout { .. } | PeerError::RecentlyUnreachable { .. } => {
                        TransportError::Failed { peer, reason }
                    }
                    _ => TransportError::Unreachable { peer, reason },
                }
            })
        })
    }
}

/// A peer address from gossip or Raft membership: an IP literal, or a name (containers) looked
/// up through the system resolver.
pub async fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("resolving {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))
}
