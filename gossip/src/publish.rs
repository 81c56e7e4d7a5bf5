//! What we publish about ourselves, and keeping chitchat's copy of it exact.
//!
//! Owns our local facts and the keys they encode to. Chitchat's state for our own node is
//! writable by anyone on the network (a forged delta carrying our id with a higher version is
//! applied like any other), so [`reconcile`] runs on every update and every refresh: it rewrites
//! any of our keys that differ and deletes keys we never set. Rewritten keys take a version
//! above the forged one, so the correction wins everywhere.

use std::collections::BTreeMap;

use chitchat::NodeState;
use tracing::warn;

use crate::facts::NodeFacts;
use crate::keys::{self, Decoded, Encoded};

pub(crate) struct LocalState {
    cluster_id: String,
    facts: NodeFacts,
    left: bool,
    /// The encoding of the fields above: exactly the keys our node state must hold.
    keys: BTreeMap<String, String>,
}

impl LocalState {
    /// Our state at start; the caller decides what to do with rejected facts.
    pub(crate) fn new(cluster_id: String, facts: NodeFacts) -> (LocalState, Encoded) {
        let encoded = keys::encode(&cluster_id, &facts, false);
        let state = LocalState { cluster_id, facts, left: false, keys: encoded.keys.clone() };
        (state, encoded)
    }

    pub(crate) fn keys(&self) -> &BTreeMap<String, String> {
        &self.keys
    }

    /// Applies `f` to our facts; returns false when nothing changed. Facts the schema rejects
    /// are logged and left unpublished: an update cannot fail, and peers would drop them anyway.
    pub(crate) fn update(&mut self, f: impl FnOnce(&mut NodeFacts)) -> bool {
        let before = self.facts.clone();
        f(&mut self.facts);
        if self.facts == before {
            return false;
        }
        self.re_encode();
        true
    }

    /// Marks us as departing: `left` stops peers counting us live, `draining` stops new work.
    pub(crate) fn leave(&mut self) {
        self.left = true;
        self.facts.draining = true;
        self.re_encode();
    }

    /// Our facts as peers read them (rejected values absent), for our own entry in the view.
    pub(crate) fn as_seen_by_peers(&self) -> Decoded {
        keys::decode("self", self.keys.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    fn re_encode(&mut self) {
        let encoded = keys::encode(&self.cluster_id, &self.facts, self.left);
        for err in &encoded.rejected {
            warn!(%err, "node fact not published");
        }
        self.keys = encoded.keys;
    }
}

/// No honest node reaches this version (it takes 2^62 key changes). A state above it was pushed
/// there by a forged delta, and chitchat would overflow (and panic) on our next write.
const MAX_HONEST_VERSION: u64 = 1 << 62;

/// Our node state's version counter was forged close to its limit: we can no longer publish
/// under this generation. Only a restart (a new generation) recovers.
#[derive(Debug, thiserror::Error)]
#[error("our gossip state was forged to version {0}; facts can no longer be published until restart")]
pub(crate) struct VersionExhausted(pub u64);

/// Makes `state` (chitchat's copy of our node) hold exactly `keys`. Unchanged keys are left
/// alone, so only changes are gossiped. Returns how many keys were written or deleted.
pub(crate) fn reconcile(
    state: &mut NodeState,
    keys: &BTreeMap<String, String>,
) -> Result<usize, VersionExhausted> {
    if state.max_version() >= MAX_HONEST_VERSION {
        return Err(VersionExhausted(state.max_version()));
    }
    let mut changed = 0;
    for (key, value) in keys {
        if state.get(key) != Some(value.as_str()) {
            state.set(key, value);
            changed += 1;
        }
    }
    let strays: Vec<String> =
        state.key_values().filter(|(k, _)| !keys.contains_key(*k)).map(|(k, _)| k.to_owned()).collect();
    for key in &strays {
        state.delete(key);
    }
    Ok(changed + strays.len())
}
