//! Losing the leader: the others elect a new one and keep committing; the old leader rejoins
//! as a follower and catches up.

use std::time::Duration;

use meridian_raft_store::CommandResult;
use meridian_raft_store::ProposeError;
use meridian_raft_store::RaftStore;
use tokio::time::Instant;

use crate::support::put;
use crate::support::wait_version;
use crate::support::Cluster;

const WAIT: Duration = Duration::from_secs(5);

/// Proposes on whichever of `among` leads until one commits; returns the committing node.
async fn commit_somewhere(
    c: &Cluster,
    among: &[&str],
    json: &str,
    within: Duration,
) -> (String, CommandResult) {
    let start = Instant::now();
    loop {
        for id in among {
            let store: &RaftStore = c.store(id);
            match store.propose_within(put(json, None), Duration::from_millis(500)).await {
                Ok(result) => return (id.to_string(), result),
                Err(ProposeError::NotLeader { .. } | ProposeError::NoQuorum) => {}
                Err(e) => panic!("unexpected propose error on {id}: {e}"),
            }
        }
        assert!(start.elapsed() < within, "no commit among {among:?} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_commits_after_the_old_one_is_lost() {
    let ids = ["us-1", "eu-1", "ap-1"];
    let mut c = Cluster::new("failover", &ids);
    let first = c.start().await;
    assert_eq!(
        c.store(&first).propose(put("v1", None)).await.unwrap(),
        CommandResult::Committed { version: 1 }
    );

    eprintln!("--- leader {first} is cut off: the other two elect a leader and commit");
    let rest: Vec<&str> = ids.iter().copied().filter(|id| *id != first).collect();
    let cut_at = Instant::now();
    c.net.cut_off(&first);
    let second = c.wait_leader(&rest, WAIT).await;
    let elected = cut_at.elapsed();
    let (committer, result) = commit_somewhere(&c, &rest, "v2", WAIT).await;
    assert_eq!(result, CommandResult::Committed { version: 2 });
    eprintln!(
        "new leader {second} elected {elected:?} after the cut, first commit (on {committer}) after {:?}",
        cut_at.elapsed()
    );
    // LAN timings: 300-600 ms election timeout; a few timeouts at most.
    assert!(cut_at.elapsed() < Duration::from_secs(3), "failover took {:?}", cut_at.elapsed());

    eprintln!("--- the old leader reconnects, follows the new leader and catches up");
    c.net.reconnect(&first);
    wait_version(c.store(&first), 2, WAIT).await;
    let all: Vec<&str> = ids.to_vec();
    let leader = c.wait_leader(&all, WAIT).await;

    eprintln!("--- leader {leader} is shut down: the remaining two elect a leader and commit");
    let down_at = Instant::now();
    c.stop(&leader).await;
    let rest: Vec<&str> = ids.iter().copied().filter(|id| *id != leader).collect();
    let third = c.wait_leader(&rest, WAIT).await;
    let (_, result) = commit_somewhere(&c, &rest, "v3", WAIT).await;
    assert_eq!(result, CommandResult::Committed { version: 3 });
    eprintln!("leader {third} elected and committed {:?} after the shutdown", down_at.elapsed());
    for id in &rest {
        wait_version(c.store(id), 3, WAIT).await;
    }

    c.shutdown().await;
}
