//! `handle_rpc` answers garbage with an encoded rejection and keeps serving.

use std::collections::BTreeMap;
use std::time::Duration;

use bincode::Options;
use meridian_raft_store::MemTransport;
use meridian_raft_store::RaftConfig;
use meridian_raft_store::RaftRequest;
use meridian_raft_store::RaftResponse;
use meridian_raft_store::RaftRole;
use meridian_raft_store::RaftStore;
use openraft::raft::VoteRequest;
use openraft::Vote;

use crate::support::node;
use crate::support::put;
use crate::support::wait_until;
use crate::support::TestDir;

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_limit(meridian_raft_store::MAX_MESSAGE_BYTES).reject_trailing_bytes()
}

fn decode(bytes: &[u8]) -> RaftResponse {
    options().deserialize(bytes).expect("every reply decodes")
}

fn encode(request: &RaftRequest) -> Vec<u8> {
    options().serialize(request).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_an_error_reply() {
    let dir = TestDir::new("malformed");
    let store =
        RaftStore::open(RaftConfig::new(node("us-1"), dir.path()), MemTransport::new().endpoint("us-1"))
            .await
            .unwrap();
    store.initialize(BTreeMap::from([(node("us-1").raft_id(), node("us-1"))])).await.unwrap();
    wait_until("single node leads", Duration::from_secs(5), || store.status().role == RaftRole::Leader).await;

    eprintln!("--- empty, random, oversized-length and trailing-byte requests are rejected");
    let vote = RaftRequest::Vote(VoteRequest::new(Vote::new(1, node("eu-1").raft_id()), None));
    let valid_vote = encode(&vote);
    let mut trailing = valid_vote.clone();
    trailing.push(7);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("unknown variant", vec![0xff; 16]),
        ("pseudo-random", (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()),
        ("invalid varint", vec![0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
        ("trailing bytes", trailing),
    ];
    for (what, bytes) in cases {
        match decode(&store.handle_rpc(&bytes).await) {
            RaftResponse::Rejected(why) => eprintln!("{what}: rejected ({why})"),
            other => panic!("{what}: expected Rejected, got {other:?}"),
        }
    }

    eprintln!("--- a well-formed request still gets a real answer");
    match decode(&store.handle_rpc(&valid_vote).await) {
        // A vote from a node outside the membership, at an old term: refused, but answered.
        RaftResponse::Vote(Ok(reply)) => assert!(!reply.vote_granted),
        other => panic!("expected a vote reply, got {other:?}"),
    }

    eprintln!("--- the node still serves and commits afterwards");
    assert_eq!(store.status().role, RaftRole::Leader);
    store.propose(put("{}", None)).await.unwrap();
    store.shutdown().await;
}
