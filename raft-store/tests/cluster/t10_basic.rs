//! A 3-node group: bootstrap, replicate, refuse writes off the leader, version checks,
//! rollback, history.

use std::time::Duration;

use meridian_raft_store::Command;
use meridian_raft_store::CommandResult;
use meridian_raft_store::ProposeError;
use meridian_raft_store::RaftRole;
use meridian_raft_store::MAX_TABLE_BYTES;

use crate::support::put;
use crate::support::wait_until;
use crate::support::wait_version;
use crate::support::Cluster;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_check_versions_and_roll_back() {
    let mut c = Cluster::new("basic", &["us-1", "eu-1", "ap-1"]);
    let ids = ["us-1", "eu-1", "ap-1"];

    eprintln!("--- bootstrap: three voters elect one leader");
    let started = tokio::time::Instant::now();
    let leader_id = c.start().await;
    eprintln!("leader {leader_id} elected in {:?}", started.elapsed());
    for id in ids {
        assert!(c.store(id).is_initialized().await, "{id} initialized");
        assert!(c.store(id).applied().borrow().is_none(), "no table before the first put");
    }
    let leader = c.store(&leader_id).clone();
    let follower_id = *ids.iter().find(|id| **id != leader_id).unwrap();
    let follower = c.store(follower_id).clone();

    eprintln!("--- a put on the leader commits version 1 on all three");
    let result = leader.propose(put(r#"{"v":1}"#, Some(0))).await.unwrap();
    assert_eq!(result, CommandResult::Committed { version: 1 });
    for id in ids {
        let t = wait_version(c.store(id), 1, WAIT).await;
        assert_eq!(&*t.table_json, r#"{"v":1}"#);
        assert_eq!(t.by_node, "test");
    }

    eprintln!("--- a put on a follower is refused with the leader's identity");
    match follower.propose(put(r#"{"v":"x"}"#, None)).await {
        Err(ProposeError::NotLeader { leader: Some((id, node)) }) => {
            assert_eq!(id, leader.raft_id());
            assert_eq!(node, *leader.node());
        }
        other => panic!("expected NotLeader with the leader, got {other:?}"),
    }

    eprintln!("--- a stale expected_version is a Conflict and changes nothing");
    let result = leader.propose(put(r#"{"v":"stale"}"#, Some(0))).await.unwrap();
    assert_eq!(result, CommandResult::Conflict { current: 1 });
    // The refusal went through the log: once a later write lands everywhere, the refusal did too.
    let result = leader.propose(put(r#"{"v":2}"#, Some(1))).await.unwrap();
    assert_eq!(result, CommandResult::Committed { version: 2 });
    for id in ids {
        assert_eq!(&*wait_version(c.store(id), 2, WAIT).await.table_json, r#"{"v":2}"#);
    }

    eprintln!("--- rollback re-commits an old table as a new version; unknown versions are refused");
    let rollback = Command::Rollback { to: 1, by_node: "us-1".into(), at_ms: 5 };
    assert_eq!(leader.propose(rollback).await.unwrap(), CommandResult::Committed { version: 3 });
    let unknown = Command::Rollback { to: 42, by_node: "us-1".into(), at_ms: 6 };
    assert_eq!(leader.propose(unknown).await.unwrap(), CommandResult::UnknownVersion(42));
    for id in ids {
        let t = wait_version(c.store(id), 3, WAIT).await;
        assert_eq!(&*t.table_json, r#"{"v":1}"#);
        assert_eq!(t.cause, "rollback to v1");
    }

    eprintln!("--- history is newest first and the same on every node; status is consistent");
    for id in ids {
        let s = c.store(id);
        let versions: Vec<u64> = s.history().iter().map(|t| t.version).collect();
        assert_eq!(versions, vec![3, 2, 1], "{id} history");
        let expected = if id == leader_id { RaftRole::Leader } else { RaftRole::Follower };
        // The status view follows openraft's metrics asynchronously.
        wait_until("status to settle", WAIT, || {
            let st = s.status();
            st.role == expected && st.applied_index.is_some() && st.applied_index == st.commit_index
        })
        .await;
        let status = s.status();
        assert_eq!(status.voters.len(), 3);
        assert!(status.learners.is_empty());
        assert_eq!(status.leader, Some(leader.raft_id()));
        assert_eq!(status.leader_node.as_ref(), Some(leader.node()));
    }

    eprintln!("--- an oversized table is refused before it reaches the log");
    let huge = "x".repeat(MAX_TABLE_BYTES + 1);
    match leader.propose(put(&huge, None)).await {
        Err(ProposeError::TooLarge { bytes, limit }) => {
            assert_eq!((bytes, limit), (MAX_TABLE_BYTES + 1, MAX_TABLE_BYTES))
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }

    c.shutdown().await;
}
