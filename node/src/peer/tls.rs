//! Mutual TLS for the peer plane: this node's certificate, the CAs it trusts, and the rule that the
//! peer at the other end must be the node we meant to call.
//!
//! Owns turning a TLS directory (`ca.pem`, `ID.pem`, `ID.key`, as written by `meridian certs`)
//! into rustls/quinn configurations, after checking the set completely: the certificate names this
//! node, the key is that certificate's key, and it chains to a CA of the bundle. `ca.pem` is a
//! trust bundle: every CA certificate in it is trusted, for callers and for servers alike, which
//! is what lets a cluster move from one CA to another without a restart (see `reload.rs`, which
//! owns when material is loaded again). A client additionally checks that the server's
//! certificate names exactly the node id it expected (`verify.rs`). Only TLS 1.3 (QUIC requires
//! it) with the ring provider.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ParsedCertificate, VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};
use thiserror::Error;

use super::verify::ExpectedNode;
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
    #[error("{what}: certificate {index} of {count} is not a CA certificate ({why})")]
    NotACa { what: String, index: usize, count: usize, why: String },
    #[error("{what}: not a usable private key: {source}")]
    BadKey { what: String, source: rustls::Error },
    #[error("{key} does not hold the private key of the certificate in {cert}")]
    KeyMismatch { key: String, cert: String },
    #[error("{what}: certificate carries no meridian node id (a {} SAN)", certs::node_id_uri("ID"))]
    NoNodeId { what: String },
    #[error("{what} is the certificate of node {found:?}, not of this node {expected:?}")]
    WrongNode { what: String, expected: String, found: String },
    #[error("{what} is not signed by a CA of the trust bundle {ca}: {source}")]
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

/// What an operator wants to know of loaded material: for the reload log line and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSummary {
    /// Serial number of this node's certificate, hex.
    pub serial: String,
    /// When this node's certificate expires, in seconds since the Unix epoch.
    pub not_after: i64,
    /// CA certificates in the trust bundle.
    pub trusted_cas: usize,
}

/// This node's peer-plane TLS material, checked and ready to build QUIC configurations. Cheap to
/// clone; immutable: a reload builds a new one and the peer plane swaps it in whole.
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
    /// The server side's check of callers, kept to re-check established connections when the
    /// trust bundle changes.
    client_verifier: Arc<dyn ClientCertVerifier>,
    summary: TlsSummary,
    /// SHA-256 over the bundle, the chain and the key: tells a real change from a touched file.
    digest: [u8; 32],
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("PeerTls")
            .field("id", &self.inner.id)
            .field("summary", &self.inner.summary)
            .finish_non_exhaustive()
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

        let bundle = certificates(&ca)?;
        let mut roots = RootCertStore::empty();
        for (i, der) in bundle.iter().enumerate() {
            // A node certificate pasted into the bundle would otherwise become a trust anchor.
            check_is_ca(der).map_err(|why| TlsError::NotACa {
                what: ca.what.clone(),
                index: i + 1,
                count: bundle.len(),
                why,
            })?;
            roots.add(der.clone()).map_err(|source| TlsError::BadCa { what: ca.what.clone(), source })?;
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

        // Misconfiguration shows up here, at startup or at a reload, rather than as refused
        // handshakes later.
        let leaf = &chain[0];
        match node_id_of_cert(leaf) {
            None => return Err(TlsError::NoNodeId { what: cert.what }),
            Some(found) if found != id => {
                return Err(TlsError::WrongNode { what: cert.what, expected: id.to_string(), found })
            }
            Some(_) => {}
        }
        let not_from_ca =
            |source| TlsError::NotFromCa { what: cert.what.clone(), ca: ca.what.clone(), source };
        let parsed = ParsedCertificate::try_from(leaf).map_err(not_from_ca)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            &chain[1..],
            UnixTime::now(),
            provider.signature_verification_algorithms.all,
        )
        .map_err(not_from_ca)?;
        match CertifiedKey::from_der(chain.clone(), key_der.clone_key(), &provider) {
            Ok(_) => {}
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                return Err(TlsError::KeyMismatch { key: key.what, cert: cert.what })
            }
            Err(source) => return Err(TlsError::BadKey { what: key.what, source }),
        }
        let summary = summarize(leaf, bundle.len()).ok_or(TlsError::NoNodeId { what: cert.what })?;

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(client_verifier.clone())
            .with_single_cert(chain.clone(), key_der.clone_key())?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        let server = Arc::new(QuicServerConfig::try_from(server)?);
        let digest = digest_of(&bundle, &chain, &key_der);

        Ok(PeerTls {
            inner: Arc::new(Inner {
                id: id.to_string(),
                provider,
                roots,
                chain,
                key: key_der,
                server,
                client_verifier,
                summary,
                digest,
            }),
        })
    }

    /// This node's id, as its certificate names it.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Serial and expiry of this node's certificate, and the size of the trust bundle.
    pub fn summary(&self) -> &TlsSummary {
        &self.inner.summary
    }

    /// Whether `other` holds exactly the same bundle, certificate and key.
    pub fn same_material(&self, other: &PeerTls) -> bool {
        self.inner.digest == other.inner.digest
    }

    pub(crate) fn quic_server_config(&self) -> Arc<QuicServerConfig> {
        self.inner.server.clone()
    }

    /// Would a caller presenting `chain` be accepted now? Used to re-check connections that were
    /// accepted under an earlier trust bundle.
    pub(crate) fn check_caller(&self, chain: &[CertificateDer<'static>]) -> Result<(), rustls::Error> {
        let (leaf, intermediates) = chain.split_first().ok_or(rustls::Error::NoCertificatesPresented)?;
        self.inner.client_verifier.verify_client_cert(leaf, intermediates, UnixTime::now()).map(|_| ())
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

/// The certificate chain the peer of `conn` presented, leaf first.
pub(crate) fn peer_chain(conn: &quinn::Connection) -> Option<Vec<CertificateDer<'static>>> {
    let identity = conn.peer_identity()?;
    identity.downcast::<Vec<CertificateDer<'static>>>().ok().map(|chain| *chain)
}

/// The node id in the certificate the peer of `conn` presented: who is calling (server side) or
/// who answered (client side). `None` if the peer presented no certificate naming a node.
pub fn peer_id_of(conn: &quinn::Connection) -> Option<String> {
    node_id_of_cert(peer_chain(conn)?.first()?)
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

fn check_is_ca(der: &[u8]) -> Result<(), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("does not parse: {e}"))?;
    if cert.is_ca() {
        Ok(())
    } else {
        let subject = cert.subject().to_string();
        Err(format!("{subject} has no CA basic constraint; is a node certificate in the bundle?"))
    }
}

fn summarize(leaf: &[u8], trusted_cas: usize) -> Option<TlsSummary> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let serial = cert.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
    Some(TlsSummary { serial, not_after: cert.validity().not_after.timestamp(), trusted_cas })
}

fn digest_of(
    bundle: &[CertificateDer<'_>],
    chain: &[CertificateDer<'_>],
    key: &PrivateKeyDer<'_>,
) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut feed = |bytes: &[u8]| {
        // Lengths first, so no two different sets can feed the same bytes.
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    };
    for der in bundle {
        feed(der);
    }
    feed(b"--chain--");
    for der in chain {
        feed(der);
    }
    feed(key.secret_der());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

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
        assert!(err.contains("is not signed by a CA of the trust bundle"), "{err}");
    }

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    fn from(id: &str, ca: &[u8], cert: &[u8], key: &[u8]) -> Result<PeerTls, TlsError> {
        let src = |what: &str, pem| PemSource { what: what.to_string(), pem };
        PeerTls::from_pem(id, src("ca.pem", ca), src("n1.pem", cert), src("n1.key", key))
    }

    #[test]
    fn every_ca_of_the_bundle_is_trusted() {
        let (a, b) = (TestDir::new("tls-bundle-a"), TestDir::new("tls-bundle-b"));
        issue(&a.0, &["n1".to_string()]).unwrap();
        issue(&b.0, &["n1".to_string()]).unwrap();
        let bundle = [read(&a.0.join(CA_CERT_FILE)), read(&b.0.join(CA_CERT_FILE))].concat();
        for dir in [&a, &b] {
            let (cert, key) = (read(&certs::cert_path(&dir.0, "n1")), read(&certs::key_path(&dir.0, "n1")));
            let tls = from("n1", &bundle, &cert, &key).unwrap();
            assert_eq!(tls.summary().trusted_cas, 2);
            assert!(tls.summary().not_after > 0);
            assert!(!tls.summary().serial.is_empty());
            // Callers from either CA pass the server side's check.
            let chain: Vec<CertificateDer<'static>> =
                certificates(&PemSource { what: String::new(), pem: &cert }).unwrap();
            tls.check_caller(&chain).unwrap();
        }
        let a_only = PeerTls::load(&a.0, "n1").unwrap();
        assert_eq!(a_only.summary().trusted_cas, 1);
        let b_cert = read(&certs::cert_path(&b.0, "n1"));
        let chain = certificates(&PemSource { what: String::new(), pem: &b_cert }).unwrap();
        let err = a_only.check_caller(&chain).unwrap_err();
        assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
        assert!(a_only.check_caller(&[]).is_err());
    }

    #[test]
    fn a_node_certificate_in_the_bundle_and_a_foreign_key_are_refused() {
        let dir = TestDir::new("tls-bundle-leaf");
        issue(&dir.0, &["n1".to_string(), "n2".to_string()]).unwrap();
        let (ca, cert, key) = (
            read(&dir.0.join(CA_CERT_FILE)),
            read(&certs::cert_path(&dir.0, "n1")),
            read(&certs::key_path(&dir.0, "n1")),
        );
        let with_leaf = [ca.clone(), cert.clone()].concat();
        let err = from("n1", &with_leaf, &cert, &key).unwrap_err().to_string();
        assert!(err.contains("ca.pem: certificate 2 of 2 is not a CA certificate"), "{err}");

        let other_key = read(&certs::key_path(&dir.0, "n2"));
        let err = from("n1", &ca, &cert, &other_key).unwrap_err().to_string();
        assert_eq!(err, "n1.key does not hold the private key of the certificate in n1.pem");
        // Half a file: the PEM block is cut.
        let err = from("n1", &ca, &cert[..cert.len() / 2], &key).unwrap_err().to_string();
        assert!(err.starts_with("n1.pem"), "{err}");
        let err = from("n1", &ca[..ca.len() / 2], &cert, &key).unwrap_err().to_string();
        assert!(err.starts_with("ca.pem"), "{err}");
    }

    #[test]
    fn the_digest_tells_a_change_from_the_same_files() {
        let dir = TestDir::new("tls-digest");
        issue(&dir.0, &["n1".to_string()]).unwrap();
        let (one, two) = (PeerTls::load(&dir.0, "n1").unwrap(), PeerTls::load(&dir.0, "n1").unwrap());
        assert!(one.same_material(&two));
        std::fs::remove_file(certs::cert_path(&dir.0, "n1")).unwrap();
        std::fs::remove_file(certs::key_path(&dir.0, "n1")).unwrap();
        issue(&dir.0, &["n1".to_string()]).unwrap();
        let three = PeerTls::load(&dir.0, "n1").unwrap();
        assert!(!one.same_material(&three));
        assert_ne!(one.summary().serial, three.summary().serial);
    }
}
