//! Garbage on the gossip port neither crashes nor disturbs a node.

use std::time::Duration;

use tokio::net::UdpSocket;

use crate::support::*;
use crate::wire::{self, Garbage};

/// Largest UDP payload over IPv4, and chitchat's receive buffer size.
const MAX_DATAGRAM: usize = 65_507;

#[tokio::test]
async fn garbage_datagrams_do_not_disturb_the_node() {
    init_tracing();
    let a = start("us-1", "us", &[]).await;
    let b = start("eu-1", "eu", &[a.local_addr()]).await;

    phase("two nodes form a cluster");
    for node in [&a, &b] {
        wait_for(node, Duration::from_secs(5), "membership of 2", |m| exactly_live(m, &["us-1", "eu-1"]))
            .await;
    }
    let before = a.membership();

    phase("us-1's port receives random datagrams of every size up to the UDP maximum");
    let attacker = UdpSocket::bind(any_port()).await.unwrap();
    let target = a.local_addr();
    let mut garbage = Garbage::new(0x5EED);
    let mut sent = 0usize;
    for i in 0..600 {
        let len = match i % 6 {
            0 => 0,
            1 => (garbage.next_u64() % 4) as usize,
            2 => (garbage.next_u64() % 1500) as usize,
            _ => (garbage.next_u64() % 9000) as usize,
        };
        attacker.send_to(&garbage.bytes(len), target).await.unwrap();
        sent += 1;
    }
    for _ in 0..20 {
        attacker.send_to(&garbage.bytes(MAX_DATAGRAM), target).await.unwrap();
        sent += 1;
    }
    // Beyond the maximum the kernel refuses to send; nothing can reach the node.
    assert!(attacker.send_to(&garbage.bytes(MAX_DATAGRAM + 1), target).await.is_err());
    eprintln!("    sent {sent} random datagrams");

    phase("us-1's port receives datagrams with a valid chitchat header and a broken body");
    for message_type in [wire::SYN, wire::SYN_ACK, wire::ACK, wire::BAD_CLUSTER, 7, 255] {
        for body_len in [0usize, 1, 2, 9, 64, 4096, MAX_DATAGRAM - 4] {
            let mut datagram = wire::header(message_type);
            datagram.extend(garbage.bytes(body_len));
            attacker.send_to(&datagram, target).await.unwrap();
        }
    }
    // A valid header with an unknown protocol version.
    attacker.send_to(&[0x53, 0xB0, 9, 0, 0, 0], target).await.unwrap();
    // A small compressed-block stream that inflates ~75x and then fails to decode.
    attacker.send_to(&wire::rle_bomb(8, 2), target).await.unwrap();

    phase("the cluster still works: both nodes live, no phantom members, updates flow");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for node in [&a, &b] {
        assert!(exactly_live(&node.membership(), &["us-1", "eu-1"]), "{:#?}", node.membership());
    }
    assert_eq!(a.membership().members.keys().collect::<Vec<_>>(), before.members.keys().collect::<Vec<_>>());
    b.update(|f| f.load = 42).await;
    wait_for(&a, Duration::from_secs(3), "update from eu-1", |m| {
        m.get("eu-1").is_some_and(|e| e.facts.load == 42)
    })
    .await;

    phase("a new node can still join through the node that was attacked");
    let c = start("ap-1", "ap", &[a.local_addr()]).await;
    for node in [&a, &b, &c] {
        wait_for(node, Duration::from_secs(5), "membership of 3", |m| {
            exactly_live(m, &["us-1", "eu-1", "ap-1"])
        })
        .await;
    }
}
