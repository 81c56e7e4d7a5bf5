//! Every node converges to the leader's version after healing: once the last fault has ended and
//! a settle period has passed, every live node has applied everything the leader committed.

use super::Violation;

/// How long after the last fault ends every node must have caught up.
pub const SETTLE_US: u64 = 10_000_000;

/// `versions`: (node, applied routing version) of every live node; `leader_version`: the newest
/// version committed long enough ago to have reached everyone.
pub fn check(at_us: u64, leader_version: u64, versions: &[(String, u64)]) -> Result<(), Violation> {
    let behind: Vec<String> =
        versions.iter().filter(|(_, v)| *v < leader_version).map(|(n, v)| format!("{n}@v{v}")).collect();
    if behind.is_empty() {
        return Ok(());
    }
    Err(Violation {
        invariant: "every node converges after healing",
        at_us,
        detail: format!(
            "{} node(s) not at the leader's version {leader_version} {}s after the last fault: {}",
            behind.len(),
            SETTLE_US / 1_000_000,
            behind.iter().take(8).cloned().collect::<Vec<_>>().join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_left_behind_is_caught() {
        assert!(check(1, 3, &[("a".into(), 3), ("b".into(), 3)]).is_ok());
        assert!(check(1, 3, &[("a".into(), 3), ("b".into(), 2)]).is_err());
        assert!(check(1, 3, &[("a".into(), 4)]).is_ok(), "a newer version is not behind");
    }
}
