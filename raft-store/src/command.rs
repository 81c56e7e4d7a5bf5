//! The commands the replicated state machine understands and what applying one answers.
//!
//! Commands carry everything `apply` needs — including the proposer's wall-clock time — so that
//! applying the same log on any node, at any time, gives the same state. New kinds of state
//! add variants here and a branch in `MachineState::apply`.

use serde::Deserialize;
use serde::Serialize;

use crate::quota::DemandReport;
use crate::quota::QuotaTerms;

/// A write to the replicated state, proposed through [`crate::RaftStore::propose`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Commit a new routing table as version `current + 1`. Without an author: kept so that logs
    /// written before audit records existed still apply (their audit records name the author
    /// "unknown"). New writes use [`Command::PutTableBy`].
    PutTable {
        /// The table, as JSON the caller has already validated; opaque to this crate.
        table_json: String,
        /// `If-Match`: commit only if the current version is this one. Checked inside apply, so
        /// two racing writes with the same expectation cannot both win.
        expected_version: Option<u64>,
        /// Why the table changed (operator note, "bootstrap", ...), kept in the history.
        cause: String,
        /// Meridian id of the node that accepted the write.
        by_node: String,
        /// Proposer's wall clock (ms since the Unix epoch); recorded, never compared.
        at_ms: u64,
    },
    /// Re-commit the table of a past version (still in the history) as a new version.
    /// Without an author: kept so that logs written before audit records existed still apply
    /// (their audit records name the author "unknown"). New writes use [`Command::RollbackBy`].
    Rollback {
        /// The version whose table becomes current again.
        to: u64,
        /// Meridian id of the node that accepted the write.
        by_node: String,
        /// Proposer's wall clock (ms since the Unix epoch).
        at_ms: u64,
    },
    /// One round of quota allocation, proposed by the leader once per interval: the quotas'
    /// current terms and the demand every node reported since the last round. Applying it seals
    /// the coming windows (see `crate::quota`).
    QuotaRound {
        /// Leader's wall clock (ms since the Unix epoch): which windows this round may seal.
        at_ms: u64,
        terms: Vec<QuotaTerms>,
        reports: Vec<DemandReport>,
    },
    /// [`Command::PutTable`] with its author, recorded in the audit trail. (Variants are only
    /// ever appended: bincode numbers them by position, and old log entries must still decode.)
    PutTableBy {
        table_json: String,
        expected_version: Option<u64>,
        cause: String,
        by_node: String,
        /// Name of the admin token that made the write.
        who: String,
        at_ms: u64,
    },
    /// [`Command::Rollback`] with its author, recorded in the audit trail.
    RollbackBy { to: u64, by_node: String, who: String, at_ms: u64 },
}

/// What applying a [`Command`] decided. Refusals are results, not errors: they are replicated
/// decisions every node agrees on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// The command committed and the routing table is now at `version`.
    Committed { version: u64 },
    /// `expected_version` did not match; nothing changed.
    Conflict { current: u64 },
    /// A rollback named a version that is not (or no longer) in the history; nothing changed.
    UnknownVersion(u64),
    /// A quota round was applied.
    QuotaRound,
}
