//! Resilience against failing upstreams: active health checks, passive ejection, retries and the
//! retry budget, and what a client sees when no local endpoint is left.

use std::time::{Duration, Instant};

use meridian_tests::*;

/// Outlier settings that never eject within a test, so retries are the only thing observed.
fn no_ejection() -> Value {
    json!({ "outlier": { "consecutive_failures": 1000 } })
}

#[test]
fn active_health_checks_mark_an_endpoint_down_and_back_up() {
    let dir = TempDir::new("t20-hc");
    let a = Upstream::start("a", dir.path());
    let b = Upstream::start("b", dir.path());
    let check = json!({ "health_check": { "path": "/healthz", "interval_ms": 100, "timeout_ms": 200 } });
    let node = Node::with_table("n1", "us", &simple_table("us", &[a.url(), b.url()], check), &[], &dir);
    let a_up = endpoint_up_series("echo", &a.url());
    let b_up = endpoint_up_series("echo", &b.url());

    phase("both endpoints start healthy");
    assert_eq!(node.service_health("echo"), (2, 2));

    phase("failing health checks take an endpoint out: /cluster, metrics and traffic agree");
    a.control("healthz?ok=false");
    eventually(
        Duration::from_secs(5),
        || node.service_health("echo") == (1, 2),
        "/cluster shows 1/2 healthy",
    );
    assert_eq!(node.metric(&a_up), 0.0, "meridian_endpoint_up of the failing endpoint");
    assert_eq!(node.metric(&b_up), 1.0, "meridian_endpoint_up of the healthy endpoint");
    assert!(node.metric("meridian_health_transitions_total") >= 1.0);
    a.control("reset");
    a.control("healthz?ok=false");
    b.control("reset");
    for i in 0..20 {
        let r = node.get(&format!("/down/{i}"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["name"], "b", "request {i} went to the endpoint marked down");
    }
    assert_eq!(a.requests(), 0, "an endpoint marked down gets no traffic");
    assert_eq!(b.requests(), 20);

    phase("passing health checks bring it back");
    a.control("healthz?ok=true");
    eventually(
        Duration::from_secs(5),
        || node.service_health("echo") == (2, 2),
        "/cluster shows 2/2 healthy",
    );
    assert_eq!(node.metric(&a_up), 1.0);
    let mut back = false;
    for i in 0..50 {
        let r = node.get(&format!("/up/{i}"));
        assert_eq!(r.status, 200, "{}", r.text());
        if r.json()["name"] == "a" {
            back = true;
            break;
        }
    }
    assert!(back, "traffic reaches the endpoint again once it is marked up");
    assert!(node.metric("meridian_health_transitions_total") >= 2.0);
    assert!(!node.panicked());
}

#[test]
fn consecutive_5xx_eject_an_endpoint_until_its_time_is_up() {
    let dir = TempDir::new("t20-eject");
    let a = Upstream::start("a", dir.path());
    let b = Upstream::start("b", dir.path());
    let outlier =
        json!({ "outlier": { "consecutive_failures": 3, "base_ejection_ms": 500, "max_ejection_ms": 5000 } });
    let node = Node::with_table("n1", "us", &simple_table("us", &[a.url(), b.url()], outlier), &[], &dir);
    let a_up = endpoint_up_series("echo", &a.url());

    phase("an endpoint answering 503 is ejected after 3 failures in a row; clients never notice");
    a.control("fail?status=503");
    let mut sent = 0;
    while node.metric("meridian_ejections_total") < 1.0 {
        assert!(sent < 200, "no ejection after {sent} requests (a saw {})", a.requests());
        let r = node.get(&format!("/e/{sent}"));
        assert_eq!(r.status, 200, "GETs that hit the failing endpoint are retried: {}", r.text());
        assert_eq!(r.json()["name"], "b");
        sent += 1;
    }
    let ejected_at = Instant::now();
    assert_eq!(a.requests(), 3, "ejected after exactly consecutive_failures attempts");
    assert_eq!(node.metric(&a_up), 0.0, "an ejected endpoint is reported down");
    assert_eq!(node.service_health("echo"), (1, 2));

    phase("while ejected it gets no traffic, even once it has recovered");
    a.control("reset");
    let mut during = 0;
    while ejected_at.elapsed() < Duration::from_millis(250) && during < 10 {
        assert_eq!(node.get("/during").json()["name"], "b");
        during += 1;
    }
    assert!(during > 0);
    assert_eq!(a.requests(), 0, "{during} requests within 250 ms of the ejection reached it");

    phase("it is re-admitted when base_ejection_ms has passed, and takes traffic again");
    eventually(Duration::from_secs(3), || node.metric(&a_up) == 1.0, "endpoint re-admitted");
    let out_for = ejected_at.elapsed();
    assert!(out_for >= Duration::from_millis(300), "re-admitted after only {out_for:?}");
    let mut back = false;
    for i in 0..50 {
        if node.get(&format!("/after/{i}")).json()["name"] == "a" {
            back = true;
            break;
        }
    }
    assert!(back, "traffic reaches the re-admitted endpoint");
    assert_eq!(node.metric("meridian_ejections_total"), 1.0);
    assert!(!node.panicked());
}

#[test]
fn idempotent_get_is_retried_on_another_endpoint_after_503() {
    let dir = TempDir::new("t20-get");
    let a = Upstream::start("a", dir.path());
    let b = Upstream::start("b", dir.path());
    let node =
        Node::with_table("n1", "us", &simple_table("us", &[a.url(), b.url()], no_ejection()), &[], &dir);
    a.control("fail?status=503");

    phase("every GET succeeds although one endpoint answers 503");
    let mut sent = 0;
    while sent < 10 || a.requests() == 0 {
        assert!(sent < 100, "the failing endpoint was never picked in {sent} requests");
        let r = node.get(&format!("/g/{sent}"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["name"], "b");
        sent += 1;
    }

    phase("each attempt on the failing endpoint cost exactly one retry, sent to the other one");
    let failed = a.requests();
    assert_eq!(node.metric("meridian_retries_total"), failed as f64);
    assert_eq!(b.requests(), sent, "b served every request exactly once");
    assert_eq!(b.stats()["duplicate_request_ids"], 0);
    assert_eq!(node.metric("meridian_retries_denied_total"), 0.0);
}

#[test]
fn post_that_reached_a_503_upstream_is_not_retried() {
    let dir = TempDir::new("t20-post503");
    let a = Upstream::start("a", dir.path());
    let b = Upstream::start("b", dir.path());
    let node =
        Node::with_table("n1", "us", &simple_table("us", &[a.url(), b.url()], no_ejection()), &[], &dir);
    a.control("fail?status=503");

    phase("a POST answered 503 comes back to the client as is; the other endpoint never sees it");
    let mut saw_503 = false;
    for i in 0..40 {
        a.control("reset");
        a.control("fail?status=503");
        b.control("reset");
        let r = request(node.http, "POST", &format!("/p/{i}"), &[], b"{\"order\":1}");
        let (na, nb) = (a.requests(), b.requests());
        if r.status == 503 {
            assert_eq!(r.json()["name"], "a", "the upstream's own 503 is passed through: {}", r.text());
            assert_eq!((na, nb), (1, 0), "POST {i} reached a {na} times and b {nb} times");
            saw_503 = true;
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!((na, nb), (0, 1), "POST {i} answered by b");
    }
    assert!(saw_503, "no POST was routed to the failing endpoint in 40 tries");
    assert_eq!(node.metric("meridian_retries_total"), 0.0);
}

#[test]
fn post_to_a_dead_endpoint_is_retried_on_a_live_one() {
    let dir = TempDir::new("t20-postdead");
    let b = Upstream::start("b", dir.path());
    let dead = closed_url();
    let node = Node::with_table("n1", "us", &simple_table("us", &[dead, b.url()], no_ejection()), &[], &dir);

    phase("connection refused means nothing was sent: a POST is retried on the live endpoint");
    let mut sent = 0u64;
    while sent < 10 || node.metric("meridian_retries_total") < 1.0 {
        assert!(sent < 100, "the dead endpoint was never picked in {sent} requests");
        let body = format!("{{\"n\":{sent}}}");
        let r = request(node.http, "POST", &format!("/p/{sent}"), &[], body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert_eq!(j["name"], "b");
        assert_eq!(j["body_bytes"], body.len(), "the whole body arrived on the retry");
        sent += 1;
    }
    assert_eq!(b.requests(), sent, "every POST delivered exactly once");
    assert_eq!(b.stats()["duplicate_request_ids"], 0);
}

#[test]
fn post_with_idempotency_key_is_retried_after_503() {
    let dir = TempDir::new("t20-idem");
    let a = Upstream::start("a", dir.path());
    let b = Upstream::start("b", dir.path());
    let node =
        Node::with_table("n1", "us", &simple_table("us", &[a.url(), b.url()], no_ejection()), &[], &dir);
    a.control("fail?status=503");

    phase("an idempotency-key makes a POST safe to repeat");
    let mut sent = 0;
    while sent < 5 || a.requests() == 0 {
        assert!(sent < 100, "the failing endpoint was never picked in {sent} requests");
        let key = format!("key-{sent}");
        let r = request(node.http, "POST", "/pay", &[("idempotency-key", &key)], b"{\"amount\":5}");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["name"], "b");
        assert_eq!(r.json()["body_bytes"], 12);
        sent += 1;
    }
    assert_eq!(node.metric("meridian_retries_total"), a.requests() as f64);
    assert_eq!(b.requests(), sent);
}

#[test]
fn spent_retry_budget_passes_the_503_through() {
    let dir = TempDir::new("t20-budget");
    let a = Upstream::start("a", dir.path());
    let b = Upstream::start("b", dir.path());
    let table = simple_table("us", &[a.url(), b.url()], no_ejection());
    let node = Node::with_table(
        "n1",
        "us",
        &table,
        &["--retry-budget-ratio", "0", "--retry-budget-min-per-sec", "0"],
        &dir,
    );

    phase("with a zero budget a GET answered 503 is not retried, and the denial is counted");
    let mut saw_503 = false;
    for i in 0..40 {
        a.control("reset");
        a.control("fail?status=503");
        b.control("reset");
        let r = node.get(&format!("/b/{i}"));
        let (na, nb) = (a.requests(), b.requests());
        if r.status == 503 {
            assert_eq!(r.json()["name"], "a", "{}", r.text());
            assert_eq!((na, nb), (1, 0), "GET {i} reached a {na} times and b {nb} times");
            saw_503 = true;
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(saw_503, "no GET was routed to the failing endpoint in 40 tries");
    assert_eq!(node.metric("meridian_retries_total"), 0.0);
    assert!(node.metric("meridian_retries_denied_total") >= 1.0);
}

#[test]
fn no_healthy_endpoint_gives_a_fast_503_with_retry_after() {
    let dir = TempDir::new("t20-none");
    let a = Upstream::start("a", dir.path());
    let b = Upstream::start("b", dir.path());
    let check = json!({ "health_check": { "path": "/healthz", "interval_ms": 100, "timeout_ms": 200 } });
    let node = Node::with_table("n1", "us", &simple_table("us", &[a.url(), b.url()], check), &[], &dir);

    phase("one endpoint dies, the other fails its health checks");
    a.proc.signal(9);
    b.control("healthz?ok=false");
    eventually(
        Duration::from_secs(5),
        || node.service_health("echo") == (0, 2),
        "/cluster shows 0/2 healthy",
    );

    phase("clients get 503 no_healthy_upstream at once, with retry-after and the request id");
    b.control("reset");
    b.control("healthz?ok=false");
    for method in ["GET", "POST"] {
        let (r, took) = timed(|| request(node.http, method, "/x", &[], b""));
        assert_eq!(r.status, 503, "{method}: {}", r.text());
        assert!(took < Duration::from_secs(1), "{method} took {took:?}");
        let j = r.json();
        assert_eq!(j["error"], "no_healthy_upstream");
        assert!(r.header("retry-after").is_some(), "retry-after missing: {:?}", r.headers);
        assert_eq!(j["request_id"], r.header("x-request-id").expect("request id"));
    }
    assert_eq!(b.requests(), 0, "nothing is sent to an endpoint marked down");
    assert!(node.metric("meridian_errors_total{cause=\"no_healthy_upstream\"}") >= 2.0);
}

/// Send `method` from a thread, wait until one of `ups` has received it, kill that upstream
/// mid-request (it is delaying its answer), and return the client's response with the victim's index.
fn kill_the_upstream_serving(node: &Node, ups: &[&Upstream], method: &'static str) -> (Response, usize) {
    let addr = node.http;
    let client = std::thread::spawn(move || request(addr, method, "/r", &[], b"{\"x\":1}"));
    let mut victim = None;
    eventually(
        Duration::from_secs(2),
        || {
            victim = ups.iter().position(|u| u.requests() > 0);
            victim.is_some()
        },
        "the request reached an upstream",
    );
    let victim = victim.expect("victim");
    ups[victim].proc.signal(9);
    (client.join().expect("client thread"), victim)
}

#[test]
fn connection_reset_after_send_retries_a_get_but_never_a_post() {
    let dir = TempDir::new("t20-reset");
    let ups: Vec<Upstream> = ["a", "b", "c", "d"].iter().map(|n| Upstream::start(n, dir.path())).collect();
    for u in &ups {
        u.control("delay?ms=1000");
    }
    let table = simple_table("us", &[ups[0].url(), ups[1].url()], no_ejection());
    let node = Node::with_table("n1", "us", &table, &[], &dir);

    phase("a POST whose upstream died after receiving it is not sent again: 502");
    let (r, victim) = kill_the_upstream_serving(&node, &[&ups[0], &ups[1]], "POST");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_unreachable");
    assert_eq!(ups[1 - victim].requests(), 0, "the POST was sent again to the other endpoint");
    assert_eq!(node.metric("meridian_retries_total"), 0.0);

    phase("the same failure on a GET is retried on the other endpoint: 200");
    let table = simple_table("us", &[ups[2].url(), ups[3].url()], no_ejection());
    assert_eq!(node.put_routes(&table.to_string(), None).status, 200);
    let (r, victim) = kill_the_upstream_serving(&node, &[&ups[2], &ups[3]], "GET");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], ["c", "d"][1 - victim]);
    assert_eq!(node.metric("meridian_retries_total"), 1.0);
    assert!(!node.panicked());
}

#[test]
fn ejection_stops_at_max_ejected_percent() {
    let dir = TempDir::new("t20-cap");
    let ups: Vec<Upstream> = ["a", "b", "c", "d"].iter().map(|n| Upstream::start(n, dir.path())).collect();
    let urls: Vec<String> = ups.iter().map(Upstream::url).collect();
    let outlier = json!({ "outlier": { "consecutive_failures": 2, "base_ejection_ms": 30000, "max_ejected_percent": 50 } });
    let node = Node::with_table("n1", "us", &simple_table("us", &urls, outlier), &[], &dir);
    for u in &ups {
        u.control("fail?status=503");
    }

    phase("with every endpoint failing, at most half of them are ejected");
    for i in 0..30 {
        let r = node.get(&format!("/c/{i}"));
        assert_eq!(r.status, 503, "{}", r.text());
    }
    assert_eq!(node.metric("meridian_ejections_total"), 2.0);
    assert_eq!(node.service_health("echo"), (2, 4));

    phase("the ejected ones get nothing; the two kept in service take every attempt");
    let up: Vec<bool> = urls.iter().map(|u| node.metric(&endpoint_up_series("echo", u)) == 1.0).collect();
    assert_eq!(up.iter().filter(|&&x| x).count(), 2, "{up:?}");
    for u in &ups {
        u.control("reset");
        u.control("fail?status=503");
    }
    for i in 0..5 {
        assert_eq!(node.get(&format!("/k/{i}")).status, 503);
    }
    for (u, up) in ups.iter().zip(&up) {
        let n = u.requests();
        if *up {
            assert!(n > 0, "{} is in service but got no attempt", u.url());
        } else {
            assert_eq!(n, 0, "{} is ejected but got {n} attempts", u.url());
        }
    }
}

#[test]
fn only_buffered_bodies_are_replayed_on_retry() {
    let dir = TempDir::new("t20-replay");
    let a = Upstream::start("a", dir.path());
    let b = Upstream::start("b", dir.path());
    let node =
        Node::with_table("n1", "us", &simple_table("us", &[a.url(), b.url()], no_ejection()), &[], &dir);

    phase("a PUT with a 64 KiB body (buffered) is retried after a 503 and arrives whole");
    let small = vec![b's'; 64 * 1024];
    let mut retried = false;
    for i in 0..40 {
        a.control("reset");
        a.control("fail?status=503");
        b.control("reset");
        let r = request(node.http, "PUT", &format!("/small/{i}"), &[], &small);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["name"], "b");
        assert_eq!(r.json()["body_bytes"], small.len(), "the replayed body is complete");
        if a.requests() == 1 {
            retried = true;
            break;
        }
    }
    assert!(retried, "the failing endpoint was never picked in 40 tries");

    phase("a PUT with a body over 64 KiB is streamed: after a 503 it is not sent again");
    let big = vec![b'B'; 64 * 1024 + 1];
    let mut passed_through = false;
    for i in 0..40 {
        a.control("reset");
        a.control("fail?status=503");
        b.control("reset");
        let r = request(node.http, "PUT", &format!("/big/{i}"), &[], &big);
        let (na, nb) = (a.requests(), b.requests());
        if r.status == 503 {
            assert_eq!(r.json()["name"], "a", "{}", r.text());
            assert_eq!((na, nb), (1, 0), "streamed PUT {i} reached a {na} times and b {nb} times");
            passed_through = true;
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["body_bytes"], big.len());
    }
    assert!(passed_through, "the failing endpoint was never picked in 40 tries");
}

#[test]
fn retry_budget_floor_allows_min_per_sec_times_the_window() {
    let dir = TempDir::new("t20-floor");
    let a = Upstream::start("a", dir.path());
    let b = Upstream::start("b", dir.path());
    let extra = json!({ "retries": 1, "outlier": { "consecutive_failures": 1000 } });
    let node = Node::with_table(
        "n1",
        "us",
        &simple_table("us", &[a.url(), b.url()], extra),
        &["--retry-budget-ratio", "0", "--retry-budget-min-per-sec", "1"],
        &dir,
    );
    a.control("fail?status=503");
    b.control("fail?status=503");

    phase("ratio 0, floor 1/s: 10 retries in the 10 s window, then every retry is denied");
    for i in 0..15 {
        assert_eq!(node.get(&format!("/f/{i}")).status, 503);
    }
    assert_eq!(node.metric("meridian_retries_total"), 10.0);
    assert_eq!(node.metric("meridian_retries_denied_total"), 5.0);
    assert_eq!(a.requests() + b.requests(), 25, "15 first attempts and 10 retries");
}
