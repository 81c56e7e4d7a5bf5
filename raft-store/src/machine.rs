//! The replicated state as plain data: what every kind of [`Command`] does to it, and its
//! snapshot image.
//!
//! Pure: no disk, no clock. The durable state machine (`state_machine.rs`) calls [`MachineState::apply`]
//! and persists the [`MachineWrite`]s it returns. To add a kind of state: a field here, a
//! branch in `apply`, a `MachineWrite` variant, and a new [`MachineImage`] variant.

use serde::Deserialize;
use serde::Serialize;

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
}

/// The snapshot form of [`MachineState`]. An enum so a later format can be added as a new
/// variant while old snapshots still decode (bincode is not self-describing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MachineImage {
    V1 { routing: Vec<HistoryRecord> },
    V2 { routing: Vec<HistoryRecord>, quota_meta: QuotaMeta, quota_shards: Vec<Shard> },
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
        let (result, change) = match cmd {
            Command::PutTable { table_json, expected_version, cause, by_node, at_ms } => {
                self.routing.put(table_json, *expected_version, cause, by_node, *at_ms)
            }
            Command::Rollback { to, by_node, at_ms } => self.routing.rollback(*to, by_node, *at_ms),
            Command::QuotaRound { .. } => (CommandResult::QuotaRound, None),
        };
        let mut writes = Vec::new();
        if let Some(change) = change {
            writes.push(MachineWrite::PutRouting(change.added));
            writes.extend(change.evicted.into_iter().map(MachineWrite::DropRouting));
        }
        (result, writes)
    }

    pub fn image(&self) -> MachineImage {
        MachineImage::V2 {
            routing: self.routing.records(),
            quota_meta: self.quota.meta.clone(),
            quota_shards: self.quota.shards.iter().map(|s| (**s).clone()).collect(),
        }
    }

    pub fn from_image(image: MachineImage) -> Self {
        match image {
            MachineImage::V1 { routing } => {
                Self { routing: RoutingHistory::from_records(routing), quota: QuotaState::default() }
            }
            MachineImage::V2 { routing, quota_meta, quota_shards } => Self {
                routing: RoutingHistory::from_records(routing),
                quota: QuotaState::from_parts(quota_meta, quota_shards),
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
        assert_eq!(writes.len(), 1);
        let (result, writes) = m.apply(&put);
        assert_eq!(result, CommandResult::Conflict { current: 1 });
        assert!(writes.is_empty());
        assert_eq!(MachineState::from_image(m.image()), m);
    }
}
