//! Each `meridian certs` step on a real directory, checked by loading what it wrote the way a node
//! does (`PeerTls::load`).

use clap::Parser;

use super::*;
use crate::certs::{issue, CertsAction, CertsArgs, TestDir};
use crate::peer::PeerTls;

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn bundle(dir: &Path) -> Vec<CertificateDer<'static>> {
    let pem = fs::read(dir.join(CA_CERT_FILE)).unwrap();
    CertificateDer::pem_slice_iter(&pem).map(Result::unwrap).collect()
}

fn node_cert(dir: &Path, id: &str) -> CertificateDer<'static> {
    let pem = fs::read(cert_path(dir, id)).unwrap();
    CertificateDer::pem_slice_iter(&pem).next().unwrap().unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Nothing but the files a step is meant to leave (no temporary files).
fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    n.sort();
    n
}

#[test]
fn renew_replaces_the_named_pairs_from_the_same_ca() {
    let dir = TestDir::new("rot-renew");
    issue(&dir.0, &ids(&["n1", "n2"])).unwrap();
    let ca_before = fs::read(dir.0.join(CA_CERT_FILE)).unwrap();
    let (n1_cert, n1_key) =
        (fs::read(cert_path(&dir.0, "n1")).unwrap(), fs::read(key_path(&dir.0, "n1")).unwrap());
    let n2_before = fs::read(cert_path(&dir.0, "n2")).unwrap();
    let serial_before = PeerTls::load(&dir.0, "n1").unwrap().summary().serial.clone();

    renew(&dir.0, &ids(&["n1"])).unwrap();
    assert_ne!(fs::read(cert_path(&dir.0, "n1")).unwrap(), n1_cert);
    assert_ne!(fs::read(key_path(&dir.0, "n1")).unwrap(), n1_key, "a renewal makes a new key");
    assert_eq!(fs::read(cert_path(&dir.0, "n2")).unwrap(), n2_before, "n2 was not named");
    assert_eq!(fs::read(dir.0.join(CA_CERT_FILE)).unwrap(), ca_before);
    let tls = PeerTls::load(&dir.0, "n1").unwrap();
    assert_ne!(tls.summary().serial, serial_before);
    assert_eq!(names(&dir.0), ["ca.key", "ca.pem", "n1.key", "n1.pem", "n2.key", "n2.pem"]);
    #[cfg(unix)]
    assert_eq!(mode(&key_path(&dir.0, "n1")), 0o600);
}

#[test]
fn renew_refuses_unknown_nodes_and_a_missing_ca_and_changes_nothing() {
    let dir = TestDir::new("rot-renew-bad");
    let err = renew(&dir.0, &ids(&["n1"])).unwrap_err();
    assert!(matches!(err, CertError::NoCa { .. }), "{err}");
    assert!(err.to_string().contains("holds no CA"), "{err}");

    issue(&dir.0, &ids(&["n1"])).unwrap();
    let n1_before = fs::read(cert_path(&dir.0, "n1")).unwrap();
    let err = renew(&dir.0, &ids(&["n1", "n9"])).unwrap_err();
    assert!(matches!(err, CertError::NothingToRenew { ref id, .. } if id == "n9"), "{err}");
    assert!(err.to_string().contains("leave out --renew"), "{err}");
    assert_eq!(fs::read(cert_path(&dir.0, "n1")).unwrap(), n1_before, "nothing written on refusal");
    assert!(!cert_path(&dir.0, "n9").exists());
    assert!(matches!(renew(&dir.0, &ids(&["n1", "n1"])), Err(CertError::DuplicateNode(_))));
}

#[test]
fn a_full_rollover_keeps_every_node_loadable_at_every_step() {
    let dir = TestDir::new("rot-rollover");
    issue(&dir.0, &ids(&["n1", "n2"])).unwrap();
    let ca1 = bundle(&dir.0).remove(0);
    let ca1_key = fs::read(dir.0.join(CA_KEY_FILE)).unwrap();
    let n1_from_ca1 = (fs::read(cert_path(&dir.0, "n1")).unwrap(), fs::read(key_path(&dir.0, "n1")).unwrap());

    tracing::info!("step 1: a new CA, bundled with the old one; the old one archived");
    let r = start_rollover(&dir.0).unwrap();
    let b = bundle(&dir.0);
    assert_eq!(b.len(), 2);
    assert_eq!(b[1], ca1, "the old CA stays trusted");
    let ca2 = b[0].clone();
    assert_ne!(ca2, ca1);
    assert_eq!(fs::read(&r.archived_key).unwrap(), ca1_key);
    assert!(r.archived_cert.starts_with(dir.0.join(OLD_CA_DIR)), "{}", r.archived_cert.display());
    assert_eq!(
        CertificateDer::pem_slice_iter(&fs::read(&r.archived_cert).unwrap()).next().unwrap().unwrap(),
        ca1
    );
    #[cfg(unix)]
    {
        assert_eq!(mode(&r.archived_key), 0o600);
        assert_eq!(mode(&dir.0.join(CA_KEY_FILE)), 0o600);
    }
    for id in ["n1", "n2"] {
        let tls = PeerTls::load(&dir.0, id).unwrap();
        assert_eq!(tls.summary().trusted_cas, 2, "{id}");
        chains_to(&node_cert(&dir.0, id), &ca1).unwrap();
    }
    tracing::info!("a node added now gets a certificate from the new CA");
    issue(&dir.0, &ids(&["n3"])).unwrap();
    chains_to(&node_cert(&dir.0, "n3"), &ca2).unwrap();
    assert!(chains_to(&node_cert(&dir.0, "n3"), &ca1).is_err());

    tracing::info!("step 3 too early: refused, naming the nodes still on the old CA");
    let err = finish_rollover(&dir.0).unwrap_err();
    assert!(
        matches!(err, CertError::StillFromOldCa { ref nodes, .. } if *nodes == ids(&["n1", "n2"])),
        "{err}"
    );
    assert!(err.to_string().contains("--renew --nodes n1,n2"), "{err}");
    assert_eq!(bundle(&dir.0).len(), 2, "nothing written on refusal");

    tracing::info!("step 2: renew from the new CA");
    renew(&dir.0, &ids(&["n1", "n2"])).unwrap();
    for id in ["n1", "n2"] {
        chains_to(&node_cert(&dir.0, id), &ca2).unwrap();
    }

    tracing::info!("step 3: only the new CA is left; every node still loads, a CA1 pair no longer does");
    assert_eq!(finish_rollover(&dir.0).unwrap(), 1);
    assert_eq!(bundle(&dir.0), vec![ca2.clone()]);
    for id in ["n1", "n2", "n3"] {
        assert_eq!(PeerTls::load(&dir.0, id).unwrap().summary().trusted_cas, 1);
    }
    fs::write(cert_path(&dir.0, "n1"), &n1_from_ca1.0).unwrap();
    fs::write(key_path(&dir.0, "n1"), &n1_from_ca1.1).unwrap();
    let err = PeerTls::load(&dir.0, "n1").unwrap_err().to_string();
    assert!(err.contains("not signed by a CA of the trust bundle"), "{err}");

    tracing::info!("a second rollover archives the second CA next to the first");
    let r2 = start_rollover(&dir.0).unwrap();
    assert_ne!(r2.archived_cert, r.archived_cert);
    assert!(r.archived_cert.exists() && r2.archived_key.exists());
}

#[test]
fn rollover_steps_out_of_order_are_refused() {
    let dir = TestDir::new("rot-order");
    assert!(matches!(start_rollover(&dir.0), Err(CertError::NoCa { .. })));
    assert!(matches!(finish_rollover(&dir.0), Err(CertError::NoCa { .. })));
    issue(&dir.0, &ids(&["n1"])).unwrap();
    let err = finish_rollover(&dir.0).unwrap_err();
    assert!(matches!(err, CertError::NoOldCa { .. }), "{err}");
    start_rollover(&dir.0).unwrap();
    let before = fs::read(dir.0.join(CA_CERT_FILE)).unwrap();
    let err = start_rollover(&dir.0).unwrap_err();
    assert!(matches!(err, CertError::RolloverInProgress { count: 2, .. }), "{err}");
    assert!(err.to_string().contains("--drop-old-ca"), "{err}");
    assert_eq!(fs::read(dir.0.join(CA_CERT_FILE)).unwrap(), before);

    tracing::info!("a ca.key of no CA in the bundle is named, not used");
    let other = TestDir::new("rot-order-other");
    issue(&other.0, &ids(&["x"])).unwrap();
    fs::copy(other.0.join(CA_KEY_FILE), dir.0.join(CA_KEY_FILE)).unwrap();
    let err = renew(&dir.0, &ids(&["n1"])).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
}

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    certs: CertsArgs,
}

fn action(args: &[&str]) -> Result<CertsAction, String> {
    let cli = Cli::try_parse_from(std::iter::once("certs").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    cli.certs.action().map_err(|e| e.to_string())
}

#[test]
fn flags_name_one_step_and_mixed_steps_are_refused() {
    assert_eq!(action(&["--out", "d", "--nodes", "a,b"]), Ok(CertsAction::Issue(ids(&["a", "b"]))));
    assert_eq!(action(&["--out", "d", "--renew", "--nodes", "a"]), Ok(CertsAction::Renew(ids(&["a"]))));
    assert_eq!(action(&["--out", "d", "--new-ca"]), Ok(CertsAction::NewCa));
    assert_eq!(action(&["--out", "d", "--drop-old-ca"]), Ok(CertsAction::DropOldCa));

    let refused = |args: &[&str], needle: &str| {
        let err = action(args).unwrap_err();
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    refused(&["--out", "d"], "--nodes");
    refused(&["--out", "d", "--renew"], "--nodes");
    refused(&["--nodes", "a"], "--out");
    refused(&["--out", "d", "--new-ca", "--nodes", "a"], "then renew them with --renew");
    refused(&["--out", "d", "--new-ca", "--renew", "--nodes", "a"], "then renew them with --renew");
    refused(&["--out", "d", "--new-ca", "--drop-old-ca"], "run them separately");
    refused(&["--out", "d", "--drop-old-ca", "--nodes", "a"], "in a run of their own");
    refused(&["--out", "d", "--drop-old-ca", "--renew", "--nodes", "a"], "in a run of their own");
}
