//! A three-node cluster (regions us, us, eu) of real processes: gossip + Raft formation, routing
//! writes from a follower replicated everywhere, If-Match and validation refusals, history and
//! rollback from every node, Raft/gossip metrics, and a data plane that serves its own region.

use std::time::{Duration, Instant};

use meridian_tests::*;

/// The cluster's table: one service `echo` with one endpoint per region, `tag` marks the write.
fn table(us: &Upstream, eu: &Upstream, tag: &str) -> Value {
    json!({
        "services": {
            "echo": {
                "endpoints": { "us": [us.url()], "eu": [eu.url()] },
                "timeout_ms": 3000,
                "retries": 2
            }
        },
        "routes": [
            { "name": "all", "path_prefix": "/", "service": "echo" },
            { "name": tag, "path_prefix": format!("/{tag}"), "service": "echo" }
        ]
    })
}

fn route_names(table: &Value) -> Vec<String> {
    table["routes"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x["name"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Every node's `GET /routes`, checked to be at `version` with the same table; returns the table.
fn same_table_everywhere(nodes: &[&ClusterNode], version: u64) -> Value {
    let first = nodes[0].admin_get("/routes").json();
    assert_eq!(first["version"], version, "{}: {first}", nodes[0].id);
    for n in &nodes[1..] {
        let r = n.admin_get("/routes").json();
        assert_eq!(r["version"], version, "{}: {r}", n.id);
        assert_eq!(r["table"], first["table"], "{} serves another table at v{version}", n.id);
    }
    first["table"].clone()
}

#[test]
fn three_nodes_form_a_cluster_and_replicate_routing_writes() {
    let dir = TempDir::new("t70");
    let tls = make_certs(dir.path(), "tls", &["n1", "n2", "n3"]);
    let us = Upstream::start("us-up", dir.path());
    let eu = Upstream::start("eu-up", dir.path());
    let spec = ClusterSpec::new(&dir, &tls, &table(&us, &eu, "seed"), 3);

    phase("three nodes (us, us, eu) form a cluster and are all ready within 10 s");
    let t0 = Instant::now();
    let n1 = spec.start("n1", "us", &[]);
    let n2 = spec.start("n2", "us", &[n1.gossip]);
    let n3 = spec.start("n3", "eu", &[n1.gossip]);
    let nodes = [&n1, &n2, &n3];
    let leader = wait_cluster_ready(&nodes, Duration::from_secs(10).saturating_sub(t0.elapsed()));
    let formed = t0.elapsed();
    eprintln!("cluster formed and ready on all three nodes in {formed:?} (leader {leader})");
    assert!(formed < Duration::from_secs(10), "formation took {formed:?}");

    phase("each /cluster: 3 live members, one leader, 3 voters, no learners, same routing version");
    let all_ids = vec!["n1".to_string(), "n2".to_string(), "n3".to_string()];
    // Gossip facts (raft role, routing version) are republished every 250 ms: allow them to settle.
    eventually(
        Duration::from_secs(5),
        || {
            nodes.iter().all(|n| {
                let c = n.cluster();
                let members = c["members"].as_array().cloned().unwrap_or_default();
                members.len() == 3
                    && members.iter().all(|m| m["live"] == true && m["routing_version"] == 1)
                    && members.iter().filter(|m| m["raft_role"] == "leader").count() == 1
            })
        },
        "every node's members list shows 3 live members at v1 with one leader",
    );
    for n in nodes {
        let c = n.cluster();
        assert_eq!(c["node"]["id"], n.id.as_str(), "{c}");
        assert_eq!(c["node"]["region"], n.region.as_str(), "{c}");
        assert_eq!(c["raft"]["leader"], leader.as_str(), "{}: {c}", n.id);
        assert_eq!(ids(&c["raft"]["voters"]), all_ids, "{}: {c}", n.id);
        assert_eq!(ids(&c["raft"]["learners"]), Vec::<String>::new(), "{}: {c}", n.id);
        assert_eq!(c["raft"]["role"], if n.id == leader { "leader" } else { "follower" }, "{}: {c}", n.id);
        assert!(c["raft"]["term"].as_u64().is_some_and(|t| t >= 1), "{c}");
        assert_eq!(c["routing"]["version"], 1, "{}: {c}", n.id);
        let members = c["members"].as_array().expect("members");
        let leaders: Vec<&Value> = members.iter().filter(|m| m["raft_role"] == "leader").collect();
        assert_eq!(leaders[0]["id"], leader.as_str(), "{c}");
        for m in members {
            let region = if m["id"] == "n3" { "eu" } else { "us" };
            assert_eq!(m["region"], region, "{m}");
            assert_eq!(m["services"]["echo"]["total"], 1, "one local endpoint per region: {m}");
        }
    }
    let seed = same_table_everywhere(&nodes, 1);
    assert_eq!(route_names(&seed), ["all", "seed"], "the --routes file is version 1");

    phase("a PUT on a follower commits via the leader and is applied by all three within 2 s");
    let follower = nodes.iter().find(|n| n.id != leader).expect("a follower");
    let t0 = Instant::now();
    let r = follower.put_routes(&table(&us, &eu, "second").to_string(), None);
    let committed = t0.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 2, "{}", r.text());
    wait_all_at_version(&nodes, 2, Duration::from_secs(5));
    let applied = t0.elapsed();
    eprintln!(
        "write on follower {}: committed in {committed:?}, applied on all three in {applied:?}",
        follower.id
    );
    assert!(applied < Duration::from_secs(2), "applying on all nodes took {applied:?}");
    let v2 = same_table_everywhere(&nodes, 2);
    assert_eq!(route_names(&v2), ["all", "second"]);

    phase("a stale If-Match is refused with 409 and the current version; nothing changes");
    for n in nodes {
        let r = n.put_routes(&table(&us, &eu, "stale").to_string(), Some(1));
        assert_eq!(r.status, 409, "{}: {}", n.id, r.text());
        let j = r.json();
        assert_eq!(j["version"], 2, "{j}");
        assert!(j["error"].as_str().is_some_and(|e| !e.is_empty()), "{j}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(same_table_everywhere(&nodes, 2), v2);

    phase("an invalid table is refused with 400 on any node; nothing changes");
    let bad = json!({
        "services": { "echo": { "endpoints": { "us": [us.url()] } } },
        "routes": [ { "name": "all", "path_prefix": "/", "service": "no-such-service" } ]
    });
    for n in nodes {
        let r = n.put_routes(&bad.to_string(), None);
        assert_eq!(r.status, 400, "{}: {}", n.id, r.text());
        let err = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(err.contains("no-such-service"), "the error names the problem: {err}");
        let r = n.put_routes("{ not json", Some(2));
        assert_eq!(r.status, 400, "{}: {}", n.id, r.text());
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(same_table_everywhere(&nodes, 2), v2);

    phase("a matching If-Match commits");
    let r = n3.put_routes(&table(&us, &eu, "third").to_string(), Some(2));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 3);
    wait_all_at_version(&nodes, 3, Duration::from_secs(5));
    let v3 = same_table_everywhere(&nodes, 3);

    phase("history is newest first with causes and nodes; rollback from every node commits everywhere");
    // (node that rolls back, target version, the table that target held)
    let rollbacks = [(&n1, 1u64, &seed), (&n2, 2, &v2), (&n3, 3, &v3)];
    let mut version = 3;
    for (n, to, expected) in rollbacks {
        let r = request(
            n.admin,
            "POST",
            "/routes/rollback",
            &[("content-type", "application/json")],
            json!({ "to": to }).to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}: rollback to {to}: {}", n.id, r.text());
        version += 1;
        assert_eq!(r.json()["version"], version, "{}", r.text());
        wait_all_at_version(&nodes, version, Duration::from_secs(5));
        assert_eq!(&same_table_everywhere(&nodes, version), expected, "rollback to v{to} restores its table");
    }
    for n in nodes {
        let h = n.admin_get("/routes/history").json();
        assert_eq!(h["current"], 6, "{}: {h}", n.id);
        let versions = h["versions"].as_array().expect("versions");
        let listed: Vec<u64> = versions.iter().filter_map(|v| v["version"].as_u64()).collect();
        assert_eq!(listed, [6, 5, 4, 3, 2, 1], "{}: newest first", n.id);
        let causes: Vec<&str> = versions.iter().map(|v| v["cause"].as_str().unwrap_or("")).collect();
        let by: Vec<&str> = versions.iter().map(|v| v["by_node"].as_str().unwrap_or("")).collect();
        assert_eq!(causes[3..], ["write", "write", "bootstrap"], "{}: {causes:?}", n.id);
        for (cause, to) in causes[..3].iter().zip([3, 2, 1]) {
            let names_target = cause.split(|c: char| !c.is_ascii_digit()).any(|d| d == to.to_string());
            assert!(
                cause.starts_with("rollback") && names_target,
                "{}: cause {cause:?} for rollback to {to}",
                n.id
            );
        }
        assert_eq!(by[..5], ["n3", "n2", "n1", "n3", follower.id.as_str()], "{}: by_node", n.id);
        assert!(all_ids.iter().any(|id| id == by[5]), "bootstrap by a member: {by:?}");
        let times: Vec<u64> = versions.iter().filter_map(|v| v["committed_at_ms"].as_u64()).collect();
        assert_eq!(times.len(), 6, "{h}");
        assert!(times.windows(2).all(|w| w[0] >= w[1]), "committed_at_ms newest first: {times:?}");
        assert_eq!(versions[5]["table"], seed, "history keeps each version's table");
        assert_eq!(versions[0]["table"], v3);
    }
    let r = request(n2.admin, "POST", "/routes/rollback", &[], json!({ "to": 99 }).to_string().as_bytes());
    assert!(r.status >= 400 && r.status < 500, "rollback to an unknown version: {} {}", r.status, r.text());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(same_table_everywhere(&nodes, 6), v3);

    phase("/metrics carries the Raft and gossip series");
    let mut leaders = 0.0;
    for n in nodes {
        let text = n.admin_get("/metrics").text();
        for series in [
            "meridian_raft_term ",
            "meridian_raft_commit_index ",
            "meridian_raft_is_leader ",
            "meridian_raft_leader_changes_total ",
            "meridian_gossip_live_members ",
            "meridian_gossip_dead_members ",
            "meridian_peer_handshake_failures_total{direction=",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(series)),
                "{}: no {series:?} series in /metrics",
                n.id
            );
        }
        assert!(n.metric("meridian_raft_term") >= 1.0);
        assert!(n.metric("meridian_raft_commit_index") >= 7.0, "bootstrap + 6 table versions committed");
        assert!(n.metric("meridian_raft_leader_changes_total") >= 1.0);
        assert_eq!(n.metric("meridian_gossip_live_members"), 3.0, "{}", n.id);
        assert_eq!(n.metric("meridian_gossip_dead_members"), 0.0, "{}", n.id);
        leaders += n.metric("meridian_raft_is_leader");
    }
    assert_eq!(leaders, 1.0, "exactly one node reports meridian_raft_is_leader 1");

    phase("the data plane serves each node's own region: eu node from the eu upstream");
    let r = n3.get("/anything");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "eu-up", "{}", r.text());
    assert_eq!(r.header("x-meridian-region"), Some("eu"));
    assert_eq!(r.header("x-meridian-node"), Some("n3"));
    for n in [&n1, &n2] {
        let r = n.get("/anything");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["name"], "us-up", "{}: {}", n.id, r.text());
        assert_eq!(r.header("x-meridian-region"), Some("us"));
        assert_eq!(r.header("x-meridian-node"), Some(n.id.as_str()));
    }
    for n in nodes {
        assert!(!n.panicked(), "{} panicked:\n{}", n.id, n.stderr_tail(40));
    }
}
