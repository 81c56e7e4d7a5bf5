//! The durable Raft log: openraft's [`RaftLogStorage`] on the redb file.
//!
//! Owns the `log` and `log_meta` tables and nothing else. Every append is committed (fsync,
//! two-phase) before openraft is told it is flushed, so an acknowledged entry survives a crash.

use std::fmt::Debug;
use std::ops::RangeBounds;

use openraft::storage::LogFlushed;
use openraft::storage::LogState;
use openraft::storage::RaftLogStorage;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::StorageIOError;
use redb::ReadableTable;
use tokio::sync::watch;

use crate::codec;
use crate::db::get_value;
use crate::db::put_optional;
use crate::db::put_value;
use crate::db::DbError;
use crate::db::RaftDb;
use crate::db::LOG;
use crate::db::LOG_META;
use crate::type_config::Entry;
use crate::type_config::LogId;
use crate::type_config::StorageError;
use crate::type_config::TypeConfig;
use crate::type_config::Vote;

/// The Raft log of one node. Cheap to clone: clones share the database and serve as readers.
#[derive(Clone)]
pub struct LogStore {
    db: RaftDb,
    /// Latest committed log index openraft reported; read by the status view.
    committed: watch::Sender<Option<u64>>,
}

impl LogStore {
    pub(crate) fn new(db: RaftDb) -> Result<Self, DbError> {
        let committed: Option<LogId> = db.read(|txn| get_value(&txn.open_table(LOG_META)?, "committed"))?;
        let (committed_tx, _) = watch::channel(committed.map(|c| c.index));
        Ok(Self { db, committed: committed_tx })
    }

    /// Follows the committed index as openraft saves it.
    pub fn watch_committed(&self) -> watch::Receiver<Option<u64>> {
        self.committed.subscribe()
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, DbError> {
        self.db.read(|txn| get_value(&txn.open_table(LOG_META)?, key))
    }

    async fn write_meta<T: serde::Serialize + Send + 'static>(
        &self,
        key: &'static str,
        value: Option<T>,
    ) -> Result<(), DbError> {
        self.db.write(move |txn| put_optional(&mut txn.open_table(LOG_META)?, key, value.as_ref())).await
    }
}

fn read_logs_err(e: DbError) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_logs_err(e: DbError) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.db
            .read(|txn| {
                let table = txn.open_table(LOG)?;
                let mut entries = Vec::new();
                for item in table.range::<u64>(range)? {
                    let (_, bytes) = item?;
                    entries.push(codec::decode::<Entry>(bytes.value())?);
                }
                Ok(entries)
            })
            .map_err(read_logs_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let (last_purged_log_id, last) = self
            .db
            .read(|txn| {
                let purged: Option<LogId> = get_value(&txn.open_table(LOG_META)?, "last_purged")?;
                let last = match txn.open_table(LOG)?.last()? {
                    Some((_, bytes)) => Some(codec::decode::<Entry>(bytes.value())?.log_id),
                    None => None,
                };
                Ok((purged, last))
            })
            .map_err(read_logs_err)?;
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta("vote", Some(*vote)).await.map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta("vote").map_err(|e| StorageIOError::read_vote(&e).into())
    }

    // Saving the committed id lets a restarted node re-apply committed entries at once instead
    // of waiting to hear from a leader.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.write_meta("committed", committed).await.map_err(write_logs_err)?;
        self.committed.send_replace(committed.map(|c| c.index));
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.read_meta("committed").map_err(read_logs_err)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded = entries
            .into_iter()
            .map(|entry| Ok((entry.log_id.index, codec::encode(&entry)?)))
            .collect::<Result<Vec<_>, DbError>>()
            .map_err(write_logs_err)?;
        let result = self
            .db
            .write(move |txn| {
                let mut table = txn.open_table(LOG)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice())?;
                }
                Ok(())
            })
            .await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_logs_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.db
            .write(move |txn| {
                txn.open_table(LOG)?.retain_in(log_id.index.., |_, _| false)?;
                Ok(())
            })
            .await
            .map_err(write_logs_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.db
            .write(move |txn| {
                put_value(&mut txn.open_table(LOG_META)?, "last_purged", &log_id)?;
                txn.open_table(LOG)?.retain_in(..=log_id.index, |_, _| false)?;
                Ok(())
            })
            .await
            .map_err(write_logs_err)
    }
}
