//! Load shedding past --max-in-flight, graceful drain on SIGTERM/SIGINT, and routes reload on SIGHUP.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use meridian_tests::*;

const SIGHUP: i32 = 1;
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// Send `n` GETs at once from `n` threads; returns each response with its latency.
fn concurrent_gets(node: &Node, n: usize, path: &str) -> Vec<(Response, Duration)> {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (addr, barrier, path) = (node.http, barrier.clone(), format!("{path}/{i}"));
            std::thread::spawn(move || {
                barrier.wait();
                timed(|| request(addr, "GET", &path, &[], b""))
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("client thread")).collect()
}

#[test]
fn requests_past_max_in_flight_are_shed_with_503_overloaded() {
    let dir = TempDir::new("t60-shed");
    let up = Upstream::start("u", dir.path());
    let node = Node::with_table(
        "n1",
        "us",
        &simple_table("us", &[up.url()], json!({})),
        &["--max-in-flight", "4"],
        &dir,
    );
    up.control("delay?ms=1500");

    phase("12 concurrent slow requests against --max-in-flight 4: the rest are refused at once");
    let results = concurrent_gets(&node, 12, "/shed");
    let ok: Vec<_> = results.iter().filter(|(r, _)| r.status == 200).collect();
    let shed: Vec<_> = results.iter().filter(|(r, _)| r.status == 503).collect();
    let statuses: Vec<u16> = results.iter().map(|(r, _)| r.status).collect();
    assert_eq!(ok.len() + shed.len(), 12, "only 200 and 503 expected: {statuses:?}");
    assert!((1..=4).contains(&ok.len()), "{} admitted with --max-in-flight 4: {statuses:?}", ok.len());
    assert!(shed.len() >= 8, "{statuses:?}");
    for (r, took) in &shed {
        assert_eq!(r.json()["error"], "overloaded", "{}", r.text());
        assert!(r.header("retry-after").is_some(), "no retry-after: {:?}", r.headers);
        assert!(*took < Duration::from_millis(1000), "shedding took {took:?}: it waited for capacity");
    }
    for (r, took) in &ok {
        assert_eq!(r.json()["name"], "u");
        assert!(*took >= Duration::from_millis(1400), "admitted request took only {took:?}");
    }
    assert_eq!(up.requests(), ok.len() as u64, "shed requests never reach the upstream");
    assert!(node.metric("meridian_errors_total{cause=\"overloaded\"}") >= 8.0);

    phase("capacity comes back whole: no slot is leaked by shed or finished requests");
    eventually(
        Duration::from_secs(2),
        || node.metric("meridian_in_flight") == 0.0,
        "meridian_in_flight back to 0",
    );
    up.control("delay?ms=500");
    let again = concurrent_gets(&node, 4, "/again");
    let statuses: Vec<u16> = again.iter().map(|(r, _)| r.status).collect();
    assert_eq!(statuses, vec![200; 4], "4 concurrent requests with --max-in-flight 4");
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let dir = TempDir::new("t60-drain");
    let up = Upstream::start("u", dir.path());
    let mut node = Node::with_table("n1", "us", &simple_table("us", &[up.url()], json!({})), &[], &dir);

    phase("a slow request is in flight when SIGTERM arrives");
    let addr = node.http;
    let client = std::thread::spawn(move || timed(|| request(addr, "GET", "/slow?delay_ms=1500", &[], b"")));
    eventually(Duration::from_secs(2), || up.requests() == 1, "the slow request reached the upstream");
    std::thread::sleep(Duration::from_millis(200));
    node.proc.signal(SIGTERM);
    let signalled = Instant::now();

    phase("new connections are refused shortly after the signal, on both planes");
    eventually(Duration::from_secs(1), || !accepts_connections(node.http), "data plane stops accepting");
    eventually(Duration::from_secs(1), || !accepts_connections(node.admin), "admin stops accepting");
    assert!(
        signalled.elapsed() < Duration::from_millis(1200),
        "still accepting {:?} after SIGTERM",
        signalled.elapsed()
    );

    phase("the in-flight request still completes with 200");
    let (r, took) = client.join().expect("client");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "u");
    assert!(took >= Duration::from_millis(1400));

    phase("then the node exits 0");
    let status = node.proc.wait_exit(Duration::from_secs(5)).expect("node still running 5 s after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}; stderr:\n{}", node.proc.stderr());
    assert!(signalled.elapsed() < Duration::from_secs(4), "exit took {:?}", signalled.elapsed());
    assert!(!node.panicked());
}

#[test]
fn sigint_on_an_idle_node_exits_zero_at_once() {
    let dir = TempDir::new("t60-int");
    let up = Upstream::start("u", dir.path());
    let mut node = Node::with_table("n1", "us", &simple_table("us", &[up.url()], json!({})), &[], &dir);
    assert_eq!(node.get("/x").status, 200);

    phase("SIGINT with nothing in flight: exit 0 within a second or two");
    let (status, took) = timed(|| {
        node.proc.signal(SIGINT);
        node.proc.wait_exit(Duration::from_secs(5))
    });
    let status = status.expect("node still running 5 s after SIGINT");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
}

#[test]
fn drain_timeout_bounds_the_wait_for_slow_requests() {
    let dir = TempDir::new("t60-drain-timeout");
    let up = Upstream::start("u", dir.path());
    let table = simple_table("us", &[up.url()], json!({ "timeout_ms": 10000 }));
    let mut node = Node::with_table("n1", "us", &table, &["--drain-timeout-ms", "500"], &dir);

    phase("a request that would take 5 s does not hold the exit past --drain-timeout-ms");
    let addr = node.http;
    let client = std::thread::spawn(move || {
        raw(
            addr,
            b"GET /slow?delay_ms=5000 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            Duration::from_secs(10),
        )
    });
    eventually(Duration::from_secs(2), || up.requests() == 1, "the slow request reached the upstream");
    let (status, took) = timed(|| {
        node.proc.signal(SIGTERM);
        node.proc.wait_exit(Duration::from_secs(5))
    });
    let status = status.expect("node still running 5 s after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(took >= Duration::from_millis(400), "exited after {took:?}: the drain did not wait");
    assert!(took < Duration::from_millis(2500), "exit took {took:?} with --drain-timeout-ms 500");
    let answer = client.join().expect("client");
    assert!(answer.map_or(true, |r| r.status != 200), "the cut request cannot have completed");
}

#[test]
fn sighup_reloads_the_routes_file_and_keeps_the_old_table_when_invalid() {
    let dir = TempDir::new("t60-hup");
    let a = Upstream::start("a", dir.path());
    let b = Upstream::start("b", dir.path());
    let routes = dir.write("routes.json", &simple_table("us", &[a.url()], json!({})).to_string());
    let node = Node::start("n1", "us", &["--routes", routes.to_str().expect("path")], dir.path());
    node.wait_ready(Duration::from_secs(10));
    assert_eq!(node.get("/x").json()["name"], "a");
    assert_eq!(node.routes_version(), 1);

    phase("rewrite the file to point at another upstream, SIGHUP: version 2, traffic moves");
    dir.write("routes.json", &simple_table("us", &[b.url()], json!({})).to_string());
    node.proc.signal(SIGHUP);
    eventually(Duration::from_secs(3), || node.routes_version() == 2, "routes version 2 after SIGHUP");
    for i in 0..5 {
        assert_eq!(node.get(&format!("/y/{i}")).json()["name"], "b");
    }
    let history = node.admin_get("/routes/history").json();
    assert_eq!(history["current"], 2);
    assert!(history.to_string().contains("reload"), "the reload is recorded: {history}");

    phase("an invalid file on SIGHUP is refused: the table and the traffic stay as they were");
    let bad = json!({ "services": { "echo": { "endpoints": { "us": [a.url()] } } },
                      "routes": [ { "name": "all", "service": "missing" } ] });
    dir.write("routes.json", &bad.to_string());
    node.proc.signal(SIGHUP);
    eventually(
        Duration::from_secs(3),
        || node.proc.stderr().contains("routes reload refused"),
        "the refused reload is logged",
    );
    assert!(node.proc.stderr().contains("routes[0].service"), "the log names the bad field");
    dir.write("routes.json", "{ not json at all");
    node.proc.signal(SIGHUP);
    eventually(
        Duration::from_secs(3),
        || node.proc.stderr().matches("routes reload refused").count() >= 2,
        "the second refused reload is logged",
    );
    assert_eq!(node.routes_version(), 2);
    for i in 0..5 {
        let r = node.get(&format!("/z/{i}"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["name"], "b");
    }
    assert!(!node.panicked());
}

/// Start `meridian ARGS` `rounds` times under bash and send `signal` with the shell's builtin
/// `kill` the moment the "listening" line appears (the harness's own `kill` process is too slow to
/// land in the first milliseconds). Returns one line per round: "alive" or "exit:CODE".
fn signal_on_listening_line(signal: &str, args: &[&str], rounds: u32, dir: &TempDir) -> Vec<String> {
    let script = r#"
        for i in $(seq "$ROUNDS"); do
            coproc NODE { exec "$BIN" "$@" 2>>"$LOG"; }
            pid=$NODE_PID
            read -r line <&"${NODE[0]}"
            kill -"$SIG" "$pid"
            sleep 0.15
            if kill -0 "$pid" 2>/dev/null; then
                echo alive
                kill -9 "$pid"
                wait "$pid" 2>/dev/null
            else
                wait "$pid"
                echo "exit:$?"
            fi
        done
    "#;
    let log = dir.path().join("early-signal.stderr");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("bash")
        .args(args)
        .env("BIN", meridian_bin())
        .env("ROUNDS", rounds.to_string())
        .env("SIG", signal)
        .env("LOG", &log)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run bash");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(
        lines.len(),
        rounds as usize,
        "bash driver: {lines:?}; {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}

#[test]
fn sighup_right_after_the_listening_line_does_not_kill_the_node() {
    let dir = TempDir::new("t60-hup-early");
    let up = Upstream::start("u", dir.path());
    let routes = dir.write("routes.json", &simple_table("us", &[up.url()], json!({})).to_string());
    let args = [
        "node",
        "--id",
        "n1",
        "--region",
        "us",
        "--http",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--routes",
        routes.to_str().expect("path"),
    ];

    phase("a reload requested as soon as the node says it is listening never kills it");
    let rounds = signal_on_listening_line("HUP", &args, 20, &dir);
    let died: Vec<&String> = rounds.iter().filter(|r| *r != "alive").collect();
    assert!(
        died.is_empty(),
        "{} of 20 nodes died of a SIGHUP sent right after their 'listening' line \
         (exit 129 = killed by SIGHUP): {died:?}",
        died.len()
    );

    phase("a SIGTERM sent at that moment still gives a clean exit 0");
    let rounds = signal_on_listening_line("TERM", &args, 20, &dir);
    let unclean: Vec<&String> = rounds.iter().filter(|r| *r != "exit:0").collect();
    assert!(
        unclean.is_empty(),
        "{} of 20 nodes did not exit 0 on a SIGTERM sent right after 'listening' \
         (exit 143 = killed by SIGTERM): {unclean:?}",
        unclean.len()
    );
}
