//! The replicated state as plain data: what every kind of [`Command`] does to it, and its
//! snapshot image.
//!
//! Pure: no disk, no clock. The durable state machine (`state_machine.rs`) calls [`MachineState::apply`]
//! and persists the [`MachineWrite`]s it returns. To add a kind of state: a field here, a
//! branch in `apply`, a `MachineWrite` variant, and a new [`MachineImage`] variant.

use serde::Deserialize;
use serde::Serialize;

use crate::audit::AuditEntry;
use crate::audit::AuditLog;
use crate::audit::AuditRecord;
use crate::command::Command;
use crate::command::CommandResult;
use crate::quota::ledger::QuotaMeta;
use crate::quota::ledger::Shard;
use crate::quota::QuotaState;
use crate::routing_history::AppliedTable;
use crate::routing_history::HistoryRecord;
use crate::routing_history::RoutingHistory;

/// Everything the state machine holds, besides Raft's own bookkeeping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MachineState {
    pub routing: RoutingHistory,
    pub quota: QuotaState,
    pub audit: AuditLog,
}

/// A change to persist, produced by [`MachineState::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MachineWrite {
    /// Store a new routing version.
    PutRouting(AppliedTable),
    /// Forget a routing version that left the history.
    DropRouting(u64),
    /// Store the quota ledger's meta row (taken from the state after the batch).
    QuotaMeta,
    /// Store one hot-key shard of the quota ledger (taken from the state after the batch).
    QuotaShard(usize),
    /// Store an audit record.
    PutAudit(std::sync::Arc<AuditRecord>),
    /// Forget an audit record that left the kept window.
    DropAudit(u64),
}

/// The snapshot form of [`MachineState`]. An enum so a later format can be added as a new
/// variant while old snapshots still decode (bincode is not self-describing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MachineImage {
    V1 {
        routing: Vec<HistoryRecord>,
    },
    V2 {
        routing: Vec<HistoryRecord>,
        quota_meta: QuotaMeta,
        quota_shards: Vec<Shard>,
    },
    V3 {
        routing: Vec<HistoryRecord>,
        quota_meta: QuotaMeta,
        quota_shards: Vec<Shard>,
        audit: Vec<AuditRecord>,
    },
}

impl MachineState {
    /// Applies one command; returns its result and what to persist (nothing on a refusal).
    pub fn apply(&mut self, cmd: &Command) -> (CommandResult, Vec<MachineWrite>) {
        if let Command::QuotaRound { at_ms, terms, reports } = cmd {
            let dirty = self.quota.apply_round(*at_ms, terms, reports);
            let mut writes = vec![MachineWrite::QuotaMeta];
            writes.extend(dirty.shards.into_iter().map(MachineWrite::QuotaShard));
            return (CommandResult::QuotaRound, writes);
        }
        let before = self.routing.current().map(|t| (t.version, std::sync::Arc::clone(&t.table_json)));
        let unknown = "unknown";
        let (result, change, who, by) = match cmd {
            Command::PutTable { table_json, expected_version, cause, by_node, at_ms } => {
                let (r, c) = self.routing.put(table_json, *expected_version, cause, by_node, *at_ms);
                (r, c, unknown, by_node)
            }
            Command::PutTableBy { table_json, expected_version, cause, by_node, who, at_ms } => {
                let (r, c) = self.routing.put(table_json, *expected_version, cause, by_node, *at_ms);
                (r, c, who.as_str(), by_node)
            }
            Command::Rollback { to, by_node, at_ms } => {
                let (r, c) = self.routing.rollback(*to, by_node, *at_ms);
                (r, c, unknown, by_node)
            }
            Command::RollbackBy { to, by_node, who, at_ms } => {
                let (r, c) = self.routing.rollback(*to, by_node, *at_ms);
                (r, c, who.as_str(), by_node)
            }
            Command::QuotaRound { .. } => return (CommandResult::QuotaRound, Vec::new()),
        };
        let mut writes = Vec::new();
        if let Some(change) = change {
            // The trail is decided here, from replicated state only: every replica writes the
            // same record, and the diff is computed, not taken from the proposer.
            let summary = crate::audit::diff(before.as_ref().map(|(_, t)| &**t), &change.added.table_json);
            let audit = self.audit.append(AuditEntry {
                at_ms: change.added.committed_at_ms,
                who,
                node: by,
                action: &change.added.cause,
                from_version: before.map_or(0, |(v, _)| v),
                to_version: change.added.version,
                summary,
            });
            writes.push(MachineWrite::PutRouting(change.added));
            writes.extend(change.evicted.into_iter().map(MachineWrite::DropRouting));
            writes.push(MachineWrite::PutAudit(audit.added));
            writes.extend(audit.evicted.into_iter().map(MachineWrite::DropAudit));
        }
        (result, writes)
    }

    pub fn image(&self) -> MachineImage {
        MachineImage::V3 {
            routing: self.routing.records(),
            quota_meta: self.quota.meta.clone(),
            quota_shards: self.quota.shards.iter().map(|s| (**s).clone()).collect(),
            audit: self.audit.records().map(|r| (**r).clone()).collect(),
        }
    }

    pub fn from_image(image: MachineImage) -> Self {
        match image {
            MachineImage::V1 { routing } => Self {
                routing: RoutingHistory::from_records(routing),
                quota: QuotaState::default(),
                audit: AuditLog::default(),
            },
            MachineImage::V2 { routing, quota_meta, quota_shards } => Self {
                routing: RoutingHistory::from_records(routing),
                quota: QuotaState::from_parts(quota_meta, quota_shards),
                audit: AuditLog::default(),
            },
            MachineImage::V3 { routing, quota_meta, quota_shards, audit } => Self {
                routing: RoutingHistory::from_records(routing),
                quota: QuotaState::from_parts(quota_meta, quota_shards),
                audit: AuditLog::from_records(audit),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_write_nothing_and_images_round_trip() {
        let mut m = MachineState::default();
        let put = Command::PutTable {
            table_json: "{}".into(),
            expected_version: Some(0),
            cause: "seed".into(),
            by_node: "us-1".into(),
            at_ms: 1,
        };
        let (result, writes) = m.apply(&put);
        assert_eq!(result, CommandResult::Committed { version: 1 });
        assert_eq!(writes.len(), 2, "the version and its audit record");
        let (result, writes) = m.apply(&put);
        assert_eq!(result, CommandResult::Conflict { current: 1 });
        assert!(writes.is_empty());
        assert_eq!(m.audit.len(), 1, "a refused write leaves no audit record");
        assert_eq!(MachineState::from_image(m.image()), m);
    }

    #[test]
    fn committed_writes_are_audited_with_author_node_and_diff() {
        let mut m = MachineState::default();
        let put = |json: &str, who: &str| Command::PutTableBy {
            table_json: json.into(),
            expected_version: None,
            cause: "write".into(),
            by_node: "eu-2".into(),
            who: who.into(),
            at_ms: 42,
        };
        m.apply(&put(r#"{"services":{"a":{}},"routes":[{"name":"r","service":"a"}]}"#, "ops"));
        m.apply(&put(r#"{"services":{"a":{},"b":{}},"routes":[{"name":"r","service":"b"}]}"#, "deploy-bot"));
        let (result, _) =
            m.apply(&Command::RollbackBy { to: 1, by_node: "us-1".into(), who: "ops".into(), at_ms: 50 });
        assert_eq!(result, CommandResult::Committed { version: 3 });
        let records: Vec<_> = m.audit.records().cloned().collect();
        assert_eq!(records.len(), 3);
        let second = &records[1];
        assert_eq!((second.who.as_str(), second.node.as_str(), second.at_ms), ("deploy-bot", "eu-2", 42));
        assert_eq!((second.from_version, second.to_version), (1, 2));
        assert_eq!(second.summary.added, vec!["service b"]);
        assert_eq!(second.summary.changed, vec!["route r"]);
        let third = &records[2];
        assert_eq!(third.action, "rollback to v1");
        assert_eq!(third.summary.removed, vec!["service b"]);
        // Logs written before authors were recorded still apply, as "unknown".
        m.apply(&Command::Rollback { to: 2, by_node: "us-1".into(), at_ms: 60 });
        assert_eq!(m.audit.records().last().map(|r| r.who.clone()), Some("unknown".into()));
        assert_eq!(m.audit.verify(), crate::audit::ChainCheck::Intact);
        assert_eq!(MachineState::from_image(m.image()), m);
    }
}
