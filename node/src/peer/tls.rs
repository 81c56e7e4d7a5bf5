//! Mutual TLS for the peer plane: this node's certificate, the cluster CA, and the rule that the
//! peer at the other end must be the node we meant to call.
//!
//! Owns turning a TLS directory (`ca.pem`, `ID.pem`, `ID.key`, as written by `meridian certs`)
//! into rustls/quinn configurations. Both directions require a certificate chained to the cluster
//! CA; a client additionally checks that the server's certificate names exactly the node id it
//! expected (from gossip), since any node of the cluster holds a CA-signed certificate. Only TLS
//! 1.3 (QUIC requires it) with the ring provider.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, VerifierBuilderError, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use thiserror::Error;

use crate::certs::{self, node_id_of_cert, CA_CERT_FILE};

/// ALPN protocol of the peer plane; a peer speaking anything else is refused in the handshake.
pub const ALPN: &[u8] = b"meridian/1";

/// The name a client puts in SNI. Identity is checked against the expected node id instead (see
/// `ExpectedNode`), so this only has to be a valid DNS name.
pub(crate) const SERVER_NAME: &str = "meridian-peer";

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("reading {what}: {source}")]
    Read { what: String, source: std::io::Error },
    #[error("{what}: not valid PEM: {source}")]
    Pem { what: String, source: rustls::pki_types::pem::Error },
    #[error("{what}: no certificate found (expected a PEM \"CERTIFICATE\" block)")]
    NoCertificate { what: String },
    #[error("{what}: no private key found (expected a PEM private key block)")]
    NoKey { what: String },
    #[error("{what}: not a usable CA certificate: {source}")]
    BadCa { what: String, source: rustls::Error },
    #[error("{what}: certificate carries no meridian node id (a {} SAN)", certs::node_id_uri("ID"))]
    NoNodeId { what: String },
    #[error("{what} is the certificate of node {found:?}, not of this node {expected:?}")]
    WrongNode { what: String, expected: String, found: String },
    #[error("{what} is not signed by the cluster CA in {ca}: {source}")]
    NotFromCa { what: String, ca: String, source: rustls::Error },
    #[error(transparent)]
    InvalidId(#[from] certs::CertError),
    #[error("building the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("building the client certificate verifier: {0}")]
    Verifier(#[from] VerifierBuilderError),
    #[error("building the QUIC TLS configuration: {0}")]
    Quic(#[from] NoInitialCipherSuite),
}

/// A PEM input and how to name it in errors (a file path, usually).
pub struct PemSource<'a> {
    pub what: String,
    pub pem: &'a [u8],
}

/// This node's peer-plane TLS material, ready to build QUIC configurations. Cheap to clone.
#[derive(Clone)]
pub struct PeerTls {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    server: Arc<QuicServerConfig>,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("PeerTls").field("id", &self.inner.id).finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Load `ca.pem`, `ID.pem` and `ID.key` from a TLS directory (`--tls-dir`).
    pub fn load(dir: &Path, id: &str) -> Result<PeerTls, TlsError> {
        certs::validate_node_id(id)?;
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read { what: path.display().to_string(), source })
        };
        let (ca_path, cert_path, key_path) =
            (dir.join(CA_CERT_FILE), certs::cert_path(dir, id), certs::key_path(dir, id));
        let (ca, cert, key) = (read(&ca_path)?, read(&cert_path)?, read(&key_path)?);
        PeerTls::from_pem(
            id,
            PemSource { what: ca_path.display().to_string(), pem: &ca },
            PemSource { what: cert_path.display().to_string(), pem: &cert },
            PemSource { what: key_path.display().to_string(), pem: &key },
        )
    }

    /// Build from PEM: `ca` may hold several CA certificates (all are trusted), `cert` is this
    /// node's certificate (optionally followed by intermediates), `key` its private key.
    pub fn from_pem(
        id: &str,
        ca: PemSource<'_>,
        cert: PemSource<'_>,
        key: PemSource<'_>,
    ) -> Result<PeerTls, TlsError> {
        certs::validate_node_id(id)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let mut roots = RootCertStore::empty();
        for der in certificates(&ca)? {
            roots.add(der).map_err(|source| TlsError::BadCa { what: ca.what.clone(), source })?;
        }
        let roots = Arc::new(roots);

        let chain = certificates(&cert)?;
        let key_der = match PrivateKeyDer::from_pem_slice(key.pem) {
            Ok(k) => k,
            Err(rustls::pki_types::pem::Error::NoItemsFound) => {
                return Err(TlsError::NoKey { what: key.what })
            }
            Err(source) => return Err(TlsError::Pem { what: key.what, source }),
        };

        // Misconfiguration shows up here, at startup, rather than as refused handshakes later.
        let leaf = &chain[0];
        match node_id_of_cert(leaf) {
            None => return Err(TlsError::NoNodeId { what: cert.what }),
            Some(found) if found != id => {
                return Err(TlsError::WrongNode { what: cert.what, expected: id.to_string(), found })
            }
            Some(_) => {}
        }
        let parsed = ParsedCertificate::try_from(leaf).map_err(|source| TlsError::NotFromCa {
            what: cert.what.clone(),
            ca: ca.what.clone(),
            source,
        })?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            &chain[1..],
            UnixTime::now(),
            provider.signature_verification_algorithms.all,
        )
        .map_err(|source| TlsError::NotFromCa {
            what: cert.what.clone(),
            ca: ca.what.clone(),
            source,
        })?;

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key_der.clone_key())?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        let server = Arc::new(QuicServerConfig::try_from(server)?);

        Ok(PeerTls {
            inner: Arc::new(Inner { id: id.to_string(), provider, roots, chain, key: key_der, server }),
        })
    }

    /// This node's id, as its certificate names it.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub(crate) fn quic_server_config(&self) -> Arc<QuicServerConfig> {
        self.inner.server.clone()
    }

    /// A client configuration that accepts only a server whose certificate names `expect_id`.
    /// Built per connection; connections are cached, so this is rare.
    pub(crate) fn quic_client_config(&self, expect_id: &str) -> Result<QuicClientConfig, TlsError> {
        let inner = &self.inner;
        let verifier = ExpectedNode {
            expect_id: expect_id.to_string(),
            roots: inner.roots.clone(),
            algorithms: inner.provider.signature_verification_algorithms,
        };
        let mut client = rustls::ClientConfig::builder_with_provider(inner.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(inner.chain.clone(), inner.key.clone_key())?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        Ok(QuicClientConfig::try_from(client)?)
    }
}

/// The node id in the certificate the peer of `conn` presented: who is calling (server side) or
/// who answered (client side). `None` if the peer presented no certificate naming a node.
pub fn peer_id_of(conn: &quinn::Connection) -> Option<String> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    node_id_of_cert(chain.first()?)
}

fn certificates(src: &PemSource<'_>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(src.pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what: src.what.clone(), source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { what: src.what.clone() });
    }
    Ok(chain)
}

/// Server certificate check of a client: the chain must lead to the cluster CA (as webpki checks
/// any server), and instead of a DNS name the certificate must name the node we meant to call.
#[derive(Debug)]
struct ExpectedNode {
    expect_id: String,
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ExpectedNode {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        match node_id_of_cert(end_entity) {
            Some(found) if found == self.expect_id => Ok(ServerCertVerified::assertion()),
            found => Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                UnexpectedNode { expected: self.expect_id.clone(), found },
            ))))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Why a CA-signed server certificate was still refused. rustls prints this through `Debug`, so
/// `Debug` is the readable sentence.
struct UnexpectedNode {
    expected: String,
    found: Option<String>,
}

impl fmt::Display for UnexpectedNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.found {
            Some(found) => {
                write!(f, "peer certificate is for node {found:?}, expected node {:?}", self.expected)
            }
            None => write!(f, "peer certificate names no node, expected node {:?}", self.expected),
        }
    }
}

impl fmt::Debug for UnexpectedNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for UnexpectedNode {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{issue, TestDir};

    #[test]
    fn loads_what_meridian_certs_writes() {
        let dir = TestDir::new("tls-load");
        issue(&dir.0, &["n1".to_string()]).unwrap();
        let tls = PeerTls::load(&dir.0, "n1").unwrap();
        assert_eq!(tls.id(), "n1");
        tls.quic_client_config("n2").unwrap();
    }

    #[test]
    fn missing_garbage_and_mismatched_files_are_clear_errors() {
        let dir = TestDir::new("tls-bad");
        issue(&dir.0, &["n1".to_string(), "n2".to_string()]).unwrap();

        let err = PeerTls::load(&dir.0, "n3").unwrap_err().to_string();
        assert!(err.contains("n3.pem") && err.contains("No such file"), "{err}");

        std::fs::copy(certs::cert_path(&dir.0, "n2"), certs::cert_path(&dir.0, "n3")).unwrap();
        std::fs::copy(certs::key_path(&dir.0, "n2"), certs::key_path(&dir.0, "n3")).unwrap();
        let err = PeerTls::load(&dir.0, "n3").unwrap_err().to_string();
        assert!(err.contains("of node \"n2\", not of this node \"n3\""), "{err}");

        std::fs::write(certs::cert_path(&dir.0, "n3"), "not a certificate").unwrap();
        let err = PeerTls::load(&dir.0, "n3").unwrap_err().to_string();
        assert!(err.contains("n3.pem: no certificate found"), "{err}");

        std::fs::write(certs::key_path(&dir.0, "n1"), "-----BEGIN PRIVATE KEY-----\n!!!\n").unwrap();
        let err = PeerTls::load(&dir.0, "n1").unwrap_err().to_string();
        assert!(err.contains("n1.key"), "{err}");

        std::fs::write(dir.0.join(CA_CERT_FILE), "").unwrap();
        let err = PeerTls::load(&dir.0, "n2").unwrap_err().to_string();
        assert!(err.contains("ca.pem: no certificate found"), "{err}");
    }

    #[test]
    fn a_certificate_from_another_ca_does_not_load() {
        let (a, b) = (TestDir::new("tls-ca-a"), TestDir::new("tls-ca-b"));
        issue(&a.0, &["n1".to_string()]).unwrap();
        issue(&b.0, &["n1".to_string()]).unwrap();
        std::fs::copy(b.0.join(CA_CERT_FILE), a.0.join(CA_CERT_FILE)).unwrap();
        let err = PeerTls::load(&a.0, "n1").unwrap_err().to_string();
        assert!(err.contains("not signed by the cluster CA"), "{err}");
    }
}
