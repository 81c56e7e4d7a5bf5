//! The crate's error type. Only starting can fail: once running, gossip degrades (peers look
//! dead, malformed values are skipped) rather than erroring.

use std::net::SocketAddr;

use crate::keys::SchemaError;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// A configuration value is unusable; `field` names it as in [`crate::GossipConfig`].
    #[error("gossip config: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    /// Our own initial facts break the key schema; peers would drop them, so refuse to start.
    #[error("gossip facts: {0}")]
    InvalidFacts(#[from] SchemaError),
    #[error("cannot bind gossip UDP socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: BoxError,
    },
    #[error("cannot start chitchat: {0}")]
    Start(#[source] BoxError),
}
