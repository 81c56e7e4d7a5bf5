//! Timeouts: per-try timeouts with a retry elsewhere, the request's total deadline, and upstreams
//! that cannot be reached at all.

use std::time::Duration;

use meridian_tests::*;

#[test]
fn per_try_timeout_then_retry_on_a_fast_endpoint() {
    let dir = TempDir::new("t30-pertry");
    let slow = Upstream::start("slow", dir.path());
    let fast = Upstream::start("fast", dir.path());
    let extra =
        json!({ "timeout_ms": 5000, "per_try_timeout_ms": 300, "outlier": { "consecutive_failures": 1000 } });
    let node = Node::with_table("n1", "us", &simple_table("us", &[slow.url(), fast.url()], extra), &[], &dir);
    slow.control("delay?ms=3000");

    phase("a GET that lands on the hanging endpoint is cut after 300 ms and served by the other");
    let mut sent = 0;
    let mut slow_hits = 0;
    while sent < 4 || slow_hits == 0 {
        assert!(sent < 40, "the slow endpoint was never picked in {sent} requests");
        let before = slow.requests();
        let (r, took) = timed(|| node.get(&format!("/t/{sent}")));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["name"], "fast");
        assert!(took < Duration::from_millis(1500), "request {sent} took {took:?}");
        if slow.requests() > before {
            slow_hits += 1;
            assert!(took >= Duration::from_millis(280), "per-try timeout fired early: {took:?}");
        }
        sent += 1;
    }
    assert_eq!(node.metric("meridian_retries_total"), slow_hits as f64);
    assert_eq!(fast.requests(), sent);
}

#[test]
fn total_timeout_gives_504_within_the_deadline() {
    let dir = TempDir::new("t30-total");
    let a = Upstream::start("a", dir.path());
    let b = Upstream::start("b", dir.path());
    let node = Node::with_table(
        "n1",
        "us",
        &simple_table("us", &[a.url()], json!({ "timeout_ms": 1000 })),
        &[],
        &dir,
    );
    a.control("delay?ms=10000");
    b.control("delay?ms=10000");

    phase("one hanging endpoint: 504 upstream_timeout after about timeout_ms");
    let (r, took) = timed(|| node.get("/slow"));
    assert_eq!(r.status, 504, "{}", r.text());
    let j = r.json();
    assert_eq!(j["error"], "upstream_timeout");
    assert_eq!(j["request_id"], r.header("x-request-id").expect("request id"));
    assert!(took >= Duration::from_millis(900), "gave up early: {took:?}");
    assert!(took < Duration::from_millis(2500), "took {took:?} for a 1000 ms deadline");

    phase("retries with per-try timeouts stay within the same total deadline");
    let extra = json!({ "timeout_ms": 1000, "per_try_timeout_ms": 400, "retries": 5,
                        "outlier": { "consecutive_failures": 1000 } });
    let table = simple_table("us", &[a.url(), b.url()], extra);
    assert_eq!(node.put_routes(&table.to_string(), None).status, 200);
    let (r, took) = timed(|| node.get("/slow-again"));
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert!(took >= Duration::from_millis(900), "gave up early: {took:?}");
    assert!(took < Duration::from_millis(2500), "took {took:?} for a 1000 ms deadline");
    assert!(node.metric("meridian_errors_total{cause=\"upstream_timeout\"}") >= 2.0);
    assert!(!node.panicked());
}

#[test]
fn unreachable_everywhere_gives_502() {
    let dir = TempDir::new("t30-unreach");
    let table = simple_table("us", &[closed_url(), closed_url()], json!({}));
    let node = Node::with_table("n1", "us", &table, &[], &dir);

    phase("every endpoint refuses connections: 502 upstream_unreachable, quickly, whatever the method");
    for method in ["GET", "POST", "DELETE"] {
        let (r, took) = timed(|| request(node.http, method, "/nowhere", &[], b""));
        assert_eq!(r.status, 502, "{method}: {}", r.text());
        let j = r.json();
        assert_eq!(j["error"], "upstream_unreachable");
        assert_eq!(j["request_id"], r.header("x-request-id").expect("request id"));
        assert!(took < Duration::from_secs(2), "{method} took {took:?}");
    }
    assert!(node.metric("meridian_errors_total{cause=\"upstream_unreachable\"}") >= 3.0);
    assert!(
        node.metric("meridian_retries_total") >= 1.0,
        "connect failures are retried on the other endpoint"
    );
}

#[test]
fn per_try_timeout_repeats_a_get_but_not_a_post() {
    let dir = TempDir::new("t30-post");
    let slow = Upstream::start("slow", dir.path());
    let extra = json!({ "timeout_ms": 5000, "per_try_timeout_ms": 300, "retries": 2,
                        "outlier": { "consecutive_failures": 1000 } });
    let node = Node::with_table("n1", "us", &simple_table("us", &[slow.url()], extra), &[], &dir);
    slow.control("delay?ms=3000");

    phase("a GET timing out is tried 1 + retries times, then 504");
    let (r, took) = timed(|| node.get("/g"));
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert!(took >= Duration::from_millis(850) && took < Duration::from_millis(2500), "took {took:?}");
    eventually(Duration::from_secs(1), || slow.requests() == 3, "three attempts reached the upstream");

    phase("a POST timing out may have been processed: it is not sent again");
    slow.control("reset");
    slow.control("delay?ms=3000");
    let (r, took) = timed(|| request(node.http, "POST", "/p", &[], b"{\"x\":1}"));
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(slow.requests(), 1, "the POST was sent more than once");
}
