//! Reading a certificate directory (`--https-cert-dir`): every `NAME.pem` (PEM chain, leaf
//! first) with its `NAME.key` (PEM private key: PKCS#8, PKCS#1 RSA or SEC1 EC), each pair
//! checked — the key must belong to the leaf — and parsed into a `CertPair`.
//!
//! Also the directory's fingerprint (names, sizes, times and inodes of those files), which the
//! reload task compares to notice a change without reading any certificate. Hidden files
//! (`.name`, such as editors' swap files or Kubernetes' `..data` link) and other extensions are
//! ignored. Every error names the file it is about.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use thiserror::Error;

use super::names::{self, ServedName};

/// Certificate chains and keys are a few KiB; anything this large is not one.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The pair that serves clients whose SNI no other certificate covers, or who send none.
pub const DEFAULT_PAIR: &str = "default";

#[derive(Debug, Error)]
pub enum LoadError {
    // The io::Error is part of the message, not a `source`: shown once, not again in the chain.
    #[error("reading the certificate directory {dir}: {err}")]
    Dir { dir: PathBuf, err: io::Error },
    #[error("the certificate directory {dir} holds no certificate pair (NAME.pem with NAME.key)")]
    Empty { dir: PathBuf },
    #[error("{path}: the file name is not valid UTF-8")]
    FileName { path: PathBuf },
    #[error("reading {path}: {err}")]
    Read { path: PathBuf, err: io::Error },
    #[error("{path}: {size} bytes; a certificate or key file may have at most {MAX_FILE_BYTES}")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path} has no {missing} beside it (every NAME.pem needs its NAME.key and the other way round)")]
    HalfPair { path: PathBuf, missing: PathBuf },
    #[error("{path}: {why}")]
    BadCert { path: PathBuf, why: String },
    #[error("{path}: {why}")]
    BadKey { path: PathBuf, why: String },
    #[error(
        "{key} is not the private key of the certificate in {cert} (their public keys differ; \
         the leaf must come first in the .pem)"
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("building the TLS configuration: {0}")]
    Config(rustls::Error),
}

/// One loaded certificate pair.
#[derive(Debug)]
pub struct CertPair {
    /// The file stem: `a` for `a.pem` and `a.key`.
    pub name: String,
    pub certified: Arc<CertifiedKey>,
    /// The names this pair serves, from the leaf's dNSName SANs.
    pub served: Vec<ServedName>,
    /// SANs that cannot be served, with the reason (logged as warnings).
    pub ignored: Vec<(String, &'static str)>,
    /// The leaf's notAfter, in Unix seconds.
    pub not_after: i64,
}

/// The state of one file of a pair; two equal fingerprints mean nothing was written, replaced,
/// added or removed in between (a write always moves ctime; a rename changes the inode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint(Vec<FileStamp>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    name: String,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
}

/// A directory read in full: its pairs (sorted by name) and the fingerprint taken before any
/// file was read, so a change made while reading shows up at the next comparison.
#[derive(Debug)]
pub struct Loaded {
    pub pairs: Vec<CertPair>,
    pub fingerprint: Fingerprint,
}

/// The `.pem`/`.key` files of `dir` by pair name, with their stamps.
struct Listing {
    files: BTreeMap<String, (Option<PathBuf>, Option<PathBuf>)>,
    fingerprint: Fingerprint,
}

fn list(dir: &Path) -> Result<Listing, LoadError> {
    use std::os::unix::fs::MetadataExt as _;
    let dir_err = |err| LoadError::Dir { dir: dir.to_path_buf(), err };
    let mut files: BTreeMap<String, (Option<PathBuf>, Option<PathBuf>)> = BTreeMap::new();
    let mut stamps = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_err)? {
        let path = entry.map_err(dir_err)?.path();
        let Some(file_name) = path.file_name() else { continue };
        let Some(file_name) = file_name.to_str() else {
            return Err(LoadError::FileName { path });
        };
        if file_name.starts_with('.') {
            continue;
        }
        let (stem, is_key) = match (file_name.strip_suffix(".pem"), file_name.strip_suffix(".key")) {
            (Some(stem), _) => (stem, false),
            (None, Some(stem)) => (stem, true),
            (None, None) => continue,
        };
        // Follows symbolic links: a link swapped to new content changes the target's stamp.
        let meta = std::fs::metadata(&path).map_err(|err| LoadError::Read { path: path.clone(), err })?;
        stamps.push(FileStamp {
            name: file_name.to_string(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            inode: meta.ino(),
        });
        let slot = files.entry(stem.to_string()).or_default();
        if is_key {
            slot.1 = Some(path);
        } else {
            slot.0 = Some(path);
        }
    }
    stamps.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Listing { files, fingerprint: Fingerprint(stamps) })
}

/// The directory's current fingerprint, without reading any file.
pub fn fingerprint(dir: &Path) -> Result<Fingerprint, LoadError> {
    Ok(list(dir)?.fingerprint)
}

/// Read and check every pair of `dir`. One bad pair fails the whole directory: serving a
/// partial set would silently drop names.
pub fn load_dir(dir: &Path) -> Result<Loaded, LoadError> {
    let listing = list(dir)?;
    if listing.files.is_empty() {
        return Err(LoadError::Empty { dir: dir.to_path_buf() });
    }
    let mut pairs = Vec::with_capacity(listing.files.len());
    for (name, (cert, key)) in listing.files {
        let (cert, key) = match (cert, key) {
            (Some(c), Some(k)) => (c, k),
            (Some(c), None) => return Err(half(c, dir, &name, "key")),
            (None, Some(k)) => return Err(half(k, dir, &name, "pem")),
            (None, None) => continue,
        };
        let cert_pem = read_small(&cert)?;
        let key_pem = read_small(&key)?;
        pairs.push(parse_pair(&name, &cert, &cert_pem, &key, &key_pem)?);
    }
    Ok(Loaded { pairs, fingerprint: listing.fingerprint })
}

fn half(found: PathBuf, dir: &Path, name: &str, ext: &str) -> LoadError {
    LoadError::HalfPair { path: found, missing: dir.join(format!("{name}.{ext}")) }
}

fn read_small(path: &Path) -> Result<Vec<u8>, LoadError> {
    use std::io::Read as _;
    let read_err = |err| LoadError::Read { path: path.to_path_buf(), err };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut buf = Vec::new();
    // Read one byte past the limit to tell "exactly at it" from "over it", whatever the
    // metadata said a moment ago.
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf).map_err(read_err)?;
    let size = buf.len() as u64;
    if size > MAX_FILE_BYTES {
        return Err(LoadError::TooLarge { path: path.to_path_buf(), size });
    }
    Ok(buf)
}

/// Check and parse one pair from its PEM texts; the paths only name the files in errors.
pub fn parse_pair(
    name: &str,
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertPair, LoadError> {
    let bad_cert = |why: String| LoadError::BadCert { path: cert_path.to_path_buf(), why };
    let bad_key = |why: String| LoadError::BadKey { path: key_path.to_path_buf(), why };

    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_cert(format!("not valid PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(bad_cert("no PEM CERTIFICATE block in it".into()));
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| bad_cert(format!("the first certificate (the leaf) does not parse: {e}")))?;
    let mut served = Vec::new();
    let mut ignored = Vec::new();
    let san = parsed.subject_alternative_name().map_err(|e| bad_cert(format!("subjectAltName: {e}")))?;
    for general in san.iter().flat_map(|s| s.value.general_names.iter()) {
        if let x509_parser::extensions::GeneralName::DNSName(dns) = general {
            match names::parse_san(dns) {
                Ok(n) if !served.contains(&n) => served.push(n),
                Ok(_) => {}
                Err(why) => ignored.push((dns.to_string(), why)),
            }
        }
    }
    if served.is_empty() && name != DEFAULT_PAIR {
        return Err(bad_cert(format!(
            "the leaf certificate names no DNS host (dNSName subjectAltName) it could serve; \
             only the {DEFAULT_PAIR:?} pair may do without"
        )));
    }
    let not_after = parsed.validity().not_after.timestamp();

    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => bad_key(
            "no private key in it (expected PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\"; \
             encrypted keys are not supported)"
                .into(),
        ),
        other => bad_key(format!("not valid PEM: {other}")),
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| bad_key(format!("not a usable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        // ring's keys always know their public key; `Unknown` cannot happen with them.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(LoadError::KeyMismatch { cert: cert_path.to_path_buf(), key: key_path.to_path_buf() })
        }
        Err(e) => return Err(bad_cert(format!("the leaf certificate is not usable: {e}"))),
    }
    Ok(CertPair { name: name.to_string(), certified: Arc::new(certified), served, ignored, not_after })
}
