//! Key schema: how a node's facts are spelled as chitchat key-values.
//!
//! Owns the key names, the value formats, the size limits and the parse/format functions. One
//! chitchat key per fact, so an update re-publishes only the facts that changed, and one key per
//! service (`svc:<name>` = `healthy/total`), so a health flip costs one small key, not the map.
//!
//! Encoding is strict: we refuse to publish a value our peers would refuse to read. Decoding is
//! defensive, because anyone who can send a UDP datagram can write here: every value is
//! size-limited and parsed, a malformed value is skipped with a debug log (the fact keeps its
//! default), unknown keys are ignored (a newer peer may publish more), and nothing panics.
//! This module never touches chitchat or the network.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tracing::debug;

use crate::facts::{NodeFacts, ServiceHealth};

/// Cluster id of the publishing node; members of another cluster are never shown.
pub const CLUSTER: &str = "cluster";
pub const REGION: &str = "region";
pub const HTTP: &str = "http";
pub const ADMIN: &str = "admin";
pub const PEER: &str = "peer";
pub const ROUTING_VERSION: &str = "routing_version";
pub const RAFT_ROLE: &str = "raft_role";
pub const LOAD: &str = "load";
pub const DRAINING: &str = "draining";
/// Set when the node has announced its departure: it is reported not live at once, without
/// waiting for the failure detector.
pub const LEFT: &str = "left";
/// One key per service: `svc:<name>` = `healthy/total`.
pub const SERVICE_PREFIX: &str = "svc:";
/// Every key outside the `svc:` family.
pub const FACT_KEYS: [&str; 10] =
    [CLUSTER, REGION, HTTP, ADMIN, PEER, ROUTING_VERSION, RAFT_ROLE, LOAD, DRAINING, LEFT];

/// Longest value we publish or accept. Facts are short; a long value is either a bug or an
/// attempt to bloat every node's memory through gossip.
pub const MAX_VALUE_LEN: usize = 256;
/// Longest service name carried in a `svc:` key.
pub const MAX_SERVICE_NAME_LEN: usize = 128;
/// Most services one node may report; a larger map is cut at this many (in key order).
pub const MAX_SERVICES: usize = 1000;
/// Raft roles a node may report; the empty string means unknown.
pub const RAFT_ROLES: [&str; 6] = ["leader", "follower", "learner", "candidate", "standalone", ""];

/// A value that does not follow the schema.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("{key}: value is {len} bytes, the limit is {MAX_VALUE_LEN}")]
    TooLong { key: String, len: usize },
    #[error("{key}: {reason}")]
    Malformed { key: String, reason: &'static str },
    #[error("{count} services, the limit is {MAX_SERVICES}")]
    TooManyServices { count: usize },
}

/// The key-values a node publishes, and whatever of its facts could not be published.
#[derive(Debug, Default)]
pub struct Encoded {
    pub keys: BTreeMap<String, String>,
    pub rejected: Vec<SchemaError>,
}

/// What a peer's key-values say, after defensive parsing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decoded {
    /// `None` when the key is missing or malformed: such a node is not known to be ours.
    pub cluster_id: Option<String>,
    pub facts: NodeFacts,
    pub left: bool,
}

/// Spells our state as key-values. Every value is checked with the parser peers will use, so
/// what we publish is what they read; a value that fails is left out and reported.
pub fn encode(cluster_id: &str, facts: &NodeFacts, left: bool) -> Encoded {
    let mut out = Encoded::default();
    let mut put = |key: &str, value: String, check: fn(&str) -> Result<(), &'static str>| match check_value(
        key, &value, check,
    ) {
        Ok(()) => {
            out.keys.insert(key.to_owned(), value);
        }
        Err(err) => out.rejected.push(err),
    };
    put(CLUSTER, cluster_id.to_owned(), |v| parse_cluster_id(v).map(drop));
    put(REGION, facts.region.clone(), |v| parse_text(v).map(drop));
    put(HTTP, facts.http_addr.clone(), |v| parse_addr(v).map(drop));
    put(ADMIN, facts.admin_addr.clone(), |v| parse_addr(v).map(drop));
    put(PEER, facts.peer_addr.clone(), |v| parse_addr(v).map(drop));
    put(ROUTING_VERSION, facts.routing_version.to_string(), |v| parse_u64(v).map(drop));
    put(RAFT_ROLE, facts.raft_role.clone(), |v| parse_raft_role(v).map(drop));
    put(LOAD, facts.load.to_string(), |v| parse_u32(v).map(drop));
    put(DRAINING, facts.draining.to_string(), |v| parse_bool(v).map(drop));
    put(LEFT, left.to_string(), |v| parse_bool(v).map(drop));

    if facts.services.len() > MAX_SERVICES {
        out.rejected.push(SchemaError::TooManyServices { count: facts.services.len() });
    }
    for (name, health) in facts.services.iter().take(MAX_SERVICES) {
        let key = service_key(name);
        if let Err(reason) = parse_service_name(&key) {
            out.rejected.push(SchemaError::Malformed { key, reason });
            continue;
        }
        let value = format_service_health(*health);
        match check_value(&key, &value, |v| parse_service_health(v).map(drop)) {
            Ok(()) => {
                out.keys.insert(key, value);
            }
            Err(err) => out.rejected.push(err),
        }
    }
    out
}

/// Reads a peer's key-values. `node` only labels the debug logs.
pub fn decode<'a>(node: &str, kvs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Decoded {
    let mut out = Decoded::default();
    let mut services_seen = 0usize;
    for (key, value) in kvs {
        if value.len() > MAX_VALUE_LEN {
            debug!(node, key = %truncated(key), len = value.len(), "gossip value too long, ignored");
            continue;
        }
        let applied = match key {
            CLUSTER => parse_cluster_id(value).map(|v| out.cluster_id = Some(v)),
            REGION => parse_text(value).map(|v| out.facts.region = v),
            HTTP => parse_addr(value).map(|v| out.facts.http_addr = v),
            ADMIN => parse_addr(value).map(|v| out.facts.admin_addr = v),
            PEER => parse_addr(value).map(|v| out.facts.peer_addr = v),
            ROUTING_VERSION => parse_u64(value).map(|v| out.facts.routing_version = v),
            RAFT_ROLE => parse_raft_role(value).map(|v| out.facts.raft_role = v),
            LOAD => parse_u32(value).map(|v| out.facts.load = v),
            DRAINING => parse_bool(value).map(|v| out.facts.draining = v),
            LEFT => parse_bool(value).map(|v| out.left = v),
            _ if key.starts_with(SERVICE_PREFIX) => {
                if services_seen >= MAX_SERVICES {
                    // Keep the first MAX_SERVICES in key order: bounded work and memory per peer.
                    debug!(node, key = %truncated(key), "too many services, ignored");
                    continue;
                }
                parse_service_name(key).and_then(|name| {
                    let health = parse_service_health(value)?;
                    services_seen += 1;
                    out.facts.services.insert(name.to_owned(), health);
                    Ok(())
                })
            }
            // A newer peer may publish keys we do not know yet.
            _ => Ok(()),
        };
        if let Err(reason) = applied {
            let (key, value) = (truncated(key), truncated(value));
            debug!(node, key, value, reason, "malformed gossip value, ignored");
        }
    }
    out
}

fn check_value(
    key: &str,
    value: &str,
    check: fn(&str) -> Result<(), &'static str>,
) -> Result<(), SchemaError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(SchemaError::TooLong { key: key.to_owned(), len: value.len() });
    }
    check(value).map_err(|reason| SchemaError::Malformed { key: key.to_owned(), reason })
}

/// Log-safe prefix of a peer-supplied string: debug logs must not be a way to flood our logs.
fn truncated(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub fn service_key(name: &str) -> String {
    format!("{SERVICE_PREFIX}{name}")
}

/// The service name inside a `svc:<name>` key.
pub fn parse_service_name(key: &str) -> Result<&str, &'static str> {
    let name = key.strip_prefix(SERVICE_PREFIX).ok_or("not a service key")?;
    if name.is_empty() {
        return Err("empty service name");
    }
    if name.len() > MAX_SERVICE_NAME_LEN {
        return Err("service name too long");
    }
    if name.chars().any(char::is_control) {
        return Err("control character in service name");
    }
    Ok(name)
}

pub fn format_service_health(health: ServiceHealth) -> String {
    format!("{}/{}", health.healthy, health.total)
}

/// `healthy/total`, both decimal, `healthy <= total`.
pub fn parse_service_health(value: &str) -> Result<ServiceHealth, &'static str> {
    let (healthy, total) = value.split_once('/').ok_or("expected healthy/total")?;
    let healthy = parse_u32(healthy)?;
    let total = parse_u32(total)?;
    if healthy > total {
        return Err("more healthy endpoints than endpoints");
    }
    Ok(ServiceHealth { healthy, total })
}

/// Free text (region): bounded, no control characters (they would end up in logs and HTML).
pub fn parse_text(value: &str) -> Result<String, &'static str> {
    if value.len() > MAX_VALUE_LEN {
        return Err("too long");
    }
    if value.chars().any(char::is_control) {
        return Err("control character");
    }
    Ok(value.to_owned())
}

pub fn parse_cluster_id(value: &str) -> Result<String, &'static str> {
    if value.is_empty() {
        return Err("empty cluster id");
    }
    parse_text(value)
}

/// `host:port` where host is an IP (IPv6 in brackets) or a DNS name; empty means unknown.
/// Kept as a string because DNS names are legal, but checked so a peer cannot hand us
/// something a dialer would misread.
pub fn parse_addr(value: &str) -> Result<String, &'static str> {
    if value.is_empty() || value.parse::<SocketAddr>().is_ok() {
        return Ok(value.to_owned());
    }
    let (host, port) = value.rsplit_once(':').ok_or("expected host:port")?;
    parse_u16(port)?;
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err("expected host:port with an IP address or a DNS name");
    }
    Ok(value.to_owned())
}

pub fn parse_raft_role(value: &str) -> Result<String, &'static str> {
    if RAFT_ROLES.contains(&value) {
        Ok(value.to_owned())
    } else {
        Err("unknown raft role")
    }
}

pub fn parse_bool(value: &str) -> Result<bool, &'static str> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false"),
    }
}

/// Plain ASCII decimal only: no sign, no spaces, no leading `+` that `str::parse` would take.
fn digits(value: &str) -> Result<&str, &'static str> {
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a decimal number");
    }
    Ok(value)
}

pub fn parse_u64(value: &str) -> Result<u64, &'static str> {
    digits(value)?.parse().map_err(|_| "number out of range")
}

pub fn parse_u32(value: &str) -> Result<u32, &'static str> {
    digits(value)?.parse().map_err(|_| "number out of range")
}

fn parse_u16(value: &str) -> Result<u16, &'static str> {
    digits(value)?.parse().map_err(|_| "port out of range")
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
