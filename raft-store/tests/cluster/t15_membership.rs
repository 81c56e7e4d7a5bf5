//! Membership: a new node joins as a learner and catches up, is promoted to voter, and a
//! demoted voter stays on as a learner until removed.

use std::collections::BTreeSet;
use std::time::Duration;

use meridian_raft_store::CommandResult;
use meridian_raft_store::ProposeError;

use crate::support::node;
use crate::support::put;
use crate::support::wait_until;
use crate::support::wait_version;
use crate::support::Cluster;

const WAIT: Duration = Duration::from_secs(5);

fn ids_of(nodes: &[meridian_raft_store::MeridianNode]) -> BTreeSet<String> {
    nodes.iter().map(|n| n.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learners_join_catch_up_and_become_voters() {
    let ids = ["us-1", "eu-1", "ap-1", "sa-1"];
    let mut c = Cluster::new("membership", &ids);
    // Bootstrap only the first three; sa-1 opens later as a blank node.
    let leader_id = {
        let voters = ["us-1", "eu-1", "ap-1"];
        for id in voters {
            c.open(id).await;
        }
        let map = voters.iter().map(|id| (node(id).raft_id(), node(id))).collect();
        c.store("ap-1").initialize(map).await.unwrap();
        c.wait_leader(&voters, WAIT).await
    };
    let leader = c.store(&leader_id).clone();
    assert_eq!(leader.propose(put("v1", None)).await.unwrap(), CommandResult::Committed { version: 1 });

    eprintln!("--- sa-1 joins as a learner and catches up");
    let joiner = c.open("sa-1").await;
    assert!(!joiner.is_initialized().await);
    leader.add_learner(node("sa-1")).await.unwrap();
    wait_version(&joiner, 1, WAIT).await;
    wait_until("leader lists the learner", WAIT, || ids_of(&leader.status().learners).contains("sa-1")).await;
    match joiner.propose(put("x", None)).await {
        Err(ProposeError::NotLeader { leader: Some((id, _)) }) => assert_eq!(id, leader.raft_id()),
        other => panic!("expected NotLeader from the learner, got {other:?}"),
    }

    eprintln!("--- a follower cannot change membership; the leader refuses unknown voters");
    let follower_id = *ids[..3].iter().find(|id| **id != leader_id).unwrap();
    assert!(matches!(
        c.store(follower_id).add_learner(node("xx-9")).await,
        Err(ProposeError::NotLeader { leader: Some(_) })
    ));
    let unknown: BTreeSet<u64> = [leader.raft_id(), node("xx-9").raft_id()].into();
    assert!(matches!(leader.change_voters(unknown).await, Err(ProposeError::Membership(_))));

    eprintln!("--- sa-1 replaces follower {follower_id} as a voter; {follower_id} stays a learner");
    let voters: BTreeSet<u64> =
        ids.iter().filter(|id| **id != follower_id).map(|id| node(id).raft_id()).collect();
    leader.change_voters(voters).await.unwrap();
    wait_until("membership applied on the leader", WAIT, || {
        let s = leader.status();
        !ids_of(&s.voters).contains(follower_id)
            && ids_of(&s.learners) == BTreeSet::from([follower_id.to_string()])
    })
    .await;
    assert_eq!(leader.propose(put("v2", Some(1))).await.unwrap(), CommandResult::Committed { version: 2 });
    for id in ids {
        wait_version(c.store(id), 2, WAIT).await;
    }

    eprintln!("--- the demoted node is removed from the group");
    leader.remove_learners([node(follower_id).raft_id()].into()).await.unwrap();
    wait_until("learner removed", WAIT, || leader.status().learners.is_empty()).await;
    assert_eq!(leader.status().voters.len(), 3);

    c.shutdown().await;
}
