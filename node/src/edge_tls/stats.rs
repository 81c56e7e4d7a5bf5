//! Counters of the HTTPS listener, rendered as Prometheus text at the admin `/metrics`.
//!
//! Fixed label sets, so every counter is a plain atomic: a handshake costs one increment.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rustls::ProtocolVersion;

use super::store::CertStore;

/// Why a handshake did not complete; the `reason` label of the failure counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The client offered only protocol versions older than the minimum (TLS 1.0/1.1, or 1.2
    /// with `--https-min-tls 1.3`).
    ProtocolVersion,
    /// The client's SNI names no certificate, and there is no `default` pair.
    UnrecognizedName,
    /// The client sent no SNI, and there is no `default` pair.
    NoCertificate,
    /// The client offered ALPN protocols, none of them `h2` or `http/1.1`.
    NoApplicationProtocol,
    /// Not TLS, or malformed TLS (plain HTTP sent to the HTTPS port ends here).
    BadMessage,
    /// The client aborted with an alert, typically because it does not trust our certificate.
    ClientAlert,
    /// The handshake did not finish within the header read timeout.
    Timeout,
    /// The client closed or reset the connection mid-handshake.
    Closed,
    Other,
}

impl FailureReason {
    pub const ALL: [FailureReason; 9] = [
        FailureReason::ProtocolVersion,
        FailureReason::UnrecognizedName,
        FailureReason::NoCertificate,
        FailureReason::NoApplicationProtocol,
        FailureReason::BadMessage,
        FailureReason::ClientAlert,
        FailureReason::Timeout,
        FailureReason::Closed,
        FailureReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::ProtocolVersion => "protocol_version",
            FailureReason::UnrecognizedName => "unrecognized_name",
            FailureReason::NoCertificate => "no_certificate",
            FailureReason::NoApplicationProtocol => "no_application_protocol",
            FailureReason::BadMessage => "bad_message",
            FailureReason::ClientAlert => "client_alert",
            FailureReason::Timeout => "timeout",
            FailureReason::Closed => "closed",
            FailureReason::Other => "other",
        }
    }
}

const VERSIONS: [&str; 2] = ["1.2", "1.3"];
const ALPNS: [&str; 3] = ["h2", "http/1.1", "none"];

#[derive(Debug, Default)]
pub struct TlsStats {
    /// By [version][alpn], indexed as `VERSIONS` and `ALPNS`.
    handshakes: [[AtomicU64; 3]; 2],
    failures: [AtomicU64; FailureReason::ALL.len()],
    reloads_ok: AtomicU64,
    reloads_error: AtomicU64,
    /// The directory changed and its current content could not be loaded: the node serves
    /// older certificates than the directory holds.
    reload_failing: AtomicBool,
}

impl TlsStats {
    pub fn count_handshake(&self, version: Option<ProtocolVersion>, alpn: Option<&[u8]>) {
        let v = usize::from(version == Some(ProtocolVersion::TLSv1_3));
        let a = match alpn {
            Some(b"h2") => 0,
            Some(b"http/1.1") => 1,
            _ => 2,
        };
        self.handshakes[v][a].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_failure(&self, reason: FailureReason) {
        if let Some(i) = FailureReason::ALL.iter().position(|r| *r == reason) {
            self.failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn reload_ok(&self) {
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        self.reload_failing.store(false, Ordering::Relaxed);
    }

    pub fn reload_failed(&self, count: bool) {
        if count {
            self.reloads_error.fetch_add(1, Ordering::Relaxed);
        }
        self.reload_failing.store(true, Ordering::Relaxed);
    }

    /// Directory back to what is served (say, a bad file was removed again).
    pub fn reload_recovered(&self) {
        self.reload_failing.store(false, Ordering::Relaxed);
    }

    pub fn failures(&self, reason: FailureReason) -> u64 {
        FailureReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.failures[i].load(Ordering::Relaxed))
    }

    pub fn reloads(&self) -> (u64, u64) {
        (self.reloads_ok.load(Ordering::Relaxed), self.reloads_error.load(Ordering::Relaxed))
    }

    pub fn render(&self, certs: &CertStore, out: &mut String) {
        out.push_str(
            "# HELP meridian_tls_handshakes_total Completed TLS handshakes on the HTTPS listener.\n\
             # TYPE meridian_tls_handshakes_total counter\n",
        );
        for (v, row) in self.handshakes.iter().enumerate() {
            for (a, c) in row.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "meridian_tls_handshakes_total{{version=\"{}\",alpn=\"{}\"}} {}",
                    VERSIONS[v],
                    ALPNS[a],
                    c.load(Ordering::Relaxed)
                );
            }
        }
        out.push_str(
            "# HELP meridian_tls_handshake_failures_total TLS handshakes refused or abandoned, by reason.\n\
             # TYPE meridian_tls_handshake_failures_total counter\n",
        );
        for (reason, c) in FailureReason::ALL.iter().zip(&self.failures) {
            let _ = writeln!(
                out,
                "meridian_tls_handshake_failures_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                c.load(Ordering::Relaxed)
            );
        }
        let (ok, error) = self.reloads();
        let _ = writeln!(
            out,
            "# HELP meridian_tls_reloads_total Reloads of the HTTPS certificate directory.\n\
             # TYPE meridian_tls_reloads_total counter\n\
             meridian_tls_reloads_total{{result=\"ok\"}} {ok}\n\
             meridian_tls_reloads_total{{result=\"error\"}} {error}"
        );
        let _ = writeln!(
            out,
            "# HELP meridian_tls_reload_failing 1 while the certificate directory holds changes that could not be loaded.\n\
             # TYPE meridian_tls_reload_failing gauge\n\
             meridian_tls_reload_failing {}",
            u8::from(self.reload_failing.load(Ordering::Relaxed))
        );
        let _ = writeln!(
            out,
            "# HELP meridian_tls_certificates Certificate pairs being served.\n\
             # TYPE meridian_tls_certificates gauge\n\
             meridian_tls_certificates {}",
            certs.pairs().len()
        );
        out.push_str(
            "# HELP meridian_tls_certificate_not_after_seconds Expiry of each served leaf certificate (Unix time).\n\
             # TYPE meridian_tls_certificate_not_after_seconds gauge\n",
        );
        for pair in certs.pairs() {
            let _ = writeln!(
                out,
                "meridian_tls_certificate_not_after_seconds{{name=\"{}\"}} {}",
                crate::metrics::esc(&pair.name),
                pair.not_after
            );
        }
    }
}
