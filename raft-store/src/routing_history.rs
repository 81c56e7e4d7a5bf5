//! The routing table's committed versions: the current one and the last [`HISTORY_LEN`] before it.
//!
//! Pure and IO-free: deciding a `PutTable` or `Rollback` depends only on the history and the
//! command, which is what makes the version check deterministic on every replica. Persisting the
//! outcome is the state machine's job.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Deserialize;
use serde::Serialize;

use crate::command::CommandResult;

/// How many versions the history keeps (the current one included).
pub const HISTORY_LEN: usize = 100;

/// One committed version of the routing table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedTable {
    /// Starts at 1; every committed `PutTable` or `Rollback` adds one.
    pub version: u64,
    /// The table JSON; shared, since the request path and the history hold the same bytes.
    pub table_json: Arc<str>,
    /// Proposer's wall clock when it proposed this version (ms since the Unix epoch).
    pub committed_at_ms: u64,
    /// Why this version exists ("rollback to v3" for rollbacks).
    pub cause: String,
    /// Meridian id of the node that accepted the write.
    pub by_node: String,
}

/// The serialized form of an [`AppliedTable`], on disk and in snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HistoryRecord {
    pub version: u64,
    pub table_json: String,
    pub committed_at_ms: u64,
    pub cause: String,
    pub by_node: String,
}

impl From<&AppliedTable> for HistoryRecord {
    fn from(t: &AppliedTable) -> Self {
        Self {
            version: t.version,
            table_json: t.table_json.to_string(),
            committed_at_ms: t.committed_at_ms,
            cause: t.cause.clone(),
            by_node: t.by_node.clone(),
        }
    }
}

impl From<HistoryRecord> for AppliedTable {
    fn from(r: HistoryRecord) -> Self {
        Self {
            version: r.version,
            table_json: Arc::from(r.table_json),
            committed_at_ms: r.committed_at_ms,
            cause: r.cause,
            by_node: r.by_node,
        }
    }
}

/// What a committed command changed in the history, for the state machine to persist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HistoryChange {
    /// The new current version.
    pub added: AppliedTable,
    /// Versions that fell off the end of the history.
    pub evicted: Vec<u64>,
}

/// Committed versions, oldest first. The newest entry is the current table; an empty history
/// means version 0 (no table yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RoutingHistory {
    versions: VecDeque<AppliedTable>,
}

impl RoutingHistory {
    /// Rebuilds the history from stored records, in any order.
    pub fn from_records(records: impl IntoIterator<Item = HistoryRecord>) -> Self {
        let mut versions: Vec<AppliedTable> = records.into_iter().map(AppliedTable::from).collect();
        versions.sort_by_key(|t| t.version);
        Self { versions: versions.into() }
    }

    /// Records oldest first, for snapshots.
    pub fn records(&self) -> Vec<HistoryRecord> {
        self.versions.iter().map(HistoryRecord::from).collect()
    }

    /// The current version; 0 before the first table.
    pub fn version(&self) -> u64 {
        self.versions.back().map_or(0, |t| t.version)
    }

    /// The current table, if any.
    pub fn current(&self) -> Option<&AppliedTable> {
        self.versions.back()
    }

    /// Newest first.
    pub fn newest_first(&self) -> Vec<AppliedTable> {
        self.versions.iter().rev().cloned().collect()
    }

    /// Decides a `PutTable`.
    pub fn put(
        &mut self,
        table_json: &str,
        expected_version: Option<u64>,
        cause: &str,
        by_node: &str,
        at_ms: u64,
    ) -> (CommandResult, Option<HistoryChange>) {
        let current = self.version();
        if expected_version.is_some_and(|expected| expected != current) {
            return (CommandResult::Conflict { current }, None);
        }
        self.commit(Arc::from(table_json), cause.to_string(), by_node, at_ms)
    }

    /// Decides a `Rollback`: the old table comes back as a new version, so the history only
    /// ever grows forward and every replica's version numbers stay comparable.
    pub fn rollback(&mut self, to: u64, by_node: &str, at_ms: u64) -> (CommandResult, Option<HistoryChange>) {
        let Some(old) = self.versions.iter().find(|t| t.version == to) else {
            return (CommandResult::UnknownVersion(to), None);
        };
        let table_json = Arc::clone(&old.table_json);
        self.commit(table_json, format!("rollback to v{to}"), by_node, at_ms)
    }

    fn commit(
        &mut self,
        table_json: Arc<str>,
        cause: String,
        by_node: &str,
        at_ms: u64,
    ) -> (CommandResult, Option<HistoryChange>) {
        let version = self.version() + 1;
        let added =
            AppliedTable { version, table_json, committed_at_ms: at_ms, cause, by_node: by_node.to_string() };
        self.versions.push_back(added.clone());
        let mut evicted = Vec::new();
        while self.versions.len() > HISTORY_LEN {
            if let Some(old) = self.versions.pop_front() {
                evicted.push(old.version);
            }
        }
        (CommandResult::Committed { version }, Some(HistoryChange { added, evicted }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(h: &mut RoutingHistory, json: &str, expected: Option<u64>) -> CommandResult {
        h.put(json, expected, "test", "us-1", 7).0
    }

    #[test]
    fn versions_start_at_zero_and_count_up() {
        let mut h = RoutingHistory::default();
        assert_eq!(h.version(), 0);
        assert!(h.current().is_none());
        assert_eq!(put(&mut h, "{\"a\":1}", None), CommandResult::Committed { version: 1 });
        assert_eq!(put(&mut h, "{\"a\":2}", Some(1)), CommandResult::Committed { version: 2 });
        assert_eq!(h.current().map(|t| &*t.table_json), Some("{\"a\":2}"));
    }

    #[test]
    fn stale_expected_version_changes_nothing() {
        let mut h = RoutingHistory::default();
        put(&mut h, "v1", None);
        let before = h.clone();
        let (result, change) = h.put("v2", Some(0), "stale", "eu-1", 9);
        assert_eq!(result, CommandResult::Conflict { current: 1 });
        assert!(change.is_none());
        assert_eq!(h, before);
    }

    #[test]
    fn rollback_recommits_an_old_table() {
        let mut h = RoutingHistory::default();
        put(&mut h, "v1", None);
        put(&mut h, "v2", None);
        let (result, change) = h.rollback(1, "us-2", 11);
        assert_eq!(result, CommandResult::Committed { version: 3 });
        let added = change.map(|c| c.added);
        assert_eq!(added.as_ref().map(|t| &*t.table_json), Some("v1"));
        assert_eq!(added.map(|t| t.cause), Some("rollback to v1".to_string()));
        assert_eq!(h.rollback(0, "us-2", 12).0, CommandResult::UnknownVersion(0));
        assert_eq!(h.rollback(9, "us-2", 12).0, CommandResult::UnknownVersion(9));
        let order: Vec<u64> = h.newest_first().iter().map(|t| t.version).collect();
        assert_eq!(order, vec![3, 2, 1]);
    }

    #[test]
    fn history_keeps_the_last_hundred() {
        let mut h = RoutingHistory::default();
        for i in 0..HISTORY_LEN {
            put(&mut h, &format!("t{i}"), None);
        }
        let (_, change) = h.put("last", None, "c", "n", 1);
        assert_eq!(change.map(|c| c.evicted), Some(vec![1]));
        assert_eq!(h.newest_first().len(), HISTORY_LEN);
        assert_eq!(h.rollback(1, "n", 1).0, CommandResult::UnknownVersion(1));
        let rebuilt = RoutingHistory::from_records(h.records().into_iter().rev());
        assert_eq!(rebuilt, h);
    }
}
