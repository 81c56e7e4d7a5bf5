//! [`QuotaState`]: the replicated quota ledger and how a round changes it.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Deserialize;
use serde::Serialize;

use super::equal_share;
use super::shard_of;
use super::split;
use super::DemandReport;
use super::QuotaTerms;
use super::DEMAND_TTL_MS;
use super::LEASE_AHEAD_MS;
use super::MAX_HOT_KEYS;
use super::MAX_KEY_BYTES;
use super::MAX_REPORT_KEYS;
use super::NODE_FORGET_MS;
use super::PARTICIPANT_TTL_MS;
use super::SHARDS;

/// What the ledger grants one node for one key in one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    /// Admit up to `share` requests in the window. `hot`: the share follows demand (the node
    /// should keep reporting this key's demand).
    Share { share: u64, hot: bool },
    /// The window is past what is sealed: the lease ran out (no round committed lately).
    Expired,
    /// The window is sealed but without this node (it has not reported lately).
    NotParticipant,
    /// The quota is not in the ledger yet (just added to the table).
    Unknown,
}

/// Everything the ledger holds: per-quota windows and participants, per-node reports, and the
/// hot keys' demand and shares, sharded by key hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaState {
    pub(crate) meta: QuotaMeta,
    /// `shards[i]`: quota name → key → hot key. `Arc` so a state copy shares untouched shards.
    pub(crate) shards: Vec<Arc<Shard>>,
}

pub(crate) type Shard = BTreeMap<String, BTreeMap<String, HotKey>>;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QuotaMeta {
    pub nodes: BTreeMap<String, NodeRecord>,
    pub quotas: BTreeMap<String, QuotaLedger>,
    pub hot_keys: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeRecord {
    pub last_report_ms: u64,
    /// quota → (admitted, rejected) as the node last reported them.
    pub counts: BTreeMap<String, (u64, u64)>,
}

/// One quota's decided windows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLedger {
    pub limit: u64,
    pub window_ms: u64,
    /// Every window up to and including this one is decided.
    pub sealed_through: Option<u64>,
    /// From window `from` on (until the next epoch), `participants` share `limit`.
    pub(crate) epochs: Vec<Epoch>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Epoch {
    pub from: u64,
    pub limit: u64,
    /// Sorted node ids.
    pub participants: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HotKey {
    /// node → (demand per window, round time it was reported).
    pub demand: BTreeMap<String, (u64, u64)>,
    /// From window `from` on: `Some(shares)` aligned with the epoch's participants, or `None`
    /// for the equal split (the key cooled down).
    pub runs: Vec<HotRun>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HotRun {
    pub from: u64,
    pub shares: Option<Vec<u64>>,
}

/// A hot key as `/quotas` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotKeyView {
    pub key: String,
    /// node → share for the asked window (empty when the key is on the equal split).
    pub shares: Vec<(String, u64)>,
    /// node → demand per window as last reported.
    pub demand: Vec<(String, u64)>,
}

impl Default for QuotaState {
    fn default() -> Self {
        Self { meta: QuotaMeta::default(), shards: (0..SHARDS).map(|_| Arc::new(Shard::new())).collect() }
    }
}

/// Which parts of the state a round changed, so only those are written.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct QuotaDirty {
    /// Hot-key shards rewritten by the round.
    pub shards: BTreeSet<usize>,
}

fn last_at<T>(items: &[T], window: u64, from: impl Fn(&T) -> u64) -> Option<&T> {
    let i = items.partition_point(|x| from(x) <= window);
    i.checked_sub(1).map(|i| &items[i])
}

impl QuotaState {
    pub(crate) fn from_parts(meta: QuotaMeta, shards: Vec<Shard>) -> Self {
        let mut state = Self { meta, ..Self::default() };
        for (i, s) in shards.into_iter().enumerate().take(SHARDS) {
            state.shards[i] = Arc::new(s);
        }
        state.meta.hot_keys = state.shards.iter().flat_map(|s| s.values()).map(|k| k.len() as u64).sum();
        state
    }

    /// The ledger of one quota.
    pub fn ledger(&self, quota: &str) -> Option<&QuotaLedger> {
        self.meta.quotas.get(quota)
    }

    /// Names of the quotas in the ledger.
    pub fn quotas(&self) -> impl Iterator<Item = &str> {
        self.meta.quotas.keys().map(String::as_str)
    }

    /// Hot keys across all quotas.
    pub fn hot_key_count(&self) -> u64 {
        self.meta.hot_keys
    }

    /// What `node` may admit for `key` of `quota` in `window`.
    pub fn lease(&self, quota: &str, key: &str, node: &str, window: u64) -> Lease {
        let Some(ledger) = self.meta.quotas.get(quota) else { return Lease::Unknown };
        if ledger.sealed_through.is_none_or(|s| window > s) {
            return Lease::Expired;
        }
        let Some(epoch) = last_at(&ledger.epochs, window, |e| e.from) else { return Lease::Expired };
        let Ok(index) = epoch.participants.binary_search_by(|p| p.as_str().cmp(node)) else {
            return Lease::NotParticipant;
        };
        let hot = self.shards[shard_of(quota, key)].get(quota).and_then(|keys| keys.get(key));
        if let Some(hot) = hot {
            if let Some(HotRun { shares: Some(shares), .. }) = last_at(&hot.runs, window, |r| r.from) {
                return Lease::Share { share: shares.get(index).copied().unwrap_or(0), hot: true };
            }
        }
        let n = epoch.participants.len() as u64;
        Lease::Share { share: equal_share(epoch.limit, n, index as u64, window), hot: hot.is_some() }
    }

    /// The equal split of `quota` in `window`: each participant with its share.
    pub fn equal_split(&self, quota: &str, window: u64) -> Vec<(String, u64)> {
        let Some(ledger) = self.meta.quotas.get(quota) else { return Vec::new() };
        if ledger.sealed_through.is_none_or(|s| window > s) {
            return Vec::new();
        }
        let Some(epoch) = last_at(&ledger.epochs, window, |e| e.from) else { return Vec::new() };
        let n = epoch.participants.len() as u64;
        epoch
            .participants
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), equal_share(epoch.limit, n, i as u64, window)))
            .collect()
    }

    /// Every node's last reported (admitted, rejected) for `quota`, and when it reported.
    pub fn counts(&self, quota: &str) -> Vec<(String, u64, u64, u64)> {
        self.meta
            .nodes
            .iter()
            .filter_map(|(node, r)| {
                r.counts.get(quota).map(|(a, rj)| (node.clone(), *a, *rj, r.last_report_ms))
            })
            .collect()
    }

    /// Up to `limit` hot keys of `quota`, busiest first, with their shares in `window`.
    pub fn hot_keys(&self, quota: &str, window: u64, limit: usize) -> Vec<HotKeyView> {
        let participants = self
            .meta
            .quotas
            .get(quota)
            .and_then(|l| last_at(&l.epochs, window, |e| e.from))
            .map(|e| e.participants.clone())
            .unwrap_or_default();
        let mut keys: Vec<(u64, HotKeyView)> = Vec::new();
        for shard in &self.shards {
            for (key, hot) in shard.get(quota).into_iter().flatten() {
                let total = hot.demand.values().map(|d| d.0).sum::<u64>();
                let shares = match last_at(&hot.runs, window, |r| r.from) {
                    Some(HotRun { shares: Some(s), .. }) => {
                        participants.iter().cloned().zip(s.iter().copied()).collect()
                    }
                    _ => Vec::new(),
                };
                let demand = hot.demand.iter().map(|(n, d)| (n.clone(), d.0)).collect();
                keys.push((total, HotKeyView { key: key.clone(), shares, demand }));
            }
        }
        keys.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.key.cmp(&b.1.key)));
        keys.into_iter().take(limit).map(|(_, v)| v).collect()
    }

    /// Applies one round: records the reports, then seals each quota's windows up to
    /// [`LEASE_AHEAD_MS`] past `at_ms`, deciding their participants and hot-key shares.
    pub fn apply_round(&mut self, at_ms: u64, terms: &[QuotaTerms], reports: &[DemandReport]) -> QuotaDirty {
        let mut dirty = QuotaDirty::default();
        let terms: BTreeMap<&str, &QuotaTerms> = terms.iter().map(|t| (t.name.as_str(), t)).collect();

        // Quotas removed from the table, or whose window changed, start over.
        let stale: Vec<String> = self
            .meta
            .quotas
            .iter()
            .filter(|(name, l)| terms.get(name.as_str()).is_none_or(|t| t.window_ms != l.window_ms))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            self.meta.quotas.remove(&name);
            self.drop_hot_keys(&name, &mut dirty);
        }

        self.record_reports(at_ms, &terms, reports, &mut dirty);

        let participants: Vec<String> = self
            .meta
            .nodes
            .iter()
            .filter(|(_, r)| r.last_report_ms + PARTICIPANT_TTL_MS >= at_ms)
            .map(|(n, _)| n.clone())
            .collect();
        self.meta.nodes.retain(|_, r| r.last_report_ms + NODE_FORGET_MS >= at_ms);

        for (name, t) in &terms {
            if t.window_ms == 0 {
                continue;
            }
            self.seal(name, t, at_ms, &participants, &mut dirty);
        }
        dirty
    }

    fn record_reports(
        &mut self,
        at_ms: u64,
        terms: &BTreeMap<&str, &QuotaTerms>,
        reports: &[DemandReport],
        dirty: &mut QuotaDirty,
    ) {
        for report in reports {
            let record = self.meta.nodes.entry(report.node.clone()).or_default();
            record.last_report_ms = at_ms;
            record.counts = report
                .counts
                .iter()
                .filter(|c| terms.contains_key(c.quota.as_str()))
                .map(|c| (c.quota.clone(), (c.admitted, c.rejected)))
                .collect();
            for d in report.demands.iter().take(MAX_REPORT_KEYS) {
                if !terms.contains_key(d.quota.as_str()) || d.key.len() > MAX_KEY_BYTES {
                    continue;
                }
                let s = shard_of(&d.quota, &d.key);
                let exists = self.shards[s].get(&d.quota).is_some_and(|k| k.contains_key(&d.key));
                if !exists && self.meta.hot_keys >= MAX_HOT_KEYS as u64 {
                    continue;
                }
                let shard = Arc::make_mut(&mut self.shards[s]);
                let hot = shard.entry(d.quota.clone()).or_default().entry(d.key.clone()).or_default();
                // Smoothed with the node's previous, still fresh report: one 250 ms sample is
                // noisy, and shares that swing from window to window waste capacity.
                let demand = match hot.demand.get(&report.node) {
                    Some((prev, at)) if *at + DEMAND_TTL_MS >= at_ms => {
                        (prev / 2).saturating_add(d.demand / 2)
                    }
                    _ => d.demand,
                };
                hot.demand.insert(report.node.clone(), (demand.max(1), at_ms));
                if !exists {
                    self.meta.hot_keys += 1;
                }
                dirty.shards.insert(s);
            }
        }
    }

    fn drop_hot_keys(&mut self, quota: &str, dirty: &mut QuotaDirty) {
        for (i, shard) in self.shards.iter_mut().enumerate() {
            if shard.contains_key(quota) {
                let removed = Arc::make_mut(shard).remove(quota).map_or(0, |k| k.len() as u64);
                self.meta.hot_keys -= removed;
                dirty.shards.insert(i);
            }
        }
    }

    fn seal(
        &mut self,
        name: &str,
        t: &QuotaTerms,
        at_ms: u64,
        participants: &[String],
        dirty: &mut QuotaDirty,
    ) {
        let current = at_ms / t.window_ms;
        let ledger = self.meta.quotas.entry(name.to_string()).or_insert_with(|| QuotaLedger {
            limit: t.limit,
            window_ms: t.window_ms,
            sealed_through: None,
            epochs: Vec::new(),
        });
        ledger.limit = t.limit;
        // Never a window that may have begun: nodes may already be admitting in it.
        let from = ledger.sealed_through.map_or(current + 1, |s| s + 1).max(current + 1);
        let through = (at_ms + LEASE_AHEAD_MS) / t.window_ms;
        let sealing = through >= from;
        if let Some(gap_from) = ledger.sealed_through.map(|s| s + 1).filter(|g| sealing && *g < from) {
            // No round sealed these windows in time (no leader for a while): they are decided
            // as nobody's, which is what every node already did with them (its lease expired).
            ledger.epochs.push(Epoch { from: gap_from, limit: t.limit, participants: Vec::new() });
        }
        let epoch_changed = match ledger.epochs.last() {
            Some(e) => e.participants != participants || e.limit != t.limit,
            None => true,
        };
        if sealing {
            if epoch_changed {
                ledger.epochs.push(Epoch { from, limit: t.limit, participants: participants.to_vec() });
            }
            ledger.sealed_through = Some(through);
        }
        // Keep the epoch covering the previous window (a node may still be finishing it).
        let keep_from = current.saturating_sub(1);
        let first_needed = ledger.epochs.partition_point(|e| e.from <= keep_from).saturating_sub(1);
        ledger.epochs.drain(..first_needed);
        let limit = t.limit;

        for (i, shard) in self.shards.iter_mut().enumerate() {
            let Some(keys) = shard.get(name) else { continue };
            if keys.is_empty() {
                continue;
            }
            let shard = Arc::make_mut(shard);
            let Some(keys) = shard.get_mut(name) else { continue };
            let before = keys.len();
            keys.retain(|_, hot| {
                hot.demand.retain(|_, (_, at)| *at + DEMAND_TTL_MS >= at_ms);
                if sealing {
                    let run = if hot.demand.is_empty() {
                        None
                    } else {
                        let demands: Vec<u64> =
                            participants.iter().map(|p| hot.demand.get(p).map_or(0, |d| d.0)).collect();
                        Some(split(limit, &demands))
                    };
                    let last = hot.runs.last().map(|r| &r.shares);
                    let changed = epoch_changed || last != Some(&run);
                    // A key with no runs, or already on the equal split, needs no equal-split run.
                    if changed && !(run.is_none() && last.is_none_or(Option::is_none)) {
                        hot.runs.push(HotRun { from, shares: run });
                    }
                }
                let first = hot.runs.partition_point(|r| r.from <= keep_from).saturating_sub(1);
                hot.runs.drain(..first);
                // Cooled: every run left is the equal split, which is also what no entry means.
                !(hot.demand.is_empty() && hot.runs.iter().all(|r| r.shares.is_none()))
            });
            let removed = (before - keys.len()) as u64;
            if keys.is_empty() {
                shard.remove(name);
            }
            self.meta.hot_keys -= removed;
            dirty.shards.insert(i);
        }
    }
}
