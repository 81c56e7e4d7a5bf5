//! Gossip is advisory (issue 8): anyone who can reach the gossip port can join and read it, and
//! can claim anything about itself. These tests join a real node's gossip from outside, with the
//! product's gossip crate over real UDP, and check
//! - what an outsider reads: only the fact keys of the schema, and none of the node's secrets
//!   (admin tokens, API keys and their digests, JWT secrets, certificates);
//! - what a forged member gets: a member claiming a healthy region for a service is dialled when
//!   the local upstream fails, but it cannot prove a cluster certificate, so no request reaches
//!   it and the client gets an error, never an answer from the impostor.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meridian_gossip::{Gossip, GossipConfig, NodeFacts, ServiceHealth};
use meridian_tests::*;

const ADMIN_TOKEN: &str = "admin-token-for-t99-0123456789";
const API_KEY: &str = "api-key-for-t99-0123456789";
const HS_SECRET_B64: &str = "dDk5LWhtYWMtc2VjcmV0LWtleS0zMi1ieXRlcy1sb25n";

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio runtime")
}

/// An outsider's gossip member: id `id`, claiming `facts`, seeded with `seed`.
async fn join(id: &str, seed: SocketAddr, facts: NodeFacts) -> Gossip {
    let mut cfg = GossipConfig::new(id, "meridian", "127.0.0.1:0".parse().expect("addr"));
    cfg.seeds = vec![seed.to_string()];
    Gossip::start(cfg, facts).await.expect("outsider joins gossip")
}

/// A one-node cluster (`--expect 1`) in region us whose table holds every kind of secret.
fn secret_node(dir: &TempDir, local_up: &str, eu_up: &str) -> ClusterNode {
    let tls = make_certs(dir.path(), "tls", &["n1"]);
    let table = json!({
        "services": {"echo": {"endpoints": {"us": [local_up], "eu": [eu_up]}, "timeout_ms": 3000, "retries": 0}},
        "routes": [
            {"name": "keys", "path_prefix": "/keys", "service": "echo",
             "auth": {"api_keys": [{"id": "team-a", "sha256": sha256_hex(API_KEY)}]}},
            {"name": "jwt", "path_prefix": "/jwt", "service": "echo",
             "auth": {"jwt": {"keys": [{"alg": "HS256", "secret_base64": HS_SECRET_B64}]}}},
            {"name": "all", "path_prefix": "/", "service": "echo"}
        ]
    });
    let token = dir.write("admin.token", ADMIN_TOKEN);
    let mut spec = ClusterSpec::new(dir, &tls, &table, 1);
    spec.extra = vec!["--admin-token-file".into(), token.display().to_string()];
    let n1 = spec.start("n1", "us", &[]);
    wait_cluster_ready(&[&n1], Duration::from_secs(15));
    n1
}

#[test]
fn an_outsider_reads_only_the_fact_schema_and_no_secret() {
    let dir = TempDir::new("t99-read");
    let up = Upstream::start("up", dir.path());
    let n1 = secret_node(&dir, &up.url(), &up.url());
    let ca = std::fs::read_to_string(dir.path().join("tls").join("ca.pem")).expect("ca.pem");
    let node_key = std::fs::read_to_string(dir.path().join("tls").join("n1.key")).expect("n1.key");

    let rt = runtime();
    let seen: Vec<(String, String, String)> = rt.block_on(async {
        let spy = join("outsider", n1.gossip, NodeFacts { region: "xx".into(), ..Default::default() }).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let kv = spy.raw_key_values().await;
            // Wait for n1's full state, service health included (published after the first checks).
            if kv.iter().any(|(n, k, _)| n == "n1" && k.starts_with("svc:")) {
                break kv;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "n1's gossip state never reached the outsider: {kv:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let of_n1: BTreeMap<&str, &str> =
        seen.iter().filter(|(n, _, _)| n == "n1").map(|(_, k, v)| (k.as_str(), v.as_str())).collect();
    eprintln!("n1 as an outsider sees it: {of_n1:?}");

    phase("every key is in the fact schema");
    for k in of_n1.keys() {
        let known = meridian_gossip::keys::FACT_KEYS.contains(k)
            || k.starts_with(meridian_gossip::keys::SERVICE_PREFIX);
        assert!(known, "n1 gossips key {k:?}, which is not in the fact schema");
    }
    assert_eq!(of_n1.get("region"), Some(&"us"));

    phase("no value holds a secret or a piece of one");
    let digest = sha256_hex(API_KEY);
    let ca_body: String = ca.lines().filter(|l| !l.starts_with("-----")).collect();
    let key_body: String = node_key.lines().filter(|l| !l.starts_with("-----")).collect();
    let secrets = [ADMIN_TOKEN, API_KEY, digest.as_str(), HS_SECRET_B64, &ca_body[..32], &key_body[..32]];
    for (node, k, v) in &seen {
        for s in secrets {
            assert!(!v.contains(s) && !k.contains(s), "{node} gossips a secret under {k:?}");
        }
    }
}

#[test]
fn a_forged_member_is_dialled_but_gets_no_request() {
    let dir = TempDir::new("t99-forged");
    let eu_up = Upstream::start("eu-up", dir.path());
    let n1 = secret_node(&dir, &closed_url(), &eu_up.url());

    phase("an impostor joins gossip as a healthy eu node for echo; its peer port is a bare UDP socket");
    let trap = UdpSocket::bind("127.0.0.1:0").expect("trap socket");
    trap.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let trap_addr = trap.local_addr().expect("addr");
    let datagrams = Arc::new(AtomicUsize::new(0));
    let leaked = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (datagrams, leaked, stop) = (datagrams.clone(), leaked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, _)) = trap.recv_from(&mut buf) {
                    datagrams.fetch_add(1, Ordering::Relaxed);
                    if buf[..n].windows(11).any(|w| w == b"/t99-secret") {
                        leaked.store(true, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let rt = runtime();
    let spy = rt.block_on(async {
        let mut services = BTreeMap::new();
        services.insert("echo".to_string(), ServiceHealth { healthy: 3, total: 3 });
        let facts = NodeFacts {
            region: "eu".into(),
            http_addr: "127.0.0.1:1".into(),
            admin_addr: "127.0.0.1:1".into(),
            peer_addr: trap_addr.to_string(),
            services,
            ..Default::default()
        };
        join("impostor", n1.gossip, facts).await
    });
    eventually(
        Duration::from_secs(10),
        || n1.member("impostor").is_some_and(|m| m["live"] == true),
        "n1 sees the impostor as a live member",
    );

    phase("the local upstream is down: n1 fails over to the only eu member it knows, the impostor");
    let r = try_request(n1.http, "GET", "/t99-secret", &[], b"", Duration::from_secs(20)).expect("an answer");
    eprintln!(
        "answer: {} {}; datagrams the impostor received: {}",
        r.status,
        r.text(),
        datagrams.load(Ordering::Relaxed)
    );
    assert!(
        (502..=504).contains(&r.status),
        "the impostor must not be able to answer: {} {}",
        r.status,
        r.text()
    );
    assert!(
        datagrams.load(Ordering::Relaxed) > 0,
        "n1 did dial the address gossip gave (so the test tests something)"
    );
    assert!(!leaked.load(Ordering::Relaxed), "the request path reached the impostor");
    let failures = metric_sum(&n1.metrics_text(), "meridian_forward_failures_total");
    assert!(failures >= 1.0, "the failed forward is counted: {failures}");
    assert!(
        n1.raft_members().0 == vec!["n1".to_string()],
        "the impostor is not in Raft: {:?}",
        n1.raft_members()
    );
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    rt.block_on(spy.leave());
}

#[test]
fn a_forged_member_cannot_take_a_voter_seat_at_bootstrap() {
    let dir = TempDir::new("t99-bootstrap");
    let up = Upstream::start("up", dir.path());
    let tls = make_certs(dir.path(), "tls", &["n1", "n2"]);
    let table = simple_table("us", &[up.url()], json!({}));
    let spec = ClusterSpec::new(&dir, &tls, &table, 2);
    let n1 = spec.start("n1", "us", &[]);

    phase("an impostor with the lowest id joins gossip first; with --expect 2 it would complete the count");
    let trap = UdpSocket::bind("127.0.0.1:0").expect("trap socket");
    let rt = runtime();
    let spy = rt.block_on(join(
        "a-impostor",
        n1.gossip,
        NodeFacts {
            region: "us".into(),
            peer_addr: trap.local_addr().expect("addr").to_string(),
            ..Default::default()
        },
    ));
    eventually(
        Duration::from_secs(10),
        || n1.member("a-impostor").is_some_and(|m| m["live"] == true),
        "n1 sees the impostor",
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(!n1.is_ready(), "n1 bootstrapped Raft with an unproven member: {:?}", n1.try_cluster());

    phase("the second real node arrives: the group forms of the two certified nodes only");
    let n2 = spec.start("n2", "us", &[n1.gossip]);
    wait_cluster_ready(&[&n1, &n2], Duration::from_secs(20));
    let (voters, learners) = n1.raft_members();
    assert_eq!(voters, vec!["n1".to_string(), "n2".to_string()], "learners: {learners:?}");
    assert!(!learners.contains(&"a-impostor".to_string()), "{learners:?}");
    rt.block_on(spy.leave());
}
