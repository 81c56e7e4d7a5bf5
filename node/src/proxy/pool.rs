//! Upstream connections: a keep-alive pool per endpoint.
//!
//! HTTP/1 connections are checked out one request at a time and come back once hyper reports the
//! previous exchange finished; HTTP/2 (h2c) endpoints share one multiplexed connection. Connecting
//! is a separate step from sending so that a failure to connect is known to have sent nothing:
//! such a request may be retried whatever its method or body.

use std::sync::Mutex;
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
        while let Some((sender, since)) = idle.pop() {
            if sender.is_ready() && now.duration_since(since) < IDLE_TIMEOUT {
                return Some(sender);
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

    /// Send one request on `conn`. An HTTP/1 connection goes back to the pool once the exchange
    /// is over (hyper says so by becoming ready again).
    pub async fn send(
        self: &std::sync::Arc<Self>,
        conn: Conn,
        req: http::Request<UpBody>,
    ) -> Result<http::Response<Incoming>, SendError> {
        match conn {
            Conn::H1(mut sender) => {
                let result = sender.try_send_request(req).await;
                if result.is_ok() {
                    let pool = self.clone();
                    tokio::spawn(async move {
                        if sender.ready().await.is_ok() {
                            pool.put_idle(sender);
                        }
                    });
                }
                result.map_err(|mut e| SendError { unsent: e.take_message(), error: e.into_error() })
            }
            Conn::H2(mut sender) => sender
                .try_send_request(req)
                .await
                .map_err(|mut e| SendError { unsent: e.take_message(), error: e.into_error() }),
        }
    }
}
