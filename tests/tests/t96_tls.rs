//! TLS termination on the data plane (issue 8), on real processes: certificates chosen by SNI for
//! TLS 1.3 and TLS 1.2 clients, ALPN `h2` and HTTP/2 over it, refusals (clients offering only TLS
//! 1.0/1.1, unknown names without a default pair, silent clients, plain HTTP on the TLS port), hot
//! reload without dropping connections, garbage in the certificate directory, SIGHUP, and
//! start-up with a bad directory.
//!
//! Certificates come from a test CA made here with rcgen. Clients are rustls: blocking for
//! HTTP/1.1, tokio-rustls with hyper's client connection for HTTP/2. The TLS 1.0/1.1 clients are
//! hand-made ClientHello bytes (rustls cannot speak those versions), so that part always runs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_tests::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
    StreamOwned, SupportedProtocolVersion,
};

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A test CA that issues certificate pairs into a directory the way an operator would lay them
/// out: NAME.pem (leaf, then the CA) and NAME.key.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "t96 test CA");
        Pki { ca: CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca") }
    }

    /// A fresh key and leaf for `names` (a new serial every time), written as `name` in `dir`;
    /// returns the leaf's DER.
    fn issue(&self, dir: &Path, name: &str, names: &[&str]) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(sans).expect("params").signed_by(&key, &*self.ca).expect("leaf");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write key");
        std::fs::write(dir.join(format!("{name}.pem")), format!("{}{}", cert.pem(), self.ca.pem()))
            .expect("write chain");
        cert.der().to_vec()
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("test CA");
        roots
    }
}

/// One node with HTTPS in front of one demo upstream, and the leaves it was given.
struct Setup {
    _dir: TempDir,
    certs: PathBuf,
    pki: Pki,
    _up: Upstream,
    node: Node,
    leaf_a: Vec<u8>,
    leaf_b: Vec<u8>,
    leaf_default: Option<Vec<u8>>,
}

impl Setup {
    /// Pairs `a` (a.test), `b` (*.b.test) and, with `with_default`, `default` (default.test).
    fn start(tag: &str, with_default: bool, extra: &[&str]) -> Setup {
        let dir = TempDir::new(tag);
        let certs = dir.path().join("certs");
        std::fs::create_dir_all(&certs).expect("certs dir");
        let pki = Pki::new();
        let leaf_a = pki.issue(&certs, "a", &["a.test"]);
        let leaf_b = pki.issue(&certs, "b", &["*.b.test"]);
        let leaf_default = with_default.then(|| pki.issue(&certs, "default", &["default.test"]));
        let up = Upstream::start("up", dir.path());
        let table = simple_table("us", &[up.url()], json!({}));
        let certs_arg = certs.display().to_string();
        let mut args = vec!["--https", "127.0.0.1:0", "--https-cert-dir", &certs_arg];
        args.extend_from_slice(extra);
        let node = Node::with_table("n1", "us", &table, &args, &dir);
        Setup { _dir: dir, certs, pki, _up: up, node, leaf_a, leaf_b, leaf_default }
    }

    fn https(&self) -> SocketAddr {
        self.node.https.expect("the node reports an https= address")
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// How a test client checks the server: against the test CA (chain and host name), or not at
/// all (for names no certificate carries, where the test compares the leaf itself).
enum Trust<'a> {
    Ca(&'a Pki),
    Anything,
}

/// Accepts any certificate but still checks the handshake signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn client_config(
    versions: &[&'static SupportedProtocolVersion],
    trust: Trust<'_>,
    alpn: &[&[u8]],
    send_sni: bool,
) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("versions");
    let mut config = match trust {
        Trust::Ca(pki) => builder.with_root_certificates(pki.roots()).with_no_client_auth(),
        Trust::Anything => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = send_sni;
    Arc::new(config)
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Connect and finish the handshake (errors come back as the rustls error inside io::Error).
fn handshake(addr: SocketAddr, config: Arc<ClientConfig>, name: &str) -> std::io::Result<Tls> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let server_name = ServerName::try_from(name.to_string()).expect("server name");
    let mut conn = ClientConnection::new(config, server_name).map_err(std::io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(StreamOwned::new(conn, tcp))
}

fn connect(addr: SocketAddr, config: Arc<ClientConfig>, name: &str) -> Tls {
    handshake(addr, config, name).unwrap_or_else(|e| panic!("TLS handshake as {name:?}: {e}"))
}

/// The alert a refused handshake ended with.
fn refused_with(result: std::io::Result<Tls>) -> AlertDescription {
    let e = match result {
        Ok(_) => panic!("the handshake was expected to fail"),
        Err(e) => e,
    };
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(alert)) => *alert,
        _ => panic!("expected an alert from the server, got: {e}"),
    }
}

fn leaf(tls: &Tls) -> Vec<u8> {
    tls.conn.peer_certificates().and_then(|c| c.first()).expect("a server certificate").to_vec()
}

/// One HTTP/1.1 GET on an open (keep-alive) TLS connection.
fn get(tls: &mut Tls, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut head = format!("GET {path} HTTP/1.1\r\nhost: a.test\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes()).expect("send request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("a content-length answer");
            if buf.len() >= end + 4 + len {
                return parse_response(&buf).expect("a response");
            }
        }
        let n = tls.read(&mut chunk).expect("read response");
        assert!(n > 0, "connection closed mid-response: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A proxied answer with the meridian headers, from an upstream that saw the request as https.
fn assert_proxied_as_https(r: &Response) {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-meridian-node"), Some("n1"));
    assert_eq!(r.header("x-meridian-region"), Some("us"));
    assert!(r.header("x-request-id").is_some_and(|v| !v.is_empty()));
    assert_eq!(r.header("content-type"), Some("application/json"), "the upstream's own field");
    let seen = r.json();
    assert_eq!(seen["x_forwarded_proto"], "https", "{seen}");
    assert_eq!(seen["x_forwarded_for"], "127.0.0.1", "{seen}");
}

fn tls_metric(node: &Node, series: &str) -> f64 {
    node.metric(&format!("meridian_tls_{series}"))
}

/// A failure is counted as the server drops the connection, which the client may notice first:
/// wait (bounded) for the count to reach `want`, then check it is exactly that.
fn assert_failures(node: &Node, reason: &str, want: f64) {
    let series = format!("handshake_failures_total{{reason=\"{reason}\"}}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tls_metric(node, &series) < want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(tls_metric(node, &series), want, "meridian_tls_{series}");
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn sni_chooses_the_certificate_for_tls13_and_tls12_and_requests_go_upstream_as_https() {
    let s = Setup::start("t96-sni", true, &[]);
    let default = s.leaf_default.clone().expect("default leaf");
    for (versions, label) in [(TLS13, "1.3"), (TLS12, "1.2")] {
        phase(&format!("TLS {label}: each name gets its certificate and a proxied 200"));
        let cases: [(&str, bool, Trust, &Vec<u8>); 5] = [
            ("a.test", true, Trust::Ca(&s.pki), &s.leaf_a),
            ("api.b.test", true, Trust::Ca(&s.pki), &s.leaf_b),
            ("API.B.Test", true, Trust::Ca(&s.pki), &s.leaf_b),
            ("unknown.test", true, Trust::Anything, &default),
            ("a.test", false, Trust::Anything, &default),
        ];
        for (name, sni, trust, expected) in cases {
            let what = if sni { name.to_string() } else { "no SNI".to_string() };
            let mut tls = connect(s.https(), client_config(versions, trust, &[], sni), name);
            let version = tls.conn.protocol_version().expect("version");
            assert_eq!(format!("{version:?}"), format!("TLSv{}", label.replace('.', "_")), "{what}");
            assert!(leaf(&tls) == *expected, "{what}: TLS {label} got the wrong certificate");
            assert_proxied_as_https(&get(&mut tls, "/hello", &[]));
        }
    }
    assert_eq!(tls_metric(&s.node, "handshakes_total{version=\"1.3\",alpn=\"none\"}"), 5.0);
    assert_eq!(tls_metric(&s.node, "handshakes_total{version=\"1.2\",alpn=\"none\"}"), 5.0);
    assert_eq!(tls_metric(&s.node, "certificates"), 3.0);
    assert!(tls_metric(&s.node, "certificate_not_after_seconds{name=\"a\"}") > 1.7e9);

    phase("a returning client resumes its session (tickets), TLS 1.3 and 1.2 alike");
    for (versions, label) in [(TLS13, "1.3"), (TLS12, "1.2")] {
        let config = client_config(versions, Trust::Ca(&s.pki), &[], true);
        let mut first = connect(s.https(), config.clone(), "a.test");
        // TLS 1.3 tickets follow the handshake: one exchange makes sure the client has read them.
        assert_proxied_as_https(&get(&mut first, "/hello", &[]));
        assert_eq!(first.conn.handshake_kind(), Some(rustls::HandshakeKind::Full), "TLS {label}");
        drop(first);
        let mut again = connect(s.https(), config, "a.test");
        assert_eq!(again.conn.handshake_kind(), Some(rustls::HandshakeKind::Resumed), "TLS {label}");
        assert_proxied_as_https(&get(&mut again, "/hello", &[]));
    }

    phase("the plain listener still says http, whatever the client claims");
    let r = request(s.node.http, "GET", "/hello", &[("x-forwarded-proto", "https")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["x_forwarded_proto"], "http");
    phase("and over TLS a client's own x-forwarded-proto is replaced too");
    let mut tls = connect(s.https(), client_config(BOTH, Trust::Ca(&s.pki), &[], true), "a.test");
    assert_proxied_as_https(&get(&mut tls, "/hello", &[("x-forwarded-proto", "http")]));
}

#[test]
fn alpn_h2_is_negotiated_and_http2_works_over_it() {
    let s = Setup::start("t96-alpn", true, &[]);

    phase("a client offering h2 gets h2, and HTTP/2 requests on one connection are proxied");
    let config = client_config(BOTH, Trust::Ca(&s.pki), &[b"h2", b"http/1.1"], true);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let answers = rt.block_on(async {
        use http_body_util::BodyExt as _;
        let tcp = tokio::net::TcpStream::connect(s.https()).await.expect("connect");
        let name = ServerName::try_from("a.test").expect("name");
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let io = hyper_util::rt::TokioIo::new(tls);
        let (send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        let one = |n: u32| {
            let mut send = send.clone();
            async move {
                let req = http::Request::get(format!("https://a.test/h2/{n}"))
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .expect("request");
                let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
                    .await
                    .expect("in time")
                    .expect("response");
                let (parts, body) = resp.into_parts();
                let body = body.collect().await.expect("body").to_bytes();
                (parts, body)
            }
        };
        let (a, b, c) = tokio::join!(one(1), one(2), one(3));
        vec![a, b, c]
    });
    for (n, (parts, body)) in answers.iter().enumerate() {
        assert_eq!(parts.status, 200);
        assert_eq!(parts.version, http::Version::HTTP_2);
        assert_eq!(parts.headers.get("x-meridian-node").map(|v| v.as_bytes()), Some(&b"n1"[..]));
        assert_eq!(parts.headers.get("content-type").map(|v| v.as_bytes()), Some(&b"application/json"[..]));
        let seen: Value = serde_json::from_slice(body).expect("json");
        assert_eq!(seen["x_forwarded_proto"], "https");
        assert_eq!(seen["path"], format!("/h2/{}", n + 1));
    }

    phase("http/1.1 when that is all the client offers, and no ALPN at all works too");
    let mut tls = connect(s.https(), client_config(BOTH, Trust::Ca(&s.pki), &[b"http/1.1"], true), "a.test");
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_proxied_as_https(&get(&mut tls, "/one", &[]));
    let tls = connect(s.https(), client_config(BOTH, Trust::Ca(&s.pki), &[], true), "a.test");
    assert_eq!(tls.conn.alpn_protocol(), None);

    phase("a client offering only protocols the gateway does not speak is refused");
    let alert =
        refused_with(handshake(s.https(), client_config(BOTH, Trust::Ca(&s.pki), &[b"h3"], true), "a.test"));
    assert_eq!(alert, AlertDescription::NoApplicationProtocol);

    assert_eq!(tls_metric(&s.node, "handshakes_total{version=\"1.3\",alpn=\"h2\"}"), 1.0);
    assert_eq!(tls_metric(&s.node, "handshakes_total{version=\"1.3\",alpn=\"http/1.1\"}"), 1.0);
    assert_eq!(tls_metric(&s.node, "handshakes_total{version=\"1.3\",alpn=\"none\"}"), 1.0);
    assert_failures(&s.node, "no_application_protocol", 1.0);
}

/// A ClientHello as a TLS 1.0 or 1.1 client sends it: `version` in the record and the hello, no
/// signature_algorithms or supported_versions extension, CBC and RSA-kx suites.
fn legacy_client_hello(version: u16) -> Vec<u8> {
    let mut ext = Vec::new();
    let mut add = |kind: u16, data: &[u8]| {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&u16::try_from(data.len()).expect("len").to_be_bytes());
        ext.extend_from_slice(data);
    };
    add(0x0000, &[0x00, 0x09, 0x00, 0x00, 0x06, b'a', b'.', b't', b'e', b's', b't']); // server_name
    add(0x000a, &[0x00, 0x04, 0x00, 0x17, 0x00, 0x18]); // supported_groups: P-256, P-384
    add(0x000b, &[0x01, 0x00]); // ec_point_formats: uncompressed
    add(0xff01, &[0x00]); // renegotiation_info
    add(0x0023, &[]); // session_ticket
    let suites: [u16; 6] = [0xc014, 0xc013, 0x0035, 0x002f, 0x000a, 0x00ff];
    let mut body = version.to_be_bytes().to_vec();
    body.extend((0..32u8).map(|i| i.wrapping_mul(37))); // random
    body.push(0); // no session id
    body.extend_from_slice(&u16::try_from(suites.len() * 2).expect("len").to_be_bytes());
    body.extend(suites.iter().flat_map(|s| s.to_be_bytes()));
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&u16::try_from(ext.len()).expect("len").to_be_bytes());
    body.extend_from_slice(&ext);
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&u32::try_from(body.len()).expect("len").to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![22];
    record.extend_from_slice(&version.to_be_bytes());
    record.extend_from_slice(&u16::try_from(handshake.len()).expect("len").to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[test]
fn clients_offering_only_old_versions_get_a_protocol_version_alert() {
    let s = Setup::start("t96-versions", true, &[]);
    for (version, label) in [(0x0301u16, "TLS 1.0"), (0x0302, "TLS 1.1")] {
        phase(&format!("a {label} ClientHello is answered with a fatal protocol_version alert"));
        let mut tcp = TcpStream::connect_timeout(&s.https(), Duration::from_secs(5)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        tcp.write_all(&legacy_client_hello(version)).expect("send hello");
        let (answer, closed) = read_until_closed(&mut tcp, Duration::from_secs(5));
        assert!(closed.is_some(), "{label}: the connection must be closed after the alert");
        assert_eq!(answer.len(), 7, "{label}: one alert record, got {answer:02x?}");
        assert_eq!(answer[0], 0x15, "{label}: an alert record");
        assert_eq!(&answer[3..], &[0x00, 0x02, 0x02, 70], "{label}: fatal protocol_version");
    }
    assert_failures(&s.node, "protocol_version", 2.0);
    let log = s.node.proc.stderr();
    assert!(log.contains("TLS handshake failed") && log.contains("protocol_version"), "{log}");

    phase("with --https-min-tls 1.3, a TLS 1.2 client is refused the same way and 1.3 still works");
    let dir = TempDir::new("t96-min13");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("dir");
    let strict_leaf = s.pki.issue(&certs, "a", &["a.test"]);
    let certs_arg = certs.display().to_string();
    let table = simple_table("us", &[closed_url()], json!({}));
    let args = ["--https", "127.0.0.1:0", "--https-cert-dir", &certs_arg, "--https-min-tls", "1.3"];
    let strict = Node::with_table("n13", "us", &table, &args, &dir);
    let https = strict.https.expect("https");
    let alert = refused_with(handshake(https, client_config(TLS12, Trust::Ca(&s.pki), &[], true), "a.test"));
    assert_eq!(alert, AlertDescription::ProtocolVersion);
    let tls = connect(https, client_config(BOTH, Trust::Ca(&s.pki), &[], true), "a.test");
    assert_eq!(leaf(&tls), strict_leaf);
    assert_failures(&strict, "protocol_version", 1.0);
}

#[test]
fn without_a_default_pair_unknown_names_and_missing_sni_are_refused() {
    let s = Setup::start("t96-nodefault", false, &[]);
    phase("an SNI no certificate covers: unrecognized_name");
    let config = client_config(BOTH, Trust::Anything, &[], true);
    assert_eq!(refused_with(handshake(s.https(), config, "nope.test")), AlertDescription::UnrecognisedName);
    phase("no SNI at all: unrecognized_name as well");
    let config = client_config(BOTH, Trust::Anything, &[], false);
    assert_eq!(refused_with(handshake(s.https(), config, "a.test")), AlertDescription::UnrecognisedName);
    phase("known names are unaffected");
    let mut tls = connect(s.https(), client_config(BOTH, Trust::Ca(&s.pki), &[], true), "x.b.test");
    assert!(leaf(&tls) == s.leaf_b);
    assert_proxied_as_https(&get(&mut tls, "/", &[]));
    assert_failures(&s.node, "unrecognized_name", 1.0);
    assert_failures(&s.node, "no_certificate", 1.0);
    let log = s.node.proc.stderr();
    assert!(log.contains("nope.test") && log.contains("unrecognized_name"), "{log}");
}

#[test]
fn silent_slow_and_plain_http_clients_are_cut_off() {
    let s = Setup::start("t96-timeouts", true, &["--header-read-timeout-ms", "600"]);
    phase("a client that connects and sends nothing is closed at the header read timeout");
    let mut tcp = TcpStream::connect_timeout(&s.https(), Duration::from_secs(5)).expect("connect");
    let (got, closed) = read_until_closed(&mut tcp, Duration::from_secs(10));
    let closed = closed.expect("closed by the server");
    assert!(got.is_empty() && closed >= Duration::from_millis(400), "closed after {closed:?}: {got:?}");

    phase("so is one that stalls halfway through its ClientHello");
    let hello = legacy_client_hello(0x0303);
    let mut tcp = TcpStream::connect_timeout(&s.https(), Duration::from_secs(5)).expect("connect");
    tcp.write_all(&hello[..hello.len() / 2]).expect("half a hello");
    let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(10));
    assert!(closed.is_some(), "a stalled handshake must be closed");
    assert_failures(&s.node, "timeout", 2.0);

    phase("a finished handshake without a request is closed by the HTTP header timeout");
    let mut tls = connect(s.https(), client_config(BOTH, Trust::Ca(&s.pki), &[], true), "a.test");
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let n = tls.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "nothing but the close");
    assert!(t0.elapsed() < Duration::from_secs(8), "closed after {:?}", t0.elapsed());

    phase("plain HTTP sent to the HTTPS port is refused, not served");
    let mut tcp = TcpStream::connect_timeout(&s.https(), Duration::from_secs(5)).expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: a.test\r\n\r\n").expect("send");
    let (got, closed) = read_until_closed(&mut tcp, Duration::from_secs(5));
    assert!(closed.is_some());
    assert!(!got.starts_with(b"HTTP/"), "{:?}", String::from_utf8_lossy(&got));
    assert_failures(&s.node, "bad_message", 1.0);

    phase("the node still serves after all that");
    let mut tls = connect(s.https(), client_config(BOTH, Trust::Ca(&s.pki), &[], true), "a.test");
    assert_proxied_as_https(&get(&mut tls, "/", &[]));
}

#[test]
fn hot_reload_rotates_certificates_without_dropping_connections_and_survives_garbage() {
    let s = Setup::start("t96-reload", true, &["--https-reload-ms", "200"]);
    let trusted = || client_config(BOTH, Trust::Ca(&s.pki), &[], true);

    phase("a connection opened before the rotation");
    let mut before = connect(s.https(), trusted(), "a.test");
    assert!(leaf(&before) == s.leaf_a);
    assert_proxied_as_https(&get(&mut before, "/before/1", &[]));

    phase("a.pem and a.key replaced by a new pair (new key, new serial): new handshakes get it");
    let rotated = s.pki.issue(&s.certs, "a", &["a.test"]);
    assert!(rotated != s.leaf_a);
    eventually(
        Duration::from_secs(10),
        || leaf(&connect(s.https(), trusted(), "a.test")) == rotated,
        "rotated cert served",
    );
    assert!(tls_metric(&s.node, "reloads_total{result=\"ok\"}") >= 1.0);

    phase("the earlier connection keeps working, on its original certificate");
    assert_proxied_as_https(&get(&mut before, "/before/2", &[]));
    assert!(leaf(&before) == s.leaf_a);
    let mut after = connect(s.https(), trusted(), "a.test");
    assert_proxied_as_https(&get(&mut after, "/after/1", &[]));

    phase("a.pem overwritten with garbage: the rotated certificate stays in service");
    let errors = tls_metric(&s.node, "reloads_total{result=\"error\"}");
    std::fs::write(s.certs.join("a.pem"), "-----BEGIN CERTIFICATE-----\nnot really\n").expect("garbage");
    eventually(
        Duration::from_secs(10),
        || tls_metric(&s.node, "reloads_total{result=\"error\"}") > errors,
        "the failed reload counted",
    );
    assert_eq!(tls_metric(&s.node, "reload_failing"), 1.0);
    for _ in 0..3 {
        let mut tls = connect(s.https(), trusted(), "a.test");
        assert!(leaf(&tls) == rotated, "still the last good certificate");
        assert_proxied_as_https(&get(&mut tls, "/during-garbage", &[]));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(tls_metric(&s.node, "certificates"), 3.0);
    let a_pem = s.certs.join("a.pem").display().to_string();
    eventually(
        Duration::from_secs(5),
        || {
            let log = s.node.proc.stderr();
            log.lines().any(|l| l.contains("ERROR") && l.contains("reload failed") && l.contains(&a_pem))
        },
        "an error line naming a.pem",
    );
    assert_proxied_as_https(&get(&mut before, "/before/3", &[]));
    assert_proxied_as_https(&get(&mut after, "/after/2", &[]));

    phase("a good pair again: served, and the failure is over");
    let fixed = s.pki.issue(&s.certs, "a", &["a.test"]);
    eventually(
        Duration::from_secs(10),
        || leaf(&connect(s.https(), trusted(), "a.test")) == fixed,
        "fixed cert served",
    );
    eventually(
        Duration::from_secs(5),
        || tls_metric(&s.node, "reload_failing") == 0.0,
        "reload_failing back to 0",
    );
}

#[test]
fn sighup_reloads_the_certificates_at_once() {
    // Polling is hourly here, so only the signal can explain a prompt change.
    let s = Setup::start("t96-sighup", true, &["--https-reload-ms", "3600000"]);
    let trusted = || client_config(BOTH, Trust::Ca(&s.pki), &[], true);
    let rotated = s.pki.issue(&s.certs, "b", &["*.b.test"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(leaf(&connect(s.https(), trusted(), "x.b.test")) == s.leaf_b, "not reloaded without a signal");
    s.node.proc.signal(1);
    eventually(
        Duration::from_secs(5),
        || leaf(&connect(s.https(), trusted(), "x.b.test")) == rotated,
        "reloaded on SIGHUP",
    );
    assert_eq!(tls_metric(&s.node, "reloads_total{result=\"ok\"}"), 1.0);
}

#[test]
fn a_bad_certificate_directory_stops_the_node_before_it_listens() {
    let dir = TempDir::new("t96-bad");
    let pki = Pki::new();
    let make = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).expect("dir");
        d
    };
    let garbage = make("garbage");
    pki.issue(&garbage, "good", &["good.test"]);
    pki.issue(&garbage, "x", &["x.test"]);
    std::fs::write(garbage.join("x.pem"), "not a certificate").expect("write");
    let mismatch = make("mismatch");
    pki.issue(&mismatch, "m", &["m.test"]);
    let other = make("other");
    pki.issue(&other, "m", &["m.test"]);
    std::fs::copy(other.join("m.key"), mismatch.join("m.key")).expect("copy");
    let half = make("half");
    pki.issue(&half, "lonely", &["lonely.test"]);
    std::fs::remove_file(half.join("lonely.key")).expect("rm");
    let empty = make("empty");
    let missing = dir.path().join("no-such-dir");

    let path = |p: &Path| p.display().to_string();
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (vec!["--https-cert-dir".into(), path(&missing)], vec![path(&missing)]),
        (vec!["--https-cert-dir".into(), path(&empty)], vec![path(&empty), "no certificate pair".into()]),
        (vec!["--https-cert-dir".into(), path(&garbage)], vec![path(&garbage.join("x.pem"))]),
        (vec!["--https-cert-dir".into(), path(&mismatch)], vec![path(&mismatch.join("m.key"))]),
        (
            vec!["--https-cert-dir".into(), path(&half)],
            vec![path(&half.join("lonely.pem")), path(&half.join("lonely.key"))],
        ),
        (vec![], vec!["https_cert_dir".into()]),
        (
            vec!["--https-cert-dir".into(), path(&other), "--https-min-tls".into(), "1.1".into()],
            vec!["https_min_tls".into()],
        ),
    ];
    for (i, (extra, expected)) in cases.iter().enumerate() {
        phase(&format!("case {i}: {extra:?}"));
        let mut args =
            vec!["node", "--id", "bad", "--region", "us", "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
        args.extend(["--https", "127.0.0.1:0"]);
        args.extend(extra.iter().map(String::as_str));
        let (code, stderr, stdout) =
            run_expecting_exit(&format!("bad-{i}"), &args, &[], dir.path(), Duration::from_secs(20));
        assert!(code.is_some_and(|c| c != 0), "case {i}: must exit non-zero, got {code:?}\n{stderr}");
        for needle in expected {
            assert!(stderr.contains(needle.as_str()), "case {i}: stderr must name {needle:?}:\n{stderr}");
        }
        assert!(stdout.iter().all(|l| !l.contains("listening")), "case {i}: it listened: {stdout:?}");
    }
}
