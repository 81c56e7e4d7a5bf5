//! The cluster never admits more than a quota's limit plus its documented bound: per key and
//! window, what nodes admit on their leases is at most the limit, and what they admit without one
//! (the `on_partition` fallback) at most the sum of the fallback shares they used.

use super::Violation;

pub fn check(
    at_us: u64,
    window: u64,
    key: &str,
    limit: u64,
    leased: u64,
    fallback: u64,
    fallback_bound: u64,
) -> Result<(), Violation> {
    if leased > limit {
        return Err(Violation {
            invariant: "quota never over limit + bound",
            at_us,
            detail: format!("window {window} key {key:?}: {leased} admitted on leases, limit {limit}"),
        });
    }
    if fallback > fallback_bound {
        return Err(Violation {
            invariant: "quota never over limit + bound",
            at_us,
            detail: format!(
                "window {window} key {key:?}: {fallback} admitted without a lease, bound {fallback_bound}"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overshoot_is_caught() {
        assert!(check(1, 1, "k", 10, 10, 3, 3).is_ok());
        assert!(check(1, 1, "k", 10, 11, 0, 0).is_err());
        assert!(check(1, 1, "k", 10, 5, 4, 3).is_err());
    }
}
