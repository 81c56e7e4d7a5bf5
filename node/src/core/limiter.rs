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

/// One lock's worth of keys, with the decision counts taken under that same lock (no shared
/// atomic for every request to bounce between cores).
#[derive(Default)]
struct Shard {
    keys: HashMap<Box<str>, Counter>,
    admitted: u64,
    rejected: u64,
    fallback: u64,
}

impl Shard {
    fn tally(&mut self, d: &Decision) {
        if d.admitted {
            self.admitted += 1;
        } else {
            self.rejected += 1;
        }
        if d.fallback {
            self.fallback += 1;
        }
    }
}

/// A shard on a cache line of its own, so that two cores working on different keys do not
/// invalidate each other's lock.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// The local counters of one quota.
pub struct QuotaLimiter {
    window_ms: u64,
    shards: Box<[Padded]>,
    /// Keys that found no room share this counter, with the share of the first of them.
    overflow: Mutex<(Counter, Shard)>,
}

impl QuotaLimiter {
    pub fn new(window_ms: u64) -> QuotaLimiter {
        QuotaLimiter {
            window_ms: window_ms.max(1),
            shards: (0..SHARDS).map(|_| Padded(Mutex::new(Shard::default()))).collect(),
            overflow: Mutex::new((Counter::fresh(), Shard::default())),
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
        let mut shard = self.shards[self.shard_of(key)].0.lock().unwrap_or_else(|p| p.into_inner());
        let decision = if let Some(c) = shard.keys.get_mut(key) {
            count(c, window, generation, reset_ms, allowance)
        } else if shard.keys.len() < MAX_KEYS_PER_SHARD {
            let c = shard.keys.entry(Box::from(key)).or_insert(Counter::fresh());
            count(c, window, generation, reset_ms, allowance)
        } else {
            drop(shard);
            let mut o = self.overflow.lock().unwrap_or_else(|p| p.into_inner());
            let d = count(&mut o.0, window, generation, reset_ms, allowance);
            o.1.tally(&d);
            return d;
        };
        shard.tally(&decision);
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
            let mut shard = shard.0.lock().unwrap_or_else(|p| p.into_inner());
            shard.keys.retain(|key, c| {
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
        }
        // A total order (demand, then key), so which keys make the cut never depends on the map's
        // iteration order: the same load gives the same report (the simulator relies on it).
        loads.sort_by(|a, b| b.demand.cmp(&a.demand).then_with(|| a.key.cmp(&b.key)));
        loads.truncate(max_report);
        loads
    }

    /// Every count, summed over the shards in one pass (admin, metrics and reports only: it takes
    /// every lock briefly).
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        let mut add = |s: &Shard| {
            t.admitted += s.admitted;
            t.rejected += s.rejected;
            t.fallback_decisions += s.fallback;
            t.tracked += s.keys.len() as u64;
        };
        for shard in self.shards.iter() {
            add(&shard.0.lock().unwrap_or_else(|p| p.into_inner()));
        }
        add(&self.overflow.lock().unwrap_or_else(|p| p.into_inner()).1);
        t
    }

    pub fn admitted(&self) -> u64 {
        self.totals().admitted
    }

    pub fn rejected(&self) -> u64 {
        self.totals().rejected
    }

    /// Keys currently tracked.
    pub fn tracked(&self) -> u64 {
        self.totals().tracked
    }
}

/// A limiter's counts since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub admitted: u64,
    pub rejected: u64,
    /// Decisions taken on a fallback share (no valid lease).
    pub fallback_decisions: u64,
    /// Keys currently tracked.
    pub tracked: u64,
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
