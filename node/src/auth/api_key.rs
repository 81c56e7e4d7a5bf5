//! API keys: the table holds SHA-256 digests; a request's key is hashed and compared with every
//! digest in constant time.
//!
//! Hashing first means the table (replicated, shown by `GET /routes`, kept in history) never
//! holds a usable key. Comparing with every digest, without stopping at the first difference or
//! the first match, means the time taken says nothing about how close a guess was.

use http::HeaderValue;
use ring::digest;

/// Most keys on one route: every request compares against all of them. Beyond this, use JWTs.
pub const MAX_API_KEYS: usize = 1_000;
/// Longest key accepted in a request; longer ones are refused before hashing.
pub const MAX_KEY_BYTES: usize = 4096;

/// The keys of one route, compiled.
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
    /// The identity of each key, ready to be the `x-meridian-identity` header.
    ids: Vec<HeaderValue>,
}

impl ApiKeys {
    pub fn new(keys: Vec<([u8; 32], HeaderValue)>) -> ApiKeys {
        let (digests, ids) = keys.into_iter().unzip();
        ApiKeys { digests, ids }
    }

    /// The identity of the key `presented`, if it is one of ours.
    pub fn identify(&self, presented: &[u8]) -> Option<&HeaderValue> {
        if presented.len() > MAX_KEY_BYTES {
            return None;
        }
        let d = digest::digest(&digest::SHA256, presented);
        let mut found = None;
        for (i, known) in self.digests.iter().enumerate() {
            if digests_equal(d.as_ref(), known) {
                found = Some(i);
            }
        }
        found.and_then(|i| self.ids.get(i))
    }
}

/// Compare two digests touching every byte: no early exit on the first difference.
fn digests_equal(a: &[u8], b: &[u8; 32]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Parse the table's `sha256`: 64 hex digits.
pub fn parse_sha256_hex(s: &str) -> Result<[u8; 32], String> {
    if s.len() != 64 {
        return Err(format!("must be 64 hex digits (SHA-256), got {} characters", s.len()));
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hi = hex_value(pair[0]);
        let lo = hex_value(pair[1]);
        match (hi, lo, out.get_mut(i)) {
            (Some(h), Some(l), Some(o)) => *o = (h << 4) | l,
            _ => return Err("must be 64 hex digits (SHA-256)".into()),
        }
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether an API key's `id` can be an identity: a short token that is safe as a header value
/// and as a quota key.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-:@".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_hex(key: &str) -> String {
        digest::digest(&digest::SHA256, key.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hex_digests_parse_in_either_case() {
        // printf %s secret | sha256sum
        let hex = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
        assert_eq!(sha256_hex("secret"), hex);
        let lower = parse_sha256_hex(hex).expect("lower");
        assert_eq!(parse_sha256_hex(&hex.to_uppercase()).expect("upper"), lower);
        assert_eq!(lower[0], 0x2b);
        assert_eq!(lower[31], 0x5b);
    }

    #[test]
    fn malformed_digests_are_refused() {
        assert!(parse_sha256_hex("").is_err());
        assert!(parse_sha256_hex(&"a".repeat(63)).is_err());
        assert!(parse_sha256_hex(&"a".repeat(65)).is_err());
        assert!(parse_sha256_hex(&"g".repeat(64)).is_err());
        // 64 bytes but not 64 characters' worth of ASCII hex.
        assert!(parse_sha256_hex(&"é".repeat(32)).is_err());
    }

    #[test]
    fn keys_identify_their_holder_only() {
        let keys = ApiKeys::new(vec![
            (parse_sha256_hex(&sha256_hex("key-a")).expect("a"), HeaderValue::from_static("team-a")),
            (parse_sha256_hex(&sha256_hex("key-b")).expect("b"), HeaderValue::from_static("team-b")),
        ]);
        assert_eq!(keys.identify(b"key-a").map(|v| v.as_bytes()), Some(&b"team-a"[..]));
        assert_eq!(keys.identify(b"key-b").map(|v| v.as_bytes()), Some(&b"team-b"[..]));
        assert!(keys.identify(b"key-c").is_none());
        assert!(keys.identify(b"").is_none());
        assert!(keys.identify(&[b'x'; MAX_KEY_BYTES + 1]).is_none());
    }

    #[test]
    fn ids_are_header_and_quota_safe() {
        assert!(valid_id("team-a"));
        assert!(valid_id("svc:billing@eu"));
        assert!(!valid_id(""));
        assert!(!valid_id("has space"));
        assert!(!valid_id(&"a".repeat(129)));
    }
}
