//! Route-level client authentication and IP lists (issue 8), on real processes: API keys, JWTs
//! (HS256, RS256, ES256) and what each bad token gets, allow/deny lists refusing before any
//! upstream work, tables with bad rules refused naming the field, and quotas keyed by identity.
//!
//! A small in-test upstream records the request heads it receives, so the tests can check what
//! crossed the gateway (the identity header) and what did not (credentials, forged identities).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use meridian_tests::*;
use ring::rand::SystemRandom;
use ring::{digest, hmac, signature};

/// A 2048-bit RSA key made for these tests only (`openssl genpkey -algorithm RSA`): ring, the
/// workspace's crypto, cannot generate RSA keys.
const RSA_TEST_KEY: &str = include_str!("../../node/testdata/rsa-2048-test-key.pem");

const HS_SECRET: &[u8] = b"a shared secret of at least 32 bytes, for HS256";

/// The header lines of one request head, names lowercased.
type Head = Vec<(String, String)>;

/// An upstream that answers 200 to every request and keeps the headers of each.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Head>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let log = log.clone();
                std::thread::spawn(move || serve_recorded(conn, &log));
            }
        });
        Recorder { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    /// The value of `name` in the last request received, if it had one.
    fn last(&self, name: &str) -> Option<String> {
        let seen = self.seen.lock().expect("lock");
        let head = seen.last().expect("the upstream received a request");
        head.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
}

/// Keep-alive HTTP/1.1 without request bodies: enough for GETs through the gateway.
fn serve_recorded(mut conn: TcpStream, log: &Mutex<Vec<Head>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let headers = head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        log.lock().expect("lock").push(headers);
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
        if conn.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn sha256_hex(key: &str) -> String {
    digest::digest(&digest::SHA256, key.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS over `header` and `claims`, signed by `sign`.
fn jwt(header: Value, claims: Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn hs256(input: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, HS_SECRET), input).as_ref().to_vec()
}

fn claims(sub: &str, aud: &str) -> Value {
    let now = now_s();
    json!({"sub": sub, "iss": "https://id.example", "aud": aud, "iat": now, "exp": now + 300})
}

/// The echo service on `upstream` with one route `/` carrying `extra` (auth, allow, deny).
fn table_with(upstream: &str, extra: Value) -> Value {
    let mut table = simple_table("us", &[upstream.to_string()], json!({}));
    for (k, v) in extra.as_object().expect("object") {
        table["routes"][0][k] = v.clone();
    }
    table
}

fn get(node: &Node, headers: &[(&str, &str)]) -> Response {
    request(node.http, "GET", "/", headers, b"")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A refusal carries the error shape of every other error, with the request id.
fn assert_refused(r: &Response, status: u16, code: &str, message_has: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains(message_has)),
        "{body} lacks {message_has:?}"
    );
    assert_eq!(body["request_id"].as_str(), r.header("x-request-id"), "{body}");
}

#[test]
fn api_keys_identify_clients_and_wrong_or_missing_keys_get_401() {
    let dir = TempDir::new("t95-keys");
    let up = Recorder::start();
    let auth = json!({"api_keys": [
        {"id": "team-a", "sha256": sha256_hex("key-a-0123456789")},
        {"id": "team-b", "sha256": sha256_hex("key-b-0123456789")}
    ]});
    let node = Node::with_table("n1", "us", &table_with(&up.url(), json!({"auth": auth})), &[], &dir);

    phase("a valid key: 200, the upstream sees the key's id as x-meridian-identity and not the key");
    let r = get(&node, &[("x-api-key", "key-a-0123456789"), ("x-meridian-identity", "root")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last("x-meridian-identity").as_deref(), Some("team-a"), "identity set, forged one gone");
    assert_eq!(up.last("x-api-key"), None, "the credential stays at the edge");
    let r = get(&node, &[("x-api-key", "key-b-0123456789")]);
    assert_eq!(r.status, 200);
    assert_eq!(up.last("x-meridian-identity").as_deref(), Some("team-b"));

    phase("a wrong key and a missing key: 401 with www-authenticate, never reaching the upstream");
    let before = up.count();
    let r = get(&node, &[("x-api-key", "key-c-0123456789")]);
    assert_refused(&r, 401, "unauthenticated", "invalid API key");
    assert_eq!(r.header("www-authenticate"), Some("ApiKey realm=\"all\", header=\"x-api-key\""));
    let r = get(&node, &[]);
    assert_refused(&r, 401, "unauthenticated", "no API key in header x-api-key");
    assert!(r.header("www-authenticate").is_some());
    let r = get(&node, &[("x-api-key", "key-a-0123456789"), ("x-api-key", "key-b-0123456789")]);
    assert_refused(&r, 401, "unauthenticated", "more than once");
    assert_eq!(up.count(), before, "a refused request reached the upstream");

    phase("refusals are counted by cause and by route");
    assert_eq!(node.metric("meridian_errors_total{cause=\"unauthenticated\"}"), 3.0);
    assert_eq!(node.metric("meridian_requests_total{route=\"all\",region=\"us\",code=\"401\"}"), 3.0);
    assert!(!node.panicked());
}

#[test]
fn hs256_tokens_are_checked_for_signature_time_and_audience() {
    let dir = TempDir::new("t95-hs256");
    let up = Recorder::start();
    let auth = json!({"jwt": {
        "issuer": "https://id.example",
        "audiences": ["orders"],
        "keys": [{"kid": "hs-1", "alg": "HS256", "secret_base64": STANDARD.encode(HS_SECRET)}],
        "leeway_s": 5
    }});
    let node = Node::with_table("n1", "us", &table_with(&up.url(), json!({"auth": auth})), &[], &dir);
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": "hs-1"});
    let call = |token: &str| get(&node, &[("authorization", &bearer(token))]);

    phase("a valid HS256 token: 200, the upstream sees sub as the identity and no authorization");
    let r = call(&jwt(header.clone(), claims("alice", "orders"), hs256));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last("x-meridian-identity").as_deref(), Some("alice"));
    assert_eq!(up.last("authorization"), None);
    let served = up.count();

    phase("an expired token: 401");
    let mut c = claims("alice", "orders");
    c["exp"] = json!(now_s() - 60);
    let r = call(&jwt(header.clone(), c, hs256));
    assert_refused(&r, 401, "unauthenticated", "expired");
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"all\", error=\"invalid_token\""));

    phase("a token whose nbf is in the future: 401");
    let mut c = claims("alice", "orders");
    c["nbf"] = json!(now_s() + 120);
    assert_refused(&call(&jwt(header.clone(), c, hs256)), 401, "unauthenticated", "not valid yet");

    phase(
        "a valid token for another audience: 403 forbidden (the caller is known, the token is not for here)",
    );
    let r = call(&jwt(header.clone(), claims("alice", "billing"), hs256));
    assert_refused(&r, 403, "forbidden", "audience");

    phase("a token from another issuer: 401");
    let mut c = claims("alice", "orders");
    c["iss"] = json!("https://evil.example");
    assert_refused(&call(&jwt(header.clone(), c, hs256)), 401, "unauthenticated", "issuer");

    phase("a badly signed token (other secret, or claims changed after signing): 401");
    let other =
        |input: &[u8]| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[7u8; 32]), input).as_ref().to_vec();
    assert_refused(
        &call(&jwt(header.clone(), claims("alice", "orders"), other)),
        401,
        "unauthenticated",
        "signature",
    );
    let good = jwt(header.clone(), claims("alice", "orders"), hs256);
    let parts: Vec<&str> = good.split('.').collect();
    let forged =
        format!("{}.{}.{}", parts[0], b64(claims("root", "orders").to_string().as_bytes()), parts[2]);
    assert_refused(&call(&forged), 401, "unauthenticated", "signature");

    phase("alg none, malformed and oversized tokens, and no token at all: 401");
    let none = jwt(json!({"alg": "none"}), claims("root", "orders"), |_| Vec::new());
    assert_refused(&call(&none), 401, "unauthenticated", "alg none");
    assert_refused(&call("not.a-jwt"), 401, "unauthenticated", "three dot-separated parts");
    assert_refused(&call("e30.e30.!!"), 401, "unauthenticated", "base64url");
    let huge = format!("{}.{}.sig", b64(b"{\"alg\":\"HS256\"}"), "A".repeat(9000));
    assert_refused(&call(&huge), 401, "unauthenticated", "8192");
    let r = get(&node, &[]);
    assert_refused(&r, 401, "unauthenticated", "no bearer token");
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"all\""));
    assert_refused(&get(&node, &[("authorization", "Basic YWxpY2U6cHc=")]), 401, "unauthenticated", "Bearer");
    assert_eq!(up.count(), served, "a refused request reached the upstream");
    assert_eq!(node.metric("meridian_errors_total{cause=\"forbidden\"}"), 1.0);
    assert!(!node.panicked());
}

#[test]
fn rs256_and_es256_tokens_verify_against_public_keys_in_the_table() {
    let dir = TempDir::new("t95-pk");
    let up = Recorder::start();
    let rng = SystemRandom::new();
    let rsa = rcgen::KeyPair::from_pem(RSA_TEST_KEY).expect("rsa test key");
    let rsa_signer = signature::RsaKeyPair::from_pkcs8(&rsa.serialize_der()).expect("rsa pkcs8");
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256 key");
    let ec_signer = signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &ec.serialize_der(),
        &rng,
    )
    .expect("ec pkcs8");
    let auth = json!({"jwt": {
        "audiences": ["orders"],
        "keys": [
            {"kid": "rsa-1", "alg": "RS256", "pem": rsa.public_key_pem()},
            {"kid": "ec-1", "alg": "ES256", "pem": ec.public_key_pem()}
        ]
    }});
    let node = Node::with_table("n1", "us", &table_with(&up.url(), json!({"auth": auth})), &[], &dir);
    let rs256 = |input: &[u8]| {
        let mut sig = vec![0; rsa_signer.public().modulus_len()];
        rsa_signer.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig).expect("rsa sign");
        sig
    };
    let es256 = |input: &[u8]| ec_signer.sign(&rng, input).expect("ec sign").as_ref().to_vec();

    phase("an RS256 token: 200 with its subject");
    let r = get(
        &node,
        &[(
            "authorization",
            &bearer(&jwt(json!({"alg": "RS256", "kid": "rsa-1"}), claims("svc-rsa", "orders"), rs256)),
        )],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last("x-meridian-identity").as_deref(), Some("svc-rsa"));

    phase("an ES256 token, with and without kid: 200");
    let r = get(
        &node,
        &[(
            "authorization",
            &bearer(&jwt(json!({"alg": "ES256", "kid": "ec-1"}), claims("svc-ec", "orders"), es256)),
        )],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last("x-meridian-identity").as_deref(), Some("svc-ec"));
    let r = get(
        &node,
        &[("authorization", &bearer(&jwt(json!({"alg": "ES256"}), claims("svc-ec", "orders"), es256)))],
    );
    assert_eq!(r.status, 200, "{}", r.text());

    phase(
        "an RS256 token presented under the EC key's kid, and one HMAC-signed with the RSA public key: 401",
    );
    let r = get(
        &node,
        &[(
            "authorization",
            &bearer(&jwt(json!({"alg": "RS256", "kid": "ec-1"}), claims("x", "orders"), rs256)),
        )],
    );
    assert_refused(&r, 401, "unauthenticated", "kid");
    let confused = |input: &[u8]| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, rsa.public_key_pem().as_bytes()), input)
            .as_ref()
            .to_vec()
    };
    let r = get(
        &node,
        &[(
            "authorization",
            &bearer(&jwt(json!({"alg": "HS256", "kid": "rsa-1"}), claims("x", "orders"), confused)),
        )],
    );
    assert_refused(&r, 401, "unauthenticated", "alg");
}

#[test]
fn ip_lists_refuse_before_authentication_and_before_the_upstream() {
    let dir = TempDir::new("t95-ip");
    let up = Upstream::start("u", dir.path());
    let key = json!({"api_keys": [{"id": "team-a", "sha256": sha256_hex("key-a-0123456789")}]});
    let node = Node::with_table(
        "n1",
        "us",
        &table_with(&up.url(), json!({"deny": ["127.0.0.0/8"], "auth": key})),
        &[],
        &dir,
    );

    phase("deny 127.0.0.0/8: 403 ip_denied even with a valid key, and the upstream sees nothing");
    assert_refused(&get(&node, &[("x-api-key", "key-a-0123456789")]), 403, "ip_denied", "127.0.0.1");
    assert_refused(&get(&node, &[]), 403, "ip_denied", "not allowed");
    assert_eq!(up.requests(), 0);
    assert_eq!(node.metric("meridian_errors_total{cause=\"ip_denied\"}"), 2.0);
    assert_eq!(node.metric("meridian_errors_total{cause=\"unauthenticated\"}"), 0.0, "IP lists come first");

    phase("an allow list without 127.0.0.1: 403");
    let table = table_with(&up.url(), json!({"allow": ["10.0.0.0/8", "2001:db8::/32"]}));
    assert_eq!(node.put_routes(&table.to_string(), None).status, 200);
    assert_refused(&get(&node, &[]), 403, "ip_denied", "not allowed");
    assert_eq!(up.requests(), 0);

    phase("an allow list with 127.0.0.1 but a deny list covering it: deny wins");
    let table = table_with(&up.url(), json!({"allow": ["127.0.0.1"], "deny": ["127.0.0.1/32"]}));
    assert_eq!(node.put_routes(&table.to_string(), None).status, 200);
    assert_refused(&get(&node, &[]), 403, "ip_denied", "not allowed");

    phase("an allow list with 127.0.0.1: served");
    let table = table_with(&up.url(), json!({"allow": ["10.0.0.0/8", "127.0.0.1"]}));
    assert_eq!(node.put_routes(&table.to_string(), None).status, 200);
    assert_eq!(get(&node, &[]).status, 200);
    assert_eq!(up.requests(), 1);
}

#[test]
fn tables_with_bad_rules_are_refused_naming_the_field() {
    let dir = TempDir::new("t95-table");
    let up = Upstream::start("u", dir.path());
    let node = Node::with_table("n1", "us", &table_with(&up.url(), json!({})), &[], &dir);
    let version = node.routes_version();
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256 key");
    let secret = STANDARD.encode(HS_SECRET);
    let bad_pem = "-----BEGIN PUBLIC KEY-----\nTUlJQmlqYW5vdGFrZXk=\n-----END PUBLIC KEY-----";
    let cases = [
        (json!({"deny": ["10.0.0.0/8", "10.1.2.3/8"]}), "routes[0].deny[1]", "host bits"),
        (json!({"allow": ["300.1.2.3"]}), "routes[0].allow[0]", "not an IP address"),
        (json!({"allow": ["2001:db8::/200"]}), "routes[0].allow[0]", "prefix length"),
        (
            json!({"auth": {"jwt": {"keys": [{"alg": "HS256", "secret_base64": secret}, {"alg": "RS256", "pem": bad_pem}]}}}),
            "routes[0].auth.jwt.keys[1].pem",
            "not a valid public key",
        ),
        (
            json!({"auth": {"jwt": {"keys": [{"alg": "RS256", "pem": ec.public_key_pem()}]}}}),
            "routes[0].auth.jwt.keys[0].pem",
            "RSA",
        ),
        (
            json!({"auth": {"jwt": {"keys": [{"alg": "HS384", "secret_base64": secret}]}}}),
            "routes[0].auth.jwt.keys[0].alg",
            "not supported",
        ),
        (
            json!({"auth": {"jwt": {"keys": [{"alg": "none"}]}}}),
            "routes[0].auth.jwt.keys[0].alg",
            "not supported",
        ),
        (
            json!({"auth": {"api_keys": [{"id": "team-a", "sha256": "key-in-clear"}]}}),
            "routes[0].auth.api_keys[0].sha256",
            "64 hex digits",
        ),
    ];
    for (extra, field, why) in cases {
        phase(&format!("{field}: refused with 400 naming it"));
        let r = node.put_routes(&table_with(&up.url(), extra).to_string(), None);
        assert_eq!(r.status, 400, "{}", r.text());
        let problems = r.json()["problems"].to_string();
        assert!(problems.contains(field) && problems.contains(why), "{field} / {why} not in {problems}");
    }
    phase("a quota keyed by identity is valid; a bad key kind still is not");
    let mut table = table_with(&up.url(), json!({"quota": "q"}));
    table["quotas"] = json!({"q": {"key": "cookie:x", "limit": 1, "window_ms": 1000}});
    let r = node.put_routes(&table.to_string(), None);
    assert!(r.status == 400 && r.text().contains("identity"), "{}", r.text());
    assert_eq!(node.routes_version(), version, "a refused table changed the running one");
    table["quotas"]["q"]["key"] = json!("identity");
    assert_eq!(node.put_routes(&table.to_string(), None).status, 200);
}

#[test]
fn a_quota_keyed_by_identity_limits_each_identity() {
    let dir = TempDir::new("t95-quota");
    let up = Recorder::start();
    let window_ms = 4000;
    let mut table = simple_table("us", &[up.url()], json!({}));
    table["routes"] = json!([
        { "name": "keyed", "path_prefix": "/keyed", "service": "echo", "quota": "per-identity",
          "auth": {"api_keys": [
              {"id": "team-a", "sha256": sha256_hex("key-a-0123456789")},
              {"id": "team-b", "sha256": sha256_hex("key-b-0123456789")}
          ]} },
        { "name": "open", "path_prefix": "/open", "service": "echo", "quota": "per-identity" }
    ]);
    table["quotas"] = json!({"per-identity": {"key": "identity", "limit": 2, "window_ms": window_ms}});
    let node = Node::with_table("n1", "us", &table, &[], &dir);
    let call = |path: &str, headers: &[(&str, &str)]| request(node.http, "GET", path, headers, b"").status;

    // Start early in a window so the burst below stays in one.
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    if window_ms - ms % window_ms < 2500 {
        std::thread::sleep(Duration::from_millis(window_ms - ms % window_ms + 5));
    }

    phase("each identity gets the limit of its own");
    let a = [("x-api-key", "key-a-0123456789")];
    let b = [("x-api-key", "key-b-0123456789")];
    assert_eq!([call("/keyed", &a), call("/keyed", &a), call("/keyed", &a)], [200, 200, 429]);
    assert_eq!([call("/keyed", &b), call("/keyed", &b), call("/keyed", &b)], [200, 200, 429]);

    phase("refused credentials are not counted against anyone");
    assert_eq!(call("/keyed", &[("x-api-key", "wrong")]), 401);

    phase("without authentication every request shares one key, whatever identity it claims");
    assert_eq!(call("/open", &[("x-meridian-identity", "team-z")]), 200);
    assert_eq!(call("/open", &[("x-meridian-identity", "team-y")]), 200);
    assert_eq!(call("/open", &[("x-meridian-identity", "team-x")]), 429);
    assert_eq!(up.last("x-meridian-identity"), None, "a claimed identity never reaches the upstream");
}

#[test]
fn a_forwarded_request_keeps_the_identity_set_at_its_origin() {
    let dir = TempDir::new("t95-forward");
    let tls = make_certs(dir.path(), "tls", &["us1", "eu1"]);
    let eu_up = Recorder::start();
    let mut table = simple_table("us", &[closed_url()], json!({}));
    table["services"]["echo"]["endpoints"]["eu"] = json!([eu_up.url()]);
    table["routes"][0]["auth"] =
        json!({"api_keys": [{"id": "team-a", "sha256": sha256_hex("key-a-0123456789")}]});
    let spec = ClusterSpec::new(&dir, &tls, &table, 2);
    let us = spec.start("us1", "us", &[]);
    let eu = spec.start("eu1", "eu", &[us.gossip]);
    wait_cluster_ready(&[&us, &eu], Duration::from_secs(20));
    eventually(
        Duration::from_secs(10),
        || us.member_service("eu1", "echo").is_some_and(|(live, healthy, _)| live && healthy == 1),
        "us sees eu healthy for echo",
    );

    phase("us authenticates, cannot serve locally, forwards to eu; eu serves without checking again");
    let r = request(
        us.http,
        "GET",
        "/",
        &[("x-api-key", "key-a-0123456789"), ("x-meridian-identity", "root")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-meridian-region"), Some("eu"));
    assert_eq!(eu_up.last("x-meridian-identity").as_deref(), Some("team-a"), "the origin's identity arrived");
    assert_eq!(eu_up.last("x-api-key"), None, "the credential stayed at the origin");

    phase("a refused request is refused at the origin and never forwarded");
    let before = eu_up.count();
    let r = request(us.http, "GET", "/", &[("x-api-key", "wrong")], b"");
    assert_refused(&r, 401, "unauthenticated", "invalid API key");
    assert_eq!(r.header("x-meridian-region"), Some("us"));
    assert_eq!(eu_up.count(), before);
}
