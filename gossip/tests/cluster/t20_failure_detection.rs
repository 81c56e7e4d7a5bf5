//! A stopped node is declared dead within about `dead_after`; a leaving node at once.

use std::time::Duration;

use crate::support::*;

/// Generous bound for a loaded 2-core machine; the target is about 2 s.
const DETECTION_LIMIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_stopped_node_is_declared_dead_within_seconds() {
    init_tracing();
    let a = start("us-1", "us", &[]).await;
    let b = start("eu-1", "eu", &[a.local_addr()]).await;
    let c = start("ap-1", "ap", &[a.local_addr()]).await;

    phase("cluster of three forms and runs long enough for the detector to learn intervals");
    for node in [&a, &b, &c] {
        wait_for(node, Duration::from_secs(5), "membership of 3", |m| {
            exactly_live(m, &["us-1", "eu-1", "ap-1"])
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for node in [&a, &b] {
        let timeout = node.failure_detection_timeout("ap-1").await;
        eprintln!("    detector timeout for ap-1 right now: {timeout:?}");
    }

    phase("ap-1 is dropped without leaving; the others declare it dead");
    drop(c);
    let dead = |m: &meridian_gossip::Membership| m.get("ap-1").is_some_and(|c| !c.live);
    let (at_a, at_b) = tokio::join!(
        wait_for(&a, DETECTION_LIMIT, "us-1 sees ap-1 dead", dead),
        wait_for(&b, DETECTION_LIMIT, "eu-1 sees ap-1 dead", dead),
    );
    eprintln!("    ap-1 declared dead after {at_a:?} by us-1 and {at_b:?} by eu-1 (from the stop)");

    phase("the dead node stays listed as dead; the survivors stay live");
    for node in [&a, &b] {
        let m = node.membership();
        assert_eq!((m.live_count(), m.dead_count()), (2, 1), "{m:#?}");
    }
}

#[tokio::test]
async fn a_leaving_node_is_not_live_almost_at_once() {
    init_tracing();
    let a = start("us-1", "us", &[]).await;
    let b = start("eu-1", "eu", &[a.local_addr()]).await;
    let c = start("ap-1", "ap", &[a.local_addr()]).await;

    phase("cluster of three forms");
    for node in [&a, &b, &c] {
        wait_for(node, Duration::from_secs(5), "membership of 3", |m| {
            exactly_live(m, &["us-1", "eu-1", "ap-1"])
        })
        .await;
    }

    phase("ap-1 leaves; the others see it not live and draining well under a second");
    let leaving = tokio::spawn(c.leave());
    for node in [&a, &b] {
        let took = wait_for(node, Duration::from_secs(2), "ap-1 left", |m| {
            m.get("ap-1").is_some_and(|c| !c.live && c.facts.draining)
        })
        .await;
        eprintln!("    left seen after {took:?}");
        assert!(took < Duration::from_secs(1), "leave took {took:?}");
    }
    tokio::time::timeout(Duration::from_secs(3), leaving).await.expect("leave returns").expect("leave task");

    phase("after leaving, ap-1 stays not live (its silence agrees with its announcement)");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!is_live(&a.membership(), "ap-1"));
    assert!(exactly_live(&a.membership(), &["us-1", "eu-1"]));
}
