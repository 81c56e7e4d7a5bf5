//! The peer plane over real QUIC on loopback, with real certificates from `certs::issue`.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use futures_util::future::{join_all, BoxFuture, FutureExt as _};
use rand::{RngCore as _, SeedableRng as _};
use tokio::sync::oneshot;

use super::frame::{self, code, FrameError};
use super::*;
use crate::certs::{self, TestDir, CA_CERT_FILE};

pub(super) const TIMEOUT: Duration = Duration::from_secs(5);
/// Kind that makes the test handler answer with a big reply.
const BIG_REPLY: u8 = 9;
/// Kind that makes the test handler drop the call unanswered.
const NO_ANSWER: u8 = 10;
/// Kind that makes the test handler wait 500 ms before it answers.
pub(super) const SLOW: u8 = 11;

fn issue(dir: &TestDir, ids: &[&str]) {
    let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    certs::issue(&dir.0, &ids).unwrap();
}

/// A node serving an echo handler until the returned sender is dropped.
pub(super) struct TestNode {
    pub(super) plane: PeerPlane,
    pub(super) _stop: oneshot::Sender<()>,
}

impl TestNode {
    pub(super) fn addr(&self) -> SocketAddr {
        self.plane.local_addr()
    }
}

pub(super) async fn start(tls: PeerTls, options: PeerOptions) -> TestNode {
    let plane = PeerPlane::bind_with("127.0.0.1:0".parse().unwrap(), tls, options).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = plane.clone();
    tokio::spawn(async move { server.serve(echo, stopped.map(|_| ())).await });
    TestNode { plane, _stop: stop }
}

async fn node(dir: &TestDir, id: &str) -> TestNode {
    start(PeerTls::load(&dir.0, id).unwrap(), PeerOptions::default()).await
}

fn echo(call: PeerCall) -> BoxFuture<'static, ()> {
    async move {
        match call.kind {
            BIG_REPLY => {
                let _ = call.reply(&[7u8; 4096]).await;
            }
            NO_ANSWER => drop(call),
            SLOW => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = call.reply(b"slow").await;
            }
            kind => {
                let answer =
                    format!("kind {kind} from {}: {}", call.from, String::from_utf8_lossy(&call.payload));
                let _ = call.reply(answer.as_bytes()).await;
            }
        }
    }
    .boxed()
}

pub(super) fn text(reply: Result<Vec<u8>, PeerError>) -> String {
    String::from_utf8(reply.unwrap()).unwrap()
}

#[tokio::test]
async fn calls_work_both_ways_on_one_cached_connection() {
    let dir = TestDir::new("peer-basic");
    issue(&dir, &["n1", "n2"]);
    let (n1, n2) = (node(&dir, "n1").await, node(&dir, "n2").await);

    tracing::info!("unary calls in both directions carry the caller's certificate id");
    let reply = n1.plane.call("n2", n2.addr(), kind::RAFT, b"ping", TIMEOUT).await;
    assert_eq!(text(reply), "kind 1 from n1: ping");
    let reply = n2.plane.call("n1", n1.addr(), kind::LEADER_WRITE, b"pong", TIMEOUT).await;
    assert_eq!(text(reply), "kind 2 from n2: pong");

    tracing::info!("many concurrent calls share the one cached connection");
    let calls = (0..300).map(|i| {
        let plane = n1.plane.clone();
        let addr = n2.addr();
        async move { plane.call("n2", addr, kind::FORWARD, format!("#{i}").as_bytes(), TIMEOUT).await }
    });
    for (i, reply) in join_all(calls).await.into_iter().enumerate() {
        assert_eq!(text(reply), format!("kind 3 from n1: #{i}"));
    }
    let opened = |n: &TestNode| n.plane.stats().connections_opened.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(opened(&n1), 1);
    assert_eq!(opened(&n2), 1);

    tracing::info!("RTT is measured for peers with a connection, unknown otherwise");
    let rtt = n1.plane.rtt("n2").unwrap();
    assert!(rtt > Duration::ZERO && rtt < Duration::from_secs(1), "{rtt:?}");
    assert_eq!(n1.plane.rtt("n9"), None);

    tracing::info!("a dropped call is an immediate error, not a timeout");
    let err = n1.plane.call("n2", n2.addr(), NO_ANSWER, b"", TIMEOUT).await.unwrap_err();
    assert!(err.to_string().contains("the handler gave no reply"), "{err}");

    tracing::info!("a reply over the caller's frame limit is refused");
    let small = PeerOptions { max_frame: 1024, ..PeerOptions::default() };
    let n1_small = start(PeerTls::load(&dir.0, "n1").unwrap(), small).await;
    let err = n1_small.plane.call("n2", n2.addr(), BIG_REPLY, b"", TIMEOUT).await.unwrap_err();
    assert!(matches!(err, PeerError::Frame { source: FrameError::TooLarge { len: 4096, .. }, .. }), "{err}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_both_ways() {
    let (ours, theirs) = (TestDir::new("peer-ca-ours"), TestDir::new("peer-ca-theirs"));
    issue(&ours, &["n1", "n2"]);
    issue(&theirs, &["n2"]);
    let n1 = node(&ours, "n1").await;
    let rogue = node(&theirs, "n2").await;

    tracing::info!("as a server: we refuse the foreign certificate");
    let err = n1.plane.call("n2", rogue.addr(), kind::RAFT, b"x", TIMEOUT).await.unwrap_err();
    assert!(err.is_handshake(), "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    tracing::info!("as a client: it refuses us, since it does not trust our CA");
    let err = rogue.plane.call("n1", n1.addr(), kind::RAFT, b"x", TIMEOUT).await.unwrap_err();
    assert!(err.is_handshake(), "{err}");

    tracing::info!("as a client that trusts our CA too: our server refuses its certificate");
    let ca_both = [
        std::fs::read(ours.0.join(CA_CERT_FILE)).unwrap(),
        std::fs::read(theirs.0.join(CA_CERT_FILE)).unwrap(),
    ]
    .concat();
    let (cert, key) = (
        std::fs::read(certs::cert_path(&theirs.0, "n2")).unwrap(),
        std::fs::read(certs::key_path(&theirs.0, "n2")).unwrap(),
    );
    let pem = |what: &str, pem| PemSource { what: what.to_string(), pem };
    let tls =
        PeerTls::from_pem("n2", pem("both CAs", &ca_both), pem("rogue cert", &cert), pem("rogue key", &key))
            .unwrap();
    let trusting_rogue = start(tls, PeerOptions::default()).await;
    let err = trusting_rogue.plane.call("n1", n1.addr(), kind::RAFT, b"x", TIMEOUT).await.unwrap_err();
    assert!(err.is_handshake(), "{err}");
    let refused_inbound =
        n1.plane.stats().handshakes_failed_inbound.load(std::sync::atomic::Ordering::Relaxed);
    assert!(refused_inbound >= 2, "{refused_inbound}");

    tracing::info!("the real n2 is still welcome");
    let n2 = node(&ours, "n2").await;
    assert_eq!(text(n2.plane.call("n1", n1.addr(), kind::RAFT, b"hi", TIMEOUT).await), "kind 1 from n2: hi");
}

#[tokio::test]
async fn a_peer_with_another_nodes_certificate_is_refused() {
    let dir = TestDir::new("peer-wrong-id");
    issue(&dir, &["n1", "n2", "n3"]);
    let (n1, n2) = (node(&dir, "n1").await, node(&dir, "n2").await);

    tracing::info!("gossip says n3 lives at n2's address: the handshake fails");
    let err = n1.plane.call("n3", n2.addr(), kind::RAFT, b"x", TIMEOUT).await.unwrap_err();
    assert!(err.is_handshake(), "{err}");
    assert!(err.to_string().contains("peer certificate is for node \"n2\", expected node \"n3\""), "{err}");
    assert_eq!(n1.plane.rtt("n3"), None);

    tracing::info!("asking for n2 there works");
    assert_eq!(text(n1.plane.call("n2", n2.addr(), kind::RAFT, b"ok", TIMEOUT).await), "kind 1 from n1: ok");
}

#[tokio::test]
async fn bad_frames_reset_their_stream_and_the_server_keeps_serving() {
    let dir = TestDir::new("peer-frames");
    issue(&dir, &["n1", "n2"]);
    let (n1, n2) = (node(&dir, "n1").await, node(&dir, "n2").await);

    tracing::info!("a frame claiming more than the limit is refused before its body is read");
    let (mut send, mut recv) = n1.plane.open_stream("n2", n2.addr()).await.unwrap();
    send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let _ = send.write_all(&[1; 1000]).await;
    let err = frame::read_frame(&mut recv, 1024).await.unwrap_err();
    assert!(matches!(err, FrameError::Reset { code } if code == code::FRAME_TOO_LARGE), "{err}");

    tracing::info!("a stream that ends inside a frame is refused");
    let (mut send, mut recv) = n1.plane.open_stream("n2", n2.addr()).await.unwrap();
    send.write_all(&100u32.to_be_bytes()).await.unwrap();
    send.write_all(&[1; 10]).await.unwrap();
    send.finish().unwrap();
    let err = frame::read_frame(&mut recv, 1024).await.unwrap_err();
    assert!(matches!(err, FrameError::Reset { code } if code == code::FRAME_TRUNCATED), "{err}");

    tracing::info!("so is a stream that ends inside the length, and an empty request");
    let (mut send, mut recv) = n1.plane.open_stream("n2", n2.addr()).await.unwrap();
    send.write_all(&[0, 0]).await.unwrap();
    send.finish().unwrap();
    assert!(matches!(frame::read_frame(&mut recv, 1024).await, Err(FrameError::Reset { .. })));
    let (mut send, mut recv) = n1.plane.open_stream("n2", n2.addr()).await.unwrap();
    frame::write_frame(&mut send, &[]).await.unwrap();
    send.finish().unwrap();
    let err = frame::read_frame(&mut recv, 1024).await.unwrap_err();
    assert!(matches!(err, FrameError::Reset { code } if code == code::BAD_REQUEST), "{err}");

    let rejected = n2.plane.stats().frames_rejected.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(rejected, 4);

    tracing::info!("the same connection and the server still serve calls");
    assert_eq!(
        text(n1.plane.call("n2", n2.addr(), kind::RAFT, b"after", TIMEOUT).await),
        "kind 1 from n1: after"
    );
    assert_eq!(n1.plane.stats().connections_opened.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn garbage_datagrams_break_nothing() {
    let dir = TestDir::new("peer-garbage");
    issue(&dir, &["n1", "n2"]);
    let (n1, n2) = (node(&dir, "n1").await, node(&dir, "n2").await);
    assert_eq!(
        text(n1.plane.call("n2", n2.addr(), kind::RAFT, b"before", TIMEOUT).await),
        "kind 1 from n1: before"
    );

    tracing::info!("random bytes, things that look like QUIC long headers, and a huge datagram");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    for size in [0usize, 1, 5, 20, 100, 1200, 1500, 9000, 65_000] {
        let mut junk = vec![0u8; size];
        rng.fill_bytes(&mut junk);
        let _ = socket.send_to(&junk, n2.addr());
        if size >= 1200 {
            // A long header, version 1: parsed as an Initial, then dropped.
            junk[0] = 0xc0;
            junk[1..5].copy_from_slice(&1u32.to_be_bytes());
            let _ = socket.send_to(&junk, n2.addr());
            // An unknown version: answered with version negotiation, nothing else.
            junk[1..5].copy_from_slice(&0x0a1a_2a3au32.to_be_bytes());
            let _ = socket.send_to(&junk, n2.addr());
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    tracing::info!("the existing connection and a new one both still work");
    assert_eq!(
        text(n1.plane.call("n2", n2.addr(), kind::RAFT, b"after", TIMEOUT).await),
        "kind 1 from n1: after"
    );
    assert_eq!(
        text(n2.plane.call("n1", n1.addr(), kind::RAFT, b"new", TIMEOUT).await),
        "kind 1 from n2: new"
    );
}

#[tokio::test]
async fn shutdown_stops_serving_and_callers_get_errors_not_hangs() {
    let dir = TestDir::new("peer-shutdown");
    issue(&dir, &["n1", "n2"]);
    let n1 = node(&dir, "n1").await;
    let n2 = node(&dir, "n2").await;
    assert_eq!(text(n1.plane.call("n2", n2.addr(), kind::RAFT, b"up", TIMEOUT).await), "kind 1 from n1: up");

    let addr = n2.addr();
    drop(n2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    tracing::info!(
        "the cached connection was closed by the peer, so no RTT; a call fails within its timeout"
    );
    assert_eq!(n1.plane.rtt("n2"), None);
    let started = tokio::time::Instant::now();
    let err = n1.plane.call("n2", addr, kind::RAFT, b"down", Duration::from_secs(1)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{err}");
}

#[test]
fn invalid_options_are_refused() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = TestDir::new("peer-options");
    issue(&dir, &["n1"]);
    let tls = PeerTls::load(&dir.0, "n1").unwrap();
    let options = PeerOptions { keep_alive: Duration::from_secs(60), ..PeerOptions::default() };
    let err = rt.block_on(PeerPlane::bind_with("127.0.0.1:0".parse().unwrap(), tls, options)).err().unwrap();
    assert!(err.to_string().contains("keep_alive"), "{err}");
}
