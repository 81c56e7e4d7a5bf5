//! The durable state machine: openraft's [`RaftStateMachine`] over [`MachineState`], persisted
//! in the redb file, plus its snapshots.
//!
//! Owns the `sm_meta`, `sm_routing` and `snapshot` tables. A batch of entries is decided on a
//! copy of the state, persisted in one transaction, and only then made current and published —
//! so what watchers see is always what is on disk. On open the persisted state is loaded, which
//! is why a restarted node has its table before it hears from any peer.

use std::io::Cursor;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::StorageIOError;
use redb::ReadableTable;
use tokio::sync::watch;

use crate::audit::AuditLog;
use crate::audit::AuditRecord;
use crate::codec;
use crate::command::CommandResult;
use crate::db::get_value;
use crate::db::put_optional;
use crate::db::put_value;
use crate::db::DbError;
use crate::db::RaftDb;
use crate::db::QUOTA_META_KEY;
use crate::db::SM_AUDIT;
use crate::db::SM_META;
use crate::db::SM_QUOTA;
use crate::db::SM_ROUTING;
use crate::db::SNAPSHOT;
use crate::machine::MachineImage;
use crate::machine::MachineState;
use crate::machine::MachineWrite;
use crate::quota::ledger::QuotaMeta;
use crate::quota::ledger::Shard;
use crate::quota::QuotaState;
use crate::routing_history::AppliedTable;
use crate::routing_history::HistoryRecord;
use crate::routing_history::RoutingHistory;
use crate::type_config::Entry;
use crate::type_config::LogId;
use crate::type_config::Snapshot;
use crate::type_config::SnapshotMeta;
use crate::type_config::StorageError;
use crate::type_config::StoredMembership;
use crate::type_config::TypeConfig;

/// The state machine of one node.
pub struct StateMachineStore {
    db: RaftDb,
    state: MachineState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    applied_tx: watch::Sender<Option<AppliedTable>>,
    history_tx: watch::Sender<Vec<AppliedTable>>,
    quota_tx: watch::Sender<Arc<QuotaState>>,
    audit_tx: watch::Sender<Arc<AuditLog>>,
    /// Distinguishes snapshots built in this process; the log id alone names their content.
    snapshot_seq: Arc<AtomicU64>,
}

impl StateMachineStore {
    /// Loads the persisted state machine.
    pub(crate) fn load(db: RaftDb) -> Result<Self, DbError> {
        let (last_applied, membership, records, quota, audit) = db.read(|txn| {
            let meta = txn.open_table(SM_META)?;
            let last_applied: Option<LogId> = get_value(&meta, "last_applied")?;
            let membership: Option<StoredMembership> = get_value(&meta, "membership")?;
            let mut records = Vec::new();
            for item in txn.open_table(SM_ROUTING)?.iter()? {
                let (_, bytes) = item?;
                records.push(codec::decode::<HistoryRecord>(bytes.value())?);
            }
            let mut quota_meta = QuotaMeta::default();
            let mut shards = vec![Shard::new(); crate::quota::SHARDS];
            for item in txn.open_table(SM_QUOTA)?.iter()? {
                let (key, bytes) = item?;
                match key.value() {
                    QUOTA_META_KEY => quota_meta = codec::decode(bytes.value())?,
                    i => {
                        if let Some(slot) = usize::try_from(i).ok().and_then(|i| shards.get_mut(i)) {
                            *slot = codec::decode(bytes.value())?;
                        }
                    }
                }
            }
            let quota = QuotaState::from_parts(quota_meta, shards);
            let mut audit = Vec::new();
            for item in txn.open_table(SM_AUDIT)?.iter()? {
                let (_, bytes) = item?;
                audit.push(codec::decode::<AuditRecord>(bytes.value())?);
            }
            Ok((last_applied, membership.unwrap_or_default(), records, quota, AuditLog::from_records(audit)))
        })?;
        let state = MachineState { routing: RoutingHistory::from_records(records), quota, audit };
        let (applied_tx, _) = watch::channel(state.routing.current().cloned());
        let (history_tx, _) = watch::channel(state.routing.newest_first());
        let (quota_tx, _) = watch::channel(Arc::new(state.quota.clone()));
        let (audit_tx, _) = watch::channel(Arc::new(state.audit.clone()));
        Ok(Self {
            db,
            state,
            last_applied,
            membership,
            applied_tx,
            history_tx,
            quota_tx,
            audit_tx,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The current routing table, updated after each apply that changes it.
    pub fn watch_applied(&self) -> watch::Receiver<Option<AppliedTable>> {
        self.applied_tx.subscribe()
    }

    /// The routing history, newest first, updated with [`Self::watch_applied`].
    pub fn watch_history(&self) -> watch::Receiver<Vec<AppliedTable>> {
        self.history_tx.subscribe()
    }

    /// The quota ledger, updated after each apply that changes it.
    pub fn watch_quota(&self) -> watch::Receiver<Arc<QuotaState>> {
        self.quota_tx.subscribe()
    }

    /// The audit trail, updated after each apply that adds to it.
    pub fn watch_audit(&self) -> watch::Receiver<Arc<AuditLog>> {
        self.audit_tx.subscribe()
    }

    /// Makes `state` current and tells watchers what moved.
    fn publish(&mut self, state: MachineState) {
        let quota_moved = state.quota != self.state.quota;
        let audit_moved = state.audit.last_seq() != self.state.audit.last_seq()
            || state.audit.len() != self.state.audit.len();
        self.state = state;
        if quota_moved {
            self.quota_tx.send_replace(Arc::new(self.state.quota.clone()));
        }
        if audit_moved {
            self.audit_tx.send_replace(Arc::new(self.state.audit.clone()));
        }
        let current = self.state.routing.current().cloned();
        let version = current.as_ref().map(|t| t.version);
        if self.applied_tx.borrow().as_ref().map(|t| t.version) == version {
            return;
        }
        // History first: whoever sees a new applied version finds it in the history too.
        self.history_tx.send_replace(self.state.routing.newest_first());
        self.applied_tx.send_replace(current);
    }
}

fn write_sm_err(e: DbError) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Option<CommandResult>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut next = self.state.clone();
        let mut last_applied = self.last_applied;
        let mut membership = None;
        let mut writes = Vec::new();
        let mut results = Vec::new();
        for entry in entries {
            last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => results.push(None),
                EntryPayload::Normal(cmd) => {
                    let (result, w) = next.apply(&cmd);
                    writes.extend(w);
                    results.push(Some(result));
                }
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    results.push(None);
                }
            }
        }
        if results.is_empty() {
            return Ok(results);
        }

        let mut encoded = Vec::new();
        let mut quota_rows = std::collections::BTreeMap::new();
        let mut audit_rows = Vec::new();
        for w in writes {
            match w {
                MachineWrite::PutRouting(t) => encoded.push((
                    t.version,
                    Some(codec::encode(&HistoryRecord::from(&t)).map_err(|e| write_sm_err(e.into()))?),
                )),
                MachineWrite::DropRouting(version) => encoded.push((version, None)),
                MachineWrite::QuotaMeta => {
                    quota_rows.insert(
                        QUOTA_META_KEY,
                        codec::encode(&next.quota.meta).map_err(|e| write_sm_err(e.into()))?,
                    );
                }
                MachineWrite::QuotaShard(i) => {
                    let bytes = codec::encode(&*next.quota.shards[i]).map_err(|e| write_sm_err(e.into()))?;
                    quota_rows.insert(i as u64, bytes);
                }
                MachineWrite::PutAudit(r) => {
                    audit_rows.push((r.seq, Some(codec::encode(&*r).map_err(|e| write_sm_err(e.into()))?)))
                }
                MachineWrite::DropAudit(seq) => audit_rows.push((seq, None)),
            }
        }
        let persisted_membership = membership.clone();
        self.db
            .write(move |txn| {
                let mut routing = txn.open_table(SM_ROUTING)?;
                for (version, bytes) in &encoded {
                    match bytes {
                        Some(bytes) => routing.insert(*version, bytes.as_slice())?,
                        None => routing.remove(*version)?,
                    };
                }
                let mut quota = txn.open_table(SM_QUOTA)?;
                for (key, bytes) in &quota_rows {
                    quota.insert(*key, bytes.as_slice())?;
                }
                let mut audit = txn.open_table(SM_AUDIT)?;
                for (seq, bytes) in &audit_rows {
                    match bytes {
                        Some(bytes) => audit.insert(*seq, bytes.as_slice())?,
                        None => audit.remove(*seq)?,
                    };
                }
                let mut meta = txn.open_table(SM_META)?;
                put_optional(&mut meta, "last_applied", last_applied.as_ref())?;
                if let Some(m) = &persisted_membership {
                    put_value(&mut meta, "membership", m)?;
                }
                Ok(())
            })
            .await
            .map_err(write_sm_err)?;

        self.last_applied = last_applied;
        if let Some(m) = membership {
            self.membership = m;
        }
        self.publish(next);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            image: self.state.image(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            seq: self.snapshot_seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let image: MachineImage = codec::decode_snapshot(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let state = MachineState::from_image(image);
        let records = state.routing.records();
        let mut quota_rows = vec![(
            QUOTA_META_KEY,
            codec::encode(&state.quota.meta)
                .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?,
        )];
        for (i, shard) in state.quota.shards.iter().enumerate() {
            let bytes = codec::encode(&**shard)
                .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
            quota_rows.push((i as u64, bytes));
        }
        let mut audit_rows = Vec::with_capacity(state.audit.len());
        for r in state.audit.records() {
            let bytes = codec::encode(&**r)
                .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
            audit_rows.push((r.seq, bytes));
        }
        let stored_meta = meta.clone();
        self.db
            .write(move |txn| {
                let mut routing = txn.open_table(SM_ROUTING)?;
                routing.retain(|_, _| false)?;
                for record in &records {
                    routing.insert(record.version, codec::encode(record)?.as_slice())?;
                }
                let mut quota = txn.open_table(SM_QUOTA)?;
                quota.retain(|_, _| false)?;
                for (key, bytes) in &quota_rows {
                    quota.insert(*key, bytes.as_slice())?;
                }
                let mut audit = txn.open_table(SM_AUDIT)?;
                audit.retain(|_, _| false)?;
                for (seq, bytes) in &audit_rows {
                    audit.insert(*seq, bytes.as_slice())?;
                }
                let mut sm_meta = txn.open_table(SM_META)?;
                put_optional(&mut sm_meta, "last_applied", stored_meta.last_log_id.as_ref())?;
                put_value(&mut sm_meta, "membership", &stored_meta.last_membership)?;
                store_snapshot(txn, &stored_meta, &data)
            })
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;

        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publish(state);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let stored = self
            .db
            .read(|txn| {
                let table = txn.open_table(SNAPSHOT)?;
                let meta: Option<SnapshotMeta> = get_value(&table, "meta")?;
                let data = table.get("data")?.map(|bytes| bytes.value().to_vec());
                Ok(meta.zip(data))
            })
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

fn store_snapshot(txn: &redb::WriteTransaction, meta: &SnapshotMeta, data: &[u8]) -> Result<(), DbError> {
    let mut table = txn.open_table(SNAPSHOT)?;
    put_value(&mut table, "meta", meta)?;
    table.insert("data", data)?;
    Ok(())
}

/// Builds a snapshot from a copy of the state taken when openraft asked for a builder, so the
/// state machine keeps applying while the snapshot is encoded and written.
pub struct SnapshotBuilder {
    db: RaftDb,
    image: MachineImage,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    seq: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let data =
            codec::encode_snapshot(&self.image).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let snapshot_id = match self.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, self.seq),
            None => format!("none-{}", self.seq),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let (stored_meta, stored_data) = (meta.clone(), data.clone());
        self.db
            .write(move |txn| store_snapshot(txn, &stored_meta, &stored_data))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}
