//! TLS termination on the data plane (`--https`): certificate pairs from a directory, chosen by
//! SNI, reloaded without dropping a connection.
//!
//! Owns: reading the directory (`load`), the SNI → certificate choice (`names`, `store`), the
//! rustls server configuration and each connection's handshake (`accept`, with a look at the
//! ClientHello's versions first in `hello`), the reload task
//! (`reload`) and the TLS counters (`stats`). Must not touch HTTP: once the handshake is done
//! the connection is `server::serve_with`'s like a plain one, and the handler only learns that
//! the client used `https` (for `x-forwarded-proto`).
//!
//! Protocols: TLS 1.3 and 1.2 (or 1.3 only), never older; rustls' default cipher suites and key
//! exchange groups with the `ring` provider; ALPN `h2` then `http/1.1`.

pub mod accept;
pub mod hello;
pub mod load;
pub mod names;
pub mod reload;
pub mod stats;
pub mod store;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use self::load::{CertPair, Fingerprint, LoadError};
use self::stats::TlsStats;
use self::store::{CertStore, Lookup};
use crate::gateway::Gateway;

/// Lowest TLS version the HTTPS listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinTls {
    Tls12,
    Tls13,
}

/// The validated `https*` settings.
#[derive(Debug, Clone)]
pub struct HttpsConfig {
    pub addr: SocketAddr,
    pub cert_dir: PathBuf,
    pub min_tls: MinTls,
    pub reload_interval: Duration,
}

/// The HTTPS listener's TLS state, shared by its connections, the reload task and `/metrics`.
pub struct EdgeTls {
    dir: PathBuf,
    /// The certificates new handshakes get; swapped whole by a reload.
    current: Arc<ArcSwap<CertStore>>,
    config: Arc<ServerConfig>,
    /// Checked on the ClientHello before rustls sees it (see `hello`); rustls enforces it too.
    min_tls: MinTls,
    /// The header read timeout: a handshake gets as long as a plain client gets for its head.
    handshake_timeout: Duration,
    pub stats: TlsStats,
}

impl std::fmt::Debug for EdgeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("EdgeTls").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl EdgeTls {
    /// Load the certificate directory and build the server configuration. Blocking file reads;
    /// an error names the file. Also returns the directory's fingerprint for the reload task.
    pub fn load(cfg: &HttpsConfig, handshake_timeout: Duration) -> Result<(EdgeTls, Fingerprint), LoadError> {
        let loaded = load::load_dir(&cfg.cert_dir)?;
        let store = CertStore::new(loaded.pairs);
        log_store(&cfg.cert_dir, &store);
        let current = Arc::new(ArcSwap::from_pointee(store));
        let resolver = Arc::new(SniResolver { current: current.clone() });
        let tls = EdgeTls {
            dir: cfg.cert_dir.clone(),
            current,
            config: Arc::new(server_config(cfg.min_tls, resolver).map_err(LoadError::Config)?),
            min_tls: cfg.min_tls,
            handshake_timeout,
            stats: TlsStats::default(),
        };
        Ok((tls, loaded.fingerprint))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The certificates new handshakes get now.
    pub fn certs(&self) -> arc_swap::Guard<Arc<CertStore>> {
        self.current.load()
    }

    /// Serve `pairs` from the next handshake on.
    pub fn install(&self, pairs: Vec<CertPair>) {
        let store = CertStore::new(pairs);
        log_store(&self.dir, &store);
        self.current.store(Arc::new(store));
    }

    pub fn render_metrics(&self, out: &mut String) {
        self.stats.render(&self.certs(), out);
    }
}

/// The HTTPS series for the admin `/metrics`; nothing when HTTPS is off.
pub fn render_metrics(gw: &Gateway, out: &mut String) {
    if let Some(tls) = gw.edge_tls() {
        tls.render_metrics(out);
    }
}

/// rustls' server configuration: the versions allowed, ALPN, our SNI resolver and stateless
/// session resumption. Cipher suites and key exchange groups are rustls' defaults.
pub fn server_config(
    min: MinTls,
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<ServerConfig, rustls::Error> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min {
        MinTls::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinTls::Tls13 => &[&rustls::version::TLS13],
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // The server's order wins: h2 whenever the client offers it.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Resumption by tickets (TLS 1.2 and 1.3) sealed with keys that rotate every 6 hours and
    // live only in this process: any number of returning clients skip the full handshake
    // without a server-side cache (rustls' default cache holds 256 sessions). A client that
    // lands on another node, or after a restart, does a full handshake.
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(config)
}

/// Picks the certificate for a ClientHello from the current store.
#[derive(Debug)]
struct SniResolver {
    current: Arc<ArcSwap<CertStore>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.current.load().lookup(hello.server_name()) {
            Lookup::Found(pair) => Some(pair.certified.clone()),
            Lookup::NoSni | Lookup::Unrecognized => None,
        }
    }
}

fn log_store(dir: &Path, store: &CertStore) {
    let dir = dir.display();
    let now = crate::gateway::unix_ms() / 1000;
    for pair in store.pairs() {
        let names: Vec<String> = pair.served.iter().map(ToString::to_string).collect();
        tracing::info!(%dir, pair = %pair.name, names = %names.join(","), not_after = pair.not_after, "HTTPS certificate");
        for (san, why) in &pair.ignored {
            tracing::warn!(%dir, pair = %pair.name, %san, why, "subjectAltName not served");
        }
        if pair.not_after < i64::try_from(now).unwrap_or(i64::MAX) {
            tracing::warn!(%dir, pair = %pair.name, not_after = pair.not_after, "HTTPS certificate has expired; clients will refuse it");
        }
    }
    for s in store.shadowed() {
        tracing::warn!(
            %dir,
            name = %s.name,
            served_by = %s.served_by,
            not_served_by = %s.not_served_by,
            "two certificate pairs claim one name; the one that expires later serves it"
        );
    }
    if !store.has_default() {
        tracing::info!(%dir, "no default pair: clients without SNI or with an unknown one are refused (unrecognized_name)");
    }
}
