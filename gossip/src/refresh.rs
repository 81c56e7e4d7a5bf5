//! Keeps the membership watch current.
//!
//! Owns the state shared by the [`crate::Gossip`] handle and its background refresher, and the
//! refresher loop. The view is rebuilt when chitchat applies a key change (a peer's facts, a
//! `left` announcement), when its live set changes, and once per
//! gossip interval (garbage collection and dead nodes are not reported otherwise). It is only
//! sent to watchers when it differs from the previous one. Our own fact changes are refreshed by
//! [`crate::Gossip::update`] itself, so the view shows them when it returns.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chitchat::{Chitchat, ChitchatId};
use tokio::sync::{watch, Mutex, Notify};
use tokio::time::MissedTickBehavior;
use tracing::{error, warn};

use crate::keys;
use crate::membership::{self, Incarnation, Member, Membership};
use crate::publish::{self, LocalState};

/// Lock order: `serial`, then `local`, then `chitchat`.
pub(crate) struct Shared {
    /// Serialises build-and-send, so a view built before a change can never be sent after one
    /// built from it.
    pub serial: Mutex<()>,
    pub chitchat: Arc<Mutex<Chitchat>>,
    pub local: Mutex<LocalState>,
    pub self_id: ChitchatId,
    pub cluster_id: String,
    /// Wakes the refresher: chitchat applied a key change.
    pub refresh_now: Arc<Notify>,
    pub membership: watch::Sender<Arc<Membership>>,
    /// Set once the version-exhaustion error has been logged, so it is logged once.
    pub exhausted_reported: AtomicBool,
}

impl Shared {
    /// Builds the current view and sends it to watchers if it differs from the last one.
    pub(crate) async fn refresh(&self) {
        let _serial = self.serial.lock().await;
        let view = self.snapshot().await;
        self.publish(view);
    }

    /// Builds the current view; also re-asserts our own keys (see [`crate::publish`]).
    pub(crate) async fn snapshot(&self) -> Membership {
        let local = self.local.lock().await;
        let mut chitchat = self.chitchat.lock().await;
        match publish::reconcile(chitchat.self_node_state(), local.keys()) {
            Ok(0) => {}
            Ok(overwritten) => {
                warn!(keys = overwritten, "someone else wrote to our gossip state; restored our values");
            }
            Err(err) => {
                if !self.exhausted_reported.swap(true, Ordering::Relaxed) {
                    error!(%err, "cannot restore our gossip state");
                }
            }
        }
        let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
        let peers: Vec<Incarnation> = chitchat
            .node_states()
            .iter()
            .filter(|(id, _)| **id != self.self_id)
            .map(|(id, state)| Incarnation {
                node_id: id.node_id.to_string(),
                generation: id.generation_id,
                gossip_addr: id.gossip_advertise_addr,
                live: live.contains(id),
                kvs: copy_schema_keys(state),
            })
            .collect();
        drop(chitchat);
        let decoded = local.as_seen_by_peers();
        drop(local);
        let me = Member {
            id: self.self_id.node_id.to_string(),
            live: true,
            facts: decoded.facts,
            gossip_addr: self.self_id.gossip_advertise_addr,
            generation: self.self_id.generation_id,
        };
        membership::build(&self.cluster_id, me, peers)
    }

    fn publish(&self, view: Membership) {
        self.membership.send_if_modified(|current| {
            if **current == view {
                return false;
            }
            *current = Arc::new(view);
            true
        });
    }
}

/// Copies only the keys the schema reads, and a bounded number of services: a peer (or a
/// forger) holding a million keys costs us no more than a well-behaved one.
fn copy_schema_keys(state: &chitchat::NodeState) -> Vec<(String, String)> {
    let facts = keys::FACT_KEYS.iter().filter_map(|k| state.get(k).map(|v| (k.to_string(), v.to_owned())));
    let services = state
        .iter_prefix(keys::SERVICE_PREFIX)
        .take(keys::MAX_SERVICES)
        .map(|(k, v)| (k.to_owned(), v.value.clone()));
    facts.chain(services).collect()
}

/// Runs until aborted, or until chitchat stops on its own (`stopped` resolves): then peers are
/// reported not live, since we can no longer hear from them.
pub(crate) async fn run(
    shared: Arc<Shared>,
    interval: Duration,
    stopped: impl Future<Output = anyhow::Result<()>>,
) {
    let mut live_changes = shared.chitchat.lock().await.live_nodes_watcher();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            result = &mut stopped => {
                error!(?result, "chitchat stopped; reporting every peer not live");
                let _serial = shared.serial.lock().await;
                let mut view = shared.snapshot().await;
                let me = shared.self_id.node_id.as_ref();
                view.members.values_mut().filter(|m| m.id != me).for_each(|m| m.live = false);
                shared.publish(view);
                return;
            }
            changed = live_changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tick.tick() => {}
            _ = shared.refresh_now.notified() => {}
        }
        shared.refresh().await;
    }
}
