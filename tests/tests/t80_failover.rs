//! Cross-region failover on a cluster of three regions (us, eu, ap), one node and one demo
//! upstream each, all real processes: an upstream killed under load, recovery when it comes back,
//! every region down, the one-hop rule, a 100 MB upload forwarded with bounded memory, and a peer
//! killed while it streams a forwarded answer.
//!
//! The tests take turns (`SERIAL`): each runs a three-node cluster with 200 ms health checks and
//! the machine they run on is small.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_tests::*;

const SIGKILL: i32 = 9;
const MB: u64 = 1_000_000;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Regions, in the order of `World::nodes` and `World::ups`; node ids are `<region>1`.
const REGIONS: [&str; 3] = ["us", "eu", "ap"];
const US: usize = 0;
const EU: usize = 1;
const AP: usize = 2;

fn node_id(region: usize) -> String {
    format!("{}1", REGIONS[region])
}

/// One service `echo` with an endpoint per region, 200 ms health checks, passive ejection kept
/// short (1 s) so recovery is paced by the active checks; `extra` overrides service fields.
fn table(ups: &[Upstream], extra: Value) -> Value {
    let mut svc = json!({
        "endpoints": { "us": [ups[US].url()], "eu": [ups[EU].url()], "ap": [ups[AP].url()] },
        "health_check": { "path": "/healthz", "interval_ms": 200, "timeout_ms": 100 },
        "outlier": { "base_ejection_ms": 1000, "max_ejection_ms": 2000 },
        "timeout_ms": 5000,
        "retries": 2
    });
    if let (Some(s), Some(extra)) = (svc.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "services": { "echo": svc },
        "routes": [ { "name": "all", "path_prefix": "/", "service": "echo" } ]
    })
}

/// Three regions of one node and one upstream each. Field order is drop order: processes first,
/// the directory holding their logs last.
struct World {
    nodes: Vec<ClusterNode>,
    ups: Vec<Upstream>,
    dir: TempDir,
}

impl World {
    fn start(tag: &str, service_extra: Value) -> World {
        let dir = TempDir::new(tag);
        let ids: Vec<String> = (0..3).map(node_id).collect();
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let tls = make_certs(dir.path(), "tls", &id_refs);
        let ups: Vec<Upstream> =
            REGIONS.iter().map(|r| Upstream::start(&format!("{r}-up"), dir.path())).collect();
        let spec = ClusterSpec::new(&dir, &tls, &table(&ups, service_extra), 3);
        let t0 = Instant::now();
        let us = spec.start(&ids[US], "us", &[]);
        let eu = spec.start(&ids[EU], "eu", &[us.gossip]);
        let ap = spec.start(&ids[AP], "ap", &[us.gossip]);
        let leader = wait_cluster_ready(&[&us, &eu, &ap], Duration::from_secs(15));
        let world = World { nodes: vec![us, eu, ap], ups, dir };
        world.wait_views(&[0, 1, 2], [Some(1), Some(1), Some(1)], Duration::from_secs(5));
        eprintln!("3 regions ready in {:?} (leader {leader}), every region healthy in gossip", t0.elapsed());
        world
    }

    /// Wait until each node in `viewers` sees member `r` live with `healthy[r]` healthy endpoints
    /// of `echo` (`None`: anything, dead included); returns the time it took.
    fn wait_views(&self, viewers: &[usize], healthy: [Option<u64>; 3], timeout: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            let views: Vec<Vec<Option<(bool, u64, u64)>>> = viewers
                .iter()
                .map(|&v| (0..3).map(|r| self.nodes[v].member_service(&node_id(r), "echo")).collect())
                .collect();
            let ok = views.iter().all(|view| {
                view.iter().zip(healthy).all(|(m, want)| match want {
                    None => true,
                    Some(w) => m.is_some_and(|(live, h, total)| live && total == 1 && h == w),
                })
            });
            if ok {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < timeout,
                "gossip views (live, healthy, total) of us/eu/ap by nodes {viewers:?} did not reach \
                 {healthy:?} within {timeout:?}: {views:?}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn assert_no_panics(&self) {
        for n in &self.nodes {
            assert!(!n.panicked(), "{} panicked:\n{}", n.id, n.stderr_tail(40));
        }
    }
}

fn region_of(r: &Response) -> &str {
    r.header("x-meridian-region").unwrap_or("")
}

/// Forwards the node made, summed over destination regions and answer codes.
fn forwards_from(n: &ClusterNode, from: &str) -> f64 {
    metric_sum(&n.metrics_text(), &format!("meridian_forwards_total{{from_region=\"{from}\""))
}

fn forward_log_lines(n: &ClusterNode) -> Vec<String> {
    n.proc.stderr().lines().filter(|l| l.contains("request forwarded")).map(String::from).collect()
}

/// One request of the load: what was sent and what came back.
struct Rec {
    method: &'static str,
    rid: String,
    started: Instant,
    took: Duration,
    result: Result<Response, String>,
}

const LOAD_REQUESTS: usize = 300;
const POST_BODY: usize = 1000;

/// 300 requests at 10 ms intervals, each with its own request id; every 10th is a POST with a
/// 1000-byte body. Counts progress in `done`.
fn run_load(addr: std::net::SocketAddr, done: Arc<AtomicUsize>) -> Vec<Rec> {
    let t0 = Instant::now();
    let body = vec![b'p'; POST_BODY];
    let mut recs = Vec::with_capacity(LOAD_REQUESTS);
    for i in 0..LOAD_REQUESTS {
        if t0.elapsed() > Duration::from_secs(20) {
            break; // something is very wrong; the assertions will say what
        }
        let due = t0 + Duration::from_millis(10 * i as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let post = i % 10 == 9;
        let method = if post { "POST" } else { "GET" };
        let rid = format!("t80-load-{i:03}");
        let started = Instant::now();
        let result = try_request(
            addr,
            method,
            &format!("/load?i={i}"),
            &[("x-request-id", &rid)],
            if post { &body } else { b"" },
            Duration::from_secs(5),
        )
        .map_err(|e| e.to_string());
        recs.push(Rec { method, rid, started, took: started.elapsed(), result });
        done.fetch_add(1, Ordering::Relaxed);
    }
    recs
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[test]
fn upstream_killed_under_load_fails_over_recovers_and_all_down_is_503() {
    let _serial = serial();
    let mut w = World::start("t80-load", json!({}));
    let us = &w.nodes[US];

    phase("warm-up: each node serves its own region");
    for (i, n) in w.nodes.iter().enumerate() {
        let r = n.get("/warm");
        assert_eq!(r.status, 200, "{}: {}", n.id, r.text());
        assert_eq!(region_of(&r), REGIONS[i], "{}", n.id);
        assert_eq!(r.json()["name"], format!("{}-up", REGIONS[i]));
    }
    for u in &w.ups {
        u.control("reset");
    }

    phase("load on the us node; SIGKILL the us upstream one second in, with three requests in flight");
    let done = Arc::new(AtomicUsize::new(0));
    let load = {
        let (addr, done) = (us.http, done.clone());
        std::thread::spawn(move || run_load(addr, done))
    };
    eventually(Duration::from_secs(10), || done.load(Ordering::Relaxed) >= 100, "100 load requests done");
    // Requests the us upstream holds for 2.5 s, so they are certainly in flight when it dies
    // (300 ms after they start, with room for a loaded machine):
    // a plain POST (reached the upstream: must not be repeated anywhere), a POST with an
    // idempotency key and a GET (both may be repeated in another region).
    // (method, request id, idempotency key)
    let inflight = [
        ("POST", "t80-inflight-post", None),
        ("POST", "t80-inflight-idem", Some("t80-key-1")),
        ("GET", "t80-inflight-get", None),
    ];
    let probes: Vec<_> = inflight
        .into_iter()
        .map(|(method, rid, key)| {
            let addr = us.http;
            std::thread::spawn(move || {
                let mut h = vec![("x-request-id", rid)];
                h.extend(key.map(|k| ("idempotency-key", k)));
                let body: &[u8] = if method == "POST" { b"in-flight" } else { b"" };
                let path = format!("/inflight/{rid}?delay_ms=2500");
                let r = try_request(addr, method, &path, &h, body, Duration::from_secs(10));
                (rid, r.map_err(|e| e.to_string()))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    w.ups[US].proc.signal(SIGKILL);
    let killed_at = Instant::now();
    assert!(w.ups[US].proc.wait_exit(Duration::from_secs(5)).is_some(), "us upstream did not die");
    let down_in = w.wait_views(&[US], [Some(0), Some(1), Some(1)], Duration::from_secs(5));
    eprintln!("us node's gossip view shows us unhealthy {down_in:?} after the kill");

    let recs = load.join().expect("load thread");
    let probes: Vec<(&str, Result<Response, String>)> =
        probes.into_iter().map(|p| p.join().expect("probe thread")).collect();
    let load_took = recs.last().map(|r| r.started + r.took).unwrap_or(killed_at) - recs[0].started;
    eprintln!("load: {} requests in {load_took:?}", recs.len());
    assert_eq!(recs.len(), LOAD_REQUESTS, "the load did not finish in time");

    phase("every GET answered 200; every POST answered once, with its own id echoed");
    let mut by_region = [0usize; 3];
    let mut served_elsewhere = 0usize; // load requests the us node got answered by eu or ap
    let mut post_bytes_elsewhere = 0u64;
    let (mut local_lat, mut fwd_lat) = (Vec::new(), Vec::new());
    for rec in &recs {
        let r = match &rec.result {
            Ok(r) => r,
            Err(e) => panic!("{} {}: no answer: {e}", rec.method, rec.rid),
        };
        let in_flight_at_kill = rec.started <= killed_at && killed_at <= rec.started + rec.took;
        if r.status != 200 {
            // Only a POST the dying upstream had already received may fail (502, not repeated).
            assert!(
                rec.method == "POST" && in_flight_at_kill && r.status == 502,
                "{} {} answered {}: {}",
                rec.method,
                rec.rid,
                r.status,
                r.text()
            );
            continue;
        }
        assert_eq!(r.header("x-request-id"), Some(rec.rid.as_str()), "{}", rec.rid);
        let j = r.json();
        assert_eq!(j["request_id"], rec.rid.as_str(), "the upstream saw the client's id: {j}");
        let region = region_of(r);
        let ri = REGIONS.iter().position(|x| *x == region).unwrap_or_else(|| panic!("region {region:?}"));
        by_region[ri] += 1;
        assert_eq!(
            j["name"],
            format!("{region}-up"),
            "{}: region header names the serving upstream",
            rec.rid
        );
        assert_eq!(r.header("x-meridian-node"), Some(node_id(ri).as_str()), "{}", rec.rid);
        // The serving upstream's own fields come back across regions too.
        assert_eq!(r.header("content-type"), Some("application/json"), "{}: {:?}", rec.rid, r.headers);
        if rec.method == "POST" {
            assert_eq!(j["body_bytes"], POST_BODY, "{}: {j}", rec.rid);
        }
        if rec.started > killed_at {
            assert_ne!(region, "us", "{} started after the kill but was served by us", rec.rid);
        }
        if region == "us" {
            local_lat.push(rec.took);
        } else {
            served_elsewhere += 1;
            fwd_lat.push(rec.took);
            if rec.method == "POST" {
                post_bytes_elsewhere += POST_BODY as u64;
            }
        }
    }
    eprintln!(
        "served by region us/eu/ap: {by_region:?}; client latency median local {:?}, forwarded {:?}",
        median(local_lat.clone()),
        median(fwd_lat.clone())
    );
    assert!(by_region[US] >= 90, "the first second was served locally: {by_region:?}");
    assert!(served_elsewhere >= 150, "the rest was served by eu or ap: {by_region:?}");

    phase("requests in flight at the kill: a plain POST is not repeated, idempotent ones are");
    let mut extra_forwards = 0usize;
    let mut extra_post_bytes = 0u64;
    for (rid, r) in &probes {
        let r = r.as_ref().unwrap_or_else(|e| panic!("{rid}: no answer: {e}"));
        eprintln!("{rid}: {} from {} {}", r.status, region_of(r), r.text());
        assert_eq!(r.header("x-request-id"), Some(*rid));
        if *rid == "t80-inflight-post" {
            assert_eq!(r.status, 502, "a POST that reached the dying upstream must not go elsewhere");
            assert_eq!(r.json()["error"], "upstream_unreachable", "{}", r.text());
        } else {
            assert_eq!(r.status, 200, "{rid} may be repeated in another region: {}", r.text());
            assert!(["eu", "ap"].contains(&region_of(r)), "{rid}: {:?}", r.headers);
            extra_forwards += 1;
            if *rid == "t80-inflight-idem" {
                extra_post_bytes += b"in-flight".len() as u64;
            }
        }
    }

    phase("no request reached eu or ap that its answer does not account for; no duplicate ids");
    let stats: Vec<Value> = [EU, AP].iter().map(|&r| w.ups[r].stats()).collect();
    let reached: u64 = stats.iter().map(|s| s["requests"].as_u64().unwrap_or(0)).sum();
    let bytes: u64 = stats.iter().map(|s| s["body_bytes"].as_u64().unwrap_or(0)).sum();
    for (s, r) in stats.iter().zip(["eu", "ap"]) {
        assert_eq!(s["duplicate_request_ids"], 0, "{r} upstream served a request id twice: {s}");
    }
    assert_eq!(
        reached as usize,
        served_elsewhere + extra_forwards,
        "eu+ap upstream request counts: {stats:?}"
    );
    assert_eq!(bytes, post_bytes_elsewhere + extra_post_bytes, "POST bytes reaching eu+ap: {stats:?}");

    phase("metrics and logs of the us node show the forwards");
    let text = us.metrics_text();
    for (series, v) in metric_series(&text, "meridian_forward") {
        eprintln!("  {series} {v}");
    }
    let forwards = forwards_from(us, "us");
    assert_eq!(forwards as usize, served_elsewhere + extra_forwards, "meridian_forwards_total from us");
    let ok_forwards =
        metric_sum(&text, "meridian_forwards_total{from_region=\"us\",to_region=\"eu\",code=\"200\"}")
            + metric_sum(&text, "meridian_forwards_total{from_region=\"us\",to_region=\"ap\",code=\"200\"}");
    assert_eq!(ok_forwards, forwards, "every forward answered 200");
    assert_eq!(metric_sum(&text, "meridian_forward_failures_total"), 0.0);
    for series in [
        "meridian_request_duration_seconds{route=\"all\",region=\"us\"",
        "meridian_request_duration_seconds{route=\"all\",region=\"eu\"",
        "meridian_request_duration_seconds{route=\"all\",region=\"ap\"",
    ] {
        for (s, v) in metric_series(&text, series) {
            eprintln!("  {s} {v}");
        }
    }
    let logged = forward_log_lines(us);
    assert_eq!(logged.len(), forwards as usize, "one `request forwarded` line per forward");
    let first_forwarded = recs
        .iter()
        .find(|r| r.result.as_ref().is_ok_and(|r| r.status == 200 && region_of(r) != "us"))
        .expect("a forwarded load request");
    assert!(
        logged.iter().any(|l| l.contains(&first_forwarded.rid)),
        "no `request forwarded` line names {}:\n{}",
        first_forwarded.rid,
        logged.join("\n")
    );
    eprintln!("e.g. {}", logged[0]);
    for n in &w.nodes[1..] {
        assert_eq!(forwards_from(n, &n.region), 0.0, "{} forwarded", n.id);
        assert!(forward_log_lines(n).is_empty(), "{} forwarded a forwarded request", n.id);
    }

    phase("recovery: a us upstream back on the same port takes the traffic again within seconds");
    let addr = w.ups[US].addr;
    let restarted_at = Instant::now();
    w.ups[US] = Upstream::start_on("us-up-2", addr, w.dir.path(), Duration::from_secs(5));
    let listening = restarted_at.elapsed();
    let us = &w.nodes[US];
    let mut polls = 0;
    eventually(
        Duration::from_secs(5),
        || {
            polls += 1;
            let r = us.get("/recovering");
            assert_eq!(r.status, 200, "while recovering: {}", r.text());
            region_of(&r) == "us"
        },
        "us node serves from us again",
    );
    let recovered = restarted_at.elapsed();
    eprintln!("upstream listening after {listening:?}; served locally again {recovered:?} after restart ({polls} polls)");
    for i in 0..20 {
        let r = us.get(&format!("/after-recovery/{i}"));
        assert_eq!((r.status, region_of(&r)), (200, "us"), "no sticky failover: {}", r.text());
        assert_eq!(r.json()["name"], "us-up-2");
    }
    w.wait_views(&[0, 1, 2], [Some(1), Some(1), Some(1)], Duration::from_secs(3));

    phase("every region down: a GET to any node answers 503 no_healthy_upstream within 1 s");
    for u in &mut w.ups {
        u.proc.signal(SIGKILL);
    }
    let all_killed = Instant::now();
    for u in &mut w.ups {
        assert!(u.proc.wait_exit(Duration::from_secs(5)).is_some(), "{} did not die", u.proc.name);
    }
    // Right after the kill gossip may still call a region healthy: a failure, but a fast one.
    for n in &w.nodes {
        let (r, took) =
            timed(|| try_request(n.http, "GET", "/all-down-early", &[], b"", Duration::from_secs(5)));
        let r = r.unwrap_or_else(|e| panic!("{}: no answer: {e}", n.id));
        eprintln!("{} right after every upstream died: {} in {took:?}: {}", n.id, r.status, r.text());
        assert!(matches!(r.status, 502..=504), "{}: {}", n.id, r.text());
        assert!(took < Duration::from_secs(1), "{}: {took:?}", n.id);
    }
    let converged = w.wait_views(&[0, 1, 2], [Some(0), Some(0), Some(0)], Duration::from_secs(5));
    eprintln!(
        "every view shows every region unhealthy {converged:?} after the first GETs ({:?} after the kill)",
        all_killed.elapsed()
    );
    for n in &w.nodes {
        let (r, took) = timed(|| try_request(n.http, "GET", "/all-down", &[], b"", Duration::from_secs(5)));
        let r = r.unwrap_or_else(|e| panic!("{}: no answer: {e}", n.id));
        eprintln!("{}: {} in {took:?}", n.id, r.status);
        assert_eq!(r.status, 503, "{}: {}", n.id, r.text());
        assert_eq!(r.json()["error"], "no_healthy_upstream", "{}", r.text());
        assert!(r.header("x-request-id").is_some());
        assert!(took < Duration::from_secs(1), "{}: 503 took {took:?}", n.id);
    }
    w.assert_no_panics();
}

#[test]
fn a_forwarded_request_is_never_forwarded_again() {
    let _serial = serial();
    // No local retries, so each region's upstream sees exactly one attempt per request.
    let w = World::start("t80-hop", json!({ "retries": 0 }));

    phase("every upstream answers 503 while passing its health checks: gossip calls every region healthy");
    for u in &w.ups {
        u.control("reset");
        u.control("fail?status=503");
    }
    std::thread::sleep(Duration::from_millis(600));
    w.wait_views(&[0, 1, 2], [Some(1), Some(1), Some(1)], Duration::from_secs(3));

    phase("a GET to us is forwarded once; the receiving region does not forward it on");
    for i in 0..5u64 {
        let rid = format!("t80-hop-{i}");
        let before: Vec<u64> = w.ups.iter().map(Upstream::requests).collect();
        let r = request(w.nodes[US].http, "GET", "/hop", &[("x-request-id", &rid)], b"");
        let after: Vec<u64> = w.ups.iter().map(Upstream::requests).collect();
        let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        eprintln!(
            "{rid}: {} from {} ({:?}); upstream requests us/eu/ap +{delta:?}",
            r.status,
            region_of(&r),
            r.text()
        );
        assert!(matches!(r.status, 502 | 503), "{}", r.text());
        assert_eq!(r.header("x-request-id"), Some(rid.as_str()));
        let to = region_of(&r);
        assert!(to == "eu" || to == "ap", "answered by another region: {:?}", r.headers);
        assert_eq!(delta[US], 1, "one local attempt");
        let (served, other) = if to == "eu" { (EU, AP) } else { (AP, EU) };
        assert_eq!(delta[served], 1, "{to} tried its own upstream once");
        assert_eq!(delta[other], 0, "the forwarded request went on to a third region");
    }
    assert_eq!(forwards_from(&w.nodes[US], "us"), 5.0);
    for r in [EU, AP] {
        let n = &w.nodes[r];
        assert_eq!(forwards_from(n, REGIONS[r]), 0.0, "{} forwarded", n.id);
        assert!(forward_log_lines(n).is_empty(), "{} forwarded:\n{}", n.id, forward_log_lines(n).join("\n"));
    }
    w.assert_no_panics();
}

#[test]
fn a_100_mb_upload_is_forwarded_with_bounded_memory() {
    let _serial = serial();
    // The total timeout runs until response headers, which the demo upstream sends after the body.
    let w = World::start("t80-upload", json!({ "timeout_ms": 120000 }));
    let (us, eu) = (&w.nodes[US], &w.nodes[EU]);

    phase("us and ap fail their health checks: only eu can serve");
    w.ups[US].control("healthz?ok=false");
    w.ups[AP].control("healthz?ok=false");
    let t = w.wait_views(&[US], [Some(0), Some(1), Some(0)], Duration::from_secs(5));
    eprintln!("us node's view: us and ap unhealthy after {t:?}");
    for i in 0..3 {
        let r = request(us.http, "POST", &format!("/warm/{i}"), &[], &[1u8; 100_000]);
        assert_eq!((r.status, region_of(&r)), (200, "eu"), "{}", r.text());
    }
    for u in &w.ups {
        u.control("stats");
    }
    w.ups[EU].control("reset");
    std::thread::sleep(Duration::from_millis(200));
    let (us_base, eu_base) = (us.proc.rss_kib(), eu.proc.rss_kib());
    assert!(us_base > 0 && eu_base > 0, "cannot read RSS");

    phase("POST 100 MB with content-length, written in 64 KiB chunks, through the us node");
    const SIZE: u64 = 100 * MB;
    let addr = us.http;
    let writer = std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        s.set_write_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let head = format!(
            "POST /upload HTTP/1.1\r\nhost: x\r\nx-request-id: t80-upload\r\ncontent-length: {SIZE}\r\nconnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).expect("head");
        let chunk = vec![0x5au8; 64 * 1024];
        let mut left = SIZE as usize;
        while left > 0 {
            let n = left.min(chunk.len());
            s.write_all(&chunk[..n]).expect("body chunk");
            left -= n;
        }
        let sent = t0.elapsed();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).expect("answer");
        (parse_response(&answer).expect("HTTP answer"), sent, t0.elapsed())
    });
    let t0 = Instant::now();
    let (mut us_peak, mut eu_peak) = (0, 0);
    while !writer.is_finished() {
        assert!(t0.elapsed() < Duration::from_secs(90), "upload still running after 90 s");
        us_peak = us_peak.max(us.proc.rss_kib());
        eu_peak = eu_peak.max(eu.proc.rss_kib());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (r, sent, took) = writer.join().expect("upload thread");
    eprintln!(
        "100 MB forwarded upload: body written in {sent:?}, answered in {took:?} ({:.1} MB/s); \
         RSS us {us_base} -> peak {us_peak} KiB, eu {eu_base} -> peak {eu_peak} KiB",
        SIZE as f64 / 1e6 / took.as_secs_f64()
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(region_of(&r), "eu");
    assert_eq!(r.header("x-request-id"), Some("t80-upload"));
    let j = r.json();
    assert_eq!(j["body_bytes"], SIZE, "{j}");
    assert_eq!(j["name"], "eu-up");
    let s = w.ups[EU].stats();
    assert_eq!(s["body_bytes"], SIZE, "{s}");
    assert_eq!(s["requests"], 1, "{s}");
    assert_eq!(w.ups[US].stats()["body_bytes"], 0, "nothing reached the unhealthy us upstream");

    phase("memory stayed bounded on both nodes");
    let slack = 64 * 1024;
    assert!(us_peak < us_base + slack, "us node RSS grew from {us_base} KiB to {us_peak} KiB");
    assert!(eu_peak < eu_base + slack, "eu node RSS grew from {eu_base} KiB to {eu_peak} KiB");
    let fwd = metric_series(
        &us.metrics_text(),
        "meridian_forward_duration_seconds{from_region=\"us\",to_region=\"eu\"",
    );
    eprintln!("{fwd:?}");
    w.assert_no_panics();
}

#[test]
fn a_peer_killed_mid_stream_ends_the_response_promptly() {
    let _serial = serial();
    let w = World::start("t80-midstream", json!({}));
    let us = &w.nodes[US];

    phase("us and ap fail their health checks: a request to us goes to eu");
    w.ups[US].control("healthz?ok=false");
    w.ups[AP].control("healthz?ok=false");
    w.wait_views(&[US], [Some(0), Some(1), Some(0)], Duration::from_secs(5));

    phase("GET ?bytes=200000000 through us, read 1 MB of it, then SIGKILL the eu node");
    let mut s = TcpStream::connect(us.http).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let head = "GET /big?bytes=200000000 HTTP/1.1\r\nhost: x\r\nx-request-id: t80-midstream\r\nconnection: close\r\n\r\n";
    s.write_all(head.as_bytes()).expect("request");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let end = loop {
        let n = s.read(&mut buf).expect("reading the response head");
        assert!(n > 0, "closed before the response head");
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let resp = parse_response(&got[..end]).expect("response head");
    assert_eq!(resp.status, 200, "{:?}", resp.headers);
    assert_eq!(region_of(&resp), "eu", "{:?}", resp.headers);
    assert_eq!(resp.header("x-meridian-node"), Some("eu1"));
    assert_eq!(resp.header("x-request-id"), Some("t80-midstream"));
    while got.len() - end < 1_000_000 {
        let n = s.read(&mut buf).expect("reading the first megabyte");
        assert!(n > 0, "closed after {} body bytes", got.len() - end);
        got.extend_from_slice(&buf[..n]);
    }
    w.nodes[EU].proc.signal(SIGKILL);
    let killed_at = Instant::now();

    // The rest of the body is read in a thread while the us node is checked meanwhile.
    let reader = std::thread::spawn(move || read_until_closed(&mut s, Duration::from_secs(15)));

    phase("meanwhile the us node stays healthy and serves later requests");
    assert_eq!(us.admin_get("/healthz").status, 200);
    eventually(
        Duration::from_secs(10),
        || us.member("eu1").is_some_and(|m| m["live"] == false),
        "the us node's gossip reports eu1 dead",
    );
    let dead_in = killed_at.elapsed();
    eprintln!("us node's gossip reports eu1 dead {dead_in:?} after the kill");
    w.ups[AP].control("healthz?ok=true");
    w.wait_views(&[US], [Some(0), None, Some(1)], Duration::from_secs(5));
    for i in 0..5 {
        let r = request(us.http, "GET", &format!("/later/{i}"), &[], b"");
        assert_eq!((r.status, region_of(&r)), (200, "ap"), "{}", r.text());
    }
    w.ups[US].control("healthz?ok=true");
    w.wait_views(&[US], [Some(1), None, Some(1)], Duration::from_secs(5));
    let r = us.get("/later-local");
    assert_eq!((r.status, region_of(&r)), (200, "us"), "{}", r.text());

    phase("the client saw the response end, truncated, within a few seconds of the kill");
    let (rest, ended) = reader.join().expect("reader thread");
    let wire = (got.len() - end + rest.len()) as u64;
    eprintln!(
        "headers {:?}; after the kill: {} more bytes, connection ended {ended:?} after the kill; \
         {wire} body bytes of 200000000 received",
        resp.headers,
        rest.len(),
    );
    let ended = ended.unwrap_or_else(|| {
        panic!(
            "the response was still open 15 s after the eu node died (gossip on us reported eu1 dead \
             after {dead_in:?}; {wire} body bytes so far); us log:\n{}",
            us.stderr_tail(8)
        )
    });
    assert!(ended < Duration::from_secs(5), "the response ended only {ended:?} after the peer died");
    assert!(wire < 200 * MB, "the body cannot be complete: {wire} bytes");
    if resp.header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        assert!(!rest.ends_with(b"0\r\n\r\n"), "a truncated chunked body must not end with the last chunk");
    } else {
        assert_eq!(resp.header("content-length"), Some("200000000"), "{:?}", resp.headers);
    }
    let text = us.metrics_text();
    eprintln!("{:?}", metric_series(&text, "meridian_forward"));
    for n in [&w.nodes[US], &w.nodes[AP]] {
        assert!(!n.panicked(), "{} panicked:\n{}", n.id, n.stderr_tail(40));
    }
}

#[test]
fn failover_settings_budget_switch_and_threshold() {
    let _serial = serial();
    // No local retries and a cross-region budget of ratio 0: only the floor (1 per second over a
    // 10 s window) remains, so exactly 10 forwards after failed local attempts are allowed. No
    // passive ejection either: an ejected endpoint would make every request "no healthy local
    // endpoint", which is forwarded without budget.
    let w = World::start(
        "t80-settings",
        json!({
            "retries": 0,
            "failover": { "budget_ratio": 0.0 },
            "outlier": { "consecutive_failures": 1000 }
        }),
    );

    phase("us answers 503 while passing health checks: forwards after a failed attempt are budgeted");
    w.ups[US].control("fail?status=503");
    let mut forwarded = 0;
    let mut local = 0;
    for i in 0..25 {
        let r = request(w.nodes[US].http, "GET", &format!("/budget/{i}"), &[], b"");
        match region_of(&r) {
            "us" => {
                assert_eq!(r.status, 503, "{}", r.text());
                local += 1;
            }
            _ => {
                assert_eq!(r.status, 200, "{}", r.text());
                forwarded += 1;
            }
        }
    }
    eprintln!("25 GETs: {forwarded} forwarded, {local} answered by us with its 503");
    assert_eq!(forwarded, 10, "the cross-region budget's floor is 10 forwards per 10 s");
    assert_eq!(local, 15);
    w.ups[US].control("fail?status=0");

    phase("failover switched off: a region with no healthy endpoint answers 503 itself");
    let table_off = table(&w.ups, json!({ "retries": 0, "failover": { "enabled": false } }));
    let r = w.nodes[EU].put_routes(&table_off.to_string(), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json()["version"].as_u64().expect("version");
    let refs: Vec<&ClusterNode> = w.nodes.iter().collect();
    wait_all_at_version(&refs, v, Duration::from_secs(5));
    w.ups[US].control("healthz?ok=false");
    w.wait_views(&[US], [Some(0), Some(1), Some(1)], Duration::from_secs(5));
    let r = request(w.nodes[US].http, "GET", "/off", &[], b"");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(region_of(&r), "us");
    assert_eq!(r.json()["error"], "no_healthy_upstream");
    w.ups[US].control("healthz?ok=true");

    phase("threshold: us with 1 of 2 endpoints up (50 %) under local_healthy_below_percent 60 forwards everything");
    let second = Upstream::start("us-up-2", w.dir.path());
    let mut t = table(&w.ups, json!({ "retries": 0, "failover": { "local_healthy_below_percent": 60 } }));
    t["services"]["echo"]["endpoints"]["us"] = json!([w.ups[US].url(), second.url()]);
    let r = w.nodes[EU].put_routes(&t.to_string(), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json()["version"].as_u64().expect("version");
    wait_all_at_version(&refs, v, Duration::from_secs(5));
    second.control("healthz?ok=false");
    let us_health = || w.nodes[US].member_service(&node_id(US), "echo").map(|(_, h, t)| (h, t));
    let deadline = Instant::now() + Duration::from_secs(5);
    while us_health() != Some((1, 2)) {
        assert!(Instant::now() < deadline, "us should see 1 of 2 healthy, sees {:?}", us_health());
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..5 {
        let r = request(w.nodes[US].http, "GET", &format!("/threshold/{i}"), &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_ne!(region_of(&r), "us", "served locally below the threshold: {:?}", r.headers);
    }
    second.control("healthz?ok=true");
    eventually(Duration::from_secs(5), || us_health() == Some((2, 2)), "us sees 2 of 2 healthy");
    let r = request(w.nodes[US].http, "GET", "/threshold/back", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(region_of(&r), "us", "back above the threshold, served locally");
    w.assert_no_panics();
}
