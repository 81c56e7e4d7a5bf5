//! Without a quorum a proposal answers NoQuorum within its bound instead of hanging.

use std::time::Duration;

use meridian_raft_store::CommandResult;
use meridian_raft_store::ProposeError;
use tokio::time::Instant;

use crate::support::put;
use crate::support::wait_version;
use crate::support::Cluster;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propose_without_quorum_is_bounded() {
    let ids = ["us-1", "eu-1", "ap-1"];
    let mut c = Cluster::new("noquorum", &ids);
    c.propose_timeout = Duration::from_secs(1);
    let leader_id = c.start().await;
    let leader = c.store(&leader_id).clone();
    assert_eq!(leader.propose(put("v1", None)).await.unwrap(), CommandResult::Committed { version: 1 });
    let followers: Vec<&str> = ids.iter().copied().filter(|id| *id != leader_id).collect();

    eprintln!("--- both followers are cut off: a put on the leader gives NoQuorum within its 1 s bound");
    for id in &followers {
        c.net.cut_off(id);
    }
    let start = Instant::now();
    let result = leader.propose(put("v2-maybe", Some(1))).await;
    let took = start.elapsed();
    eprintln!("propose without quorum answered {result:?} after {took:?}");
    assert_eq!(result, Err(ProposeError::NoQuorum));
    assert!(took >= Duration::from_secs(1) && took < Duration::from_millis(1500), "bounded: {took:?}");

    eprintln!("--- membership changes are bounded the same way");
    let start = Instant::now();
    let result = leader.add_learner(crate::support::node("sa-1")).await;
    assert_eq!(result, Err(ProposeError::NoQuorum));
    assert!(start.elapsed() < Duration::from_millis(1500));

    eprintln!("--- a cut-off follower refuses at once and names the leader it last knew");
    let start = Instant::now();
    match c.store(followers[0]).propose(put("x", None)).await {
        Err(ProposeError::NotLeader { .. }) => {}
        other => panic!("expected NotLeader, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_millis(500));

    eprintln!("--- after healing, the group converges and commits again");
    for id in &followers {
        c.net.reconnect(id);
    }
    let leader_id = c.wait_leader(&ids, WAIT).await;
    // The NoQuorum write may or may not have committed: NoQuorum means "unknown".
    let current = c.store(&leader_id).applied().borrow().as_ref().map_or(0, |t| t.version);
    let result = c.store(&leader_id).propose(put("after-heal", Some(current))).await.unwrap();
    assert_eq!(result, CommandResult::Committed { version: current + 1 });
    for id in ids {
        wait_version(c.store(id), current + 1, WAIT).await;
    }

    c.shutdown().await;
}
