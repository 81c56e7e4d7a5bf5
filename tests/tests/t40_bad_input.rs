//! Bad input of every kind: malformed and oversized requests, slow and silent clients, invalid
//! routing tables and configuration. Each is refused with the documented status or exit code, and
//! the node keeps serving afterwards without a panic.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use meridian_tests::*;

fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Response {
    raw(addr, bytes, Duration::from_secs(10)).unwrap_or_else(|e| panic!("no HTTP answer: {e}"))
}

/// Open a connection, send `bytes` and say nothing more; returns the connection.
fn stall_after(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(bytes).expect("write");
    s
}

#[test]
fn malformed_and_oversized_requests_are_refused_and_the_node_keeps_serving() {
    let dir = TempDir::new("t40-malformed");
    let up = Upstream::start("u", dir.path());
    let table = simple_table("us", &[up.url()], json!({}));
    let node = Node::with_table("n1", "us", &table, &["--max-body-bytes", "100000"], &dir);

    phase("a head over --max-header-bytes (default 32 KiB) gets 431");
    let big =
        format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\nconnection: close\r\n\r\n", "a".repeat(64 * 1024));
    assert_eq!(send_raw(node.http, big.as_bytes()).status, 431);

    phase("garbage request line and malformed header lines get 400");
    assert_eq!(send_raw(node.http, b"HELLO THERE\r\n\r\n").status, 400);
    assert_eq!(send_raw(node.http, b"GET / HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n").status, 400);
    assert_eq!(send_raw(node.http, b"GET / HTTP/9.9\r\nhost: x\r\n\r\n").status, 400);

    phase("two different content-length headers get 400");
    let r = send_raw(
        node.http,
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ncontent-length: 4\r\nconnection: close\r\n\r\nabcd",
    );
    assert_eq!(r.status, 400);

    phase("a content-length over --max-body-bytes gets 413 before any byte of the body is read");
    let r = send_raw(
        node.http,
        b"POST /big HTTP/1.1\r\nhost: x\r\ncontent-length: 200000\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"], "body_too_large");
    assert_eq!(up.requests(), 0, "the upstream saw a refused request");

    phase("a chunked body that grows past the limit is cut: 413 or a closed connection, never a 2xx");
    let mut s = TcpStream::connect(node.http).expect("connect");
    s.set_write_timeout(Some(Duration::from_secs(10))).expect("write timeout");
    let writer = {
        let mut s = s.try_clone().expect("clone");
        std::thread::spawn(move || {
            let chunk = vec![b'z'; 16 * 1024];
            let _ = s.write_all(b"POST /chunked HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n");
            for _ in 0..16 {
                let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                if s.write_all(&frame).is_err() {
                    return;
                }
            }
            let _ = s.write_all(b"0\r\n\r\n");
        })
    };
    let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    writer.join().expect("writer");
    assert!(closed.is_some(), "the connection was neither answered nor closed");
    match parse_response(&answer) {
        Ok(r) => assert_eq!(r.status, 413, "a 256 KiB body against a 100000-byte limit: {}", r.text()),
        Err(_) => eprintln!("chunked body over the limit: connection cut without an answer"),
    }
    assert!(up.stats()["body_bytes"].as_u64().unwrap_or(0) <= 100_000);

    phase("the node still serves normal requests and nothing panicked");
    let r = request(node.http, "POST", "/fine", &[], b"hello");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_bytes"], 5);
    assert_eq!(node.admin_get("/healthz").status, 200);
    assert!(!node.panicked(), "{}", node.proc.stderr());
}

#[test]
fn content_length_with_transfer_encoding_cannot_smuggle_a_request() {
    let dir = TempDir::new("t40-clte");
    let up = Upstream::start("u", dir.path());
    let node = Node::with_table("n1", "us", &simple_table("us", &[up.url()], json!({})), &[], &dir);

    // RFC 9112 §6.3: with both headers, transfer-encoding wins, content-length is dropped and the
    // connection is closed after the response. Whatever follows the chunked body on that
    // connection (here a second, smuggled request) must never reach an upstream.
    phase("CL+TE in either order: one chunked request reaches the upstream, the smuggled one does not");
    for head in [
        "POST /first HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
        "POST /first HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
    ] {
        up.control("reset");
        let smuggled = b"GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n";
        let r =
            send_raw(node.http, [head.as_bytes(), b"3\r\nabc\r\n0\r\n\r\n", smuggled].concat().as_slice());
        assert!(r.status == 200 || r.status == 400, "answered {} {}", r.status, r.text());
        if r.status == 200 {
            assert_eq!(r.json()["body_bytes"], 3, "the body is framed by the chunked encoding");
            assert_eq!(r.json()["path"], "/first");
        }
        let forwarded = up.requests();
        assert!(forwarded <= 1, "the upstream received {forwarded} requests: a request was smuggled");
    }
}

#[test]
fn max_header_bytes_is_enforced() {
    let dir = TempDir::new("t40-hdr");
    let up = Upstream::start("u", dir.path());
    let table = simple_table("us", &[up.url()], json!({}));
    let node = Node::with_table("n1", "us", &table, &["--max-header-bytes", "8192"], &dir);

    phase("--max-header-bytes 8192 accepts a small head and refuses a 10 KiB one with 431");
    assert_eq!(node.get("/small").status, 200);
    let head =
        format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\nconnection: close\r\n\r\n", "a".repeat(10 * 1024));
    let r = send_raw(node.http, head.as_bytes());
    assert_eq!(
        r.status,
        431,
        "a 10 KiB head passed --max-header-bytes 8192 (upstream saw {})",
        up.requests() - 1
    );
}

#[test]
fn a_client_that_stops_mid_head_is_disconnected_after_the_header_timeout() {
    let dir = TempDir::new("t40-slow");
    let up = Upstream::start("u", dir.path());
    let table = simple_table("us", &[up.url()], json!({}));
    let node = Node::with_table("n1", "us", &table, &["--header-read-timeout-ms", "500"], &dir);

    phase("half a head, then nothing: closed after about 500 ms (data and admin planes)");
    for (plane, addr) in [("data", node.http), ("admin", node.admin)] {
        let mut s = stall_after(addr, b"GET /slow HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n");
        let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5));
        let closed = closed.unwrap_or_else(|| panic!("{plane}: still open after 5 s"));
        assert!(closed >= Duration::from_millis(400), "{plane}: closed after only {closed:?}");
        assert!(closed < Duration::from_millis(2000), "{plane}: closed after {closed:?}");
    }

    phase("a client trickling its head one byte at a time is cut off too");
    let mut s = TcpStream::connect(node.http).expect("connect");
    let t0 = std::time::Instant::now();
    let mut cut_at = None;
    for b in b"GET /trickle HTTP/1.1\r\nhost: x\r\nx-long-header: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
    {
        // Writing to a connection the server closed fails within a write or two.
        if s.write_all(&[*b]).is_err() {
            cut_at = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let cut_at = cut_at.or_else(|| read_until_closed(&mut s, Duration::from_secs(2)).1.map(|_| t0.elapsed()));
    let cut_at =
        cut_at.unwrap_or_else(|| panic!("a trickling client kept its connection for {:?}", t0.elapsed()));
    assert!(cut_at < Duration::from_millis(2000), "a trickling client was cut off only after {cut_at:?}");
    assert_eq!(up.requests(), 0);

    phase("the node still serves");
    assert_eq!(node.get("/ok").status, 200);
    assert!(!node.panicked());
}

#[test]
fn a_client_that_sends_nothing_is_disconnected_after_the_header_timeout() {
    let dir = TempDir::new("t40-silent");
    let up = Upstream::start("u", dir.path());
    let table = simple_table("us", &[up.url()], json!({}));
    let node = Node::with_table("n1", "us", &table, &["--header-read-timeout-ms", "500"], &dir);

    phase("silent connections (and one stalled inside the HTTP/2 preface) are closed after ~500 ms");
    let cases: Vec<(&str, SocketAddr, &[u8])> = vec![
        ("admin, silent", node.admin, b""),
        ("data, silent", node.http, b""),
        ("data, 1 byte", node.http, b"P"),
        ("data, half an h2 preface", node.http, b"PRI * HTTP/2.0\r\n"),
    ];
    // One thread per connection, so they all wait at once.
    let waiting: Vec<_> = cases
        .iter()
        .map(|(what, addr, bytes)| {
            let mut s = stall_after(*addr, bytes);
            (*what, std::thread::spawn(move || read_until_closed(&mut s, Duration::from_secs(3)).1))
        })
        .collect();
    let outcome: Vec<(&str, Option<Duration>)> =
        waiting.into_iter().map(|(what, t)| (what, t.join().expect("reader"))).collect();
    let open: Vec<&str> = outcome
        .iter()
        .filter(|(_, c)| c.is_none_or(|c| c > Duration::from_millis(2000)))
        .map(|(w, _)| *w)
        .collect();
    assert!(
        open.is_empty(),
        "still open after 2 s with --header-read-timeout-ms 500: {open:?} (all: {outcome:?})"
    );
    assert_eq!(node.get("/ok").status, 200);
}

#[test]
fn an_invalid_routes_file_stops_the_node_before_it_listens() {
    let dir = TempDir::new("t40-file");
    let ok_url = closed_url();
    let cases = [
        (
            "unknown service",
            json!({ "services": { "echo": { "endpoints": { "us": [ok_url] } } },
                    "routes": [ { "name": "r", "service": "nope" } ] })
            .to_string(),
            vec!["routes[0].service", "nope"],
        ),
        (
            "bad endpoint URL",
            json!({ "services": { "echo": { "endpoints": { "us": ["ftp://127.0.0.1:1"] } } },
                    "routes": [ { "name": "r", "service": "echo" } ] })
            .to_string(),
            vec!["services.echo.endpoints.us[0]"],
        ),
        (
            "unknown field",
            json!({ "services": { "echo": { "endpoints": { "us": [ok_url] }, "timeoutt": 5 } },
                    "routes": [ { "name": "r", "service": "echo" } ] })
            .to_string(),
            vec!["services.echo", "timeoutt"],
        ),
        ("not JSON", "{ this is not json".to_string(), vec!["routes file"]),
    ];
    for (what, text, needles) in cases {
        phase(&format!("routes file with {what}: exit 2 naming the problem, nothing bound"));
        let file = dir.write("bad.json", &text);
        let (http, admin) = (closed_port(), closed_port());
        let (http_s, admin_s) = (format!("127.0.0.1:{http}"), format!("127.0.0.1:{admin}"));
        let args = [
            "node",
            "--id",
            "n1",
            "--region",
            "us",
            "--http",
            &http_s,
            "--admin",
            &admin_s,
            "--routes",
            file.to_str().expect("path"),
        ];
        let (code, stderr, stdout) =
            run_expecting_exit("bad", &args, &[], dir.path(), Duration::from_secs(10));
        assert_eq!(code, Some(2), "{what}: exit code; stderr:\n{stderr}");
        assert!(stderr.contains("meridian: error:"), "{what}: {stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{what}: stderr does not name {n:?}:\n{stderr}");
        }
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert!(stdout.iter().all(|l| !l.contains("listening")), "{what}: {stdout:?}");
        assert!(!accepts_connections(http_s.parse().expect("addr")), "{what}: data port bound");
        assert!(!accepts_connections(admin_s.parse().expect("addr")), "{what}: admin port bound");
    }
}

#[test]
fn a_public_admin_needs_a_token_and_then_checks_it() {
    let dir = TempDir::new("t40-token");
    let up = Upstream::start("u", dir.path());
    let routes = dir.write("routes.json", &simple_table("us", &[up.url()], json!({})).to_string());
    let routes = routes.to_str().expect("path");
    let base = [
        "node",
        "--id",
        "n1",
        "--region",
        "us",
        "--http",
        "127.0.0.1:0",
        "--admin",
        "0.0.0.0:0",
        "--routes",
        routes,
    ];

    phase("non-loopback admin without a token: exit 2, the message says to set a token");
    let (code, stderr, _) = run_expecting_exit("notoken", &base, &[], dir.path(), Duration::from_secs(10));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("meridian: error:") && stderr.contains("token"), "{stderr}");

    phase("a token shorter than 16 characters is refused");
    let short = dir.write("short.token", "tooshort\n");
    let args: Vec<&str> =
        base.iter().copied().chain(["--admin-token-file", short.to_str().expect("path")]).collect();
    let (code, stderr, _) = run_expecting_exit("short", &args, &[], dir.path(), Duration::from_secs(10));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("16"), "{stderr}");

    phase("with a token file it starts; everything but the probes and the dashboard page needs the token");
    let token = "s3cret-token-0123456789";
    let file = dir.write("admin.token", &format!("{token}\n"));
    let args: Vec<&str> =
        base.iter().copied().chain(["--admin-token-file", file.to_str().expect("path")]).collect();
    let node = Node::start_args("n1", &args, &[], dir.path());
    let bearer = format!("Bearer {token}");
    let get = |path: &str, auth: Option<&str>| {
        let h: Vec<(&str, &str)> = auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
        request(node.admin, "GET", path, &h, b"")
    };
    assert_eq!(get("/healthz", None).status, 200);
    assert_eq!(get("/readyz", None).status, 200);
    for path in ["/cluster", "/routes", "/metrics", "/quotas", "/routes/history"] {
        assert_eq!(get(path, None).status, 401, "{path} without a token");
        assert_eq!(get(path, Some("Bearer wrong-token-0123456789")).status, 401, "{path} with a wrong token");
        assert_eq!(get(path, Some(token)).status, 401, "{path} without the Bearer scheme");
        assert_eq!(get(path, Some(&bearer)).status, 200, "{path} with the token");
    }
    let c = get("/cluster", Some(&bearer)).json();
    assert_eq!(c["node"]["id"], "n1");
    // The dashboard page is static (it fetches the data with the token the user gives it).
    let page = get("/", None);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("fetch(path"), "the page loads its data itself");
    assert!(!page.text().contains("\"n1\""), "no node data in the page itself");
    phase("writes need the token too");
    let table = simple_table("us", &[up.url()], json!({ "retries": 1 })).to_string();
    let r = request(node.admin, "PUT", "/routes", &[], table.as_bytes());
    assert_eq!(r.status, 401);
    let r = request(node.admin, "PUT", "/routes", &[("authorization", &bearer)], table.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get("/routes", Some(&bearer)).json()["version"], 2);
    assert_eq!(node.get("/data-plane-needs-no-token").status, 200);
}

#[test]
fn configuration_keys_and_values_are_checked() {
    let dir = TempDir::new("t40-config");
    let up = Upstream::start("u", dir.path());
    let routes = dir.write("routes.json", &simple_table("us", &[up.url()], json!({})).to_string());

    phase("an unknown key in the TOML config: exit 2 naming the key");
    let cfg =
        dir.write("bad.toml", "id = \"n1\"\nregion = \"us\"\nhttp = \"127.0.0.1:0\"\nmax_in_flihgt = 5\n");
    let (code, stderr, _) = run_expecting_exit(
        "badkey",
        &["node", "--config", cfg.to_str().expect("path")],
        &[],
        dir.path(),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("max_in_flihgt"), "{stderr}");

    phase("an invalid value from the environment: exit 2 naming the setting");
    let (code, stderr, _) = run_expecting_exit(
        "badenv",
        &["node", "--id", "n1", "--region", "us", "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
        &[("MERIDIAN_MAX_IN_FLIGHT", "0")],
        dir.path(),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("max_in_flight"), "{stderr}");

    phase("a valid TOML config is applied (max_body_bytes = 10 refuses an 11-byte body)");
    let cfg = dir.write(
        "good.toml",
        &format!(
            "id = \"n1\"\nregion = \"us\"\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nroutes = {:?}\nmax_body_bytes = 10\n",
            routes.to_str().expect("path")
        ),
    );
    let node = Node::start_args("n1", &["node", "--config", cfg.to_str().expect("path")], &[], dir.path());
    node.wait_ready(Duration::from_secs(10));
    assert_eq!(request(node.http, "POST", "/", &[], b"0123456789").status, 200);
    assert_eq!(request(node.http, "POST", "/", &[], b"0123456789a").status, 413);
}

#[test]
fn invalid_table_writes_change_nothing() {
    let dir = TempDir::new("t40-put");
    let up = Upstream::start("u", dir.path());
    let node = Node::with_table("n1", "us", &simple_table("us", &[up.url()], json!({})), &[], &dir);
    let before = node.admin_get("/routes").json();
    assert_eq!(before["version"], 1);

    phase("PUT /routes with invalid tables: 400 with problems naming each field");
    let cases = [
        (
            json!({ "services": { "echo": { "endpoints": { "us": [up.url()] } } },
                    "routes": [ { "name": "r", "service": "nope" } ] })
            .to_string(),
            "routes[0].service",
        ),
        (
            json!({ "services": { "echo": { "endpoints": { "us": [up.url()] }, "timeout_ms": 0 } },
                    "routes": [ { "name": "r", "path_prefix": "x", "service": "echo" } ] })
            .to_string(),
            "services.echo.timeout_ms",
        ),
        (
            json!({ "services": { "echo": { "endpoints": { "us": [up.url()] } } }, "routez": [] })
                .to_string(),
            "routez",
        ),
        ("{ not json".to_string(), "line 1"),
    ];
    for (body, field) in cases {
        let r = node.put_routes(&body, None);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let j = r.json();
        assert!(j["error"].is_string(), "{j}");
        let problems = j["problems"].as_array().unwrap_or_else(|| panic!("no problems list: {j}"));
        assert!(
            problems.iter().any(|p| p.as_str().is_some_and(|p| p.contains(field))),
            "no problem names {field}: {j}"
        );
    }
    let second = json!({ "services": { "echo": { "endpoints": { "us": [up.url()] }, "timeout_ms": 0 } },
                         "routes": [ { "name": "r", "path_prefix": "x", "service": "echo" } ] });
    let problems = node.put_routes(&second.to_string(), None).json()["problems"].clone();
    assert!(
        problems.as_array().is_some_and(|p| p.len() >= 2),
        "every problem is reported at once: {problems}"
    );
    assert_eq!(node.admin_get("/routes").json(), before, "GET /routes changed after refused writes");

    phase("If-Match: a stale version gets 409 and changes nothing; the current one commits");
    let v2 = simple_table("us", &[up.url()], json!({ "retries": 1 })).to_string();
    let r = node.put_routes(&v2, Some(0));
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["version"], 1);
    assert_eq!(node.routes_version(), 1);
    let r = node.put_routes(&v2, Some(1));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 2);
    assert_eq!(node.put_routes(&v2, Some(1)).status, 409, "the version moved on");
    let r = request(node.admin, "PUT", "/routes", &[("if-match", "abc")], v2.as_bytes());
    assert_eq!(r.status, 400, "a non-numeric If-Match: {}", r.text());
    assert_eq!(node.routes_version(), 2);

    phase("rollback to an unknown version is refused; to a known one commits a new version");
    let r = request(node.admin, "POST", "/routes/rollback", &[], b"{\"to\": 99}");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = request(node.admin, "POST", "/routes/rollback", &[], b"{\"to\": \"one\"}");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = request(node.admin, "POST", "/routes/rollback", &[], b"{\"to\": 1}");
    assert_eq!(r.status, 200, "{}", r.text());
    let now = node.admin_get("/routes").json();
    assert_eq!(now["version"], 3);
    assert_eq!(now["table"], before["table"]);

    phase("the node still serves and nothing panicked");
    assert_eq!(node.get("/after").status, 200);
    assert!(!node.panicked());
}

#[test]
fn a_config_value_of_the_wrong_type_names_its_key() {
    let dir = TempDir::new("t40-config-type");

    phase("a value of the wrong type in the TOML config: exit 2 naming the key");
    let cfg = dir.write("badtype.toml", "id = \"n1\"\nregion = \"us\"\nmax_in_flight = \"lots\"\n");
    let (code, stderr, _) = run_expecting_exit(
        "badtype",
        &["node", "--config", cfg.to_str().expect("path")],
        &[],
        dir.path(),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("max_in_flight"), "{stderr}");
}

#[test]
fn a_client_that_stalls_mid_body_does_not_hold_a_slot_forever() {
    let dir = TempDir::new("t40-stall-body");
    let up = Upstream::start("u", dir.path());
    let table = simple_table("us", &[up.url()], json!({ "timeout_ms": 1000 }));
    let node = Node::with_table("n1", "us", &table, &["--max-in-flight", "2"], &dir);

    phase("two clients announce small bodies, send half, and stall (--max-in-flight 2, timeout_ms 1000)");
    let stalled: Vec<_> = (0..2)
        .map(|_| {
            let mut s =
                stall_after(node.http, b"POST /stall HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n");
            s.write_all(&[b'x'; 50]).expect("half the body");
            std::thread::spawn(move || read_until_closed(&mut s, Duration::from_secs(4)))
        })
        .collect();

    phase("2.5 s later (still connected): their slots are free and new requests are served");
    std::thread::sleep(Duration::from_millis(2500));
    let in_flight = node.metric("meridian_in_flight");
    let r = node.get("/meanwhile");
    let outcome: Vec<String> = stalled
        .into_iter()
        .map(|t| match t.join().expect("reader") {
            (answer, Some(at)) => {
                format!("ended after {at:?} with {:?}", parse_response(&answer).map(|r| r.status).ok())
            }
            (answer, None) => format!("still open after 4 s, {} bytes of answer", answer.len()),
        })
        .collect();
    assert!(
        in_flight == 0.0 && r.status == 200,
        "with two clients stalled mid-body for 2.5 s: meridian_in_flight {in_flight}, a new GET got {} {}; \
         the stalled ones: {outcome:?}",
        r.status,
        r.text()
    );
    assert!(
        outcome.iter().all(|o| o.starts_with("ended")),
        "stalled clients were neither answered nor disconnected: {outcome:?}"
    );
}
