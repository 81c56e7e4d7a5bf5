//! The [`Gossip`] handle: starts chitchat, publishes our facts, serves the membership view,
//! and leaves the cluster.
//!
//! Owns the lifecycle (start, leave, drop). The key schema, the view merge and the refresher
//! live in their own modules; this file only wires them to chitchat.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use chitchat::transport::Transport;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, ListenerHandle, ProtocolVersion};
use tokio::sync::{watch, Mutex, Notify};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::GossipConfig;
use crate::detector;
use crate::error::GossipError;
use crate::facts::NodeFacts;
use crate::generation::fresh_generation;
use crate::membership::Membership;
use crate::publish::{self, LocalState};
use crate::refresh::{self, Shared};
use crate::transport::PreBoundUdp;

/// Gossip rounds spent announcing our departure before going silent: enough for direct peers
/// to hear it even if one exchange is lost, short enough not to hold up a shutdown.
const LEAVE_ROUNDS: u32 = 2;

/// A running gossip participant. Dropping it stops gossip abruptly (peers detect the silence);
/// [`Gossip::leave`] announces the departure first.
pub struct Gossip {
    shared: Arc<Shared>,
    /// `None` once `leave` has shut chitchat down.
    chitchat: Option<ChitchatHandle>,
    /// Keeps the key-change subscription alive; dropping it unsubscribes.
    _key_listener: ListenerHandle,
    refresher: JoinHandle<()>,
    local_addr: SocketAddr,
    gossip_interval: Duration,
}

impl Gossip {
    /// Binds the UDP socket, starts chitchat with our facts and starts the membership refresher.
    pub async fn start(cfg: GossipConfig, facts: NodeFacts) -> Result<Gossip, GossipError> {
        let local = Self::checked_local(&cfg, facts)?;
        let (transport, local_addr) = PreBoundUdp::bind(cfg.listen).await?;
        Self::start_with(cfg, local, &transport, local_addr).await
    }

    /// Validates the config and our initial facts before anything is bound.
    pub(crate) fn checked_local(cfg: &GossipConfig, facts: NodeFacts) -> Result<LocalState, GossipError> {
        cfg.validate()?;
        let (local, encoded) = LocalState::new(cfg.cluster_id.clone(), facts);
        match encoded.rejected.into_iter().next() {
            Some(err) => Err(GossipError::InvalidFacts(err)),
            None => Ok(local),
        }
    }

    /// Starts chitchat on `transport`, which opens `local_addr`, and the membership refresher.
    pub(crate) async fn start_with(
        cfg: GossipConfig,
        local: LocalState,
        transport: &dyn Transport,
        local_addr: SocketAddr,
    ) -> Result<Gossip, GossipError> {
        let self_id = ChitchatId::new(cfg.node_id.clone(), fresh_generation(), cfg.advertise_for(local_addr));
        let chitchat_config = ChitchatConfig {
            chitchat_id: self_id.clone(),
            cluster_id: cfg.cluster_id.clone(),
            gossip_interval: cfg.gossip_interval,
            listen_addr: local_addr,
            seed_nodes: cfg.seeds.clone(),
            failure_detector_config: detector::failure_detector_config(
                cfg.gossip_interval,
                cfg.dead_after,
                cfg.gc_grace,
            ),
            marked_for_deletion_grace_period: cfg.gc_grace,
            catchup_callback: None,
            extra_liveness_predicate: None,
            // V0 (uncompressed digests): our clusters are tens of nodes, where compressing the
            // digest saves little, and V0 is what every chitchat version decodes.
            protocol_version: ProtocolVersion::V0,
        };
        let initial_keys = local.keys().clone().into_iter().collect();
        let handle = spawn_chitchat(chitchat_config, initial_keys, transport)
            .await
            .map_err(|e| GossipError::Start(e.into()))?;
        info!(node = %cfg.node_id, generation = self_id.generation_id, %local_addr, "gossip started");

        let (membership, _) = watch::channel(Arc::new(Membership::default()));
        let refresh_now = Arc::new(Notify::new());
        // Key changes are applied inside chitchat when a delta arrives, between its liveness
        // checks: listening to them shows a peer's update or departure without waiting a round.
        let wake = refresh_now.clone();
        let key_listener =
            handle.chitchat().lock().await.subscribe_event("", move |_event| wake.notify_one());
        let shared = Arc::new(Shared {
            serial: Mutex::new(()),
            chitchat: handle.chitchat(),
            local: Mutex::new(local),
            self_id,
            cluster_id: cfg.cluster_id,
            refresh_now,
            membership,
            exhausted_reported: AtomicBool::new(false),
        });
        // The first view (ourselves) is in place before anyone can watch.
        shared.refresh().await;
        let refresher =
            tokio::spawn(refresh::run(shared.clone(), cfg.gossip_interval, handle.termination_watcher()));
        Ok(Gossip {
            shared,
            chitchat: Some(handle),
            _key_listener: key_listener,
            refresher,
            local_addr,
            gossip_interval: cfg.gossip_interval,
        })
    }

    /// The UDP address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Our incarnation (chitchat generation id): unix ms at start, higher after every restart.
    pub fn generation(&self) -> u64 {
        self.shared.self_id.generation_id
    }

    /// Changes our facts; only the keys whose value changed are re-published. Our own entry in
    /// the view shows the change when this returns.
    pub async fn update(&self, f: impl FnOnce(&mut NodeFacts)) {
        let mut local = self.shared.local.lock().await;
        if !local.update(f) {
            return;
        }
        let mut chitchat = self.shared.chitchat.lock().await;
        if let Err(err) = publish::reconcile(chitchat.self_node_state(), local.keys()) {
            warn!(%err, "facts update not published");
        }
        drop(chitchat);
        drop(local);
        self.shared.refresh().await;
    }

    /// The membership view, updated on every membership or fact change.
    pub fn watch(&self) -> watch::Receiver<Arc<Membership>> {
        self.shared.membership.subscribe()
    }

    /// The current membership view (the value `watch` would show now).
    pub fn membership(&self) -> Arc<Membership> {
        self.shared.membership.borrow().clone()
    }

    /// Every key and value gossip holds, for every node, as `(node id, key, value)`: what any
    /// member of the cluster (or anyone who joins it) can read. For inspection and tests; the
    /// typed view is [`Gossip::membership`].
    pub async fn raw_key_values(&self) -> Vec<(String, String, String)> {
        let chitchat = self.shared.chitchat.lock().await;
        let mut out = Vec::new();
        for (id, state) in chitchat.node_states() {
            for (k, v) in state.key_values() {
                out.push((id.node_id.to_string(), k.to_string(), v.to_string()));
            }
        }
        out
    }

    /// How long `node_id` (its newest incarnation) may stay silent before being declared dead,
    /// per the failure detector's current estimate. `None` for ourselves or unknown nodes.
    pub async fn failure_detection_timeout(&self, node_id: &str) -> Option<Duration> {
        let chitchat = self.shared.chitchat.lock().await;
        let newest = chitchat
            .node_states()
            .keys()
            .filter(|id| &*id.node_id == node_id)
            .max_by_key(|id| id.generation_id)?;
        chitchat.failure_detection_timeout(newest)
    }

    /// Announces our departure (`left`, `draining`) and pushes it to every known peer for a
    /// couple of rounds; peers report us not live as soon as they hear it. Gossip keeps running
    /// (a node that is draining stays reachable) until [`Gossip::leave`] or drop.
    pub async fn announce_leave(&self) {
        let Some(handle) = self.chitchat.as_ref() else { return };
        let peers: Vec<SocketAddr> = {
            let mut local = self.shared.local.lock().await;
            local.leave();
            let mut chitchat = self.shared.chitchat.lock().await;
            if let Err(err) = publish::reconcile(chitchat.self_node_state(), local.keys()) {
                warn!(%err, "departure not published; peers will detect the silence instead");
            }
            let me = &self.shared.self_id;
            chitchat.node_states().keys().filter(|id| *id != me).map(|id| id.gossip_advertise_addr).collect()
        };
        self.shared.refresh().await;
        for _ in 0..LEAVE_ROUNDS {
            // Direct SYNs rather than waiting for random peer selection: each peer answers, and
            // our ACK carries the `left` key to it within one round trip.
            for addr in &peers {
                if let Err(err) = handle.gossip(*addr) {
                    warn!(%err, "could not announce departure");
                }
            }
            tokio::time::sleep(self.gossip_interval).await;
        }
    }

    /// Announces our departure, then shuts chitchat down.
    pub async fn leave(mut self) {
        self.announce_leave().await;
        let Some(handle) = self.chitchat.take() else { return };
        self.refresher.abort();
        if let Err(err) = handle.shutdown().await {
            warn!(%err, "chitchat did not shut down cleanly");
        }
        info!(node = %self.shared.self_id.node_id, "left the cluster");
    }
}

impl Drop for Gossip {
    fn drop(&mut self) {
        self.refresher.abort();
        if let Some(handle) = self.chitchat.take() {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<T: Send>(_: &T) {}

    #[tokio::test]
    async fn the_handle_and_its_futures_can_move_between_tasks() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Gossip>();
        let cfg = GossipConfig::new("us-1", "c", SocketAddr::from(([127, 0, 0, 1], 0)));
        let start = Gossip::start(cfg, NodeFacts::default());
        send(&start);
        let gossip = start.await.unwrap();
        let update = gossip.update(|f| f.load = 1);
        send(&update);
        update.await;
        assert_eq!(gossip.membership().get("us-1").map(|m| m.facts.load), Some(1));
        let leave = gossip.leave();
        send(&leave);
    }

    #[tokio::test]
    async fn invalid_initial_facts_are_refused() {
        let cfg = GossipConfig::new("us-1", "c", SocketAddr::from(([127, 0, 0, 1], 0)));
        let facts = NodeFacts { raft_role: "emperor".to_owned(), ..NodeFacts::default() };
        assert!(matches!(Gossip::start(cfg, facts).await, Err(GossipError::InvalidFacts(_))));
    }
}
