//! One proxied request, from route match to the response head handed back to hyper.
//!
//! The decisions (route, endpoint, retry or not, health) are the core's; this file only moves
//! bytes and time around them. Local attempts are tried against this node's region; an attempt
//! that fails in a retriable way is repeated on another endpoint while the service's retry
//! budget and the request's deadline allow.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::core::balancer::{self, Candidate};
use crate::core::failover::{may_forward, LocalOutcome};
use crate::core::health::{AttemptOutcome, Census, Transition};
use crate::core::retry::{is_retriable, Failure, RequestFacts};
use crate::error::{ErrorKind, GatewayError};
use crate::forward::{self, origin::ForwardRequest};
use crate::gateway::{unix_ms, EndpointRuntime, Gateway, ServiceRuntime};
use crate::proxy::body::{ClientBody, DownBody, Held, UpBody};
use crate::proxy::fields::{self, NodeFields};
use crate::proxy::headers::{self as hdr, Scheme, X_MERIDIAN_NODE, X_MERIDIAN_REGION, X_REQUEST_ID};
use crate::proxy::inflight::InFlightGuard;
use crate::proxy::pool::{OwnFields, RequestHead, SendError, UpstreamBody};
use crate::quota::RateLimitInfo;

/// A request another node forwarded here: it is served from this region only.
pub struct Forwarded {
    /// The forwarding node (from its certificate).
    pub from: String,
    pub visited: Vec<String>,
    /// The origin's deadline, translated to this node's clock.
    pub deadline: Instant,
}

/// Serve one client request that arrived on a listener of `scheme`. Never fails: every error
/// becomes a small JSON response.
pub fn handle(
    gw: Arc<Gateway>,
    req: Request<ClientBody>,
    client: SocketAddr,
    scheme: Scheme,
) -> std::pin::Pin<Box<impl std::future::Future<Output = Response<DownBody>> + Send>> {
    // Boxed once, here: the request's future is a few KiB, and the server moves the future it
    // is given; a pointer moves for free. Not an `async fn` of its own, which would be one more
    // layer holding a copy of the request. hyper writes the header map only, so the upstream's
    // fields go into it.
    Box::pin(async move {
        let mut resp = respond(gw, req, client.ip(), scheme, None).await;
        fields::into_header_map(&mut resp);
        resp
    })
}

/// [`handle`] for a request read by hyper (HTTP/2, and HTTP/1.1 over TLS).
pub fn handle_hyper(
    gw: Arc<Gateway>,
    req: Request<Incoming>,
    client: SocketAddr,
    scheme: Scheme,
) -> std::pin::Pin<Box<impl std::future::Future<Output = Response<DownBody>> + Send>> {
    handle(gw, req.map(|inner| ClientBody::Http { inner }), client, scheme)
}

/// The data plane as the HTTP/1.1 server sees it.
#[derive(Clone)]
pub struct DataPlane {
    pub gw: Arc<Gateway>,
    pub scheme: Scheme,
}

impl crate::proxy::h1_server::Service for DataPlane {
    fn call(
        &self,
        req: Request<ClientBody>,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = Response<DownBody>> + Send + 'static + use<> {
        // Not boxed: the connection's task holds it, and moves it only once, into place.
        respond(self.gw.clone(), req, peer.ip(), self.scheme, None)
    }

    fn refuse(&self, status: http::StatusCode, why: &'static str) -> Response<DownBody> {
        let kind = match status {
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ErrorKind::HeadersTooLarge,
            http::StatusCode::REQUEST_TIMEOUT => ErrorKind::ClientTimeout,
            _ => ErrorKind::BadRequest,
        };
        self.gw.metrics.count_error(kind);
        let request_id = hdr::new_request_id();
        let mut resp = error_response(&GatewayError::new(kind, why), &request_id);
        let h = resp.headers_mut();
        name_node(h, &self.gw.identity.fields);
        h.insert(X_REQUEST_ID, request_id);
        resp
    }
}

/// Serve a request from a client or, with `fwd`, one forwarded by a peer. `scheme` is how the
/// client reached this node; a forwarded request carries its origin's `x-forwarded-proto`
/// instead, so it is not used then.
pub async fn respond(
    gw: Arc<Gateway>,
    req: Request<ClientBody>,
    client_ip: IpAddr,
    scheme: Scheme,
    fwd: Option<Forwarded>,
) -> Response<DownBody> {
    let start = Instant::now();
    let request_id = hdr::request_id(req.headers());
    // Kept only when the refusal line will be logged: no allocation on the hot path otherwise.
    let what = tracing::enabled!(tracing::Level::DEBUG).then(|| (req.method().clone(), req.uri().clone()));
    let mut rate = None;
    let client = Client { ip: client_ip, scheme };
    // An answer from an upstream or another region names the node and region that served it
    // already (`proxy` sees to that); a refusal is this node's own.
    let mut resp = match proxy(&gw, req, client, &request_id, start, fwd.as_ref(), &mut rate).await {
        Ok(resp) => resp,
        Err(e) => {
            gw.metrics.count_error(e.kind);
            if let Some((method, uri)) = what {
                tracing::debug!(request_id = ?request_id, %method, path = %uri.path(), error = %e, "request refused");
            }
            let mut resp = error_response(&e, &request_id);
            name_node(resp.headers_mut(), &gw.identity.fields);
            resp
        }
    };
    if let Some(rate) = rate {
        rate.apply(resp.headers_mut());
    }
    // Beside an HTTP/1 upstream's fields when it has them: the header map then stays empty.
    match resp.body_mut().fields_mut() {
        Some(fields) => fields.set_request_id(request_id),
        None => {
            resp.headers_mut().insert(X_REQUEST_ID, request_id);
        }
    }
    resp
}

/// Set `x-meridian-node` and `x-meridian-region` in `h`.
fn name_node(h: &mut HeaderMap, node: &NodeFields) {
    h.insert(X_MERIDIAN_NODE, node.node().clone());
    h.insert(X_MERIDIAN_REGION, node.region().clone());
}

pub fn error_response(e: &GatewayError, request_id: &HeaderValue) -> Response<DownBody> {
    let body = serde_json::json!({
        "error": e.code(),
        "message": e.detail,
        "request_id": request_id.to_str().unwrap_or(""),
    });
    let mut resp = Response::new(DownBody::full(body.to_string()));
    *resp.status_mut() = e.status();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(secs) = e.retry_after() {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(challenge) = &e.challenge {
        h.insert(header::WWW_AUTHENTICATE, challenge.clone());
    }
    resp
}

/// The connecting client: its address and the scheme of the listener it used.
#[derive(Clone, Copy)]
struct Client {
    ip: IpAddr,
    scheme: Scheme,
}

async fn proxy(
    gw: &Arc<Gateway>,
    mut req: Request<ClientBody>,
    client: Client,
    request_id: &HeaderValue,
    start: Instant,
    fwd: Option<&Forwarded>,
    rate: &mut Option<RateLimitInfo>,
) -> Result<Response<DownBody>, GatewayError> {
    let node_guard = InFlightGuard::new(&gw.in_flight);
    if gw.in_flight.load(Ordering::Relaxed) > gw.limits.max_in_flight {
        return Err(GatewayError::new(ErrorKind::Overloaded, "too many requests in flight on this node"));
    }
    let snap = gw.snapshot().ok_or_else(|| {
        GatewayError::new(ErrorKind::NoHealthyUpstream, "this node has no routing table yet")
    })?;
    let host = request_host(&req);
    let m = snap
        .matcher
        .find(host, req.method(), req.uri().path())
        .ok_or_else(|| GatewayError::new(ErrorKind::NoRoute, "no route matches this request"))?;
    let route = &snap.routes[m.route_index];
    let svc = snap.services[route.service].clone();
    // IP lists and authentication, before any quota or upstream work. A forwarded request passed
    // them at its origin, which set its identity.
    if fwd.is_none() {
        let admitted =
            crate::auth::admit(route.edge.as_ref(), req.headers_mut(), client.ip, || unix_ms() / 1000);
        if let Err(e) = admitted {
            route.metrics.record(e.status().as_u16(), start.elapsed(), Instant::now());
            return Err(e);
        }
    }
    // The origin node counted a forwarded request already.
    if let (Some(quota), None) = (&route.quota, fwd) {
        let decision =
            gw.quotas.check(quota, &gw.identity.id, req.headers(), client.ip, &route.name, unix_ms());
        *rate = Some(RateLimitInfo { policy: quota.policy.clone(), name: quota.name.clone(), decision });
        if !decision.admitted {
            route.metrics.record(429, start.elapsed(), Instant::now());
            return Err(GatewayError::new(
                ErrorKind::RateLimited,
                format!("quota {} is used up for this window", quota.name),
            ));
        }
    }

    let (mut parts, body) = req.into_parts();
    let content_length = content_length(&parts.headers)?;
    if content_length.is_some_and(|n| n > gw.limits.max_body_bytes) {
        return Err(GatewayError::new(
            ErrorKind::BodyTooLarge,
            format!("request body exceeds the limit of {} bytes", gw.limits.max_body_bytes),
        ));
    }

    // Upstream head: origin-form URI, cleaned headers, forwarding facts.
    let uri: Uri = match (&m.rewritten_path, parts.uri.query()) {
        // Unchanged: the client's own path and query, shared rather than copied and parsed again
        // when it is already in origin form (it nearly always is).
        (None, _) => match parts.uri.path_and_query() {
            Some(pq) if origin_path(&parts.uri) == pq.as_str() => Uri::from(pq.clone()),
            _ => origin_path(&parts.uri)
                .parse()
                .map_err(|_| GatewayError::new(ErrorKind::BadRequest, "request path cannot be forwarded"))?,
        },
        (Some(p), q) => {
            let pq = match q {
                Some(q) => format!("{p}?{q}"),
                None => p.clone(),
            };
            pq.parse()
                .map_err(|_| GatewayError::new(ErrorKind::BadRequest, "request path cannot be forwarded"))?
        }
    };
    let client_authority = parts.uri.authority().cloned();
    let mut headers = std::mem::take(&mut parts.headers);
    hdr::strip_request_fields(&mut headers);
    if !headers.contains_key(header::HOST) {
        if let Some(a) = &client_authority {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                headers.insert(header::HOST, v);
            }
        }
    }
    // A forwarded request carries the origin's forwarding fields already.
    let own = OwnFields {
        request_id: Some(request_id.clone()),
        forwarded: fwd.is_none().then_some((client.ip, client.scheme)),
    };
    // Looked up only where it decides something: for a method that is not idempotent itself.
    let has_idempotency_key = !crate::core::retry::method_is_idempotent(&parts.method)
        && headers.contains_key(hdr::IDEMPOTENCY_KEY);

    let has_body = content_length.map_or(!body_is_empty(&body), |n| n > 0);
    let deadline = match fwd {
        Some(f) => f.deadline.min(start + svc.timeout),
        None => start + svc.timeout,
    };
    let mut tripped = None;
    let head = RequestHead { method: parts.method.clone(), uri, headers, own };
    let mut outgoing = if !has_body {
        Outgoing { head, body: OutBody::Replayable(None) }
    } else if content_length.is_some_and(|n| n <= gw.limits.retry_buffer_bytes) {
        // Bounded by the request's deadline: a client that stalls mid-body must not hold its
        // in-flight slot for ever.
        // Boxed: only requests with a body wait here, and inline it would enlarge every request.
        let data =
            Box::pin(tokio::time::timeout_at(deadline, read_small_body(body, gw.limits.retry_buffer_bytes)))
                .await
                .map_err(|_| {
                    GatewayError::new(ErrorKind::ClientTimeout, "request body not received in time")
                })??;
        Outgoing { head, body: OutBody::Replayable(Some(data)) }
    } else {
        let (up, flag) = UpBody::streaming(body, gw.limits.max_body_bytes);
        tripped = Some(flag);
        Outgoing { head, body: OutBody::Once(Some(up)) }
    };
    let facts = RequestFacts::new(&parts.method, has_idempotency_key, outgoing.is_replayable());

    // Failover applies to client requests (never forwarded ones) of clustered nodes.
    let cluster = if fwd.is_none() && svc.failover.enabled { gw.cluster() } else { None };
    if cluster.is_some() {
        if let Ok(mut b) = svc.forward_budget.lock() {
            b.on_request(start);
        }
    }
    // A region with too few endpoints left sends everything away rather than overloading them.
    let threshold = u32::from(svc.failover.local_healthy_below_percent);
    let skip_local = cluster.is_some() && threshold > 0 && {
        let now = Instant::now();
        let up = svc.local.iter().filter(|e| e.is_available(now)).count() as u32;
        up * 100 < threshold * (svc.local.len() as u32).max(1)
    };
    let result = if skip_local {
        Err((
            GatewayError::new(
                ErrorKind::NoHealthyUpstream,
                format!(
                    "service {} has too few healthy endpoints in region {}",
                    svc.name, gw.identity.region
                ),
            ),
            Some(LocalOutcome::NoHealthyEndpoint),
        ))
    } else {
        // The first attempt reuses `start` as its clock reading unless a request body was
        // read (and maybe waited for) since.
        let fresh = (!has_body).then_some(start);
        attempt_local(gw, &svc, &mut outgoing, facts, start, fresh, deadline, request_id).await
    };

    // Failover: a request whose local attempts could not succeed goes once to a healthy region,
    // if repeating it is safe and its body is still in hand. Forwards after a failed attempt
    // spend the cross-region budget; forwards because nothing local was available do not.
    let outcome = match &result {
        Ok((resp, _, _)) if matches!(resp.status().as_u16(), 502..=504) => {
            Some(LocalOutcome::Failed(Failure::Status(resp.status().as_u16())))
        }
        Ok(_) => None,
        Err((_, outcome)) => *outcome,
    };
    let budget_ok = |outcome: LocalOutcome| {
        outcome == LocalOutcome::NoHealthyEndpoint
            || svc.forward_budget.lock().map(|mut b| b.try_retry(Instant::now())).unwrap_or(false)
    };
    if let (Some(cluster), Some(outcome)) = (cluster, outcome) {
        if may_forward(outcome, facts, outgoing.has_body_in_hand()) && budget_ok(outcome) {
            if let Some(body) = outgoing.next_body() {
                let original_pq = origin_path(&parts.uri).into_owned();
                let req = ForwardRequest {
                    service: &svc.name,
                    route: &route.name,
                    path_and_query: &original_pq,
                    head: &outgoing.head,
                    body,
                    has_body,
                    client_ip: client.ip,
                    request_id,
                    deadline,
                };
                // Boxed: the forwarding future is large and rare, and kept inline it would make
                // every request's future (moved a few times on its way into hyper) as large.
                match Box::pin(forward::origin::forward(gw, &cluster, req)).await {
                    Some(Ok(mut resp)) => {
                        // The serving node named itself; an older peer might not have.
                        let h = resp.headers_mut();
                        h.entry(X_MERIDIAN_NODE).or_insert_with(|| gw.identity.fields.node().clone());
                        h.entry(X_MERIDIAN_REGION).or_insert_with(|| gw.identity.fields.region().clone());
                        return Ok(resp);
                    }
                    // The local error explains the most when no region could take the request;
                    // a forward that failed explains itself.
                    Some(Err(e)) if result.is_err() && !skip_local => return Err(e),
                    _ => {}
                }
            }
        }
    }
    // Below the threshold but no other region could take it: the endpoints left here will do.
    let result = if skip_local && outgoing.has_body_in_hand() {
        attempt_local(gw, &svc, &mut outgoing, facts, start, None, deadline, request_id).await
    } else {
        result
    };

    // One clock read for the latency and the histogram window.
    let end = Instant::now();
    let elapsed = end.saturating_duration_since(start);
    match result {
        Ok((resp, ep_guard, endpoint)) => {
            let status = resp.status();
            route.metrics.record(status.as_u16(), elapsed, end);
            tracing::debug!(
                request_id = ?request_id,
                method = %parts.method,
                path = %parts.uri.path(),
                route = %route.name,
                upstream = %svc.local[endpoint].url,
                status = status.as_u16(),
                duration_us = elapsed.as_micros() as u64,
                forwarded_from = fwd.map(|f| f.from.as_str()),
                "request"
            );
            let (mut rparts, mut rbody) = resp.into_parts();
            // An HTTP/1 response's fields were sorted as they were read, and Meridian's own go
            // beside them.
            if matches!(rbody, UpstreamBody::H2(_)) {
                hdr::strip_hop_by_hop(&mut rparts.headers);
            }
            match rbody.fields_mut() {
                Some(fields) => fields.name_node(&gw.identity.fields),
                None => name_node(&mut rparts.headers, &gw.identity.fields),
            }
            let held = Held { endpoint: ep_guard, node: node_guard };
            Ok(Response::from_parts(rparts, DownBody::upstream(rbody, held)))
        }
        Err((mut e, _)) => {
            if tripped.is_some_and(|t| t.load(Ordering::Relaxed)) {
                e = GatewayError::new(
                    ErrorKind::BodyTooLarge,
                    format!("request body exceeds the limit of {} bytes", gw.limits.max_body_bytes),
                );
            }
            route.metrics.record(e.status().as_u16(), elapsed, end);
            Err(e)
        }
    }
}

/// The request as it will be sent, once or again.
struct Outgoing {
    head: RequestHead,
    body: OutBody,
}

enum OutBody {
    /// No body or a buffered one: it can be sent again for each attempt.
    Replayable(Option<Bytes>),
    /// A streamed body: sent at most once, unless it comes back unsent.
    Once(Option<UpBody>),
}

impl Outgoing {
    fn is_replayable(&self) -> bool {
        matches!(self.body, OutBody::Replayable(_))
    }

    fn next_body(&mut self) -> Option<UpBody> {
        match &mut self.body {
            OutBody::Replayable(Some(d)) => Some(UpBody::Buffered { data: Some(d.clone()) }),
            OutBody::Replayable(None) => Some(UpBody::Empty),
            OutBody::Once(slot) => slot.take(),
        }
    }

    /// The body can still be sent: buffered, or streamed but not yet handed to an upstream.
    fn has_body_in_hand(&self) -> bool {
        match &self.body {
            OutBody::Replayable(_) => true,
            OutBody::Once(slot) => slot.is_some(),
        }
    }

    fn give_back(&mut self, body: UpBody) {
        if let OutBody::Once(slot) = &mut self.body {
            *slot = Some(body);
        }
    }
}

/// The response, the endpoint's in-flight slot and the endpoint's index in `svc.local`.
type Served = (Response<UpstreamBody>, InFlightGuard, usize);

/// Why the local attempts failed, for the failover decision; `None` when the failure is the
/// client's own (its body failed), which no other region can fix.
type LocalError = (GatewayError, Option<LocalOutcome>);

#[allow(clippy::too_many_arguments)]
async fn attempt_local(
    gw: &Arc<Gateway>,
    svc: &Arc<ServiceRuntime>,
    outgoing: &mut Outgoing,
    facts: RequestFacts,
    start: Instant,
    mut fresh: Option<Instant>,
    deadline: Instant,
    request_id: &HeaderValue,
) -> Result<Served, LocalError> {
    let max_attempts = 1 + svc.spec.retries as usize;
    if let Ok(mut b) = svc.budget.lock() {
        b.on_request(start);
    }
    let mut tried = [false; 64];
    let mut last_error: Option<(GatewayError, Failure)> = None;
    let mut attempt = 0;
    while attempt < max_attempts {
        attempt += 1;
        let now = fresh.take().unwrap_or_else(Instant::now);
        let Some(idx) = pick_endpoint(&svc.local, &tried, now) else {
            break;
        };
        if let Some(t) = tried.get_mut(idx) {
            *t = true;
        }
        let ep = &svc.local[idx];
        let remaining = deadline.saturating_duration_since(now);
        if remaining.is_zero() {
            return Err((
                GatewayError::new(ErrorKind::UpstreamTimeout, "request deadline passed"),
                Some(LocalOutcome::Failed(Failure::Timeout)),
            ));
        }
        let ep_guard = InFlightGuard::new(&ep.in_flight);

        // Connect first: a connect failure has sent nothing and is always safe to retry.
        let connect_by = deadline.min(now + gw.limits.connect_timeout);
        let conn = match tokio::time::timeout_at(connect_by, ep.pool.checkout(remaining, now)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                record(gw, svc, ep, AttemptOutcome::ConnectionFailure);
                let err = GatewayError::new(ErrorKind::UpstreamUnreachable, e.to_string());
                if should_retry(gw, svc, Failure::NotSent, facts, attempt, max_attempts, request_id, &ep.url)
                {
                    last_error = Some((err, Failure::NotSent));
                    continue;
                }
                return Err((err, Some(LocalOutcome::Failed(Failure::NotSent))));
            }
            Err(_) => {
                record(gw, svc, ep, AttemptOutcome::ConnectionFailure);
                let err = GatewayError::new(
                    ErrorKind::UpstreamUnreachable,
                    format!("connect to {} timed out", ep.url),
                );
                if should_retry(gw, svc, Failure::NotSent, facts, attempt, max_attempts, request_id, &ep.url)
                {
                    last_error = Some((err, Failure::NotSent));
                    continue;
                }
                return Err((err, Some(LocalOutcome::Failed(Failure::NotSent))));
            }
        };
        let Some(body) = outgoing.next_body() else {
            break;
        };
        // A fresh connection took time to open; a pooled one was ready at `now`.
        let sent_at = if conn.is_fresh() { Instant::now() } else { now };
        let per_try = svc.per_try_timeout.min(deadline.saturating_duration_since(sent_at));
        match ep.pool.send(conn, &outgoing.head, body, sent_at, sent_at + per_try).await {
            Ok(resp) => {
                let status = resp.status();
                if status.is_server_error() {
                    record(gw, svc, ep, AttemptOutcome::ServerError);
                    if should_retry(
                        gw,
                        svc,
                        Failure::Status(status.as_u16()),
                        facts,
                        attempt,
                        max_attempts,
                        request_id,
                        &ep.url,
                    ) {
                        last_error = Some((
                            GatewayError::new(
                                ErrorKind::UpstreamUnreachable,
                                format!("upstream answered {status}"),
                            ),
                            Failure::Status(status.as_u16()),
                        ));
                        continue;
                    }
                } else {
                    record(gw, svc, ep, AttemptOutcome::Success);
                }
                return Ok((resp, ep_guard, idx));
            }
            Err(SendError::Unsent { body, detail }) => {
                // A shared connection that closed before use: nothing was sent, and it says
                // nothing about the endpoint's health.
                outgoing.give_back(body);
                last_error =
                    Some((GatewayError::new(ErrorKind::UpstreamUnreachable, detail), Failure::NotSent));
                if let Some(t) = tried.get_mut(idx) {
                    *t = false;
                }
                continue;
            }
            Err(SendError::ClientBody(detail)) => {
                return Err((GatewayError::new(ErrorKind::ClientBodyFailed, detail), None));
            }
            Err(SendError::Failed(detail)) => {
                record(gw, svc, ep, AttemptOutcome::ConnectionFailure);
                let err = GatewayError::new(ErrorKind::UpstreamUnreachable, format!("{}: {detail}", ep.url));
                if should_retry(gw, svc, Failure::Reset, facts, attempt, max_attempts, request_id, &ep.url) {
                    last_error = Some((err, Failure::Reset));
                    continue;
                }
                return Err((err, Some(LocalOutcome::Failed(Failure::Reset))));
            }
            Err(SendError::TimedOut) => {
                record(gw, svc, ep, AttemptOutcome::Timeout);
                let err = GatewayError::new(
                    ErrorKind::UpstreamTimeout,
                    format!("{} sent no response within {} ms", ep.url, per_try.as_millis()),
                );
                if should_retry(gw, svc, Failure::Timeout, facts, attempt, max_attempts, request_id, &ep.url)
                    && deadline > Instant::now()
                {
                    last_error = Some((err, Failure::Timeout));
                    continue;
                }
                return Err((err, Some(LocalOutcome::Failed(Failure::Timeout))));
            }
        }
    }
    Err(match last_error {
        Some((err, failure)) => (err, Some(LocalOutcome::Failed(failure))),
        None => (
            GatewayError::new(
                ErrorKind::NoHealthyUpstream,
                format!("service {} has no healthy endpoint in region {}", svc.name, gw.identity.region),
            ),
            Some(LocalOutcome::NoHealthyEndpoint),
        ),
    })
}

#[allow(clippy::too_many_arguments)]
fn should_retry(
    gw: &Gateway,
    svc: &ServiceRuntime,
    failure: Failure,
    facts: RequestFacts,
    attempt: usize,
    max_attempts: usize,
    request_id: &HeaderValue,
    endpoint: &str,
) -> bool {
    if attempt >= max_attempts || !is_retriable(failure, facts) {
        return false;
    }
    let granted = svc.budget.lock().map(|mut b| b.try_retry(Instant::now())).unwrap_or(false);
    if granted {
        gw.metrics.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(request_id = ?request_id, service = %svc.name, endpoint, ?failure, "retrying");
    } else {
        gw.metrics.retries_denied_by_budget.fetch_add(1, Ordering::Relaxed);
    }
    granted
}

fn pick_endpoint(endpoints: &[Arc<EndpointRuntime>], tried: &[bool], now: Instant) -> Option<usize> {
    // Stack-only candidate list for the usual small endpoint sets.
    let mut small = [Candidate { available: false, in_flight: 0, tried: false }; 16];
    let mut large = Vec::new();
    let cands: &mut [Candidate] = if endpoints.len() <= small.len() {
        &mut small[..endpoints.len()]
    } else {
        large.resize(endpoints.len(), Candidate { available: false, in_flight: 0, tried: false });
        &mut large
    };
    for (i, ep) in endpoints.iter().enumerate() {
        cands[i] = Candidate {
            available: ep.is_available(now),
            in_flight: ep.in_flight.load(Ordering::Relaxed),
            tried: tried.get(i).copied().unwrap_or(false),
        };
    }
    balancer::pick(cands, crate::proxy::rng::random(), crate::proxy::rng::random())
}

fn record(gw: &Gateway, svc: &ServiceRuntime, ep: &EndpointRuntime, outcome: AttemptOutcome) {
    let now = Instant::now();
    let census = if outcome == AttemptOutcome::Success {
        Census::default()
    } else {
        Census {
            total: svc.local.len() as u32,
            ejected_others: svc
                .local
                .iter()
                .filter(|e| !std::ptr::eq(e.as_ref(), ep))
                .filter(|e| e.health.lock().map(|h| h.is_ejected(now)).unwrap_or(false))
                .count() as u32,
        }
    };
    let transition = ep.health.lock().ok().and_then(|mut h| h.on_attempt(outcome, now, census, &svc.policy));
    if let Some(Transition::Ejected { for_ms }) = transition {
        gw.metrics.ejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(service = %svc.name, endpoint = %ep.url, for_ms, ?outcome, "endpoint ejected");
    }
}

/// The request target in origin form (`/path?query`, or `*`): an absolute-form target with an
/// empty path (`http://host?q=1`) has a path-and-query of `?q=1`, which is not a valid request
/// line on its own; its origin form is `/?q=1`.
fn origin_path(uri: &Uri) -> std::borrow::Cow<'_, str> {
    match uri.path_and_query().map(|pq| pq.as_str()) {
        None | Some("") => "/".into(),
        Some(pq) if pq.starts_with('/') || pq == "*" => pq.into(),
        Some(pq) => format!("/{pq}").into(),
    }
}

/// The request's host without port: from the URI (HTTP/2, absolute form) or the Host header.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    let raw = match req.uri().host() {
        Some(h) => return Some(h),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    // Strip a port, minding IPv6 literals.
    if raw.starts_with('[') {
        raw.find(']').map(|i| &raw[..=i])
    } else {
        raw.split(':').next()
    }
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, GatewayError> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| GatewayError::new(ErrorKind::BadRequest, "invalid content-length")),
    }
}

fn body_is_empty(body: &ClientBody) -> bool {
    use http_body::Body;
    body.is_end_stream()
}

async fn read_small_body(body: ClientBody, limit: u64) -> Result<Bytes, GatewayError> {
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(GatewayError::new(ErrorKind::BodyTooLarge, "request body longer than its content-length"))
        }
        Err(e) => Err(GatewayError::new(ErrorKind::ClientBodyFailed, format!("reading request body: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_targets_go_upstream_in_origin_form() {
        for (target, expected) in [
            ("/a/b?c=1", "/a/b?c=1"),
            ("/", "/"),
            ("*", "*"),
            ("http://host", "/"),
            ("http://host/x?y=1", "/x?y=1"),
            ("http://host?q=1", "/?q=1"),
            ("host:443", "/"),
        ] {
            let uri: Uri = target.parse().expect("uri");
            let origin = origin_path(&uri);
            assert_eq!(origin, expected, "{target}");
            assert!(origin.parse::<Uri>().is_ok(), "{target} -> {origin} is a valid request target");
        }
    }
}
