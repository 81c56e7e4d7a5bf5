//! The versioned routing table of a node that is not (yet) part of a Raft group.
//!
//! Versions only move forward: a write or a rollback commits a new version, and the last
//! `HISTORY` versions are kept for inspection and rollback. The clustered store replaces this
//! with the same operations committed through Raft.

use std::collections::VecDeque;
use std::sync::Arc;

use meridian_raft_store::audit::{self, AuditEntry, AuditLog};
use serde::Serialize;

use crate::core::table::{RoutingTable, TableError};

const HISTORY: usize = 100;

#[derive(Debug, Clone, Serialize)]
pub struct TableVersion {
    pub version: u64,
    /// Milliseconds since the Unix epoch when this version was committed.
    pub committed_at_ms: u64,
    /// What made it: "bootstrap", "write" or "rollback to N".
    pub cause: String,
    #[serde(skip)]
    pub table: Arc<RoutingTable>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Invalid(#[from] TableError),
    #[error("version moved: expected {expected}, current is {current}")]
    Conflict { expected: u64, current: u64 },
    #[error("version {0} is not in the kept history")]
    UnknownVersion(u64),
}

/// Who made a write, for the audit trail.
#[derive(Debug, Clone, Copy)]
pub struct Author<'a> {
    /// Admin token name, or what else made the write ("bootstrap", "routes-file").
    pub who: &'a str,
    /// Node that accepted it.
    pub node: &'a str,
}

#[derive(Debug, Default)]
pub struct RouteStore {
    versions: VecDeque<TableVersion>,
    audit: AuditLog,
}

impl RouteStore {
    pub fn current(&self) -> Option<&TableVersion> {
        self.versions.back()
    }

    pub fn current_version(&self) -> u64 {
        self.current().map_or(0, |v| v.version)
    }

    pub fn history(&self) -> impl Iterator<Item = &TableVersion> {
        self.versions.iter().rev()
    }

    /// The audit trail of this store's writes (in memory: a standalone node has no log).
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Commit `table` as the next version, if it is valid and `expected` (when given) is current.
    pub fn write(
        &mut self,
        table: RoutingTable,
        expected: Option<u64>,
        cause: &str,
        author: Author<'_>,
        now_ms: u64,
    ) -> Result<u64, WriteError> {
        table.validate()?;
        let current = self.current_version();
        if let Some(expected) = expected {
            if expected != current {
                return Err(WriteError::Conflict { expected, current });
            }
        }
        let version = current + 1;
        let json = |t: &RoutingTable| serde_json::to_string(t).unwrap_or_default();
        let before = self.current().map(|v| json(&v.table));
        self.audit.append(AuditEntry {
            at_ms: now_ms,
            who: author.who,
            node: author.node,
            action: cause,
            from_version: current,
            to_version: version,
            summary: audit::diff(before.as_deref(), &json(&table)),
        });
        self.versions.push_back(TableVersion {
            version,
            committed_at_ms: now_ms,
            cause: cause.to_string(),
            table: Arc::new(table),
        });
        while self.versions.len() > HISTORY {
            self.versions.pop_front();
        }
        Ok(version)
    }

    /// Commit the table of version `to` again, as a new version.
    pub fn rollback(&mut self, to: u64, author: Author<'_>, now_ms: u64) -> Result<u64, WriteError> {
        let old = self
            .versions
            .iter()
            .find(|v| v.version == to)
            .ok_or(WriteError::UnknownVersion(to))?
            .table
            .as_ref()
            .clone();
        self.write(old, None, &format!("rollback to v{to}"), author, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::table::parse_json;

    const OPS: Author<'static> = Author { who: "ops", node: "n1" };

    fn table(port: u16) -> RoutingTable {
        parse_json(&format!(
            r#"{{"services": {{"s": {{"endpoints": {{"us": ["http://127.0.0.1:{port}"]}}}}}}, "routes": [{{"name": "r", "service": "s"}}]}}"#
        ))
        .expect("valid")
    }

    #[test]
    fn versions_move_forward_and_if_match_is_checked() {
        let mut s = RouteStore::default();
        assert_eq!(s.write(table(1), None, "bootstrap", OPS, 0).expect("v1"), 1);
        assert_eq!(s.write(table(2), Some(1), "write", OPS, 0).expect("v2"), 2);
        assert!(matches!(
            s.write(table(3), Some(1), "write", OPS, 0),
            Err(WriteError::Conflict { expected: 1, current: 2 })
        ));
        assert_eq!(s.current_version(), 2);
    }

    #[test]
    fn invalid_tables_change_nothing() {
        let mut s = RouteStore::default();
        s.write(table(1), None, "bootstrap", OPS, 0).expect("v1");
        let mut bad = table(2);
        bad.routes[0].service = "nope".into();
        assert!(matches!(s.write(bad, None, "write", OPS, 0), Err(WriteError::Invalid(_))));
        assert_eq!(s.current_version(), 1);
        assert_eq!(*s.current().expect("current").table, table(1));
    }

    #[test]
    fn rollback_commits_the_old_table_as_new_version() {
        let mut s = RouteStore::default();
        s.write(table(1), None, "bootstrap", OPS, 0).expect("v1");
        s.write(table(2), None, "write", OPS, 0).expect("v2");
        assert_eq!(s.rollback(1, OPS, 0).expect("v3"), 3);
        assert_eq!(*s.current().expect("current").table, table(1));
        assert!(matches!(s.rollback(99, OPS, 0), Err(WriteError::UnknownVersion(99))));
        let trail: Vec<_> =
            s.audit().records().map(|r| (r.to_version, r.action.clone(), r.who.clone())).collect();
        assert_eq!(trail.len(), 3, "refused writes leave no record: {trail:?}");
        assert_eq!(trail[2], (3, "rollback to v1".to_string(), "ops".to_string()));
        assert_eq!(
            s.audit().records().nth(1).map(|r| r.summary.changed.clone()),
            Some(vec!["service s".into()])
        );
    }
}
