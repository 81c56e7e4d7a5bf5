//! The routing table: the contract users write (services, routes, quotas), and its validation.
//!
//! This module owns the *shape* of a table and the rules that make one valid. It does no IO and
//! knows nothing of how a table is stored or replicated; `compiled.rs` turns a valid table into the
//! structure the data plane matches requests against.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Upper bounds that keep a table from being a denial of service on every node that applies it.
pub const MAX_SERVICES: usize = 10_000;
pub const MAX_ROUTES: usize = 10_000;
pub const MAX_ENDPOINTS_PER_REGION: usize = 1_000;
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;
pub const MAX_RETRIES: u32 = 10;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingTable {
    #[serde(default)]
    pub services: BTreeMap<String, ServiceSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub quotas: BTreeMap<String, QuotaSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Region name -> endpoint base URLs (`http://host:port`).
    pub endpoints: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    /// Total time a request may take to get response headers, all attempts included.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Time one attempt may take; defaults to `timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u64>,
    /// Extra attempts after the first, within the retry budget.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// What the endpoints speak: `http1` (pooled keep-alive) or `h2c` (HTTP/2, prior knowledge).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<OutlierSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverSpec>,
}

/// Cross-region failover of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverSpec {
    /// Forward every request while fewer than this percentage of the local endpoints are
    /// available (0: only when none is). Spares a region that is mostly down from piling all its
    /// traffic onto the endpoints it has left.
    #[serde(default)]
    pub local_healthy_below_percent: u8,
    /// Forwards after a failed local attempt, as a share of requests (a budget separate from the
    /// local retry budget). Forwards because no local endpoint is available are not budgeted.
    #[serde(default = "default_failover_budget")]
    pub budget_ratio: f64,
    /// Set to false to keep the service's requests in their region.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_failover_budget() -> f64 {
    0.2
}
fn default_true() -> bool {
    true
}

impl Default for FailoverSpec {
    fn default() -> Self {
        FailoverSpec {
            local_healthy_below_percent: 0,
            budget_ratio: default_failover_budget(),
            enabled: true,
        }
    }
}

fn default_timeout_ms() -> u64 {
    15_000
}
fn default_retries() -> u32 {
    2
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    H2c,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    pub path: String,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_check_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive passing checks before a failed endpoint takes traffic again.
    #[serde(default = "default_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failing checks before an endpoint stops taking traffic.
    #[serde(default = "default_threshold")]
    pub unhealthy_threshold: u32,
}

fn default_interval_ms() -> u64 {
    1_000
}
fn default_check_timeout_ms() -> u64 {
    500
}
fn default_threshold() -> u32 {
    2
}

/// Passive outlier detection: real traffic failing in a row ejects an endpoint for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierSpec {
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    #[serde(default = "default_base_ejection_ms")]
    pub base_ejection_ms: u64,
    #[serde(default = "default_max_ejection_ms")]
    pub max_ejection_ms: u64,
    /// Never eject more than this share of a region's endpoints: past it, a struggling endpoint
    /// still beats none.
    #[serde(default = "default_max_ejected_percent")]
    pub max_ejected_percent: u8,
}

fn default_consecutive_failures() -> u32 {
    5
}
fn default_base_ejection_ms() -> u64 {
    5_000
}
fn default_max_ejection_ms() -> u64 {
    60_000
}
fn default_max_ejected_percent() -> u8 {
    50
}

impl Default for OutlierSpec {
    fn default() -> Self {
        OutlierSpec {
            consecutive_failures: default_consecutive_failures(),
            base_ejection_ms: default_base_ejection_ms(),
            max_ejection_ms: default_max_ejection_ms(),
            max_ejected_percent: default_max_ejected_percent(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: String,
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<StripPrefix>,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
    /// Client addresses admitted (CIDRs or single addresses); omitted, every address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// Client addresses refused, before `allow` is consulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<Vec<String>>,
    /// Client authentication (API keys, JWTs); its shape and rules live in `crate::auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::auth::AuthSpec>,
}

fn default_prefix() -> String {
    "/".to_string()
}

/// `true` strips the route's `path_prefix`; a string strips that prefix when the path has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StripPrefix {
    Matched(bool),
    Given(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    pub key: String,
    pub limit: u64,
    pub window_ms: u64,
    #[serde(default)]
    pub on_partition: OnPartition,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnPartition {
    #[default]
    LocalShare,
    Closed,
    Open,
}

/// A table that failed validation: every problem found, each naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError {
    pub problems: Vec<String>,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid routing table: {}", self.problems.join("; "))
    }
}

impl std::error::Error for TableError {}

/// Parse a table from JSON, naming the path of the first field that does not fit the schema.
pub fn parse_json(text: &str) -> Result<RoutingTable, TableError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let table: RoutingTable = serde_path_to_error::deserialize(de).map_err(|e| TableError {
        problems: vec![format!("{}: {}", display_path(&e.path().to_string()), e.inner())],
    })?;
    table.validate()?;
    Ok(table)
}

/// Parse a table from TOML, with the same rules as JSON.
pub fn parse_toml(text: &str) -> Result<RoutingTable, TableError> {
    let de = toml::Deserializer::new(text);
    let table: RoutingTable = serde_path_to_error::deserialize(de).map_err(|e| TableError {
        problems: vec![format!("{}: {}", display_path(&e.path().to_string()), e.inner())],
    })?;
    table.validate()?;
    Ok(table)
}

fn display_path(path: &str) -> &str {
    if path == "." || path == "?" || path.is_empty() {
        "table"
    } else {
        path
    }
}

impl RoutingTable {
    /// Check every rule; report all problems at once so an operator fixes a file in one pass.
    pub fn validate(&self) -> Result<(), TableError> {
        let mut p = Vec::new();
        if self.services.len() > MAX_SERVICES {
            p.push(format!("services: more than {MAX_SERVICES} services"));
        }
        if self.routes.len() > MAX_ROUTES {
            p.push(format!("routes: more than {MAX_ROUTES} routes"));
        }
        for (name, svc) in &self.services {
            validate_service(name, svc, &mut p);
        }
        let mut seen = std::collections::HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            if !valid_name(&route.name) {
                p.push(format!("{at}.name: {:?} must be 1-128 characters of [A-Za-z0-9_.-]", route.name));
            } else if !seen.insert(route.name.as_str()) {
                p.push(format!("{at}.name: duplicate route name {:?}", route.name));
            }
            if !route.path_prefix.starts_with('/') {
                p.push(format!("{at}.path_prefix: {:?} must start with '/'", route.path_prefix));
            }
            if let Some(host) = &route.host {
                if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:*".contains(&b))
                {
                    p.push(format!("{at}.host: {host:?} is not a host name"));
                }
            }
            if let Some(methods) = &route.methods {
                if methods.is_empty() {
                    p.push(format!("{at}.methods: must list at least one method (omit it to match all)"));
                }
                for m in methods {
                    if http::Method::from_bytes(m.as_bytes()).is_err() || m.is_empty() {
                        p.push(format!("{at}.methods: {m:?} is not an HTTP method"));
                    }
                }
            }
            if let Some(StripPrefix::Given(prefix)) = &route.strip_prefix {
                if !prefix.starts_with('/') {
                    p.push(format!("{at}.strip_prefix: {prefix:?} must start with '/'"));
                }
            }
            if !self.services.contains_key(&route.service) {
                p.push(format!("{at}.service: unknown service {:?}", route.service));
            }
            if let Some(q) = &route.quota {
                if !self.quotas.contains_key(q) {
                    p.push(format!("{at}.quota: unknown quota {q:?}"));
                }
            }
            if let Err(problems) = crate::auth::EdgePolicy::compile(route, &at) {
                p.extend(problems);
            }
        }
        for (name, q) in &self.quotas {
            let at = format!("quotas.{name}");
            if !valid_name(name) {
                p.push(format!("{at}: quota name must be 1-128 characters of [A-Za-z0-9_.-]"));
            }
            let key_ok = match q.key.split_once(':') {
                Some(("header", h)) => http::HeaderName::from_bytes(h.as_bytes()).is_ok(),
                None => matches!(q.key.as_str(), "client_ip" | "route" | "identity"),
                _ => false,
            };
            if !key_ok {
                p.push(format!("{at}.key: {:?} must be header:NAME, client_ip, route or identity", q.key));
            }
            if q.limit == 0 {
                p.push(format!("{at}.limit: must be at least 1"));
            }
            if q.window_ms == 0 || q.window_ms > 86_400_000 {
                p.push(format!("{at}.window_ms: must be between 1 and 86400000"));
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(TableError { problems: p })
        }
    }
}

fn validate_service(name: &str, svc: &ServiceSpec, p: &mut Vec<String>) {
    let at = format!("services.{name}");
    if !valid_name(name) {
        p.push(format!("{at}: service name must be 1-128 characters of [A-Za-z0-9_.-]"));
    }
    if svc.endpoints.values().all(|v| v.is_empty()) {
        p.push(format!("{at}.endpoints: needs at least one endpoint in some region"));
    }
    for (region, urls) in &svc.endpoints {
        if !valid_name(region) {
            p.push(format!(
                "{at}.endpoints.{region}: region name must be 1-128 characters of [A-Za-z0-9_.-]"
            ));
        }
        if urls.len() > MAX_ENDPOINTS_PER_REGION {
            p.push(format!("{at}.endpoints.{region}: more than {MAX_ENDPOINTS_PER_REGION} endpoints"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, url) in urls.iter().enumerate() {
            if let Err(why) = parse_endpoint(url) {
                p.push(format!("{at}.endpoints.{region}[{i}]: {url:?} {why}"));
            } else if !seen.insert(url) {
                p.push(format!("{at}.endpoints.{region}[{i}]: duplicate endpoint {url:?}"));
            }
        }
    }
    if svc.timeout_ms == 0 || svc.timeout_ms > MAX_TIMEOUT_MS {
        p.push(format!("{at}.timeout_ms: must be between 1 and {MAX_TIMEOUT_MS}"));
    }
    if let Some(t) = svc.per_try_timeout_ms {
        if t == 0 || t > svc.timeout_ms {
            p.push(format!("{at}.per_try_timeout_ms: must be between 1 and timeout_ms ({})", svc.timeout_ms));
        }
    }
    if svc.retries > MAX_RETRIES {
        p.push(format!("{at}.retries: at most {MAX_RETRIES}"));
    }
    if let Some(hc) = &svc.health_check {
        if !hc.path.starts_with('/') || http::uri::PathAndQuery::try_from(hc.path.as_str()).is_err() {
            p.push(format!("{at}.health_check.path: {:?} must be a path starting with '/'", hc.path));
        }
        if hc.interval_ms < 50 || hc.interval_ms > MAX_TIMEOUT_MS {
            p.push(format!("{at}.health_check.interval_ms: must be between 50 and {MAX_TIMEOUT_MS}"));
        }
        if hc.timeout_ms == 0 || hc.timeout_ms > hc.interval_ms.max(1) * 10 {
            p.push(format!("{at}.health_check.timeout_ms: must be between 1 and 10x interval_ms"));
        }
        if hc.healthy_threshold == 0 || hc.unhealthy_threshold == 0 {
            p.push(format!("{at}.health_check: thresholds must be at least 1"));
        }
    }
    if let Some(f) = &svc.failover {
        if f.local_healthy_below_percent > 100 {
            p.push(format!("{at}.failover.local_healthy_below_percent: at most 100"));
        }
        if !(0.0..=10.0).contains(&f.budget_ratio) {
            p.push(format!("{at}.failover.budget_ratio: must be between 0 and 10"));
        }
    }
    if let Some(o) = &svc.outlier {
        if o.consecutive_failures == 0 {
            p.push(format!("{at}.outlier.consecutive_failures: must be at least 1"));
        }
        if o.base_ejection_ms == 0 || o.max_ejection_ms < o.base_ejection_ms {
            p.push(format!("{at}.outlier: need 0 < base_ejection_ms <= max_ejection_ms"));
        }
        if o.max_ejected_percent > 100 {
            p.push(format!("{at}.outlier.max_ejected_percent: at most 100"));
        }
    }
}

/// An endpoint is a base URL: `http://host:port`, no path beyond `/`, no query, no credentials.
pub fn parse_endpoint(url: &str) -> Result<http::uri::Authority, &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| "is not a URL")?;
    if uri.scheme_str() != Some("http") {
        return Err("must use the http scheme (TLS to upstreams is not supported yet)");
    }
    let auth = uri.authority().ok_or("has no host")?.clone();
    if auth.as_str().contains('@') {
        return Err("must not carry credentials");
    }
    if auth.host().is_empty() {
        return Err("has no host");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("must not have a path or query");
    }
    Ok(auth)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
      "services": { "echo": {
          "endpoints": { "us": ["http://10.0.1.5:9000"], "eu": ["http://10.0.2.5:9000"] },
          "health_check": { "path": "/healthz", "interval_ms": 1000, "timeout_ms": 500 },
          "timeout_ms": 5000, "retries": 2 } },
      "routes": [ { "name": "all", "path_prefix": "/", "service": "echo", "quota": "per-tenant" } ],
      "quotas": { "per-tenant": { "key": "header:x-tenant", "limit": 100, "window_ms": 1000,
                                  "on_partition": "local_share" } }
    }"#;

    #[test]
    fn contract_example_parses() {
        let t = parse_json(GOOD).expect("contract example is valid");
        assert_eq!(t.services["echo"].retries, 2);
        assert_eq!(t.quotas["per-tenant"].on_partition, OnPartition::LocalShare);
    }

    #[test]
    fn toml_parses_the_same_table() {
        let text = r#"
            [services.echo]
            endpoints = { us = ["http://127.0.0.1:9000"] }
            [[routes]]
            name = "all"
            service = "echo"
            strip_prefix = true
        "#;
        let t = parse_toml(text).expect("valid toml");
        assert_eq!(t.routes[0].path_prefix, "/");
        assert_eq!(t.routes[0].strip_prefix, Some(StripPrefix::Matched(true)));
    }

    #[test]
    fn unknown_field_names_its_path() {
        let text = r#"{"services": {"a": {"endpoints": {"us": ["http://x:1"]}, "timeout": 5}}}"#;
        let e = parse_json(text).unwrap_err().to_string();
        assert!(e.contains("services.a"), "{e}");
        assert!(e.contains("timeout"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let text = r#"{
          "services": { "a": { "endpoints": { "us": ["ftp://x:1", "http://y:2/path"] }, "timeout_ms": 0 } },
          "routes": [ { "name": "r", "path_prefix": "nope", "service": "missing", "quota": "q" } ]
        }"#;
        let e = parse_json(text).unwrap_err();
        let all = e.problems.join("\n");
        for needle in [
            "services.a.endpoints.us[0]",
            "services.a.endpoints.us[1]",
            "services.a.timeout_ms",
            "routes[0].path_prefix",
            "routes[0].service",
            "routes[0].quota",
        ] {
            assert!(all.contains(needle), "missing {needle} in:\n{all}");
        }
    }

    #[test]
    fn bad_quota_key_is_refused() {
        let mut t = parse_json(GOOD).expect("valid");
        t.quotas.get_mut("per-tenant").expect("quota").key = "cookie:x".into();
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("quotas.per-tenant.key"), "{e}");
    }

    #[test]
    fn duplicate_route_names_are_refused() {
        let mut t = parse_json(GOOD).expect("valid");
        let r = t.routes[0].clone();
        t.routes.push(r);
        assert!(t.validate().unwrap_err().to_string().contains("duplicate route name"));
    }
}
