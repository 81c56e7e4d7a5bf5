//! Restarting a node from its data dir: the applied table is back before it hears from anyone,
//! and it catches up on what it missed.

use std::time::Duration;

use meridian_raft_store::CommandResult;
use tokio::time::Instant;

use crate::support::put;
use crate::support::wait_version;
use crate::support::Cluster;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_has_its_table_at_once_and_catches_up() {
    let ids = ["us-1", "eu-1", "ap-1"];
    let mut c = Cluster::new("restart", &ids);
    let leader_id = c.start().await;
    let leader = c.store(&leader_id).clone();
    for v in 1..=2 {
        let result = leader.propose(put(&format!("v{v}"), None)).await.unwrap();
        assert_eq!(result, CommandResult::Committed { version: v });
    }
    let victim = *ids.iter().find(|id| **id != leader_id).unwrap();
    wait_version(c.store(victim), 2, WAIT).await;

    eprintln!("--- follower {victim} stops; the others commit versions 3 and 4 without it");
    c.stop(victim).await;
    for v in 3..=4 {
        let result = leader.propose(put(&format!("v{v}"), None)).await.unwrap();
        assert_eq!(result, CommandResult::Committed { version: v });
    }

    eprintln!("--- {victim} reopens from disk: version 2 is applied before it talks to anyone");
    let opened_at = Instant::now();
    let store = c.open(victim).await;
    let applied = store.applied().borrow().clone().expect("table restored from disk");
    eprintln!("reopened in {:?} with version {}", opened_at.elapsed(), applied.version);
    assert_eq!(applied.version, 2);
    assert_eq!(&*applied.table_json, "v2");
    let versions: Vec<u64> = store.history().iter().map(|t| t.version).collect();
    assert_eq!(versions, vec![2, 1]);
    let audited: Vec<u64> = store.audit().records().map(|r| r.to_version).collect();
    assert_eq!(audited, vec![1, 2], "the audit trail is restored from disk too");

    eprintln!("--- {victim} catches up on versions 3 and 4 from the leader");
    let t = wait_version(&store, 4, WAIT).await;
    assert_eq!(&*t.table_json, "v4");
    eprintln!("caught up {:?} after reopening", opened_at.elapsed());
    let versions: Vec<u64> = store.history().iter().map(|t| t.version).collect();
    assert_eq!(versions, vec![4, 3, 2, 1]);
    let audit = store.audit();
    let audited: Vec<(u64, u64)> = audit.records().map(|r| (r.seq, r.to_version)).collect();
    assert_eq!(audited, vec![(1, 1), (2, 2), (3, 3), (4, 4)]);
    assert_eq!(audit.verify(), meridian_raft_store::audit::ChainCheck::Intact);
    let leader_audit = leader.audit();
    let same = leader_audit.records().zip(audit.records()).all(|(a, b)| a == b);
    assert!(same, "every replica holds the same records, hashes included");

    eprintln!("--- the whole group restarts: every node comes back with version 4 and a leader");
    for id in ids {
        c.stop(id).await;
    }
    for id in ids {
        let s = c.open(id).await;
        assert_eq!(s.applied().borrow().as_ref().map(|t| t.version), Some(4), "{id} after full restart");
    }
    let leader_id = c.wait_leader(&ids, WAIT).await;
    let result = c.store(&leader_id).propose(put("v5", Some(4))).await.unwrap();
    assert_eq!(result, CommandResult::Committed { version: 5 });

    c.shutdown().await;
}
