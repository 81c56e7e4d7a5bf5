//! The receiving side of the forward protocol over real QUIC with real certificates: what a peer
//! may send it that it must refuse.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;

use super::protocol::{ForwardHead, ResponseHead};
use crate::certs::{self, TestDir};
use crate::gateway::{Gateway, Identity, Limits};
use crate::peer::{frame, kind, PeerPlane, PeerTls};

const TIMEOUT: Duration = Duration::from_secs(5);

fn gateway() -> Arc<Gateway> {
    let limits = Limits {
        max_in_flight: 100,
        max_body_bytes: 1 << 20,
        retry_buffer_bytes: 64 * 1024,
        connect_timeout: Duration::from_secs(1),
        retry_budget_ratio: 0.2,
        retry_budget_min_per_sec: 10,
    };
    Gateway::new(Identity::new("b", "eu").expect("identity"), limits)
}

/// Node `b` serving forwards from a gateway with no routing table; node `a` to call it.
async fn pair(dir: &TestDir) -> (PeerPlane, PeerPlane, tokio::sync::oneshot::Sender<()>) {
    certs::issue(&dir.0, &["a".to_string(), "b".to_string()]).expect("certs");
    let any = "127.0.0.1:0".parse().expect("addr");
    let a = PeerPlane::bind(any, PeerTls::load(&dir.0, "a").expect("tls a")).await.expect("bind a");
    let b = PeerPlane::bind(any, PeerTls::load(&dir.0, "b").expect("tls b")).await.expect("bind b");
    let gw = gateway();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = b.clone();
    tokio::spawn(async move {
        server.serve(move |call| super::serve::serve(gw.clone(), call).boxed(), stopped.map(|_| ())).await
    });
    (a, b, stop)
}

fn head(hops_left: u8) -> ForwardHead {
    ForwardHead {
        method: "GET".into(),
        path_and_query: "/x".into(),
        headers: vec![("host".into(), b"example".to_vec())],
        request_id: "rid-1".into(),
        client_ip: "192.0.2.1".into(),
        deadline_ms: 2000,
        hops_left,
        visited: vec!["us".into()],
        has_body: false,
    }
}

async fn forward(a: &PeerPlane, b: &PeerPlane, payload: &[u8]) -> Result<(u16, String), String> {
    let (mut send, mut recv) = a.open_stream("b", b.local_addr()).await.map_err(|e| e.to_string())?;
    frame::write_request(&mut send, kind::FORWARD, payload).await.map_err(|e| e.to_string())?;
    let _ = send.finish();
    let first = tokio::time::timeout(TIMEOUT, frame::read_frame(&mut recv, 1 << 20))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or("stream ended")?;
    let rh: ResponseHead = frame::decode(&first).map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = frame::read_frame(&mut recv, 1 << 20).await {
        body.extend_from_slice(&chunk);
    }
    Ok((rh.status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn a_forward_with_no_hops_left_is_refused_with_508() {
    let dir = TestDir::new("fwd-hops");
    let (a, b, _stop) = pair(&dir).await;
    let (status, body) = forward(&a, &b, &frame::encode(&head(0)).expect("encode")).await.expect("answer");
    assert_eq!(status, 508, "{body}");
    assert!(body.contains("hop_limit"), "{body}");
}

#[tokio::test]
async fn malformed_forwards_are_refused_and_the_node_keeps_serving() {
    let dir = TestDir::new("fwd-bad");
    let (a, b, _stop) = pair(&dir).await;
    eprintln!("--- garbage instead of a head: the stream is reset, no answer");
    assert!(forward(&a, &b, b"\x00\x01garbage").await.is_err());
    eprintln!("--- a well-formed head with a bad path and bad header: 400");
    let mut bad = head(1);
    bad.path_and_query = "no-slash".into();
    let (status, _) = forward(&a, &b, &frame::encode(&bad).expect("encode")).await.expect("answer");
    assert_eq!(status, 400);
    let mut bad = head(1);
    bad.headers.push(("bad header".into(), b"x".to_vec()));
    let (status, _) = forward(&a, &b, &frame::encode(&bad).expect("encode")).await.expect("answer");
    assert_eq!(status, 400);
    eprintln!("--- a valid forward is still served (503: this gateway has no routing table)");
    let (status, body) = forward(&a, &b, &frame::encode(&head(1)).expect("encode")).await.expect("answer");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("rid-1") || body.contains("no_healthy_upstream"), "{body}");
}
