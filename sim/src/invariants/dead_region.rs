//! No request is routed to a region declared dead longer than T: a forward never goes to a region
//! every node of which has been unreachable from the origin for longer than gossip's detection
//! time plus a margin.

use super::Violation;

/// Gossip declares a silent member dead after ~1.4 s; T leaves a margin over that.
pub const T_US: u64 = 2_500_000;

/// `unreachable_since`: since when every node of the destination region has been unreachable from
/// the origin (`None` if one is reachable).
pub fn check(
    at_us: u64,
    origin: &str,
    region: &str,
    unreachable_since: Option<u64>,
) -> Result<(), Violation> {
    match unreachable_since {
        Some(since) if at_us.saturating_sub(since) > T_US => Err(Violation {
            invariant: "no request routed to a region dead longer than T",
            at_us,
            detail: format!(
                "{origin} forwarded to {region}, unreachable for {} ms (T = {} ms)",
                (at_us - since) / 1000,
                T_US / 1000
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_to_a_long_dead_region_is_caught() {
        assert!(check(10_000_000, "a", "eu", None).is_ok());
        assert!(check(10_000_000, "a", "eu", Some(9_000_000)).is_ok());
        assert!(check(10_000_000, "a", "eu", Some(1_000_000)).is_err());
    }
}
