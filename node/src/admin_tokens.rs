//! Admin API credentials: named bearer tokens, each with a role.
//!
//! The file given by `--admin-token-file` holds either one token alone (the historical form: it
//! is named `admin` and has the admin role) or one token per line as `NAME ROLE TOKEN`:
//!
//! ```text
//! # name     role       token
//! ops        admin      6c1f0e7d0a0b4f3e9d2c8b7a6f5e4d3c
//! grafana    read-only  0f9e8d7c6b5a49382716a5b4c3d2e1f0
//! ```
//!
//! Roles: `admin` may do everything; `read-only` may read every view but not change the routing
//! table (a write gets 403), and sees secrets in tables redacted. Names appear in the audit trail
//! of routing-table writes. Tokens are kept as SHA-256 digests only, and a presented token is
//! compared with every digest without an early exit, so timing says nothing about which token or
//! how much of it matched.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use arc_swap::ArcSwap;
use ring::digest;

/// Shortest token accepted: 16 characters.
const MIN_TOKEN_LEN: usize = 16;
/// Largest `Authorization` value looked at.
const MAX_PRESENTED_LEN: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    ReadOnly,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::Admin => "admin",
        }
    }
}

/// Who made an admin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Token name; `local` when the admin API has no tokens (loopback only).
    pub name: String,
    pub role: Role,
}

#[derive(Clone)]
struct Entry {
    name: String,
    role: Role,
    digest: [u8; 32],
}

/// The configured tokens. Debug output never shows a digest.
#[derive(Clone)]
pub struct AdminTokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> =
            self.entries.iter().map(|e| format!("{} ({})", e.name, e.role.as_str())).collect();
        f.debug_struct("AdminTokens").field("tokens", &names).finish()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl AdminTokens {
    /// Reads and checks a token file; errors name the file and the line.
    pub fn load(path: &Path) -> anyhow::Result<AdminTokens> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("admin_token_file: reading {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("admin_token_file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<AdminTokens> {
        let lines = entries_of(text);
        let mut entries: Vec<Entry> = Vec::new();
        if let [(line, fields)] = lines.as_slice() {
            if let [token] = fields.as_slice() {
                check_token(token, *line)?;
                entries.push(Entry {
                    name: "admin".into(),
                    role: Role::Admin,
                    digest: sha256(token.as_bytes()),
                });
                return Ok(AdminTokens { entries });
            }
        }
        for (line, fields) in &lines {
            let [name, role, token] = fields.as_slice() else {
                bail!(
                    "line {line}: expected `NAME ROLE TOKEN` (role admin or read-only), or a file holding one token alone"
                );
            };
            if name.is_empty()
                || name.len() > 64
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                bail!("line {line}: token name {name:?} must be 1-64 characters of [A-Za-z0-9_.-]");
            }
            let role = match *role {
                "admin" => Role::Admin,
                "read-only" => Role::ReadOnly,
                other => bail!("line {line}: role {other:?} must be admin or read-only"),
            };
            check_token(token, *line)?;
            let digest = sha256(token.as_bytes());
            if entries.iter().any(|e| e.name == *name) {
                bail!("line {line}: token name {name:?} is used twice");
            }
            if entries.iter().any(|e| e.digest == digest) {
                bail!("line {line}: the same token is listed twice (names must map to distinct tokens)");
            }
            entries.push(Entry { name: name.to_string(), role, digest });
        }
        if entries.is_empty() {
            bail!("no token in the file");
        }
        Ok(AdminTokens { entries })
    }

    /// The caller a presented `Authorization` header value names, if it is one of the tokens.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Option<Caller> {
        let value = authorization?;
        if value.len() > MAX_PRESENTED_LEN {
            return None;
        }
        let token = value.strip_prefix(b"Bearer ")?.trim_ascii();
        let presented = sha256(token);
        // Every digest is compared in full; the match is remembered, not returned early.
        let mut found: Option<&Entry> = None;
        for e in &self.entries {
            let diff = e.digest.iter().zip(&presented).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(e);
            }
        }
        found.map(|e| Caller { name: e.name.clone(), role: e.role })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The tokens in use, swapped whole when the file changes, and how reloads went.
#[derive(Debug)]
pub struct LiveTokens {
    current: ArcSwap<AdminTokens>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
}

impl LiveTokens {
    pub fn new(tokens: AdminTokens) -> Arc<LiveTokens> {
        Arc::new(LiveTokens {
            current: ArcSwap::from_pointee(tokens),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        })
    }

    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Option<Caller> {
        self.current.load().authenticate(authorization)
    }

    pub fn count(&self) -> usize {
        self.current.load().len()
    }
}

/// What identifies a version of the file without reading it: length and modification time.
fn fingerprint(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// Re-reads the token file whenever it changes (checked every `every`), so tokens are added,
/// revoked or rotated without a restart. A file that does not parse leaves the tokens in use
/// as they are (logged and counted) and is tried again on the next change.
pub async fn watch(
    path: PathBuf,
    live: Arc<LiveTokens>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut seen = fingerprint(&path);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = fingerprint(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match AdminTokens::load(&path) {
            Ok(tokens) => {
                let n = tokens.len();
                live.current.store(Arc::new(tokens));
                live.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(path = %path.display(), tokens = n, "admin tokens reloaded");
            }
            Err(e) => {
                live.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %format!("{e:#}"), "admin token file unusable; keeping the tokens in use");
            }
        }
    }
}

/// The entries of a token file: each non-blank line that is not a `#` comment, with its number
/// (from 1) and its whitespace-separated fields. `meridian ctl` reads the same file with it.
pub fn entries_of(text: &str) -> Vec<(usize, Vec<&str>)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split_whitespace().collect::<Vec<_>>()))
        .filter(|(_, f)| !f.is_empty() && !f[0].starts_with('#'))
        .collect()
}

fn check_token(token: &str, line: usize) -> anyhow::Result<()> {
    if token.len() < MIN_TOKEN_LEN {
        bail!("line {line}: a token must be at least {MIN_TOKEN_LEN} characters");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("line {line}: a token must be printable ASCII without spaces");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(t: &str) -> Vec<u8> {
        format!("Bearer {t}").into_bytes()
    }

    #[test]
    fn a_lone_token_is_the_admin() {
        let t = AdminTokens::parse("  0123456789abcdef0123\n").expect("valid");
        let c = t.authenticate(Some(&bearer("0123456789abcdef0123"))).expect("known");
        assert_eq!(c, Caller { name: "admin".into(), role: Role::Admin });
        assert!(t.authenticate(Some(&bearer("0123456789abcdef0124"))).is_none());
        assert!(t.authenticate(Some(b"0123456789abcdef0123")).is_none(), "needs the Bearer scheme");
        assert!(t.authenticate(None).is_none());
    }

    #[test]
    fn named_tokens_with_roles() {
        let text =
            "# name role token\nops admin aaaaaaaaaaaaaaaaaaaa\n\ngrafana read-only bbbbbbbbbbbbbbbbbbbb\n";
        let t = AdminTokens::parse(text).expect("valid");
        assert_eq!(t.len(), 2);
        assert_eq!(t.authenticate(Some(&bearer("aaaaaaaaaaaaaaaaaaaa"))).map(|c| c.role), Some(Role::Admin));
        let g =
            t.authenticate(Some(&bearer("bbbbbbbbbbbbbbbbbbbb "))).expect("known, trailing space trimmed");
        assert_eq!((g.name.as_str(), g.role), ("grafana", Role::ReadOnly));
        assert!(!format!("{t:?}").contains("aaaa"), "debug output shows no token");
    }

    #[test]
    fn bad_files_name_the_line() {
        let err = |text: &str| format!("{:#}", AdminTokens::parse(text).unwrap_err());
        assert!(err("short").contains("at least 16"));
        assert!(err("ops admin aaaaaaaaaaaaaaaaaaaa\nx writer bbbbbbbbbbbbbbbbbbbb")
            .contains("line 2: role \"writer\""));
        assert!(
            err("ops admin aaaaaaaaaaaaaaaaaaaa\nops read-only bbbbbbbbbbbbbbbbbbbb").contains("used twice")
        );
        assert!(
            err("a admin aaaaaaaaaaaaaaaaaaaa\nb read-only aaaaaaaaaaaaaaaaaaaa").contains("listed twice")
        );
        assert!(err("ops admin").contains("line 1: expected"));
        assert!(err("bad/name admin aaaaaaaaaaaaaaaaaaaa").contains("token name"));
        assert!(err("# only a comment\n").contains("no token"));
    }
}
