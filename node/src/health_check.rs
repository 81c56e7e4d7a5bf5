//! Active health checking of this node's own region's endpoints.
//!
//! One task per (service, endpoint) with a health check, restarted whenever a new routing table
//! is applied. Probes are jittered (±10 % of the interval, random first delay) so a fleet of nodes
//! does not probe in lockstep. Verdicts go through the core's thresholds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::header;
use rand::Rng;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::core::health::Transition;
use crate::core::table::HealthCheckSpec;
use crate::gateway::{EndpointRuntime, Gateway, ServiceRuntime};
use crate::proxy::body::UpBody;
use crate::proxy::pool::{OwnFields, RequestHead, UpstreamBody};

/// Follow the applied routing table until `shutdown` fires, keeping one prober per endpoint.
pub async fn run(gw: Arc<Gateway>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut changes = gw.watch();
    let mut probes = JoinSet::new();
    loop {
        probes.abort_all();
        if let Some(snap) = changes.borrow_and_update().clone() {
            for svc in &snap.services {
                let Some(spec) = svc.spec.health_check.clone() else { continue };
                for ep in &svc.local {
                    probes.spawn(probe_loop(gw.clone(), svc.clone(), ep.clone(), spec.clone()));
                }
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            _ = shutdown.changed() => break,
        }
    }
    probes.abort_all();
}

async fn probe_loop(
    gw: Arc<Gateway>,
    svc: Arc<ServiceRuntime>,
    ep: Arc<EndpointRuntime>,
    spec: HealthCheckSpec,
) {
    let interval = Duration::from_millis(spec.interval_ms);
    let first = rand::thread_rng().gen_range(0..=spec.interval_ms);
    tokio::time::sleep(Duration::from_millis(first)).await;
    loop {
        let ok = probe(&ep, &spec).await;
        let transition = ep.health.lock().ok().and_then(|mut h| h.on_check(ok, &svc.policy));
        if let Some(t) = transition {
            gw.metrics.health_transitions.fetch_add(1, Ordering::Relaxed);
            match t {
                Transition::MarkedDown => {
                    tracing::warn!(service = %svc.name, endpoint = %ep.url, "endpoint failed health checks: marked down")
                }
                Transition::MarkedUp => {
                    tracing::info!(service = %svc.name, endpoint = %ep.url, "endpoint passed health checks: marked up")
                }
                Transition::Ejected { .. } => {}
            }
        }
        let jitter = rand::thread_rng().gen_range(0.9..1.1);
        tokio::time::sleep(interval.mul_f64(jitter)).await;
    }
}

/// One probe: a GET of the check path answered 2xx within the timeout.
async fn probe(ep: &EndpointRuntime, spec: &HealthCheckSpec) -> bool {
    let timeout = Duration::from_millis(spec.timeout_ms);
    let deadline = Instant::now() + timeout;
    let attempt = async {
        let conn = ep.pool.checkout(timeout, Instant::now()).await.ok()?;
        let mut headers = http::HeaderMap::new();
        headers.insert(header::HOST, http::HeaderValue::from_str(ep.pool.authority().as_str()).ok()?);
        headers.insert(header::USER_AGENT, http::HeaderValue::from_static("meridian-health-check"));
        let head = RequestHead {
            method: http::Method::GET,
            uri: spec.path.parse().ok()?,
            headers,
            own: OwnFields::default(),
        };
        let resp = ep.pool.send(conn, &head, UpBody::Empty, Instant::now(), deadline).await.ok()?;
        let ok = resp.status().is_success();
        // Drain the (small) body so the connection can be reused.
        let _ = match resp.into_body() {
            UpstreamBody::H1(b) => http_body_util::BodyExt::collect(b).await.map(drop).map_err(drop),
            UpstreamBody::H2(b) => http_body_util::BodyExt::collect(b).await.map(drop).map_err(drop),
        };
        Some(ok)
    };
    matches!(tokio::time::timeout_at(deadline, attempt).await, Ok(Some(true)))
}
