//! Bodies stream through the node in both directions: a 1 GiB request body and a 1 GiB response
//! body pass while the node's resident memory stays flat.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use meridian_tests::*;

const GIB: u64 = 1 << 30;
const CHUNK: usize = 64 * 1024;
/// Growth of the node's RSS over its idle baseline that still counts as "flat".
const SLACK_KIB: u64 = 64 * 1024;

fn streaming_node(dir: &TempDir) -> (Upstream, Node) {
    let up = Upstream::start("u", dir.path());
    // The total timeout runs until response headers, which the demo upstream sends after the body.
    let table = simple_table("us", &[up.url()], json!({ "timeout_ms": 300000 }));
    let node = Node::with_table("n1", "us", &table, &["--max-body-bytes", "2147483648"], dir);
    // Warm up the pools and allocator, then take the idle baseline.
    for _ in 0..3 {
        assert_eq!(request(node.http, "POST", "/warm", &[], &[7u8; 100_000]).status, 200);
    }
    std::thread::sleep(Duration::from_millis(200));
    (up, node)
}

/// Sample the node's RSS every 50 ms until `work` finishes; returns its result and the peak.
fn sample_rss_while<T>(node: &Node, work: JoinHandle<T>, limit: Duration) -> (T, u64) {
    let t0 = Instant::now();
    let mut peak = 0;
    while !work.is_finished() {
        assert!(t0.elapsed() < limit, "transfer still running after {limit:?}");
        peak = peak.max(node.proc.rss_kib());
        std::thread::sleep(Duration::from_millis(50));
    }
    peak = peak.max(node.proc.rss_kib());
    (work.join().expect("transfer thread"), peak)
}

#[test]
fn a_1_gib_request_body_streams_through_with_flat_memory() {
    let dir = TempDir::new("t50-up");
    let (up, node) = streaming_node(&dir);
    up.control("reset");
    let baseline = node.proc.rss_kib();
    assert!(baseline > 0, "cannot read the node's RSS");

    // The upstream only starts reading after 1.5 s: meanwhile the node must push back on the
    // client rather than buffer what it sends.
    phase("a 1 GiB body with content-length, written in 64 KiB chunks, reaches the upstream whole");
    let addr = node.http;
    let writer = std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let head = format!("POST /upload?delay_ms=1500 HTTP/1.1\r\nhost: x\r\ncontent-length: {GIB}\r\nconnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).expect("head");
        let chunk = vec![0x5au8; CHUNK];
        for _ in 0..GIB / CHUNK as u64 {
            s.write_all(&chunk).expect("body chunk");
        }
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).expect("answer");
        (parse_response(&answer).expect("HTTP answer"), t0.elapsed())
    });
    let ((r, took), peak) = sample_rss_while(&node, writer, Duration::from_secs(120));
    eprintln!("upload: {took:?}; node RSS baseline {baseline} KiB, peak {peak} KiB");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_bytes"], GIB);
    assert_eq!(up.stats()["body_bytes"], GIB);

    phase("the node's memory stayed flat");
    assert!(peak < baseline + SLACK_KIB, "RSS grew from {baseline} KiB to {peak} KiB during a 1 GiB upload");
    assert!(took < Duration::from_secs(60), "1 GiB upload took {took:?}");
}

#[test]
fn a_1_gib_response_body_streams_through_with_flat_memory() {
    let dir = TempDir::new("t50-down");
    let (_up, node) = streaming_node(&dir);
    let baseline = node.proc.rss_kib();
    assert!(baseline > 0, "cannot read the node's RSS");

    phase("GET ?bytes=1073741824 delivers exactly 1 GiB, read and discarded as it arrives");
    let addr = node.http;
    let reader = std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let head = format!("GET /download?bytes={GIB} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).expect("head");
        let mut buf = vec![0u8; 256 * 1024];
        let mut got: Vec<u8> = Vec::new();
        // Read the response head, then count (and drop) the body.
        let end = loop {
            let n = s.read(&mut buf).expect("read head");
            assert!(n > 0, "closed before the response head");
            got.extend_from_slice(&buf[..n]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let resp = parse_response(&got[..end]).expect("response head");
        // Stop reading for a while: the node must push back on the upstream, not buffer.
        std::thread::sleep(Duration::from_millis(1500));
        let mut body = (got.len() - end) as u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => body += n as u64,
                Err(e) => panic!("reading the body after {body} bytes: {e}"),
            }
        }
        (resp, body, t0.elapsed())
    });
    let ((resp, body, took), peak) = sample_rss_while(&node, reader, Duration::from_secs(120));
    eprintln!("download: {took:?}; node RSS baseline {baseline} KiB, peak {peak} KiB");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some(GIB.to_string().as_str()), "{:?}", resp.headers);
    assert_eq!(body, GIB);

    phase("the node's memory stayed flat");
    assert!(
        peak < baseline + SLACK_KIB,
        "RSS grew from {baseline} KiB to {peak} KiB during a 1 GiB download"
    );
    assert!(took < Duration::from_secs(60), "1 GiB download took {took:?}");
}
