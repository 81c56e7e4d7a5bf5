//! The quota ledger as replicated state: every node applies the same rounds to the same ledger, a
//! restarted node reloads it from disk, and a node that fell behind the log gets it in a snapshot.

use std::time::Duration;

use meridian_raft_store::quota::DemandReport;
use meridian_raft_store::quota::KeyDemand;
use meridian_raft_store::quota::Lease;
use meridian_raft_store::quota::QuotaTerms;
use meridian_raft_store::Command;
use meridian_raft_store::CommandResult;
use meridian_raft_store::RaftStore;

use crate::support::wait_until;
use crate::support::Cluster;

const WAIT: Duration = Duration::from_secs(10);
const T0: u64 = 1_800_000_000_000;

fn round(at_ms: u64, demand: [u64; 3]) -> Command {
    let ids = ["us-1", "eu-1", "ap-1"];
    Command::QuotaRound {
        at_ms,
        terms: vec![QuotaTerms { name: "q".into(), limit: 100, window_ms: 1000 }],
        reports: ids
            .iter()
            .zip(demand)
            .map(|(id, d)| DemandReport {
                node: id.to_string(),
                demands: vec![KeyDemand { quota: "q".into(), key: "hot".into(), demand: d }],
                counts: Vec::new(),
            })
            .collect(),
    }
}

/// The leases of `node` for the hot key and a cold key in window `w`, as `store` has applied them.
fn leases(store: &RaftStore, w: u64) -> Vec<Lease> {
    let ledger = store.quota().borrow().clone();
    ["us-1", "eu-1", "ap-1"]
        .iter()
        .flat_map(|n| [ledger.lease("q", "hot", n, w), ledger.lease("q", "cold", n, w)])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_is_replicated_persisted_and_snapshotted() {
    let ids = ["us-1", "eu-1", "ap-1"];
    let mut c = Cluster::new("quota", &ids);
    c.snapshot_every = 10;
    let leader_id = c.start().await;
    let leader = c.store(&leader_id).clone();

    eprintln!("--- rounds with uneven demand: every node holds the same leases");
    let mut at = T0;
    for _ in 0..6 {
        at += 250;
        assert_eq!(leader.propose(round(at, [400, 200, 100])).await.unwrap(), CommandResult::QuotaRound);
    }
    let w = at / 1000 + 1;
    let expect = leases(&leader, w);
    let Lease::Share { share: us, hot: true } = expect[0] else { panic!("hot lease: {expect:?}") };
    assert!(us > 50, "the busiest node's share follows demand: {us}");
    for id in ids {
        wait_until("the same leases everywhere", WAIT, || leases(c.store(id), w) == expect).await;
    }

    eprintln!("--- a restarted node reloads the ledger from its file before hearing from anyone");
    let restarted = *ids.iter().find(|id| **id != leader_id).unwrap();
    c.stop(restarted).await;
    let reopened = c.open(restarted).await;
    assert_eq!(leases(&reopened, w), expect, "ledger reloaded from disk");

    eprintln!("--- a node cut off past a snapshot catches up by installing it, ledger included");
    c.net.cut_off(restarted);
    for _ in 0..30 {
        at += 250;
        leader.propose(round(at, [100, 100, 500])).await.unwrap();
    }
    let w2 = at / 1000 + 1;
    wait_until("leader snapshotted", WAIT, || leader.status().purged_index.is_some()).await;
    let expect2 = leases(&leader, w2);
    c.net.reconnect(restarted);
    wait_until("the cut-off node has the new leases", WAIT, || leases(c.store(restarted), w2) == expect2)
        .await;
    let Lease::Share { share: ap, .. } = expect2[4] else { panic!("{expect2:?}") };
    assert!(ap > 50, "shares followed the new demand: {expect2:?}");
    c.shutdown().await;
}
