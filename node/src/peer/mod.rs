//! The peer plane: node-to-node RPC over QUIC with mutual TLS against the cluster's CA bundle.
//!
//! Owns the peer endpoint (`--peer`), its TLS identities, the connection to each peer and the
//! framing of messages on streams. It carries Raft RPCs, writes forwarded to the leader and
//! forwarded requests, but knows nothing of what they mean: callers pick an RPC [`kind`] and bring
//! their own payloads. Who lives at which address comes from gossip; this module only refuses a
//! peer whose certificate does not name the node the caller expected.
//!
//! - [`tls`]: certificates and the rustls/quinn configurations built from them; `verify`: the
//!   client's check that the server is the node it meant to call.
//! - [`reload`]: watching the TLS files and swapping in changed material without a restart.
//! - [`frame`]: length-prefixed frames and bincode messages on a stream.
//! - [`endpoint`]: `PeerPlane`: bind, dial, the connection cache, unary calls.
//! - `serve`: the accept loop and [`PeerCall`].
//! - [`stats`]: counters for `/metrics`.

pub mod endpoint;
pub mod error;
pub mod frame;
pub mod reload;
mod serve;
pub mod stats;
pub mod tls;
mod verify;

#[cfg(test)]
mod reload_tests;
#[cfg(test)]
mod tests;

pub use endpoint::{PeerOptions, PeerPlane};
pub use error::PeerError;
pub use reload::{CredentialWatch, TlsFiles};
pub use serve::PeerCall;
pub use stats::PeerStats;
pub use tls::{peer_id_of, PeerTls, PemSource, TlsSummary};

/// RPC kinds: the first byte of a request frame.
pub mod kind {
    /// A Raft RPC (append entries, vote, snapshot).
    pub const RAFT: u8 = 1;
    /// A routing-table or lease write forwarded to the Raft leader.
    pub const LEADER_WRITE: u8 = 2;
    /// A client request forwarded to a peer in another region.
    pub const FORWARD: u8 = 3;
    /// A node's demand report for global rate limits, sent to the Raft leader once per round.
    pub const QUOTA_REPORT: u8 = 4;
}
