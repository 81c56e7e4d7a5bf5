//! Cluster certificates: `meridian certs`, and reading a node id back out of a certificate.
//!
//! Owns the layout of a TLS directory (`ca.pem`, `ca.key`, then `ID.pem` and `ID.key` per node,
//! and `old-ca/` for CAs retired by a rollover) and the way a node id is written into a
//! certificate: a URI SAN `urn:meridian:node:ID` is the authoritative one; a DNS SAN `ID` is added
//! when the id happens to be a valid DNS name, for the benefit of people inspecting certificates
//! with ordinary tools. `ca.pem` is a trust bundle: during a CA rollover it holds the new CA and
//! the old one; `ca.key` is the key of the CA that issues (the one of the bundle it matches).
//! Renewal and rollover are in [`rotation`]. Building TLS configurations from these files is
//! `peer::tls`'s job, not this module's.

mod command;
pub mod rotation;

pub use command::{run, CertsAction, CertsArgs};

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use thiserror::Error;
use time::{Duration, OffsetDateTime};

/// The cluster CA certificate, shared by every node.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The cluster CA private key: needed only to issue node certificates, never by a running node.
pub const CA_KEY_FILE: &str = "ca.key";
/// Where a CA rollover keeps the CA it replaced (`ca-SERIAL.pem` and `ca-SERIAL.key`). A
/// directory, so that no node id can name a file that collides with it.
pub const OLD_CA_DIR: &str = "old-ca";

const NODE_ID_URI_PREFIX: &str = "urn:meridian:node:";
const MAX_NODE_ID_LEN: usize = 64;
const CA_VALIDITY: Duration = Duration::days(10 * 365);
const NODE_VALIDITY: Duration = Duration::days(365);
/// Certificates start an hour in the past so a peer whose clock runs a little behind ours
/// still accepts a freshly issued certificate.
const BACKDATE: Duration = Duration::hours(1);

#[derive(Debug, Error)]
pub enum CertError {
    #[error("invalid node id {id:?}: {why}")]
    InvalidNodeId { id: String, why: &'static str },
    #[error("no node ids given (use --nodes ID,ID,...)")]
    NoNodes,
    #[error("node id {0:?} is given twice")]
    DuplicateNode(String),
    #[error(
        "{} exists but {} does not: restore the missing file, or remove both to create a new CA",
        found.display(), missing.display()
    )]
    HalfCa { found: PathBuf, missing: PathBuf },
    #[error(
        "{} exists but {} does not: remove {} to issue a new pair for this node",
        found.display(), missing.display(), found.display()
    )]
    HalfNode { found: PathBuf, missing: PathBuf },
    #[error("creating directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{} is not a usable CA certificate: {why}", path.display())]
    BadCa { path: PathBuf, why: String },
    #[error("{} is not a usable private key: {source}", path.display())]
    BadKey { path: PathBuf, source: rcgen::Error },
    #[error("{} does not hold the key of the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0}")]
    Usage(&'static str),
    #[error(
        "{} holds no CA ({CA_CERT_FILE} and {CA_KEY_FILE}): create one first with meridian certs --out {} --nodes ID,...",
        dir.display(), dir.display()
    )]
    NoCa { dir: PathBuf },
    #[error(
        "{} does not exist: node {id:?} has no certificate to renew (leave out --renew to issue its first one)",
        cert.display()
    )]
    NothingToRenew { id: String, cert: PathBuf },
    #[error(
        "{} already holds {count} CA certificates: a CA rollover is in progress; finish it with --drop-old-ca before starting another",
        path.display()
    )]
    RolloverInProgress { path: PathBuf, count: usize },
    #[error("{} holds only the issuing CA: there is no old CA to drop", path.display())]
    NoOldCa { path: PathBuf },
    #[error(
        "not dropping the old CA: the certificates of {} in {} are not from the issuing CA ({why}); renew them first \
         (meridian certs --out {} --renew --nodes {}) and give every node its new pair",
        nodes.join(", "), dir.display(), dir.display(), nodes.join(",")
    )]
    StillFromOldCa { nodes: Vec<String>, dir: PathBuf, why: String },
}

/// What `issue` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueReport {
    /// False when an existing CA in the directory was reused.
    pub ca_created: bool,
    /// Nodes that got a new certificate and key.
    pub issued: Vec<String>,
    /// Nodes whose certificate and key already existed and were left alone.
    pub kept: Vec<String>,
}

/// Create (or reuse) the cluster CA in `dir` and issue a certificate for every node id that has
/// none yet. Existing node pairs are kept: re-issuing must be a deliberate act (`--renew`,
/// [`rotation::renew`]).
pub fn issue(dir: &Path, nodes: &[String]) -> Result<IssueReport, CertError> {
    validate_node_list(nodes)?;
    // Check every node's files before writing anything, so a bad request changes nothing.
    let mut todo = Vec::new();
    let mut kept = Vec::new();
    for id in nodes {
        match pair_state(&cert_path(dir, id), &key_path(dir, id))? {
            PairState::Absent => todo.push(id.clone()),
            PairState::Present => kept.push(id.clone()),
        }
    }
    fs::create_dir_all(dir).map_err(|source| CertError::CreateDir { path: dir.to_path_buf(), source })?;

    let (ca_cert, ca_key) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    let now = OffsetDateTime::now_utc();
    let (issuer, ca_created) = match pair_state(&ca_cert, &ca_key)? {
        PairState::Present => (load_ca(&ca_cert, &ca_key)?.issuer, false),
        PairState::Absent => (create_ca(&ca_cert, &ca_key, now)?, true),
    };
    for id in &todo {
        let key = KeyPair::generate()?;
        let cert = node_params(id, now)?.signed_by(&key, &issuer)?;
        write_new(&key_path(dir, id), key.serialize_pem().as_bytes(), true)?;
        write_new(&cert_path(dir, id), cert.pem().as_bytes(), false)?;
    }
    Ok(IssueReport { ca_created, issued: todo, kept })
}

/// A non-empty list of valid node ids, none given twice.
fn validate_node_list(nodes: &[String]) -> Result<(), CertError> {
    if nodes.is_empty() {
        return Err(CertError::NoNodes);
    }
    for (i, id) in nodes.iter().enumerate() {
        validate_node_id(id)?;
        if nodes[..i].contains(id) {
            return Err(CertError::DuplicateNode(id.clone()));
        }
    }
    Ok(())
}

/// Node ids become file names and certificate names, so they are kept to a safe alphabet.
pub fn validate_node_id(id: &str) -> Result<(), CertError> {
    let bad = |why| Err(CertError::InvalidNodeId { id: id.to_string(), why });
    if id.is_empty() {
        return bad("it is empty");
    }
    if id.len() > MAX_NODE_ID_LEN {
        return bad("it is longer than 64 characters");
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return bad("only letters, digits, '_', '.' and '-' are allowed");
    }
    if id.starts_with('.') {
        return bad("it must not start with '.'");
    }
    if id == "ca" {
        // ca.pem and ca.key are the cluster CA's files.
        return bad("\"ca\" is reserved for the cluster CA");
    }
    Ok(())
}

/// Path of a node's certificate in a TLS directory.
pub fn cert_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.pem"))
}

/// Path of a node's private key in a TLS directory.
pub fn key_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.key"))
}

/// The URI SAN that names a node.
pub fn node_id_uri(id: &str) -> String {
    format!("{NODE_ID_URI_PREFIX}{id}")
}

/// The node id a DER certificate was issued for, from its `urn:meridian:node:ID` SAN. `None` for
/// a certificate that does not parse, names no node, or names more than one: identity must be
/// unambiguous.
pub fn node_id_of_cert(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut ids = san.value.general_names.iter().filter_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => uri.strip_prefix(NODE_ID_URI_PREFIX),
        _ => None,
    });
    let id = ids.next()?;
    match ids.next() {
        None if validate_node_id(id).is_ok() => Some(id.to_string()),
        _ => None,
    }
}

enum PairState {
    Absent,
    Present,
}

fn pair_state(cert: &Path, key: &Path) -> Result<PairState, CertError> {
    let is_ca = cert.file_name().is_some_and(|n| n == CA_CERT_FILE);
    let half = |found: &Path, missing: &Path| {
        let (found, missing) = (found.to_path_buf(), missing.to_path_buf());
        Err(if is_ca { CertError::HalfCa { found, missing } } else { CertError::HalfNode { found, missing } })
    };
    match (cert.exists(), key.exists()) {
        (false, false) => Ok(PairState::Absent),
        (true, true) => Ok(PairState::Present),
        (true, false) => half(cert, key),
        (false, true) => half(key, cert),
    }
}

fn create_ca(
    cert_path: &Path,
    key_path: &Path,
    now: OffsetDateTime,
) -> Result<Issuer<'static, KeyPair>, CertError> {
    let (params, key, cert) = new_ca(now)?;
    write_new(key_path, key.serialize_pem().as_bytes(), true)?;
    write_new(cert_path, cert.pem().as_bytes(), false)?;
    Ok(Issuer::new(params, key))
}

/// A new self-signed CA: its parameters (to issue with), key and certificate.
fn new_ca(now: OffsetDateTime) -> Result<(CertificateParams, KeyPair, rcgen::Certificate), CertError> {
    let mut params = CertificateParams::default();
    // A CA of its own name per cluster: a certificate from another cluster is then refused as
    // "unknown issuer" rather than as a confusing bad signature from a same-named CA.
    params.distinguished_name = name(&format!("Meridian cluster CA {:08x}", rand::random::<u32>()));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((params, key, cert))
}

/// The CA of a directory: the bundle in `ca.pem` and, of it, the CA `ca.key` belongs to.
pub(crate) struct LoadedCa {
    pub(crate) issuer: Issuer<'static, KeyPair>,
    /// The issuing CA's certificate.
    pub(crate) issuing: CertificateDer<'static>,
    /// Every certificate of `ca.pem`, the issuing one included, in file order.
    pub(crate) bundle: Vec<CertificateDer<'static>>,
}

fn load_ca(cert_path: &Path, key_path: &Path) -> Result<LoadedCa, CertError> {
    let cert_pem = read_text(cert_path)?;
    let key = KeyPair::from_pem(&read_text(key_path)?)
        .map_err(|source| CertError::BadKey { path: key_path.to_path_buf(), source })?;
    let bad_ca = |why: String| CertError::BadCa { path: cert_path.to_path_buf(), why };
    let bundle = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_ca(e.to_string()))?;
    if bundle.is_empty() {
        return Err(bad_ca("no PEM certificate in it".into()));
    }
    // During a rollover the bundle holds two CAs; the key says which one issues. A key of no CA
    // in the bundle would sign node certificates that no peer accepts; say so now.
    let mut issuing = None;
    for der in &bundle {
        let (_, parsed) = x509_parser::parse_x509_certificate(der).map_err(|e| bad_ca(e.to_string()))?;
        if !parsed.is_ca() {
            return Err(bad_ca(format!("{} is not a CA certificate", parsed.subject())));
        }
        if parsed.public_key().raw == key.subject_public_key_info().as_slice() {
            issuing = Some(der.clone());
        }
    }
    let Some(issuing) = issuing else {
        return Err(CertError::KeyMismatch { cert: cert_path.to_path_buf(), key: key_path.to_path_buf() });
    };
    let issuer = Issuer::from_ca_cert_der(&issuing, key).map_err(|e| bad_ca(e.to_string()))?;
    Ok(LoadedCa { issuer, issuing, bundle })
}

/// Replace `path` with `contents` in one step (a temporary file renamed over it), so a node
/// watching the file never reads half of it; a private key is never readable by others, not
/// even briefly.
fn replace_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), CertError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // A leading dot: no node id starts with one, so this never collides with a node's files.
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, contents, secret)?;
    fs::rename(&tmp, path).map_err(|source| {
        let _ = fs::remove_file(&tmp);
        CertError::Write { path: path.to_path_buf(), source }
    })
}

/// PEM text of one DER certificate.
fn cert_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn node_params(id: &str, now: OffsetDateTime) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(id);
    params.subject_alt_names = vec![SanType::URI(node_id_uri(id).try_into()?)];
    let dns_safe =
        rustls::pki_types::DnsName::try_from(id).is_ok() && id.parse::<std::net::IpAddr>().is_err();
    if dns_safe {
        params.subject_alt_names.push(SanType::DnsName(id.try_into()?));
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every node is both a server and a client on the peer plane.
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = now + NODE_VALIDITY;
    Ok(params)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Meridian");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn read_text(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Read { path: path.to_path_buf(), source })
}

/// Write a file that must not exist yet; a private key is readable by its owner only from the
/// moment it is created, never briefly by everyone.
fn write_new(path: &Path, contents: &[u8], secret: bool) -> Result<(), CertError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file =
        options.open(path).map_err(|source| CertError::Write { path: path.to_path_buf(), source })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| CertError::Write { path: path.to_path_buf(), source })
}

/// A fresh directory under the system temp dir, removed on drop.
#[cfg(test)]
pub(crate) struct TestDir(pub PathBuf);

#[cfg(test)]
impl TestDir {
    pub(crate) fn new(tag: &str) -> TestDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("meridian-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        TestDir(path)
    }
}

#[cfg(test)]
impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn node_id_in(path: &Path) -> Option<String> {
        let pem = fs::read(path).unwrap();
        let der = CertificateDer::pem_slice_iter(&pem).next().unwrap().unwrap();
        node_id_of_cert(&der)
    }

    #[test]
    fn issues_ca_and_node_pairs_that_name_their_node() {
        let dir = TestDir::new("certs-issue");
        let report = issue(&dir.0, &ids(&["n1", "eu_2", "10.0.0.1"])).unwrap();
        assert!(report.ca_created);
        assert_eq!(report.issued, ids(&["n1", "eu_2", "10.0.0.1"]));
        for id in ["n1", "eu_2", "10.0.0.1"] {
            assert_eq!(node_id_in(&cert_path(&dir.0, id)).as_deref(), Some(id));
            KeyPair::from_pem(&fs::read_to_string(key_path(&dir.0, id)).unwrap()).unwrap();
        }
        // The CA certificate names no node.
        assert_eq!(node_id_in(&dir.0.join(CA_CERT_FILE)), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(dir.0.join(CA_KEY_FILE)), 0o600);
            assert_eq!(mode(key_path(&dir.0, "n1")), 0o600);
        }
    }

    #[test]
    fn a_second_run_reuses_the_ca_and_keeps_existing_nodes() {
        let dir = TestDir::new("certs-reuse");
        issue(&dir.0, &ids(&["n1"])).unwrap();
        let ca_before = fs::read(dir.0.join(CA_CERT_FILE)).unwrap();
        let n1_before = fs::read(cert_path(&dir.0, "n1")).unwrap();
        let report = issue(&dir.0, &ids(&["n1", "n2"])).unwrap();
        assert_eq!(report, IssueReport { ca_created: false, issued: ids(&["n2"]), kept: ids(&["n1"]) });
        assert_eq!(fs::read(dir.0.join(CA_CERT_FILE)).unwrap(), ca_before);
        assert_eq!(fs::read(cert_path(&dir.0, "n1")).unwrap(), n1_before);
        // n2 was signed by the same CA: its TLS material loads (which checks the chain).
        crate::peer::PeerTls::load(&dir.0, "n2").unwrap();
        crate::peer::PeerTls::load(&dir.0, "n1").unwrap();
    }

    #[test]
    fn bad_requests_change_nothing_and_say_why() {
        let dir = TestDir::new("certs-bad");
        for (id, needle) in [("", "empty"), ("a/b", "allowed"), ("..", "start"), ("ca", "reserved")] {
            let err = issue(&dir.0, &ids(&[id])).unwrap_err().to_string();
            assert!(err.contains(needle), "{id:?}: {err}");
        }
        assert!(matches!(issue(&dir.0, &[]), Err(CertError::NoNodes)));
        assert!(matches!(issue(&dir.0, &ids(&["a", "a"])), Err(CertError::DuplicateNode(_))));
        assert!(!dir.0.exists());

        issue(&dir.0, &ids(&["n1"])).unwrap();
        fs::remove_file(dir.0.join(CA_KEY_FILE)).unwrap();
        let err = issue(&dir.0, &ids(&["n2"])).unwrap_err();
        assert!(matches!(err, CertError::HalfCa { .. }), "{err}");
        assert!(!cert_path(&dir.0, "n2").exists());
    }

    #[test]
    fn a_ca_key_from_elsewhere_is_refused() {
        let (a, b) = (TestDir::new("certs-a"), TestDir::new("certs-b"));
        issue(&a.0, &ids(&["n1"])).unwrap();
        issue(&b.0, &ids(&["n1"])).unwrap();
        fs::remove_file(a.0.join(CA_KEY_FILE)).unwrap();
        fs::copy(b.0.join(CA_KEY_FILE), a.0.join(CA_KEY_FILE)).unwrap();
        let err = issue(&a.0, &ids(&["n2"])).unwrap_err();
        assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");

        fs::write(a.0.join(CA_KEY_FILE), "garbage").unwrap();
        let err = issue(&a.0, &ids(&["n2"])).unwrap_err();
        assert!(err.to_string().contains("not a usable private key"), "{err}");
    }
}
