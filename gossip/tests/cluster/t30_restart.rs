//! A restarted node (same id, same address, new generation) is live again and its new facts win.

use std::time::Duration;

use meridian_gossip::{Gossip, ServiceHealth};
use tokio::time::Instant;

use crate::support::*;

#[tokio::test]
async fn a_restarted_node_supersedes_its_old_incarnation() {
    init_tracing();
    let a = start("us-1", "us", &[]).await;
    let b = start("eu-1", "eu", &[a.local_addr()]).await;
    let c = start("ap-1", "ap", &[a.local_addr()]).await;
    let c_addr = c.local_addr();
    let old_generation = c.generation();

    phase("cluster of three forms");
    for node in [&a, &b, &c] {
        wait_for(node, Duration::from_secs(5), "membership of 3", |m| {
            exactly_live(m, &["us-1", "eu-1", "ap-1"])
        })
        .await;
    }

    phase("ap-1 stops and restarts on the same address with new facts");
    drop(c);
    let mut new_facts = facts("ap", "ap-1");
    new_facts.routing_version = 9;
    new_facts.services.insert("search".to_owned(), ServiceHealth { healthy: 1, total: 1 });
    let restarted_at = Instant::now();
    let c = loop {
        // The aborted chitchat task releases the port when the runtime drops it: retry briefly.
        let cfg = config("ap-1", CLUSTER, c_addr, &[a.local_addr()]);
        match Gossip::start(cfg, new_facts.clone()).await {
            Ok(node) => break node,
            Err(err) if restarted_at.elapsed() < Duration::from_secs(2) => {
                eprintln!("    rebind not possible yet: {err}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("restart failed: {err}"),
        }
    };
    assert!(c.generation() > old_generation);
    assert_eq!(c.local_addr(), c_addr);

    phase("the others report ap-1 live again, with its new generation and new facts");
    let new_generation = c.generation();
    for node in [&a, &b] {
        let took = wait_for(node, Duration::from_secs(5), "ap-1 back", |m| {
            m.get("ap-1").is_some_and(|c| c.live && c.generation == new_generation && c.facts == new_facts)
        })
        .await;
        eprintln!("    restarted ap-1 seen live after {took:?}");
    }

    phase("the restarted node sees the whole cluster; one entry per node id");
    wait_for(&c, Duration::from_secs(5), "membership of 3", |m| exactly_live(m, &["us-1", "eu-1", "ap-1"]))
        .await;
    assert_eq!(a.membership().members.len(), 3);

    phase("the old incarnation going silent does not mark the new one dead");
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in [&a, &b] {
        assert!(exactly_live(&node.membership(), &["us-1", "eu-1", "ap-1"]), "{:#?}", node.membership());
    }
}
