//! Microbenchmark of the per-request cost of a route's client authentication, one thread: the
//! whole edge check the handler runs (`meridian::auth::admit`: credential header, then the key
//! digest or the token's shape, signature and claims, then the identity header) on a route with no
//! rules, with an API key, and with a JWT signed HS256, RS256 or ES256; then the signature check
//! alone (`JwtKey::verifies`) for each algorithm, which tells how much of a token's cost is the
//! cryptography rather than the decoding and the claims.
//!
//! The route is compiled from a routing table exactly as the node compiles it (issuer and audience
//! checked, credentials not forwarded). `admit` removes the credential header from the request, so
//! every iteration of every case, the no-auth one included, first puts the header back: a few tens
//! of ns that the differences between cases do not contain.
//!
//! Run: `cargo run --release -p meridian --example jwt_bench [SECONDS_PER_CASE]` (default 1;
//! scripts/bench-tls.sh runs it). Prints one line per case: `case ns_per_request`. A measurement,
//! not a test: no thresholds.

#![allow(clippy::disallowed_types)] // std::time::Instant: this measures wall time on purpose

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use meridian::auth::jwt_key::JwtKey;
use meridian::auth::{admit, EdgePolicy, JwtKeySpec};
use meridian::core::table::parse_json;
use meridian::gateway::unix_ms;
use ring::rand::SystemRandom;
use ring::{hmac, signature};
use serde_json::json;

/// The 2048-bit RSA key of the node's JWT tests (`node/src/auth/jwt_tests.rs`), for these
/// measurements only: ring cannot generate RSA keys.
const RSA_TEST_KEY: &str = include_str!("../testdata/rsa-2048-test-key.pem");

const HS_SECRET: &[u8] = b"bench-secret-0123456789abcdef-0123456789";
const API_KEY: &str = "mk_bench_0123456789abcdef0123456789abcdef";
const ISSUER: &str = "https://issuer.bench.test";
const AUDIENCE: &str = "api";

/// Calls `f` for about `budget` after a tenth of it as warm-up; nanoseconds per call. Batches
/// double until the budget is spent, so a 30 ns case and a 60 us case both read the clock rarely.
fn per_op(budget: Duration, mut f: impl FnMut()) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < budget / 10 {
        for _ in 0..64 {
            f();
        }
    }
    let (mut calls, mut batch) = (0u64, 64u64);
    let t = Instant::now();
    loop {
        for _ in 0..batch {
            f();
        }
        calls += batch;
        let spent = t.elapsed();
        if spent >= budget {
            return spent.as_nanos() as f64 / calls as f64;
        }
        batch = batch.saturating_mul(2).min(1 << 20);
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A signed token with the claims a real issuer puts in: subject, issuer, audience, times, and
/// a token id `jti` (so tokens `n` differ).
fn token(alg: &str, kid: &str, n: u32, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let now = unix_ms() / 1000;
    let header = json!({"alg": alg, "typ": "JWT", "kid": kid});
    let claims = json!({"sub": "client-42", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now - 60,
                        "exp": now + 86_400, "scope": "read write", "jti": n});
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

/// Distinct tokens cycled through so that none is seen again before the route's signature
/// cache (at most 4096 tokens) has forgotten it: every request pays the signature check.
const FIRST_SIGHT_TOKENS: u32 = 5000;

/// One route `r` with `auth`, compiled as the node compiles a routing table's route.
fn policy(auth: serde_json::Value) -> EdgePolicy {
    let table = json!({
        "services": {"s": {"endpoints": {"local": ["http://127.0.0.1:9"]}}},
        "routes": [{"name": "r", "service": "s", "auth": auth}],
    });
    let t = parse_json(&table.to_string()).expect("valid table");
    EdgePolicy::compile(&t.routes[0], "routes[0]").expect("compiles").expect("has rules")
}

fn jwt_policy(alg: &str, kid: &str, material: serde_json::Value) -> EdgePolicy {
    let mut key = json!({"alg": alg, "kid": kid});
    for (k, v) in material.as_object().expect("object") {
        key[k] = v.clone();
    }
    policy(json!({"jwt": {"issuer": ISSUER, "audiences": [AUDIENCE], "keys": [key]}}))
}

/// The signing input and the decoded signature of `token`, as the verifier splits them.
fn split(token: &str) -> (Vec<u8>, Vec<u8>) {
    let (input, sig) = token.rsplit_once('.').expect("three parts");
    (input.as_bytes().to_vec(), URL_SAFE_NO_PAD.decode(sig).expect("base64url signature"))
}

fn main() {
    let secs: f64 = std::env::args().nth(1).map_or(1.0, |s| s.parse().expect("SECONDS_PER_CASE: a number"));
    let budget = Duration::from_secs_f64(secs);
    let rng = SystemRandom::new();

    let hs_sign =
        |input: &[u8]| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, HS_SECRET), input).as_ref().to_vec();
    let hs_token = token("HS256", "hs", 0, hs_sign);
    let rsa = rcgen::KeyPair::from_pem(RSA_TEST_KEY).expect("rsa test key");
    let rsa_signer = signature::RsaKeyPair::from_pkcs8(&rsa.serialize_der()).expect("pkcs8");
    let rs_sign = |input: &[u8]| {
        let mut sig = vec![0; rsa_signer.public().modulus_len()];
        rsa_signer.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig).expect("sign");
        sig
    };
    let rs_token = token("RS256", "rsa", 0, rs_sign);
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256");
    let ec_signer = signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &ec.serialize_der(),
        &rng,
    )
    .expect("pkcs8");
    let es_sign = |input: &[u8]| ec_signer.sign(&rng, input).expect("sign").as_ref().to_vec();
    let es_token = token("ES256", "ec", 0, es_sign);

    let hs_material = json!({"secret_base64": STANDARD.encode(HS_SECRET)});
    let rs_material = json!({"pem": rsa.public_key_pem()});
    let es_material = json!({"pem": ec.public_key_pem()});
    let digest = ring::digest::digest(&ring::digest::SHA256, API_KEY.as_bytes());
    let digest_hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let api_key_policy = policy(json!({"api_keys": [{"id": "client-42", "sha256": digest_hex}]}));

    let bearer = |t: &str| HeaderValue::from_str(&format!("Bearer {t}")).expect("header value");
    let x_api_key = HeaderName::from_static("x-api-key");
    let many = |alg: &str, kid: &str, sign: &dyn Fn(&[u8]) -> Vec<u8>| -> Vec<HeaderValue> {
        (1..=FIRST_SIGHT_TOKENS).map(|n| bearer(&token(alg, kid, n, sign))).collect()
    };
    let one = |t: &str| vec![bearer(t)];
    // `admit_jwt_ALG`: a token the route has not seen (the signature is checked);
    // `admit_jwt_ALG_repeat`: the same token on every request (its signature is remembered).
    let cases: Vec<(&str, Option<EdgePolicy>, HeaderName, Vec<HeaderValue>)> = vec![
        ("admit_no_auth", None, AUTHORIZATION, one(&hs_token)),
        ("admit_api_key", Some(api_key_policy), x_api_key, vec![HeaderValue::from_static(API_KEY)]),
        (
            "admit_jwt_hs256",
            Some(jwt_policy("HS256", "hs", hs_material.clone())),
            AUTHORIZATION,
            many("HS256", "hs", &hs_sign),
        ),
        (
            "admit_jwt_rs256",
            Some(jwt_policy("RS256", "rsa", rs_material.clone())),
            AUTHORIZATION,
            many("RS256", "rsa", &rs_sign),
        ),
        (
            "admit_jwt_es256",
            Some(jwt_policy("ES256", "ec", es_material.clone())),
            AUTHORIZATION,
            many("ES256", "ec", &es_sign),
        ),
        (
            "admit_jwt_hs256_repeat",
            Some(jwt_policy("HS256", "hs", hs_material.clone())),
            AUTHORIZATION,
            one(&hs_token),
        ),
        (
            "admit_jwt_rs256_repeat",
            Some(jwt_policy("RS256", "rsa", rs_material.clone())),
            AUTHORIZATION,
            one(&rs_token),
        ),
        (
            "admit_jwt_es256_repeat",
            Some(jwt_policy("ES256", "ec", es_material.clone())),
            AUTHORIZATION,
            one(&es_token),
        ),
    ];

    // A request's other headers, as curl or a client library sends them.
    let mut headers = HeaderMap::new();
    for (k, v) in [("host", "api.bench.test"), ("user-agent", "bench/1.0"), ("accept", "*/*")] {
        headers.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let now_s = || unix_ms() / 1000;
    for (name, policy, header, values) in &cases {
        // A refused request would be a fast request: check that this one is admitted first.
        headers.insert(header.clone(), values[0].clone());
        admit(policy.as_ref(), &mut headers, ip, now_s).expect("the bench request is admitted");
        let mut i = 0;
        let ns = per_op(budget, || {
            i = (i + 1) % values.len();
            headers.insert(header.clone(), values[i].clone());
            black_box(admit(policy.as_ref(), black_box(&mut headers), ip, now_s).is_ok());
        });
        println!("{name} {ns:.1}");
    }

    for (name, alg, kid, material, token) in [
        ("signature_hs256", "HS256", "hs", hs_material, &hs_token),
        ("signature_rs256", "RS256", "rsa", rs_material, &rs_token),
        ("signature_es256", "ES256", "ec", es_material, &es_token),
    ] {
        let mut spec = JwtKeySpec { kid: Some(kid.into()), alg: alg.into(), secret_base64: None, pem: None };
        spec.secret_base64 = material.get("secret_base64").and_then(|v| v.as_str()).map(String::from);
        spec.pem = material.get("pem").and_then(|v| v.as_str()).map(String::from);
        let key = JwtKey::compile(&spec, "keys[0]").expect("valid key");
        let (input, sig) = split(token);
        assert!(key.verifies(&input, &sig), "{name}: the signature verifies");
        let ns = per_op(budget, || {
            black_box(key.verifies(black_box(&input), black_box(&sig)));
        });
        println!("{name} {ns:.1}");
    }
}
