//! The per-request half of a global rate limit: a fixed-window counter per key, admitting up to
//! the share this node holds for the current window.
//!
//! IO-free: the caller passes `now_ms` (wall clock, since windows are aligned to the Unix epoch
//! on every node) and a function that says what this node may admit for a key in a window (its
//! lease, or its fallback when the lease has expired). That function runs once per key per window,
//! or again when the caller's `generation` moves (a new ledger applied, the live membership
//! changed); every other request is a hash lookup, a compare and an increment under one of
//! [`SHARDS`] short mutexes, so cores rarely contend.
//!
//! Memory is bounded: at most [`MAX_KEYS`] keys are tracked; [`QuotaLimiter::sweep`] drops keys
//! idle for a window and, meanwhile, keys beyond the bound share one conservative counter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Lock shards of the key map.
pub const SHARDS: usize = 16;
/// Most keys tracked per quota on one node.
pub const MAX_KEYS: usize = 1 << 18;
const MAX_KEYS_PER_SHARD: usize = MAX_KEYS / SHARDS;

/// What this node may admit for one key in one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowance {
    pub share: u64,
    /// The share comes from an expired lease's fallback (`on_partition`), not from the ledger.
    pub fallback: bool,
    /// The ledger splits this key by demand: keep reporting its demand.
    pub hot: bool,
}

/// The answer for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub admitted: bool,
    /// This node's share for the window (what `ratelimit` reports as the quota left to take).
    pub share: u64,
    /// Left of the share after this request.
    pub remaining: u64,
    /// Until the window ends.
    pub reset_ms: u64,
    pub fallback: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counter {
    window: u64,
    generation: u64,
    share: u64,
    admitted: u64,
    /// Requests seen since the last sweep, admitted or not: the demand to report.
    offered: u64,
    fallback: bool,
    hot: bool,
}

impl Counter {
    /// A counter that asks for its allowance on first use.
    fn fresh() -> Counter {
        Counter { window: u64::MAX, ..Counter::default() }
    }
}

/// One key's demand, from a sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLoad {
    pub key: String,
    /// Requests offered per window since the last sweep.
    pub demand: u64,
}

type KeyCounters = HashMap<Box<str>, Counter>;

/// The local counters of one quota.
pub struct QuotaLimiter {
    window_ms: u64,
    shards: Box<[Mutex<KeyCounters>]>,
    /// Keys that found no room share this counter, with the share of the first of them.
    overflow: Mutex<Counter>,
    admitted: AtomicU64,
    rejected: AtomicU64,
    fallback_decisions: AtomicU64,
    tracked: AtomicU64,
}

impl QuotaLimiter {
    pub fn new(window_ms: u64) -> QuotaLimiter {
        QuotaLimiter {
            window_ms: window_ms.max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            overflow: Mutex::new(Counter::fresh()),
            admitted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            fallback_decisions: AtomicU64::new(0),
            tracked: AtomicU64::new(0),
        }
    }

    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// Decide one request for `key` at `now_ms`. `allowance(window)` is asked only when the
    /// key's window or the caller's `generation` moved since it was last asked.
    pub fn check(
        &self,
        key: &str,
        now_ms: u64,
        generation: u64,
        allowance: impl FnOnce(u64) -> Allowance,
    ) -> Decision {
        let window = now_ms / self.window_ms;
        let reset_ms = (window + 1) * self.window_ms - now_ms;
        let shard = &self.shards[self.shard_of(key)];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let decision = if let Some(c) = map.get_mut(key) {
            count(c, window, generation, reset_ms, allowance)
        } else if map.len() < MAX_KEYS_PER_SHARD {
            self.tracked.fetch_add(1, Ordering::Relaxed);
            let c = map.entry(Box::from(key)).or_insert(Counter::fresh());
            count(c, window, generation, reset_ms, allowance)
        } else {
            drop(map);
            let mut c = self.overflow.lock().unwrap_or_else(|p| p.into_inner());
            count(&mut c, window, generation, reset_ms, allowance)
        };
        if decision.admitted {
            self.admitted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        if decision.fallback {
            self.fallback_decisions.fetch_add(1, Ordering::Relaxed);
        }
        decision
    }

    /// Which lock a key takes. Cheap on purpose (the map behind the lock hashes the key with a
    /// keyed hash anyway): the length and up to eight bytes from each end, mixed. Keys chosen to
    /// collide here only share a lock; they cannot degrade the map.
    fn shard_of(&self, key: &str) -> usize {
        let b = key.as_bytes();
        let mut head = [0u8; 8];
        let mut tail = [0u8; 8];
        let n = b.len().min(8);
        head[..n].copy_from_slice(&b[..n]);
        tail[..n].copy_from_slice(&b[b.len() - n..]);
        let x = u64::from_le_bytes(head) ^ u64::from_le_bytes(tail).rotate_left(29) ^ (b.len() as u64);
        (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS
    }

    /// Collects the demand worth reporting and forgets idle keys. `elapsed_ms` is the time since
    /// the previous sweep. A key is worth reporting when the ledger already splits it by demand,
    /// or its demand reached half of its share. At most `max_report` keys, busiest first.
    pub fn sweep(&self, now_ms: u64, elapsed_ms: u64, max_report: usize) -> Vec<KeyLoad> {
        let window = now_ms / self.window_ms;
        let elapsed_ms = elapsed_ms.max(1);
        let mut loads = Vec::new();
        for shard in self.shards.iter() {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            let before = map.len();
            map.retain(|key, c| {
                if c.offered > 0 {
                    let demand = c.offered.saturating_mul(self.window_ms) / elapsed_ms;
                    if c.hot || demand.saturating_mul(2) >= c.share {
                        loads.push(KeyLoad { key: key.to_string(), demand: demand.max(1) });
                    }
                }
                let busy = c.offered > 0 || c.window.saturating_add(1) >= window;
                c.offered = 0;
                busy
            });
            self.tracked.fetch_sub((before - map.len()) as u64, Ordering::Relaxed);
        }
        // A total order (demand, then key), so which keys make the cut never depends on the map's
        // iteration order: the same load gives the same report (the simulator relies on it).
        loads.sort_by(|a, b| b.demand.cmp(&a.demand).then_with(|| a.key.cmp(&b.key)));
        loads.truncate(max_report);
        loads
    }

    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Decisions taken on a fallback share (no valid lease).
    pub fn fallback_decisions(&self) -> u64 {
        self.fallback_decisions.load(Ordering::Relaxed)
    }

    /// Keys currently tracked.
    pub fn tracked(&self) -> u64 {
        self.tracked.load(Ordering::Relaxed)
    }
}

fn count(
    c: &mut Counter,
    window: u64,
    generation: u64,
    reset_ms: u64,
    allowance: impl FnOnce(u64) -> Allowance,
) -> Decision {
    if c.window != window || c.generation != generation {
        if c.window != window {
            c.window = window;
            c.admitted = 0;
        }
        let a = allowance(window);
        c.generation = generation;
        c.share = a.share;
        c.fallback = a.fallback;
        c.hot = a.hot;
    }
    c.offered += 1;
    let admitted = c.admitted < c.share;
    if admitted {
        c.admitted += 1;
    }
    Decision {
        admitted,
        share: c.share,
        remaining: c.share.saturating_sub(c.admitted),
        reset_ms,
        fallback: c.fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(share: u64) -> impl Fn(u64) -> Allowance {
        move |_| Allowance { share, fallback: false, hot: false }
    }

    #[test]
    fn admits_the_share_per_window_then_refuses() {
        let l = QuotaLimiter::new(1000);
        let t = 5_000_000;
        let got: Vec<bool> = (0..5).map(|i| l.check("k", t + i, 1, lease(3)).admitted).collect();
        assert_eq!(got, [true, true, true, false, false]);
        let d = l.check("k", t + 10, 1, lease(3));
        assert_eq!((d.remaining, d.reset_ms), (0, 990));
        // Another key has its own count; the next window starts over.
        assert!(l.check("other", t, 1, lease(3)).admitted);
        assert!(l.check("k", t + 1000, 1, lease(3)).admitted);
        assert_eq!((l.admitted(), l.rejected()), (5, 3));
    }

    #[test]
    fn the_allowance_is_asked_once_per_window_or_generation() {
        let l = QuotaLimiter::new(100);
        let asked = std::cell::Cell::new(0);
        let ask = |w| {
            asked.set(asked.get() + 1);
            Allowance { share: w, fallback: false, hot: false }
        };
        for i in 0..50 {
            l.check("k", 1000 + i, 7, ask);
        }
        assert_eq!(asked.get(), 1);
        l.check("k", 1000, 8, ask);
        assert_eq!(asked.get(), 2, "a new generation asks again");
        l.check("k", 1100, 8, ask);
        assert_eq!(asked.get(), 3, "a new window asks again");
    }

    #[test]
    fn a_smaller_share_mid_window_keeps_what_was_admitted() {
        let l = QuotaLimiter::new(1000);
        for _ in 0..4 {
            assert!(l.check("k", 0, 1, lease(10)).admitted);
        }
        // The lease arrives (generation 2) with a share of 3: 4 are already admitted.
        assert!(!l.check("k", 1, 2, lease(3)).admitted);
    }

    #[test]
    fn sweep_reports_busy_keys_and_forgets_idle_ones() {
        let l = QuotaLimiter::new(1000);
        for _ in 0..10 {
            l.check("busy", 10_000, 1, lease(8));
        }
        l.check("quiet", 10_000, 1, lease(100));
        let loads = l.sweep(10_250, 250, 10);
        assert_eq!(loads, vec![KeyLoad { key: "busy".into(), demand: 40 }]);
        assert_eq!(l.tracked(), 2);
        // Two windows later nothing was offered: both go.
        assert!(l.sweep(12_100, 1850, 10).is_empty());
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn a_burst_of_distinct_keys_stays_bounded() {
        let l = QuotaLimiter::new(1000);
        let n = MAX_KEYS + 50_000;
        let mut admitted = 0;
        for i in 0..n {
            if l.check(&format!("key-{i}"), 1_000_000, 1, lease(1)).admitted {
                admitted += 1;
            }
        }
        assert!(l.tracked() <= MAX_KEYS as u64);
        // Keys over the bound shared one counter: they were under-admitted, never over.
        assert!(admitted < n, "{admitted}");
        // The next sweep reports the busiest (capped) and keeps the keys, which were just offered;
        // once a window passes with nothing offered, they all go.
        assert_eq!(l.sweep(1_000_250, 250, 100).len(), 100);
        assert_eq!(l.tracked(), MAX_KEYS as u64);
        assert!(l.sweep(1_003_000, 2750, 100).is_empty());
        assert_eq!(l.tracked(), 0);
    }
}
