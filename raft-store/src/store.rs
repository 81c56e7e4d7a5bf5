//! [`RaftStore`]: Meridian's handle on its Raft group. Opens the durable storage, runs openraft
//! over a [`RaftTransport`], and offers the small API the node uses — propose a command, watch
//! the applied table, change membership, serve peers' RPCs.
//!
//! openraft stays behind this type: nothing public here names an openraft type.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::ClientWriteError;
use openraft::error::InitializeError;
use openraft::error::RaftError;
use openraft::ChangeMembers;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::codec;
use crate::command::Command;
use crate::command::CommandResult;
use crate::config::RaftConfig;
use crate::db::DbError;
use crate::db::RaftDb;
use crate::error::ProposeError;
use crate::error::StoreError;
use crate::log_store::LogStore;
use crate::network::NetworkFactory;
use crate::node::MeridianNode;
use crate::quota::QuotaState;
use crate::routing_history::AppliedTable;
use crate::rpc::RaftRequest;
use crate::rpc::RaftResponse;
use crate::state_machine::StateMachineStore;
use crate::status::RaftStatus;
use crate::transport::RaftTransport;
use crate::type_config::Raft;
use crate::type_config::RaftMetrics;

/// Largest `table_json` a `PutTable` may carry. Every version is replicated in one log entry and
/// kept (×100) in snapshots, so a table must stay far below the message limit.
pub const MAX_TABLE_BYTES: usize = 4 * 1024 * 1024;

/// How long `shutdown` waits for openraft's tasks to release the database file.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Handle on this node's member of the Raft group. Clones share one Raft node.
#[derive(Clone)]
pub struct RaftStore {
    inner: Arc<Inner>,
}

struct Inner {
    node: MeridianNode,
    raft: Raft,
    applied: watch::Receiver<Option<AppliedTable>>,
    history: watch::Receiver<Vec<AppliedTable>>,
    audit: watch::Receiver<Arc<crate::audit::AuditLog>>,
    quota: watch::Receiver<Arc<QuotaState>>,
    status: watch::Receiver<RaftStatus>,
    /// Closes when openraft's tasks have let go of the database file, for `shutdown`.
    db_closed: watch::Receiver<()>,
    db_path: PathBuf,
    propose_timeout: Duration,
}

impl RaftStore {
    /// Opens (or creates) the database in `cfg.data_dir` and starts this node's Raft.
    ///
    /// The persisted state machine is loaded before Raft starts, so [`Self::applied`] holds the
    /// last applied table at once. A damaged file is [`StoreError::Corrupt`], never repaired
    /// by dropping data.
    pub async fn open(cfg: RaftConfig, transport: Arc<dyn RaftTransport>) -> Result<RaftStore, StoreError> {
        let config = Arc::new(cfg.openraft_config()?);
        let id = cfg.node.raft_id();
        let db = RaftDb::open(&cfg.data_dir, id).await?;
        let load_err = |e: DbError| e.into_store_error(db.path());
        let log_store = LogStore::new(db.clone()).map_err(load_err)?;
        let state_machine = StateMachineStore::load(db.clone()).map_err(load_err)?;
        let applied = state_machine.watch_applied();
        let history = state_machine.watch_history();
        let audit = state_machine.watch_audit();
        let quota = state_machine.watch_quota();
        let committed = log_store.watch_committed();
        let network = NetworkFactory { transport, backoff: cfg.timings.heartbeat * 2 };
        let (db_closed, db_path) = (db.watch_closed(), db.path().to_path_buf());
        drop(db);

        let raft = Raft::new(id, config, network, log_store, state_machine)
            .await
            .map_err(|e| StoreError::Raft(format!("starting raft on {}: {e}", db_path.display())))?;
        let status = spawn_status_view(id, raft.metrics(), committed);
        tracing::info!(node = %cfg.node, raft_id = id, "raft store open");
        Ok(RaftStore {
            inner: Arc::new(Inner {
                node: cfg.node,
                raft,
                applied,
                history,
                audit,
                quota,
                status,
                db_closed,
                db_path,
                propose_timeout: cfg.propose_timeout,
            }),
        })
    }

    /// This node.
    pub fn node(&self) -> &MeridianNode {
        &self.inner.node
    }

    /// This node's raft id.
    pub fn raft_id(&self) -> u64 {
        self.inner.node.raft_id()
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.inner.db_path
    }

    /// Bootstraps the group with `voters` (keyed by [`crate::raft_id`]). Calling it on a node
    /// that is already part of a group is a no-op, so every bootstrap candidate may call it.
    pub async fn initialize(&self, voters: BTreeMap<u64, MeridianNode>) -> Result<(), StoreError> {
        if let Some((key, node)) = voters.iter().find(|(key, node)| **key != node.raft_id()) {
            return Err(StoreError::Config(format!("voter key {key} is not raft_id({:?})", node.id)));
        }
        match self.inner.raft.initialize(voters).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(RaftError::APIError(e @ InitializeError::NotInMembers(_))) => {
                Err(StoreError::Config(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(StoreError::Raft(e.to_string())),
        }
    }

    /// Whether this node has joined a group (bootstrapped, or learned of one from a leader).
    pub async fn is_initialized(&self) -> bool {
        self.inner.raft.is_initialized().await.unwrap_or(false)
    }

    /// Proposes `cmd`, bounded by the configured `propose_timeout`.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, ProposeError> {
        self.propose_within(cmd, self.inner.propose_timeout).await
    }

    /// Proposes `cmd` and waits up to `bound` for it to commit and apply here.
    ///
    /// Only the leader accepts; elsewhere the answer is [`ProposeError::NotLeader`] naming the
    /// leader, for the caller to forward to. Past `bound` the answer is
    /// [`ProposeError::NoQuorum`] — the command may still commit later.
    pub async fn propose_within(&self, cmd: Command, bound: Duration) -> Result<CommandResult, ProposeError> {
        if let Command::PutTable { table_json, .. } | Command::PutTableBy { table_json, .. } = &cmd {
            if table_json.len() > MAX_TABLE_BYTES {
                return Err(ProposeError::TooLarge { bytes: table_json.len(), limit: MAX_TABLE_BYTES });
            }
        }
        match tokio::time::timeout(bound, self.inner.raft.client_write(cmd)).await {
            Err(_) => Err(ProposeError::NoQuorum),
            Ok(Ok(response)) => {
                response.data.ok_or_else(|| ProposeError::Fatal("applied command produced no result".into()))
            }
            Ok(Err(e)) => Err(self.write_error(e)),
        }
    }

    /// Adds `node` as a learner (non-voting member that receives the log). Returns once the
    /// membership change is committed, without waiting for the learner to catch up.
    pub async fn add_learner(&self, node: MeridianNode) -> Result<(), ProposeError> {
        let write = self.inner.raft.add_learner(node.raft_id(), node, false);
        self.membership_write(write).await
    }

    /// Makes `voters` the voter set (joint consensus). Each must already be a member (add it as
    /// a learner first); voters left out stay on as learners.
    pub async fn change_voters(&self, voters: BTreeSet<u64>) -> Result<(), ProposeError> {
        let write = self.inner.raft.change_membership(voters, true);
        self.membership_write(write).await
    }

    /// Removes learners (nodes that left the cluster) from the membership.
    pub async fn remove_learners(&self, ids: BTreeSet<u64>) -> Result<(), ProposeError> {
        let write = self.inner.raft.change_membership(ChangeMembers::RemoveNodes(ids), false);
        self.membership_write(write).await
    }

    async fn membership_write<F, T>(&self, write: F) -> Result<(), ProposeError>
    where
        F: std::future::Future<Output = Result<T, RaftError<u64, ClientWriteError<u64, MeridianNode>>>>,
    {
        match tokio::time::timeout(self.inner.propose_timeout, write).await {
            Err(_) => Err(ProposeError::NoQuorum),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.write_error(e)),
        }
    }

    fn write_error(&self, e: RaftError<u64, ClientWriteError<u64, MeridianNode>>) -> ProposeError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                // openraft may know the leader's id before its node record; fill it from the
                // membership. Without an address the caller cannot forward, so then: unknown.
                let status = self.status();
                let leader = forward.leader_id.and_then(|id| {
                    let node = forward.leader_node.or_else(|| {
                        status.voters.iter().chain(&status.learners).find(|n| n.raft_id() == id).cloned()
                    });
                    node.map(|node| (id, node))
                });
                ProposeError::NotLeader { leader }
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                ProposeError::Membership(e.to_string())
            }
            RaftError::Fatal(e) => ProposeError::Fatal(e.to_string()),
        }
    }

    /// The current routing table; updated whenever a new version is applied here, and already
    /// set after a restart from what was persisted.
    pub fn applied(&self) -> watch::Receiver<Option<AppliedTable>> {
        self.inner.applied.clone()
    }

    /// The quota lease ledger as applied here; updated after every quota round.
    pub fn quota(&self) -> watch::Receiver<Arc<QuotaState>> {
        self.inner.quota.clone()
    }

    /// Committed versions still kept (at most 100), newest first.
    pub fn history(&self) -> Vec<AppliedTable> {
        self.inner.history.borrow().clone()
    }

    /// The audit trail of routing-table writes as applied here (the newest
    /// [`crate::audit::AUDIT_LEN`] records).
    pub fn audit(&self) -> Arc<crate::audit::AuditLog> {
        Arc::clone(&self.inner.audit.borrow())
    }

    /// This node's Raft state now.
    pub fn status(&self) -> RaftStatus {
        self.inner.status.borrow().clone()
    }

    /// This node's Raft state, updated as it changes.
    pub fn watch_status(&self) -> watch::Receiver<RaftStatus> {
        self.inner.status.clone()
    }

    /// Serves one peer RPC: decodes the request, hands it to Raft, encodes the reply. Bytes that
    /// do not decode (or exceed the size limit) get an encoded rejection, never a panic.
    pub async fn handle_rpc(&self, request: &[u8]) -> Vec<u8> {
        let raft = &self.inner.raft;
        let response = match codec::decode::<RaftRequest>(request) {
            Err(e) => {
                tracing::debug!(error = %e, "malformed raft request");
                RaftResponse::Rejected(format!("malformed raft request: {e}"))
            }
            Ok(RaftRequest::AppendEntries(rpc)) => {
                RaftResponse::AppendEntries(raft.append_entries(rpc).await)
            }
            Ok(RaftRequest::Vote(rpc)) => RaftResponse::Vote(raft.vote(rpc).await),
            Ok(RaftRequest::InstallSnapshot(rpc)) => {
                RaftResponse::InstallSnapshot(raft.install_snapshot(rpc).await)
            }
        };
        response.encode()
    }

    /// Allows or forbids this node to start elections (it still votes and follows). The node
    /// uses it to keep a restarted or cut-off voter from campaigning while a leader it cannot
    /// reach yet is alive: its higher term would unseat that leader on reconnection.
    pub fn set_elections(&self, enabled: bool) {
        self.inner.raft.runtime_config().elect(enabled);
    }

    /// Asks Raft to build a snapshot now (normally it does so every `snapshot_every` entries).
    pub async fn trigger_snapshot(&self) -> Result<(), ProposeError> {
        self.inner.raft.trigger().snapshot().await.map_err(|e| ProposeError::Fatal(e.to_string()))
    }

    /// Stops this node's Raft and waits (bounded) until the database file is released, so the
    /// same data dir can be opened again right after.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft core ended with an error");
        }
        let mut closed = self.inner.db_closed.clone();
        let released = async move { while closed.changed().await.is_ok() {} };
        if tokio::time::timeout(RELEASE_WAIT, released).await.is_err() {
            tracing::warn!(path = %self.inner.db_path.display(), "raft database still open after shutdown");
        }
    }
}

/// Follows openraft's metrics and the saved committed index into a [`RaftStatus`] watch.
fn spawn_status_view(
    id: u64,
    mut metrics: watch::Receiver<RaftMetrics>,
    mut committed: watch::Receiver<Option<u64>>,
) -> watch::Receiver<RaftStatus> {
    let (tx, rx) = watch::channel(RaftStatus::initial(id, Instant::now()));
    tokio::spawn(async move {
        let mut committed_open = true;
        loop {
            let next = {
                let m = metrics.borrow_and_update();
                let c = *committed.borrow_and_update();
                tx.borrow().next(&m, c, Instant::now())
            };
            tx.send_replace(next);
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { break },
                changed = committed.changed(), if committed_open => committed_open = changed.is_ok(),
            }
        }
        let stopped = tx.borrow().stopped();
        tx.send_replace(stopped);
    });
    rx
}
