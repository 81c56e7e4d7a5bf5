//! Global rate limits (issue 5), on real processes: the 429 contract on one node, a 10^5-key burst
//! with bounded memory, the limit held across three regions under uneven load, a node cut off from
//! the leader following each `on_partition` policy, and the leader killed under load.
//!
//! The cluster tests take turns (`SERIAL`); each runs three nodes and load on a small machine.
//! Admissions are counted client-side per window (`t_ms / window_ms`, the same epoch-aligned
//! windows the nodes use, on the same clock); a response that crosses a window edge can land in
//! the neighbour, which the tolerances allow for.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meridian_tests::*;
use serde_json::{json, Value};

const SIGKILL: i32 = 9;
const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Sleep until the current `window_ms` window has at least `room` left.
fn early_in_window(window_ms: u64, room: u64) {
    let left = window_ms - unix_ms() % window_ms;
    if left < room {
        std::thread::sleep(Duration::from_millis(left + 5));
    }
}

/// Sleep until a new `window_ms` window has just begun.
fn next_window(window_ms: u64) {
    std::thread::sleep(Duration::from_millis(window_ms - unix_ms() % window_ms + 5));
}

fn quota(key: &str, limit: u64, window_ms: u64, on_partition: &str) -> Value {
    json!({ "key": key, "limit": limit, "window_ms": window_ms, "on_partition": on_partition })
}

#[test]
fn a_quota_answers_429_with_the_ratelimit_headers_per_key() {
    let dir = TempDir::new("t90-standalone");
    let up = Upstream::start("up", dir.path());
    let mut table = simple_table("us", &[up.url()], json!({}));
    table["routes"] = json!([
        { "name": "tenant", "path_prefix": "/t", "service": "echo", "quota": "per-tenant" },
        { "name": "ip", "path_prefix": "/ip", "service": "echo", "quota": "per-ip" },
        { "name": "whole", "path_prefix": "/w", "service": "echo", "quota": "whole-route" },
        { "name": "free", "path_prefix": "/", "service": "echo" }
    ]);
    table["quotas"] = json!({
        "per-tenant": quota("header:x-tenant", 3, 4000, "local_share"),
        "per-ip": quota("client_ip", 2, 4000, "closed"),
        "whole-route": quota("route", 1, 4000, "open"),
    });
    let node = Node::with_table("us-1", "us", &table, &[], &dir);
    let get = |path: &str, tenant: Option<&str>| {
        let h: Vec<(&str, &str)> = tenant.map(|t| ("x-tenant", t)).into_iter().collect();
        request(node.http, "GET", path, &h, b"")
    };

    phase("a key gets `limit` requests per window, then 429 with retry-after and ratelimit headers");
    early_in_window(4000, 2500);
    let statuses: Vec<u16> = (0..4).map(|_| get("/t", Some("acme")).status).collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    let r = get("/t", Some("acme"));
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"], "rate_limited");
    assert!(r.json()["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).expect("retry-after");
    assert!((1..=4).contains(&retry), "retry-after {retry}");
    assert_eq!(r.header("ratelimit-policy"), Some("\"per-tenant\";q=3;w=4"));
    let rl = r.header("ratelimit").expect("ratelimit header");
    assert!(rl.starts_with("\"per-tenant\";r=0;t="), "{rl}");

    phase("admitted answers say what is left; other keys and unlimited routes are untouched");
    let ok = get("/t", Some("globex"));
    assert_eq!(ok.status, 200);
    assert!(ok.header("ratelimit").is_some_and(|v| v.starts_with("\"per-tenant\";r=2;")), "{ok:?}");
    assert_eq!(get("/t", None).status, 200, "no header: the shared empty key");
    assert_eq!(get("/other", Some("acme")).status, 200);
    assert!(get("/other", None).header("ratelimit").is_none());

    phase("client_ip and route keys");
    assert_eq!((0..3).map(|_| get("/ip", None).status).collect::<Vec<_>>(), [200, 200, 429]);
    assert_eq!(get("/w", Some("a")).status, 200);
    assert_eq!(get("/w", Some("b")).status, 429, "one key for the whole route");

    phase("/quotas and /metrics count the decisions");
    let q = node.admin_get("/quotas").json();
    let t = &q["quotas"]["per-tenant"];
    assert_eq!(t["limit"], 3);
    assert_eq!(t["enforced"], true);
    assert_eq!(t["mode"], "standalone");
    assert_eq!(t["leases"]["us-1"], 3);
    assert_eq!(t["admitted"], 5);
    assert_eq!(t["rejected"], 2);
    let m = node.admin_get("/metrics").text();
    assert_eq!(
        metric_sum(&m, "meridian_quota_decisions_total{quota=\"per-tenant\",decision=\"rejected\"}"),
        2.0
    );
    assert_eq!(metric_sum(&m, "meridian_quota_partition_bound{quota=\"per-ip\""), 0.0);

    phase("the next window starts over");
    std::thread::sleep(Duration::from_millis(4000 - unix_ms() % 4000 + 20));
    assert_eq!(get("/t", Some("acme")).status, 200);

    phase("a quota with limit 0 or a negative window is refused whole, naming the field");
    for bad in [quota("route", 0, 1000, "closed"), json!({"key": "route", "limit": 5, "window_ms": -1})] {
        let mut t2 = table.clone();
        t2["quotas"]["per-tenant"] = bad;
        let r = node.put_routes(&t2.to_string(), None);
        assert_eq!(r.status, 400, "{}", r.text());
        let e = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(e.contains("quotas.per-tenant"), "{e}");
    }
    assert_eq!(node.routes_version(), 1, "nothing was applied");
}

/// Send `count` pipelined GETs on one connection, each with its own `x-tenant`; returns how many
/// answers came back.
fn pipelined_keys(addr: SocketAddr, path: &str, first: usize, count: usize) -> usize {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut reqs = Vec::with_capacity(count * 80);
    for i in first..first + count {
        reqs.extend_from_slice(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nx-tenant: key-{i}\r\n\r\n").as_bytes(),
        );
    }
    let mut writer = s.try_clone().expect("clone");
    let w = std::thread::spawn(move || writer.write_all(&reqs));
    let mut seen = 0;
    let mut buf = vec![0u8; 1 << 16];
    let mut tail = Vec::new();
    while seen < count {
        let n = s.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        seen += tail.windows(9).filter(|w| w == b"HTTP/1.1 ").count();
        let keep = tail.len().saturating_sub(8);
        tail.drain(..keep);
    }
    let _ = w.join();
    seen
}

#[test]
fn a_burst_of_100k_keys_stays_bounded_and_expires() {
    let dir = TempDir::new("t90-burst");
    // No endpoint in this node's region: every admitted request ends in a quick 503, so the
    // burst measures the limiter, not an upstream.
    let mut table = simple_table("elsewhere", &["http://127.0.0.1:9".to_string()], json!({}));
    table["routes"][0]["quota"] = json!("per-tenant");
    table["quotas"] = json!({ "per-tenant": quota("header:x-tenant", 5, 1000, "local_share") });
    let node = Node::with_table("us-1", "us", &table, &[], &dir);
    let rss_before = node.proc.rss_kib();

    phase("10^5 distinct keys in a burst over 4 connections");
    let t0 = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|c| {
            let addr = node.http;
            std::thread::spawn(move || pipelined_keys(addr, "/", c * 25_000, 25_000))
        })
        .collect();
    let answered: usize = threads.into_iter().map(|t| t.join().expect("burst thread")).sum();
    assert_eq!(answered, 100_000);
    let took = t0.elapsed();
    let m = node.admin_get("/metrics").text();
    let decided = metric_sum(&m, "meridian_quota_decisions_total{quota=\"per-tenant\"");
    assert_eq!(decided, 100_000.0, "every request was counted");
    let rss_after = node.proc.rss_kib();
    eprintln!("burst took {took:?}; rss {rss_before} -> {rss_after} KiB");
    assert!(rss_after < rss_before + 200 * 1024, "rss grew from {rss_before} to {rss_after} KiB");

    phase("idle keys are forgotten within a few windows");
    eventually(
        Duration::from_secs(10),
        || node.metric("meridian_quota_tracked_keys{quota=\"per-tenant\"}") == 0.0,
        "tracked keys back to 0",
    );
}

/// Three regions (us, eu, ap), one node and one upstream each, sharing `quotas` on routes
/// `routes`. Field order is drop order.
struct World {
    nodes: Vec<ClusterNode>,
    _ups: Vec<Upstream>,
    _dir: TempDir,
}

const REGIONS: [&str; 3] = ["us", "eu", "ap"];

impl World {
    fn start(tag: &str, routes: Value, quotas: Value) -> World {
        let dir = TempDir::new(tag);
        let ids: Vec<String> = REGIONS.iter().map(|r| format!("{r}1")).collect();
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let tls = make_certs(dir.path(), "tls", &id_refs);
        let ups: Vec<Upstream> =
            REGIONS.iter().map(|r| Upstream::start(&format!("{r}-up"), dir.path())).collect();
        let table = json!({
            "services": { "echo": {
                "endpoints": { "us": [ups[0].url()], "eu": [ups[1].url()], "ap": [ups[2].url()] },
                "timeout_ms": 3000, "retries": 1 } },
            "routes": routes,
            "quotas": quotas,
        });
        let spec = ClusterSpec::new(&dir, &tls, &table, 3);
        let us = spec.start(&ids[0], "us", &[]);
        let eu = spec.start(&ids[1], "eu", &[us.gossip]);
        let ap = spec.start(&ids[2], "ap", &[us.gossip]);
        wait_cluster_ready(&[&us, &eu, &ap], Duration::from_secs(20));
        let world = World { nodes: vec![us, eu, ap], _ups: ups, _dir: dir };
        world.wait_leases(&world.nodes.iter().collect::<Vec<_>>(), Duration::from_secs(10));
        world
    }

    /// Until each of `nodes` holds a valid lease with every one of them a participant.
    fn wait_leases(&self, nodes: &[&ClusterNode], timeout: Duration) {
        eventually(
            timeout,
            || {
                nodes.iter().all(|n| {
                    let Some(r) = try_get(n.admin, "/quotas") else { return false };
                    let Ok(q) = serde_json::from_slice::<Value>(&r.body) else { return false };
                    q["quotas"].as_object().is_some_and(|qs| {
                        qs.values().all(|q| {
                            q["local"]["lease_valid"] == true
                                && nodes.iter().all(|m| q["leases"].get(&m.id).is_some())
                        })
                    })
                })
            },
            "every node holds a lease with all nodes participating",
        );
    }
}

/// One closed-loop load thread: requests to `addr` `path` with `x-tenant: t` until `stop`,
/// recording (ms, status).
fn load(addr: SocketAddr, path: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<(u64, u16)>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let status = try_request(addr, "GET", &path, &[("x-tenant", "t")], b"", Duration::from_secs(5))
                .map_or(0, |r| r.status);
            out.push((unix_ms(), status));
        }
        out
    })
}

/// Admitted (200) per window over all records.
fn admitted_per_window(records: &[(u64, u16)], window_ms: u64) -> BTreeMap<u64, u64> {
    let mut per = BTreeMap::new();
    for (t, s) in records {
        if *s == 200 {
            *per.entry(t / window_ms).or_insert(0) += 1;
        }
    }
    per
}

#[test]
fn uneven_load_across_three_regions_is_admitted_to_the_limit() {
    let _g = serial();
    const LIMIT: u64 = 200;
    let w = World::start(
        "t90-uneven",
        json!([{ "name": "all", "path_prefix": "/", "service": "echo", "quota": "per-tenant" }]),
        json!({ "per-tenant": quota("header:x-tenant", LIMIT, 1000, "local_share") }),
    );

    phase("load 4:2:1 on us1, eu1, ap1 for 7 s");
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (i, n) in [(0usize, 4), (1, 2), (2, 1)] {
        for _ in 0..n {
            threads.push((i, load(w.nodes[i].http, "/x".into(), stop.clone())));
        }
    }
    let start_ms = unix_ms();
    std::thread::sleep(Duration::from_secs(7));
    stop.store(true, Ordering::Relaxed);
    let mut per_node: Vec<Vec<(u64, u16)>> = vec![Vec::new(); 3];
    for (i, t) in threads {
        per_node[i].extend(t.join().expect("load thread"));
    }
    let end_ms = unix_ms();
    let all: Vec<(u64, u16)> = per_node.iter().flatten().copied().collect();
    assert!(all.iter().all(|(_, s)| *s == 200 || *s == 429), "only 200 and 429 expected");

    phase("every window admits at most the limit; the full windows after warm-up admit about it");
    let per = admitted_per_window(&all, 1000);
    // Full windows only, after 2 s of warm-up for demand to reach the ledger.
    let first = (start_ms + 2000) / 1000 + 1;
    let last = end_ms / 1000 - 1;
    let full: Vec<u64> = (first..last).map(|win| per.get(&win).copied().unwrap_or(0)).collect();
    let offered = all.len() as f64 / ((end_ms - start_ms) as f64 / 1000.0);
    eprintln!("offered {offered:.0}/s; admitted per full window {full:?} (limit {LIMIT})");
    assert!(offered > 2.0 * LIMIT as f64, "the load must exceed the limit: {offered:.0}/s");
    for (win, n) in &per {
        assert!(*n <= LIMIT + LIMIT / 20, "window {win} admitted {n} > limit {LIMIT} (+5% edge slop)");
    }
    let total: u64 = full.iter().sum();
    let ratio = total as f64 / (LIMIT * full.len() as u64) as f64;
    assert!(full.len() >= 3, "too few full windows: {full:?}");
    assert!((0.85..=1.05).contains(&ratio), "admitted {ratio:.3} of the limit over {full:?}");

    phase("the busiest node got the biggest share");
    let admitted_in = |i: usize| {
        per_node[i].iter().filter(|(t, s)| *s == 200 && *t / 1000 >= first && *t / 1000 < last).count()
    };
    let (us, eu, ap) = (admitted_in(0), admitted_in(1), admitted_in(2));
    eprintln!("admitted in full windows: us {us} eu {eu} ap {ap}");
    assert!(us > eu && eu > ap && ap > 0, "shares should follow demand 4:2:1: {us} {eu} {ap}");

    phase("/quotas shows the hot key's demand-based leases on every node");
    let q = w.nodes[1].admin_get("/quotas").json();
    let hot = &q["quotas"]["per-tenant"]["hot_keys"];
    assert!(hot.as_array().is_some_and(|h| h.iter().any(|k| k["key"] == "t")), "{q}");
}

#[test]
fn a_node_cut_off_from_the_leader_spends_its_lease_then_follows_its_policy() {
    let _g = serial();
    const LIMIT: u64 = 60;
    let routes = json!([
        { "name": "closed", "path_prefix": "/closed", "service": "echo", "quota": "closed" },
        { "name": "local", "path_prefix": "/local", "service": "echo", "quota": "local" },
        { "name": "open", "path_prefix": "/open", "service": "echo", "quota": "open" }
    ]);
    let quotas = json!({
        "closed": quota("route", LIMIT, 1000, "closed"),
        "local": quota("route", LIMIT, 1000, "local_share"),
        "open": quota("route", LIMIT, 1000, "open"),
    });
    let w = World::start("t90-partition", routes, quotas);
    let leader = w.nodes[0].leader().expect("leader");
    let cut = w.nodes.iter().position(|n| n.id != leader).expect("a follower");
    let others: Vec<&ClusterNode> =
        w.nodes.iter().enumerate().filter(|(i, _)| *i != cut).map(|(_, n)| n).collect();
    let node = &w.nodes[cut];
    let count = |path: &str, n: usize| -> (usize, usize) {
        let mut ok = 0;
        for _ in 0..n {
            if request(node.http, "GET", path, &[], b"").status == 200 {
                ok += 1;
            }
        }
        (ok, n - ok)
    };

    phase("with a lease: the route key's equal split (60 / 3 = 20 per window) until demand is seen");
    early_in_window(1000, 700);
    assert_eq!(count("/closed", 30), (20, 10));

    phase("the other two nodes (the leader among them) stop: the lease is spent first");
    for o in &others {
        o.proc.signal(SIGSTOP);
    }
    let stopped_at = Instant::now();
    next_window(1000);
    let fallback_before = node.metric("meridian_quota_fallback_decisions_total{quota=\"closed\"}");
    let (ok, _) = count("/closed", 70);
    assert!(
        (20..=LIMIT as usize).contains(&ok),
        "within the lease a leased share holds: {ok}; {}",
        node.admin_get("/quotas").text()
    );
    assert_eq!(
        node.metric("meridian_quota_fallback_decisions_total{quota=\"closed\"}"),
        fallback_before,
        "decided on the lease, not the fallback"
    );

    phase("after the lease and gossip's dead-node detection: each policy");
    eventually(
        Duration::from_secs(10),
        || node.metric("meridian_quota_lease_valid{quota=\"closed\"}") == 0.0,
        "lease expired",
    );
    eventually(
        Duration::from_secs(10),
        || node.metric("meridian_quota_partition_bound{quota=\"local\"") == LIMIT as f64,
        "local_share divides by the one live node it sees",
    );
    eprintln!("lease gone and peers dead {:?} after the stop", stopped_at.elapsed());
    next_window(1000);
    assert_eq!(count("/closed", 10), (0, 10), "closed admits nothing");
    next_window(1000);
    assert_eq!(count("/local", 70), (60, 10), "local_share: limit / live members (1)");
    assert_eq!(count("/open", 80), (80, 0), "open admits everything");
    let q = node.admin_get("/quotas").json();
    assert_eq!(q["quotas"]["closed"]["local"]["lease_valid"], false);
    assert_eq!(q["quotas"]["open"]["local"]["partition_bound_per_window"], Value::Null);

    phase("healed: the node takes leases again");
    for o in &others {
        o.proc.signal(SIGCONT);
    }
    w.wait_leases(&w.nodes.iter().collect::<Vec<_>>(), Duration::from_secs(20));
    next_window(1000);
    let (ok, _) = count("/closed", 70);
    assert!(ok > 0 && ok <= LIMIT as usize, "leased again: {ok}");
}

#[test]
fn the_leader_killed_under_load_never_grants_a_window_twice() {
    let _g = serial();
    const LIMIT: u64 = 150;
    let w = World::start(
        "t90-leader-kill",
        json!([{ "name": "all", "path_prefix": "/", "service": "echo", "quota": "per-tenant" }]),
        json!({ "per-tenant": quota("header:x-tenant", LIMIT, 1000, "local_share") }),
    );
    let leader = w.nodes[0].leader().expect("leader");
    let li = w.nodes.iter().position(|n| n.id == leader).expect("leader index");

    phase("load on all three nodes; the leader is SIGKILLed after 2.5 s");
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..3)
        .flat_map(|i| (0..2).map(move |_| i))
        .map(|i| load(w.nodes[i].http, "/x".into(), stop.clone()))
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    let killed_at = unix_ms();
    w.nodes[li].proc.signal(SIGKILL);
    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    let all: Vec<(u64, u16)> = threads.into_iter().flat_map(|t| t.join().expect("load thread")).collect();

    phase("no window, before, across or after the kill, admitted more than the limit");
    let per = admitted_per_window(&all, 1000);
    eprintln!("killed at window {}; admitted per window {per:?}", killed_at / 1000);
    for (win, n) in &per {
        assert!(*n <= LIMIT + LIMIT / 20, "window {win} admitted {n} > limit {LIMIT} (+5% edge slop)");
    }

    phase("the survivors elect a leader and keep taking leases");
    let survivors: Vec<&ClusterNode> =
        w.nodes.iter().enumerate().filter(|(i, _)| *i != li).map(|(_, n)| n).collect();
    wait_cluster_ready(&survivors, Duration::from_secs(15));
    let after = per.range(killed_at / 1000 + 4..).map(|(_, n)| *n).max().unwrap_or(0);
    assert!(after > LIMIT / 2, "admissions continue after the new leader: {per:?}");
}
