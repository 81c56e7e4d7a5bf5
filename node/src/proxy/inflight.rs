//! In-flight accounting: a guard per request per endpoint, released when the response ends.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Counts one unit of work on a shared counter for as long as it lives.
#[derive(Debug)]
pub struct InFlightGuard {
    counter: Arc<AtomicU32>,
}

impl InFlightGuard {
    pub fn new(counter: &Arc<AtomicU32>) -> InFlightGuard {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlightGuard { counter: counter.clone() }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}
