//! The node's one database file, `data_dir/raft.redb`: its tables, how it is opened and checked,
//! and how the log store and state machine run transactions on it.
//!
//! Every write transaction is durable (fsync) and uses redb's two-phase commit. The latter
//! matters for damage: without it, redb "repairs" a primary commit slot that fails its checksum
//! by silently rolling back to the previous commit — losing an acknowledged log append or vote.
//! With it, the same damage is reported as corruption, which `open` turns into
//! [`StoreError::Corrupt`]. Opening also verifies every page checksum, so a damaged file is
//! refused up front rather than failing somewhere inside openraft later.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use redb::Database;
use redb::ReadTransaction;
use redb::ReadableTable;
use redb::TableDefinition;
use redb::WriteTransaction;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use crate::codec;
use crate::codec::CodecError;
use crate::error::StoreError;

pub(crate) const DB_FILE: &str = "raft.redb";

/// Layout version of the tables below; bumped on an incompatible change.
const FORMAT: u64 = 1;

/// Which node and layout the file belongs to: `format`, `raft_id`.
pub(crate) const STORE_META: TableDefinition<&str, &[u8]> = TableDefinition::new("store_meta");
/// Raft log entries by index.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// Log bookkeeping: `vote`, `committed`, `last_purged`.
pub(crate) const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("log_meta");
/// State machine bookkeeping: `last_applied`, `membership`.
pub(crate) const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
/// Routing table versions kept in the history, by version.
pub(crate) const SM_ROUTING: TableDefinition<u64, &[u8]> = TableDefinition::new("sm_routing");
/// Quota ledger: hot-key shards by index, and the rest under [`QUOTA_META_KEY`].
pub(crate) const SM_QUOTA: TableDefinition<u64, &[u8]> = TableDefinition::new("sm_quota");
/// Audit records of routing-table writes, by `seq`.
pub(crate) const SM_AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("sm_audit");
/// The row of [`SM_QUOTA`] holding everything but the hot-key shards.
pub(crate) const QUOTA_META_KEY: u64 = u64::MAX;
/// The latest snapshot: `meta`, `data`.
pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

/// A failure inside a database transaction.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    /// Boxed: redb's error is large and this travels in every `Result` on the write path.
    #[error(transparent)]
    Redb(Box<redb::Error>),
    #[error("undecodable record: {0}")]
    Codec(#[from] CodecError),
    #[error("database task failed: {0}")]
    Task(String),
}

impl DbError {
    /// What a failure while loading the stored state means for `open`: a record that does not
    /// decode is corruption; anything else is a database (I/O) failure.
    pub fn into_store_error(self, path: &Path) -> StoreError {
        let path = path.to_path_buf();
        match self {
            DbError::Codec(_) => StoreError::Corrupt { path, detail: self.to_string() },
            other => StoreError::Database { path, detail: other.to_string() },
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self {
                DbError::Redb(Box::new(redb::Error::from(e)))
            }
        }
    )*};
}
from_redb!(redb::Error, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// Shared handle on the open database.
#[derive(Clone)]
pub(crate) struct RaftDb {
    db: Arc<OpenDb>,
    path: Arc<PathBuf>,
}

/// The database and a signal that it is closed. Fields drop in order: the database (closing the
/// file and its lock, after redb's final write) and only then the sender, whose drop tells
/// watchers the file can be opened again. An `Arc` count reaching zero would say so too early.
struct OpenDb {
    db: Database,
    closed: watch::Sender<()>,
}

impl RaftDb {
    /// Opens (creating if absent) and verifies the database in `data_dir` for node `raft_id`.
    ///
    /// Runs on a blocking thread: opening verifies checksums and may fsync. A panic inside redb
    /// on a mangled file is caught there and reported as corruption.
    pub async fn open(data_dir: &Path, raft_id: u64) -> Result<RaftDb, StoreError> {
        let dir = data_dir.to_path_buf();
        let path = dir.join(DB_FILE);
        let task_path = path.clone();
        quiet_panics::install();
        match tokio::task::spawn_blocking(move || {
            quiet_panics::during(|| open_blocking(&dir, &task_path, raft_id))
        })
        .await
        {
            Ok(result) => result,
            Err(e) => {
                let why = if e.is_panic() {
                    let payload = e.into_panic();
                    payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown".to_string())
                } else {
                    e.to_string()
                };
                Err(StoreError::Corrupt {
                    path,
                    detail: format!("the database engine rejected the file ({why})"),
                })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolves (with an error) once every handle is gone and the file is closed.
    pub fn watch_closed(&self) -> watch::Receiver<()> {
        self.db.closed.subscribe()
    }

    /// Runs `f` in a durable write transaction on a blocking thread; commits if it returns Ok.
    pub async fn write<R, F>(&self, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R, DbError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let task = tokio::task::spawn_blocking(move || {
            let mut txn = db.db.begin_write()?;
            txn.set_two_phase_commit(true);
            let out = f(&txn)?;
            txn.commit()?;
            Ok(out)
        });
        task.await.map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Runs `f` in a read transaction. Reads are served from redb's cache or a short file
    /// read, so they run inline.
    pub fn read<R>(&self, f: impl FnOnce(&ReadTransaction) -> Result<R, DbError>) -> Result<R, DbError> {
        let txn = self.db.db.begin_read()?;
        f(&txn)
    }
}

/// Reads and decodes `key` from a string-keyed table.
pub(crate) fn get_value<T, Tbl>(table: &Tbl, key: &str) -> Result<Option<T>, DbError>
where
    T: DeserializeOwned,
    Tbl: ReadableTable<&'static str, &'static [u8]>,
{
    match table.get(key)? {
        Some(bytes) => Ok(Some(codec::decode(bytes.value())?)),
        None => Ok(None),
    }
}

/// Encodes and stores `value` under `key`.
pub(crate) fn put_value<T: Serialize>(
    table: &mut redb::Table<&str, &[u8]>,
    key: &str,
    value: &T,
) -> Result<(), DbError> {
    let bytes = codec::encode(value)?;
    table.insert(key, bytes.as_slice())?;
    Ok(())
}

/// Stores `value` under `key`, or removes `key` for `None`; read back with `get_value`.
pub(crate) fn put_optional<T: Serialize>(
    table: &mut redb::Table<&str, &[u8]>,
    key: &str,
    value: Option<&T>,
) -> Result<(), DbError> {
    match value {
        Some(v) => put_value(table, key, v),
        None => {
            table.remove(key)?;
            Ok(())
        }
    }
}

fn open_blocking(dir: &Path, path: &Path, raft_id: u64) -> Result<RaftDb, StoreError> {
    let db_err = |detail: String| StoreError::Database { path: path.to_path_buf(), detail };
    let corrupt = |detail: String| StoreError::Corrupt { path: path.to_path_buf(), detail };

    std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir { path: dir.to_path_buf(), source })?;
    let exists =
        path.try_exists().map_err(|source| StoreError::DataDir { path: path.to_path_buf(), source })?;
    let db = if exists {
        // `open`, never `create`: redb's `create` silently initializes an empty (e.g. truncated
        // to zero) file, which would forget this node's vote and log.
        let mut db = Database::builder().open(path).map_err(|e| classify_open_error(path, e))?;
        match db.check_integrity() {
            Ok(true) => {}
            // Only the allocator state was rebuilt (unclean shutdown): committed data is intact,
            // because a damaged commit under two-phase commit is an error, not a repair.
            Ok(false) => {
                tracing::warn!(path = %path.display(), "raft database repaired after unclean shutdown")
            }
            Err(e) => return Err(classify_open_error(path, e)),
        }
        db
    } else {
        create_fresh(dir, path, raft_id).map_err(|e| db_err(format!("creating the database: {e}")))?
    };

    let (format, found) = {
        let read = || -> Result<(Option<u64>, Option<u64>), DbError> {
            let txn = db.begin_read()?;
            let table = txn.open_table(STORE_META)?;
            Ok((get_value(&table, "format")?, get_value(&table, "raft_id")?))
        };
        read().map_err(|e| corrupt(format!("store metadata unreadable: {e}")))?
    };
    match (format, found) {
        (Some(FORMAT), Some(found)) if found == raft_id => {}
        (Some(FORMAT), Some(found)) => {
            return Err(StoreError::WrongNode { path: path.to_path_buf(), expected: raft_id, found })
        }
        (Some(other), _) => {
            return Err(db_err(format!("unsupported layout format {other}, expected {FORMAT}")))
        }
        _ => return Err(corrupt("store metadata missing".into())),
    }
    let (closed, _) = watch::channel(());
    Ok(RaftDb { db: Arc::new(OpenDb { db, closed }), path: Arc::new(path.to_path_buf()) })
}

/// Creates the database under a temporary name and renames it into place (still open), so
/// `raft.redb` exists only once it is complete: a crash during creation cannot leave a
/// half-made file that would later read as corruption.
fn create_fresh(dir: &Path, path: &Path, raft_id: u64) -> Result<Database, DbError> {
    let tmp = dir.join(format!("{DB_FILE}.tmp"));
    if tmp.exists() {
        std::fs::remove_file(&tmp).map_err(|e| DbError::Task(format!("removing {}: {e}", tmp.display())))?;
    }
    let db = Database::create(&tmp).map_err(redb::Error::from)?;
    {
        let mut txn = db.begin_write()?;
        txn.set_two_phase_commit(true);
        {
            let mut meta = txn.open_table(STORE_META)?;
            put_value(&mut meta, "format", &FORMAT)?;
            put_value(&mut meta, "raft_id", &raft_id)?;
            txn.open_table(LOG)?;
            txn.open_table(LOG_META)?;
            txn.open_table(SM_META)?;
            txn.open_table(SM_ROUTING)?;
            txn.open_table(SM_QUOTA)?;
            txn.open_table(SM_AUDIT)?;
            txn.open_table(SNAPSHOT)?;
        }
        txn.commit()?;
    }
    let io = |e: std::io::Error| DbError::Task(format!("installing {}: {e}", path.display()));
    std::fs::rename(&tmp, path).map_err(io)?;
    // The rename is durable only once the directory entry is.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(db)
}

fn classify_open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    let path = path.to_path_buf();
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen { path },
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if !matches!(io.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData) =>
        {
            StoreError::Database { path, detail: io.to_string() }
        }
        // Checksum failures, short reads, bad headers, aborted repairs, unknown file formats:
        // the bytes on disk are not a database we can trust.
        other => StoreError::Corrupt { path, detail: other.to_string() },
    }
}

/// redb asserts (panics) on some truncated files instead of returning an error. The panic is
/// caught and reported as corruption; this keeps the panic hook from also printing a scary
/// backtrace for it, on the opening thread only: panics anywhere else are reported as usual.
mod quiet_panics {
    use std::cell::Cell;
    use std::sync::Once;

    thread_local! {
        static QUIET: Cell<bool> = const { Cell::new(false) };
    }

    pub fn install() {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !QUIET.with(Cell::get) {
                    previous(info);
                }
            }));
        });
    }

    pub fn during<R>(f: impl FnOnce() -> R) -> R {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                // Also on unwind: blocking-pool threads are reused.
                QUIET.with(|q| q.set(false));
            }
        }
        QUIET.with(|q| q.set(true));
        let _reset = Reset;
        f()
    }
}
