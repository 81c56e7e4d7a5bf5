//! The admin API: inspection, routing-table writes, metrics and a small dashboard.
//!
//! Bound to loopback by default. With tokens configured (`admin_tokens`) every path except the
//! probes (`/healthz`, `/readyz`) and the dashboard page needs `Authorization: Bearer <token>`;
//! a read-only token may read every view (with secrets redacted) but a routing-table write with
//! it gets 403. A non-loopback bind without a token is refused at start-up (see `config`).
//! Every committed write is recorded, with the token's name, in the audit trail (`GET /audit`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::admin_tokens::{Caller, LiveTokens, Role};
use crate::cluster::writes::WriteFailure;
use crate::cluster::Cluster;
use crate::core::table::{self, RoutingTable};
use crate::gateway::Gateway;
use crate::route_store::WriteError;
use meridian_raft_store::{Command, CommandResult};

/// Largest routing table accepted over the API.
const MAX_TABLE_BYTES: usize = 8 * 1024 * 1024;

pub struct Admin {
    pub gw: Arc<Gateway>,
    /// Present in cluster mode: writes and history go through Raft, views include gossip.
    pub cluster: Option<Arc<Cluster>>,
    /// `None`: no tokens, every caller is `local` with the admin role (loopback only).
    pub tokens: Option<Arc<LiveTokens>>,
    pub started: tokio::time::Instant,
    pub denied: Denied,
}

/// Refused admin requests, by reason, for `/metrics`.
#[derive(Debug, Default)]
pub struct Denied {
    pub unauthenticated: AtomicU64,
    pub read_only: AtomicU64,
}

/// Largest number of audit records one `GET /audit` returns.
const MAX_AUDIT_PAGE: usize = 1000;

type AdminResponse = Response<Full<Bytes>>;

/// The dashboard page served at `/`: self-contained (no CDN, no build step).
const DASHBOARD: &str = include_str!("dashboard.html");

impl Admin {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> AdminResponse {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let open = matches!(path.as_str(), "/healthz" | "/readyz") || (path == "/" && method == Method::GET);
        let caller = match &self.tokens {
            None => Caller { name: "local".into(), role: Role::Admin },
            Some(tokens) => {
                match tokens.authenticate(req.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes))
                {
                    Some(c) => c,
                    None if open => Caller { name: "anonymous".into(), role: Role::ReadOnly },
                    None => {
                        self.denied.unauthenticated.fetch_add(1, Ordering::Relaxed);
                        return json_response(
                            StatusCode::UNAUTHORIZED,
                            &json!({"error": "missing or wrong bearer token"}),
                        );
                    }
                }
            }
        };
        let writes = matches!(
            (&method, path.as_str()),
            (&Method::PUT, "/routes") | (&Method::POST, "/routes/rollback")
        );
        if writes && caller.role != Role::Admin {
            self.denied.read_only.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(token = %caller.name, %method, %path, "admin write refused: read-only token");
            return json_response(
                StatusCode::FORBIDDEN,
                &json!({"error": format!("token {:?} is read-only: {method} {path} needs an admin token", caller.name)}),
            );
        }
        match (&method, path.as_str()) {
            (&Method::GET, "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
            (&Method::GET, "/readyz") => self.readyz(),
            (&Method::GET, "/cluster") => json_response(StatusCode::OK, &self.cluster()),
            (&Method::GET, "/routes") => self.get_routes(&caller),
            (&Method::PUT, "/routes") => self.put_routes(req, &caller).await,
            (&Method::GET, "/routes/history") => self.history(&caller),
            (&Method::POST, "/routes/rollback") => self.rollback(req, &caller).await,
            (&Method::GET, "/audit") => self.audit(req.uri().query()),
            (&Method::GET, "/quotas") => self.quotas(),
            (&Method::GET, "/metrics") => self.metrics(),
            (&Method::GET, "/") => self.dashboard(),
            (
                _,
                "/healthz" | "/readyz" | "/cluster" | "/routes" | "/routes/history" | "/routes/rollback"
                | "/audit" | "/quotas" | "/metrics" | "/",
            ) => json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": format!("{method} not allowed on {path}")}),
            ),
            _ => json_response(StatusCode::NOT_FOUND, &json!({"error": format!("no admin endpoint {path}")})),
        }
    }

    fn readyz(&self) -> AdminResponse {
        let leader_known = self.cluster.as_ref().is_none_or(|c| c.knows_leader());
        match self.gw.snapshot() {
            Some(s) if leader_known => {
                json_response(StatusCode::OK, &json!({"ready": true, "routing_version": s.version}))
            }
            Some(_) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"ready": false, "reason": "no raft leader known"}),
            ),
            None => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"ready": false, "reason": "no routing table applied yet"}),
            ),
        }
    }

    fn services_health(&self) -> Value {
        let now = tokio::time::Instant::now();
        let mut out = serde_json::Map::new();
        if let Some(snap) = self.gw.snapshot() {
            for svc in &snap.services {
                let healthy = svc.local.iter().filter(|e| e.is_available(now)).count();
                out.insert(svc.name.clone(), json!({"healthy": healthy, "total": svc.local.len()}));
            }
        }
        Value::Object(out)
    }

    /// The contract's cluster view. A node outside a Raft group is its own leader and only member.
    fn cluster(&self) -> Value {
        let version = self.gw.snapshot().map_or(0, |s| s.version);
        if let Some(c) = &self.cluster {
            return c.view(self.services_health(), version);
        }
        let id = &self.gw.identity.id;
        let region = &self.gw.identity.region;
        json!({
            "node": {"id": id, "region": region},
            "raft": {
                "leader": id, "term": 0, "role": "standalone",
                "commit_index": version, "voters": [id], "learners": []
            },
            "routing": {"version": version},
            "members": [{
                "id": id, "region": region, "live": true, "raft_role": "standalone",
                "routing_version": version, "services": self.services_health()
            }]
        })
    }

    fn get_routes(&self, caller: &Caller) -> AdminResponse {
        let (version, mut table) = match self.gw.snapshot() {
            Some(s) => (s.version, serde_json::to_value(&*s.table).unwrap_or(Value::Null)),
            None => (0, serde_json::to_value(RoutingTable::default()).unwrap_or(Value::Null)),
        };
        redact_for(caller, &mut table);
        json_response(StatusCode::OK, &json!({"version": version, "table": table}))
    }

    async fn put_routes(&self, req: Request<Incoming>, caller: &Caller) -> AdminResponse {
        let expected = match req.headers().get(header::IF_MATCH).map(parse_if_match) {
            None => None,
            Some(Some(v)) => Some(v),
            Some(None) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "If-Match must be a version number"}),
                )
            }
        };
        let is_toml = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("toml"));
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        let Ok(text) = std::str::from_utf8(&body) else {
            return json_response(StatusCode::BAD_REQUEST, &json!({"error": "body is not UTF-8"}));
        };
        let parsed = if is_toml { table::parse_toml(text) } else { table::parse_json(text) };
        let table = match parsed {
            Ok(t) => t,
            Err(e) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": e.to_string(), "problems": e.problems}),
                )
            }
        };
        if let Some(c) = &self.cluster {
            let Ok(table_json) = serde_json::to_string(&table) else {
                return json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"error": "table not serialisable"}),
                );
            };
            let cmd = Command::PutTableBy {
                table_json,
                expected_version: expected,
                cause: "write".into(),
                by_node: c.id.clone(),
                who: caller.name.clone(),
                at_ms: crate::gateway::unix_ms(),
            };
            return logged_write(caller, "write", cluster_write_result(c.write(cmd).await));
        }
        logged_write(
            caller,
            "write",
            write_result(self.gw.write_table(table, expected, "write", &caller.name)),
        )
    }

    fn history(&self, caller: &Caller) -> AdminResponse {
        let parse = |json: &str| {
            let mut table: Value = serde_json::from_str(json).unwrap_or(Value::Null);
            redact_for(caller, &mut table);
            table
        };
        if let Some(c) = &self.cluster {
            let versions: Vec<Value> = c
                .raft
                .history()
                .into_iter()
                .map(|v| {
                    json!({"version": v.version, "committed_at_ms": v.committed_at_ms, "cause": v.cause,
                           "by_node": v.by_node, "table": parse(&v.table_json)})
                })
                .collect();
            let current = versions.first().and_then(|v| v["version"].as_u64()).unwrap_or(0);
            return json_response(StatusCode::OK, &json!({"current": current, "versions": versions}));
        }
        let store = self.gw.store();
        let versions: Vec<Value> = store
            .history()
            .map(|v| {
                let mut table = serde_json::to_value(&*v.table).unwrap_or(Value::Null);
                redact_for(caller, &mut table);
                json!({"version": v.version, "committed_at_ms": v.committed_at_ms, "cause": v.cause,
                       "by_node": self.gw.identity.id, "table": table})
            })
            .collect();
        json_response(StatusCode::OK, &json!({"current": store.current_version(), "versions": versions}))
    }

    /// `GET /audit[?limit=N]`: the newest records first (100 by default, at most 1000), and
    /// whether the kept chain of record hashes is intact.
    fn audit(&self, query: Option<&str>) -> AdminResponse {
        let mut limit = 100;
        for (k, v) in query.unwrap_or("").split('&').filter_map(|kv| kv.split_once('=')) {
            if k == "limit" {
                match v.parse::<usize>() {
                    Ok(n) if (1..=MAX_AUDIT_PAGE).contains(&n) => limit = n,
                    _ => {
                        return json_response(
                            StatusCode::BAD_REQUEST,
                            &json!({"error": format!("limit must be 1-{MAX_AUDIT_PAGE}")}),
                        )
                    }
                }
            }
        }
        let log = match &self.cluster {
            Some(c) => c.raft.audit(),
            None => Arc::new(self.gw.store().audit().clone()),
        };
        let chain = match log.verify() {
            meridian_raft_store::audit::ChainCheck::Intact => json!("intact"),
            meridian_raft_store::audit::ChainCheck::BrokenAt(seq) => json!(format!("broken at record {seq}")),
        };
        let records: Vec<Value> = log
            .records()
            .rev()
            .take(limit)
            .map(|r| {
                json!({"seq": r.seq, "at_ms": r.at_ms, "who": r.who, "node": r.node, "action": r.action,
                       "from_version": r.from_version, "to_version": r.to_version,
                       "summary": r.summary, "change": r.summary.text(), "hash": r.hash})
            })
            .collect();
        json_response(
            StatusCode::OK,
            &json!({"records": records, "kept": log.len(), "last_seq": log.last_seq(),
                    "retention": meridian_raft_store::audit::AUDIT_LEN, "chain": chain,
                    "replicated": self.cluster.is_some()}),
        )
    }

    async fn rollback(&self, req: Request<Incoming>, caller: &Caller) -> AdminResponse {
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        let to =
            serde_json::from_slice::<Value>(&body).ok().and_then(|v| v.get("to").and_then(Value::as_u64));
        let Some(to) = to else {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "body must be {\"to\": VERSION}"}),
            );
        };
        if let Some(c) = &self.cluster {
            let cmd = Command::RollbackBy {
                to,
                by_node: c.id.clone(),
                who: caller.name.clone(),
                at_ms: crate::gateway::unix_ms(),
            };
            return logged_write(caller, "rollback", cluster_write_result(c.write(cmd).await));
        }
        logged_write(caller, "rollback", write_result(self.gw.rollback(to, &caller.name)))
    }

    fn quotas(&self) -> AdminResponse {
        json_response(StatusCode::OK, &crate::quota::view::quotas_json(&self.gw))
    }

    fn metrics(&self) -> AdminResponse {
        let mut out = String::with_capacity(8192);
        self.gw.metrics.render(&mut out);
        crate::quota::view::render_metrics(&self.gw, &mut out);
        let gw = &self.gw;
        let version = gw.snapshot().map_or(0, |s| s.version);
        let _ = writeln!(out, "# HELP meridian_in_flight Requests being served by this node.\n# TYPE meridian_in_flight gauge\nmeridian_in_flight {}", gw.in_flight.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP meridian_routing_version Applied routing-table version.\n# TYPE meridian_routing_version gauge\nmeridian_routing_version {version}");
        let _ = writeln!(out, "# HELP meridian_uptime_seconds Time since this node started.\n# TYPE meridian_uptime_seconds gauge\nmeridian_uptime_seconds {}", self.started.elapsed().as_secs());
        out.push_str("# HELP meridian_endpoint_up Whether a local endpoint takes traffic (health checks and ejection).\n# TYPE meridian_endpoint_up gauge\n");
        out.push_str("# HELP meridian_endpoint_in_flight Requests in flight to a local endpoint.\n# TYPE meridian_endpoint_in_flight gauge\n");
        if let Some(snap) = gw.snapshot() {
            let now = tokio::time::Instant::now();
            for svc in &snap.services {
                for ep in &svc.local {
                    let labels = format!(
                        "service=\"{}\",endpoint=\"{}\"",
                        crate::metrics::esc(&svc.name),
                        crate::metrics::esc(&ep.url)
                    );
                    let _ =
                        writeln!(out, "meridian_endpoint_up{{{labels}}} {}", u8::from(ep.is_available(now)));
                    let _ = writeln!(
                        out,
                        "meridian_endpoint_in_flight{{{labels}}} {}",
                        ep.in_flight.load(Ordering::Relaxed)
                    );
                    let _ = writeln!(
                        out,
                        "meridian_endpoint_idle_connections{{{labels}}} {}",
                        ep.pool.idle_count()
                    );
                }
            }
        }
        if let Some(t) = &self.tokens {
            let _ = writeln!(out, "# HELP meridian_admin_tokens Admin tokens in use.\n# TYPE meridian_admin_tokens gauge\nmeridian_admin_tokens {}", t.count());
            let _ = writeln!(out, "# HELP meridian_admin_token_reloads_total Re-reads of the admin token file after it changed.\n# TYPE meridian_admin_token_reloads_total counter");
            let _ = writeln!(
                out,
                "meridian_admin_token_reloads_total{{result=\"ok\"}} {}",
                t.reloads_ok.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "meridian_admin_token_reloads_total{{result=\"error\"}} {}",
                t.reloads_failed.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP meridian_admin_denied_total Admin requests refused: no or unknown token, or a write with a read-only token.\n# TYPE meridian_admin_denied_total counter");
        let _ = writeln!(
            out,
            "meridian_admin_denied_total{{reason=\"unauthenticated\"}} {}",
            self.denied.unauthenticated.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "meridian_admin_denied_total{{reason=\"read_only\"}} {}",
            self.denied.read_only.load(Ordering::Relaxed)
        );
        let audit_seq = match &self.cluster {
            Some(c) => c.raft.audit().last_seq(),
            None => self.gw.store().audit().last_seq(),
        };
        let _ = writeln!(out, "# HELP meridian_audit_last_seq Sequence number of the newest audit record of routing-table writes.\n# TYPE meridian_audit_last_seq gauge\nmeridian_audit_last_seq {audit_seq}");
        if let Some(c) = &self.cluster {
            c.render_metrics(&mut out);
        }
        let mut resp = Response::new(Full::new(Bytes::from(out)));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
        resp
    }

    /// The dashboard: one static page that reads `/cluster`, `/quotas` and `/metrics` from this
    /// node every second. It holds no data itself, so it is served without the token; the data
    /// endpoints it calls still need it (the page asks for it, or takes `#token=...`).
    fn dashboard(&self) -> AdminResponse {
        let mut resp = Response::new(Full::new(Bytes::from_static(DASHBOARD.as_bytes())));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        // Same-origin only: the page talks to this node and nothing else.
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

/// Log one line per routing-table write attempt with its author and outcome.
fn logged_write(caller: &Caller, what: &str, resp: AdminResponse) -> AdminResponse {
    let status = resp.status().as_u16();
    if resp.status().is_success() {
        tracing::info!(token = %caller.name, role = caller.role.as_str(), what, status, "routing table changed");
    } else {
        tracing::info!(token = %caller.name, role = caller.role.as_str(), what, status, "routing table write refused");
    }
    resp
}

/// Secrets a read-only caller does not see: HMAC secrets of JWT keys (API keys are stored as
/// digests and public keys are public). Admin callers get the table as stored, so that a
/// `GET /routes` → edit → `PUT /routes` round trip keeps working.
fn redact_for(caller: &Caller, table: &mut Value) {
    if caller.role == Role::Admin {
        return;
    }
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    if k == "secret_base64" {
                        *v = Value::String("(redacted)".into());
                    } else {
                        walk(v);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(table);
}

fn cluster_write_result(r: Result<CommandResult, WriteFailure>) -> AdminResponse {
    match r {
        Ok(CommandResult::Committed { version }) => {
            json_response(StatusCode::OK, &json!({"version": version}))
        }
        Ok(CommandResult::Conflict { current }) => json_response(
            StatusCode::CONFLICT,
            &json!({"error": format!("version moved: current is {current}"), "version": current}),
        ),
        Ok(CommandResult::UnknownVersion(v)) => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("version {v} is not in the kept history")}),
        ),
        Ok(CommandResult::QuotaRound) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "a routing write was answered as a quota round"}),
        ),
        Err(e @ (WriteFailure::NoLeader | WriteFailure::NoQuorum(_))) => {
            json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": e.to_string()}))
        }
        Err(e @ WriteFailure::TooLarge(_)) => {
            json_response(StatusCode::PAYLOAD_TOO_LARGE, &json!({"error": e.to_string()}))
        }
        Err(e @ WriteFailure::Internal(_)) => {
            json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": e.to_string()}))
        }
    }
}

fn write_result(r: Result<u64, WriteError>) -> AdminResponse {
    match r {
        Ok(version) => json_response(StatusCode::OK, &json!({"version": version})),
        Err(WriteError::Invalid(e)) => {
            json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string(), "problems": e.problems}))
        }
        Err(e @ WriteError::Conflict { current, .. }) => {
            json_response(StatusCode::CONFLICT, &json!({"error": e.to_string(), "version": current}))
        }
        Err(e @ WriteError::UnknownVersion(_)) => {
            json_response(StatusCode::NOT_FOUND, &json!({"error": e.to_string()}))
        }
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, AdminResponse> {
    match Limited::new(req.into_body(), MAX_TABLE_BYTES).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({"error": format!("body larger than {MAX_TABLE_BYTES} bytes")}),
        )),
        Err(e) => {
            Err(json_response(StatusCode::BAD_REQUEST, &json!({"error": format!("reading body: {e}")})))
        }
    }
}

fn parse_if_match(v: &HeaderValue) -> Option<u64> {
    let s = v.to_str().ok()?.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    s.trim_matches('"').parse().ok()
}

pub fn json_response(status: StatusCode, body: &Value) -> AdminResponse {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_accepts_plain_and_quoted_versions() {
        assert_eq!(parse_if_match(&HeaderValue::from_static("3")), Some(3));
        assert_eq!(parse_if_match(&HeaderValue::from_static("\"7\"")), Some(7));
        assert_eq!(parse_if_match(&HeaderValue::from_static("W/\"9\"")), Some(9));
        assert_eq!(parse_if_match(&HeaderValue::from_static("abc")), None);
    }

    #[test]
    fn read_only_callers_see_no_hmac_secret() {
        let table = json!({"routes": [{"name": "r", "auth": {"jwt": {"keys": [
            {"alg": "HS256", "secret_base64": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"},
            {"alg": "ES256", "pem": "-----BEGIN PUBLIC KEY-----"}]}}}]});
        let mut seen = table.clone();
        redact_for(&Caller { name: "g".into(), role: Role::ReadOnly }, &mut seen);
        assert_eq!(seen["routes"][0]["auth"]["jwt"]["keys"][0]["secret_base64"], "(redacted)");
        assert_eq!(seen["routes"][0]["auth"]["jwt"]["keys"][1]["pem"], "-----BEGIN PUBLIC KEY-----");
        let mut admin = table.clone();
        redact_for(&Caller { name: "ops".into(), role: Role::Admin }, &mut admin);
        assert_eq!(admin, table);
    }
}
