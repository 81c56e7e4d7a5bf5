//! Unit tests of the HTTPS certificate handling: SNI resolution, loading errors, key formats,
//! and the reload state machine on a real directory. Certificates are made here with rcgen.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use rcgen::{CertificateParams, KeyPair};

use super::load::{self, CertPair, LoadError};
use super::names::{self, ServedName};
use super::reload::{Outcome, Reloader};
use super::stats::FailureReason;
use super::store::{CertStore, Lookup};
use super::{EdgeTls, HttpsConfig, MinTls};

/// The 2048-bit RSA key the node's tests share (ring cannot generate RSA keys).
const RSA_KEY: &str = include_str!("../../testdata/rsa-2048-test-key.pem");

/// A self-signed certificate for `names` and its key, as PEM (P-256 unless `key` is given),
/// valid until `not_after_year`.
fn make_cert(names: &[&str], key: Option<&KeyPair>, not_after_year: i32) -> (String, String) {
    let generated;
    let key = match key {
        Some(k) => k,
        None => {
            generated = KeyPair::generate().expect("key");
            &generated
        }
    };
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
    params.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
    let cert = params.self_signed(key).expect("self-signed");
    (cert.pem(), key.serialize_pem())
}

fn pair(name: &str, names: &[&str]) -> CertPair {
    pair_until(name, names, 2040)
}

fn pair_until(name: &str, names: &[&str], year: i32) -> CertPair {
    let (cert, key) = make_cert(names, None, year);
    load::parse_pair(name, Path::new("c.pem"), cert.as_bytes(), Path::new("c.key"), key.as_bytes())
        .expect("pair loads")
}

fn found(l: Lookup<'_>) -> &str {
    match l {
        Lookup::Found(p) => &p.name,
        Lookup::NoSni => "<no sni>",
        Lookup::Unrecognized => "<unrecognized>",
    }
}

#[test]
fn sni_resolution_exact_wildcard_case_and_default() {
    let store = CertStore::new(vec![
        pair("a", &["a.test"]),
        pair("b", &["*.b.test"]),
        pair("c", &["x.b.test"]),
        pair("default", &["fallback.test"]),
    ]);
    let at = |sni: Option<&str>| found(store.lookup(sni)).to_string();
    assert_eq!(at(Some("a.test")), "a");
    assert_eq!(at(Some("A.TeST")), "a", "names compare case-insensitively");
    assert_eq!(at(Some("a.test.")), "a", "one trailing dot is the same name");
    assert_eq!(at(Some("api.b.test")), "b", "one-label wildcard");
    assert_eq!(at(Some("API.B.TEST")), "b");
    assert_eq!(at(Some("x.b.test")), "c", "an exact name beats a wildcard");
    assert_eq!(at(Some("deep.api.b.test")), "default", "a wildcard covers one label only");
    assert_eq!(at(Some("b.test")), "default", "a wildcard does not cover its parent");
    assert_eq!(at(Some("other.test")), "default");
    assert_eq!(at(Some("fallback.test")), "default", "the default's own names resolve too");
    assert_eq!(at(None), "default", "no SNI gets the default");
    assert_eq!(at(Some(&"x".repeat(300))), "default", "an over-long name is just unknown");
}

#[test]
fn without_a_default_unknown_names_and_missing_sni_are_refused() {
    let store = CertStore::new(vec![pair("a", &["a.test"]), pair("b", &["*.b.test"])]);
    assert!(!store.has_default());
    assert_eq!(found(store.lookup(Some("a.test"))), "a");
    assert_eq!(found(store.lookup(Some("nope.test"))), "<unrecognized>");
    assert_eq!(found(store.lookup(Some("é.test"))), "<unrecognized>");
    assert_eq!(found(store.lookup(None)), "<no sni>");
}

#[test]
fn a_name_claimed_twice_goes_to_the_later_expiry() {
    // "new" sorts after "old" but expires later: it wins whatever the file order.
    let store = CertStore::new(vec![
        pair_until("old", &["a.test", "*.w.test"], 2030),
        pair_until("new", &["a.test", "*.w.test"], 2035),
    ]);
    assert_eq!(found(store.lookup(Some("a.test"))), "new");
    assert_eq!(found(store.lookup(Some("x.w.test"))), "new");
    assert_eq!(store.shadowed().len(), 2);
    assert!(store.shadowed().iter().all(|s| s.served_by == "new" && s.not_served_by == "old"));
    // Equal expiry: the name that sorts first keeps it.
    let (c1, k1) = make_cert(&["t.test"], None, 2031);
    let (c2, k2) = make_cert(&["t.test"], None, 2031);
    let p = |n: &str, c: &str, k: &str| {
        load::parse_pair(n, Path::new("x.pem"), c.as_bytes(), Path::new("x.key"), k.as_bytes()).expect("pair")
    };
    let store = CertStore::new(vec![p("zz", &c1, &k1), p("aa", &c2, &k2)]);
    assert_eq!(found(store.lookup(Some("t.test"))), "aa");
}

#[test]
fn san_rules() {
    assert_eq!(names::parse_san("Api.Example.COM."), Ok(ServedName::Exact("api.example.com".into())));
    assert_eq!(names::parse_san("*.Example.com"), Ok(ServedName::Wildcard("example.com".into())));
    assert!(names::parse_san("f*.example.com").is_err(), "partial-label wildcards are not served");
    assert!(names::parse_san("*.*.example.com").is_err());
    assert!(names::parse_san("a.*.example.com").is_err());
    assert!(names::parse_san("*.com").is_err(), "a wildcard over a whole TLD");
    assert!(names::parse_san("10.0.0.1").is_err(), "IP addresses are not host names");
    assert!(names::parse_san("bad name.test").is_err());
    assert!(names::parse_san("").is_err());
    let mut buf = [0u8; names::MAX_NAME];
    assert_eq!(names::normalize("A.B.", &mut buf), Some("a.b"));
    assert_eq!(names::normalize(&"a".repeat(254), &mut buf), None);
    assert_eq!(names::normalize("", &mut buf), None);
    assert_eq!(names::wildcard_parent("x.b.test"), Some("b.test"));
    assert_eq!(names::wildcard_parent("test"), None);
    assert_eq!(names::wildcard_parent(".test"), None);
}

#[test]
fn sans_that_cannot_be_served_are_reported_not_fatal() {
    let p = pair("mixed", &["ok.test", "f*.test", "10.1.2.3"]);
    assert_eq!(p.served, vec![ServedName::Exact("ok.test".into())]);
    assert_eq!(p.ignored.len(), 1, "an IP SAN is not a dNSName and is not even looked at");
    assert_eq!(p.ignored[0].0, "f*.test");
}

/// A fresh directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let n =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("meridian-edge-tls-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("dir");
        Dir(p)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write");
        p
    }

    fn put_pair(&self, name: &str, names: &[&str]) -> String {
        let (cert, key) = make_cert(names, None, 2040);
        self.write(&format!("{name}.key"), &key);
        self.write(&format!("{name}.pem"), &cert);
        cert
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load_err(dir: &Dir) -> String {
    load::load_dir(&dir.0).expect_err("the directory must not load").to_string()
}

#[test]
fn loading_errors_name_the_file() {
    let d = Dir::new("errors");
    assert!(matches!(load::load_dir(&d.0), Err(LoadError::Empty { .. })), "empty directory");
    assert!(load_err(&Dir(d.0.join("missing"))).contains("missing"), "missing directory");

    d.put_pair("good", &["good.test"]);
    d.write("README.txt", "ignored");
    d.write(".hidden.pem", "ignored too");
    assert_eq!(load::load_dir(&d.0).expect("loads").pairs.len(), 1);

    // Garbage certificate.
    d.put_pair("x", &["x.test"]);
    let pem = d.write("x.pem", "this is not a certificate\n");
    let e = load_err(&d);
    assert!(e.contains(&pem.display().to_string()) && e.contains("no PEM CERTIFICATE"), "{e}");
    d.write("x.pem", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
    assert!(load_err(&d).contains("x.pem: not valid PEM"));
    d.write("x.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    assert!(load_err(&d).contains("x.pem: the first certificate (the leaf) does not parse"));

    // Key of another certificate.
    let (cert, _) = make_cert(&["x.test"], None, 2040);
    let (_, other_key) = make_cert(&["x.test"], None, 2040);
    d.write("x.pem", &cert);
    let key = d.write("x.key", &other_key);
    let e = load_err(&d);
    assert!(e.contains(&key.display().to_string()) && e.contains("not the private key of"), "{e}");

    // Garbage key.
    d.write("x.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    assert!(load_err(&d).contains("x.key: not a usable private key"));
    d.write("x.key", "nothing here");
    assert!(load_err(&d).contains("x.key: no private key in it"));

    // Missing key file, then an orphan key.
    std::fs::remove_file(d.0.join("x.key")).expect("rm");
    let e = load_err(&d);
    assert!(e.contains("x.pem has no") && e.contains("x.key beside it"), "{e}");
    std::fs::remove_file(d.0.join("x.pem")).expect("rm");
    d.write("y.key", &other_key);
    let e = load_err(&d);
    assert!(e.contains("y.key has no") && e.contains("y.pem beside it"), "{e}");
    std::fs::remove_file(d.0.join("y.key")).expect("rm");

    // A certificate without a DNS name: only the default pair may.
    let (cert, key) = make_cert(&["10.0.0.1"], None, 2040);
    d.write("ip.pem", &cert);
    d.write("ip.key", &key);
    assert!(load_err(&d).contains("ip.pem: the leaf certificate names no DNS host"));
    std::fs::rename(d.0.join("ip.pem"), d.0.join("default.pem")).expect("mv");
    std::fs::rename(d.0.join("ip.key"), d.0.join("default.key")).expect("mv");
    assert_eq!(load::load_dir(&d.0).expect("a default without DNS names loads").pairs.len(), 2);

    // Oversized file.
    d.write("big.pem", &"A".repeat(load::MAX_FILE_BYTES as usize + 1));
    d.write("big.key", "x");
    assert!(load_err(&d).contains("big.pem"));
}

/// The DER value of the OCTET STRING in a PKCS#8 key: the PKCS#1 (RSA) or SEC1 (EC) key.
fn pkcs8_inner(der: &[u8]) -> Vec<u8> {
    fn tlv(b: &[u8]) -> (u8, &[u8], &[u8]) {
        let (len, hdr) = if b[1] < 0x80 {
            (usize::from(b[1]), 2)
        } else {
            let n = usize::from(b[1] & 0x7f);
            (b[2..2 + n].iter().fold(0usize, |a, x| (a << 8) | usize::from(*x)), 2 + n)
        };
        (b[0], &b[hdr..hdr + len], &b[hdr + len..])
    }
    let (_, seq, _) = tlv(der);
    let (_, _, rest) = tlv(seq); // version
    let (_, _, rest) = tlv(rest); // algorithm
    let (tag, key, _) = tlv(rest);
    assert_eq!(tag, 0x04, "privateKey OCTET STRING");
    key.to_vec()
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or("")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

#[test]
fn rsa_pkcs8_rsa_pkcs1_and_sec1_keys_load() {
    let load = |cert: &str, key: &str| {
        load::parse_pair("k", Path::new("k.pem"), cert.as_bytes(), Path::new("k.key"), key.as_bytes())
    };
    let rsa = KeyPair::from_pem(RSA_KEY).expect("rsa key");
    let (cert, key) = make_cert(&["rsa.test"], Some(&rsa), 2040);
    load(&cert, &key).expect("RSA PKCS#8");
    load(&cert, &pem("RSA PRIVATE KEY", &pkcs8_inner(&rsa.serialize_der()))).expect("RSA PKCS#1");

    let ec = KeyPair::generate().expect("p256");
    let (cert, key) = make_cert(&["ec.test"], Some(&ec), 2040);
    load(&cert, &key).expect("EC PKCS#8");
    let sec1 = pem("EC PRIVATE KEY", &pkcs8_inner(&ec.serialize_der()));
    load(&cert, &sec1).expect("EC SEC1");
    // The SEC1 key of another certificate is still caught.
    let (other, _) = make_cert(&["ec.test"], None, 2040);
    assert!(matches!(load(&other, &sec1), Err(LoadError::KeyMismatch { .. })));
}

fn edge_tls(dir: &Dir) -> (EdgeTls, Reloader) {
    let cfg = HttpsConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        cert_dir: dir.0.clone(),
        min_tls: MinTls::Tls12,
        reload_interval: Duration::from_millis(100),
    };
    let (tls, fp) = EdgeTls::load(&cfg, Duration::from_secs(1)).expect("loads");
    (tls, Reloader::new(fp))
}

/// The leaf DER that `sni` gets right now.
fn served(tls: &EdgeTls, sni: &str) -> Vec<u8> {
    match tls.certs().lookup(Some(sni)) {
        Lookup::Found(p) => p.certified.cert[0].to_vec(),
        _ => panic!("{sni} is not served"),
    }
}

fn leaf_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem").to_vec()
}

#[test]
fn reload_swaps_good_sets_keeps_serving_through_bad_ones_and_retries() {
    let d = Dir::new("reload");
    let first = d.put_pair("a", &["a.test"]);
    let (tls, mut r) = edge_tls(&d);
    assert_eq!(served(&tls, "a.test"), leaf_der(&first));
    assert_eq!(r.check(&tls, false), Outcome::Unchanged, "nothing changed since start-up");

    // A new certificate for the same name: served from the next check.
    let second = d.put_pair("a", &["a.test"]);
    assert_eq!(r.check(&tls, false), Outcome::Loaded { pairs: 1 });
    assert_eq!(served(&tls, "a.test"), leaf_der(&second));
    assert_eq!(r.check(&tls, false), Outcome::Unchanged);

    // Half a certificate, as seen mid-write: refused, the previous one still served, counted once.
    let (third, third_key) = make_cert(&["a.test"], None, 2040);
    d.write("a.key", &third_key);
    d.write("a.pem", &third[..third.len() / 2]);
    let Outcome::Failed { error, first: true } = r.check(&tls, false) else { panic!("must fail") };
    assert!(error.contains("a.pem"), "{error}");
    assert_eq!(served(&tls, "a.test"), leaf_der(&second));
    assert_eq!(tls.stats.reloads(), (1, 1));
    // The next tick retries even though the directory has not changed since the failure...
    let Outcome::Failed { first: false, .. } = r.check(&tls, false) else { panic!("retried and failed") };
    assert_eq!(tls.stats.reloads(), (1, 1), "the same failure is counted once");
    // ...so the rest of the write is picked up whenever it lands.
    d.write("a.pem", &third);
    assert_eq!(r.check(&tls, false), Outcome::Loaded { pairs: 1 });
    assert_eq!(served(&tls, "a.test"), leaf_der(&third));
    assert_eq!(tls.stats.reloads(), (2, 1));

    // Garbage, a key that no longer matches, an emptied directory: each refused, each counted.
    d.write("a.pem", "garbage");
    assert!(matches!(r.check(&tls, false), Outcome::Failed { first: true, .. }));
    d.write("a.pem", &third);
    d.write("a.key", &make_cert(&["a.test"], None, 2040).1);
    let Outcome::Failed { error, first: true } = r.check(&tls, false) else { panic!("key mismatch") };
    assert!(error.contains("a.key"), "{error}");
    std::fs::remove_file(d.0.join("a.pem")).expect("rm");
    std::fs::remove_file(d.0.join("a.key")).expect("rm");
    let Outcome::Failed { error, first: true } = r.check(&tls, false) else { panic!("empty") };
    assert!(error.contains("holds no certificate pair"), "{error}");
    assert_eq!(served(&tls, "a.test"), leaf_der(&third), "still the last good certificate");
    assert_eq!(tls.stats.reloads(), (2, 4));

    // SIGHUP reloads even an unchanged directory.
    let fourth = d.put_pair("a", &["a.test"]);
    d.put_pair("b", &["*.b.test"]);
    assert_eq!(r.check(&tls, false), Outcome::Loaded { pairs: 2 });
    assert_eq!(r.check(&tls, true), Outcome::Loaded { pairs: 2 });
    assert_eq!(served(&tls, "a.test"), leaf_der(&fourth));
    assert_eq!(served(&tls, "x.b.test").len(), served(&tls, "y.b.test").len());
}

#[test]
fn fingerprint_sees_writes_renames_and_removals() {
    let d = Dir::new("fingerprint");
    d.put_pair("a", &["a.test"]);
    let fp = load::fingerprint(&d.0).expect("fp");
    assert_eq!(load::fingerprint(&d.0).expect("fp"), fp, "stable while nothing changes");
    d.write("notes.txt", "not a certificate file");
    assert_eq!(load::fingerprint(&d.0).expect("fp"), fp, "other files do not count");

    let pem = std::fs::read(d.0.join("a.pem")).expect("read");
    std::fs::write(d.0.join("a.pem"), &pem).expect("rewrite");
    let rewritten = load::fingerprint(&d.0).expect("fp");
    assert_ne!(rewritten, fp, "a rewrite with the same bytes still moves ctime");

    std::fs::write(d.0.join(".a.pem.tmp"), &pem).expect("tmp");
    assert_eq!(load::fingerprint(&d.0).expect("fp"), rewritten, "hidden files do not count");
    std::fs::rename(d.0.join(".a.pem.tmp"), d.0.join("a.pem")).expect("rename");
    let renamed = load::fingerprint(&d.0).expect("fp");
    assert_ne!(renamed, rewritten, "an atomic rename into place changes the inode");

    std::fs::remove_file(d.0.join("a.key")).expect("rm");
    assert_ne!(load::fingerprint(&d.0).expect("fp"), renamed);
}

#[test]
fn tls_errors_are_classified() {
    use super::accept::{classify, classify_tls};
    use rustls::{AlertDescription, Error, PeerIncompatible};
    let io = |e: Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    assert_eq!(
        classify(&io(Error::PeerIncompatible(PeerIncompatible::Tls12NotOffered))),
        FailureReason::ProtocolVersion
    );
    assert_eq!(
        classify_tls(&Error::PeerIncompatible(PeerIncompatible::Tls12NotOfferedOrEnabled)),
        FailureReason::ProtocolVersion
    );
    assert_eq!(classify(&io(Error::NoApplicationProtocol)), FailureReason::NoApplicationProtocol);
    assert_eq!(
        classify(&io(Error::AlertReceived(AlertDescription::BadCertificate))),
        FailureReason::ClientAlert
    );
    assert_eq!(
        classify_tls(&Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon)),
        FailureReason::Other
    );
    assert_eq!(classify(&std::io::ErrorKind::UnexpectedEof.into()), FailureReason::Closed);
    assert_eq!(classify(&std::io::ErrorKind::ConnectionReset.into()), FailureReason::Closed);
    assert_eq!(classify(&std::io::ErrorKind::PermissionDenied.into()), FailureReason::Other);
}

#[test]
fn metrics_render_every_series() {
    let d = Dir::new("metrics");
    d.put_pair("a", &["a.test"]);
    d.put_pair("default", &["d.test"]);
    let (tls, _) = edge_tls(&d);
    tls.stats.count_handshake(Some(rustls::ProtocolVersion::TLSv1_3), Some(b"h2"));
    tls.stats.count_handshake(Some(rustls::ProtocolVersion::TLSv1_2), None);
    tls.stats.count_failure(FailureReason::ProtocolVersion);
    let mut out = String::new();
    tls.render_metrics(&mut out);
    for line in [
        "meridian_tls_handshakes_total{version=\"1.3\",alpn=\"h2\"} 1",
        "meridian_tls_handshakes_total{version=\"1.2\",alpn=\"none\"} 1",
        "meridian_tls_handshakes_total{version=\"1.2\",alpn=\"http/1.1\"} 0",
        "meridian_tls_handshake_failures_total{reason=\"protocol_version\"} 1",
        "meridian_tls_handshake_failures_total{reason=\"timeout\"} 0",
        "meridian_tls_reloads_total{result=\"ok\"} 0",
        "meridian_tls_reloads_total{result=\"error\"} 0",
        "meridian_tls_certificates 2",
        "meridian_tls_certificate_not_after_seconds{name=\"a\"} 2208988800",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
    }
}
