//! Metrics: counters and latency histograms, rendered as Prometheus text.
//!
//! The hot path touches only atomics and one short histogram lock per request. Latency quantiles
//! come from hdrhistograms over a sliding window of one to two minutes (two rotating halves), so
//! they describe now rather than the whole life of the process.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::error::ErrorKind;

const WINDOW: Duration = Duration::from_secs(60);
const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// Per (route, served region): status counts and latency.
pub struct RouteMetrics {
    pub route: String,
    pub region: String,
    by_status: Box<[AtomicU64]>,
    latency: Mutex<Windowed>,
    sum_us: AtomicU64,
}

struct Windowed {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    rotated_at: Instant,
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 1 h at 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

impl RouteMetrics {
    fn new(route: &str, region: &str) -> RouteMetrics {
        RouteMetrics {
            route: route.to_string(),
            region: region.to_string(),
            by_status: (0..600).map(|_| AtomicU64::new(0)).collect(),
            latency: Mutex::new(Windowed {
                current: new_histogram(),
                previous: new_histogram(),
                rotated_at: Instant::now(),
            }),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn record(&self, status: u16, latency: Duration, now: Instant) {
        if let Some(c) = self.by_status.get(usize::from(status)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        if let Ok(mut w) = self.latency.lock() {
            if now.duration_since(w.rotated_at) >= WINDOW {
                let fresh = new_histogram();
                w.previous = std::mem::replace(&mut w.current, fresh);
                w.rotated_at = now;
            }
            let _ = w.current.record(us.min(3_600_000_000));
        }
    }

    fn render(&self, out: &mut String) {
        let labels = format!("route=\"{}\",region=\"{}\"", esc(&self.route), esc(&self.region));
        self.render_as(out, "meridian_requests_total", "meridian_request_duration_seconds", &labels);
    }

    fn render_as(&self, out: &mut String, counter: &str, summary: &str, labels: &str) {
        let mut count = 0u64;
        for (code, c) in self.by_status.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                count += n;
                let _ = writeln!(out, "{counter}{{{labels},code=\"{code}\"}} {n}");
            }
        }
        if let Ok(w) = self.latency.lock() {
            let mut merged = w.current.clone();
            let _ = merged.add(&w.previous);
            for q in QUANTILES {
                let v = if merged.is_empty() { 0.0 } else { merged.value_at_quantile(q) as f64 / 1e6 };
                let _ = writeln!(out, "{summary}{{{labels},quantile=\"{q}\"}} {v}");
            }
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{summary}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{summary}_count{{{labels}}} {count}");
    }
}

/// Node-wide metrics and the registry of per-route ones (kept across routing-table versions).
pub struct Metrics {
    routes: Mutex<BTreeMap<(String, String), Arc<RouteMetrics>>>,
    /// Forwarded requests by (from region, to region): status of the peer's answer and latency.
    forwards: Mutex<BTreeMap<(String, String), Arc<RouteMetrics>>>,
    /// Forwards that failed before the peer answered, by (from region, to region).
    forward_failures: Mutex<BTreeMap<(String, String), u64>>,
    errors: [AtomicU64; ERROR_KINDS.len()],
    pub retries: AtomicU64,
    pub retries_denied_by_budget: AtomicU64,
    pub ejections: AtomicU64,
    pub health_transitions: AtomicU64,
    pub table_swaps: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            routes: Mutex::new(BTreeMap::new()),
            forwards: Mutex::new(BTreeMap::new()),
            forward_failures: Mutex::new(BTreeMap::new()),
            errors: Default::default(),
            retries: AtomicU64::new(0),
            retries_denied_by_budget: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            health_transitions: AtomicU64::new(0),
            table_swaps: AtomicU64::new(0),
        }
    }
}

const ERROR_KINDS: [ErrorKind; 15] = [
    ErrorKind::NoRoute,
    ErrorKind::NoHealthyUpstream,
    ErrorKind::UpstreamTimeout,
    ErrorKind::UpstreamUnreachable,
    ErrorKind::UpstreamProtocol,
    ErrorKind::Overloaded,
    ErrorKind::BodyTooLarge,
    ErrorKind::BadRequest,
    ErrorKind::HeadersTooLarge,
    ErrorKind::ClientBodyFailed,
    ErrorKind::ClientTimeout,
    ErrorKind::RateLimited,
    ErrorKind::IpDenied,
    ErrorKind::Unauthenticated,
    ErrorKind::Forbidden,
];

impl Metrics {
    pub fn route(&self, route: &str, region: &str) -> Arc<RouteMetrics> {
        let mut map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((route.to_string(), region.to_string()))
            .or_insert_with(|| Arc::new(RouteMetrics::new(route, region)))
            .clone()
    }

    pub fn forward(&self, from: &str, to: &str) -> Arc<RouteMetrics> {
        let mut map = self.forwards.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((from.to_string(), to.to_string()))
            .or_insert_with(|| Arc::new(RouteMetrics::new(from, to)))
            .clone()
    }

    pub fn count_forward_failure(&self, from: &str, to: &str) {
        let mut map = self.forward_failures.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((from.to_string(), to.to_string())).or_insert(0) += 1;
    }

    pub fn count_error(&self, kind: ErrorKind) {
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        ERROR_KINDS.iter().position(|k| *k == kind).map_or(0, |i| self.errors[i].load(Ordering::Relaxed))
    }

    /// Render everything this registry owns; callers append gauges they own.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP meridian_requests_total Proxied requests by route, served region and status.\n");
        out.push_str("# TYPE meridian_requests_total counter\n");
        out.push_str(
            "# HELP meridian_request_duration_seconds Time to response headers, last 1-2 minutes.\n",
        );
        out.push_str("# TYPE meridian_request_duration_seconds summary\n");
        let routes: Vec<Arc<RouteMetrics>> =
            self.routes.lock().map(|m| m.values().cloned().collect()).unwrap_or_default();
        for r in routes {
            r.render(out);
        }
        out.push_str(
            "# HELP meridian_forwards_total Requests forwarded to another region, by answer status.\n",
        );
        out.push_str("# TYPE meridian_forwards_total counter\n");
        out.push_str(
            "# HELP meridian_forward_duration_seconds Time to response headers of forwarded requests.\n",
        );
        out.push_str("# TYPE meridian_forward_duration_seconds summary\n");
        let forwards: Vec<Arc<RouteMetrics>> =
            self.forwards.lock().map(|m| m.values().cloned().collect()).unwrap_or_default();
        for f in forwards {
            // `route`/`region` hold from/to here.
            let labels = format!("from_region=\"{}\",to_region=\"{}\"", esc(&f.route), esc(&f.region));
            f.render_as(out, "meridian_forwards_total", "meridian_forward_duration_seconds", &labels);
        }
        out.push_str(
            "# HELP meridian_forward_failures_total Forwards that failed before the peer answered \
             (unreachable, reset, deadline).\n# TYPE meridian_forward_failures_total counter\n",
        );
        let failures: Vec<((String, String), u64)> = self
            .forward_failures
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        for ((from, to), n) in failures {
            let _ = writeln!(
                out,
                "meridian_forward_failures_total{{from_region=\"{}\",to_region=\"{}\"}} {n}",
                esc(&from),
                esc(&to)
            );
        }
        out.push_str("# HELP meridian_errors_total Requests Meridian answered with an error, by cause.\n");
        out.push_str("# TYPE meridian_errors_total counter\n");
        for (i, kind) in ERROR_KINDS.iter().enumerate() {
            let code = crate::error::GatewayError::new(*kind, "").code();
            let _ = writeln!(
                out,
                "meridian_errors_total{{cause=\"{code}\"}} {}",
                self.errors[i].load(Ordering::Relaxed)
            );
        }
        counter(out, "meridian_retries_total", "Retries of upstream attempts.", &self.retries);
        counter(
            out,
            "meridian_retries_denied_total",
            "Retries refused because the retry budget was spent.",
            &self.retries_denied_by_budget,
        );
        counter(out, "meridian_ejections_total", "Endpoints ejected by outlier detection.", &self.ejections);
        counter(
            out,
            "meridian_health_transitions_total",
            "Endpoints marked up or down by active checks.",
            &self.health_transitions,
        );
        counter(out, "meridian_routing_table_swaps_total", "Routing tables applied.", &self.table_swaps);
    }
}

fn counter(out: &mut String, name: &str, help: &str, v: &AtomicU64) {
    let _ =
        writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
}

/// Escape a Prometheus label value.
pub fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_metrics_render_counts_and_quantiles() {
        let m = Metrics::default();
        let r = m.route("api", "us");
        let now = Instant::now();
        for i in 1..=100 {
            r.record(200, Duration::from_millis(i), now);
        }
        r.record(503, Duration::from_millis(1), now);
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains("meridian_requests_total{route=\"api\",region=\"us\",code=\"200\"} 100"),
            "{out}"
        );
        assert!(out.contains("code=\"503\"} 1"), "{out}");
        let p99 = out
            .lines()
            .find(|l| l.contains("quantile=\"0.99\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .expect("p99 line");
        assert!((0.098..=0.101).contains(&p99), "p99 {p99}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c"), "a\\\"b\\\\c");
    }
}
