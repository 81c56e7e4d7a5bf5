//! Global rate-limit quota leases, as replicated state.
//!
//! Time is cut into fixed windows aligned to the Unix epoch (`window = t_ms / window_ms`). For
//! every window of every quota the ledger decides, once, what share of the limit each node may
//! admit for each key; the shares of one window never add up to more than the limit, and a
//! window's shares never change once decided ("sealed"). A node admits in window `w` only what
//! the ledger it has applied grants it for `w`; where it has no decision (a window past what it
//! knows is sealed, or it is not among the window's participants) its lease has expired and it
//! follows the quota's `on_partition` policy instead.
//!
//! - Cold keys (almost all of them) cost nothing here: every participant gets an equal split of
//!   the limit. A window's participants are the nodes that reported recently when it was sealed.
//! - Hot keys (some node's demand reached half its share) get shares in proportion to demand,
//!   decided per window from the demand nodes report once per round.
//!
//! The leader proposes one [`crate::Command::QuotaRound`] per interval carrying the quotas'
//! terms and every node's batched demand; applying it (here, on every replica, deterministically)
//! seals the windows up to [`LEASE_AHEAD_MS`] ahead of the round's time. A new leader continues
//! from the replicated ledger, so a leader change can never grant a window twice.
//!
//! Pure and IO-free: no clock (the round carries the leader's `at_ms`), no hash-map iteration.

pub(crate) mod ledger;
mod split;

pub use ledger::HotKeyView;
pub use ledger::Lease;
pub use ledger::QuotaDirty;
pub use ledger::QuotaLedger;
pub use ledger::QuotaState;
pub use split::equal_share;
pub use split::split;

use serde::Deserialize;
use serde::Serialize;

/// How far past a round's time its windows are sealed: how long nodes keep admitting on their
/// leases when no round commits (leader lost, or this node cut off), and how early a window's
/// shares are fixed. Longer than a leader election, so a leader change costs no lease.
pub const LEASE_AHEAD_MS: u64 = 2_000;
/// A node that has not reported for this long is no longer a participant of new windows.
pub const PARTICIPANT_TTL_MS: u64 = 3_000;
/// A node's reported demand for a key counts for this long.
pub const DEMAND_TTL_MS: u64 = 1_500;
/// Nodes silent for this long are forgotten (their counts leave `/quotas`).
pub const NODE_FORGET_MS: u64 = 60_000;
/// Hot keys are spread over this many shards by key hash; only shards that changed are written.
pub const SHARDS: usize = 64;
/// At most this many hot keys across all quotas; beyond it a key stays on the equal split (still
/// within the limit, less fitted to demand).
pub const MAX_HOT_KEYS: usize = 65_536;
/// At most this many key demands from one node in one round (the node sends its busiest).
pub const MAX_REPORT_KEYS: usize = 4_096;
/// Longest key kept; longer keys are hashed by the node before they get here.
pub const MAX_KEY_BYTES: usize = 256;

/// A quota's terms as the routing table states them; each round carries the current ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaTerms {
    pub name: String,
    pub limit: u64,
    pub window_ms: u64,
}

/// One node's demand for one key: requests offered (admitted or not) per window, recently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDemand {
    pub quota: String,
    pub key: String,
    pub demand: u64,
}

/// A node's running totals for one quota, shown in `/quotas`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaCounts {
    pub quota: String,
    pub admitted: u64,
    pub rejected: u64,
}

/// What one node tells the leader once per round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemandReport {
    pub node: String,
    pub demands: Vec<KeyDemand>,
    pub counts: Vec<QuotaCounts>,
}

/// The hot-key shard a (quota, key) lives in: FNV-1a, stable across processes and versions.
pub fn shard_of(quota: &str, key: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in quota.as_bytes().iter().chain(&[0u8]).chain(key.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

#[cfg(test)]
mod tests;
