//! Control-plane faults on a three-node cluster of real processes: leader loss, follower restart
//! and catch-up, quorum loss, a node with a certificate from another CA, garbage datagrams on the
//! gossip and peer ports, and a corrupt Raft database file.
//!
//! The tests in this file take turns (`SERIAL`): each runs a timing-sensitive cluster, and the
//! machine they run on is small.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use meridian_tests::*;

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// One service `echo` with a `us` endpoint; `tag` names a second route so versions differ.
fn table(up: &Upstream, tag: &str) -> Value {
    json!({
        "services": { "echo": { "endpoints": { "us": [up.url()] }, "timeout_ms": 3000, "retries": 2 } },
        "routes": [
            { "name": "all", "path_prefix": "/", "service": "echo" },
            { "name": tag, "path_prefix": format!("/{tag}"), "service": "echo" }
        ]
    })
}

/// Three nodes n1..n3, all in `us`, formed and ready with one leader; returns them and the leader.
fn three_nodes(spec: &ClusterSpec) -> (Vec<ClusterNode>, String) {
    let t0 = Instant::now();
    let n1 = spec.start("n1", "us", &[]);
    let n2 = spec.start("n2", "us", &[n1.gossip]);
    let n3 = spec.start("n3", "us", &[n1.gossip]);
    let leader = wait_cluster_ready(&[&n1, &n2, &n3], Duration::from_secs(15));
    eprintln!("cluster formed in {:?}, leader {leader}", t0.elapsed());
    (vec![n1, n2, n3], leader)
}

fn live_in_view(viewer: &ClusterNode, id: &str) -> Option<bool> {
    viewer.member(id).and_then(|m| m["live"].as_bool())
}

fn handshake_failures(n: &ClusterNode) -> f64 {
    let text = n.admin_get("/metrics").text();
    text.lines()
        .filter(|l| l.starts_with("meridian_peer_handshake_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

#[test]
fn leader_loss_follower_restart_and_quorum_loss() {
    let _serial = serial();
    let dir = TempDir::new("t71-loss");
    let tls = make_certs(dir.path(), "tls", &["n1", "n2", "n3"]);
    let up = Upstream::start("us-up", dir.path());
    let spec = ClusterSpec::new(&dir, &tls, &table(&up, "seed"), 3);
    let (mut nodes, leader) = three_nodes(&spec);

    phase("(a) SIGKILL the leader: a write on a survivor commits within 5 s");
    let li = nodes.iter().position(|n| n.id == leader).expect("leader is a node");
    let mut dead = nodes.remove(li);
    let term_before = nodes[0].cluster()["raft"]["term"].as_u64().expect("term");
    dead.proc.signal(SIGKILL);
    let killed_at = Instant::now();
    assert!(dead.node.proc.wait_exit(Duration::from_secs(5)).is_some(), "SIGKILLed leader did not exit");
    let r = nodes[0].put_routes(&table(&up, "after-kill").to_string(), None);
    let commit = killed_at.elapsed();
    eprintln!(
        "write on {} right after the leader {leader} was killed: {} in {commit:?}",
        nodes[0].id, r.status
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 2, "{}", r.text());
    assert!(commit < Duration::from_secs(5), "write after leader loss took {commit:?}");
    wait_all_at_version(&[&nodes[0], &nodes[1]], 2, Duration::from_secs(3));

    phase("(a) the survivors elect one of themselves and show the killed leader live=false within 5 s");
    loop {
        let views: Vec<Option<bool>> = nodes.iter().map(|n| live_in_view(n, &leader)).collect();
        if views.iter().all(|v| *v == Some(false)) {
            eprintln!("survivors see {leader} live=false {:?} after the kill", killed_at.elapsed());
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(5),
            "survivors still show the killed leader {leader} as {views:?} after 5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let new_leader = wait_cluster_ready(&[&nodes[0], &nodes[1]], Duration::from_secs(5));
    assert_ne!(new_leader, leader);
    let term_after = nodes[0].cluster()["raft"]["term"].as_u64().expect("term");
    assert!(term_after > term_before, "a new term after the election: {term_before} -> {term_after}");
    for n in &nodes {
        assert!(n.metric("meridian_gossip_dead_members") >= 1.0, "{}: dead member not counted", n.id);
    }

    phase("(a) the killed leader restarts with its data dir (same ports) and catches up");
    let seeds = [nodes[0].gossip, nodes[1].gossip];
    let t0 = Instant::now();
    let back = spec.start_on(&leader, "us", &seeds, dead.ports(), &tls);
    drop(dead);
    eventually(Duration::from_secs(10), || back.is_ready(), "the restarted leader is ready");
    wait_all_at_version(&[&back], 2, Duration::from_secs(10));
    eprintln!("killed leader {leader} back, ready and at v2 in {:?}", t0.elapsed());
    nodes.push(back);
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    let leader = wait_cluster_ready(&[&nodes[0], &nodes[1], &nodes[2]], Duration::from_secs(5));

    phase("(b) SIGTERM a follower, write v3 without it, restart it (same ports): it comes back ready at v3");
    let fi = nodes.iter().position(|n| n.id != leader).expect("a follower");
    let term_before = nodes[0].cluster()["raft"]["term"].as_u64().expect("term");
    let leader_before = nodes[0].leader();
    let mut stopped = nodes.remove(fi);
    stopped.proc.signal(SIGTERM);
    let status = stopped.node.proc.wait_exit(Duration::from_secs(10));
    assert!(status.is_some(), "{} did not exit on SIGTERM", stopped.id);
    let r = nodes[0].put_routes(&table(&up, "while-down").to_string(), Some(2));
    assert_eq!(r.status, 200, "2 of 3 voters commit: {}", r.text());
    assert_eq!(r.json()["version"], 3);
    let (id, data_dir, ports) = (stopped.id.clone(), stopped.data_dir.clone(), stopped.ports());
    drop(stopped);
    // Down long enough for the leader's dials to it to fail (as a container restart is).
    std::thread::sleep(Duration::from_secs(2));
    let seeds = [nodes[0].gossip];
    let t0 = Instant::now();
    let back = spec.start_on(&id, "us", &seeds, ports, &tls);
    assert_eq!(back.data_dir, data_dir);
    eventually(Duration::from_secs(10), || back.is_ready(), "the restarted follower is ready");
    let ready = t0.elapsed();
    wait_all_at_version(&[&back], 3, Duration::from_secs(10));
    eprintln!("restarted follower {id}: ready in {ready:?}, caught up to v3 in {:?}", t0.elapsed());
    let routes = back.admin_get("/routes").json();
    assert_eq!(routes["table"], nodes[0].admin_get("/routes").json()["table"]);
    nodes.push(back);
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    eventually(
        Duration::from_secs(5),
        || nodes.iter().all(|n| live_in_view(n, &id) == Some(true)),
        "every node shows the restarted follower live again",
    );
    let (voters, _) = nodes[0].raft_members();
    assert_eq!(voters, ["n1", "n2", "n3"], "the restarted follower is still a voter");
    // The restarted voter waited for the leader instead of campaigning: no election happened.
    let c = nodes[0].cluster();
    assert_eq!(
        (c["raft"]["term"].as_u64(), c["raft"]["leader"].as_str().map(String::from)),
        (Some(term_before), leader_before),
        "a follower's restart must not unseat the leader"
    );
    // A write after the restart reaches the restarted node too.
    let r = nodes[2].put_routes(&table(&up, "after-restart").to_string(), Some(3));
    assert_eq!(r.status, 200, "{}", r.text());
    wait_all_at_version(&[&nodes[0], &nodes[1], &nodes[2]], 4, Duration::from_secs(3));

    phase("(c) kill 2 of 3: a write on the survivor is refused with 503 within 7 s, not a hang");
    let leader = wait_cluster_ready(&[&nodes[0], &nodes[1], &nodes[2]], Duration::from_secs(5));
    let si = nodes.iter().position(|n| n.id != leader).expect("a follower survives");
    let survivor = nodes.remove(si);
    for n in &mut nodes {
        n.proc.signal(SIGKILL);
        assert!(n.node.proc.wait_exit(Duration::from_secs(5)).is_some());
    }
    let (r, took) = timed(|| survivor.put_routes(&table(&up, "no-quorum").to_string(), None));
    eprintln!("write on the lone survivor {}: {} in {took:?}: {}", survivor.id, r.status, r.text());
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.json()["error"].as_str().is_some_and(|e| !e.is_empty()), "{}", r.text());
    assert!(took < Duration::from_secs(7), "503 took {took:?}");
    assert_eq!(survivor.routes_version(), 4, "nothing committed without quorum");
    let r = survivor.get("/still-serving");
    assert_eq!(r.status, 200, "the survivor keeps serving its last table: {}", r.text());
    assert!(!survivor.panicked(), "{}", survivor.stderr_tail(40));
}

#[test]
fn restarted_node_on_new_ports_catches_up() {
    let _serial = serial();
    let dir = TempDir::new("t71-newports");
    let tls = make_certs(dir.path(), "tls", &["n1", "n2", "n3"]);
    let up = Upstream::start("us-up", dir.path());
    let spec = ClusterSpec::new(&dir, &tls, &table(&up, "seed"), 3);
    let (mut nodes, leader) = three_nodes(&spec);

    phase("(b') SIGTERM a follower, write v2, restart it with its data dir on fresh ports (port 0)");
    let fi = nodes.iter().position(|n| n.id != leader).expect("a follower");
    let mut stopped = nodes.remove(fi);
    stopped.proc.signal(SIGTERM);
    assert!(stopped.node.proc.wait_exit(Duration::from_secs(10)).is_some(), "{} did not stop", stopped.id);
    let r = nodes[0].put_routes(&table(&up, "while-down").to_string(), Some(1));
    assert_eq!(r.status, 200, "{}", r.text());
    let id = stopped.id.clone();
    let old_peer = stopped.peer;
    drop(stopped);
    let t0 = Instant::now();
    let back = spec.start(&id, "us", &[nodes[0].gossip]);
    eprintln!("{id} restarted: peer {old_peer} -> {}", back.peer);
    eventually(Duration::from_secs(10), || back.is_ready(), "the restarted follower is ready");

    phase("(b') the restarted node catches up to v2 (Raft must reach it at its new peer address)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while back.try_routes_version() != Some(2) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = back.try_routes_version();
    let view = nodes[0].member(&id);
    // What the others logged about reaching it: the Raft membership still holds the old address.
    let mut log: Vec<String> = nodes
        .iter()
        .flat_map(|n| n.proc.stderr().lines().map(String::from).collect::<Vec<_>>())
        .filter(|l| l.contains(&old_peer.to_string()) || l.contains("error replication to target"))
        .collect();
    log.drain(..log.len().saturating_sub(3));
    assert_eq!(
        got,
        Some(2),
        "{id} restarted on a new peer port ({old_peer} -> {}) is ready but stuck at {got:?} after {:?}; \
         {}'s gossip view of it: {view:?}; the others' logs about it:\n{}",
        back.peer,
        t0.elapsed(),
        nodes[0].id,
        log.join("\n")
    );
    eprintln!("restarted on new ports, caught up in {:?}", t0.elapsed());
}

#[test]
fn foreign_ca_node_never_enters_the_raft_group() {
    let _serial = serial();
    let dir = TempDir::new("t71-foreign");
    let tls = make_certs(dir.path(), "tls", &["n1", "n2", "n3"]);
    let other = make_certs(dir.path(), "other", &["n4"]);
    let up = Upstream::start("us-up", dir.path());
    let spec = ClusterSpec::new(&dir, &tls, &table(&up, "seed"), 3);
    let (mut nodes, leader) = three_nodes(&spec);
    let cluster = [&nodes[0], &nodes[1], &nodes[2]];

    phase("(d) a node with a certificate from another CA joins gossip; watch Raft membership for 5 s");
    let failures_before: f64 = cluster.iter().map(|n| handshake_failures(n)).sum();
    let n4 = spec.start_on("n4", "us", &[nodes[0].gossip], ClusterPorts::any(), &other);
    let t0 = Instant::now();
    let mut seen_in_gossip = false;
    // (when, node, voters, learners) of every observation that had n4 in the Raft group
    let mut in_raft: Vec<(Duration, String, Vec<String>, Vec<String>)> = Vec::new();
    while t0.elapsed() < Duration::from_secs(5) {
        for n in cluster {
            let c = n.cluster();
            let (voters, learners) = (ids(&c["raft"]["voters"]), ids(&c["raft"]["learners"]));
            if voters.iter().chain(&learners).any(|id| id == "n4") {
                in_raft.push((t0.elapsed(), n.id.clone(), voters, learners));
            }
            seen_in_gossip |= c["members"].as_array().is_some_and(|m| m.iter().any(|m| m["id"] == "n4"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("n4 seen in gossip (advisory): {seen_in_gossip}");

    phase("(d) the handshakes fail: the cluster counts them or n4 logs them");
    let failures_after: f64 = cluster.iter().map(|n| handshake_failures(n)).sum();
    let n4_logged = n4.proc.stderr().lines().any(|l| l.to_ascii_lowercase().contains("handshake"));
    eprintln!("cluster handshake failures {failures_before} -> {failures_after}; n4 logs handshake errors: {n4_logged}");
    assert!(
        failures_after > failures_before || n4_logged,
        "neither the cluster's handshake-failure metric grew nor did n4 log a handshake error"
    );
    assert!(!n4.is_ready(), "the foreign node must not get a routing table and a leader");

    phase("(d) the cluster still commits writes with the foreign node around");
    let r = nodes[1].put_routes(&table(&up, "with-n4").to_string(), Some(1));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 2);
    wait_all_at_version(&cluster, 2, Duration::from_secs(3));

    phase("(d) the three real voters still tolerate one failure");
    let fi = nodes.iter().position(|n| n.id != leader).expect("a follower");
    let mut gone = nodes.remove(fi);
    gone.proc.signal(SIGKILL);
    assert!(gone.node.proc.wait_exit(Duration::from_secs(5)).is_some());
    let r = nodes[0].put_routes(&table(&up, "one-down").to_string(), Some(2));
    assert_eq!(
        r.status,
        200,
        "2 of 3 real voters must commit: {}; (voters, learners) now {:?}; n4 first seen as a voter: {:?}",
        r.text(),
        nodes[0].raft_members(),
        in_raft.iter().find(|o| o.2.contains(&"n4".to_string()))
    );

    phase("(d) n4 never appeared in the cluster's Raft voters or learners");
    let first_learner = in_raft.iter().find(|o| o.3.contains(&"n4".to_string()));
    let first_voter = in_raft.iter().find(|o| o.2.contains(&"n4".to_string()));
    assert!(
        in_raft.is_empty(),
        "the foreign-CA node n4 entered the Raft group: first as learner {first_learner:?}, first as voter \
         {first_voter:?}; last view {:?}",
        in_raft.last()
    );

    drop(n4);
}

#[test]
fn garbage_datagrams_on_gossip_and_peer_ports_are_dropped() {
    let _serial = serial();
    let dir = TempDir::new("t71-garbage");
    let tls = make_certs(dir.path(), "tls", &["n1", "n2", "n3"]);
    let up = Upstream::start("us-up", dir.path());
    let spec = ClusterSpec::new(&dir, &tls, &table(&up, "seed"), 3);
    let (nodes, leader) = three_nodes(&spec);
    let cluster = [&nodes[0], &nodes[1], &nodes[2]];

    phase("(e) garbage datagrams on the leader's gossip and peer ports: it stays live and serving");
    let target = cluster.iter().find(|n| n.id == leader).expect("leader");
    let t0 = Instant::now();
    send_garbage_datagrams(target.gossip, 300, 0x5eed_0001);
    send_garbage_datagrams(target.peer, 300, 0x5eed_0002);
    eprintln!("600 garbage datagrams (1..60000 bytes) sent in {:?}", t0.elapsed());
    // Watch long enough for gossip to have declared it dead (~1.5 s) had it stopped answering.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        for n in cluster.iter().filter(|n| n.id != target.id) {
            assert_eq!(live_in_view(n, &target.id), Some(true), "{} sees {} not live", n.id, target.id);
        }
        assert_eq!(
            try_get(target.admin, "/healthz").map(|r| r.status),
            Some(200),
            "the target stopped serving"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    phase("(e) the cluster still commits a write afterwards, applied everywhere");
    let (r, took) = timed(|| nodes[2].put_routes(&table(&up, "after-garbage").to_string(), Some(1)));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 2);
    eprintln!("write after garbage committed in {took:?}");
    wait_all_at_version(&cluster, 2, Duration::from_secs(3));
    for n in cluster {
        assert!(n.proc.stderr().lines().all(|l| !l.contains("panicked")), "{}:\n{}", n.id, n.stderr_tail(40));
    }
}

/// The node's Raft database files (under `DATA_DIR/raft/`).
fn redb_files(data_dir: &std::path::Path) -> Vec<PathBuf> {
    let raft = data_dir.join("raft");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&raft)
        .unwrap_or_else(|e| panic!("reading {}: {e}", raft.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "redb"))
        .collect();
    out.sort();
    out
}

#[test]
fn corrupt_raft_file_stops_the_node_with_a_clear_error() {
    let _serial = serial();
    let dir = TempDir::new("t71-corrupt");
    let tls = make_certs(dir.path(), "tls", &["n1", "n2", "n3"]);
    let up = Upstream::start("us-up", dir.path());
    let spec = ClusterSpec::new(&dir, &tls, &table(&up, "seed"), 3);
    let (mut nodes, leader) = three_nodes(&spec);
    let r = nodes[0].put_routes(&table(&up, "v2").to_string(), None);
    assert_eq!(r.status, 200, "{}", r.text());
    wait_all_at_version(&[&nodes[0], &nodes[1], &nodes[2]], 2, Duration::from_secs(3));

    phase("(f) stop a follower; its Raft data is one redb file under DATA_DIR/raft/");
    let fi = nodes.iter().position(|n| n.id != leader).expect("a follower");
    let mut victim = nodes.remove(fi);
    victim.proc.signal(SIGTERM);
    assert!(victim.node.proc.wait_exit(Duration::from_secs(10)).is_some(), "follower did not stop");
    let files = redb_files(&victim.data_dir);
    assert_eq!(files.len(), 1, "one database file: {files:?}");
    let db = files[0].clone();
    let good = std::fs::read(&db).expect("read the database");
    assert!(good.len() > 8192, "database is {} bytes", good.len());
    let (id, ports) = (victim.id.clone(), victim.ports());
    drop(victim);

    phase("(f) each kind of damage: the restart exits non-zero naming the file, without a panic");
    let half = good.len() / 2;
    let mut header_garbage = good.clone();
    for (i, b) in header_garbage[..4096].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("truncated to 0 bytes", Vec::new()),
        ("first 4 KiB overwritten", header_garbage),
        ("truncated to half its length", good[..half].to_vec()),
    ];
    let mut args: Vec<String> =
        ["node", "--id", &id, "--region", "us", "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
            .map(String::from)
            .to_vec();
    args.extend(spec.args(&id, &[nodes[0].gossip], ClusterPorts::any(), &tls));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut panicked = Vec::new();
    for (i, (what, bytes)) in damages.iter().enumerate() {
        std::fs::write(&db, bytes).expect("write the damaged database");
        let (code, stderr, _) = run_expecting_exit(
            &format!("{id}-corrupt-{i}"),
            &args,
            &[("MERIDIAN_LOG_LEVEL", "info"), ("RUST_BACKTRACE", "0")],
            dir.path(),
            Duration::from_secs(15),
        );
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        eprintln!("{what}: exit {code:?}; error lines: {errors:#?}");
        assert!(code.is_some(), "{what}: the node kept running on a damaged database:\n{stderr}");
        assert_ne!(code, Some(0), "{what}: exit status 0:\n{stderr}");
        assert_ne!(code, Some(-1), "{what}: killed by a signal:\n{stderr}");
        let db_str = db.display().to_string();
        assert!(
            stderr.lines().any(|l| l.contains(&db_str) && l.to_ascii_lowercase().contains("corrupt")),
            "{what}: no error line naming {db_str} as corrupt:\n{stderr}"
        );
        if stderr.contains("panicked") {
            let at = stderr.lines().find(|l| l.contains("panicked")).unwrap_or_default().to_string();
            panicked.push(format!("{what}: {at}"));
        }
    }

    phase("(f) the other two nodes are unaffected: ready, same leader, still committing");
    let still = wait_cluster_ready(&[&nodes[0], &nodes[1]], Duration::from_secs(5));
    assert_eq!(still, leader, "leadership did not move");
    let r = nodes[1].put_routes(&table(&up, "v3").to_string(), Some(2));
    assert_eq!(r.status, 200, "{}", r.text());
    wait_all_at_version(&[&nodes[0], &nodes[1]], 3, Duration::from_secs(3));
    for n in &nodes {
        assert!(!n.panicked(), "{}:\n{}", n.id, n.stderr_tail(40));
    }

    phase("(f) the undamaged file restores the node (same ports), which catches up");
    std::fs::write(&db, &good).expect("restore the database");
    let back = spec.start_on(&id, "us", &[nodes[0].gossip], ports, &tls);
    eventually(Duration::from_secs(10), || back.is_ready(), "the restored node is ready");
    wait_all_at_version(&[&back], 3, Duration::from_secs(10));

    phase("(f) no damage made the node panic (a caught panic still prints a crash report)");
    assert!(panicked.is_empty(), "the node panicked on a damaged database file:\n{}", panicked.join("\n"));
}
