//! The accept loop shared by the data plane (plain and TLS) and the admin listener.
//!
//! `serve` owns a listener until `shutdown` resolves, then stops accepting and gives in-flight
//! connections up to `drain` to finish (HTTP/1 connections close after their current response,
//! HTTP/2 ones get a GOAWAY). `serve_with` is the same loop with a `Handshake` step between
//! accepting a connection and serving HTTP on it: none for plain listeners, TLS for `--https`.
//! `serve_data` is the data plane's plain listener: Meridian's own HTTP/1.1 server, with hyper
//! for h2c.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::proxy::body::ClientBody;
use crate::proxy::h1_server;

#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Time a client gets to send a complete request head.
    pub header_read_timeout: Duration,
    /// Largest request head accepted; larger ones get 431.
    pub max_header_bytes: usize,
    /// Accept HTTP/2 beside HTTP/1.1: with prior knowledge (h2c) on a plain listener, after
    /// ALPN `h2` (or with prior knowledge) on a TLS one.
    pub allow_h2: bool,
}

/// What turns an accepted TCP connection into the byte stream HTTP is served on. It runs in the
/// connection's own task, so a slow handshake never holds up the accept loop, and it is bounded
/// and accounted for by the implementation; `None` drops the connection.
pub trait Handshake: Clone + Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    fn handshake(&self, tcp: TcpStream, peer: SocketAddr) -> impl Future<Output = Option<Self::Io>> + Send;
}

/// Plain HTTP: the TCP stream as it is.
#[derive(Debug, Clone, Copy)]
pub struct PlainTcp;

impl Handshake for PlainTcp {
    type Io = TcpStream;

    fn handshake(&self, tcp: TcpStream, _peer: SocketAddr) -> impl Future<Output = Option<TcpStream>> + Send {
        std::future::ready(Some(tcp))
    }
}

/// Serve plain HTTP on `listener`.
pub async fn serve<H, Fut, B>(
    listener: TcpListener,
    limits: ConnLimits,
    handler: H,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    plane: &'static str,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_with(listener, PlainTcp, limits, handler, shutdown, drain, plane).await
}

/// Serve HTTP on `listener` after `handshake` on each connection. The header read timeout
/// starts once the handshake is done.
pub async fn serve_with<S, H, Fut, B>(
    listener: TcpListener,
    handshake: S,
    limits: ConnLimits,
    handler: H,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    plane: &'static str,
) where
    S: Handshake,
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(1024);
    let builder = if limits.allow_h2 { builder } else { builder.http1_only() };
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    while let Some((stream, peer)) = accept(&listener, shutdown.as_mut(), plane).await {
        let handler = handler.clone();
        let svc = service_fn(move |req| {
            let fut = handler(req, peer);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let builder = builder.clone();
        // Taken before the handshake: a drain waits for connections still shaking hands too,
        // and those are shut down gracefully as soon as they are served.
        let watcher = graceful.watcher();
        let header_timeout = limits.header_read_timeout;
        let handshake = handshake.clone();
        tokio::spawn(async move {
            let Some(stream) = handshake.handshake(stream, peer).await else { return };
            let io = TokioIo::new(PrefaceDeadline::new(stream, header_timeout));
            let conn = builder.serve_connection(io, svc).into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(plane, %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(plane, "stopped accepting; draining connections");
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(plane, drain_ms = drain.as_millis() as u64, "drain timed out; closing the rest");
    }
}

/// Serve the data plane's plain HTTP on `listener`: HTTP/1.1 with Meridian's own server
/// ([`h1_server`]), and h2c (prior knowledge) with hyper's HTTP/2 server when `limits.allow_h2`.
/// Shutdown and drain behave as in [`serve`].
pub async fn serve_data<S: h1_server::Service>(
    listener: TcpListener,
    limits: ConnLimits,
    svc: S,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    plane: &'static str,
) {
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(1024);
    let h1_limits = h1_server::Limits {
        header_read_timeout: limits.header_read_timeout,
        max_header_bytes: limits.max_header_bytes,
        allow_h2: limits.allow_h2,
    };
    // HTTP/1 connections watch `stop`, and the drain waits until all of them have dropped their
    // receiver; HTTP/2 ones are watched by hyper's graceful shutdown.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    while let Some((stream, peer)) = accept(&listener, shutdown.as_mut(), plane).await {
        let svc = svc.clone();
        let stop = stop_rx.clone();
        let watcher = graceful.watcher();
        let h2 = h2.clone();
        tokio::spawn(async move {
            let conn = std::sync::Arc::new(h1_server::Conn::new(stream));
            let h1_server::Ended::Http2(conn) = h1_server::serve(conn, peer, &svc, h1_limits, stop).await
            else {
                return;
            };
            let Some((stream, preface)) = conn.into_parts() else { return };
            let io = TokioIo::new(PrefaceDeadline::replaying(preface, stream));
            let svc = service_fn(move |req: Request<Incoming>| {
                let fut = h1_server::Service::call(&svc, req.map(|inner| ClientBody::Http { inner }), peer);
                async move {
                    // hyper writes the header map only: the upstream's fields go into it.
                    let mut resp = fut.await;
                    crate::proxy::fields::into_header_map(&mut resp);
                    Ok::<_, Infallible>(resp)
                }
            });
            if let Err(e) = watcher.watch(h2.serve_connection(io, svc)).await {
                tracing::debug!(plane, %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    tracing::info!(plane, "stopped accepting; draining connections");
    let drained = async {
        tokio::join!(graceful.shutdown(), stop_tx.closed());
    };
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::warn!(plane, drain_ms = drain.as_millis() as u64, "drain timed out; closing the rest");
    }
}

/// The next connection (with `TCP_NODELAY` set), or `None` once `shutdown` resolves.
async fn accept(
    listener: &TcpListener,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    plane: &'static str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, peer));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(plane, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = &mut shutdown => return None,
        }
    }
}

/// The HTTP/2 client preface; until a client's bytes stop matching it, hyper has not picked a
/// protocol and its own header timeout has not started.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pin_project_lite::pin_project! {
    /// The start of a connection handed to hyper. Closes a connection whose client has not said
    /// enough to pick a protocol in time (nothing at all, or a stalled prefix of the HTTP/2
    /// preface), and disarms after that, so it costs one branch per read for the rest of the
    /// connection. Or, for a connection whose protocol was already picked from its first bytes,
    /// gives those bytes back first.
    pub struct PrefaceDeadline<T> {
        #[pin]
        io: T,
        seen: usize,
        deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
        replay: bytes::Bytes,
    }
}

impl<T> PrefaceDeadline<T> {
    pub fn new(io: T, timeout: Duration) -> PrefaceDeadline<T> {
        PrefaceDeadline {
            io,
            seen: 0,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            replay: bytes::Bytes::new(),
        }
    }

    /// No deadline; `read` (already taken off `io`) is read again first.
    pub fn replaying(read: bytes::Bytes, io: T) -> PrefaceDeadline<T> {
        PrefaceDeadline { io, seen: 0, deadline: None, replay: read }
    }
}

impl<T: tokio::io::AsyncRead> tokio::io::AsyncRead for PrefaceDeadline<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = self.project();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let Some(deadline) = this.deadline.as_mut() else {
            return this.io.poll_read(cx, buf);
        };
        let before = buf.filled().len();
        match this.io.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                let at = (*this.seen).min(H2_PREFACE.len());
                let n = fresh.len().min(H2_PREFACE.len() - at);
                *this.seen += fresh.len();
                if fresh.is_empty() || fresh[..n] != H2_PREFACE[at..at + n] || *this.seen >= H2_PREFACE.len()
                {
                    *this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "client sent no request head within the header read timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<T: tokio::io::AsyncWrite> tokio::io::AsyncWrite for PrefaceDeadline<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}
