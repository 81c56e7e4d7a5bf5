//! Five nodes across three regions (us, us, eu, eu, ap) bootstrapped with `--expect 5`: at most
//! five voters spread over every region; a sixth node started later joins as a learner and
//! applies the current routing table.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use meridian_tests::*;

fn table(ups: &[(&str, &Upstream)], tag: &str) -> Value {
    let mut endpoints = serde_json::Map::new();
    for (region, up) in ups {
        endpoints.insert(region.to_string(), json!([up.url()]));
    }
    json!({
        "services": { "echo": { "endpoints": endpoints, "timeout_ms": 3000, "retries": 2 } },
        "routes": [
            { "name": "all", "path_prefix": "/", "service": "echo" },
            { "name": tag, "path_prefix": format!("/{tag}"), "service": "echo" }
        ]
    })
}

#[test]
fn five_nodes_in_three_regions_then_a_sixth_joins_as_learner() {
    let dir = TempDir::new("t72");
    let tls = make_certs(dir.path(), "tls", &["n1", "n2", "n3", "n4", "n5", "n6"]);
    let us = Upstream::start("us-up", dir.path());
    let eu = Upstream::start("eu-up", dir.path());
    let ap = Upstream::start("ap-up", dir.path());
    let ups = [("us", &us), ("eu", &eu), ("ap", &ap)];
    let mut spec = ClusterSpec::new(&dir, &tls, &table(&ups, "seed"), 5);
    // Short enough for the autopilot phase at the end; long enough that nothing is replaced
    // while the cluster forms.
    spec.extra = vec!["--voter-dead-after-ms".into(), "3000".into()];
    let layout = [("n1", "us"), ("n2", "us"), ("n3", "eu"), ("n4", "eu"), ("n5", "ap")];

    phase("five nodes (us, us, eu, eu, ap) with --expect 5 form one cluster, all ready");
    let t0 = Instant::now();
    let first = spec.start(layout[0].0, layout[0].1, &[]);
    let seed = first.gossip;
    let mut nodes = vec![first];
    for (id, region) in &layout[1..] {
        nodes.push(spec.start(id, region, &[seed]));
    }
    let refs: Vec<&ClusterNode> = nodes.iter().collect();
    let leader = wait_cluster_ready(&refs, Duration::from_secs(15));
    eprintln!("5-node cluster formed and ready in {:?} (leader {leader})", t0.elapsed());

    phase("at most 5 voters, every region represented among them, all at routing v1");
    let region_of = |id: &str| layout.iter().find(|(i, _)| *i == id).map(|(_, r)| *r).unwrap_or("?");
    for n in &nodes {
        let c = n.cluster();
        let voters = ids(&c["raft"]["voters"]);
        let learners = ids(&c["raft"]["learners"]);
        assert!(!voters.is_empty() && voters.len() <= 5, "{}: voters {voters:?}", n.id);
        let regions: BTreeSet<&str> = voters.iter().map(|v| region_of(v)).collect();
        assert_eq!(regions, BTreeSet::from(["ap", "eu", "us"]), "{}: voters {voters:?} miss a region", n.id);
        let mut all: Vec<String> = voters.iter().chain(&learners).cloned().collect();
        all.sort();
        assert_eq!(all, ["n1", "n2", "n3", "n4", "n5"], "{}: every node is in the group", n.id);
        assert_eq!(c["raft"]["leader"], leader.as_str());
        assert_eq!(c["routing"]["version"], 1, "{}: {c}", n.id);
    }
    eventually(
        Duration::from_secs(5),
        || {
            nodes.iter().all(|n| {
                let c = n.cluster();
                let m = c["members"].as_array().cloned().unwrap_or_default();
                m.len() == 5
                    && m.iter().all(|m| {
                        m["live"] == true && m["region"] == region_of(m["id"].as_str().unwrap_or(""))
                    })
            })
        },
        "every node lists 5 live members with their regions",
    );

    phase("a write commits and reaches all five");
    let r = nodes[4].put_routes(&table(&ups, "second").to_string(), Some(1));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 2);
    let refs: Vec<&ClusterNode> = nodes.iter().collect();
    let took = wait_all_at_version(&refs, 2, Duration::from_secs(5));
    eprintln!("v2 applied on all five {took:?} after commit");

    phase("a sixth node started later joins as a learner within 10 s and applies v2");
    let t0 = Instant::now();
    let n6 = spec.start("n6", "us", &[nodes[2].gossip]);
    let mut learner_after = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let (voters, learners) = nodes[0].raft_members();
        if learners.contains(&"n6".to_string()) {
            learner_after = Some(t0.elapsed());
            break;
        }
        assert!(!voters.contains(&"n6".to_string()), "n6 became a voter: {voters:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let learner_after =
        learner_after.unwrap_or_else(|| panic!("n6 not a learner after 10 s: {:?}", nodes[0].raft_members()));
    eventually(Duration::from_secs(10).saturating_sub(t0.elapsed()), || n6.is_ready(), "n6 ready");
    wait_all_at_version(&[&n6], 2, Duration::from_secs(10).saturating_sub(t0.elapsed()));
    eprintln!("n6: learner after {learner_after:?}, ready and at v2 after {:?}", t0.elapsed());
    let routes = n6.admin_get("/routes").json();
    assert_eq!(routes["table"], nodes[0].admin_get("/routes").json()["table"]);

    phase("the group now has 6 members, still at most 5 voters spanning every region");
    let region_of6 = |id: &str| if id == "n6" { "us" } else { region_of(id) };
    let mut all_nodes: Vec<&ClusterNode> = nodes.iter().collect();
    all_nodes.push(&n6);
    for n in &all_nodes {
        let (voters, learners) = n.raft_members();
        assert!(voters.len() <= 5, "{}: {voters:?}", n.id);
        let regions: BTreeSet<&str> = voters.iter().map(|v| region_of6(v)).collect();
        assert_eq!(regions.len(), 3, "{}: voters {voters:?}", n.id);
        let mut all: Vec<String> = voters.iter().chain(&learners).cloned().collect();
        all.sort();
        assert_eq!(all, ["n1", "n2", "n3", "n4", "n5", "n6"], "{}", n.id);
        assert!(learners.contains(&"n6".to_string()), "{}: n6 stays a learner: {learners:?}", n.id);
    }
    let c = n6.cluster();
    assert_eq!(c["raft"]["role"], "learner", "{c}");
    assert_eq!(c["raft"]["leader"], leader.as_str(), "{c}");

    phase("a write made through the learner commits everywhere");
    let r = n6.put_routes(&table(&ups, "third").to_string(), Some(2));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 3);
    wait_all_at_version(&all_nodes, 3, Duration::from_secs(5));
    for n in &all_nodes {
        assert!(!n.panicked(), "{}:\n{}", n.id, n.stderr_tail(40));
    }

    phase("autopilot: a voter dead for --voter-dead-after-ms is replaced by the live learner");
    let (voters, _) = nodes[0].raft_members();
    let victim_id = voters
        .iter()
        .find(|v| v.as_str() != leader && v.as_str() != "n6")
        .cloned()
        .expect("a voter that is not the leader");
    let victim = nodes.iter().position(|n| n.id == victim_id).expect("victim node");
    let dead = nodes.remove(victim);
    let t0 = Instant::now();
    dead.proc.signal(9);
    let survivors: Vec<&ClusterNode> = nodes.iter().chain(std::iter::once(&n6)).collect();
    let mut replaced_after = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let (voters, _) = survivors[0].raft_members();
        if voters.contains(&"n6".to_string()) && !voters.contains(&victim_id) {
            replaced_after = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let replaced_after = replaced_after.unwrap_or_else(|| {
        panic!("{victim_id} not replaced by n6 after 15 s: {:?}", survivors[0].raft_members())
    });
    eprintln!("dead voter {victim_id} replaced by n6 after {replaced_after:?}");
    let (voters, _) = survivors[0].raft_members();
    assert!(voters.len() <= 5, "{voters:?}");
    assert!(
        replaced_after >= Duration::from_millis(2500),
        "replaced before --voter-dead-after-ms: {replaced_after:?}"
    );

    phase("the group with its new voter commits a write");
    let r = survivors[1].put_routes(&table(&ups, "fourth").to_string(), Some(3));
    assert_eq!(r.status, 200, "{}", r.text());
    wait_all_at_version(&survivors, 4, Duration::from_secs(5));
}
