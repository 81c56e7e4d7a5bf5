//! Replacing the TLS material of running peer planes: a whole CA rollover between real QUIC
//! endpoints on loopback, calls in flight across a reload, a caller the new bundle no longer
//! trusts, and files that must not be loaded.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::reload::{CredentialWatch, Outcome, TlsFiles};
use super::tests::{start, text, TestNode, SLOW, TIMEOUT};
use super::*;
use crate::certs::{self, rotation, TestDir, CA_CERT_FILE};

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Copy node `id`'s files from the issuing directory `pki` into its own directory.
fn deploy(pki: &Path, node_dir: &Path, id: &str) {
    std::fs::create_dir_all(node_dir).unwrap();
    deploy_ca(pki, node_dir);
    std::fs::copy(certs::cert_path(pki, id), certs::cert_path(node_dir, id)).unwrap();
    std::fs::copy(certs::key_path(pki, id), certs::key_path(node_dir, id)).unwrap();
}

fn deploy_ca(pki: &Path, node_dir: &Path) {
    std::fs::copy(pki.join(CA_CERT_FILE), node_dir.join(CA_CERT_FILE)).unwrap();
}

/// A node serving from its own TLS directory, with the watcher of that directory.
async fn watched(dir: &Path, id: &str) -> (TestNode, CredentialWatch) {
    let files = TlsFiles::new(dir, id);
    let fingerprint = files.fingerprint();
    let node = start(files.load().unwrap(), PeerOptions::default()).await;
    let watch = CredentialWatch::new(node.plane.clone(), files, fingerprint);
    (node, watch)
}

fn opened(n: &TestNode) -> u64 {
    n.plane.stats().connections_opened.load(Ordering::Relaxed)
}

#[tokio::test]
async fn a_ca_rollover_without_restart_keeps_calls_flowing() {
    let pki = TestDir::new("reload-pki");
    let (d1, d2) = (TestDir::new("reload-n1"), TestDir::new("reload-n2"));
    certs::issue(&pki.0, &ids(&["n1", "n2"])).unwrap();
    deploy(&pki.0, &d1.0, "n1");
    deploy(&pki.0, &d2.0, "n2");
    let ((n1, mut w1), (n2, mut w2)) = (watched(&d1.0, "n1").await, watched(&d2.0, "n2").await);
    assert_eq!(text(n1.plane.call("n2", n2.addr(), kind::RAFT, b"a", TIMEOUT).await), "kind 1 from n1: a");
    assert_eq!(w1.check().await, Outcome::Unchanged);

    tracing::info!("step 1: both nodes get the bundle CA1+CA2; a call in flight survives the reload");
    rotation::start_rollover(&pki.0).unwrap();
    let slow = {
        let (plane, addr) = (n1.plane.clone(), n2.addr());
        tokio::spawn(async move { plane.call("n2", addr, SLOW, b"", TIMEOUT).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    deploy_ca(&pki.0, &d1.0);
    deploy_ca(&pki.0, &d2.0);
    assert_eq!(w1.check().await, Outcome::Loaded { swapped: true, retired: 1 });
    assert_eq!(w2.check().await, Outcome::Loaded { swapped: true, retired: 0 }, "n2 never dialled");
    assert_eq!(slow.await.unwrap().unwrap(), b"slow", "the retired connection finished its call");
    assert_eq!(n1.plane.tls().summary().trusted_cas, 2);
    assert_eq!(text(n1.plane.call("n2", n2.addr(), kind::RAFT, b"b", TIMEOUT).await), "kind 1 from n1: b");
    assert_eq!(opened(&n1), 2, "the next call redialled with the new material");

    tracing::info!("step 2: n1 renewed from CA2 while n2 still presents its CA1 certificate");
    let serial_before = n1.plane.tls().summary().serial.clone();
    rotation::renew(&pki.0, &ids(&["n1"])).unwrap();
    deploy(&pki.0, &d1.0, "n1");
    assert!(matches!(w1.check().await, Outcome::Loaded { swapped: true, .. }));
    assert_ne!(n1.plane.tls().summary().serial, serial_before);
    assert_eq!(text(n1.plane.call("n2", n2.addr(), kind::RAFT, b"c", TIMEOUT).await), "kind 1 from n1: c");
    assert_eq!(text(n2.plane.call("n1", n1.addr(), kind::RAFT, b"d", TIMEOUT).await), "kind 1 from n2: d");
    rotation::renew(&pki.0, &ids(&["n2"])).unwrap();
    deploy(&pki.0, &d2.0, "n2");
    assert!(matches!(w2.check().await, Outcome::Loaded { swapped: true, .. }));

    tracing::info!("step 3: CA1 dropped everywhere; both directions still work on fresh handshakes");
    rotation::finish_rollover(&pki.0).unwrap();
    deploy_ca(&pki.0, &d1.0);
    deploy_ca(&pki.0, &d2.0);
    assert!(matches!(w1.check().await, Outcome::Loaded { swapped: true, .. }));
    assert!(matches!(w2.check().await, Outcome::Loaded { swapped: true, .. }));
    assert_eq!(text(n1.plane.call("n2", n2.addr(), kind::RAFT, b"e", TIMEOUT).await), "kind 1 from n1: e");
    assert_eq!(text(n2.plane.call("n1", n1.addr(), kind::RAFT, b"f", TIMEOUT).await), "kind 1 from n2: f");
    assert_eq!(n1.plane.tls().summary().trusted_cas, 1);
    assert_eq!(n1.plane.inner.reloads.ok.load(Ordering::Relaxed), 3);
    assert_eq!(n1.plane.inner.reloads.error.load(Ordering::Relaxed), 0);

    let mut out = String::new();
    n1.plane.render_tls_metrics(&mut out);
    assert!(out.contains("meridian_peer_tls_reloads_total{result=\"ok\"} 3\n"), "{out}");
    assert!(out.contains("meridian_peer_tls_reloads_total{result=\"error\"} 0\n"), "{out}");
    assert!(out.contains("meridian_peer_tls_trusted_cas 1\n"), "{out}");
    assert!(out.contains("meridian_peer_tls_reload_failing 0\n"), "{out}");
    let not_after = n1.plane.tls().summary().not_after;
    assert!(out.contains(&format!("meridian_peer_tls_cert_not_after_seconds {not_after}\n")), "{out}");

    tracing::info!("a node that kept a CA1 certificate (trusting both) is refused by both");
    let old = TestDir::new("reload-old");
    certs::issue(&old.0, &ids(&["n3"])).unwrap();
    let n3 = start(PeerTls::load(&old.0, "n3").unwrap(), PeerOptions::default()).await;
    let err = n3.plane.call("n1", n1.addr(), kind::RAFT, b"x", TIMEOUT).await.unwrap_err();
    assert!(err.is_handshake(), "{err}");
}

#[tokio::test]
async fn a_caller_the_new_bundle_does_not_trust_loses_its_connection() {
    let pki = TestDir::new("reload-revoke-pki");
    let (d1, d2) = (TestDir::new("reload-revoke-n1"), TestDir::new("reload-revoke-n2"));
    certs::issue(&pki.0, &ids(&["n1", "n2"])).unwrap();
    deploy(&pki.0, &d1.0, "n1");
    deploy(&pki.0, &d2.0, "n2");
    let ((n1, _w1), (n2, mut w2)) = (watched(&d1.0, "n1").await, watched(&d2.0, "n2").await);
    assert_eq!(text(n1.plane.call("n2", n2.addr(), kind::RAFT, b"a", TIMEOUT).await), "kind 1 from n1: a");

    tracing::info!("n2 alone moves to CA2 (an operator skipping steps): n1's connection is closed");
    rotation::start_rollover(&pki.0).unwrap();
    rotation::renew(&pki.0, &ids(&["n2"])).unwrap();
    rotation::finish_rollover(&pki.0).unwrap_err();
    // Written by hand: the new CA alone, as --drop-old-ca would once every node is renewed.
    let bundle = std::fs::read(pki.0.join(CA_CERT_FILE)).unwrap();
    let first_end = b"-----END CERTIFICATE-----\n";
    let cut = bundle.windows(first_end.len()).position(|w| w == first_end).unwrap() + first_end.len();
    std::fs::write(d2.0.join(CA_CERT_FILE), &bundle[..cut]).unwrap();
    std::fs::copy(certs::cert_path(&pki.0, "n2"), certs::cert_path(&d2.0, "n2")).unwrap();
    std::fs::copy(certs::key_path(&pki.0, "n2"), certs::key_path(&d2.0, "n2")).unwrap();
    assert!(matches!(w2.check().await, Outcome::Loaded { swapped: true, .. }));
    assert_eq!(n2.plane.tls().summary().trusted_cas, 1);
    let revoked = || n2.plane.stats().connections_revoked.load(Ordering::Relaxed);
    for _ in 0..100 {
        if revoked() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(revoked(), 1);
    tracing::info!("and cannot come back: n2 refuses its CA1 certificate, n1 does not trust n2's");
    let err = n1.plane.call("n2", n2.addr(), kind::RAFT, b"b", TIMEOUT).await.unwrap_err();
    assert!(err.is_handshake(), "{err}");
}

#[tokio::test]
async fn bad_files_keep_the_material_in_use_and_are_retried() {
    let pki = TestDir::new("reload-bad-pki");
    let (d1, d2) = (TestDir::new("reload-bad-n1"), TestDir::new("reload-bad-n2"));
    certs::issue(&pki.0, &ids(&["n1", "n2"])).unwrap();
    deploy(&pki.0, &d1.0, "n1");
    deploy(&pki.0, &d2.0, "n2");
    let ((n1, mut w1), (n2, _w2)) = (watched(&d1.0, "n1").await, watched(&d2.0, "n2").await);
    let in_use = n1.plane.tls();
    let errors = || n1.plane.inner.reloads.error.load(Ordering::Relaxed);

    tracing::info!("garbage, half a file, another node's key: refused once each, material kept");
    let cert = std::fs::read(certs::cert_path(&pki.0, "n1")).unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("n1.pem", b"garbage".to_vec(), "n1.pem: no certificate found"),
        ("n1.pem", cert[..cert.len() / 2].to_vec(), "n1.pem"),
        ("n1.key", std::fs::read(certs::key_path(&pki.0, "n2")).unwrap(), "n1.key does not hold"),
    ];
    for (i, (file, content, _)) in cases.iter().enumerate() {
        deploy(&pki.0, &d1.0, "n1");
        std::fs::write(d1.0.join(file), content).unwrap();
        assert_eq!(w1.check().await, Outcome::Refused { counted: true }, "case {i}");
        assert_eq!(w1.check().await, Outcome::Refused { counted: false }, "case {i}: retried, not recounted");
        assert_eq!(errors(), i as u64 + 1);
        assert!(n1.plane.tls().same_material(&in_use));
        assert!(n1.plane.inner.reloads.failing.load(Ordering::Relaxed));
        // New dials still work with the material in use.
        n1.plane.drop_peer("n2");
        assert_eq!(
            text(n1.plane.call("n2", n2.addr(), kind::RAFT, b"x", TIMEOUT).await),
            "kind 1 from n1: x"
        );
    }
    tracing::info!("restoring the files ends the failure without a swap");
    deploy(&pki.0, &d1.0, "n1");
    assert_eq!(w1.check().await, Outcome::Loaded { swapped: false, retired: 0 });
    assert!(!n1.plane.inner.reloads.failing.load(Ordering::Relaxed));
    assert_eq!(w1.check().await, Outcome::Unchanged);
    tracing::info!("a missing file is an error naming it");
    std::fs::remove_file(d1.0.join(CA_CERT_FILE)).unwrap();
    assert_eq!(w1.check().await, Outcome::Refused { counted: true });
    assert_eq!(errors(), 4);
}

#[tokio::test]
async fn a_reload_after_shutdown_does_not_reopen_the_endpoint() {
    let dir = TestDir::new("reload-after-stop");
    certs::issue(&dir.0, &ids(&["n1", "n2"])).unwrap();
    let n1 = start(PeerTls::load(&dir.0, "n1").unwrap(), PeerOptions::default()).await;
    let TestNode { plane: n2, _stop: stop } =
        start(PeerTls::load(&dir.0, "n2").unwrap(), PeerOptions::default()).await;
    let addr = n2.local_addr();
    drop(stop);
    tokio::time::sleep(Duration::from_millis(100)).await;
    n2.replace_tls(PeerTls::load(&dir.0, "n2").unwrap()).unwrap();
    let err = n1.plane.call("n2", addr, kind::RAFT, b"x", Duration::from_secs(1)).await.unwrap_err();
    assert!(!err.to_string().contains("kind 1"), "{err}");

    tracing::info!("material for another node is refused");
    let err = n1.plane.replace_tls(PeerTls::load(&dir.0, "n2").unwrap()).unwrap_err();
    assert!(err.to_string().contains("not of this node \"n1\""), "{err}");
}
