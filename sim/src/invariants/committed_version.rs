//! A committed routing version never changes: every node that applies version V applies the
//! table committed as V, and no version is ever committed twice with different contents.

use std::collections::BTreeMap;

use super::Violation;

#[derive(Default)]
pub struct CommittedVersion {
    committed: BTreeMap<u64, u64>,
}

impl CommittedVersion {
    pub fn on_commit(&mut self, at_us: u64, version: u64, hash: u64) -> Result<(), Violation> {
        match self.committed.insert(version, hash) {
            Some(prev) if prev != hash => Err(Violation {
                invariant: "committed version never changes",
                at_us,
                detail: format!(
                    "version {version} committed again with other contents ({prev:x} then {hash:x})"
                ),
            }),
            _ => Ok(()),
        }
    }

    pub fn on_apply(&self, at_us: u64, node: &str, version: u64, hash: u64) -> Result<(), Violation> {
        match self.committed.get(&version) {
            Some(h) if *h == hash => Ok(()),
            other => Err(Violation {
                invariant: "committed version never changes",
                at_us,
                detail: format!("{node} applied version {version} as {hash:x}, committed as {other:x?}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_version_is_caught() {
        let mut i = CommittedVersion::default();
        assert!(i.on_commit(1, 1, 0xa).is_ok());
        assert!(i.on_apply(2, "n", 1, 0xa).is_ok());
        assert!(i.on_apply(2, "n", 1, 0xb).is_err());
        assert!(i.on_apply(2, "n", 2, 0xa).is_err(), "never committed");
        assert!(i.on_commit(3, 1, 0xb).is_err());
    }
}
