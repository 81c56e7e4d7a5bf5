//! Well-formed but forged gossip: what it can and cannot do to a node's view of itself.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use meridian_gossip::keys;
use tokio::net::UdpSocket;

use crate::support::*;
use crate::wire;

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(_) => panic!("tests bind IPv4"),
    }
}

#[tokio::test]
async fn forged_writes_to_our_own_state_are_undone() {
    init_tracing();
    let a = start("us-1", "us", &[]).await;
    let b = start("eu-1", "eu", &[a.local_addr()]).await;

    phase("two nodes form a cluster");
    for node in [&a, &b] {
        wait_for(node, Duration::from_secs(5), "membership of 2", |m| exactly_live(m, &["us-1", "eu-1"]))
            .await;
    }

    phase("a forged ACK rewrites us-1's own region, marks it left, and adds a stray key");
    let attacker = UdpSocket::bind(any_port()).await.unwrap();
    let forged = wire::forged_ack(
        "us-1",
        a.generation(),
        v4(a.local_addr()),
        &[
            (keys::LEFT, "true", 1_000_000),
            (keys::REGION, "forged", 1_000_001),
            ("svc:ghost", "9/9", 1_000_002),
        ],
        1_000_002,
    );
    attacker.send_to(&forged, a.local_addr()).await.unwrap();

    phase("us-1 restores its keys at a higher version, so eu-1 keeps seeing the truth");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = b.membership();
    let us = m.get("us-1").unwrap();
    assert!(us.live, "{m:#?}");
    assert_eq!(us.facts, facts("us", "us-1"));
    b.update(|f| f.load = 5).await;
    wait_for(&a, Duration::from_secs(3), "gossip still flows", |m| {
        m.get("eu-1").is_some_and(|e| e.facts.load == 5)
    })
    .await;
}

#[tokio::test]
async fn a_forged_version_near_the_limit_does_not_crash_the_node() {
    init_tracing();
    let a = start("us-1", "us", &[]).await;
    let b = start("eu-1", "eu", &[a.local_addr()]).await;

    phase("two nodes form a cluster");
    for node in [&a, &b] {
        wait_for(node, Duration::from_secs(5), "membership of 2", |m| exactly_live(m, &["us-1", "eu-1"]))
            .await;
    }

    phase("a forged ACK pushes us-1's own version counter to u64::MAX - 1");
    let attacker = UdpSocket::bind(any_port()).await.unwrap();
    let top = u64::MAX - 1;
    let forged =
        wire::forged_ack("us-1", a.generation(), v4(a.local_addr()), &[(keys::REGION, "forged", top)], top);
    attacker.send_to(&forged, a.local_addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    phase("updating us-1 neither panics nor stops its membership view (the update cannot be published)");
    a.update(|f| f.load = 77).await;
    b.update(|f| f.load = 6).await;
    wait_for(&a, Duration::from_secs(3), "us-1 still hears eu-1", |m| {
        m.get("eu-1").is_some_and(|e| e.facts.load == 6)
    })
    .await;
    assert!(exactly_live(&a.membership(), &["us-1", "eu-1"]));
    assert!(exactly_live(&b.membership(), &["us-1", "eu-1"]));
}
