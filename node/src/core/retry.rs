//! Retries: whether a failed attempt may be repeated, and a budget that keeps retries from
//! multiplying load on an upstream that is already failing.
//!
//! The budget is a sliding window of one-second slots: retries within the window may be at most
//! `ratio` of the requests in it, plus a small floor so low-traffic services can still retry.

use std::time::Duration;

use http::Method;
use tokio::time::Instant;

/// Why an attempt failed, as far as retrying it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing was sent: connect refused or failed, or a pooled connection was closed before use.
    NotSent,
    /// Sent, and the connection failed before response headers.
    Reset,
    /// No response headers within the per-try timeout.
    Timeout,
    /// The upstream answered with a retriable status (502, 503, 504).
    Status(u16),
}

/// The facts about the request that decide whether repeating it is safe.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts {
    pub idempotent: bool,
    /// The body can be sent again (none, or small enough that it was buffered).
    pub replayable: bool,
}

impl RequestFacts {
    pub fn new(method: &Method, has_idempotency_key: bool, replayable: bool) -> RequestFacts {
        RequestFacts { idempotent: has_idempotency_key || method_is_idempotent(method), replayable }
    }
}

/// RFC 9110 §9.2.2: repeating the method has the effect of sending it once. Other requests are
/// repeated only with an `idempotency-key`.
pub fn method_is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// May this failure be retried at all (budget aside)? A request that never left is always safe
/// to send again; one that may have reached the upstream only when repeating it is harmless.
pub fn is_retriable(failure: Failure, facts: RequestFacts) -> bool {
    match failure {
        Failure::NotSent => true,
        Failure::Reset | Failure::Timeout => facts.idempotent && facts.replayable,
        Failure::Status(s) => matches!(s, 502..=504) && facts.idempotent && facts.replayable,
    }
}

const SLOTS: usize = 10;

#[derive(Debug, Clone)]
pub struct RetryBudget {
    /// Retries allowed per thousand requests; integer so the arithmetic is exact.
    per_mille: u64,
    min_per_sec: u32,
    slot_len: Duration,
    /// Slot ring: requests and retries counted per slot.
    requests: [u64; SLOTS],
    retries: [u64; SLOTS],
    /// Index of the current slot and when it began.
    head: usize,
    head_start: Option<Instant>,
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_sec: u32) -> RetryBudget {
        RetryBudget {
            per_mille: (ratio.clamp(0.0, 10.0) * 1000.0).round() as u64,
            min_per_sec,
            slot_len: Duration::from_secs(1),
            requests: [0; SLOTS],
            retries: [0; SLOTS],
            head: 0,
            head_start: None,
        }
    }

    fn advance(&mut self, now: Instant) {
        let start = *self.head_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        let steps = (elapsed.as_nanos() / self.slot_len.as_nanos()) as usize;
        if steps == 0 {
            return;
        }
        for _ in 0..steps.min(SLOTS) {
            self.head = (self.head + 1) % SLOTS;
            self.requests[self.head] = 0;
            self.retries[self.head] = 0;
        }
        self.head_start = Some(start + self.slot_len * steps as u32);
    }

    /// Count one original request.
    pub fn on_request(&mut self, now: Instant) {
        self.advance(now);
        self.requests[self.head] += 1;
    }

    /// Take one retry from the budget if there is room; returns whether it was granted.
    pub fn try_retry(&mut self, now: Instant) -> bool {
        self.advance(now);
        let requests: u64 = self.requests.iter().sum();
        let retries: u64 = self.retries.iter().sum();
        let allowed = self.per_mille * requests / 1000 + u64::from(self.min_per_sec) * SLOTS as u64;
        if retries < allowed {
            self.retries[self.head] += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_idempotent_retried_only_when_never_sent() {
        let post = RequestFacts::new(&Method::POST, false, true);
        assert!(is_retriable(Failure::NotSent, post));
        assert!(!is_retriable(Failure::Reset, post));
        assert!(!is_retriable(Failure::Timeout, post));
        assert!(!is_retriable(Failure::Status(503), post));
        let keyed = RequestFacts::new(&Method::POST, true, true);
        assert!(is_retriable(Failure::Status(503), keyed));
    }

    #[test]
    fn streamed_bodies_are_not_replayed() {
        let put = RequestFacts::new(&Method::PUT, false, false);
        assert!(is_retriable(Failure::NotSent, put));
        assert!(!is_retriable(Failure::Timeout, put));
    }

    #[test]
    fn only_gateway_statuses_are_retried() {
        let get = RequestFacts::new(&Method::GET, false, true);
        assert!(is_retriable(Failure::Status(502), get));
        assert!(!is_retriable(Failure::Status(500), get));
        assert!(!is_retriable(Failure::Status(501), get));
    }

    #[test]
    fn budget_caps_retries_at_the_ratio() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(0.2, 0);
        for _ in 0..100 {
            b.on_request(t0);
        }
        let granted = (0..100).filter(|_| b.try_retry(t0)).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn floor_allows_retries_at_low_traffic_and_window_slides() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(0.2, 1);
        b.on_request(t0);
        let granted = (0..100).filter(|_| b.try_retry(t0)).count();
        assert_eq!(granted, 10, "floor of 1/s over a 10 s window, plus 0.2 of one request");
        let later = t0 + Duration::from_secs(11);
        assert!(b.try_retry(later), "old retries leave the window");
    }
}
