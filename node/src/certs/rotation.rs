//! Renewal and CA rollover: the `meridian certs` steps that replace credentials nodes already use.
//!
//! Owns what each step writes and what it refuses. Nodes pick the files up without a restart
//! (`peer::reload`); the order of the steps is what keeps every pair of nodes able to talk:
//!
//! 1. `--new-ca`: a new CA; `ca.pem` becomes the bundle new + old. Given to every node, each
//!    trusts certificates from both.
//! 2. `--renew --nodes ...`: new pairs from the new CA. Accepted everywhere, since every node
//!    trusts the new CA since step 1.
//! 3. `--drop-old-ca`: `ca.pem` with the new CA only, refused while a node pair in the directory
//!    is still from the old one.
//!
//! Every file a node reads is replaced in one rename, never rewritten in place, and no key is
//! overwritten unless the step is about replacing it; the replaced CA key is archived first.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::KeyPair;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::RootCertStore;
use time::OffsetDateTime;

use super::{
    cert_path, cert_pem, key_path, load_ca, new_ca, node_id_of_cert, node_params, pair_state, read_text,
    replace_file, validate_node_list, write_new, CertError, LoadedCa, PairState, CA_CERT_FILE, CA_KEY_FILE,
    OLD_CA_DIR,
};

/// Re-issue the certificate and key of each of `nodes` from the issuing CA of `dir`, replacing
/// their pairs. Every node must have a pair already (a typo should not mint a new identity), and
/// nothing is written unless every one of them can be renewed.
pub fn renew(dir: &Path, nodes: &[String]) -> Result<(), CertError> {
    validate_node_list(nodes)?;
    let ca = require_ca(dir)?;
    for id in nodes {
        let cert = cert_path(dir, id);
        match pair_state(&cert, &key_path(dir, id))? {
            PairState::Present => {}
            PairState::Absent => return Err(CertError::NothingToRenew { id: id.clone(), cert }),
        }
    }
    let now = OffsetDateTime::now_utc();
    let mut pairs = Vec::with_capacity(nodes.len());
    for id in nodes {
        let key = KeyPair::generate()?;
        let cert = node_params(id, now)?.signed_by(&key, &ca.issuer)?;
        pairs.push((id, key.serialize_pem(), cert.pem()));
    }
    for (id, key, cert) in pairs {
        // Back to back: a node polling its files sees the pair change together (and a load that
        // caught the key without its certificate is refused and retried, never used).
        replace_file(&key_path(dir, id), key.as_bytes(), true)?;
        replace_file(&cert_path(dir, id), cert.as_bytes(), false)?;
    }
    Ok(())
}

/// What [`start_rollover`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollover {
    /// The replaced CA, kept: `old-ca/ca-SERIAL.pem` and `.key`.
    pub archived_cert: PathBuf,
    pub archived_key: PathBuf,
}

/// Step 1 of a CA rollover: archive the CA of `dir` under `old-ca/`, create a new CA (its key is
/// `ca.key` from now on) and write `ca.pem` as the bundle new + old.
pub fn start_rollover(dir: &Path) -> Result<Rollover, CertError> {
    let ca = require_ca(dir)?;
    let (ca_cert, ca_key) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    if ca.bundle.len() > 1 {
        return Err(CertError::RolloverInProgress { path: ca_cert, count: ca.bundle.len() });
    }
    let archive = dir.join(OLD_CA_DIR);
    fs::create_dir_all(&archive).map_err(|source| CertError::CreateDir { path: archive.clone(), source })?;
    let serial = short_serial(&ca.issuing);
    let (archived_cert, archived_key) =
        (archive.join(format!("ca-{serial}.pem")), archive.join(format!("ca-{serial}.key")));
    // Never over an earlier archive: `write_new` refuses an existing file.
    write_new(&archived_key, read_text(&ca_key)?.as_bytes(), true)?;
    write_new(&archived_cert, cert_pem(&ca.issuing).as_bytes(), false)?;

    let (_, key, cert) = new_ca(OffsetDateTime::now_utc())?;
    // The key first: a run cut short between the two leaves a ca.key that matches no CA of
    // ca.pem (which the next run reports), never a bundle whose new CA has lost its key.
    replace_file(&ca_key, key.serialize_pem().as_bytes(), true)?;
    let bundle = format!("{}{}", cert.pem(), cert_pem(&ca.issuing));
    replace_file(&ca_cert, bundle.as_bytes(), false)?;
    Ok(Rollover { archived_cert, archived_key })
}

/// Step 3 of a CA rollover: write `ca.pem` with the issuing CA only. Refused while a node
/// certificate in `dir` does not chain to the issuing CA: that node would lose the cluster.
/// Returns how many CAs were dropped.
pub fn finish_rollover(dir: &Path) -> Result<usize, CertError> {
    let ca = require_ca(dir)?;
    let ca_cert = dir.join(CA_CERT_FILE);
    if ca.bundle.len() == 1 {
        return Err(CertError::NoOldCa { path: ca_cert });
    }
    let mut stale = Vec::new();
    let mut why = String::new();
    for (id, der) in node_certificates(dir) {
        if let Err(e) = chains_to(&der, &ca.issuing) {
            if why.is_empty() {
                why = format!("{id}: {e}");
            }
            stale.push(id);
        }
    }
    if !stale.is_empty() {
        return Err(CertError::StillFromOldCa { nodes: stale, dir: dir.to_path_buf(), why });
    }
    replace_file(&ca_cert, cert_pem(&ca.issuing).as_bytes(), false)?;
    Ok(ca.bundle.len() - 1)
}

pub(super) fn require_ca(dir: &Path) -> Result<LoadedCa, CertError> {
    let (cert, key) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    match pair_state(&cert, &key)? {
        PairState::Present => load_ca(&cert, &key),
        PairState::Absent => Err(CertError::NoCa { dir: dir.to_path_buf() }),
    }
}

/// The node certificates in `dir`, by node id, in id order: files `ID.pem` whose first
/// certificate names node `ID`. Anything else there is none of our business.
pub(super) fn node_certificates(dir: &Path) -> Vec<(String, CertificateDer<'static>)> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<(String, CertificateDer<'static>)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let id = name.strip_suffix(".pem")?.to_string();
            let bytes = fs::read(entry.path()).ok()?;
            let der = CertificateDer::pem_slice_iter(&bytes).next()?.ok()?;
            (node_id_of_cert(&der).as_deref() == Some(id.as_str())).then_some((id, der))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Does `cert` chain to `ca` now (signature, validity, usage)?
pub(super) fn chains_to(
    cert: &CertificateDer<'_>,
    ca: &CertificateDer<'static>,
) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let parsed = rustls::server::ParsedCertificate::try_from(cert)?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        &[],
        UnixTime::now(),
        provider.signature_verification_algorithms.all,
    )
}

/// The first 8 bytes of a certificate's serial, in hex: enough to tell CAs apart in file names.
fn short_serial(der: &[u8]) -> String {
    let serial =
        x509_parser::parse_x509_certificate(der).map(|(_, c)| c.raw_serial().to_vec()).unwrap_or_default();
    serial.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

pub(super) fn subject(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der).map(|(_, c)| c.subject().to_string()).unwrap_or_default()
}

/// `subject (serial 0123.., until YYYY-MM-DD)`.
pub(super) fn describe(der: &[u8]) -> String {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return "unparseable certificate".into();
    };
    let until = OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
        .map_or_else(|_| "?".to_string(), |t| t.date().to_string());
    format!("{:?} (serial {}.., until {until})", cert.subject().to_string(), short_serial(der))
}

#[cfg(test)]
mod tests;
