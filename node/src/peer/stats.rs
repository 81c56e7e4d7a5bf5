//! Peer-plane counters, rendered as Prometheus text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one `PeerPlane`. Relaxed atomics: they are read only for metrics.
#[derive(Debug, Default)]
pub struct PeerStats {
    /// Connections this node dialled that completed their handshake.
    pub connections_opened: AtomicU64,
    /// Connections other nodes dialled that completed their handshake.
    pub connections_accepted: AtomicU64,
    /// Our dials whose handshake failed (the peer or we refused a certificate, or no answer).
    pub handshakes_failed_outbound: AtomicU64,
    /// Incoming connections whose handshake failed (foreign CA, no client certificate, ...).
    pub handshakes_failed_inbound: AtomicU64,
    /// Frames refused for being over the size limit, truncated, or malformed.
    pub frames_rejected: AtomicU64,
    /// Incoming connections closed because a reloaded trust bundle no longer accepts the
    /// caller's certificate.
    pub connections_revoked: AtomicU64,
}

impl PeerStats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP meridian_peer_connections_total Peer connections established, by who dialled.\n\
             # TYPE meridian_peer_connections_total counter\n\
             meridian_peer_connections_total{{direction=\"outbound\"}} {}\n\
             meridian_peer_connections_total{{direction=\"inbound\"}} {}",
            get(&self.connections_opened),
            get(&self.connections_accepted),
        );
        let _ = writeln!(
            out,
            "# HELP meridian_peer_handshake_failures_total Peer TLS/QUIC handshakes that failed, by who dialled.\n\
             # TYPE meridian_peer_handshake_failures_total counter\n\
             meridian_peer_handshake_failures_total{{direction=\"outbound\"}} {}\n\
             meridian_peer_handshake_failures_total{{direction=\"inbound\"}} {}",
            get(&self.handshakes_failed_outbound),
            get(&self.handshakes_failed_inbound),
        );
        let _ = writeln!(
            out,
            "# HELP meridian_peer_frames_rejected_total Peer frames refused as oversized, truncated or malformed.\n\
             # TYPE meridian_peer_frames_rejected_total counter\n\
             meridian_peer_frames_rejected_total {}",
            get(&self.frames_rejected),
        );
        let _ = writeln!(
            out,
            "# HELP meridian_peer_connections_revoked_total Incoming peer connections closed because a reloaded trust bundle no longer accepts the caller's certificate.\n\
             # TYPE meridian_peer_connections_revoked_total counter\n\
             meridian_peer_connections_revoked_total {}",
            get(&self.connections_revoked),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter() {
        let stats = PeerStats::default();
        PeerStats::bump(&stats.handshakes_failed_inbound);
        PeerStats::bump(&stats.frames_rejected);
        PeerStats::bump(&stats.frames_rejected);
        let mut out = String::new();
        stats.render(&mut out);
        assert!(out.contains("meridian_peer_connections_total{direction=\"outbound\"} 0\n"), "{out}");
        assert!(out.contains("meridian_peer_handshake_failures_total{direction=\"inbound\"} 1\n"), "{out}");
        assert!(out.contains("meridian_peer_frames_rejected_total 2\n"), "{out}");
        assert!(out.contains("meridian_peer_connections_revoked_total 0\n"), "{out}");
        assert_eq!(out.matches("# TYPE").count(), 4);
    }
}
