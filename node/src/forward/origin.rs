//! The origin side: pick a peer, send the request, stream the answer back.

use std::net::IpAddr;

use http::{HeaderValue, Response, StatusCode};
use tokio::time::Instant;

use super::protocol::{decode_headers, encode_headers, ForwardHead, ResponseHead};
use crate::cluster::transport::resolve;
use crate::cluster::Cluster;
use crate::core::failover::{choose_peer, PeerView};
use crate::error::{ErrorKind, GatewayError};
use crate::gateway::Gateway;
use crate::peer::{frame, kind};
use crate::proxy::body::{DownBody, UpBody};
use crate::proxy::inflight::InFlightGuard;
use crate::proxy::pool::RequestHead;

/// What the handler hands over for a forward.
pub struct ForwardRequest<'a> {
    pub service: &'a str,
    pub route: &'a str,
    pub path_and_query: &'a str,
    pub head: &'a RequestHead,
    pub body: UpBody,
    pub has_body: bool,
    pub client_ip: IpAddr,
    pub request_id: &'a HeaderValue,
    pub deadline: Instant,
}

/// How many peers a forward may try. A second one is tried only when the first could not be
/// reached at all (nothing was sent), which is safe for any method: the case of a peer that died
/// before gossip noticed.
const PEER_TRIES: usize = 2;

/// Forward to the best healthy peer of another region. `None` when no peer qualifies (the caller
/// then answers with its own local error).
pub async fn forward(
    gw: &Gateway,
    cluster: &Cluster,
    req: ForwardRequest<'_>,
) -> Option<Result<Response<DownBody>, GatewayError>> {
    let members = cluster.gossip.membership();
    let candidates: Vec<&meridian_gossip::Member> =
        members.members.values().filter(|m| m.id != cluster.id && !m.facts.peer_addr.is_empty()).collect();
    let views: Vec<PeerView<'_>> = candidates
        .iter()
        .map(|m| PeerView {
            region: &m.facts.region,
            live: m.live,
            draining: m.facts.draining,
            healthy: m.facts.services.get(req.service).map_or(0, |s| s.healthy),
            rtt_us: cluster.peer.rtt(&m.id).map(|d| d.as_micros() as u64),
            load: m.facts.load,
        })
        .collect();
    let request_id = req.request_id.to_str().unwrap_or("").to_string();
    let started = Instant::now();
    // Regions this request must not be sent to: ours, and any whose peer could not be reached.
    let mut skip = vec![cluster.region.clone()];
    let mut last_err = None;
    for _ in 0..PEER_TRIES {
        let Some(i) = choose_peer(&views, &cluster.region, &skip) else { break };
        let peer = candidates[i];
        let to_region = peer.facts.region.clone();
        let connected =
            tokio::time::timeout_at(req.deadline, connect(cluster, &peer.id, &peer.facts.peer_addr)).await;
        let streams = match connected {
            Ok(Ok(streams)) => streams,
            Ok(Err(e)) => {
                gw.metrics.count_forward_failure(&cluster.region, &to_region);
                tracing::warn!(request_id = %request_id, to = %peer.id, to_region = %to_region, error = %e, "forward: peer unreachable, nothing sent; trying another region");
                skip.push(to_region);
                last_err = Some(e);
                continue;
            }
            Err(_) => {
                last_err = Some(GatewayError::new(
                    ErrorKind::UpstreamTimeout,
                    format!("forward to {} ({to_region}) passed the request deadline", peer.id),
                ));
                break;
            }
        };
        let head = ForwardHead {
            method: req.head.method.as_str().to_string(),
            path_and_query: req.path_and_query.to_string(),
            headers: encode_headers(&req.head.full_headers()),
            request_id: request_id.clone(),
            client_ip: req.client_ip.to_string(),
            deadline_ms: req.deadline.saturating_duration_since(Instant::now()).as_millis() as u64,
            hops_left: 1,
            visited: vec![cluster.region.clone()],
            has_body: req.has_body,
        };
        let exchange = exchange(gw, cluster, &peer.id, streams, head, req.body);
        let result = match tokio::time::timeout_at(req.deadline, exchange).await {
            Ok(r) => r,
            Err(_) => Err(GatewayError::new(
                ErrorKind::UpstreamTimeout,
                format!("forward to {} ({to_region}) passed the request deadline", peer.id),
            )),
        };
        let elapsed = started.elapsed();
        match &result {
            Ok(resp) => {
                gw.metrics.forward(&cluster.region, &to_region).record(
                    resp.status().as_u16(),
                    elapsed,
                    Instant::now(),
                );
                gw.metrics.route(req.route, &to_region).record(
                    resp.status().as_u16(),
                    elapsed,
                    Instant::now(),
                );
                tracing::info!(
                    request_id = %request_id, service = req.service, to = %peer.id, to_region = %to_region,
                    status = resp.status().as_u16(), duration_us = elapsed.as_micros() as u64,
                    tries = skip.len(), "request forwarded"
                );
            }
            Err(e) => {
                gw.metrics.count_forward_failure(&cluster.region, &to_region);
                tracing::warn!(request_id = %request_id, to = %peer.id, to_region = %to_region, error = %e, "forward failed");
            }
        }
        return Some(result);
    }
    last_err.map(Err)
}

/// Opens the forward's stream to the peer. Nothing of the request has been sent when this fails.
async fn connect(
    cluster: &Cluster,
    peer_id: &str,
    peer_addr: &str,
) -> Result<(quinn::SendStream, quinn::RecvStream), GatewayError> {
    let unreachable = |why: String| GatewayError::new(ErrorKind::UpstreamUnreachable, why);
    let addr = resolve(peer_addr).await.map_err(unreachable)?;
    cluster.peer.open_stream(peer_id, addr).await.map_err(|e| unreachable(format!("forward: {e}")))
}

async fn exchange(
    gw: &Gateway,
    cluster: &Cluster,
    peer_id: &str,
    (mut send, mut recv): (quinn::SendStream, quinn::RecvStream),
    head: ForwardHead,
    body: UpBody,
) -> Result<Response<DownBody>, GatewayError> {
    let unreachable = |why: String| GatewayError::new(ErrorKind::UpstreamUnreachable, why);
    let payload = frame::encode(&head).map_err(|e| unreachable(e.to_string()))?;
    frame::write_request(&mut send, kind::FORWARD, &payload)
        .await
        .map_err(|e| unreachable(format!("forward to {peer_id}: {e}")))?;
    // The body streams while the answer is awaited: a peer may answer before reading it all.
    let has_body = head.has_body;
    tokio::spawn(async move {
        if has_body {
            // A failed client body resets the stream: the peer must not take a short body for whole.
            super::stream::send_body(&mut send, body, frame::code::BAD_REQUEST).await;
        } else {
            let _ = send.finish();
        }
    });
    let max = cluster.peer.options().max_frame;
    let first = frame::read_frame(&mut recv, max)
        .await
        .map_err(|e| unreachable(format!("{peer_id} failed before answering: {e}")))?
        .ok_or_else(|| unreachable(format!("{peer_id} closed the stream before answering")))?;
    let rh: ResponseHead =
        frame::decode(&first).map_err(|e| unreachable(format!("bad answer from {peer_id}: {e}")))?;
    let status =
        StatusCode::from_u16(rh.status).map_err(|_| unreachable(format!("bad status from {peer_id}")))?;
    let headers = decode_headers(&rh.headers).map_err(|e| unreachable(format!("{peer_id}: {e}")))?;
    let rx = super::stream::receive_body(recv, max);
    let mut resp = Response::new(DownBody::Forwarded { rx, held: Some(InFlightGuard::new(&gw.in_flight)) });
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}
