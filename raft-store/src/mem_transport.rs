//! An in-process [`RaftTransport`] for tests and the simulator: a registry of [`RaftStore`]s by
//! Meridian node id, with switches to cut nodes off (partitions) and to add latency.
//!
//! Requests still go through `handle_rpc` as bytes, so encoding is exercised as over QUIC.
//! The registry holds store handles (and stores hold their endpoints): `unregister` a node
//! before dropping it to break that cycle.

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;
use std::time::Duration;

use crate::error::TransportError;
use crate::node::MeridianNode;
use crate::store::RaftStore;
use crate::transport::BoxFuture;
use crate::transport::RaftTransport;

/// The in-memory network shared by all nodes of a test. Cheap to clone.
#[derive(Clone, Default)]
pub struct MemTransport {
    net: Arc<Mutex<MemNet>>,
}

#[derive(Default)]
struct MemNet {
    stores: HashMap<String, RaftStore>,
    /// Nodes that can neither send nor receive.
    cut: HashSet<String>,
    /// One-way delay added to every request.
    delay: Duration,
}

impl MemTransport {
    pub fn new() -> Self {
        Self::default()
    }

    fn net(&self) -> MutexGuard<'_, MemNet> {
        // The map stays consistent even if a holder panicked: every update is a single insert
        // or remove.
        self.net.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The transport a node with Meridian id `from` passes to [`RaftStore::open`]; it knows its
    /// sender, so cutting `from` off silences its requests too.
    pub fn endpoint(&self, from: &str) -> Arc<dyn RaftTransport> {
        Arc::new(MemEndpoint { from: from.to_string(), net: self.clone() })
    }

    /// Makes `store` reachable under its node id (replacing an earlier store of that id).
    pub fn register(&self, store: RaftStore) {
        let id = store.node().id.clone();
        self.net().stores.insert(id, store);
    }

    /// Makes node `id` unreachable and returns its store.
    pub fn unregister(&self, id: &str) -> Option<RaftStore> {
        self.net().stores.remove(id)
    }

    /// Cuts node `id` off: its requests and requests to it fail as unreachable.
    pub fn cut_off(&self, id: &str) {
        self.net().cut.insert(id.to_string());
    }

    /// Reconnects a node cut off with [`Self::cut_off`].
    pub fn reconnect(&self, id: &str) {
        self.net().cut.remove(id);
    }

    pub fn is_cut_off(&self, id: &str) -> bool {
        self.net().cut.contains(id)
    }

    /// Adds `delay` before every request is delivered (a crude WAN).
    pub fn set_delay(&self, delay: Duration) {
        self.net().delay = delay;
    }
}

/// One node's view of the [`MemTransport`].
struct MemEndpoint {
    from: String,
    net: MemTransport,
}

impl MemEndpoint {
    fn route(&self, target: &str) -> Result<(RaftStore, Duration), TransportError> {
        let net = self.net.net();
        let unreachable = |reason: &str| TransportError::Unreachable {
            peer: target.to_string(),
            reason: reason.to_string(),
        };
        if net.cut.contains(&self.from) {
            return Err(unreachable("sender is cut off"));
        }
        if net.cut.contains(target) {
            return Err(unreachable("target is cut off"));
        }
        match net.stores.get(target) {
            Some(store) => Ok((store.clone(), net.delay)),
            None => Err(unreachable("no such node")),
        }
    }
}

impl RaftTransport for MemEndpoint {
    fn call(
        &self,
        target: &MeridianNode,
        request: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        let target = target.id.clone();
        Box::pin(async move {
            let (store, delay) = self.route(&target)?;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let reply = store.handle_rpc(&request).await;
            // A partition that began while the request was in flight loses the reply.
            self.route(&target)?;
            Ok(reply)
        })
    }
}
