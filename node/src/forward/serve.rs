//! The receiving side: serve a forwarded request from this node's region, never forwarding again.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Uri};
use tokio::time::Instant;

use super::protocol::{decode_headers, encode_headers, ForwardHead, ResponseHead};
use crate::gateway::Gateway;
use crate::peer::{frame, PeerCall};
use crate::proxy::body::ClientBody;
use crate::proxy::handler::{self, Forwarded};
use crate::proxy::headers::Scheme;

/// Longest deadline a forwarded request may claim.
const MAX_DEADLINE: Duration = Duration::from_secs(3600);

pub async fn serve(gw: Arc<Gateway>, call: PeerCall) {
    let from = call.from.clone();
    let max = call.max_frame;
    let head: ForwardHead = match frame::decode(&call.payload) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(%from, error = %e, "malformed forwarded request refused");
            return; // dropping the call resets the stream
        }
    };
    let Some((mut send, recv)) = call.into_streams() else { return };
    let refuse = |status: u16, code: &str, message: String| {
        let body = serde_json::json!({"error": code, "message": message, "request_id": head.request_id});
        (
            ResponseHead { status, headers: vec![("content-type".into(), b"application/json".to_vec())] },
            body.to_string(),
        )
    };
    let parsed = parse(&head);
    let (req_parts, client_ip) = match (head.hops_left, parsed) {
        (0, _) => {
            let (rh, body) = refuse(508, "hop_limit", "forwarded request arrived with no hops left".into());
            let _ = write_answer(&mut send, &rh, Some(body.into())).await;
            tracing::warn!(%from, request_id = %head.request_id, "forwarded request refused: hop limit");
            return;
        }
        (_, Err(e)) => {
            let (rh, body) = refuse(400, "bad_forward", e);
            let _ = write_answer(&mut send, &rh, Some(body.into())).await;
            return;
        }
        (_, Ok(p)) => p,
    };
    // The body arrives as frames until the origin finishes its side.
    let rx = if head.has_body {
        super::stream::receive_body(recv, max)
    } else {
        drop(recv);
        tokio::sync::mpsc::channel(1).1
    };
    let (method, uri, headers) = req_parts;
    let mut req = Request::new(ClientBody::Peer { rx, ended: !head.has_body });
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    let deadline = Instant::now() + Duration::from_millis(head.deadline_ms).min(MAX_DEADLINE);
    let fwd = Forwarded { from: from.clone(), visited: head.visited.clone(), deadline };
    // The scheme is the origin's, already in the forwarded x-forwarded-proto.
    let mut resp = handler::respond(gw, req, client_ip, Scheme::Http, Some(fwd)).await;
    crate::proxy::fields::into_header_map(&mut resp);
    let (parts, body) = resp.into_parts();
    let rh = ResponseHead { status: parts.status.as_u16(), headers: encode_headers(&parts.headers) };
    if write_answer(&mut send, &rh, None).await.is_err() {
        return;
    }
    // An upstream failing mid-body resets the stream: the origin must see a failure, not a short body.
    super::stream::send_body(&mut send, body, frame::code::NO_REPLY).await;
}

type Parts = (Method, Uri, http::HeaderMap);

fn parse(head: &ForwardHead) -> Result<(Parts, IpAddr), String> {
    let method = Method::from_bytes(head.method.as_bytes()).map_err(|_| "bad method".to_string())?;
    let uri: Uri = head.path_and_query.parse().map_err(|_| "bad path".to_string())?;
    if !head.path_and_query.starts_with('/') {
        return Err("path must start with '/'".into());
    }
    let headers = decode_headers(&head.headers)?;
    let client_ip: IpAddr = head.client_ip.parse().map_err(|_| "bad client address".to_string())?;
    Ok(((method, uri, headers), client_ip))
}

async fn write_answer(
    send: &mut quinn::SendStream,
    head: &ResponseHead,
    body: Option<Bytes>,
) -> Result<(), frame::FrameError> {
    let bytes = frame::encode(head)?;
    frame::write_frame(send, &bytes).await?;
    if let Some(b) = body {
        frame::write_frame(send, &b).await?;
        let _ = send.finish();
    }
    Ok(())
}
