//! Three nodes seeded from the first form one membership, share their facts, and see updates.

use std::time::Duration;

use meridian_gossip::ServiceHealth;

use crate::support::*;

#[tokio::test]
async fn three_nodes_form_a_cluster_and_share_facts() {
    init_tracing();
    let a = start("us-1", "us", &[]).await;
    let b = start("eu-1", "eu", &[a.local_addr()]).await;
    let c = start("ap-1", "ap", &[a.local_addr()]).await;

    phase("three nodes seeded from the first see each other live");
    for node in [&a, &b, &c] {
        let took = wait_for(node, Duration::from_secs(5), "membership of 3", |m| {
            exactly_live(m, &["us-1", "eu-1", "ap-1"])
        })
        .await;
        eprintln!("    formed after {took:?}");
    }

    phase("each node sees the others' facts: region, addresses, services");
    for (node, other, region) in [(&a, "eu-1", "eu"), (&b, "ap-1", "ap"), (&c, "us-1", "us")] {
        let m = node.membership();
        let member = m.get(other).expect("member present");
        assert_eq!(member.facts, facts(region, other), "facts of {other}");
        assert_ne!(member.generation, 0);
    }
    assert_eq!(a.membership().get("eu-1").unwrap().gossip_addr, b.local_addr());

    phase("an update on one node reaches the others; a removed service disappears");
    b.update(|f| {
        f.routing_version = 7;
        f.raft_role = "leader".to_owned();
        f.services.insert("echo".to_owned(), ServiceHealth { healthy: 0, total: 2 });
        f.services.remove("billing");
    })
    .await;
    let updated = |m: &meridian_gossip::Membership| {
        m.get("eu-1").is_some_and(|e| {
            e.facts.routing_version == 7
                && e.facts.raft_role == "leader"
                && e.facts.services.get("echo") == Some(&ServiceHealth { healthy: 0, total: 2 })
                && !e.facts.services.contains_key("billing")
        })
    };
    for node in [&a, &c] {
        let took = wait_for(node, Duration::from_secs(3), "update from eu-1", updated).await;
        eprintln!("    update seen after {took:?}");
    }
    assert!(updated(&b.membership()), "a node's own entry shows its update at once");

    phase("nothing was declared dead along the way");
    for node in [&a, &b, &c] {
        assert_eq!(node.membership().dead_count(), 0);
    }
}
