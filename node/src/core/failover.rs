//! Cross-region failover decisions: when a request should leave its region, and to which peer.
//!
//! A request is forwarded at most once (the receiving node serves it from its own region and
//! never forwards again). The destination is a live, non-draining node of another region, not yet
//! visited, that gossip reports healthy for the service; among those the lowest measured RTT wins,
//! then the lowest load. Gossip is advisory: a wrong answer here costs one failed attempt, never
//! correctness, because the receiving node re-checks everything itself.

use super::retry::{Failure, RequestFacts};

/// What the origin node knows about one candidate peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerView<'a> {
    pub region: &'a str,
    pub live: bool,
    pub draining: bool,
    /// Healthy endpoints of the service in the peer's region, as the peer last gossiped.
    pub healthy: u32,
    /// Measured QUIC round trip; `None` when no connection exists yet.
    pub rtt_us: Option<u64>,
    pub load: u32,
}

/// Index of the best peer, if any qualifies.
pub fn choose_peer(peers: &[PeerView<'_>], local_region: &str, visited: &[String]) -> Option<usize> {
    peers
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            p.live
                && !p.draining
                && p.healthy > 0
                && p.region != local_region
                && !visited.iter().any(|v| v == p.region)
        })
        .min_by_key(|(_, p)| (p.rtt_us.unwrap_or(u64::MAX), p.load))
        .map(|(i, _)| i)
}

/// Why the local attempt(s) ended without a usable response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalOutcome {
    /// No local endpoint was available at all: nothing was sent.
    NoHealthyEndpoint,
    /// The last local attempt failed this way.
    Failed(Failure),
}

/// May the request be forwarded after `outcome`? Only if repeating it elsewhere is safe (the same
/// rule as a local retry) and its body is still in hand.
pub fn may_forward(outcome: LocalOutcome, facts: RequestFacts, body_available: bool) -> bool {
    if !body_available {
        return false;
    }
    match outcome {
        LocalOutcome::NoHealthyEndpoint => true,
        LocalOutcome::Failed(f) => super::retry::is_retriable(f, facts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn p(region: &str, healthy: u32, rtt: Option<u64>, load: u32) -> PeerView<'_> {
        PeerView { region, live: true, draining: false, healthy, rtt_us: rtt, load }
    }

    #[test]
    fn nearest_healthy_peer_of_another_region_wins() {
        let peers = [
            p("us", 5, Some(10), 0),
            p("eu", 1, Some(900), 0),
            p("ap", 2, Some(300), 9),
            p("sa", 0, Some(1), 0),
        ];
        assert_eq!(choose_peer(&peers, "us", &[]), Some(2));
        assert_eq!(choose_peer(&peers, "us", &["ap".to_string()]), Some(1));
    }

    #[test]
    fn dead_draining_and_unknown_rtt_peers() {
        let mut a = p("eu", 3, Some(5), 0);
        a.live = false;
        let mut b = p("eu", 3, Some(5), 0);
        b.draining = true;
        let c = p("ap", 3, None, 0);
        assert_eq!(choose_peer(&[a, b, c], "us", &[]), Some(2), "no RTT yet still beats nothing");
        assert_eq!(choose_peer(&[a, b], "us", &[]), None);
    }

    #[test]
    fn forwarding_follows_the_retry_rule() {
        let post = RequestFacts::new(&Method::POST, false, true);
        let get = RequestFacts::new(&Method::GET, false, true);
        assert!(may_forward(LocalOutcome::NoHealthyEndpoint, post, true));
        assert!(may_forward(LocalOutcome::Failed(Failure::NotSent), post, true));
        assert!(!may_forward(LocalOutcome::Failed(Failure::Status(503)), post, true));
        assert!(may_forward(LocalOutcome::Failed(Failure::Status(503)), get, true));
        assert!(!may_forward(LocalOutcome::NoHealthyEndpoint, get, false), "a consumed body cannot go");
    }
}
