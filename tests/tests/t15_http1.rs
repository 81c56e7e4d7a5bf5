//! HTTP/1.1 towards clients, as Meridian's own server speaks it on the plain data-plane
//! listener: pipelining, HTTP/1.0, `100 Continue`, chunked bodies both ways, HEAD, and keeping a
//! connection open after a refusal that left a short body unread, and how an upstream's fields
//! pass on (as written, over HTTP/1.1 and h2c).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use meridian_tests::*;

fn node_with_upstream(tag: &str, extra: &[&str]) -> (TempDir, Upstream, Node) {
    let dir = TempDir::new(tag);
    let up = Upstream::start("u", dir.path());
    let table = simple_table("us", &[up.url()], serde_json::json!({}));
    let node = Node::with_table("n1", "us", &table, extra, &dir);
    (dir, up, node)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s
}

/// Read exactly `count` responses off `s` (each framed by content-length or chunked encoding,
/// or ending at close), in order.
fn read_responses(s: &mut TcpStream, count: usize) -> Vec<Response> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while out.len() < count {
        if let Some((resp, used)) = one_response(&buf) {
            out.push(resp);
            buf.drain(..used);
            continue;
        }
        let n = s.read(&mut chunk).unwrap_or_else(|e| panic!("reading response {}: {e}", out.len() + 1));
        if n == 0 {
            // Close-delimited: what is left is the last response.
            out.push(parse_response(&buf).unwrap_or_else(|e| panic!("response {}: {e}", out.len() + 1)));
            buf.clear();
            assert_eq!(out.len(), count, "the connection closed after {} responses", out.len());
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    out
}

/// A complete response at the front of `buf` and how many bytes it took.
fn one_response(buf: &[u8]) -> Option<(Response, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = parse_response(&buf[..end]).ok()?;
    let len = if head.status == 100 || head.status == 204 || head.status == 304 {
        0
    } else if head.header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let rest = &buf[end..];
        let stop = rest.windows(5).position(|w| w == b"0\r\n\r\n")? + 5;
        return Some((parse_response(&buf[..end + stop]).ok()?, end + stop));
    } else {
        head.header("content-length")?.parse::<usize>().ok()?
    };
    (buf.len() >= end + len).then(|| (parse_response(&buf[..end + len]).expect("parsed once"), end + len))
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (_dir, up, node) = node_with_upstream("t15-pipe", &[]);
    phase("three requests in one write: GET, POST with a 3-byte body, GET with connection: close");
    let mut s = connect(node.http);
    s.write_all(
        b"GET /first HTTP/1.1\r\nhost: a\r\n\r\n\
          POST /second HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nxyz\
          GET /third HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .expect("write");
    let rs = read_responses(&mut s, 3);
    let paths: Vec<String> = rs.iter().map(|r| r.json()["path"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(paths, ["/first", "/second", "/third"], "answers out of order or missing");
    assert_eq!(rs[1].json()["body_bytes"], 3, "the POST body was framed by its content-length");
    assert!(rs.iter().all(|r| r.status == 200 && r.header("x-request-id").is_some()));
    assert_eq!(rs[2].header("connection"), Some("close"));
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(closed.is_some(), "connection: close was not honoured");
    assert_eq!(up.requests(), 3);
}

#[test]
fn http_1_0_clients_get_the_connection_they_ask_for() {
    let (_dir, _up, node) = node_with_upstream("t15-h10", &[]);
    phase("HTTP/1.0 without keep-alive: one answer, then the connection closes");
    let mut s = connect(node.http);
    s.write_all(b"GET /old HTTP/1.0\r\n\r\n").expect("write");
    let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(closed.is_some(), "an HTTP/1.0 connection stayed open");
    let r = parse_response(&answer).expect("an answer");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/old");

    phase("HTTP/1.0 with keep-alive: two requests on one connection");
    let mut s = connect(node.http);
    for path in ["/a", "/b"] {
        s.write_all(format!("GET {path} HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").as_bytes())
            .expect("write");
        let r = read_responses(&mut s, 1).remove(0);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert!(r.header("content-length").is_some(), "a kept HTTP/1.0 answer needs a length");
        assert_eq!(r.json()["path"], path);
    }

    phase("HTTP/1.0 and a body of unknown length: delimited by the close, never chunked");
    let mut s = connect(node.http);
    s.write_all(b"POST /?echo=1 HTTP/1.0\r\ncontent-length: 5\r\n\r\nhello").expect("write");
    let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(closed.is_some());
    let r = parse_response(&answer).expect("an answer");
    assert!(r.header("transfer-encoding").is_none(), "chunked sent to an HTTP/1.0 client");
    assert_eq!(r.text(), "hello");
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let (_dir, _up, node) = node_with_upstream("t15-continue", &[]);
    let mut s = connect(node.http);
    s.write_all(b"PUT /c HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n")
        .expect("write");
    phase("the head alone: the node asks for the body with 100 Continue");
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    let t0 = Instant::now();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") && t0.elapsed() < Duration::from_secs(5) {
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "closed before 100 Continue");
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"), "{:?}", String::from_utf8_lossy(&got));
    phase("then the body, and the final answer");
    s.write_all(b"hello").expect("body");
    let mut rest = got[b"HTTP/1.1 100 Continue\r\n\r\n".len()..].to_vec();
    while one_response(&rest).is_none() {
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "closed before the final answer");
        rest.extend_from_slice(&chunk[..n]);
    }
    let (r, _) = one_response(&rest).expect("complete");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_bytes"], 5);
}

#[test]
fn expect_100_continue_refused_early_gets_only_the_final_answer() {
    let (_dir, up, node) = node_with_upstream("t15-continue-refused", &["--max-body-bytes", "10"]);
    let mut s = connect(node.http);
    s.write_all(b"PUT /c HTTP/1.1\r\nhost: a\r\ncontent-length: 11\r\nexpect: 100-continue\r\n\r\n")
        .expect("write");
    let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(
        answer.starts_with(b"HTTP/1.1 413 "),
        "no 100 Continue before a refusal: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(closed.is_some(), "the body may still come: the connection must close");
    assert_eq!(up.requests(), 0);
}

#[test]
fn a_client_that_hangs_up_cancels_its_request() {
    let dir = TempDir::new("t15-hangup");
    let up = Upstream::start("u", dir.path());
    let table = simple_table("us", &[up.url()], serde_json::json!({ "timeout_ms": 20000 }));
    let node = Node::with_table("n1", "us", &table, &[], &dir);
    phase("a request the upstream answers after 8 s; the client hangs up after 300 ms");
    let mut s = connect(node.http);
    s.write_all(b"GET /slow?delay_ms=8000 HTTP/1.1\r\nhost: a\r\n\r\n").expect("write");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(node.metric("meridian_in_flight"), 1.0, "the request is in flight");
    drop(s);
    phase("its in-flight slot is freed long before the upstream would have answered");
    eventually(Duration::from_secs(4), || node.metric("meridian_in_flight") == 0.0, "request cancelled");
    assert!(!node.panicked(), "{}", node.proc.stderr());
}

#[test]
fn chunked_bodies_stream_both_ways() {
    let (_dir, _up, node) = node_with_upstream("t15-chunked", &[]);
    phase("a chunked upload in three writes reaches the upstream whole");
    let mut s = connect(node.http);
    s.write_all(b"POST /up HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .expect("write");
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"1;ext=x\r\n \r\n").expect("write");
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"5\r\nworld\r\n0\r\nx-trailer: t\r\n\r\n").expect("write");
    let r = read_responses(&mut s, 1).remove(0);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_bytes"], 11);

    phase("a body of unknown length comes back chunked");
    s.write_all(
        b"POST /?echo=1 HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .expect("write");
    let r = read_responses(&mut s, 1).remove(0);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text(), "abc");
    phase("the connection carries the next request");
    s.write_all(b"GET /next HTTP/1.1\r\nhost: a\r\n\r\n").expect("write");
    assert_eq!(read_responses(&mut s, 1).remove(0).json()["path"], "/next");

    phase("broken or ambiguous chunk lines end the request with 400 and the connection");
    for body in [&b"zz\r\nhello\r\n0\r\n\r\n"[..], b"2;\nxx\r\n0\r\n\r\n", b"+5\r\nhello\r\n0\r\n\r\n"] {
        let mut s = connect(node.http);
        s.write_all(b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n").expect("write");
        s.write_all(body).expect("write");
        let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(5));
        let what = String::from_utf8_lossy(body);
        assert!(closed.is_some(), "{what:?}: the connection stayed open after a broken body");
        let r = parse_response(&answer).expect("an answer");
        assert_eq!(r.status, 400, "{what:?}: {}", r.text());
    }
}

#[test]
fn head_answers_keep_the_length_and_send_no_body() {
    let (_dir, _up, node) = node_with_upstream("t15-head", &[]);
    let mut s = connect(node.http);
    s.write_all(
        b"HEAD /h HTTP/1.1\r\nhost: a\r\n\r\nGET /after HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .expect("write");
    let (answer, _) = read_until_closed(&mut s, Duration::from_secs(5));
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = parse_response(&answer[..end]).expect("head");
    assert_eq!(head.status, 200);
    let length: usize =
        head.header("content-length").and_then(|v| v.parse().ok()).expect("HEAD keeps the length");
    assert!(length > 0);
    let next = parse_response(&answer[end..]).expect("the GET's answer follows the HEAD's head at once");
    assert_eq!(next.status, 200);
    assert_eq!(next.json()["path"], "/after");
}

#[test]
fn a_refusal_that_leaves_a_short_body_unread_keeps_the_connection() {
    let (_dir, up, node) = node_with_upstream("t15-drain", &["--max-body-bytes", "10"]);
    phase("an 11-byte body against a 10-byte limit: 413, and the next request on the connection is served");
    let mut s = connect(node.http);
    s.write_all(b"POST /big HTTP/1.1\r\nhost: a\r\ncontent-length: 11\r\n\r\n0123456789a").expect("write");
    let r = read_responses(&mut s, 1).remove(0);
    assert_eq!(r.status, 413, "{}", r.text());
    s.write_all(b"GET /next HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").expect("write");
    let r = read_responses(&mut s, 1).remove(0);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/next");
    assert_eq!(up.requests(), 1, "the refused request reached the upstream");

    phase("refusals before the head is read name the node, carry a request id and are counted");
    let r = raw(node.http, b"GET / HTTP/1.1\r\nbad header\r\n\r\n", Duration::from_secs(5)).expect("answer");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "bad_request");
    assert_eq!(r.header("x-meridian-node"), Some("n1"));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.header("x-request-id").is_some_and(|v| v.len() == 32));
    let big = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(40 * 1024));
    let r = raw(node.http, big.as_bytes(), Duration::from_secs(5)).expect("answer");
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["error"], "headers_too_large");
    assert_eq!(node.metric("meridian_errors_total{cause=\"headers_too_large\"}"), 1.0);
    assert!(!node.panicked(), "{}", node.proc.stderr());
}

/// The head the raw upstream answers `path` with (body `ok`).
fn raw_answer(path: &str) -> &'static str {
    if path == "/named" {
        "HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\nX-Kept: 1\r\nContent-Length: 2\r\n\r\nok"
    } else {
        "HTTP/1.1 200 OK\r\nServer: raw\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
         Set-Cookie: a=1\r\nX-Request-Id: upstream-id\r\nSet-Cookie: b=2\r\nX-Meridian-Node: impostor\r\n\
         Content-Length: 2\r\nCache-Control: no-store\r\n\r\nok"
    }
}

/// An upstream that writes fixed response heads, byte for byte, on keep-alive connections.
fn raw_upstream() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                        if conn.write_all(raw_answer(&path).as_bytes()).is_err() {
                            return;
                        }
                        continue;
                    }
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// The field lines of a raw answer's head, as written.
fn head_lines(raw: &[u8]) -> Vec<String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a head");
    String::from_utf8_lossy(&raw[..end]).split("\r\n").skip(1).map(str::to_string).collect()
}

#[test]
fn upstream_fields_pass_as_written_and_meridians_own_replace_theirs() {
    let dir = TempDir::new("t15-fields");
    let table = simple_table("us", &[raw_upstream()], serde_json::json!({}));
    let node = Node::with_table("n1", "us", &table, &[], &dir);

    phase("HTTP/1.1: the upstream's lines as it wrote them, without hop-by-hop ones or those Meridian sets");
    let mut s = connect(node.http);
    s.write_all(b"GET /plain HTTP/1.1\r\nhost: a\r\nx-request-id: client-id\r\nconnection: close\r\n\r\n")
        .expect("write");
    let (raw, _) = read_until_closed(&mut s, Duration::from_secs(10));
    let lines = head_lines(&raw);
    for kept in ["Server: raw", "Set-Cookie: a=1", "Set-Cookie: b=2", "Cache-Control: no-store"] {
        assert!(lines.iter().any(|l| l == kept), "{kept:?} missing from {lines:?}");
    }
    let named =
        |name: &str| lines.iter().filter(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:"))).count();
    for (name, count) in [
        ("x-request-id", 1),
        ("x-meridian-node", 1),
        ("x-meridian-region", 1),
        ("content-length", 1),
        ("keep-alive", 0),
        ("connection", 1),
        ("date", 1),
    ] {
        assert_eq!(named(name), count, "{name} in {lines:?}");
    }
    let r = parse_response(&raw).expect("response");
    assert_eq!(r.header("x-request-id"), Some("client-id"));
    assert_eq!(r.header("x-meridian-node"), Some("n1"));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.body, b"ok");

    phase("a field the upstream's `connection` names is left out");
    let r = raw_get(&node, "/named");
    assert_eq!(r.header("x-kept"), Some("1"));
    assert_eq!(r.header("x-secret"), None, "{:?}", r.headers);
    assert_eq!(r.body, b"ok");

    phase("HTTP/2 (h2c): the same fields, in hyper's header map");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let parts = rt.block_on(async {
        use http_body_util::BodyExt as _;
        let tcp = tokio::net::TcpStream::connect(node.http).await.expect("connect");
        let io = hyper_util::rt::TokioIo::new(tcp);
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        let req = http::Request::get(format!("http://{}/plain", node.http))
            .header("x-request-id", "h2-client")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
            .await
            .expect("in time")
            .expect("response");
        let (parts, body) = resp.into_parts();
        assert_eq!(&body.collect().await.expect("body").to_bytes()[..], b"ok");
        parts
    });
    let all = |name: &str| {
        parts.headers.get_all(name).iter().map(|v| v.to_str().expect("text")).collect::<Vec<_>>()
    };
    assert_eq!(parts.status, 200);
    assert_eq!(all("set-cookie"), ["a=1", "b=2"]);
    assert_eq!(all("server"), ["raw"]);
    assert_eq!(all("x-request-id"), ["h2-client"]);
    assert_eq!(all("x-meridian-node"), ["n1"]);
    assert!(all("keep-alive").is_empty() && all("connection").is_empty(), "{:?}", parts.headers);
    assert!(!node.panicked(), "{}", node.proc.stderr());
}

fn raw_get(node: &Node, path: &str) -> Response {
    let req = format!("GET {path} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n");
    raw(node.http, req.as_bytes(), Duration::from_secs(10)).expect("answer")
}
