//! Meridian's Raft group: the replicated, versioned routing table and the global
//! rate-limit quota leases,
//! openraft underneath, durable on a redb file, over a pluggable transport.
//!
//! # Layout
//!
//! - [`RaftStore`] (`store.rs`) — the API the node uses: open, initialize, propose, watch the
//!   applied table, change membership, serve peer RPCs, shut down.
//! - `command.rs` — [`Command`] / [`CommandResult`], what goes through the log.
//! - `routing_history.rs`, `quota/`, `audit.rs`, `machine.rs` — the pure state: routing versions
//!   and history, the quota lease ledger, the audit trail of table writes, and how each command changes them. No IO, deterministic.
//! - `state_machine.rs`, `log_store.rs`, `db.rs` — openraft's storage traits on one redb file.
//! - `transport.rs`, `rpc.rs`, `network.rs` — the [`RaftTransport`] seam, the wire messages, and
//!   openraft's network on top; `mem_transport.rs` — the in-process [`MemTransport`].
//! - `config.rs`, `status.rs`, `node.rs`, `error.rs`, `codec.rs`, `type_config.rs` — the rest.
//!
//! The node needs only [`RaftStore`], [`RaftConfig`], [`Command`] and the transport trait.
//! [`TypeConfig`], [`LogStore`], [`StateMachineStore`] and the wire enums [`RaftRequest`] /
//! [`RaftResponse`] expose openraft types; they are public so openraft's storage test suite, a
//! simulator, or a transport's tests can reach below the API.

pub mod audit;
mod codec;
mod command;
mod config;
mod db;
mod error;
mod log_store;
mod machine;
mod mem_transport;
mod network;
mod node;
pub mod quota;
mod routing_history;
mod rpc;
mod state_machine;
mod status;
mod store;
mod transport;
mod type_config;

pub use codec::MAX_MESSAGE_BYTES;
pub use command::Command;
pub use command::CommandResult;
pub use config::RaftConfig;
pub use config::RaftTimings;
pub use error::ProposeError;
pub use error::StoreError;
pub use error::TransportError;
pub use log_store::LogStore;
pub use mem_transport::MemTransport;
pub use node::raft_id;
pub use node::voter_map;
pub use node::MeridianNode;
pub use routing_history::AppliedTable;
pub use routing_history::HISTORY_LEN;
pub use rpc::RaftRequest;
pub use rpc::RaftResponse;
pub use state_machine::StateMachineStore;
pub use status::RaftRole;
pub use status::RaftStatus;
pub use store::RaftStore;
pub use store::MAX_TABLE_BYTES;
pub use transport::BoxFuture;
pub use transport::RaftTransport;
pub use type_config::TypeConfig;

/// Opens the storage half of a node on its own — the log store and state machine over
/// `data_dir/raft.redb` — without starting Raft. For openraft's storage test suite and tools.
pub async fn open_storage(
    data_dir: &std::path::Path,
    node: &MeridianNode,
) -> Result<(LogStore, StateMachineStore), StoreError> {
    let db = db::RaftDb::open(data_dir, node.raft_id()).await?;
    let path = db.path().to_path_buf();
    let load_err = |e: db::DbError| e.into_store_error(&path);
    let log_store = LogStore::new(db.clone()).map_err(load_err)?;
    let state_machine = StateMachineStore::load(db).map_err(load_err)?;
    Ok((log_store, state_machine))
}
