//! Hot reload of the peer plane's TLS material: watch this node's three files, load a changed
//! set completely, and hand it to the peer plane; keep the material in use when the new set is bad.
//!
//! Owns when material is loaded again, and what is counted and logged about it. What makes a set
//! valid is `tls.rs`'s business; what a swap does to connections is `endpoint.rs`'s and
//! `serve.rs`'s. Polling (a digest of each file's content) rather than inotify: it works the same
//! on every filesystem, for files rewritten in place, replaced by rename (as `meridian certs` does)
//! or swapped behind a symlink (Kubernetes secrets), whatever the timestamp resolution, at the cost
//! of a delay of up to one interval and reading three small files every two seconds.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::endpoint::PeerPlane;
use super::tls::{PeerTls, TlsError};
use crate::certs::{self, CA_CERT_FILE};

/// How often the files are looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// A change is loaded only once the files have stayed the same for this long, so that an
/// operator copying three files, or `meridian certs` replacing a pair, is not caught halfway.
const SETTLE: Duration = Duration::from_millis(300);

/// Reload outcomes, for `/metrics`.
#[derive(Debug, Default)]
pub struct ReloadCounts {
    /// Changed files that loaded and are in use.
    pub ok: AtomicU64,
    /// Changed files that were refused (counted once per distinct content and error).
    pub error: AtomicU64,
    /// The files on disk are refused right now: the node runs on older material.
    pub failing: AtomicBool,
}

/// The files of one node's material in its TLS directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    dir: PathBuf,
    id: String,
}

/// What the files held: per file, a SHA-256 of its content (`None`: could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<Option<[u8; 32]>>);

impl TlsFiles {
    pub fn new(dir: &Path, id: &str) -> TlsFiles {
        TlsFiles { dir: dir.to_path_buf(), id: id.to_string() }
    }

    fn paths(&self) -> [PathBuf; 3] {
        [
            self.dir.join(CA_CERT_FILE),
            certs::cert_path(&self.dir, &self.id),
            certs::key_path(&self.dir, &self.id),
        ]
    }

    /// Take a fingerprint before loading: a change made after it is then seen by the next look.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(
            self.paths()
                .iter()
                .map(|p| {
                    // Follows symlinks: a swapped link target is a change.
                    let content = std::fs::read(p).ok()?;
                    let digest = ring::digest::digest(&ring::digest::SHA256, &content);
                    let mut out = [0u8; 32];
                    out.copy_from_slice(digest.as_ref());
                    Some(out)
                })
                .collect(),
        )
    }

    pub fn load(&self) -> Result<PeerTls, TlsError> {
        PeerTls::load(&self.dir, &self.id)
    }
}

/// What one look at the files did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing changed since the last load.
    Unchanged,
    /// The files are still being written; looked at again next time.
    Settling,
    /// The files loaded. `swapped`: their material differs from what was in use and is in use
    /// now (`retired` outgoing connections will be redialled); otherwise they hold the material
    /// in use in another form (re-encoded PEM, or restored after a refused change).
    Loaded { swapped: bool, retired: usize },
    /// The files were refused; the material in use stays. `counted`: a new failure (logged and
    /// counted), not the same files failing the same way again.
    Refused { counted: bool },
}

/// The watcher of one node's files. `run` polls; `check` is one look (tests call it directly).
pub struct CredentialWatch {
    plane: PeerPlane,
    files: TlsFiles,
    /// The fingerprint of the files in use.
    loaded: Fingerprint,
    /// The files and the error of the last refused load: retried every look, logged once.
    failed: Option<(Fingerprint, String)>,
}

impl CredentialWatch {
    /// `loaded`: the fingerprint taken just before the plane's material was loaded.
    pub fn new(plane: PeerPlane, files: TlsFiles, loaded: Fingerprint) -> CredentialWatch {
        CredentialWatch { plane, files, loaded, failed: None }
    }

    /// Look every [`POLL_INTERVAL`] until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            if stopping {
                return;
            }
            self.check().await;
        }
    }

    /// One look: load the files if they changed (or failed last time) and have settled.
    pub async fn check(&mut self) -> Outcome {
        let seen = self.files.fingerprint();
        if seen == self.loaded && self.failed.is_none() {
            return Outcome::Unchanged;
        }
        tokio::time::sleep(SETTLE).await;
        if self.files.fingerprint() != seen {
            return Outcome::Settling;
        }
        let tls = match self.files.load() {
            Ok(tls) => tls,
            Err(e) => return self.refused(seen, e.to_string()),
        };
        let summary = tls.summary().clone();
        let swapped = if tls.same_material(&self.plane.tls()) {
            None
        } else {
            match self.plane.replace_tls(tls) {
                Ok(retired) => Some(retired),
                // `load` checked the id already; kept for completeness.
                Err(e) => return self.refused(seen, e.to_string()),
            }
        };
        self.loaded = seen;
        self.failed = None;
        let counts = &self.plane.inner.reloads;
        counts.failing.store(false, Ordering::Relaxed);
        counts.ok.fetch_add(1, Ordering::Relaxed);
        let dir = self.files.dir.display();
        match swapped {
            None => {
                tracing::info!(%dir, serial = %summary.serial,
                    "peer TLS files changed on disk but hold the material already in use");
                Outcome::Loaded { swapped: false, retired: 0 }
            }
            Some(retired) => {
                tracing::info!(
                    %dir,
                    serial = %summary.serial,
                    not_after_unix = summary.not_after,
                    expires_in_days = (summary.not_after - unix_now()) / 86_400,
                    trusted_cas = summary.trusted_cas,
                    retired_connections = retired,
                    "peer TLS material reloaded"
                );
                Outcome::Loaded { swapped: true, retired }
            }
        }
    }

    fn refused(&mut self, seen: Fingerprint, error: String) -> Outcome {
        let counts = &self.plane.inner.reloads;
        counts.failing.store(true, Ordering::Relaxed);
        let failure = (seen, error);
        if self.failed.as_ref() == Some(&failure) {
            tracing::debug!(error = %failure.1, "peer TLS files still refused");
            return Outcome::Refused { counted: false };
        }
        counts.error.fetch_add(1, Ordering::Relaxed);
        // The error names the file (and what is wrong with it).
        tracing::error!(error = %failure.1, dir = %self.files.dir.display(),
            "peer TLS reload refused; keeping the material in use and retrying");
        self.failed = Some(failure);
        Outcome::Refused { counted: true }
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl PeerPlane {
    /// The reload counters and the material in use, as Prometheus text.
    pub fn render_tls_metrics(&self, out: &mut String) {
        let counts = &self.inner.reloads;
        let tls = self.tls();
        let summary = tls.summary();
        let _ = writeln!(
            out,
            "# HELP meridian_peer_tls_reloads_total Peer TLS files loaded after a change (ok) or refused, the material in use kept (error).\n\
             # TYPE meridian_peer_tls_reloads_total counter\n\
             meridian_peer_tls_reloads_total{{result=\"ok\"}} {}\n\
             meridian_peer_tls_reloads_total{{result=\"error\"}} {}",
            counts.ok.load(Ordering::Relaxed),
            counts.error.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP meridian_peer_tls_reload_failing 1 while the peer TLS files on disk are refused and older material is in use.\n\
             # TYPE meridian_peer_tls_reload_failing gauge\n\
             meridian_peer_tls_reload_failing {}",
            u8::from(counts.failing.load(Ordering::Relaxed)),
        );
        let _ = writeln!(
            out,
            "# HELP meridian_peer_tls_cert_not_after_seconds Expiry of this node's peer certificate in use, Unix time.\n\
             # TYPE meridian_peer_tls_cert_not_after_seconds gauge\n\
             meridian_peer_tls_cert_not_after_seconds {}",
            summary.not_after,
        );
        let _ = writeln!(
            out,
            "# HELP meridian_peer_tls_trusted_cas CA certificates in the peer trust bundle in use.\n\
             # TYPE meridian_peer_tls_trusted_cas gauge\n\
             meridian_peer_tls_trusted_cas {}",
            summary.trusted_cas,
        );
    }
}
