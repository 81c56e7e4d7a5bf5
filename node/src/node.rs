//! `meridian node`: wire the planes together and run until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::admin::Admin;
use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::core::table::{self, RoutingTable};
use crate::edge_tls::accept::TlsHandshake;
use crate::edge_tls::reload::{self, Reloader};
use crate::edge_tls::EdgeTls;
use crate::gateway::{Gateway, Identity, Limits};
use crate::proxy::handler;
use crate::proxy::headers::Scheme;
use crate::server::{self, ConnLimits};

/// Read a routing-table file, JSON or TOML by extension (`.toml`), JSON otherwise.
pub fn load_table(path: &Path) -> anyhow::Result<RoutingTable> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading routes file {}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "toml") {
        table::parse_toml(&text)
    } else {
        table::parse_json(&text)
    };
    parsed.with_context(|| format!("routes file {}", path.display()))
}

pub async fn run(cfg: NodeConfig) -> anyhow::Result<()> {
    let identity = Identity::new(&cfg.id, &cfg.region)?;
    let limits = Limits {
        max_in_flight: cfg.max_in_flight,
        max_body_bytes: cfg.max_body_bytes,
        retry_buffer_bytes: 64 * 1024,
        connect_timeout: cfg.connect_timeout,
        retry_budget_ratio: cfg.retry_budget_ratio,
        retry_budget_min_per_sec: cfg.retry_budget_min_per_sec,
    };
    let gw = Gateway::new(identity, limits);
    // A bad table stops the node before it binds anything: nothing is half-applied. In cluster
    // mode the file only seeds the replicated table at bootstrap.
    if let Some(path) = &cfg.routes {
        let table = load_table(path)?;
        if !cfg.clustered() {
            gw.write_table(table, None, "bootstrap", "bootstrap")
                .map_err(|e| anyhow::anyhow!("routes file {}: {e}", path.display()))?;
        }
    }

    // Like a bad table, a bad certificate directory stops the node before it binds anything.
    let edge_tls = match &cfg.https {
        Some(https) => {
            let (tls, fingerprint) = EdgeTls::load(https, cfg.header_read_timeout)
                .with_context(|| format!("https_cert_dir: loading {}", https.cert_dir.display()))?;
            let tls = Arc::new(tls);
            gw.set_edge_tls(tls.clone());
            Some((tls, Reloader::new(fingerprint), https.clone()))
        }
        None => None,
    };

    // Installed before the listening line is printed: a signal sent the moment a supervisor sees
    // that line must find a handler, not the default action.
    let signals = Signals::install()?;
    let http = TcpListener::bind(cfg.http)
        .await
        .with_context(|| format!("binding the data plane to {}", cfg.http))?;
    let admin = TcpListener::bind(cfg.admin)
        .await
        .with_context(|| format!("binding the admin API to {}", cfg.admin))?;
    let https = match &edge_tls {
        Some((_, _, https)) => Some(
            TcpListener::bind(https.addr)
                .await
                .with_context(|| format!("binding the HTTPS data plane to {}", https.addr))?,
        ),
        None => None,
    };
    let http_addr = http.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let https_addr = https.as_ref().map(TcpListener::local_addr).transpose()?;
    // One stable line on stdout so scripts and tests can find the bound ports (port 0 works).
    // ` https=ADDR` is appended when HTTPS is on; the rest of the line never changes.
    let https_part = https_addr.map(|a| format!(" https={a}")).unwrap_or_default();
    println!("meridian node {} listening http={http_addr} admin={admin_addr}{https_part}", cfg.id);
    tracing::info!(id = %cfg.id, region = %cfg.region, %http_addr, %admin_addr, ?https_addr, "node started");

    let (stop_tx, stop_rx) = watch::channel(false);
    let cluster = if cfg.clustered() {
        Some(Cluster::start(&cfg, gw.clone(), http_addr, admin_addr, stop_rx.clone()).await?)
    } else {
        None
    };
    // SIGHUP re-reads the routes file only for a standalone node; a cluster changes its table
    // through the admin API. It also re-reads the HTTPS certificate directory at once.
    let reload = if cluster.is_none() { cfg.routes.clone() } else { None };
    let certs_hup = Arc::new(Notify::new());
    tokio::spawn(signals.run(stop_tx, gw.clone(), reload, certs_hup.clone()));
    tokio::spawn(crate::health_check::run(gw.clone(), stop_rx.clone()));
    tokio::spawn(crate::quota::rounds::run(gw.clone()));

    let conn_limits = ConnLimits {
        header_read_timeout: cfg.header_read_timeout,
        max_header_bytes: cfg.max_header_bytes,
        allow_h2: true,
    };
    let data_gw = gw.clone();
    let data = server::serve_data(
        http,
        conn_limits.clone(),
        handler::DataPlane { gw: data_gw, scheme: Scheme::Http },
        stopped(stop_rx.clone()),
        cfg.drain_timeout,
        "http",
    );
    let tokens = cfg.admin_tokens.clone().map(crate::admin_tokens::LiveTokens::new);
    if let (Some(live), Some(path)) = (&tokens, &cfg.admin_token_file) {
        tokio::spawn(crate::admin_tokens::watch(
            path.clone(),
            live.clone(),
            std::time::Duration::from_secs(1),
            stop_rx.clone(),
        ));
    }
    let https_srv = match (edge_tls, https) {
        (Some((tls, reloader, settings)), Some(listener)) => {
            tokio::spawn(reload::run(
                tls.clone(),
                reloader,
                settings.reload_interval,
                certs_hup,
                stop_rx.clone(),
            ));
            let https_gw = gw.clone();
            Some(server::serve_with(
                listener,
                TlsHandshake(tls),
                conn_limits.clone(),
                move |req, peer: SocketAddr| {
                    handler::handle_hyper(https_gw.clone(), req, peer, Scheme::Https)
                },
                stopped(stop_rx.clone()),
                cfg.drain_timeout,
                "https",
            ))
        }
        _ => None,
    };
    let https_srv = async move {
        if let Some(srv) = https_srv {
            srv.await;
        }
    };
    let admin_state = Arc::new(Admin {
        gw: gw.clone(),
        cluster: cluster.clone(),
        tokens,
        started: tokio::time::Instant::now(),
        denied: Default::default(),
    });
    let admin_srv = server::serve(
        admin,
        ConnLimits { allow_h2: false, ..conn_limits },
        move |req, _peer| admin_state.clone().handle(req),
        stopped(stop_rx.clone()),
        std::time::Duration::from_secs(2),
        "admin",
    );
    tokio::join!(data, https_srv, admin_srv);
    if let Some(c) = cluster {
        c.shutdown().await;
    }
    tracing::info!("node stopped");
    Ok(())
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// SIGTERM/SIGINT start a graceful stop; SIGHUP re-reads the routes file and the HTTPS
/// certificate directory.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    async fn run(
        mut self,
        stop: watch::Sender<bool>,
        gw: Arc<Gateway>,
        routes: Option<std::path::PathBuf>,
        certs: Arc<Notify>,
    ) {
        loop {
            tokio::select! {
                _ = self.term.recv() => break,
                _ = self.int.recv() => break,
                _ = self.hup.recv() => {
                    // Picked up by the certificate reload task, when HTTPS is on.
                    certs.notify_one();
                    let Some(path) = &routes else { continue };
                    match load_table(path).and_then(|t| gw.write_table(t, None, "reload", "routes-file").map_err(Into::into)) {
                        Ok(v) => tracing::info!(version = v, path = %path.display(), "routes file reloaded"),
                        Err(e) => tracing::error!(error = %format!("{e:#}"), "routes reload refused; keeping the current table"),
                    }
                }
            }
        }
        tracing::info!("shutdown requested: draining");
        let _ = stop.send(true);
    }
}
