//! Invariant 3 — after the faults end, the cluster converges: every node is up, follows the one
//! leader, has applied the leader's routing version, and its gossip view shows every node live
//! and at that version. Required at the end of the run (table writes stop at the heal, so the
//! target holds still; quota rounds go on); measured from the end of the last fault.

use std::collections::BTreeMap;

use meridian_raft_store::RaftRole;

use super::sample::NodeSample;

pub struct Convergence {
    ids: Vec<String>,
    raft_ids: Vec<u64>,
    /// Since when no fault is in effect (`None` while one is).
    whole_since_ms: Option<u64>,
    /// When the cluster first converged after `whole_since_ms`.
    converged_at_ms: Option<u64>,
}

impl Convergence {
    pub fn new(ids: Vec<String>, raft_ids: Vec<u64>) -> Self {
        Self { ids, raft_ids, whole_since_ms: None, converged_at_ms: None }
    }

    /// The last fault in effect ended at `at_ms`: the clock starts.
    pub fn whole(&mut self, at_ms: u64) {
        self.whole_since_ms = Some(at_ms);
        self.converged_at_ms = None;
    }

    /// A fault struck: the clock stops until the cluster is whole again.
    pub fn disturbed(&mut self) {
        self.whole_since_ms = None;
        self.converged_at_ms = None;
    }

    pub fn observe(&mut self, at_ms: u64, samples: &[NodeSample]) {
        if self.whole_since_ms.is_some() && self.converged_at_ms.is_none() && self.gap(samples).is_none() {
            self.converged_at_ms = Some(at_ms);
        }
    }

    /// What keeps the cluster from having converged, if anything.
    pub fn gap(&self, samples: &[NodeSample]) -> Option<String> {
        if samples.len() < self.ids.len() {
            return Some(format!("{} of {} nodes running", samples.len(), self.ids.len()));
        }
        let Some(leader) = samples.iter().filter(|s| s.role == RaftRole::Leader).max_by_key(|s| s.term)
        else {
            return Some("no leader".into());
        };
        let leader_id = self.raft_ids[leader.index];
        let version = leader.version();
        let name = |s: &NodeSample| &self.ids[s.index];
        if let Some(s) = samples.iter().find(|s| s.leader != Some(leader_id)) {
            return Some(format!("{} follows {:?}, not leader {}", name(s), s.leader, name(leader)));
        }
        if let Some(s) = samples.iter().find(|s| s.version() != version) {
            return Some(format!("{} applied v{}, leader {} v{version}", name(s), s.version(), name(leader)));
        }
        for s in samples {
            let view: BTreeMap<&str, (bool, u64)> = s
                .membership
                .members
                .values()
                .map(|m| (m.id.as_str(), (m.live, m.facts.routing_version)))
                .collect();
            for id in &self.ids {
                match view.get(id.as_str()) {
                    Some((true, v)) if *v == version => {}
                    seen => {
                        return Some(format!(
                            "{}'s gossip view shows {id} as {seen:?} (live, version), want v{version}",
                            name(s)
                        ))
                    }
                }
            }
        }
        None
    }

    /// Time from the end of the last fault to convergence, once converged.
    pub fn convergence_ms(&self) -> Option<u64> {
        Some(self.converged_at_ms? - self.whole_since_ms?)
    }

    /// The verdict on the run's last sample, `settle_ms` after the heal.
    pub fn verdict(&self, settle_ms: u64, samples: &[NodeSample]) -> Option<String> {
        let gap = self.gap(samples)?;
        Some(format!("convergence: not converged {settle_ms} ms after the heal: {gap}"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meridian_gossip::Member;
    use meridian_gossip::Membership;
    use meridian_gossip::NodeFacts;
    use meridian_raft_store::AppliedTable;

    use super::*;
    use crate::tier2::sample::tests::sample;

    fn node(index: usize, role: RaftRole, version: u64, view: &Arc<Membership>) -> NodeSample {
        let applied = AppliedTable {
            version,
            table_json: Arc::from("{}"),
            committed_at_ms: 0,
            cause: String::new(),
            by_node: String::new(),
        };
        NodeSample {
            leader: Some(10),
            applied: Some(applied),
            membership: view.clone(),
            ..sample(index, role, 1)
        }
    }

    #[test]
    fn converged_only_when_raft_and_gossip_agree() {
        let mut check = Convergence::new(vec!["a".into(), "b".into()], vec![10, 11]);
        let member = |id: &str, version| Member {
            id: id.into(),
            live: true,
            facts: NodeFacts { routing_version: version, ..NodeFacts::default() },
            gossip_addr: "10.0.0.1:7946".parse().expect("address"),
            generation: 1,
        };
        let view = |b_version| {
            let members =
                [member("a", 2), member("b", b_version)].into_iter().map(|m| (m.id.clone(), m)).collect();
            Arc::new(Membership { members })
        };
        let stale = view(1);
        let fresh = view(2);
        check.whole(100);
        check.observe(110, &[node(0, RaftRole::Leader, 2, &stale), node(1, RaftRole::Follower, 1, &stale)]);
        check.observe(120, &[node(0, RaftRole::Leader, 2, &stale), node(1, RaftRole::Follower, 2, &stale)]);
        assert_eq!(check.convergence_ms(), None, "gossip still shows b at v1");
        let done = [node(0, RaftRole::Leader, 2, &fresh), node(1, RaftRole::Follower, 2, &fresh)];
        check.observe(130, &done);
        assert_eq!(check.convergence_ms(), Some(30));
        assert_eq!(check.verdict(6_000, &done), None);
        assert!(check.verdict(6_000, &done[..1]).is_some(), "a node missing");
    }
}
