//! The Raft messages as they cross a [`crate::RaftTransport`]: one request enum, one response
//! enum, bincode-encoded with a size limit (see `codec.rs`).

use openraft::error::InstallSnapshotError;
use openraft::error::RaftError;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::InstallSnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use serde::Deserialize;
use serde::Serialize;

use crate::codec;
use crate::type_config::TypeConfig;

/// A Raft RPC sent from one member to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    /// One chunk of a snapshot; openraft splits snapshots into bounded chunks.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The reply to a [`RaftRequest`]: the receiver's Raft answer, or why it could not answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftResponse {
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// The request could not be decoded (or the reply not encoded).
    Rejected(String),
}

impl RaftResponse {
    /// Encodes the reply; if that fails, an encoded `Rejected` saying why, so the caller always
    /// gets a decodable answer.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self).unwrap_or_else(|e| {
            codec::encode(&RaftResponse::Rejected(format!("reply not encodable: {e}"))).unwrap_or_default()
        })
    }
}
