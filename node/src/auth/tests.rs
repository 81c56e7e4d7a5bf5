//! The edge checks as the handler runs them: compile a route's rules, admit or refuse headers.

use base64::Engine as _;
use ring::hmac;
use serde_json::json;

use super::*;
use crate::core::table::parse_json;

const NOW: u64 = 1_700_000_000;
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn sha256_hex(key: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A table with one route `r` carrying `extra` (allow, deny, auth).
fn table(extra: serde_json::Value) -> String {
    let mut route = json!({"name": "r", "service": "s"});
    for (k, v) in extra.as_object().expect("object") {
        route[k] = v.clone();
    }
    json!({"services": {"s": {"endpoints": {"us": ["http://127.0.0.1:1"]}}}, "routes": [route]}).to_string()
}

fn policy(extra: serde_json::Value) -> EdgePolicy {
    let t = parse_json(&table(extra)).expect("valid table");
    EdgePolicy::compile(&t.routes[0], "routes[0]").expect("compiles").expect("has a policy")
}

fn problems(extra: serde_json::Value) -> String {
    parse_json(&table(extra)).expect_err("invalid table").problems.join("\n")
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

fn local() -> IpAddr {
    "127.0.0.1".parse().expect("ip")
}

fn hs_token(claims: serde_json::Value) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let input = format!("{}.{}", b64(br#"{"alg":"HS256"}"#), b64(claims.to_string().as_bytes()));
    let sig = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SECRET), input.as_bytes());
    format!("{input}.{}", b64(sig.as_ref()))
}

fn jwt_auth() -> serde_json::Value {
    json!({"jwt": {"audiences": ["api"], "keys": [
        {"alg": "HS256", "secret_base64": base64::engine::general_purpose::STANDARD.encode(SECRET)}
    ]}})
}

#[test]
fn routes_without_rules_compile_to_nothing_and_still_lose_a_forged_identity() {
    let t = parse_json(&table(json!({}))).expect("valid");
    assert!(EdgePolicy::compile(&t.routes[0], "routes[0]").expect("compiles").is_none());
    let mut h = headers(&[("x-meridian-identity", "admin")]);
    admit(None, &mut h, local(), || NOW).expect("admitted");
    assert!(h.get(X_MERIDIAN_IDENTITY).is_none(), "a client cannot name itself");
}

#[test]
fn ip_lists_refuse_before_authentication() {
    let p = policy(
        json!({"deny": ["127.0.0.0/8"], "auth": {"api_keys": [{"id": "a", "sha256": sha256_hex("k")}]}}),
    );
    let e = admit(Some(&p), &mut headers(&[("x-api-key", "k")]), local(), || NOW).expect_err("denied");
    assert_eq!((e.kind, e.status().as_u16()), (ErrorKind::IpDenied, 403));
    assert!(e.detail.contains("127.0.0.1"), "{}", e.detail);
    let p = policy(json!({"allow": ["10.0.0.0/8", "::1"]}));
    assert_eq!(
        admit(Some(&p), &mut HeaderMap::new(), local(), || NOW).expect_err("not allowed").kind,
        ErrorKind::IpDenied
    );
    admit(Some(&p), &mut HeaderMap::new(), "10.1.2.3".parse().expect("ip"), || NOW).expect("allowed");
    admit(Some(&p), &mut HeaderMap::new(), "::ffff:10.1.2.3".parse().expect("ip"), || NOW).expect("mapped");
}

#[test]
fn api_keys_identify_and_are_not_passed_on() {
    let p = policy(json!({"auth": {"api_keys": [
        {"id": "team-a", "sha256": sha256_hex("key-a")},
        {"id": "team-b", "sha256": sha256_hex("key-b").to_uppercase()}
    ]}}));
    let mut h = headers(&[("x-api-key", "key-b"), ("x-meridian-identity", "team-a")]);
    admit(Some(&p), &mut h, local(), || NOW).expect("valid key");
    assert_eq!(h[X_MERIDIAN_IDENTITY], "team-b");
    assert!(h.get("x-api-key").is_none(), "the key stays at the edge");

    for (hs, want) in [
        (headers(&[("x-api-key", "wrong")]), "invalid API key"),
        (headers(&[]), "no API key in header x-api-key"),
        (headers(&[("x-api-key", "")]), "invalid API key"),
        (headers(&[("x-api-key", "key-a"), ("x-api-key", "key-b")]), "more than once"),
        (headers(&[("authorization", "Bearer key-a")]), "no API key"),
    ] {
        let mut hs = hs;
        let e = admit(Some(&p), &mut hs, local(), || NOW).expect_err(want);
        assert_eq!(e.kind, ErrorKind::Unauthenticated);
        assert!(e.detail.contains(want), "{} does not say {want}", e.detail);
        let challenge = e.challenge.expect("www-authenticate");
        assert_eq!(challenge, "ApiKey realm=\"r\", header=\"x-api-key\"");
    }
}

#[test]
fn credentials_can_be_forwarded_and_read_from_another_header() {
    let p = policy(json!({"auth": {"header": "x-team-key", "forward_credentials": true,
        "api_keys": [{"id": "a", "sha256": sha256_hex("k")}]}}));
    let mut h = headers(&[("x-team-key", "k")]);
    admit(Some(&p), &mut h, local(), || NOW).expect("valid key");
    assert_eq!(h["x-team-key"], "k");
    assert_eq!(h[X_MERIDIAN_IDENTITY], "a");
}

#[test]
fn bearer_tokens_are_verified_and_refusals_say_why() {
    let p = policy(json!({"auth": jwt_auth()}));
    let good = hs_token(json!({"sub": "alice", "aud": "api", "exp": NOW + 60}));
    let mut h = headers(&[("authorization", &format!("bearer  {good} "))]);
    admit(Some(&p), &mut h, local(), || NOW).expect("valid token");
    assert_eq!(h[X_MERIDIAN_IDENTITY], "alice");
    assert!(h.get(header::AUTHORIZATION).is_none());

    let expired = hs_token(json!({"sub": "alice", "aud": "api", "exp": NOW - 60}));
    let e =
        admit(Some(&p), &mut headers(&[("authorization", &format!("Bearer {expired}"))]), local(), || NOW)
            .expect_err("expired");
    assert_eq!((e.status().as_u16(), e.detail.as_str()), (401, "token has expired"));
    assert_eq!(e.challenge.expect("challenge"), "Bearer realm=\"r\", error=\"invalid_token\"");

    let other = hs_token(json!({"sub": "alice", "aud": "other", "exp": NOW + 60}));
    let e = admit(Some(&p), &mut headers(&[("authorization", &format!("Bearer {other}"))]), local(), || NOW)
        .expect_err("wrong audience");
    assert_eq!((e.kind, e.status().as_u16()), (ErrorKind::Forbidden, 403));
    assert!(e.challenge.is_none());

    let e = admit(Some(&p), &mut headers(&[("authorization", "Basic YTpi")]), local(), || NOW)
        .expect_err("basic");
    assert!(e.detail.contains("Bearer"), "{}", e.detail);
    let e =
        admit(Some(&p), &mut headers(&[("authorization", "Bearer ")]), local(), || NOW).expect_err("empty");
    assert_eq!(e.kind, ErrorKind::Unauthenticated);
    let e = admit(Some(&p), &mut HeaderMap::new(), local(), || NOW).expect_err("missing");
    assert_eq!(e.challenge.expect("challenge"), "Bearer realm=\"r\"");
    let huge = format!("Bearer {}", "a".repeat(20_000));
    let e = admit(Some(&p), &mut headers(&[("authorization", &huge)]), local(), || NOW).expect_err("huge");
    assert!(e.detail.contains("8192"), "{}", e.detail);
}

#[test]
fn api_keys_and_jwts_together_take_either() {
    let mut auth = jwt_auth();
    auth["api_keys"] = json!([{"id": "svc", "sha256": sha256_hex("k")}]);
    let p = policy(json!({"auth": auth}));
    let mut h = headers(&[("x-api-key", "k"), ("authorization", "Bearer junk")]);
    admit(Some(&p), &mut h, local(), || NOW).expect("the API key decides");
    assert_eq!(h[X_MERIDIAN_IDENTITY], "svc");
    assert!(h.get(header::AUTHORIZATION).is_none() && h.get("x-api-key").is_none());
    let token = hs_token(json!({"sub": "bob", "aud": "api", "exp": NOW + 60}));
    let mut h = headers(&[("authorization", &format!("Bearer {token}"))]);
    admit(Some(&p), &mut h, local(), || NOW).expect("the token decides");
    assert_eq!(h[X_MERIDIAN_IDENTITY], "bob");
    let e = admit(Some(&p), &mut HeaderMap::new(), local(), || NOW).expect_err("neither");
    assert_eq!(
        e.challenge.expect("challenge"),
        "ApiKey realm=\"r\", header=\"x-api-key\", Bearer realm=\"r\""
    );
}

#[test]
fn the_clock_is_read_only_for_tokens() {
    let p = policy(json!({"auth": {"api_keys": [{"id": "a", "sha256": sha256_hex("k")}]}}));
    admit(Some(&p), &mut headers(&[("x-api-key", "k")]), local(), || panic!("no clock for API keys"))
        .expect("ok");
}

#[test]
fn bad_rules_are_refused_naming_their_field() {
    let secret = base64::engine::general_purpose::STANDARD.encode(SECRET);
    for (extra, needle) in [
        (
            json!({"allow": ["10.0.0.0/8", "10.0.0.1/8"]}),
            "routes[0].allow[1]: \"10.0.0.1/8\" has host bits set",
        ),
        (json!({"deny": ["nope"]}), "routes[0].deny[0]: \"nope\" is not an IP address or CIDR"),
        (json!({"allow": []}), "routes[0].allow: must list at least one"),
        (json!({"auth": {}}), "routes[0].auth: needs api_keys or jwt"),
        (
            json!({"auth": {"api_keys": [{"id": "a", "sha256": "abc"}]}}),
            "routes[0].auth.api_keys[0].sha256: must be 64 hex",
        ),
        (
            json!({"auth": {"api_keys": [{"id": "a", "sha256": sha256_hex("k")}, {"id": "a", "sha256": sha256_hex("k")}]}}),
            "routes[0].auth.api_keys[1].id: duplicate id",
        ),
        (
            json!({"auth": {"api_keys": [{"id": "a", "sha256": sha256_hex("k")}, {"id": "b", "sha256": sha256_hex("k")}]}}),
            "routes[0].auth.api_keys[1].sha256: the same key is listed twice",
        ),
        (
            json!({"auth": {"api_keys": [{"id": "a b", "sha256": sha256_hex("k")}]}}),
            "routes[0].auth.api_keys[0].id",
        ),
        (
            json!({"auth": {"header": "host", "api_keys": [{"id": "a", "sha256": sha256_hex("k")}]}}),
            "routes[0].auth.header: \"host\" cannot carry credentials",
        ),
        (
            json!({"auth": {"header": "x-k", "jwt": jwt_auth()["jwt"]}}),
            "routes[0].auth.header: applies to api_keys",
        ),
        (json!({"auth": {"jwt": {"keys": []}}}), "routes[0].auth.jwt.keys: must list 1-32 keys"),
        (
            json!({"auth": {"jwt": {"keys": [{"alg": "HS256", "secret_base64": secret}, {"alg": "PS256", "pem": "x"}]}}}),
            "routes[0].auth.jwt.keys[1].alg: \"PS256\" is not supported",
        ),
        (
            json!({"auth": {"jwt": {"keys": [{"alg": "RS256", "pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}]}}}),
            "routes[0].auth.jwt.keys[0].pem: not a valid public key",
        ),
        (
            json!({"auth": {"jwt": {"keys": [{"kid": "k", "alg": "HS256", "secret_base64": secret}, {"kid": "k", "alg": "HS256", "secret_base64": secret}]}}}),
            "routes[0].auth.jwt.keys[1].kid: duplicate kid",
        ),
        (
            json!({"auth": {"jwt": {"leeway_s": 86400, "keys": [{"alg": "HS256", "secret_base64": secret}]}}}),
            "routes[0].auth.jwt.leeway_s",
        ),
        (
            json!({"auth": {"jwt": {"audiences": [""], "keys": [{"alg": "HS256", "secret_base64": secret}]}}}),
            "routes[0].auth.jwt.audiences[0]",
        ),
        (json!({"auth": {"jwt": {"keys": [{"alg": "HS256", "secret": secret}]}}}), "unknown field `secret`"),
    ] {
        let all = problems(extra.clone());
        assert!(all.contains(needle), "{extra}:\n{all}\ndoes not contain {needle}");
    }
}

#[test]
fn a_closed_policy_refuses_everything() {
    let e = admit(Some(&EdgePolicy::closed()), &mut HeaderMap::new(), local(), || NOW).expect_err("closed");
    assert_eq!(e.status().as_u16(), 403);
}

#[test]
fn bearer_parsing() {
    assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
    assert_eq!(bearer_token(b"BEARER   abc  "), Some(&b"abc"[..]));
    assert_eq!(bearer_token(b"Bearer"), None);
    assert_eq!(bearer_token(b"Bearer "), None);
    assert_eq!(bearer_token(b"Bearerabc"), None);
    assert_eq!(bearer_token(b"Basic abc"), None);
    assert_eq!(bearer_token(b""), None);
}
