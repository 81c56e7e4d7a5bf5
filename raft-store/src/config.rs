//! How a node's Raft is configured: who it is, where its data lives, and its timings.
//! Translating that into openraft's `Config` happens here and nowhere else.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::StoreError;
use crate::node::MeridianNode;

/// Heartbeat and election timing. Elections start after a random timeout in
/// `[election_min, election_max)` without hearing from a leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftTimings {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
}

impl RaftTimings {
    /// Voters within one region or a local test: sub-second failover.
    pub fn lan() -> Self {
        Self {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(300),
            election_max: Duration::from_millis(600),
        }
    }

    /// Voters spread across regions: timeouts well above cross-region round trips and their
    /// jitter, so a slow link does not look like a dead leader.
    pub fn wan() -> Self {
        Self {
            heartbeat: Duration::from_millis(500),
            election_min: Duration::from_millis(1500),
            election_max: Duration::from_millis(3000),
        }
    }

    fn validate(&self) -> Result<(), StoreError> {
        if self.heartbeat.is_zero() || self.heartbeat >= self.election_min {
            return Err(StoreError::Config(format!(
                "timings.heartbeat ({:?}) must be non-zero and below timings.election_min ({:?})",
                self.heartbeat, self.election_min
            )));
        }
        if self.election_min >= self.election_max {
            return Err(StoreError::Config(format!(
                "timings.election_min ({:?}) must be below timings.election_max ({:?})",
                self.election_min, self.election_max
            )));
        }
        Ok(())
    }
}

impl Default for RaftTimings {
    fn default() -> Self {
        Self::lan()
    }
}

/// Everything [`crate::RaftStore::open`] needs besides the transport.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    /// This node.
    pub node: MeridianNode,
    /// Directory of the database file (`raft.redb`); created if missing.
    pub data_dir: PathBuf,
    pub timings: RaftTimings,
    /// Build a snapshot after this many log entries since the last one; the log keeps as many
    /// entries behind a snapshot, so a briefly lagging follower catches up from the log.
    pub snapshot_every: u64,
    /// Bound on [`crate::RaftStore::propose`] and membership changes; past it they answer
    /// `NoQuorum` instead of waiting for a quorum that may never come back.
    pub propose_timeout: Duration,
}

impl RaftConfig {
    pub const DEFAULT_SNAPSHOT_EVERY: u64 = 1000;
    pub const DEFAULT_PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

    /// A config with LAN timings and default snapshot and propose bounds.
    pub fn new(node: MeridianNode, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            node,
            data_dir: data_dir.into(),
            timings: RaftTimings::lan(),
            snapshot_every: Self::DEFAULT_SNAPSHOT_EVERY,
            propose_timeout: Self::DEFAULT_PROPOSE_TIMEOUT,
        }
    }

    /// openraft's config for these settings.
    pub(crate) fn openraft_config(&self) -> Result<openraft::Config, StoreError> {
        self.timings.validate()?;
        if self.snapshot_every == 0 {
            return Err(StoreError::Config("snapshot_every must be at least 1".into()));
        }
        if self.propose_timeout.is_zero() {
            return Err(StoreError::Config("propose_timeout must be non-zero".into()));
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = openraft::Config {
            cluster_name: "meridian".into(),
            heartbeat_interval: ms(self.timings.heartbeat),
            election_timeout_min: ms(self.timings.election_min),
            election_timeout_max: ms(self.timings.election_max),
            // One snapshot chunk must cross the slowest link within this.
            install_snapshot_timeout: ms(self.timings.election_max).max(1000),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.snapshot_every,
            // Bounds a batch to what fits in one message even with large tables; an oversized
            // batch is split further by the network (PayloadTooLarge).
            max_payload_entries: 64,
            ..Default::default()
        };
        config.validate().map_err(|e| StoreError::Config(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_are_validated() {
        let node = MeridianNode::new("us-1", "us", "127.0.0.1:1");
        let mut cfg = RaftConfig::new(node, "/tmp/x");
        assert!(cfg.openraft_config().is_ok());
        cfg.timings = RaftTimings::wan();
        assert!(cfg.openraft_config().is_ok());
        cfg.timings.heartbeat = cfg.timings.election_min;
        assert!(matches!(cfg.openraft_config(), Err(StoreError::Config(_))));
        cfg.timings = RaftTimings::lan();
        cfg.snapshot_every = 0;
        assert!(matches!(cfg.openraft_config(), Err(StoreError::Config(_))));
    }
}
