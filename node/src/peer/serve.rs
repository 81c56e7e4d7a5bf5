//! Serving the peer plane: accept connections, read each stream's request, hand it to a handler.
//!
//! Owns the accept loop and `PeerCall`, what a handler receives. rustls has already verified the
//! caller's certificate chain against the trust bundle before a connection gets here; this module
//! reads the caller's node id from it, and checks the chain again whenever the TLS material is
//! replaced: a caller the new bundle does not trust loses its connection. What a call means is
//! the handler's business, not ours.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use quinn::{Connection, Incoming, RecvStream, SendStream, VarInt};
use tokio::sync::watch;

use super::endpoint::PeerPlane;
use super::frame::{self, code, FrameError};
use super::stats::PeerStats;
use super::tls::{peer_chain, peer_id_of};

/// Close code for a connection whose certificate names no node (cannot happen with certificates
/// from `meridian certs`, but the CA might have signed something else).
const NO_NODE_ID: VarInt = VarInt::from_u32(0x10);
/// Close code for a connection whose caller's certificate a reloaded trust bundle no longer
/// accepts (its CA was dropped, or the certificate expired).
const NO_LONGER_TRUSTED: VarInt = VarInt::from_u32(0x11);
const SHUTTING_DOWN: VarInt = VarInt::from_u32(0);

/// One incoming RPC: who called, what kind, the request payload, and the way to answer.
///
/// Dropping it without [`reply`](PeerCall::reply) or [`into_streams`](PeerCall::into_streams)
/// resets the stream with [`code::NO_REPLY`], so the caller gets an error at once instead of
/// waiting for its timeout.
pub struct PeerCall {
    /// The caller's node id, from its verified certificate (never from the request itself).
    pub from: String,
    /// RPC kind, the first byte of the request frame (see `peer::kind`).
    pub kind: u8,
    pub payload: Vec<u8>,
    /// Largest frame this node reads; what a streaming handler should pass to `read_frame`.
    pub max_frame: usize,
    send: Option<SendStream>,
    recv: Option<RecvStream>,
}

impl PeerCall {
    /// Answer a unary call with one frame, and end the stream.
    pub async fn reply(mut self, payload: &[u8]) -> Result<(), FrameError> {
        let Some(mut send) = self.send.take() else {
            return Err(FrameError::Stream("reply already sent".into()));
        };
        frame::write_frame(&mut send, payload).await?;
        // Only errors if the stream is already closed, in which case nothing is left to do.
        let _ = send.finish();
        Ok(())
    }

    /// The raw streams, for an RPC that streams more frames after the request.
    pub fn into_streams(mut self) -> Option<(SendStream, RecvStream)> {
        Some((self.send.take()?, self.recv.take()?))
    }
}

impl Drop for PeerCall {
    fn drop(&mut self) {
        if let Some(send) = self.send.as_mut() {
            let _ = send.reset(code::NO_REPLY);
        }
    }
}

type Handler = dyn Fn(PeerCall) -> BoxFuture<'static, ()> + Send + Sync;

impl PeerPlane {
    /// Serve incoming calls until `shutdown` resolves: each request goes to `handler`, on its own
    /// task. On shutdown new connections are refused and accepted ones are closed.
    pub async fn serve<H>(&self, handler: H, shutdown: impl Future<Output = ()>)
    where
        H: Fn(PeerCall) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    {
        let handler: Arc<Handler> = Arc::new(handler);
        let (stop, stopped) = watch::channel(false);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                incoming = self.inner.endpoint.accept() => match incoming {
                    Some(incoming) => {
                        let task = serve_connection(self.clone(), incoming, handler.clone(), stopped.clone());
                        tokio::spawn(task);
                    }
                    // The endpoint was closed.
                    None => break,
                },
            }
        }
        self.stop_accepting();
        let _ = stop.send(true);
    }
}

async fn serve_connection(
    plane: PeerPlane,
    incoming: Incoming,
    handler: Arc<Handler>,
    mut stopped: watch::Receiver<bool>,
) {
    let stats = &plane.inner.stats;
    let remote = incoming.remote_address();
    // Before the handshake: material replaced while it runs (under the old trust) is checked too.
    let mut generation = plane.inner.generation.subscribe();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            PeerStats::bump(&stats.handshakes_failed_inbound);
            tracing::warn!(%remote, error = %e, "peer handshake failed");
            return;
        }
    };
    let Some(from) = peer_id_of(&conn) else {
        PeerStats::bump(&stats.handshakes_failed_inbound);
        tracing::warn!(%remote, "peer certificate names no node; closing");
        conn.close(NO_NODE_ID, b"certificate names no node");
        return;
    };
    PeerStats::bump(&stats.connections_accepted);
    tracing::debug!(%remote, peer = %from, "peer connected");
    loop {
        tokio::select! {
            Ok(()) = generation.changed() => {
                // Calls still running on it are cut too: their caller presented a certificate
                // this node no longer accepts. A peer that renewed its pair dials anew with it;
                // the connection it retired at its own reload only carries calls begun before.
                let chain = peer_chain(&conn).unwrap_or_default();
                if let Err(e) = plane.tls().check_caller(&chain) {
                    PeerStats::bump(&stats.connections_revoked);
                    tracing::warn!(%remote, peer = %from, error = %e,
                        "closing a peer connection: the reloaded trust bundle no longer accepts its certificate");
                    conn.close(NO_LONGER_TRUSTED, b"certificate no longer trusted");
                    return;
                }
            }
            streams = conn.accept_bi() => match streams {
                Ok((send, recv)) => {
                    tokio::spawn(serve_stream(plane.clone(), from.clone(), send, recv, handler.clone()));
                }
                Err(e) => {
                    tracing::debug!(%remote, peer = %from, error = %e, "peer connection ended");
                    return;
                }
            },
            _ = stopped.wait_for(|stop| *stop) => {
                close(&conn);
                return;
            }
        }
    }
}

fn close(conn: &Connection) {
    conn.close(SHUTTING_DOWN, b"node shutting down");
}

async fn serve_stream(
    plane: PeerPlane,
    from: String,
    mut send: SendStream,
    mut recv: RecvStream,
    handler: Arc<Handler>,
) {
    let max_frame = plane.inner.options.max_frame;
    let request =
        frame::read_frame(&mut recv, max_frame).await.and_then(|f| f.map(frame::split_request).transpose());
    match request {
        Ok(Some((kind, payload))) => {
            handler(PeerCall { from, kind, payload, max_frame, send: Some(send), recv: Some(recv) }).await;
        }
        // Opened and finished without a request: nothing to answer.
        Ok(None) => {}
        Err(e) => {
            if let Some(code) = e.reset_code() {
                PeerStats::bump(&plane.inner.stats.frames_rejected);
                tracing::warn!(peer = %from, error = %e, "refused a peer frame");
                let _ = send.reset(code);
                let _ = recv.stop(code);
            }
        }
    }
}
