//! Every idempotent request that had a healthy region somewhere was served.
//!
//! Precisely: an idempotent request that reached a live node may fail only if, when it arrived,
//! - no other region the node could reach had a working upstream that its gossip view showed
//!   live and healthy; or
//! - the peers it tried were ones its gossip view still showed live but that could no longer be
//!   reached (gossip's detection delay: the view was stale); or
//! - the cross-region budget refused the forward (a documented refusal).
//!
//! The report counts the last two apart, so what the excuses cost stays visible.

use super::Violation;

pub struct Facts<'a> {
    pub node: &'a str,
    pub idempotent: bool,
    pub failed: bool,
    pub reason: &'a str,
    pub budget_refused: bool,
    /// Peers tried that the view showed live but were unreachable.
    pub stale_tries: usize,
    /// A region reachable from the node, with a working upstream, that its gossip view shows
    /// live and healthy.
    pub known_healthy_region: Option<&'a str>,
}

pub fn check(at_us: u64, f: &Facts<'_>) -> Result<(), Violation> {
    if !f.idempotent || !f.failed || f.budget_refused || f.stale_tries > 0 {
        return Ok(());
    }
    match f.known_healthy_region {
        Some(region) => Err(Violation {
            invariant: "every idempotent request with a healthy region is served",
            at_us,
            detail: format!(
                "{}: failed ({}) while {region} was healthy, reachable and known",
                f.node, f.reason
            ),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_request_with_a_known_healthy_region_is_caught() {
        let mut f = Facts {
            node: "a",
            idempotent: true,
            failed: true,
            reason: "x",
            budget_refused: false,
            stale_tries: 0,
            known_healthy_region: Some("eu"),
        };
        assert!(check(1, &f).is_err());
        f.budget_refused = true;
        assert!(check(1, &f).is_ok());
        f.budget_refused = false;
        f.stale_tries = 1;
        assert!(check(1, &f).is_ok());
        f.stale_tries = 0;
        f.known_healthy_region = None;
        assert!(check(1, &f).is_ok());
    }
}
