//! `PeerPlane`: this node's one QUIC endpoint, dialling peers and caching one connection each.
//!
//! Owns the UDP socket bound on `--peer` (server and client share it), the transport settings, and
//! the connection cache. Every RPC gets its own bi-directional stream on the cached connection, so
//! a slow call never holds up another. Serving incoming calls is in `serve.rs`.
//!
//! The TLS material can be replaced while the plane runs (`replace_tls`): new dials and new
//! incoming connections use the new material at once; cached outgoing connections are retired
//! (taken out of the cache, so the next call redials, and closed by quinn once the calls still
//! running on them end); incoming ones are re-checked against the new trust bundle in `serve.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use quinn::{Connection, Endpoint, IdleTimeout, RecvStream, SendStream, TransportConfig, VarInt};
use tokio::sync::watch;

use super::error::PeerError;
use super::frame::{self, DEFAULT_MAX_FRAME};
use super::reload::ReloadCounts;
use super::stats::PeerStats;
use super::tls::{PeerTls, TlsError, SERVER_NAME};

/// Transport settings of the peer plane.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Largest frame read, in either direction, by `call` and `serve`.
    pub max_frame: usize,
    /// PING interval on an idle connection: keeps cross-region links (and NAT bindings) warm, so a
    /// Raft heartbeat after a quiet spell does not pay a new handshake.
    pub keep_alive: Duration,
    /// A connection with no packets from the peer for this long is dead; the next call redials.
    pub idle_timeout: Duration,
    /// Concurrent RPCs one peer may have open towards us on one connection.
    pub max_concurrent_streams: u32,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            max_frame: DEFAULT_MAX_FRAME,
            // A peer that vanishes (no ICMP reaches QUIC) is given up after 10 s at worst; gossip
            // usually tells us sooner (see `drop_peer`).
            keep_alive: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            max_concurrent_streams: 256,
        }
    }
}

/// The peer plane of one node. Clones share the endpoint, the connection cache and the stats.
#[derive(Clone)]
pub struct PeerPlane {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) endpoint: Endpoint,
    local_addr: SocketAddr,
    /// This node's id; every material the plane ever holds names it.
    id: String,
    /// The current TLS material: what new dials present and check, and what the server config
    /// was built from.
    pub(super) tls: ArcSwap<PeerTls>,
    /// Bumped by every `replace_tls`: connections made under an earlier number are not reused
    /// for new calls, and serving loops re-check their caller against the new trust bundle.
    pub(super) generation: watch::Sender<u64>,
    /// Whether the endpoint still takes new connections. Shutdown and a reload both set the
    /// server config under this lock, so a reload racing a shutdown cannot reopen the endpoint.
    pub(super) accepting: Mutex<bool>,
    pub(super) transport: Arc<TransportConfig>,
    pub(super) options: PeerOptions,
    pub(super) stats: PeerStats,
    pub(super) reloads: ReloadCounts,
    /// Outgoing connections by the peer's node id.
    peers: Mutex<HashMap<String, Arc<PeerSlot>>>,
}

/// The cached connection to one peer, and a lock so concurrent callers wait for one dial instead
/// of each opening a connection.
/// Longest a QUIC handshake may take before the dial is given up.
const DIAL_TIMEOUT: Duration = Duration::from_millis(1500);
/// After a failed dial, calls to the same address fail at once for this long instead of each
/// waiting on a dial of its own. Short: a peer that restarts must be reached again well within a
/// Raft election timeout, or it campaigns and unseats the leader.
const REDIAL_AFTER: Duration = Duration::from_millis(200);

#[derive(Default)]
struct PeerSlot {
    /// The connection and the TLS generation it was dialled under.
    conn: Mutex<Option<(Connection, u64)>>,
    dialling: tokio::sync::Mutex<()>,
    /// The last failed dial: dials queued behind it for the same address fail at once instead of
    /// each waiting out a handshake to a dead peer in turn.
    failed: Mutex<Option<(SocketAddr, tokio::time::Instant)>>,
}

impl PeerSlot {
    /// The cached connection, if it is still open, still to the address gossip gives now, and
    /// made with the current TLS material.
    fn live(&self, addr: SocketAddr, generation: u64) -> Option<Connection> {
        let conn = lock(&self.conn);
        conn.as_ref()
            .filter(|(c, g)| *g == generation && c.close_reason().is_none() && c.remote_address() == addr)
            .map(|(c, _)| c.clone())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent even if a holder panicked: every update is one assignment.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PeerPlane {
    /// Bind the peer endpoint with default options.
    pub async fn bind(addr: SocketAddr, tls: PeerTls) -> Result<PeerPlane, PeerError> {
        PeerPlane::bind_with(addr, tls, PeerOptions::default()).await
    }

    pub async fn bind_with(
        addr: SocketAddr,
        tls: PeerTls,
        options: PeerOptions,
    ) -> Result<PeerPlane, PeerError> {
        let transport = Arc::new(transport_config(&options)?);
        let mut server = quinn::ServerConfig::with_crypto(tls.quic_server_config());
        server.transport_config(transport.clone());
        let endpoint = Endpoint::server(server, addr).map_err(|source| PeerError::Bind { addr, source })?;
        let local_addr = endpoint.local_addr().map_err(|source| PeerError::Bind { addr, source })?;
        Ok(PeerPlane {
            inner: Arc::new(Inner {
                endpoint,
                local_addr,
                id: tls.id().to_string(),
                tls: ArcSwap::from_pointee(tls),
                generation: watch::channel(0).0,
                accepting: Mutex::new(true),
                transport,
                options,
                stats: PeerStats::default(),
                reloads: ReloadCounts::default(),
                peers: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// This node's id, from its certificate.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The TLS material in use now.
    pub fn tls(&self) -> Arc<PeerTls> {
        self.inner.tls.load_full()
    }

    /// Use `tls` from now on: new incoming connections get its certificate and are checked
    /// against its trust bundle, new dials present and check it. Established connections are not
    /// cut: cached outgoing ones are retired (the next call redials; calls still running on them
    /// finish, then quinn closes them), and incoming ones whose caller the new bundle no longer
    /// trusts are closed by their serving loop. Returns how many outgoing connections were retired.
    pub fn replace_tls(&self, tls: PeerTls) -> Result<usize, PeerError> {
        if tls.id() != self.inner.id {
            return Err(PeerError::Tls(TlsError::WrongNode {
                what: "the new TLS material".into(),
                expected: self.inner.id.clone(),
                found: tls.id().to_string(),
            }));
        }
        let mut server = quinn::ServerConfig::with_crypto(tls.quic_server_config());
        server.transport_config(self.inner.transport.clone());
        {
            let accepting = lock(&self.inner.accepting);
            if *accepting {
                self.inner.endpoint.set_server_config(Some(server));
            }
            self.inner.tls.store(Arc::new(tls));
        }
        self.inner.generation.send_modify(|g| *g += 1);
        let slots: Vec<Arc<PeerSlot>> = lock(&self.inner.peers).values().cloned().collect();
        // Dropping our handle is enough: quinn closes a connection once no handle and no stream
        // of it is left, so a call in flight on it still completes.
        let retired = slots.iter().filter(|slot| lock(&slot.conn).take().is_some()).count();
        Ok(retired)
    }

    /// Stop taking new connections (shutdown). A later `replace_tls` does not undo it.
    pub(super) fn stop_accepting(&self) {
        let mut accepting = lock(&self.inner.accepting);
        *accepting = false;
        self.inner.endpoint.set_server_config(None);
    }

    /// The bound address (with the real port when bound on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    pub fn stats(&self) -> &PeerStats {
        &self.inner.stats
    }

    pub fn options(&self) -> &PeerOptions {
        &self.inner.options
    }

    /// Unary RPC: send one request frame (`kind` + `payload`), read one reply frame.
    ///
    /// `expect_id` is the node id gossip says lives at `addr`; the handshake fails unless the
    /// peer's certificate carries exactly that id. `timeout` bounds everything, dialling included.
    pub async fn call(
        &self,
        expect_id: &str,
        addr: SocketAddr,
        kind: u8,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, PeerError> {
        let exchange = async {
            let (mut send, mut recv) = self.open_stream(expect_id, addr).await?;
            let fail = |e| self.count(PeerError::frame(expect_id, addr, e));
            frame::write_request(&mut send, kind, payload).await.map_err(fail)?;
            // Only errors if the stream is already closed, which the read below reports better.
            let _ = send.finish();
            match frame::read_frame(&mut recv, self.inner.options.max_frame).await {
                Ok(Some(reply)) => Ok(reply),
                Ok(None) => Err(PeerError::NoReply { peer: expect_id.to_string(), addr }),
                Err(e) => {
                    if e.reset_code().is_some() {
                        PeerStats::bump(&self.inner.stats.frames_rejected);
                    }
                    Err(fail(e))
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(PeerError::Timeout { peer: expect_id.to_string(), addr, after: timeout }))
    }

    /// A new bi-directional stream to the peer, on the cached connection (dialled if needed), for
    /// RPCs that stream: write and read frames with `frame::write_frame` / `frame::read_frame`.
    pub async fn open_stream(
        &self,
        expect_id: &str,
        addr: SocketAddr,
    ) -> Result<(SendStream, RecvStream), PeerError> {
        let (conn, fresh) = self.connection(expect_id, addr).await?;
        match conn.open_bi().await {
            Ok(streams) => Ok(streams),
            // A cached connection may have died since we last used it without us noticing yet
            // (say the peer restarted); one redial is worth it. A fresh one failing is the answer.
            Err(_) if !fresh => {
                let (conn, _) = self.connection(expect_id, addr).await?;
                conn.open_bi().await.map_err(|e| self.count(PeerError::connection(expect_id, addr, e)))
            }
            Err(e) => Err(self.count(PeerError::connection(expect_id, addr, e))),
        }
    }

    /// Measured round-trip time of the cached connection to `id`, if there is a live one.
    pub fn rtt(&self, id: &str) -> Option<Duration> {
        let slot = lock(&self.inner.peers).get(id)?.clone();
        let conn = lock(&slot.conn);
        conn.as_ref().filter(|(c, _)| c.close_reason().is_none()).map(|(c, _)| c.rtt())
    }

    /// Close the cached connection to `id` (gossip says the node is dead): every stream on it
    /// fails at once instead of waiting out the idle timeout, and the next call redials.
    pub fn drop_peer(&self, id: &str) {
        let slot = lock(&self.inner.peers).get(id).cloned();
        if let Some(slot) = slot {
            if let Some((conn, _)) = lock(&slot.conn).take() {
                conn.close(VarInt::from_u32(0), b"peer reported dead");
            }
        }
    }

    /// Close every connection and stop the endpoint; waits briefly so peers are told.
    pub async fn close(&self) {
        self.stop_accepting();
        self.inner.endpoint.close(VarInt::from_u32(0), b"node shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
    }

    /// The cached connection to `id` at `addr`, dialling it if needed. `true` if just dialled.
    async fn connection(&self, id: &str, addr: SocketAddr) -> Result<(Connection, bool), PeerError> {
        let slot = lock(&self.inner.peers).entry(id.to_string()).or_default().clone();
        if let Some(conn) = slot.live(addr, *self.inner.generation.borrow()) {
            return Ok((conn, false));
        }
        // The dial runs in a task of its own, holding the slot's dial lock: a caller that gives up
        // (say a Raft heartbeat with a 100 ms budget) must not abort a handshake that the next
        // call can use, or a slow handshake would never complete.
        let plane = self.clone();
        let id = id.to_string();
        let dial = tokio::spawn(async move {
            let _dialling = slot.dialling.lock().await;
            // Someone else may have dialled while we waited.
            let generation = *plane.inner.generation.borrow();
            if let Some(conn) = slot.live(addr, generation) {
                return Ok((conn, false));
            }
            let recent_failure = *lock(&slot.failed);
            if let Some((_, at)) = recent_failure.filter(|(a, at)| *a == addr && at.elapsed() < REDIAL_AFTER)
            {
                return Err(PeerError::RecentlyUnreachable { peer: id, addr, ago: at.elapsed() });
            }
            // Bounded: QUIC ignores ICMP, so a handshake to a dead address would otherwise hold
            // the dial lock until the idle timeout, and a peer back on a new address would wait.
            let dialled = match tokio::time::timeout(DIAL_TIMEOUT, plane.dial(&id, addr)).await {
                Ok(result) => result,
                Err(_) => Err(PeerError::Timeout { peer: id, addr, after: DIAL_TIMEOUT }),
            };
            let conn = match dialled {
                Ok(conn) => conn,
                Err(e) => {
                    *lock(&slot.failed) = Some((addr, tokio::time::Instant::now()));
                    return Err(e);
                }
            };
            // Dialled with the material of `generation` (or newer): a reload during the handshake
            // makes it stale at once, so the next call dials again with the new material.
            *lock(&slot.conn) = Some((conn.clone(), generation));
            Ok((conn, true))
        });
        match dial.await {
            Ok(result) => result,
            // Only if the runtime is shutting down.
            Err(_) => Err(PeerError::NoReply { peer: String::new(), addr }),
        }
    }

    async fn dial(&self, id: &str, addr: SocketAddr) -> Result<Connection, PeerError> {
        let crypto = self.inner.tls.load().quic_client_config(id)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(self.inner.transport.clone());
        let connecting = self
            .inner
            .endpoint
            .connect_with(config, addr, SERVER_NAME)
            .map_err(|source| PeerError::Dial { peer: id.to_string(), addr, source })?;
        match connecting.await {
            Ok(conn) => {
                PeerStats::bump(&self.inner.stats.connections_opened);
                Ok(conn)
            }
            Err(source) => {
                PeerStats::bump(&self.inner.stats.handshakes_failed_outbound);
                Err(PeerError::Handshake { peer: id.to_string(), addr, source })
            }
        }
    }

    /// Count a handshake failure that surfaced after the dial (the server refused our
    /// certificate once our side had finished its part of the handshake).
    fn count(&self, e: PeerError) -> PeerError {
        if e.is_handshake() {
            PeerStats::bump(&self.inner.stats.handshakes_failed_outbound);
        }
        e
    }
}

fn transport_config(options: &PeerOptions) -> Result<TransportConfig, PeerError> {
    let idle = IdleTimeout::try_from(options.idle_timeout)
        .map_err(|e| PeerError::InvalidOption { what: "idle_timeout", why: e.to_string() })?;
    if options.keep_alive >= options.idle_timeout {
        return Err(PeerError::InvalidOption {
            what: "keep_alive",
            why: format!(
                "{:?} must be shorter than the idle timeout {:?} to keep links up",
                options.keep_alive, options.idle_timeout
            ),
        });
    }
    let mut transport = TransportConfig::default();
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(options.keep_alive))
        .max_concurrent_bidi_streams(VarInt::from_u32(options.max_concurrent_streams))
        // Peers never open unidirectional streams.
        .max_concurrent_uni_streams(VarInt::from_u32(0));
    Ok(transport)
}
