//! openraft's network, built on a [`RaftTransport`]: encodes each RPC as a [`RaftRequest`],
//! bounds the wait, decodes the [`RaftResponse`], and maps failures to the openraft errors
//! that make it back off (unreachable), retry (network) or shrink a batch (payload too large).

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::InstallSnapshotError;
use openraft::error::NetworkError;
use openraft::error::PayloadTooLarge;
use openraft::error::RPCError;
use openraft::error::RaftError;
use openraft::error::RemoteError;
use openraft::error::Unreachable;
use openraft::network::Backoff;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::InstallSnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::RaftNetwork;
use openraft::RaftNetworkFactory;

use crate::codec;
use crate::codec::CodecError;
use crate::error::TransportError;
use crate::node::MeridianNode;
use crate::rpc::RaftRequest;
use crate::rpc::RaftResponse;
use crate::transport::RaftTransport;
use crate::type_config::TypeConfig;

type RpcResult<T, E = RaftError<u64>> = Result<T, RPCError<u64, MeridianNode, E>>;

/// Hands openraft one [`PeerClient`] per target.
pub(crate) struct NetworkFactory {
    pub transport: Arc<dyn RaftTransport>,
    /// Pause before retrying an unreachable peer.
    pub backoff: Duration,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &MeridianNode) -> PeerClient {
        PeerClient {
            target,
            node: node.clone(),
            transport: Arc::clone(&self.transport),
            backoff: self.backoff,
        }
    }
}

/// Sends Raft RPCs to one peer.
pub(crate) struct PeerClient {
    target: u64,
    node: MeridianNode,
    transport: Arc<dyn RaftTransport>,
    backoff: Duration,
}

/// Why an exchange produced no usable reply.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("encoding the request: {0}")]
    Encode(CodecError),
    #[error(transparent)]
    Transport(TransportError),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("undecodable reply: {0}")]
    Decode(CodecError),
    #[error("peer rejected the request: {0}")]
    Rejected(String),
    #[error("reply of the wrong kind")]
    WrongKind,
}

impl PeerClient {
    async fn exchange(&self, request: &RaftRequest, option: &RPCOption) -> Result<RaftResponse, CallError> {
        let bytes = codec::encode(request).map_err(CallError::Encode)?;
        let ttl = option.hard_ttl();
        let reply = match tokio::time::timeout(ttl, self.transport.call(&self.node, bytes)).await {
            Ok(reply) => reply.map_err(CallError::Transport)?,
            Err(_) => return Err(CallError::Timeout(ttl)),
        };
        match codec::decode(&reply).map_err(CallError::Decode)? {
            RaftResponse::Rejected(why) => Err(CallError::Rejected(why)),
            response => Ok(response),
        }
    }

    fn remote<E: Error>(&self, e: E) -> RPCError<u64, MeridianNode, E> {
        RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e))
    }
}

fn rpc_error<E: Error>(e: CallError) -> RPCError<u64, MeridianNode, E> {
    match e {
        CallError::Transport(TransportError::Unreachable { .. }) => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        let entries = rpc.entries.len() as u64;
        match self.exchange(&RaftRequest::AppendEntries(rpc), &option).await {
            Ok(RaftResponse::AppendEntries(reply)) => reply.map_err(|e| self.remote(e)),
            Ok(_) => Err(rpc_error(CallError::WrongKind)),
            // Too many large entries for one message: openraft retries with fewer.
            Err(CallError::Encode(e)) if e.is_size_limit() && entries > 1 => {
                Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2)))
            }
            Err(e) => Err(rpc_error(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        match self.exchange(&RaftRequest::InstallSnapshot(rpc), &option).await {
            Ok(RaftResponse::InstallSnapshot(reply)) => reply.map_err(|e| self.remote(e)),
            Ok(_) => Err(rpc_error(CallError::WrongKind)),
            Err(e) => Err(rpc_error(e)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> RpcResult<VoteResponse<u64>> {
        match self.exchange(&RaftRequest::Vote(rpc), &option).await {
            Ok(RaftResponse::Vote(reply)) => reply.map_err(|e| self.remote(e)),
            Ok(_) => Err(rpc_error(CallError::WrongKind)),
            Err(e) => Err(rpc_error(e)),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.backoff))
    }
}
