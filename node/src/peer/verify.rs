//! The client's check of the server it dialled: a certificate chained to a trusted CA that names
//! exactly the node we meant to call.
//!
//! Owns `ExpectedNode`, the rustls server-certificate verifier of the peer plane. Which CAs are
//! trusted is decided by whoever builds it (`tls.rs`, from the current trust bundle); this module
//! only applies them. Every CA-signed certificate of the cluster would pass a plain webpki check,
//! so the node id SAN is what tells one node from another.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use crate::certs::node_id_of_cert;

/// Server certificate check of a client: the chain must lead to a trusted CA (as webpki checks
/// any server), and instead of a DNS name the certificate must name the node we meant to call.
#[derive(Debug)]
pub(super) struct ExpectedNode {
    pub(super) expect_id: String,
    pub(super) roots: Arc<RootCertStore>,
    pub(super) algorithms: WebPkiSupportedAlgorithms,
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
