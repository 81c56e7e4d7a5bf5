//! The errors this crate's API returns. openraft's own error types stay inside the crate.

use std::path::PathBuf;

use crate::node::MeridianNode;

/// Opening, bootstrapping or running the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The configuration cannot work (e.g. heartbeat not shorter than the election timeout).
    #[error("invalid raft config: {0}")]
    Config(String),

    /// The data directory could not be created or read.
    #[error("raft data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },

    /// The database file is damaged: checksums fail, it is truncated, or a record does not
    /// decode. Refused rather than repaired, because repairing could drop committed entries
    /// or a vote; an operator restores the file or wipes the node and lets it rejoin.
    #[error("raft database {path} is corrupt or truncated: {detail}")]
    Corrupt { path: PathBuf, detail: String },

    /// Another store (in this or another process) has the database open.
    #[error("raft database {path} is already open by another store")]
    AlreadyOpen { path: PathBuf },

    /// The database was written by a different node: the data dir was mixed up.
    #[error("raft database {path} belongs to raft node {found}, not {expected}")]
    WrongNode { path: PathBuf, expected: u64, found: u64 },

    /// Reading or writing the database failed for another reason (I/O, permissions).
    #[error("raft database {path}: {detail}")]
    Database { path: PathBuf, detail: String },

    /// Two voters' Meridian ids hash to the same raft id.
    #[error("raft id collision between nodes {a} and {b}")]
    IdCollision { a: String, b: String },

    /// The Raft core refused or failed (stopped, storage failure).
    #[error("raft: {0}")]
    Raft(String),
}

/// A proposal or membership change did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader. `leader` is who is, when known; the caller forwards there.
    #[error("not the raft leader (leader: {})", leader_display(.leader))]
    NotLeader { leader: Option<(u64, MeridianNode)> },

    /// No commit within the bound: the leader cannot reach a quorum (or lost leadership while
    /// waiting). The command may still commit later; the caller cannot know.
    #[error("no raft quorum: not committed in time")]
    NoQuorum,

    /// The table is too large to replicate safely.
    #[error("command of {bytes} bytes exceeds the {limit}-byte limit")]
    TooLarge { bytes: usize, limit: usize },

    /// The membership change was refused (another change in progress, unknown learner, ...).
    #[error("membership change refused: {0}")]
    Membership(String),

    /// The Raft node stopped or its storage failed.
    #[error("raft fatal: {0}")]
    Fatal(String),
}

fn leader_display(leader: &Option<(u64, MeridianNode)>) -> String {
    match leader {
        Some((_, node)) => node.to_string(),
        None => "unknown".to_string(),
    }
}

/// A transport could not deliver a request or bring back its reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The peer cannot be reached at all (no route, refused, cut off); openraft backs off.
    #[error("peer {peer} unreachable: {reason}")]
    Unreachable { peer: String, reason: String },
    /// The exchange started but failed (reset, timeout); openraft retries.
    #[error("rpc to {peer} failed: {reason}")]
    Failed { peer: String, reason: String },
}
