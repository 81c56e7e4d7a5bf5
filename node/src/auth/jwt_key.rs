//! JWT verification keys: from the table's `keys[]` to something `ring` verifies with.
//!
//! Parsed once per table version. A key that would fail every verification (an RSA key below
//! 2048 bits, an EC key on another curve, a short HMAC secret) is refused at validation, naming
//! the field, rather than turning into 401s later.

use base64::Engine as _;
use ring::{hmac, signature};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::RSAPublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::spec::JwtKeySpec;

/// Longest PEM accepted in a table (an RSA-8192 public key is under 1.5 KiB).
const MAX_PEM_BYTES: usize = 16 * 1024;
/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash.
const MIN_SECRET_BYTES: usize = 32;
const MAX_SECRET_BYTES: usize = 4096;
const MAX_KID_BYTES: usize = 256;

const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";

/// The algorithms a key can be bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Hs256,
    Rs256,
    Es256,
}

impl Alg {
    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "HS256" => Some(Alg::Hs256),
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }
}

enum Verifier {
    Hmac(hmac::Key),
    /// PKCS#1 `RSAPublicKey` DER, or an uncompressed P-256 point.
    Public(signature::UnparsedPublicKey<Vec<u8>>),
}

/// One compiled key.
pub struct JwtKey {
    pub kid: Option<String>,
    pub alg: Alg,
    verifier: Verifier,
}

impl JwtKey {
    /// Whether `sig` is this key's signature over `signing_input`. HMAC tags are compared in
    /// constant time by `ring::hmac::verify`.
    pub fn verifies(&self, signing_input: &[u8], sig: &[u8]) -> bool {
        match &self.verifier {
            Verifier::Hmac(key) => hmac::verify(key, signing_input, sig).is_ok(),
            Verifier::Public(key) => key.verify(signing_input, sig).is_ok(),
        }
    }

    /// Compile one `keys[i]`; errors name the sub-field after `at` (`routes[0].auth.jwt.keys[1]`).
    pub fn compile(spec: &JwtKeySpec, at: &str) -> Result<JwtKey, String> {
        if let Some(kid) = &spec.kid {
            if kid.is_empty() || kid.len() > MAX_KID_BYTES {
                return Err(format!("{at}.kid: must be 1-{MAX_KID_BYTES} bytes"));
            }
        }
        let alg = Alg::parse(&spec.alg)
            .ok_or_else(|| format!("{at}.alg: {:?} is not supported (HS256, RS256 or ES256)", spec.alg))?;
        let verifier = match (alg, &spec.secret_base64, &spec.pem) {
            (Alg::Hs256, Some(secret), None) => Verifier::Hmac(hmac_key(secret, at)?),
            (Alg::Hs256, _, _) => return Err(format!("{at}: HS256 needs secret_base64 (and no pem)")),
            (Alg::Rs256, None, Some(pem)) => Verifier::Public(signature::UnparsedPublicKey::new(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                rsa_key(pem).map_err(|e| format!("{at}.pem: {e}"))?,
            )),
            (Alg::Es256, None, Some(pem)) => Verifier::Public(signature::UnparsedPublicKey::new(
                &signature::ECDSA_P256_SHA256_FIXED,
                ec_p256_key(pem).map_err(|e| format!("{at}.pem: {e}"))?,
            )),
            (_, _, _) => return Err(format!("{at}: {} needs pem (and no secret_base64)", spec.alg)),
        };
        Ok(JwtKey { kid: spec.kid.clone(), alg, verifier })
    }
}

fn hmac_key(secret: &str, at: &str) -> Result<hmac::Key, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(secret.trim())
        .map_err(|_| format!("{at}.secret_base64: not valid base64 (standard alphabet, padded)"))?;
    if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
        return Err(format!(
            "{at}.secret_base64: the secret must be {MIN_SECRET_BYTES}-{MAX_SECRET_BYTES} bytes, got {}",
            bytes.len()
        ));
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
}

/// The one block of a PEM text: its label and decoded contents. Whitespace and line breaks
/// inside the base64 are ignored, so a PEM squeezed onto one JSON line still reads.
fn pem_block(text: &str) -> Result<(&str, Vec<u8>), String> {
    if text.len() > MAX_PEM_BYTES {
        return Err(format!("longer than {MAX_PEM_BYTES} bytes"));
    }
    let start = text.find("-----BEGIN ").ok_or("not PEM (no -----BEGIN line)")?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let label_end = rest.find("-----").ok_or("not PEM (malformed BEGIN line)")?;
    let label = &rest[..label_end];
    let body = &rest[label_end + 5..];
    let end_marker = format!("-----END {label}-----");
    let body_end = body.find(&end_marker).ok_or("not PEM (no matching END line)")?;
    if body[body_end + end_marker.len()..].contains("-----BEGIN ") {
        return Err("holds more than one PEM block; give one key per entry".into());
    }
    let b64: String = body[..body_end].chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| "not PEM (the base64 between BEGIN and END does not decode)")?;
    Ok((label, der))
}

/// The SubjectPublicKeyInfo of a `PUBLIC KEY` block, or of a `CERTIFICATE`'s subject.
fn with_spki<T>(
    label: &str,
    der: &[u8],
    f: impl FnOnce(&SubjectPublicKeyInfo<'_>) -> Result<T, String>,
) -> Result<T, String> {
    match label {
        "PUBLIC KEY" => match SubjectPublicKeyInfo::from_der(der) {
            Ok(([], spki)) => f(&spki),
            _ => Err("not a valid public key (SubjectPublicKeyInfo DER)".into()),
        },
        "CERTIFICATE" => match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => f(cert.public_key()),
            Err(_) => Err("not a valid certificate".into()),
        },
        other => Err(format!("PEM label {other:?} is not a public key (want PUBLIC KEY)")),
    }
}

/// An RSA public key as ring wants it (PKCS#1 `RSAPublicKey` DER), 2048-8192 bits.
pub fn rsa_key(pem: &str) -> Result<Vec<u8>, String> {
    let (label, der) = pem_block(pem)?;
    let pkcs1 = if label == "RSA PUBLIC KEY" {
        der
    } else {
        with_spki(label, &der, |spki| {
            if spki.algorithm.algorithm.to_id_string() != OID_RSA_ENCRYPTION {
                return Err(not_rsa_or_ec(spki, "RS256 needs an RSA key"));
            }
            Ok(spki.subject_public_key.data.to_vec())
        })?
    };
    let key = match RSAPublicKey::from_der(&pkcs1) {
        Ok(([], key)) => key,
        _ => return Err("not a valid RSA public key".into()),
    };
    let bits = bit_length(key.modulus);
    if !(2048..=8192).contains(&bits) {
        return Err(format!("RSA modulus is {bits} bits; RS256 keys must be 2048-8192 bits"));
    }
    match key.try_exponent() {
        Ok(e) if e >= 3 && e % 2 == 1 => {}
        _ => return Err("RSA public exponent must be an odd number of at least 3".into()),
    }
    Ok(pkcs1)
}

/// A P-256 public key as ring wants it: the uncompressed point (65 bytes, `04 || x || y`).
pub fn ec_p256_key(pem: &str) -> Result<Vec<u8>, String> {
    let (label, der) = pem_block(pem)?;
    with_spki(label, &der, |spki| {
        if spki.algorithm.algorithm.to_id_string() != OID_EC_PUBLIC_KEY {
            return Err(not_rsa_or_ec(spki, "ES256 needs an EC P-256 key"));
        }
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        if curve.map(|c| c.to_id_string()).as_deref() != Some(OID_P256) {
            return Err("EC key is not on curve P-256 (ES256 needs prime256v1)".into());
        }
        let point = &spki.subject_public_key.data;
        if point.len() != 65 || point.first() != Some(&4) {
            return Err("EC point must be uncompressed (65 bytes starting with 04)".into());
        }
        Ok(point.to_vec())
    })
}

fn not_rsa_or_ec(spki: &SubjectPublicKeyInfo<'_>, want: &str) -> String {
    match spki.algorithm.algorithm.to_id_string().as_str() {
        OID_RSA_ENCRYPTION => format!("{want}, this is an RSA key"),
        OID_EC_PUBLIC_KEY => format!("{want}, this is an EC key"),
        _ => format!("not an RSA or EC public key ({want})"),
    }
}

fn bit_length(big_endian: &[u8]) -> usize {
    let trimmed: &[u8] = match big_endian.iter().position(|b| *b != 0) {
        Some(i) => &big_endian[i..],
        None => return 0,
    };
    trimmed.len() * 8 - trimmed[0].leading_zeros() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(alg: &str, secret: Option<&str>, pem: Option<&str>) -> JwtKeySpec {
        JwtKeySpec {
            kid: Some("k1".into()),
            alg: alg.into(),
            secret_base64: secret.map(String::from),
            pem: pem.map(String::from),
        }
    }

    fn err(s: &JwtKeySpec) -> String {
        JwtKey::compile(s, "keys[0]").err().expect("refused")
    }

    #[test]
    fn algorithms_and_material_must_agree() {
        let secret = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(JwtKey::compile(&spec("HS256", Some(&secret), None), "k").is_ok());
        assert!(err(&spec("none", Some(&secret), None)).contains("keys[0].alg"));
        assert!(err(&spec("HS512", Some(&secret), None)).contains("not supported"));
        assert!(err(&spec("HS256", None, None)).contains("needs secret_base64"));
        assert!(err(&spec("RS256", Some(&secret), None)).contains("needs pem"));
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        assert!(err(&spec("HS256", Some(&short), None)).contains("keys[0].secret_base64"));
        assert!(err(&spec("HS256", Some("not base64!"), None)).contains("not valid base64"));
    }

    #[test]
    fn ec_keys_parse_and_are_checked_for_their_curve() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256");
        let pem = kp.public_key_pem();
        assert_eq!(ec_p256_key(&pem).expect("p256 key").len(), 65);
        // On one line, as someone might paste it into JSON.
        let one_line = pem.replace('\n', "");
        assert!(ec_p256_key(&one_line).is_ok());
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("p384");
        assert!(ec_p256_key(&p384.public_key_pem()).expect_err("p384").contains("P-256"));
        let e = rsa_key(&pem).expect_err("EC is not RSA");
        assert!(e.contains("this is an EC key"), "{e}");
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519");
        let e = ec_p256_key(&ed.public_key_pem()).expect_err("ed25519");
        assert!(e.contains("not an RSA or EC public key"), "{e}");
    }

    #[test]
    fn malformed_pem_is_refused_with_a_reason() {
        for (bad, why) in [
            ("", "no -----BEGIN"),
            ("MIIBIjANBg", "no -----BEGIN"),
            ("-----BEGIN PUBLIC KEY-----\nMIIB\n", "no matching END"),
            ("-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----", "does not decode"),
            ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "not a valid public key"),
            ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "is not a public key"),
            ("-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----", "not a valid RSA"),
        ] {
            let e = rsa_key(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let huge = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----", "A".repeat(20_000));
        assert!(rsa_key(&huge).expect_err("huge").contains("longer than"));
    }

    #[test]
    fn bit_lengths_ignore_leading_zeros() {
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x01, 0]), 9);
        assert_eq!(bit_length(&[0, 0]), 0);
    }
}
