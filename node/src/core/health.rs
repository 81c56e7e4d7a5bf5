//! Endpoint health: active checks and passive outlier ejection, as plain bookkeeping.
//!
//! An endpoint takes traffic when the active checker has not marked it down *and* it is not
//! ejected. Active checks move it with thresholds (hysteresis, so one lost probe does not flap it);
//! real traffic that fails `consecutive_failures` times in a row ejects it for a time that grows
//! with each ejection, after which it is re-admitted on probation. Nothing here reads a clock:
//! every call is handed `now`.

use std::time::Duration;

use tokio::time::Instant;

use super::table::{HealthCheckSpec, OutlierSpec};

#[derive(Debug, Clone)]
pub struct HealthPolicy {
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejected_percent: u8,
}

impl HealthPolicy {
    pub fn new(check: Option<&HealthCheckSpec>, outlier: Option<&OutlierSpec>) -> HealthPolicy {
        let o = outlier.cloned().unwrap_or_default();
        HealthPolicy {
            healthy_threshold: check.map_or(2, |c| c.healthy_threshold),
            unhealthy_threshold: check.map_or(2, |c| c.unhealthy_threshold),
            consecutive_failures: o.consecutive_failures,
            base_ejection: Duration::from_millis(o.base_ejection_ms),
            max_ejection: Duration::from_millis(o.max_ejection_ms),
            max_ejected_percent: o.max_ejected_percent,
        }
    }
}

/// What one attempt against an endpoint came to, as far as its health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Any response that is not a 5xx.
    Success,
    /// A 5xx response.
    ServerError,
    /// Connect refused, reset, or the connection died mid-exchange.
    ConnectionFailure,
    /// No response headers in time.
    Timeout,
}

/// How many of an endpoint's regional peers are ejected already (the endpoint itself excluded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    pub total: u32,
    pub ejected_others: u32,
}

impl Census {
    /// One ejection is always allowed (an endpoint that fails everything should stop taking
    /// traffic even when it is the only one); beyond that, only while under the cap.
    pub fn may_eject_one_more(&self, max_percent: u8) -> bool {
        self.ejected_others == 0
            || (self.ejected_others + 1) * 100 <= u32::from(max_percent) * self.total.max(1)
    }
}

/// A change worth a log line and a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    MarkedDown,
    MarkedUp,
    Ejected { for_ms: u64 },
}

#[derive(Debug, Clone)]
pub struct EndpointHealth {
    /// Verdict of the active checker. Endpoints start up so traffic flows before the first probe.
    active_up: bool,
    check_streak_ok: u32,
    check_streak_fail: u32,
    failure_streak: u32,
    ejected_until: Option<Instant>,
    ejections: u32,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        EndpointHealth {
            active_up: true,
            check_streak_ok: 0,
            check_streak_fail: 0,
            failure_streak: 0,
            ejected_until: None,
            ejections: 0,
        }
    }
}

impl EndpointHealth {
    pub fn is_available(&self, now: Instant) -> bool {
        self.active_up && !self.is_ejected(now)
    }

    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|t| now < t)
    }

    pub fn active_up(&self) -> bool {
        self.active_up
    }

    pub fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// Record one active probe.
    pub fn on_check(&mut self, ok: bool, policy: &HealthPolicy) -> Option<Transition> {
        if ok {
            self.check_streak_fail = 0;
            self.check_streak_ok = self.check_streak_ok.saturating_add(1);
            if !self.active_up && self.check_streak_ok >= policy.healthy_threshold {
                self.active_up = true;
                return Some(Transition::MarkedUp);
            }
        } else {
            self.check_streak_ok = 0;
            self.check_streak_fail = self.check_streak_fail.saturating_add(1);
            if self.active_up && self.check_streak_fail >= policy.unhealthy_threshold {
                self.active_up = false;
                return Some(Transition::MarkedDown);
            }
        }
        None
    }

    /// Record one real attempt. `census` describes this endpoint's peers in its region, so that
    /// ejection stops at the policy's cap.
    pub fn on_attempt(
        &mut self,
        outcome: AttemptOutcome,
        now: Instant,
        census: Census,
        policy: &HealthPolicy,
    ) -> Option<Transition> {
        match outcome {
            AttemptOutcome::Success => {
                self.failure_streak = 0;
                // A clean run after re-admission slowly forgives past ejections.
                if self.ejected_until.is_some_and(|t| now >= t) {
                    self.ejected_until = None;
                    self.ejections = self.ejections.saturating_sub(1);
                }
                None
            }
            AttemptOutcome::ServerError | AttemptOutcome::ConnectionFailure | AttemptOutcome::Timeout => {
                self.failure_streak = self.failure_streak.saturating_add(1);
                if self.failure_streak < policy.consecutive_failures || self.is_ejected(now) {
                    return None;
                }
                if !census.may_eject_one_more(policy.max_ejected_percent) {
                    return None;
                }
                self.failure_streak = 0;
                let factor = 1u32 << self.ejections.min(16);
                let span = policy.base_ejection.saturating_mul(factor).min(policy.max_ejection);
                self.ejections = self.ejections.saturating_add(1);
                self.ejected_until = Some(now + span);
                Some(Transition::Ejected { for_ms: u64::try_from(span.as_millis()).unwrap_or(u64::MAX) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(20),
            max_ejected_percent: 50,
        }
    }

    #[test]
    fn active_checks_have_hysteresis() {
        let p = policy();
        let mut h = EndpointHealth::default();
        assert_eq!(h.on_check(false, &p), None);
        assert_eq!(h.on_check(false, &p), None);
        assert_eq!(h.on_check(true, &p), None, "a pass resets the failure streak");
        assert_eq!(h.on_check(false, &p), None);
        assert_eq!(h.on_check(false, &p), None);
        assert_eq!(h.on_check(false, &p), Some(Transition::MarkedDown));
        assert!(!h.is_available(Instant::now()));
        assert_eq!(h.on_check(true, &p), None);
        assert_eq!(h.on_check(true, &p), Some(Transition::MarkedUp));
    }

    #[test]
    fn consecutive_failures_eject_then_readmit_with_growing_span() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = EndpointHealth::default();
        for _ in 0..2 {
            assert_eq!(h.on_attempt(AttemptOutcome::ServerError, t0, Census::default(), &p), None);
        }
        assert_eq!(
            h.on_attempt(AttemptOutcome::ConnectionFailure, t0, Census::default(), &p),
            Some(Transition::Ejected { for_ms: 5_000 })
        );
        assert!(!h.is_available(t0 + Duration::from_secs(4)));
        let t1 = t0 + Duration::from_secs(5);
        assert!(h.is_available(t1), "re-admitted when the ejection ends");
        for _ in 0..2 {
            h.on_attempt(AttemptOutcome::Timeout, t1, Census::default(), &p);
        }
        assert_eq!(
            h.on_attempt(AttemptOutcome::Timeout, t1, Census::default(), &p),
            Some(Transition::Ejected { for_ms: 10_000 }),
            "second ejection lasts twice as long"
        );
    }

    #[test]
    fn success_breaks_a_failure_streak() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = EndpointHealth::default();
        h.on_attempt(AttemptOutcome::ServerError, t0, Census::default(), &p);
        h.on_attempt(AttemptOutcome::ServerError, t0, Census::default(), &p);
        h.on_attempt(AttemptOutcome::Success, t0, Census::default(), &p);
        assert_eq!(h.on_attempt(AttemptOutcome::ServerError, t0, Census::default(), &p), None);
        assert!(h.is_available(t0));
    }

    #[test]
    fn ejection_cap_keeps_endpoints_in_service() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = EndpointHealth::default();
        let half_out = Census { total: 4, ejected_others: 2 };
        for _ in 0..10 {
            assert_eq!(h.on_attempt(AttemptOutcome::ServerError, t0, half_out, &p), None);
        }
        assert!(h.is_available(t0));
        assert!(Census { total: 1, ejected_others: 0 }.may_eject_one_more(50));
        assert!(Census { total: 4, ejected_others: 1 }.may_eject_one_more(50));
    }
}
