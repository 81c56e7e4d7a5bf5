//! Invariant 1 — election safety: no two nodes are ever leader in the same term.
//!
//! Checked against every sample of the whole run, not just one instant: a term's leader is
//! remembered, so a second node claiming that term later (after a restart, a heal) is caught too.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use meridian_raft_store::RaftRole;

use super::sample::NodeSample;

pub struct OneLeaderPerTerm {
    ids: Vec<String>,
    /// term → the node seen leading it.
    leaders: BTreeMap<u64, usize>,
    /// (term, node) pairs already reported, so a violation is reported once, not every step.
    reported: BTreeSet<(u64, usize)>,
    violations: Vec<String>,
}

impl OneLeaderPerTerm {
    pub fn new(ids: Vec<String>) -> Self {
        Self { ids, leaders: BTreeMap::new(), reported: BTreeSet::new(), violations: Vec::new() }
    }

    pub fn observe(&mut self, at_ms: u64, samples: &[NodeSample]) {
        for s in samples.iter().filter(|s| s.role == RaftRole::Leader) {
            let first = *self.leaders.entry(s.term).or_insert(s.index);
            if first != s.index && self.reported.insert((s.term, s.index)) {
                self.violations.push(format!(
                    "one leader per term: at {at_ms} ms {} leads term {}, which {} led",
                    self.ids[s.index], s.term, self.ids[first]
                ));
            }
        }
    }

    /// How many terms had a leader: elections won (the first included).
    pub fn terms_led(&self) -> u64 {
        self.leaders.len() as u64
    }

    pub fn violations(&self) -> &[String] {
        &self.violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier2::sample::tests::sample;

    #[test]
    fn a_second_leader_in_a_term_is_reported_once() {
        let mut check = OneLeaderPerTerm::new(vec!["a".into(), "b".into()]);
        check.observe(0, &[sample(0, RaftRole::Leader, 1), sample(1, RaftRole::Follower, 1)]);
        check.observe(10, &[sample(0, RaftRole::Follower, 2), sample(1, RaftRole::Leader, 2)]);
        assert!(check.violations().is_empty());
        assert_eq!(check.terms_led(), 2);
        check.observe(20, &[sample(0, RaftRole::Leader, 2)]);
        check.observe(30, &[sample(0, RaftRole::Leader, 2)]);
        assert_eq!(check.violations().len(), 1, "{:?}", check.violations());
    }
}
