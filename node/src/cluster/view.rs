//! What an operator sees of the cluster: the `/cluster` document, readiness and metrics.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::Cluster;

/// A member whose applied routing version trails the leader's is flagged as lagging.
impl Cluster {
    pub fn view(&self, own_services: Value, own_version: u64) -> Value {
        let status = self.raft.status();
        let members = self.gossip.membership();
        let leader_version = status
            .leader_node
            .as_ref()
            .and_then(|l| members.get(&l.id))
            .map_or(own_version, |m| m.facts.routing_version)
            .max(own_version);
        let list: Vec<Value> = members
            .members
            .values()
            .map(|m| {
                let is_self = m.id == self.id;
                let version = if is_self { own_version } else { m.facts.routing_version };
                let services = if is_self {
                    own_services.clone()
                } else {
                    serde_json::to_value(&m.facts.services).unwrap_or(Value::Null)
                };
                json!({
                    "id": m.id,
                    "region": m.facts.region,
                    "live": m.live,
                    "raft_role": if is_self { status.role.as_str().to_string() } else { m.facts.raft_role.clone() },
                    "routing_version": version,
                    "lagging": m.live && version < leader_version,
                    "services": services,
                    "http": m.facts.http_addr,
                    "admin": m.facts.admin_addr,
                    "peer": m.facts.peer_addr,
                    "load": m.facts.load,
                    "draining": m.facts.draining,
                })
            })
            .collect();
        json!({
            "node": {"id": self.id, "region": self.region},
            "raft": {
                "leader": status.leader_node.as_ref().map(|n| n.id.clone()),
                "term": status.term,
                "role": status.role.as_str(),
                "commit_index": status.commit_index.unwrap_or(0),
                "applied_index": status.applied_index.unwrap_or(0),
                "voters": status.voters.iter().map(|n| n.id.clone()).collect::<Vec<_>>(),
                "learners": status.learners.iter().map(|n| n.id.clone()).collect::<Vec<_>>(),
            },
            "routing": {"version": own_version, "leader_version": leader_version},
            "members": list,
        })
    }

    pub fn knows_leader(&self) -> bool {
        self.raft.status().leader.is_some()
    }

    pub fn render_metrics(&self, out: &mut String) {
        let s = self.raft.status();
        let m = self.gossip.membership();
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(out, "meridian_raft_term", "Current Raft term.", s.term);
        gauge(
            out,
            "meridian_raft_commit_index",
            "Highest committed Raft log index.",
            s.commit_index.unwrap_or(0),
        );
        gauge(
            out,
            "meridian_raft_applied_index",
            "Highest applied Raft log index.",
            s.applied_index.unwrap_or(0),
        );
        gauge(
            out,
            "meridian_raft_is_leader",
            "1 if this node leads the Raft group.",
            u64::from(s.role.as_str() == "leader"),
        );
        gauge(out, "meridian_raft_voters", "Voters in the Raft group.", s.voters.len() as u64);
        let _ = writeln!(
            out,
            "# HELP meridian_raft_leader_changes_total Leader changes seen by this node.\n# TYPE meridian_raft_leader_changes_total counter\nmeridian_raft_leader_changes_total {}",
            self.leader_changes.load(Ordering::Relaxed)
        );
        gauge(
            out,
            "meridian_routing_lagging",
            "1 if this node's routing table has trailed the leader's for more than 10 s.",
            u64::from(self.lagging.load(Ordering::Relaxed)),
        );
        gauge(out, "meridian_gossip_live_members", "Members gossip reports live.", m.live_count() as u64);
        gauge(out, "meridian_gossip_dead_members", "Members gossip reports dead.", m.dead_count() as u64);
        self.peer.stats().render(out);
        self.peer.render_tls_metrics(out);
    }
}
