//! What can go wrong on the peer plane, with the peer named in every message.

use std::net::SocketAddr;
use std::time::Duration;

use quinn::ConnectionError;
use thiserror::Error;

use super::frame::FrameError;
use super::tls::TlsError;

#[derive(Debug, Error)]
pub enum PeerError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("invalid peer plane option {what}: {why}")]
    InvalidOption { what: &'static str, why: String },
    #[error("binding the peer endpoint on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot dial peer {peer} at {addr}: {source}")]
    Dial { peer: String, addr: SocketAddr, source: quinn::ConnectError },
    /// The TLS handshake failed: wrong CA, wrong node id, wrong ALPN, or the peer refused our
    /// certificate. Retrying the same peer will not help until someone fixes certificates.
    #[error("handshake with peer {peer} at {addr} failed: {source}")]
    Handshake { peer: String, addr: SocketAddr, source: ConnectionError },
    #[error("connection to peer {peer} at {addr} lost: {source}")]
    ConnectionLost { peer: String, addr: SocketAddr, source: ConnectionError },
    #[error("call to peer {peer} at {addr} failed: {source}")]
    Frame { peer: String, addr: SocketAddr, source: FrameError },
    #[error("peer {peer} at {addr} finished the stream without replying")]
    NoReply { peer: String, addr: SocketAddr },
    #[error("call to peer {peer} at {addr} timed out after {after:?}")]
    Timeout { peer: String, addr: SocketAddr, after: Duration },
    /// Not dialled: the last dial of this address failed `ago` (it is retried shortly after).
    #[error("peer {peer} at {addr} not dialled: the last dial failed {ago:?} ago")]
    RecentlyUnreachable { peer: String, addr: SocketAddr, ago: Duration },
}

impl PeerError {
    /// Sort a connection-level failure: a close carrying a TLS alert (QUIC crypto error codes
    /// 0x100..=0x1ff) is a handshake failure even when it arrives after the client thought the
    /// handshake done, as happens when the server refuses the client's certificate.
    pub(crate) fn connection(peer: &str, addr: SocketAddr, source: ConnectionError) -> PeerError {
        let peer = peer.to_string();
        if is_tls_failure(&source) {
            PeerError::Handshake { peer, addr, source }
        } else {
            PeerError::ConnectionLost { peer, addr, source }
        }
    }

    pub(crate) fn frame(peer: &str, addr: SocketAddr, source: FrameError) -> PeerError {
        match source {
            FrameError::ConnectionLost(e) => PeerError::connection(peer, addr, e),
            source => PeerError::Frame { peer: peer.to_string(), addr, source },
        }
    }

    /// True for a failed TLS handshake (certificate, node id or ALPN refused by either side).
    pub fn is_handshake(&self) -> bool {
        matches!(self, PeerError::Handshake { .. })
    }
}

fn is_tls_failure(e: &ConnectionError) -> bool {
    let code = match e {
        ConnectionError::TransportError(t) => u64::from(t.code),
        ConnectionError::ConnectionClosed(c) => u64::from(c.error_code),
        _ => return false,
    };
    (0x100..=0x1ff).contains(&code)
}
