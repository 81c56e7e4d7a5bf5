//! JWT verification against well-formed and hostile tokens.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::{hmac, signature};
use serde_json::{json, Value};

use super::*;
use crate::auth::spec::JwtKeySpec;

const NOW: u64 = 1_700_000_000;
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// A 2048-bit RSA key made for these tests only (`openssl genpkey -algorithm RSA`): ring cannot
/// generate RSA keys, and a fixed key keeps the tests hermetic.
pub const RSA_TEST_KEY: &str = include_str!("../../testdata/rsa-2048-test-key.pem");

/// A 1024-bit RSA public key: too short for RS256 here.
const RSA_1024_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCxWy1pqhyS3voBMMXr/Wgu6bkG
UL3QgRP2/KiqvrzrG1p988KUy9qGnAwojEidyxBaWonEMyI/5cNeXgUWV+kZhE4C
FzZjVDdd29rZDqSD3T13Xas7j5Q8nvzHA7YfIOC3QW0RQhgLOX3vx8/xrhSfdcfX
cg2C0BRg9DYqaSd2ewIDAQAB
-----END PUBLIC KEY-----
";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn token(header: Value, claims: Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn hs256(input: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SECRET), input).as_ref().to_vec()
}

fn claims() -> Value {
    json!({"sub": "alice", "iss": "https://issuer.test", "aud": "api", "exp": NOW + 60, "nbf": NOW - 60})
}

fn hs_token(claims: Value) -> String {
    token(json!({"alg": "HS256", "typ": "JWT", "kid": "hs"}), claims, hs256)
}

fn key(kid: Option<&str>, alg: &str, secret: Option<&[u8]>, pem: Option<String>) -> JwtKey {
    let spec = JwtKeySpec {
        kid: kid.map(String::from),
        alg: alg.into(),
        secret_base64: secret.map(|s| STANDARD.encode(s)),
        pem,
    };
    JwtKey::compile(&spec, "keys[0]").expect("valid key")
}

fn verifier(keys: Vec<JwtKey>) -> JwtVerifier {
    JwtVerifier {
        issuer: Some("https://issuer.test".into()),
        audiences: vec!["api".into(), "api-v2".into()],
        keys,
        leeway_s: 30,
        require_exp: true,
        verified: Default::default(),
    }
}

fn hs_verifier() -> JwtVerifier {
    verifier(vec![key(Some("hs"), "HS256", Some(SECRET), None)])
}

fn subject(r: Result<Option<HeaderValue>, JwtError>) -> String {
    match r {
        Ok(Some(v)) => v.to_str().expect("ascii").to_string(),
        other => panic!("expected a subject, got {other:?}"),
    }
}

#[test]
fn a_valid_hs256_token_gives_its_subject() {
    assert_eq!(subject(hs_verifier().verify(hs_token(claims()).as_bytes(), NOW)), "alice");
}

#[test]
fn rs256_and_es256_tokens_verify_with_public_keys() {
    let rng = SystemRandom::new();
    let rsa = rcgen::KeyPair::from_pem(RSA_TEST_KEY).expect("rsa test key");
    let rsa_signer = signature::RsaKeyPair::from_pkcs8(&rsa.serialize_der()).expect("pkcs8");
    let rs = token(json!({"alg": "RS256", "kid": "rsa"}), claims(), |input| {
        let mut sig = vec![0; rsa_signer.public().modulus_len()];
        rsa_signer.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig).expect("sign");
        sig
    });
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256");
    let ec_signer = signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &ec.serialize_der(),
        &rng,
    )
    .expect("pkcs8");
    let es = token(json!({"alg": "ES256", "kid": "ec"}), claims(), |input| {
        ec_signer.sign(&rng, input).expect("sign").as_ref().to_vec()
    });
    let v = verifier(vec![
        key(Some("rsa"), "RS256", None, Some(rsa.public_key_pem())),
        key(Some("ec"), "ES256", None, Some(ec.public_key_pem())),
    ]);
    assert_eq!(subject(v.verify(rs.as_bytes(), NOW)), "alice");
    assert_eq!(subject(v.verify(es.as_bytes(), NOW)), "alice");

    // An ES256 signature in DER (what some libraries produce) is not the JWS form.
    let der = token(json!({"alg": "ES256", "kid": "ec"}), claims(), |input| {
        let signer = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &ec.serialize_der(),
            &rng,
        )
        .expect("pkcs8");
        signer.sign(&rng, input).expect("sign").as_ref().to_vec()
    });
    assert_eq!(v.verify(der.as_bytes(), NOW), Err(JwtError::BadSignature));

    // The RSA public key used as an HMAC secret: the alg confusion attack.
    let confused = token(json!({"alg": "HS256", "kid": "rsa"}), claims(), |input| {
        let k = hmac::Key::new(hmac::HMAC_SHA256, rsa.public_key_pem().as_bytes());
        hmac::sign(&k, input).as_ref().to_vec()
    });
    assert_eq!(v.verify(confused.as_bytes(), NOW), Err(JwtError::AlgNotAccepted));
}

#[test]
fn short_rsa_keys_are_refused_at_compile_time() {
    let spec =
        JwtKeySpec { kid: None, alg: "RS256".into(), secret_base64: None, pem: Some(RSA_1024_PUBLIC.into()) };
    let e = JwtKey::compile(&spec, "keys[1]").err().expect("1024 bits refused");
    assert!(e.starts_with("keys[1].pem:") && e.contains("1024 bits"), "{e}");
    let rsa = rcgen::KeyPair::from_pem(RSA_TEST_KEY).expect("rsa test key");
    let spec =
        JwtKeySpec { kid: None, alg: "ES256".into(), secret_base64: None, pem: Some(rsa.public_key_pem()) };
    let e = JwtKey::compile(&spec, "keys[0]").err().expect("RSA for ES256 refused");
    assert!(e.contains("this is an RSA key"), "{e}");
}

#[test]
fn keys_may_come_as_pkcs1_or_inside_a_certificate() {
    let rsa = rcgen::KeyPair::from_pem(RSA_TEST_KEY).expect("rsa test key");
    // ring's raw RSA public key is the PKCS#1 RSAPublicKey DER.
    let pkcs1 = format!(
        "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
        STANDARD.encode(rsa.public_key_raw())
    );
    let from_pkcs1 = key(None, "RS256", None, Some(pkcs1));
    let from_spki = key(None, "RS256", None, Some(rsa.public_key_pem()));
    let rng = SystemRandom::new();
    let signer = signature::RsaKeyPair::from_pkcs8(&rsa.serialize_der()).expect("pkcs8");
    let mut sig = vec![0; signer.public().modulus_len()];
    signer.sign(&signature::RSA_PKCS1_SHA256, &rng, b"input", &mut sig).expect("sign");
    assert!(from_pkcs1.verifies(b"input", &sig) && from_spki.verifies(b"input", &sig));
    assert!(!from_pkcs1.verifies(b"other", &sig));

    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256");
    let cert = rcgen::CertificateParams::new(vec!["issuer.test".to_string()])
        .expect("params")
        .self_signed(&ec)
        .expect("certificate");
    let from_cert = key(None, "ES256", None, Some(cert.pem()));
    let signer = signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &ec.serialize_der(),
        &rng,
    )
    .expect("pkcs8");
    let sig = signer.sign(&rng, b"input").expect("sign");
    assert!(from_cert.verifies(b"input", sig.as_ref()));
    let two = format!("{}{}", ec.public_key_pem(), ec.public_key_pem());
    let spec = JwtKeySpec { kid: None, alg: "ES256".into(), secret_base64: None, pem: Some(two) };
    assert!(JwtKey::compile(&spec, "k").err().is_some_and(|e| e.contains("more than one PEM block")));
}

#[test]
fn time_claims_are_checked_with_leeway() {
    let v = hs_verifier();
    let with = |k: &str, t: u64| {
        let mut c = claims();
        c[k] = json!(t);
        hs_token(c)
    };
    assert_eq!(v.verify(with("exp", NOW - 31).as_bytes(), NOW), Err(JwtError::Expired));
    assert_eq!(v.verify(with("exp", NOW - 30).as_bytes(), NOW), Err(JwtError::Expired));
    assert!(v.verify(with("exp", NOW - 29).as_bytes(), NOW).is_ok(), "within leeway");
    assert_eq!(v.verify(with("nbf", NOW + 31).as_bytes(), NOW), Err(JwtError::NotYetValid));
    assert!(v.verify(with("nbf", NOW + 30).as_bytes(), NOW).is_ok(), "within leeway");
    let mut c = claims();
    c["exp"] = json!(1.7e9 + 10.5);
    assert!(v.verify(hs_token(c).as_bytes(), 1_700_000_000).is_ok(), "exp may be fractional");
    let mut c = claims();
    c.as_object_mut().expect("object").remove("exp");
    assert_eq!(v.verify(hs_token(c.clone()).as_bytes(), NOW), Err(JwtError::MissingExp));
    let lenient = JwtVerifier { require_exp: false, ..hs_verifier() };
    assert!(lenient.verify(hs_token(c).as_bytes(), NOW).is_ok());
    let mut c = claims();
    c["exp"] = json!("tomorrow");
    assert!(matches!(v.verify(hs_token(c).as_bytes(), NOW), Err(JwtError::Malformed(_))));
}

#[test]
fn issuer_and_audience_are_checked() {
    let v = hs_verifier();
    let mut c = claims();
    c["iss"] = json!("https://evil.test");
    assert_eq!(v.verify(hs_token(c).as_bytes(), NOW), Err(JwtError::WrongIssuer));
    let mut c = claims();
    c["aud"] = json!("other");
    let wrong = v.verify(hs_token(c).as_bytes(), NOW);
    assert_eq!(wrong, Err(JwtError::WrongAudience));
    assert!(wrong.err().is_some_and(|e| e.is_forbidden()));
    let mut c = claims();
    c["aud"] = json!(["other", "api-v2"]);
    assert!(v.verify(hs_token(c).as_bytes(), NOW).is_ok(), "one of a list is enough");
    let mut c = claims();
    c.as_object_mut().expect("object").remove("aud");
    assert_eq!(v.verify(hs_token(c).as_bytes(), NOW), Err(JwtError::WrongAudience));
    let any_audience = JwtVerifier { audiences: vec![], issuer: None, ..hs_verifier() };
    let mut c = claims();
    c["aud"] = json!("other");
    c.as_object_mut().expect("object").remove("iss");
    assert!(any_audience.verify(hs_token(c).as_bytes(), NOW).is_ok());
}

#[test]
fn tampered_and_wrongly_signed_tokens_fail() {
    let v = hs_verifier();
    let good = hs_token(claims());
    let (head, sig) = good.rsplit_once('.').expect("dot");
    let (h, _) = head.split_once('.').expect("dot");
    let mut c = claims();
    c["sub"] = json!("mallory");
    let forged = format!("{h}.{}.{sig}", b64(c.to_string().as_bytes()));
    assert_eq!(v.verify(forged.as_bytes(), NOW), Err(JwtError::BadSignature));
    let other_secret = token(json!({"alg": "HS256", "kid": "hs"}), claims(), |input| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[9u8; 32]), input).as_ref().to_vec()
    });
    assert_eq!(v.verify(other_secret.as_bytes(), NOW), Err(JwtError::BadSignature));
    let empty_sig = format!("{head}.");
    assert_eq!(v.verify(empty_sig.as_bytes(), NOW), Err(JwtError::BadSignature));
    let unknown_kid = token(json!({"alg": "HS256", "kid": "nope"}), claims(), hs256);
    assert_eq!(v.verify(unknown_kid.as_bytes(), NOW), Err(JwtError::UnknownKey));
    let no_kid = token(json!({"alg": "HS256"}), claims(), hs256);
    assert!(v.verify(no_kid.as_bytes(), NOW).is_ok(), "without kid every key of the alg is tried");
}

#[test]
fn alg_none_and_critical_headers_are_refused() {
    let v = hs_verifier();
    for alg in ["none", "None", "NONE"] {
        let t = token(json!({"alg": alg}), claims(), |_| Vec::new());
        assert_eq!(v.verify(t.as_bytes(), NOW), Err(JwtError::AlgNone), "{alg}");
    }
    let t = token(json!({"alg": "HS512", "kid": "hs"}), claims(), hs256);
    assert_eq!(v.verify(t.as_bytes(), NOW), Err(JwtError::AlgNotAccepted));
    let t = token(json!({"alg": "HS256", "kid": "hs", "crit": ["b64"], "b64": false}), claims(), hs256);
    assert_eq!(v.verify(t.as_bytes(), NOW), Err(JwtError::Critical));
}

#[test]
fn malformed_tokens_are_refused_without_panicking() {
    let v = hs_verifier();
    let good = hs_token(claims());
    let malformed = |t: &[u8]| matches!(v.verify(t, NOW), Err(JwtError::Malformed(_)));
    for bad in ["", ".", "..", "a", "a.b", "a.b.c.d", "a.b.c.d.e", "...."] {
        assert!(malformed(bad.as_bytes()), "{bad:?}");
    }
    assert!(malformed(format!("{good}.x").as_bytes()), "four parts");
    assert!(malformed(format!("{good}=").as_bytes()), "padding is not base64url");
    assert!(malformed(good.replace('.', " ").as_bytes()));
    assert!(malformed(b"eyJ\xff.e30.sig"), "non-ASCII");
    // Bad base64 in each part: a length no encoding has, and non-canonical trailing bits.
    let (h, rest) = good.split_once('.').expect("dot");
    let (p, s) = rest.split_once('.').expect("dot");
    assert!(malformed(format!("{h}x.{p}.{s}").as_bytes()) || malformed(format!("{h}xx.{p}.{s}").as_bytes()));
    assert!(malformed(format!("{h}.{p}.{s}x").as_bytes()) || malformed(format!("{h}.{p}.{s}xx").as_bytes()));
    assert!(malformed(format!("A.{p}.{s}").as_bytes()), "one base64 character is no byte");
    assert!(malformed(format!("eB.{p}.{s}").as_bytes()), "'eB' has non-zero trailing bits");
    // Header and payload that decode but are not what they should be.
    let not_json = format!("{}.{p}.{s}", b64(b"not json"));
    assert!(malformed(not_json.as_bytes()));
    let no_alg = token(json!({"kid": "hs"}), claims(), hs256);
    assert!(malformed(no_alg.as_bytes()));
    let array_header = token(json!(["HS256"]), claims(), hs256);
    assert!(malformed(array_header.as_bytes()));
    let payload_not_object = token(json!({"alg": "HS256", "kid": "hs"}), json!([1, 2]), hs256);
    assert!(malformed(payload_not_object.as_bytes()), "signed, but not claims");
    let dup = format!(
        "{}.{p}.{s}",
        b64(br#"{"alg":"HS256","alg":"none"}"#) // duplicate keys: ambiguous, refused
    );
    assert!(malformed(dup.as_bytes()));
}

#[test]
fn huge_tokens_are_refused_before_decoding() {
    let v = hs_verifier();
    let mut c = claims();
    c["pad"] = json!("x".repeat(MAX_TOKEN_BYTES));
    assert_eq!(v.verify(hs_token(c).as_bytes(), NOW), Err(JwtError::TooLong));
    let junk = vec![b'A'; 1 << 20];
    assert_eq!(v.verify(&junk, NOW), Err(JwtError::TooLong));
}

#[test]
fn subjects_must_be_usable_as_identities() {
    let v = hs_verifier();
    let mut c = claims();
    c["sub"] = json!("a".repeat(MAX_SUBJECT_BYTES + 1));
    assert_eq!(v.verify(hs_token(c).as_bytes(), NOW), Err(JwtError::BadSubject));
    let mut c = claims();
    c["sub"] = json!("line\nbreak");
    assert_eq!(v.verify(hs_token(c).as_bytes(), NOW), Err(JwtError::BadSubject));
    let mut c = claims();
    c.as_object_mut().expect("object").remove("sub");
    assert_eq!(v.verify(hs_token(c).as_bytes(), NOW), Ok(None));
    let mut c = claims();
    c["sub"] = json!(42);
    assert!(matches!(v.verify(hs_token(c).as_bytes(), NOW), Err(JwtError::Malformed(_))));
}

#[test]
fn a_remembered_signature_still_expires_and_never_vouches_for_other_bytes() {
    let v = hs_verifier();
    let t = hs_token(claims());
    assert_eq!(subject(v.verify(t.as_bytes(), NOW)), "alice");
    assert!(v.verified.verified(t.as_bytes()), "a verified token is remembered");
    assert_eq!(subject(v.verify(t.as_bytes(), NOW)), "alice", "and accepted again");
    // Claims are checked on every request: the remembered token expires on time.
    assert_eq!(v.verify(t.as_bytes(), NOW + 91), Err(JwtError::Expired));
    // A token differing in one signature byte is verified, and refused.
    let mut forged = t.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    assert_eq!(v.verify(&forged, NOW), Err(JwtError::BadSignature));
    assert!(!v.verified.verified(&forged), "refusals are not remembered");
    // Keys come with a new verifier (a new table version): nothing carries over.
    let other = verifier(vec![key(Some("hs"), "HS256", Some(b"another-secret-another-secret-32b"), None)]);
    assert_eq!(other.verify(t.as_bytes(), NOW), Err(JwtError::BadSignature));
}
