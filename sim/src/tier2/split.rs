//! [`SplitNet`]: network splits for the Raft transport. `MemTransport` can only cut one node off
//! from everyone; a split keeps each side talking among itself, which is what a region losing
//! its links looks like — and what lets the minority side keep a stale leader while the majority
//! elects a new one.
//!
//! Wraps each node's `MemTransport` endpoint; owns nothing but the current sides.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;

use meridian_raft_store::BoxFuture;
use meridian_raft_store::MeridianNode;
use meridian_raft_store::RaftTransport;
use meridian_raft_store::TransportError;

/// The current split, shared by every node's endpoint. Cheap to clone.
#[derive(Clone, Default)]
pub struct SplitNet {
    /// Node ids on the minority side; empty when the network is whole.
    minority: Arc<Mutex<BTreeSet<String>>>,
}

impl SplitNet {
    /// Wraps `inner`, the endpoint of node `from`, so that requests across the split fail.
    pub fn endpoint(&self, from: &str, inner: Arc<dyn RaftTransport>) -> Arc<dyn RaftTransport> {
        Arc::new(SplitEndpoint { from: from.to_string(), inner, net: self.clone() })
    }

    /// Puts `minority` on one side and everyone else on the other.
    pub fn split(&self, minority: impl IntoIterator<Item = String>) {
        *self.sides() = minority.into_iter().collect();
    }

    pub fn heal(&self) {
        self.sides().clear();
    }

    /// Whether `a` and `b` are on the same side.
    pub fn same_side(&self, a: &str, b: &str) -> bool {
        let sides = self.sides();
        sides.contains(a) == sides.contains(b)
    }

    fn sides(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // Every update replaces or clears the whole set, so a panicked holder left it coherent.
        self.minority.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct SplitEndpoint {
    from: String,
    inner: Arc<dyn RaftTransport>,
    net: SplitNet,
}

impl SplitEndpoint {
    fn check(&self, target: &str) -> Result<(), TransportError> {
        if self.net.same_side(&self.from, target) {
            return Ok(());
        }
        Err(TransportError::Unreachable { peer: target.to_string(), reason: "network split".into() })
    }
}

impl RaftTransport for SplitEndpoint {
    fn call(
        &self,
        target: &MeridianNode,
        request: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        let target = target.clone();
        Box::pin(async move {
            self.check(&target.id)?;
            let reply = self.inner.call(&target, request).await?;
            // A split that began while the request was in flight loses the reply.
            self.check(&target.id)?;
            Ok(reply)
        })
    }
}
