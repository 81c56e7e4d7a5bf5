//! Invariant 4 — the quota ledger never over-grants and never changes its mind: on every node's
//! applied ledger, for each quota, sampled key and decided window, the shares of all nodes add
//! up to at most the limit; and every node that has decided a window holds the same shares for
//! it as every other node did, at any time.
//!
//! A ledger forgets windows well behind its newest round, so each node is checked only on the
//! windows it must still answer exactly: from `sealed_through - LEASE_AHEAD_MS / window_ms` (the
//! current window of the round that sealed it) through `sealed_through`, minus the windows
//! before the quota's first round (never decided: every lease there has expired).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;

use meridian_raft_store::quota::Lease;
use meridian_raft_store::quota::QuotaState;
use meridian_raft_store::quota::QuotaTerms;
use meridian_raft_store::quota::LEASE_AHEAD_MS;

use super::sample::NodeSample;

/// What one node may admit for one key in a decided window, as compared across nodes. (`Lease`'s
/// `hot` flag is advice to report demand; it may change after the window is decided.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grant {
    Share(u64),
    NotParticipant,
    /// Anything else inside the decided range (expired, unknown) is itself suspicious.
    Other(&'static str),
}

impl From<Lease> for Grant {
    fn from(lease: Lease) -> Self {
        match lease {
            Lease::Share { share, .. } => Grant::Share(share),
            Lease::NotParticipant => Grant::NotParticipant,
            Lease::Expired => Grant::Other("expired"),
            Lease::Unknown => Grant::Other("unknown"),
        }
    }
}

pub struct QuotaLedgerCheck {
    ids: Vec<String>,
    terms: Vec<QuotaTerms>,
    keys: Vec<String>,
    /// (quota, window) → grants per key and node, as first seen decided, and by whom. Kept for
    /// the whole run (a few hundred windows), so a node that comes back late is compared too.
    decided: BTreeMap<(String, u64), (Vec<Grant>, usize)>,
    /// The ledger each node was last checked on: checked again only when it changes.
    last: Vec<Option<Arc<QuotaState>>>,
    /// (quota, window) already reported.
    reported: BTreeSet<(String, u64)>,
    windows_checked: u64,
    violations: Vec<String>,
}

impl QuotaLedgerCheck {
    pub fn new(ids: Vec<String>, terms: Vec<QuotaTerms>, keys: Vec<String>) -> Self {
        let last = vec![None; ids.len()];
        Self {
            ids,
            terms,
            keys,
            decided: BTreeMap::new(),
            last,
            reported: BTreeSet::new(),
            windows_checked: 0,
            violations: Vec::new(),
        }
    }

    pub fn observe(&mut self, at_ms: u64, samples: &[NodeSample]) {
        for s in samples {
            if self.last[s.index].as_ref().is_some_and(|last| Arc::ptr_eq(last, &s.quota)) {
                continue;
            }
            self.last[s.index] = Some(s.quota.clone());
            for t in self.terms.clone() {
                self.check_ledger(at_ms, s.index, &s.quota, &t);
            }
        }
    }

    fn check_ledger(&mut self, at_ms: u64, node: usize, state: &QuotaState, t: &QuotaTerms) {
        let Some(sealed) = state.ledger(&t.name).and_then(|l| l.sealed_through) else { return };
        let from = sealed.saturating_sub(LEASE_AHEAD_MS / t.window_ms);
        for window in from..=sealed {
            self.windows_checked += 1;
            let mut grants = Vec::with_capacity(self.keys.len() * self.ids.len());
            let mut problems = Vec::new();
            for key in &self.keys {
                let mut total = 0;
                for id in &self.ids {
                    let grant = Grant::from(state.lease(&t.name, key, id, window));
                    if let Grant::Share(share) = grant {
                        total += share;
                    }
                    grants.push(grant);
                }
                if total > t.limit {
                    problems.push(format!("grants {total} > limit {} for key {key}", t.limit));
                }
            }
            // Windows before the quota's first round were never decided: every lease expired.
            if grants.iter().all(|g| *g == Grant::Other("expired")) {
                continue;
            }
            if let Some(bad) = grants.iter().find(|g| matches!(g, Grant::Other(_))) {
                problems.push(format!("answers {bad:?} for a decided window"));
            }
            let slot = (t.name.clone(), window);
            match self.decided.get(&slot) {
                None => {
                    self.decided.insert(slot.clone(), (grants, node));
                }
                Some((first, by)) if *first != grants => {
                    let at = first.iter().zip(&grants).position(|(a, b)| a != b).unwrap_or(0);
                    let (key, peer) = (&self.keys[at / self.ids.len()], &self.ids[at % self.ids.len()]);
                    problems.push(format!(
                        "grants {peer} {:?} for key {key}, where {} decided {:?}",
                        grants[at], self.ids[*by], first[at]
                    ));
                }
                Some(_) => {}
            }
            if !problems.is_empty() && self.reported.insert(slot) {
                for p in problems {
                    self.violations.push(format!(
                        "quota ledger: at {at_ms} ms node {}'s ledger, quota {} window {window}: {p}",
                        self.ids[node], t.name
                    ));
                }
            }
        }
    }

    /// (quota, window) pairs checked on some node's ledger, repeats included.
    pub fn windows_checked(&self) -> u64 {
        self.windows_checked
    }

    pub fn violations(&self) -> &[String] {
        &self.violations
    }
}
