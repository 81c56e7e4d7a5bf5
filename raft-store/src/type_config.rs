//! openraft's type configuration for Meridian's Raft group, and short aliases for the openraft
//! types the rest of the crate names.

use std::io::Cursor;

use crate::command::Command;
use crate::command::CommandResult;
use crate::node::MeridianNode;

openraft::declare_raft_types!(
    /// Meridian's Raft types: [`Command`]s in the log, node ids from [`crate::raft_id`].
    ///
    /// `R` is an `Option` because every applied entry answers, and blank or membership entries
    /// carry no command.
    pub TypeConfig:
        D = Command,
        R = Option<CommandResult>,
        NodeId = u64,
        Node = MeridianNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Vote = openraft::Vote<u64>;
pub type StoredMembership = openraft::StoredMembership<u64, MeridianNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<u64, MeridianNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<u64>;
pub type RaftMetrics = openraft::RaftMetrics<u64, MeridianNode>;
