//! The accept loop shared by the data plane and the admin listener.
//!
//! `serve` owns a listener until `shutdown` resolves, then stops accepting and gives in-flight
//! connections up to `drain` to finish (HTTP/1 connections close after their current response,
//! HTTP/2 ones get a GOAWAY).

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
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Time a client gets to send a complete request head.
    pub header_read_timeout: Duration,
    /// Largest request head accepted; larger ones get 431.
    pub max_header_bytes: usize,
    /// Accept HTTP/2 with prior knowledge (h2c) beside HTTP/1.1.
    pub allow_h2c: bool,
}

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
    let builder = if limits.allow_h2c { builder } else { builder.http1_only() };
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(plane, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let svc = service_fn(move |req| {
            let fut = handler(req, peer);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let header_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            // hyper's own header timeout starts once it has chosen a protocol; a client that
            // connects and says nothing must not hold a connection forever either.
            if tokio::time::timeout(header_timeout, stream.readable()).await.is_err() {
                tracing::debug!(plane, %peer, "client sent nothing within the header timeout");
                return;
            }
            let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
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
