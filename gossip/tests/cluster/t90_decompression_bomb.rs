//! Measures chitchat's cost of one compressed-block "bomb" datagram (see the README's threat
//! notes). Ignored by default: at full size a single datagram makes the receiver allocate
//! gigabytes. Run with
//! `GOSSIP_BOMB_BLOCKS=1170 cargo test -p meridian-gossip --test cluster -- --ignored --nocapture`.

use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::support::*;
use crate::wire;

/// Blocks that fit in one maximum-size datagram (14 bytes each).
const FULL_SIZE_BLOCKS: usize = (65_507 - 5) / 14;

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or("VmHWM: 0 kB");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[tokio::test]
#[ignore = "allocates hundreds of MB to GBs; run by hand to measure"]
async fn one_bomb_datagram_cost() {
    init_tracing();
    let blocks: usize =
        std::env::var("GOSSIP_BOMB_BLOCKS").ok().and_then(|v| v.parse().ok()).unwrap_or(FULL_SIZE_BLOCKS);
    let a = start("us-1", "us", &[]).await;
    let b = start("eu-1", "eu", &[a.local_addr()]).await;
    for node in [&a, &b] {
        wait_for(node, Duration::from_secs(5), "membership of 2", |m| exactly_live(m, &["us-1", "eu-1"]))
            .await;
    }

    phase("one bomb datagram to us-1; measure peak memory and us-1's stall");
    let datagram = wire::rle_bomb(blocks, 2);
    let before = peak_rss_kib();
    let attacker = UdpSocket::bind(any_port()).await.unwrap();
    attacker.send_to(&datagram, a.local_addr()).await.unwrap();
    let sent = Instant::now();
    // The decode runs inside us-1's chitchat task; an update needs its lock round trip.
    a.update(|f| f.load = 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = peak_rss_kib();
    eprintln!(
        "    {} byte datagram, {blocks} blocks ({} MB inflated): peak RSS {} -> {} MiB, \
         update returned after {:?}",
        datagram.len(),
        blocks * 65_535 / 1_000_000,
        before / 1024,
        after / 1024,
        sent.elapsed()
    );
    wait_for(&b, Duration::from_secs(5), "us-1 still alive", |m| m.get("us-1").is_some_and(|u| u.live)).await;
}
