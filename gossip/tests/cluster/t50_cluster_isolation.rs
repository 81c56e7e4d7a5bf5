//! A node configured with another cluster id never joins, even when seeded with our address.

use std::time::Duration;

use meridian_gossip::Gossip;

use crate::support::*;

#[tokio::test]
async fn a_node_of_another_cluster_does_not_join() {
    init_tracing();
    let a = start("us-1", "us", &[]).await;

    phase("a stranger from another cluster seeds itself with us-1; a member does the same");
    let stranger_cfg = config("xx-1", "other-cluster", any_port(), &[a.local_addr()]);
    let stranger = Gossip::start(stranger_cfg, facts("xx", "xx-1")).await.unwrap();
    let b = start("eu-1", "eu", &[a.local_addr()]).await;

    phase("the member joins (so the stranger had the same chance)");
    wait_for(&a, Duration::from_secs(5), "eu-1 joins", |m| exactly_live(m, &["us-1", "eu-1"])).await;
    wait_for(&b, Duration::from_secs(5), "eu-1 sees us-1", |m| exactly_live(m, &["us-1", "eu-1"])).await;

    phase("after many rounds the stranger is in nobody's view, and sees nobody");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for node in [&a, &b] {
        let m = node.membership();
        assert!(m.get("xx-1").is_none(), "{m:#?}");
        assert_eq!(m.members.len(), 2);
    }
    let m = stranger.membership();
    assert_eq!(m.members.keys().collect::<Vec<_>>(), ["xx-1"], "{m:#?}");
}
