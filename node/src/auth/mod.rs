//! Edge checks of the data plane: route-level IP allow/deny lists and client authentication
//! (API keys, JWTs), and the identity they establish.
//!
//! A route's `allow`, `deny` and `auth` are compiled once per routing-table version into an
//! [`EdgePolicy`] (parsed CIDRs, key digests, verification keys); the request path only matches
//! and verifies. Order on a client request: IP lists (403 `ip_denied`), then authentication
//! (401 `unauthenticated`, 403 `forbidden` for a valid token issued for another audience), then
//! the quota, then the upstream. A request forwarded by a peer passed these checks at its origin
//! and is not checked again.
//!
//! This module decides; it does no IO, reads no clock (the caller passes the time) and never
//! panics on input. It must not log credentials or put them in error messages.
//!
//! - `spec.rs`: the `auth` field as written in the table.
//! - `cidr.rs`: CIDR parsing and matching. `api_key.rs`: digests and the constant-time lookup.
//! - `jwt_key.rs`: verification keys from PEM or secrets. `jwt.rs`: token verification.

pub mod api_key;
pub mod cidr;
pub mod jwt;
pub mod jwt_key;
pub mod sig_cache;
pub mod spec;

use std::collections::HashSet;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::core::table::RouteSpec;
use crate::error::{ErrorKind, GatewayError};
use api_key::ApiKeys;
use cidr::IpRules;
use jwt::JwtVerifier;
use jwt_key::JwtKey;
pub use spec::{ApiKeySpec, AuthSpec, JwtKeySpec, JwtSpec};

/// The identity Meridian established for a request, as the upstream receives it. Whatever a
/// client sends under this name is removed first: only Meridian says who a client is.
pub const X_MERIDIAN_IDENTITY: HeaderName = HeaderName::from_static("x-meridian-identity");

const DEFAULT_API_KEY_HEADER: &str = "x-api-key";
pub const MAX_JWT_KEYS: usize = 32;
const MAX_AUDIENCES: usize = 32;
const MAX_CLAIM_VALUE_BYTES: usize = 1024;
const MAX_LEEWAY_S: u64 = 3600;

/// Headers a credential may not be read from: framing, routing, and what Meridian itself sets.
const RESERVED_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "x-meridian-identity",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
];

/// A route's edge rules, compiled.
pub struct EdgePolicy {
    ip: Option<IpRules>,
    auth: Option<Authenticator>,
    /// Set when the rules could not be compiled: the route then refuses every request.
    closed: bool,
}

struct Authenticator {
    api_keys: Option<(HeaderName, ApiKeys)>,
    jwt: Option<JwtCheck>,
    forward_credentials: bool,
    /// What a request without credentials is told, and the challenges of the 401s.
    missing: String,
    challenge: HeaderValue,
    challenge_bad_token: HeaderValue,
}

struct JwtCheck {
    header: HeaderName,
    /// `authorization: Bearer TOKEN` rather than the bare token.
    bearer: bool,
    verifier: JwtVerifier,
}

/// Run the edge checks of a client request (never a forwarded one) on its headers: refuse it, or
/// admit it with its identity set in `x-meridian-identity` and, unless the route forwards them,
/// its credentials removed. `now_s` (Unix seconds) is asked for only when a token is checked.
pub fn admit(
    policy: Option<&EdgePolicy>,
    headers: &mut HeaderMap,
    client_ip: IpAddr,
    now_s: impl FnOnce() -> u64,
) -> Result<(), GatewayError> {
    headers.remove(X_MERIDIAN_IDENTITY);
    let Some(policy) = policy else { return Ok(()) };
    if policy.closed {
        return Err(GatewayError::new(ErrorKind::Forbidden, "this route's access rules are not usable"));
    }
    if let Some(ip) = &policy.ip {
        if !ip.permits(client_ip) {
            return Err(GatewayError::new(
                ErrorKind::IpDenied,
                format!("client address {} is not allowed on this route", client_ip.to_canonical()),
            ));
        }
    }
    let Some(auth) = &policy.auth else { return Ok(()) };
    let identity = auth.authenticate(headers, now_s)?;
    if !auth.forward_credentials {
        if let Some((name, _)) = &auth.api_keys {
            headers.remove(name);
        }
        if let Some(j) = &auth.jwt {
            headers.remove(&j.header);
        }
    }
    if let Some(id) = identity {
        headers.insert(X_MERIDIAN_IDENTITY, id);
    }
    Ok(())
}

impl Authenticator {
    /// The identity of an authenticated request (`None` for a token without `sub`). A request
    /// carrying the API-key header is judged as an API key, any other by its token.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        now_s: impl FnOnce() -> u64,
    ) -> Result<Option<HeaderValue>, GatewayError> {
        let unauthenticated = |msg: &str, challenge: &HeaderValue| {
            GatewayError::new(ErrorKind::Unauthenticated, msg).with_challenge(challenge.clone())
        };
        if let Some((name, keys)) = &self.api_keys {
            if let Some(value) = single(headers, name).map_err(|m| unauthenticated(m, &self.challenge))? {
                return match keys.identify(value.as_bytes()) {
                    Some(id) => Ok(Some(id.clone())),
                    None => Err(unauthenticated("invalid API key", &self.challenge)),
                };
            }
        }
        if let Some(j) = &self.jwt {
            let bad = &self.challenge_bad_token;
            if let Some(value) = single(headers, &j.header).map_err(|m| unauthenticated(m, bad))? {
                let token = if j.bearer {
                    bearer_token(value.as_bytes()).ok_or_else(|| {
                        unauthenticated("authorization header does not hold a Bearer token", bad)
                    })?
                } else {
                    value.as_bytes()
                };
                return match j.verifier.verify(token, now_s()) {
                    Ok(identity) => Ok(identity),
                    Err(e) if e.is_forbidden() => Err(GatewayError::new(ErrorKind::Forbidden, e.message())),
                    Err(e) => Err(unauthenticated(e.message(), bad)),
                };
            }
        }
        Err(unauthenticated(&self.missing, &self.challenge))
    }
}

/// The one value of header `name`; two values of a credential header are refused as ambiguous.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a HeaderValue>, &'static str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => Ok(Some(v)),
        (Some(_), Some(_)) => Err("a credential header appears more than once"),
    }
}

/// `Bearer TOKEN` (scheme case-insensitive, RFC 6750 §2.1) to `TOKEN`.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

impl EdgePolicy {
    /// A policy that refuses every request: what a route gets if its rules fail to compile
    /// after validation passed (never expected; fail closed, not open).
    pub fn closed() -> EdgePolicy {
        EdgePolicy { ip: None, auth: None, closed: true }
    }

    /// Compile a route's `allow`, `deny` and `auth`; `None` when it has none. Problems name
    /// their field after `at` (`routes[0]`).
    pub fn compile(route: &RouteSpec, at: &str) -> Result<Option<EdgePolicy>, Vec<String>> {
        let mut p = Vec::new();
        let ip = (route.allow.is_some() || route.deny.is_some()).then(|| IpRules {
            allow: route
                .allow
                .as_deref()
                .map(|l| cidr::parse_list(l, &format!("{at}.allow"), &mut p))
                .unwrap_or_default(),
            deny: route
                .deny
                .as_deref()
                .map(|l| cidr::parse_list(l, &format!("{at}.deny"), &mut p))
                .unwrap_or_default(),
        });
        let auth =
            route.auth.as_ref().and_then(|a| compile_auth(a, &route.name, &format!("{at}.auth"), &mut p));
        if !p.is_empty() {
            return Err(p);
        }
        Ok((ip.is_some() || auth.is_some()).then_some(EdgePolicy { ip, auth, closed: false }))
    }
}

fn header_name(name: &str, at: &str, p: &mut Vec<String>) -> Option<HeaderName> {
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(h) if RESERVED_HEADERS.contains(&h.as_str()) => {
            p.push(format!("{at}: {name:?} cannot carry credentials"));
            None
        }
        Ok(h) => Some(h),
        Err(_) => {
            p.push(format!("{at}: {name:?} is not a header name"));
            None
        }
    }
}

fn compile_auth(spec: &AuthSpec, route: &str, at: &str, p: &mut Vec<String>) -> Option<Authenticator> {
    let before = p.len();
    if spec.api_keys.is_empty() && spec.jwt.is_none() {
        p.push(format!("{at}: needs api_keys or jwt"));
    }
    let api_keys = if spec.api_keys.is_empty() {
        if spec.header.is_some() {
            p.push(format!("{at}.header: applies to api_keys, and there are none"));
        }
        None
    } else {
        let header =
            header_name(spec.header.as_deref().unwrap_or(DEFAULT_API_KEY_HEADER), &format!("{at}.header"), p);
        compile_api_keys(&spec.api_keys, &format!("{at}.api_keys"), p).zip(header).map(|(k, h)| (h, k))
    };
    let jwt = spec.jwt.as_ref().and_then(|j| compile_jwt(j, &format!("{at}.jwt"), p));
    if let (Some((a, _)), Some(j)) = (&api_keys, &jwt) {
        if *a == j.header {
            p.push(format!("{at}.header: API keys and JWTs must come in different headers"));
        }
    }
    if p.len() > before {
        return None;
    }
    let key_challenge = api_keys.as_ref().map(|(h, _)| format!("ApiKey realm=\"{route}\", header=\"{h}\""));
    let token_challenge = |error: &str| {
        jwt.as_ref().map(|j| match j.bearer {
            true => format!("Bearer realm=\"{route}\"{error}"),
            false => format!("JWT realm=\"{route}\", header=\"{}\"{error}", j.header),
        })
    };
    let join = |a: Option<String>, b: Option<String>| a.into_iter().chain(b).collect::<Vec<_>>().join(", ");
    let value = |s: String| HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
    let missing = match (&api_keys, &jwt) {
        (Some((h, _)), None) => format!("no API key in header {h}"),
        (None, Some(j)) if j.bearer => "no bearer token in the authorization header".to_string(),
        (None, Some(j)) => format!("no token in header {}", j.header),
        (Some((h, _)), Some(j)) => {
            format!("no credentials: an API key in header {h} or a token in header {}", j.header)
        }
        (None, None) => "no credentials".to_string(),
    };
    Some(Authenticator {
        challenge: value(join(key_challenge.clone(), token_challenge(""))),
        challenge_bad_token: value(join(key_challenge, token_challenge(", error=\"invalid_token\""))),
        missing,
        api_keys,
        jwt,
        forward_credentials: spec.forward_credentials,
    })
}

fn compile_api_keys(keys: &[ApiKeySpec], at: &str, p: &mut Vec<String>) -> Option<ApiKeys> {
    let before = p.len();
    if keys.len() > api_key::MAX_API_KEYS {
        p.push(format!("{at}: more than {} keys (use JWTs for more clients)", api_key::MAX_API_KEYS));
        return None;
    }
    let (mut ids, mut digests) = (HashSet::new(), HashSet::new());
    let mut out = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let id = match HeaderValue::from_str(&k.id) {
            Ok(v) if api_key::valid_id(&k.id) => Some(v),
            _ => {
                p.push(format!("{at}[{i}].id: {:?} must be 1-128 characters of [A-Za-z0-9_.:@-]", k.id));
                None
            }
        };
        if !ids.insert(k.id.as_str()) {
            p.push(format!("{at}[{i}].id: duplicate id {:?}", k.id));
        }
        let digest = match api_key::parse_sha256_hex(&k.sha256) {
            Ok(d) if !digests.insert(d) => {
                p.push(format!("{at}[{i}].sha256: the same key is listed twice"));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                p.push(format!("{at}[{i}].sha256: {e}"));
                None
            }
        };
        if let (Some(d), Some(id)) = (digest, id) {
            out.push((d, id));
        }
    }
    (p.len() == before).then(|| ApiKeys::new(out))
}

fn compile_jwt(spec: &JwtSpec, at: &str, p: &mut Vec<String>) -> Option<JwtCheck> {
    let before = p.len();
    let header_text = spec.header.as_deref().unwrap_or("authorization");
    let header = if header_text.eq_ignore_ascii_case("authorization") {
        Some(header::AUTHORIZATION)
    } else {
        header_name(header_text, &format!("{at}.header"), p)
    };
    if let Some(iss) = &spec.issuer {
        if iss.is_empty() || iss.len() > MAX_CLAIM_VALUE_BYTES {
            p.push(format!("{at}.issuer: must be 1-{MAX_CLAIM_VALUE_BYTES} bytes"));
        }
    }
    if spec.audiences.len() > MAX_AUDIENCES {
        p.push(format!("{at}.audiences: more than {MAX_AUDIENCES}"));
    }
    for (i, a) in spec.audiences.iter().enumerate() {
        if a.is_empty() || a.len() > MAX_CLAIM_VALUE_BYTES {
            p.push(format!("{at}.audiences[{i}]: must be 1-{MAX_CLAIM_VALUE_BYTES} bytes"));
        }
    }
    if spec.leeway_s > MAX_LEEWAY_S {
        p.push(format!("{at}.leeway_s: at most {MAX_LEEWAY_S}"));
    }
    if spec.keys.is_empty() || spec.keys.len() > MAX_JWT_KEYS {
        p.push(format!("{at}.keys: must list 1-{MAX_JWT_KEYS} keys"));
    }
    let mut kids = HashSet::new();
    let mut keys = Vec::with_capacity(spec.keys.len());
    for (i, k) in spec.keys.iter().enumerate().take(MAX_JWT_KEYS) {
        let key_at = format!("{at}.keys[{i}]");
        if let Some(kid) = &k.kid {
            if !kids.insert(kid.as_str()) {
                p.push(format!("{key_at}.kid: duplicate kid {kid:?}"));
            }
        }
        match JwtKey::compile(k, &key_at) {
            Ok(key) => keys.push(key),
            Err(e) => p.push(e),
        }
    }
    let header = header?;
    (p.len() == before).then(|| JwtCheck {
        bearer: header == header::AUTHORIZATION,
        header,
        verifier: JwtVerifier {
            issuer: spec.issuer.clone(),
            audiences: spec.audiences.clone(),
            keys,
            leeway_s: spec.leeway_s,
            require_exp: spec.require_exp,
            verified: Default::default(),
        },
    })
}

#[cfg(test)]
mod tests;
