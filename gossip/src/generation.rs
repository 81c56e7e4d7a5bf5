//! Chitchat generation ids for this process.
//!
//! A restarted node must supersede its previous incarnation, so the generation is the start time
//! in unix milliseconds; within one process it is also forced to increase, so two nodes started
//! in the same millisecond (tests, the simulator) still get distinct, ordered incarnations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static LAST: AtomicU64 = AtomicU64::new(0);

/// A generation id greater than every one handed out before by this process.
pub fn fresh_generation() -> u64 {
    // Wall-clock time is right here: generations must order across process restarts, which a
    // monotonic clock cannot do. A clock before 1970 degrades to the in-process counter.
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now_ms.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_increase_and_look_like_unix_millis() {
        let a = fresh_generation();
        let b = fresh_generation();
        assert!(b > a);
        assert!(a > 1_600_000_000_000, "{a} should be unix milliseconds");
    }
}
