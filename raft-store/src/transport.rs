//! The seam between Raft and the wire: a node implements [`RaftTransport`] over its peer plane
//! (QUIC); tests and the simulator use [`crate::MemTransport`].
//!
//! A transport moves opaque request bytes to a peer's [`crate::RaftStore::handle_rpc`] and
//! brings back the reply bytes. It knows nothing of Raft; framing and encoding are `rpc.rs`'s.

use std::future::Future;
use std::pin::Pin;

use crate::error::TransportError;
use crate::node::MeridianNode;

/// A boxed future, so the transport can be used as `dyn RaftTransport`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Delivers one Raft request to a peer and returns its reply.
pub trait RaftTransport: Send + Sync + 'static {
    /// Sends `request` to `target` and resolves to the bytes `target`'s `handle_rpc` answered.
    /// The caller bounds the wait; implementations need not time out themselves.
    fn call(&self, target: &MeridianNode, request: Vec<u8>)
        -> BoxFuture<'_, Result<Vec<u8>, TransportError>>;
}
