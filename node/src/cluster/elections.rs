//! When this voter may start an election.
//!
//! openraft lets any voter campaign once its election timeout passes without word from a leader.
//! Two cases make that campaign useless and harmful — it cannot win, and the higher term it leaves
//! behind unseats a healthy leader the moment the two can talk again:
//!
//! - a voter that just restarted, before the leader has had time to reach it (the leader may be
//!   waiting out a failed dial to it); quiet for [`STARTUP_QUIET`];
//! - a voter cut off from most voters, as gossip sees them (fewer than a majority live, itself
//!   included); quiet for as long as that lasts, but never more than [`QUIET_AT_MOST`] in a row;
//! - a voter shutting down: its peer plane stops serving while it drains, so it stops hearing the
//!   leader — a campaign then would persist a higher term that unseats the leader at its restart.
//!
//! Gossip is advisory: here it can only delay an election, never cause one, and the cap means a
//! broken gossip layer delays one by at most [`QUIET_AT_MOST`]. A quiet voter still votes and
//! follows; when it hears a leader, openraft's own timer restarts and no campaign follows.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Cluster;

/// How long a restarted voter waits for the leader before it may campaign.
pub const STARTUP_QUIET: Duration = Duration::from_secs(2);
/// Longest stretch of quiet while gossip shows too few voters live.
pub const QUIET_AT_MOST: Duration = Duration::from_secs(30);
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Whether elections should be held back now. `voters_live`: voters gossip shows live, this node
/// included; `quiet_for`: how long they have been held back already.
pub fn hold_back(
    restarted_at: Option<Instant>,
    voters: usize,
    voters_live: usize,
    quiet_for: Duration,
    now: Instant,
) -> bool {
    let starting = restarted_at.is_some_and(|t| now.duration_since(t) < STARTUP_QUIET);
    let cut_off = voters > 1 && voters_live * 2 <= voters && quiet_for < QUIET_AT_MOST;
    starting || cut_off
}

pub async fn run(cluster: Arc<Cluster>, mut stop: tokio::sync::watch::Receiver<bool>) {
    // A node that had joined a group before this start is a restart (fresh nodes bootstrap).
    let restarted_at = cluster.raft.is_initialized().await.then(Instant::now);
    let mut quiet_since: Option<Instant> = None;
    let mut enabled = true;
    loop {
        if *stop.borrow() {
            cluster.raft.set_elections(false);
            tracing::info!("raft elections held back: the node is shutting down");
            return;
        }
        let now = Instant::now();
        let status = cluster.raft.status();
        let members = cluster.gossip.membership();
        let voters = status.voters.len();
        let voters_live = status
            .voters
            .iter()
            .filter(|v| v.id == cluster.id || members.get(&v.id).is_some_and(|m| m.live))
            .count();
        let quiet_for = quiet_since.map_or(Duration::ZERO, |s| now.duration_since(s));
        let quiet = hold_back(restarted_at, voters, voters_live, quiet_for, now);
        if quiet {
            quiet_since.get_or_insert(now);
        } else if voters_live * 2 > voters {
            quiet_since = None;
        }
        if enabled == quiet {
            enabled = !quiet;
            cluster.raft.set_elections(enabled);
            tracing::info!(
                enabled,
                voters,
                voters_live,
                "raft elections {}",
                if enabled { "allowed" } else { "held back" }
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elections_are_held_back_only_when_useless() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        // A fresh node with a majority live campaigns freely.
        assert!(!hold_back(None, 3, 3, Duration::ZERO, t0));
        assert!(!hold_back(None, 3, 2, Duration::ZERO, t0), "one voter down leaves a majority");
        // Just restarted: quiet for a moment, then free.
        assert!(hold_back(Some(t0), 3, 3, Duration::ZERO, t0 + Duration::from_millis(500)));
        assert!(!hold_back(Some(t0), 3, 3, Duration::ZERO, later));
        // Cut off from most voters: quiet, but not for ever.
        assert!(hold_back(None, 5, 2, Duration::from_secs(1), later));
        assert!(!hold_back(None, 5, 2, QUIET_AT_MOST, later));
        // A single voter always may.
        assert!(!hold_back(None, 1, 1, Duration::ZERO, t0));
    }
}
