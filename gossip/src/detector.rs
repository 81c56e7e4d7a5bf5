//! Failure-detector tuning: turns `gossip_interval` and `dead_after` into chitchat's
//! [`FailureDetectorConfig`].
//!
//! Owns the arithmetic only; the detector is chitchat's. Chitchat declares a node dead once the
//! time since its last observed heartbeat exceeds `phi_threshold × mean`, where `mean` averages
//! the last `sampling_window_size` heartbeat intervals together with a prior of
//! `initial_interval` weighted as five samples; liveness is re-evaluated once per gossip round.
//! Chitchat's defaults (5 s prior, threshold 8, 1000 samples) take 7 to 12 s to notice a stopped
//! node. Meridian wants it out of the forwarding set within `dead_after` (2 s on a LAN).

use std::time::Duration;

use chitchat::FailureDetectorConfig;

/// Intervals remembered per node: as many as the prior's weight, so the configured interval and
/// the observed one count equally. Heartbeats are relayed by every peer, so the observed
/// interval is well under a round (about 0.4 of one on loopback) and moves with cluster size,
/// fan-out and load; an unanchored mean would carry detection along with it, and a short
/// observed interval would make it eager and flappy.
const SAMPLING_WINDOW: usize = 5;

pub(crate) fn failure_detector_config(
    gossip_interval: Duration,
    dead_after: Duration,
    gc_grace: Duration,
) -> FailureDetectorConfig {
    let round = gossip_interval.as_secs_f64();
    // Worst case, a heartbeat is seen once per round (mean = one round): the timeout is then
    // `dead_after - round`, and the next once-per-round check lands by `dead_after`. Relayed
    // heartbeats make the mean, hence the timeout, shorter in practice (see the README).
    let threshold = (dead_after.as_secs_f64() - round) / round;
    FailureDetectorConfig {
        phi_threshold: threshold.max(2.0),
        sampling_window_size: SAMPLING_WINDOW,
        // A gap longer than the whole budget is an outage, not a sample of normal jitter.
        max_interval: dead_after,
        initial_interval: gossip_interval,
        dead_node_grace_period: gc_grace,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_case_timeout_leaves_one_round_for_the_liveness_check() {
        let round = Duration::from_millis(200);
        let cfg = failure_detector_config(round, Duration::from_secs(2), Duration::from_secs(60));
        let worst_timeout = round.as_secs_f64() * cfg.phi_threshold;
        assert!((worst_timeout - 1.8).abs() < 1e-9, "{worst_timeout}");
        assert_eq!(cfg.initial_interval, round);
        assert_eq!(cfg.dead_node_grace_period, Duration::from_secs(60));
    }

    #[test]
    fn threshold_never_drops_below_two_intervals() {
        let cfg =
            failure_detector_config(Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(60));
        assert_eq!(cfg.phi_threshold, 2.0);
    }
}
