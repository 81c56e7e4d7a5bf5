//! Snapshots: with a small `snapshot_every` the leader snapshots and purges its log, and a node
//! that fell behind the purge catches up by installing a snapshot, history included.

use std::time::Duration;

use meridian_raft_store::CommandResult;

use crate::support::put;
use crate::support::wait_until;
use crate::support::wait_version;
use crate::support::Cluster;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_catches_up_from_a_snapshot() {
    let ids = ["us-1", "eu-1", "ap-1"];
    let mut c = Cluster::new("snapshot", &ids);
    c.snapshot_every = 5;
    let leader_id = c.start().await;
    let leader = c.store(&leader_id).clone();
    assert_eq!(leader.propose(put("v1", None)).await.unwrap(), CommandResult::Committed { version: 1 });
    let lagging = *ids.iter().find(|id| **id != leader_id).unwrap();
    wait_version(c.store(lagging), 1, WAIT).await;

    eprintln!("--- {lagging} is cut off while 30 more versions commit; the leader snapshots and purges");
    c.net.cut_off(lagging);
    let behind = c.store(lagging).status().last_log_index.unwrap();
    for v in 2..=31 {
        let result = leader.propose(put(&format!("v{v}"), None)).await.unwrap();
        assert_eq!(result, CommandResult::Committed { version: v });
    }
    wait_until("leader purged past the lagging node's log", WAIT, || {
        let s = leader.status();
        s.snapshot_index.is_some() && s.purged_index.is_some_and(|p| p > behind)
    })
    .await;
    let s = leader.status();
    eprintln!(
        "leader snapshot at {:?}, purged up to {:?}; {lagging} stopped at log index {behind}",
        s.snapshot_index, s.purged_index
    );

    eprintln!("--- {lagging} reconnects and installs the leader's snapshot");
    let reconnect = tokio::time::Instant::now();
    c.net.reconnect(lagging);
    let t = wait_version(c.store(lagging), 31, WAIT).await;
    assert_eq!(&*t.table_json, "v31");
    eprintln!("caught up in {:?}", reconnect.elapsed());
    let status = c.store(lagging).status();
    assert!(status.snapshot_index.is_some_and(|i| i > behind), "installed a snapshot: {status:?}");
    let versions: Vec<u64> = c.store(lagging).history().iter().map(|t| t.version).collect();
    assert_eq!(versions, (1..=31).rev().collect::<Vec<_>>(), "history travels in the snapshot");
    let audit = c.store(lagging).audit();
    let seqs: Vec<u64> = audit.records().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=31).collect::<Vec<_>>(), "the audit trail travels in the snapshot");
    assert_eq!(audit.verify(), meridian_raft_store::audit::ChainCheck::Intact);

    eprintln!("--- {lagging} restarts from its installed snapshot and keeps following");
    c.stop(lagging).await;
    let store = c.open(lagging).await;
    assert_eq!(store.applied().borrow().as_ref().map(|t| t.version), Some(31));
    assert_eq!(store.audit().last_seq(), 31, "the installed snapshot's audit trail is on disk");
    assert_eq!(leader.propose(put("v32", Some(31))).await.unwrap(), CommandResult::Committed { version: 32 });
    wait_version(&store, 32, WAIT).await;

    c.shutdown().await;
}
