//! Peer-plane credential rotation on a running cluster of real processes, no restart: a full CA
//! rollover in the three `meridian certs` steps (bundle CA1+CA2, certificates from CA2, CA1
//! dropped), each node reading its own copy of its TLS directory; after every step writes through
//! a follower still commit over the peer plane and requests are still forwarded across regions.
//! Then the new material is shown to be the one in use: a node holding only CA2 material joins
//! and replicates, a node with a CA1 certificate is refused. Last, a certificate file replaced by
//! garbage is refused and counted while the node keeps working, and fixing it is picked up.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_tests::*;

/// The nodes' `--tls-dir` is polled every 2 s; a reload is well within this on a busy machine.
const RELOAD_WITHIN: Duration = Duration::from_secs(20);

/// Regions have no upstream of their own except eu: a request to a us node is always forwarded
/// to an eu node over the peer plane (nothing local to try). `tag` names a route so each write
/// makes a new version.
fn table(eu: &Upstream, tag: &str) -> Value {
    json!({
        "services": { "echo": { "endpoints": { "eu": [eu.url()] }, "timeout_ms": 3000, "retries": 1 } },
        "routes": [
            { "name": "all", "path_prefix": "/", "service": "echo" },
            { "name": tag, "path_prefix": format!("/{tag}"), "service": "echo" }
        ]
    })
}

/// `meridian certs --out PKI ARGS...`: whether it succeeded, its stdout and its stderr.
fn run_certs(pki: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(meridian_bin())
        .arg("certs")
        .arg("--out")
        .arg(pki)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running meridian certs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// `meridian certs --out PKI ARGS...`, which must succeed; returns its stdout.
fn certs(pki: &Path, args: &[&str]) -> String {
    let (ok, out, err) = run_certs(pki, args);
    assert!(ok, "meridian certs {args:?} failed:\n{out}\n{err}");
    out
}

/// Copy a file the way a deployment tool should: a temporary file renamed over the target.
fn install(from: &Path, to: &Path) {
    let tmp = to.with_extension("deploying");
    std::fs::copy(from, &tmp).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
    std::fs::rename(&tmp, to).expect("rename into place");
}

fn install_ca(pki: &Path, node_dir: &Path) {
    install(&pki.join("ca.pem"), &node_dir.join("ca.pem"));
}

fn install_pair(pki: &Path, node_dir: &Path, id: &str) {
    install(&pki.join(format!("{id}.key")), &node_dir.join(format!("{id}.key")));
    install(&pki.join(format!("{id}.pem")), &node_dir.join(format!("{id}.pem")));
}

/// A node's own TLS directory, with its files copied from the issuing directory.
fn node_dir(root: &Path, pki: &Path, id: &str) -> PathBuf {
    let dir = root.join(format!("tls-{id}"));
    std::fs::create_dir_all(&dir).expect("node tls dir");
    install_ca(pki, &dir);
    install_pair(pki, &dir, id);
    dir
}

fn reloads(n: &ClusterNode, result: &str) -> f64 {
    n.metric(&format!("meridian_peer_tls_reloads_total{{result=\"{result}\"}}"))
}

/// Wait until every node has loaded `ok` changes, none refused, and trusts `cas` CAs.
fn wait_reloaded(nodes: &[&ClusterNode], ok: f64, cas: f64, step: &str) {
    let t0 = Instant::now();
    eventually(
        RELOAD_WITHIN,
        || {
            nodes.iter().all(|n| {
                reloads(n, "ok") == ok
                    && reloads(n, "error") == 0.0
                    && n.metric("meridian_peer_tls_trusted_cas") == cas
            })
        },
        &format!("every node reloaded {step} ({ok} ok reloads, {cas} trusted CAs)"),
    );
    eprintln!("{step}: every node reloaded within {:?}", t0.elapsed());
}

/// A `PUT /routes` on a node that does not lead (forwarded to the leader over the peer plane)
/// commits and every node applies it. Returns the new version.
fn write_through_follower(nodes: &[&ClusterNode], eu: &Upstream, tag: &str) -> u64 {
    let leader = wait_cluster_ready(nodes, Duration::from_secs(15));
    let follower = nodes.iter().find(|n| n.id != leader).expect("a follower");
    let t0 = Instant::now();
    let r = follower.put_routes(&table(eu, tag).to_string(), None);
    assert_eq!(
        r.status,
        200,
        "{tag}: write through follower {} (leader {leader}): {}",
        follower.id,
        r.text()
    );
    let version = r.json()["version"].as_u64().expect("version");
    wait_all_at_version(nodes, version, Duration::from_secs(10));
    eprintln!("{tag}: write through follower {} committed as v{version} in {:?}", follower.id, t0.elapsed());
    version
}

/// A request to the us node `n` is served by the eu region, over the peer plane.
fn forwarded_to_eu(n: &ClusterNode, tag: &str) {
    let mut last = String::new();
    eventually(
        Duration::from_secs(10),
        || {
            let r = n.get(&format!("/{tag}/forwarded"));
            last = format!("{} {:?} {}", r.status, r.header("x-meridian-node"), r.text());
            r.status == 200 && r.header("x-meridian-region") == Some("eu")
        },
        &format!("{tag}: a request to {} forwarded to eu", n.id),
    );
    eprintln!("{tag}: request to {} answered from eu ({last})", n.id);
}

fn leader_changes(nodes: &[&ClusterNode]) -> Vec<f64> {
    nodes.iter().map(|n| n.metric("meridian_raft_leader_changes_total")).collect()
}

#[test]
fn ca_rollover_without_restart_then_new_and_stale_nodes_then_a_bad_file() {
    let dir = TempDir::new("t97");
    let pki = dir.path().join("pki");
    certs(&pki, &["--nodes", "n1,n2,n3,n5"]);
    let dirs: Vec<PathBuf> = ["n1", "n2", "n3"].iter().map(|id| node_dir(dir.path(), &pki, id)).collect();
    // n5 keeps a CA1 certificate for the end of the test.
    let n5_dir = node_dir(dir.path(), &pki, "n5");
    let eu = Upstream::start("eu-up", dir.path());
    let spec = ClusterSpec::new(&dir, &dirs[0], &table(&eu, "seed"), 3);

    phase("three nodes (us, us, eu), each with its own TLS directory from CA1, form a cluster");
    let any = ClusterPorts::any();
    let n1 = spec.start_on("n1", "us", &[], any, &dirs[0]);
    let n2 = spec.start_on("n2", "us", &[n1.gossip], any, &dirs[1]);
    let n3 = spec.start_on("n3", "eu", &[n1.gossip], any, &dirs[2]);
    let nodes = [&n1, &n2, &n3];
    wait_cluster_ready(&nodes, Duration::from_secs(15));
    for n in nodes {
        assert_eq!(reloads(n, "ok"), 0.0, "{}", n.id);
        assert_eq!(n.metric("meridian_peer_tls_trusted_cas"), 1.0, "{}", n.id);
        assert!(n.metric("meridian_peer_tls_cert_not_after_seconds") > 1.7e9, "{}", n.id);
    }
    write_through_follower(&nodes, &eu, "before");
    forwarded_to_eu(&n1, "before");
    let not_after_ca1: Vec<f64> =
        nodes.iter().map(|n| n.metric("meridian_peer_tls_cert_not_after_seconds")).collect();
    let changes_before = leader_changes(&nodes);

    phase("step 1: meridian certs --new-ca; every node gets the bundle CA2+CA1 and reloads it");
    let out = certs(&pki, &["--new-ca"]);
    assert!(out.contains("trusts 2 CA(s)"), "{out}");
    for d in &dirs {
        install_ca(&pki, d);
    }
    wait_reloaded(&nodes, 1.0, 2.0, "step 1 (bundle CA2+CA1)");
    write_through_follower(&nodes, &eu, "step1");
    forwarded_to_eu(&n1, "step1");

    phase("step 2: meridian certs --renew; every node gets its CA2 pair and reloads it");
    certs(&pki, &["--renew", "--nodes", "n1,n2,n3"]);
    for (d, id) in dirs.iter().zip(["n1", "n2", "n3"]) {
        install_pair(&pki, d, id);
    }
    wait_reloaded(&nodes, 2.0, 2.0, "step 2 (CA2 certificates)");
    for (i, n) in nodes.iter().enumerate() {
        let not_after = n.metric("meridian_peer_tls_cert_not_after_seconds");
        assert!(not_after > not_after_ca1[i], "{}: the certificate in use is the renewed one", n.id);
    }
    write_through_follower(&nodes, &eu, "step2");
    forwarded_to_eu(&n1, "step2");

    phase("step 3: meridian certs --drop-old-ca; every node gets the CA2-only bundle and reloads it");
    // n5's pair in the issuing directory is still from CA1: the step is refused, naming it.
    let (ok, _, err) = run_certs(&pki, &["--drop-old-ca"]);
    assert!(!ok && err.contains("the certificates of n5") && err.contains("--renew --nodes n5"), "{err}");
    // n5 is being retired (its own copy stays in its directory, for the last phase).
    std::fs::remove_file(pki.join("n5.pem")).expect("remove n5.pem");
    std::fs::remove_file(pki.join("n5.key")).expect("remove n5.key");
    let out = certs(&pki, &["--drop-old-ca"]);
    assert!(out.contains("trusts 1 CA(s)"), "{out}");
    for d in &dirs {
        install_ca(&pki, d);
    }
    wait_reloaded(&nodes, 3.0, 1.0, "step 3 (CA1 dropped)");
    write_through_follower(&nodes, &eu, "step3");
    forwarded_to_eu(&n1, "step3");
    for n in nodes {
        let log = n.proc.stderr();
        let reloaded = log.lines().filter(|l| l.contains("peer TLS material reloaded")).count();
        assert_eq!(reloaded, 3, "{}: one info line per reload:\n{}", n.id, n.stderr_tail(30));
        // Done in order, the rollover closed no connection: each node re-dialled with its new
        // pair at its own reload, before any peer stopped trusting the old one.
        assert_eq!(n.metric("meridian_peer_connections_revoked_total"), 0.0, "{}", n.id);
    }
    eprintln!(
        "leader changes per node before the rollover {changes_before:?}, after {:?}",
        leader_changes(&nodes)
    );

    phase("a new node holding only CA2 material joins, replicates the table, and its write commits");
    certs(&pki, &["--nodes", "n4"]);
    let n4_dir = node_dir(dir.path(), &pki, "n4");
    let n4 = spec.start_on("n4", "eu", &[n1.gossip], any, &n4_dir);
    eventually(Duration::from_secs(20), || n4.is_ready(), "n4 ready (knows the leader, has the table)");
    let current = n1.routes_version();
    wait_all_at_version(&[&n4], current, Duration::from_secs(10));
    let all = [&n1, &n2, &n3, &n4];
    let r = n4.put_routes(&table(&eu, "from-n4").to_string(), Some(current));
    assert_eq!(r.status, 200, "write on n4: {}", r.text());
    wait_all_at_version(&all, current + 1, Duration::from_secs(10));
    eventually(
        Duration::from_secs(20),
        || {
            let (voters, learners) = n1.raft_members();
            voters.iter().chain(&learners).any(|id| id == "n4")
        },
        "n4 in the Raft group",
    );

    phase("a node with a CA1 certificate (trusting both CAs) is refused by the rotated nodes");
    let bundle = [
        std::fs::read(pki.join("ca.pem")).expect("ca.pem"),
        std::fs::read(n5_dir.join("ca.pem")).expect("CA1"),
    ]
    .concat();
    std::fs::write(n5_dir.join("ca.pem"), bundle).expect("n5 bundle");
    // Either direction: the leader, checking whether n5 may join, dials it and refuses its
    // certificate as a server's; n5 calling in would be refused as a client.
    let refused = || -> f64 {
        all.iter().map(|n| metric_sum(&n.metrics_text(), "meridian_peer_handshake_failures_total{")).sum()
    };
    let refused_before = refused();
    let n5 = spec.start_on("n5", "us", &[n1.gossip], any, &n5_dir);
    eventually(
        Duration::from_secs(15),
        || refused() > refused_before,
        "the rotated nodes refuse n5's handshakes",
    );
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        for n in all {
            let (voters, learners) = n.raft_members();
            assert!(!voters.iter().chain(&learners).any(|id| id == "n5"), "{}: n5 entered Raft", n.id);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(!n5.is_ready(), "n5 must not get a leader and a table");
    drop(n5);

    phase("n2's certificate replaced by garbage: refused, counted, logged with the file; n2 keeps working");
    let n2_cert = dirs[1].join("n2.pem");
    std::fs::write(&n2_cert, "garbage\n").expect("write garbage");
    eventually(RELOAD_WITHIN, || reloads(&n2, "error") == 1.0, "n2 counts the refused reload");
    assert_eq!(n2.metric("meridian_peer_tls_reload_failing"), 1.0);
    assert_eq!(reloads(&n2, "ok"), 3.0, "nothing was swapped in");
    assert_eq!(n2.metric("meridian_peer_tls_trusted_cas"), 1.0);
    let log = n2.proc.stderr();
    assert!(
        log.lines().any(|l| l.contains("ERROR") && l.contains("n2.pem: no certificate found")),
        "an error line naming the file:\n{}",
        n2.stderr_tail(20)
    );
    // Retried every 2 s, not counted again for the same content.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(reloads(&n2, "error"), 1.0);
    let r = n2.put_routes(&table(&eu, "garbage-on-n2").to_string(), None);
    assert_eq!(r.status, 200, "write on n2 while its file is bad: {}", r.text());
    let v = r.json()["version"].as_u64().expect("version");
    wait_all_at_version(&all, v, Duration::from_secs(10));
    forwarded_to_eu(&n2, "garbage");

    phase("the file fixed: n2 loads it again and the failure clears");
    install(&pki.join("n2.pem"), &n2_cert);
    eventually(RELOAD_WITHIN, || reloads(&n2, "ok") == 4.0, "n2 reloads the fixed file");
    assert_eq!(n2.metric("meridian_peer_tls_reload_failing"), 0.0);
    assert_eq!(reloads(&n2, "error"), 1.0);
    write_through_follower(&all, &eu, "fixed");

    for n in all {
        assert!(!n.panicked(), "{} panicked:\n{}", n.id, n.stderr_tail(40));
    }
}
