//! Upstream connections: a keep-alive pool per endpoint.
//!
//! HTTP/1.1 connections are lent to one exchange at a time and come back when the response body
//! has been read to its end (`h1::H1Body` returns them); HTTP/2 (h2c) endpoints share one
//! multiplexed hyper connection. Connecting is a separate step from sending, so a failure to
//! connect is known to have sent nothing: such a request may be retried whatever its method or body.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::Authority;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::core::table::UpstreamProtocol;
use crate::proxy::body::UpBody;
use crate::proxy::h1::{H1Body, H1Conn, H1Error};
use crate::proxy::headers::{self as hdr, Scheme};

/// Longest a pooled HTTP/1 connection may sit idle; upstreams commonly close at 60 s or more.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// Idle for longer than this, a connection is checked for a close by the upstream before reuse.
const PROBE_AFTER: Duration = Duration::from_millis(500);
/// Most idle connections kept per endpoint.
const MAX_IDLE: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0} timed out")]
    Timeout(Authority),
    #[error("connect to {0}: {1}")]
    Io(Authority, std::io::Error),
    #[error("handshake with {0}: {1}")]
    Handshake(Authority, hyper::Error),
}

pub struct ConnPool {
    authority: Authority,
    protocol: UpstreamProtocol,
    // Boxed: a connection travels with every request (checkout, exchange, response body), and
    // a pointer moves for free; kept boxed while idle so that costs no allocation per request.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<H1Conn>>>,
    shared_h2: Mutex<Option<http2::SendRequest<UpBody>>>,
}

/// A connection ready to carry one request. Short-lived and moved once, so the size difference
/// between the variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Conn {
    H1(Box<H1Conn>),
    H2(http2::SendRequest<UpBody>),
}

impl Conn {
    /// Opened by this checkout rather than taken from the pool (HTTP/2 is counted as fresh: its
    /// shared connection may have just been opened).
    pub fn is_fresh(&self) -> bool {
        match self {
            Conn::H1(c) => !c.reused,
            Conn::H2(_) => true,
        }
    }
}

/// A response head with its streaming body.
pub enum UpstreamBody {
    H1(H1Body),
    H2(Incoming),
}

impl UpstreamBody {
    /// The fields of an HTTP/1 upstream's response when they are kept as received (`None`:
    /// they are in the header map).
    pub fn fields_mut(&mut self) -> Option<&mut crate::proxy::fields::UpstreamFields> {
        match self {
            UpstreamBody::H1(body) => body.fields_mut(),
            UpstreamBody::H2(_) => None,
        }
    }
}

/// What is sent upstream apart from the body: kept by the caller across attempts, so an HTTP/1
/// attempt encodes it without copying it.
pub struct RequestHead {
    pub method: http::Method,
    /// Origin form (`/path?query`).
    pub uri: http::Uri,
    /// The client's fields, cleaned.
    pub headers: http::HeaderMap,
    /// The fields Meridian sets, kept beside `headers` rather than inserted into them: the
    /// HTTP/1 writer puts them straight into the request head, in place of the client's.
    pub own: OwnFields,
}

/// The fields Meridian sets on a request it passes on.
#[derive(Default)]
pub struct OwnFields {
    /// `x-request-id`.
    pub request_id: Option<http::HeaderValue>,
    /// The client's address and the scheme it used: `x-forwarded-for` (appended to the
    /// client's) and `x-forwarded-proto`. `None` for a request a peer forwarded, which carries
    /// its origin's.
    pub forwarded: Option<(std::net::IpAddr, Scheme)>,
}

impl RequestHead {
    /// The fields as sent: the client's with Meridian's set in them (for HTTP/2 upstreams and
    /// the peer plane, which send a header map).
    pub fn full_headers(&self) -> http::HeaderMap {
        let mut headers = self.headers.clone();
        if let Some((ip, scheme)) = self.own.forwarded {
            hdr::add_forwarded(&mut headers, ip, scheme);
        }
        if let Some(id) = &self.own.request_id {
            headers.insert(hdr::X_REQUEST_ID, id.clone());
        }
        headers
    }
}

/// A send that failed.
pub enum SendError {
    /// Never left this process (an h2 connection closed before use): send it again elsewhere.
    Unsent { body: UpBody, detail: String },
    /// The client's own body failed (or went over the size limit) while being forwarded.
    ClientBody(String),
    /// The upstream failed after the request may have reached it.
    Failed(String),
    /// No response head by the per-try deadline.
    TimedOut,
}

impl ConnPool {
    pub fn new(authority: Authority, protocol: UpstreamProtocol) -> ConnPool {
        ConnPool { authority, protocol, idle: Mutex::new(Vec::new()), shared_h2: Mutex::new(None) }
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// Number of idle HTTP/1 connections (for metrics).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// A ready connection: a pooled one if any is usable, else a new one.
    /// `now` is the caller's clock reading, for the idle checks.
    pub async fn checkout(&self, connect_timeout: Duration, now: Instant) -> Result<Conn, ConnectError> {
        match self.protocol {
            UpstreamProtocol::Http1 => {
                if let Some(conn) = self.take_idle(now) {
                    return Ok(Conn::H1(conn));
                }
            }
            UpstreamProtocol::H2c => {
                if let Some(sender) = self.shared_h2.lock().ok().and_then(|g| g.clone()) {
                    if !sender.is_closed() {
                        return Ok(Conn::H2(sender));
                    }
                }
            }
        }
        // Boxed: opening a connection is the rare case, and its future inline would make every
        // request's future larger (and every move of it dearer).
        Box::pin(self.open(connect_timeout)).await
    }

    async fn open(&self, connect_timeout: Duration) -> Result<Conn, ConnectError> {
        match self.protocol {
            UpstreamProtocol::Http1 => {
                let stream = self.connect(connect_timeout).await?;
                Ok(Conn::H1(Box::new(H1Conn::new(stream))))
            }
            UpstreamProtocol::H2c => {
                let stream = self.connect(connect_timeout).await?;
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| ConnectError::Handshake(self.authority.clone(), e))?;
                tokio::spawn(async move {
                    // Runs until the upstream closes it or the last sender is dropped.
                    let _ = conn.await;
                });
                if let Ok(mut slot) = self.shared_h2.lock() {
                    *slot = Some(sender.clone());
                }
                Ok(Conn::H2(sender))
            }
        }
    }

    fn take_idle(&self, now: Instant) -> Option<Box<H1Conn>> {
        loop {
            // Newest first: the most recently used connection is the warmest.
            let mut conn = self.idle.lock().ok()?.pop()?;
            let idle_for = now.saturating_duration_since(conn.idle_since);
            if idle_for >= IDLE_TIMEOUT {
                continue;
            }
            if idle_for < PROBE_AFTER || conn.is_usable() {
                return Some(conn);
            }
        }
    }

    pub(crate) fn put_idle_h1(&self, conn: Box<H1Conn>) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
    }

    async fn connect(&self, timeout: Duration) -> Result<TcpStream, ConnectError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(self.authority.as_str()))
            .await
            .map_err(|_| ConnectError::Timeout(self.authority.clone()))?
            .map_err(|e| ConnectError::Io(self.authority.clone(), e))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Send one request on `conn` and return the response head; the body streams.
    pub async fn send(
        self: &Arc<Self>,
        conn: Conn,
        head: &RequestHead,
        body: UpBody,
        sent_at: Instant,
        deadline: Instant,
    ) -> Result<http::Response<UpstreamBody>, SendError> {
        match conn {
            Conn::H1(conn) => match H1Conn::send(conn, head, body, self.clone(), sent_at, deadline).await {
                Ok((resp, body)) => Ok(resp.map(|()| UpstreamBody::H1(body))),
                Err(H1Error::ClientBody(e)) => Err(SendError::ClientBody(e.to_string())),
                Err(H1Error::TimedOut) => Err(SendError::TimedOut),
                Err(e) => Err(SendError::Failed(e.to_string())),
            },
            // Boxed for the same reason as `open`: HTTP/1 is the common case.
            Conn::H2(sender) => {
                match Box::pin(tokio::time::timeout_at(deadline, self.send_h2(sender, head, body))).await {
                    Ok(sent) => sent,
                    Err(_) => Err(SendError::TimedOut),
                }
            }
        }
    }

    async fn send_h2(
        &self,
        mut sender: http2::SendRequest<UpBody>,
        head: &RequestHead,
        body: UpBody,
    ) -> Result<http::Response<UpstreamBody>, SendError> {
        // HTTP/2 wants the absolute form; the head is copied, as h2 is the rarer path.
        let mut uri = http::Uri::builder().scheme("http").authority(self.authority.clone());
        if let Some(pq) = head.uri.path_and_query() {
            uri = uri.path_and_query(pq.clone());
        }
        let mut req = http::Request::new(body);
        *req.method_mut() = head.method.clone();
        *req.uri_mut() = uri.build().map_err(|e| SendError::Failed(e.to_string()))?;
        *req.headers_mut() = head.full_headers();
        match sender.try_send_request(req).await {
            Ok(resp) => Ok(resp.map(UpstreamBody::H2)),
            Err(mut e) => {
                let request = e.take_message();
                let error = e.into_error();
                match request {
                    Some(request) => {
                        Err(SendError::Unsent { body: request.into_body(), detail: error.to_string() })
                    }
                    None if client_body_failed(&error) => Err(SendError::ClientBody(error.to_string())),
                    None => Err(SendError::Failed(error.to_string())),
                }
            }
        }
    }
}

/// hyper nests the client's own body error (a hyper error from reading the client, or our size
/// limit) under the upstream connection's error: either means the client side failed.
fn client_body_failed(error: &hyper::Error) -> bool {
    use std::error::Error as _;
    let mut source = error.source();
    while let Some(s) = source {
        if s.is::<crate::proxy::body::BodyTooLarge>() || s.is::<hyper::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}
