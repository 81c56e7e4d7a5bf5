//! Upstream connections: a keep-alive pool per endpoint.
//!
//! HTTP/1 connections are checked out one request at a time and come back when the response body
//! has been read to its end (no task per request to watch for that); HTTP/2 (h2c) endpoints share one multiplexed connection. Connecting
//! is a separate step from sending so that a failure to connect is known to have sent nothing:
//! such a request may be retried whatever its method or body.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::Authority;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::core::table::UpstreamProtocol;
use crate::proxy::body::UpBody;

/// Longest a pooled HTTP/1 connection may sit idle; upstreams commonly close at 60 s or more.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);
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
    idle: Mutex<Vec<(http1::SendRequest<UpBody>, Instant)>>,
    shared_h2: Mutex<Option<http2::SendRequest<UpBody>>>,
}

/// A connection ready to carry one request.
pub enum Conn {
    H1(http1::SendRequest<UpBody>),
    H2(http2::SendRequest<UpBody>),
}

/// A send that failed; `unsent` carries the request back when it never left this process.
pub struct SendError {
    pub error: hyper::Error,
    pub unsent: Option<http::Request<UpBody>>,
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
    pub async fn checkout(&self, connect_timeout: Duration) -> Result<Conn, ConnectError> {
        match self.protocol {
            UpstreamProtocol::Http1 => {
                if let Some(sender) = self.take_idle() {
                    return Ok(Conn::H1(sender));
                }
                let io = self.connect(connect_timeout).await?;
                let (sender, conn) = http1::Builder::new()
                    .handshake(io)
                    .await
                    .map_err(|e| ConnectError::Handshake(self.authority.clone(), e))?;
                tokio::spawn(async move {
                    // The connection ends when the upstream closes it or the pool drops it.
                    let _ = conn.await;
                });
                Ok(Conn::H1(sender))
            }
            UpstreamProtocol::H2c => {
                if let Some(sender) = self.shared_h2.lock().ok().and_then(|g| g.clone()) {
                    if !sender.is_closed() {
                        return Ok(Conn::H2(sender));
                    }
                }
                let io = self.connect(connect_timeout).await?;
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .handshake(io)
                    .await
                    .map_err(|e| ConnectError::Handshake(self.authority.clone(), e))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                if let Ok(mut slot) = self.shared_h2.lock() {
                    *slot = Some(sender.clone());
                }
                Ok(Conn::H2(sender))
            }
        }
    }

    fn take_idle(&self) -> Option<http1::SendRequest<UpBody>> {
        let mut idle = self.idle.lock().ok()?;
        let now = Instant::now();
        // Newest first: the most recently used connection is the warmest. A connection whose last
        // exchange hyper has not wound up yet stays for a later checkout; dead or stale ones go.
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let (sender, since) = &idle[i];
            if sender.is_closed() || now.duration_since(*since) >= IDLE_TIMEOUT {
                idle.swap_remove(i);
            } else if sender.is_ready() {
                return Some(idle.swap_remove(i).0);
            }
        }
        None
    }

    fn put_idle(&self, sender: http1::SendRequest<UpBody>) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push((sender, Instant::now()));
            }
        }
    }

    async fn connect(&self, timeout: Duration) -> Result<TokioIo<TcpStream>, ConnectError> {
        let addr = self.authority.as_str();
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout(self.authority.clone()))?
            .map_err(|e| ConnectError::Io(self.authority.clone(), e))?;
        let _ = stream.set_nodelay(true);
        Ok(TokioIo::new(stream))
    }

    /// Send one request on `conn`. For HTTP/1 the connection comes back as a [`Lease`] that
    /// returns it to the pool once the response body has been read to its end.
    pub async fn send(
        self: &Arc<Self>,
        conn: Conn,
        req: http::Request<UpBody>,
    ) -> Result<(http::Response<Incoming>, Option<Lease>), SendError> {
        match conn {
            Conn::H1(mut sender) => match sender.try_send_request(req).await {
                Ok(resp) => {
                    let done = http_body::Body::is_end_stream(resp.body());
                    Ok((resp, Some(Lease { pool: self.clone(), sender: Some(sender), done })))
                }
                Err(mut e) => Err(SendError { unsent: e.take_message(), error: e.into_error() }),
            },
            Conn::H2(mut sender) => match sender.try_send_request(req).await {
                Ok(resp) => Ok((resp, None)),
                Err(mut e) => Err(SendError { unsent: e.take_message(), error: e.into_error() }),
            },
        }
    }
}

/// An HTTP/1 connection lent to one exchange. It goes back to the pool only if the exchange ended
/// cleanly (the response body was read to its end); otherwise dropping it closes the connection.
pub struct Lease {
    pool: Arc<ConnPool>,
    sender: Option<http1::SendRequest<UpBody>>,
    done: bool,
}

impl Lease {
    /// The response body has been read to its end.
    pub fn finish(&mut self) {
        self.done = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            if self.done && !sender.is_closed() {
                self.pool.put_idle(sender);
            }
        }
    }
}
