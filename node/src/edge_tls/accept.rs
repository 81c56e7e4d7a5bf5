//! The TLS handshake of one HTTPS connection, bounded in time, counted, and classified when it
//! fails.
//!
//! The ClientHello is read before rustls' server handshake starts, for two refusals rustls
//! would word differently: a client offering only old protocol versions gets `protocol_version`
//! (see `hello`), and one whose SNI no certificate covers gets `unrecognized_name` (RFC 6066 §3;
//! rustls would answer `access_denied`). The same bytes then go to rustls' `Acceptor`, and the
//! rest — version and cipher choice, ALPN, the certificate from the SNI resolver — is rustls'
//! normal server handshake.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::server::{Accepted, Acceptor};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::StartHandshake;

use super::hello::{self, Inspect};
use super::stats::FailureReason;
use super::store::Lookup;
use super::EdgeTls;
use crate::server::Handshake;

/// A fatal `unrecognized_name` alert as a plaintext record; before the ServerHello, alerts are
/// not encrypted, in TLS 1.2 and 1.3 alike.
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112];

/// Plugs the HTTPS handshake into `server::serve_with`.
#[derive(Clone)]
pub struct TlsHandshake(pub Arc<EdgeTls>);

impl Handshake for TlsHandshake {
    type Io = TlsStream<TcpStream>;

    fn handshake(&self, tcp: TcpStream, peer: SocketAddr) -> impl Future<Output = Option<Self::Io>> + Send {
        self.0.accept(tcp, peer)
    }
}

/// A handshake that did not complete.
struct Refusal {
    reason: FailureReason,
    /// The SNI a refused client asked for (only when refused for it).
    sni: Option<String>,
    error: Detail,
    /// Already counted and logged (before an alert was sent).
    reported: bool,
}

enum Detail {
    None,
    Io(io::Error),
    Tls(rustls::Error),
}

impl Detail {
    fn as_display(&self) -> Option<&dyn std::fmt::Display> {
        match self {
            Detail::None => None,
            Detail::Io(e) => Some(e),
            Detail::Tls(e) => Some(e),
        }
    }
}

impl Refusal {
    fn because(reason: FailureReason) -> Refusal {
        Refusal { reason, sni: None, error: Detail::None, reported: false }
    }

    fn io(e: io::Error) -> Refusal {
        Refusal { reason: classify(&e), sni: None, error: Detail::Io(e), reported: false }
    }

    fn tls(e: rustls::Error) -> Refusal {
        Refusal { reason: classify_tls(&e), sni: None, error: Detail::Tls(e), reported: false }
    }
}

impl EdgeTls {
    /// Run the handshake of an accepted connection; `None` when it failed (counted, and logged
    /// at debug level only: a scanner must not be able to flood the log).
    pub async fn accept(&self, tcp: TcpStream, peer: SocketAddr) -> Option<TlsStream<TcpStream>> {
        let outcome = match tokio::time::timeout(self.handshake_timeout, self.handshake(tcp, peer)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Refusal::because(FailureReason::Timeout)),
        };
        match outcome {
            Ok(stream) => {
                let (_, conn) = stream.get_ref();
                self.stats.count_handshake(conn.protocol_version(), conn.alpn_protocol());
                Some(stream)
            }
            Err(refusal) => {
                if !refusal.reported {
                    self.report(&refusal, peer);
                }
                None
            }
        }
    }

    /// Count and log a refusal.
    fn report(&self, refusal: &Refusal, peer: SocketAddr) {
        self.stats.count_failure(refusal.reason);
        tracing::debug!(
            %peer,
            reason = refusal.reason.as_str(),
            sni = refusal.sni.as_deref(),
            error = refusal.error.as_display().map(tracing::field::display),
            "TLS handshake failed"
        );
    }

    /// Count and log a refusal before its alert goes out: a client that reads the alert and
    /// then looks at the metrics finds it counted.
    fn reported(&self, mut refusal: Refusal, peer: SocketAddr) -> Refusal {
        self.report(&refusal, peer);
        refusal.reported = true;
        refusal
    }

    async fn handshake(&self, mut tcp: TcpStream, peer: SocketAddr) -> Result<TlsStream<TcpStream>, Refusal> {
        let mut buf = Vec::with_capacity(2048);
        // The whole ClientHello, as far as `hello` can tell; what it cannot read, rustls judges.
        let offer = loop {
            match hello::inspect(&buf) {
                Inspect::Incomplete if buf.len() < hello::MAX_HELLO => read_more(&mut tcp, &mut buf).await?,
                Inspect::Offers(offer) => break Some(offer),
                Inspect::Incomplete | Inspect::Unparsed => break None,
            }
        };
        if let Some(offer) = offer.filter(|o| !o.acceptable(self.min_tls)) {
            let refusal = self.reported(Refusal::because(FailureReason::ProtocolVersion), peer);
            // Best effort, like every alert here: the client may be gone already.
            let _ = tcp.write_all(&offer.protocol_version_alert()).await;
            let _ = tcp.shutdown().await;
            return Err(refusal);
        }

        let accepted = accept_hello(&mut tcp, buf).await?;
        let start = StartHandshake::from_parts(accepted, tcp);
        let miss = {
            let hello = start.client_hello();
            let sni = hello.server_name();
            match self.certs().lookup(sni) {
                Lookup::Found(_) => None,
                Lookup::NoSni => Some((FailureReason::NoCertificate, None)),
                Lookup::Unrecognized => Some((FailureReason::UnrecognizedName, sni.map(str::to_owned))),
            }
        };
        if let Some((reason, sni)) = miss {
            let refusal = self.reported(Refusal { reason, sni, error: Detail::None, reported: false }, peer);
            let mut io = start.io;
            let _ = io.write_all(&UNRECOGNIZED_NAME_ALERT).await;
            let _ = io.shutdown().await;
            return Err(refusal);
        }
        // The resolver in the configuration looks the name up again, in whatever store is
        // current by then (a reload in between changes nothing for a name both stores serve).
        start.into_stream(self.config.clone()).await.map_err(Refusal::io)
    }
}

/// Give rustls the bytes read so far, and more from the socket until it has the ClientHello.
async fn accept_hello(tcp: &mut TcpStream, mut buf: Vec<u8>) -> Result<Accepted, Refusal> {
    let mut acceptor = Acceptor::default();
    let mut fed = 0;
    loop {
        if fed == buf.len() {
            buf.clear();
            fed = 0;
            read_more(tcp, &mut buf).await?;
        }
        let n = acceptor.read_tls(&mut &buf[fed..]).map_err(Refusal::io)?;
        if n == 0 {
            return Err(Refusal::io(io::Error::new(io::ErrorKind::InvalidData, "ClientHello not accepted")));
        }
        fed += n;
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok(accepted),
            Ok(None) => {}
            Err((error, mut alert)) => {
                let mut out = Vec::new();
                if alert.write_all(&mut out).is_ok() {
                    let _ = tcp.write_all(&out).await;
                }
                return Err(Refusal::tls(error));
            }
        }
    }
}

/// Append what the socket has to `buf`; the client closing counts as a refusal.
async fn read_more(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Refusal> {
    buf.reserve(2048);
    match tcp.read_buf(buf).await {
        Ok(0) => Err(Refusal::because(FailureReason::Closed)),
        Ok(_) => Ok(()),
        Err(e) => Err(Refusal::io(e)),
    }
}

/// Why a handshake failed, from an error tokio-rustls returned: rustls' error inside an
/// `io::Error` for protocol failures, a plain `io::Error` for the socket's own.
pub fn classify(e: &io::Error) -> FailureReason {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => classify_tls(tls),
        None => match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => FailureReason::Closed,
            io::ErrorKind::TimedOut => FailureReason::Timeout,
            _ => FailureReason::Other,
        },
    }
}

/// Why rustls refused a handshake.
pub fn classify_tls(e: &rustls::Error) -> FailureReason {
    use rustls::{Error, PeerIncompatible};
    match e {
        Error::PeerIncompatible(
            PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::SupportedVersionsExtensionRequired,
        ) => FailureReason::ProtocolVersion,
        Error::NoApplicationProtocol => FailureReason::NoApplicationProtocol,
        Error::InvalidMessage(_)
        | Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. } => FailureReason::BadMessage,
        Error::AlertReceived(_) => FailureReason::ClientAlert,
        _ => FailureReason::Other,
    }
}
