//! Invariant 2 — a committed routing version never changes: every node that applied version V
//! holds byte-identical `table_json` for V, and that is what the leader acknowledged for V.
//!
//! Also checks that versions are made only of what clients proposed, each proposal at most
//! once (a table committed under two versions would be a replayed log entry).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;

use meridian_raft_store::AppliedTable;

use super::sample::NodeSample;

pub struct CommittedVersions {
    ids: Vec<String>,
    /// version → its table, and who was first seen with it.
    tables: BTreeMap<u64, (Arc<str>, String)>,
    /// table → the version it was committed as.
    versions: BTreeMap<Arc<str>, u64>,
    proposed: BTreeSet<Arc<str>>,
    /// Versions already reported, so one divergence is reported once.
    reported: BTreeSet<u64>,
    violations: Vec<String>,
}

impl CommittedVersions {
    pub fn new(ids: Vec<String>) -> Self {
        Self {
            ids,
            tables: BTreeMap::new(),
            versions: BTreeMap::new(),
            proposed: BTreeSet::new(),
            reported: BTreeSet::new(),
            violations: Vec::new(),
        }
    }

    /// A client proposed `table_json`.
    pub fn proposed(&mut self, table_json: &str) {
        self.proposed.insert(Arc::from(table_json));
    }

    /// The leader answered `Committed { version }` to the proposal of `table_json`.
    pub fn acknowledged(&mut self, at_ms: u64, version: u64, table_json: &str) {
        self.record(at_ms, "the proposer's acknowledgement", version, &Arc::from(table_json));
    }

    /// Checks every version each node applied since its previous sample.
    pub fn observe(&mut self, at_ms: u64, samples: &[NodeSample]) {
        for s in samples {
            let who = format!("node {}", self.ids[s.index]);
            for t in s.newly_applied.iter().chain(&s.applied) {
                self.check_table(at_ms, &who, t);
            }
        }
    }

    fn check_table(&mut self, at_ms: u64, who: &str, t: &AppliedTable) {
        // The current table is usually the one just checked in the history; skip the repeat.
        if self.tables.get(&t.version).is_some_and(|(known, _)| Arc::ptr_eq(known, &t.table_json)) {
            return;
        }
        self.record(at_ms, who, t.version, &t.table_json);
    }

    fn record(&mut self, at_ms: u64, who: &str, version: u64, table: &Arc<str>) {
        let mut problems = Vec::new();
        match self.tables.get(&version) {
            None => {
                self.tables.insert(version, (table.clone(), who.to_string()));
            }
            Some((known, first)) if **known != **table => problems.push(format!(
                "{who} holds a table for version {version} ({} bytes) that differs from {first}'s ({} bytes)",
                table.len(),
                known.len()
            )),
            Some(_) => {}
        }
        if !self.proposed.contains(table) {
            problems.push(format!("{who} holds a version {version} nobody proposed"));
        }
        match self.versions.get(table) {
            None => {
                self.versions.insert(table.clone(), version);
            }
            Some(other) if *other != version => {
                problems.push(format!("{who} holds one proposal as version {version} and as version {other}"))
            }
            Some(_) => {}
        }
        if !problems.is_empty() && self.reported.insert(version) {
            self.violations
                .extend(problems.into_iter().map(|p| format!("committed version: at {at_ms} ms {p}")));
        }
    }

    /// Distinct versions seen committed.
    pub fn versions_seen(&self) -> u64 {
        self.tables.len() as u64
    }

    pub fn violations(&self) -> &[String] {
        &self.violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier2::sample::tests::sample;
    use meridian_raft_store::RaftRole;

    fn table(version: u64, json: &str) -> AppliedTable {
        AppliedTable {
            version,
            table_json: Arc::from(json),
            committed_at_ms: 0,
            cause: String::new(),
            by_node: String::new(),
        }
    }

    fn with(index: usize, t: AppliedTable) -> NodeSample {
        NodeSample { applied: Some(t), ..sample(index, RaftRole::Follower, 1) }
    }

    #[test]
    fn divergent_and_unproposed_tables_are_reported() {
        let mut check = CommittedVersions::new(vec!["a".into(), "b".into()]);
        check.proposed("{1}");
        check.proposed("{2}");
        check.acknowledged(0, 1, "{1}");
        check.observe(5, &[with(0, table(1, "{1}")), with(1, table(1, "{1}"))]);
        assert!(check.violations().is_empty(), "{:?}", check.violations());
        check.observe(10, &[with(1, table(2, "{2}")), with(0, table(2, "{x}"))]);
        assert_eq!(check.violations().len(), 2, "differs and unproposed: {:?}", check.violations());
        check.observe(20, &[with(0, table(3, "{1}"))]);
        assert_eq!(check.violations().len(), 3, "one proposal twice: {:?}", check.violations());
        assert_eq!(check.versions_seen(), 3);
    }
}
