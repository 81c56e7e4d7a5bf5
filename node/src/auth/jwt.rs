//! JWT (JWS compact serialization) verification: size, shape, algorithm, key, signature, then
//! the claims — in that order, so nothing an attacker wrote is interpreted before it is proven
//! to come from a key holder, beyond the small header that names the key.
//!
//! Pure: the caller hands in the time (`now_s`, Unix seconds), so tests and the simulator can
//! pick it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::HeaderValue;
use serde::Deserialize;

use super::jwt_key::{Alg, JwtKey};
use super::sig_cache::SignatureCache;

/// Longest token accepted: refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest `sub` passed on as the identity.
pub const MAX_SUBJECT_BYTES: usize = 256;

/// A route's JWT rules, compiled.
pub struct JwtVerifier {
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub keys: Vec<JwtKey>,
    pub leeway_s: u64,
    pub require_exp: bool,
    /// Tokens whose signature already verified with these keys (see `sig_cache`).
    pub verified: SignatureCache,
}

/// Why a token was refused. Every variant is a 401 but `WrongAudience`, a 403: that token is
/// authentic and current, it was just not issued for this route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    TooLong,
    Malformed(&'static str),
    AlgNone,
    /// No key of the route is bound to the token's `alg`.
    AlgNotAccepted,
    /// The token names a `kid` no key of the route has.
    UnknownKey,
    /// Critical header extensions (`crit`) that we do not implement must be refused (RFC 7515).
    Critical,
    BadSignature,
    Expired,
    NotYetValid,
    MissingExp,
    WrongIssuer,
    WrongAudience,
    BadSubject,
}

impl JwtError {
    pub fn message(&self) -> &'static str {
        match self {
            JwtError::TooLong => "token is longer than 8192 bytes",
            JwtError::Malformed(why) => why,
            JwtError::AlgNone => "unsigned tokens (alg none) are not accepted",
            JwtError::AlgNotAccepted => "token alg is not accepted on this route",
            JwtError::UnknownKey => "no key of this route has the token's kid",
            JwtError::Critical => "token header has critical extensions (crit), which are not supported",
            JwtError::BadSignature => "token signature does not verify",
            JwtError::Expired => "token has expired",
            JwtError::NotYetValid => "token is not valid yet (nbf)",
            JwtError::MissingExp => "token has no exp claim",
            JwtError::WrongIssuer => "token issuer is not accepted on this route",
            JwtError::WrongAudience => "token audience is not accepted on this route",
            JwtError::BadSubject => {
                "token sub cannot be used as an identity (too long or control characters)"
            }
        }
    }

    pub fn is_forbidden(&self) -> bool {
        *self == JwtError::WrongAudience
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn any(&self, accepted: &[String]) -> bool {
        match self {
            Audience::One(a) => accepted.contains(a),
            Audience::Many(list) => list.iter().any(|a| accepted.contains(a)),
        }
    }
}

impl JwtVerifier {
    /// Verify `token` at `now_s`. On success, the identity (`sub`) if the token has one.
    pub fn verify(&self, token: &[u8], now_s: u64) -> Result<Option<HeaderValue>, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::TooLong);
        }
        if !token.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
            return Err(JwtError::Malformed("token holds characters outside base64url and '.'"));
        }
        let mut parts = token.split(|b| *b == b'.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("token must have three dot-separated parts (JWS compact)"));
        };
        let header: Header = decode_json(h64, HEADER)?;
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(JwtError::AlgNone);
        }
        let alg = Alg::parse(&header.alg).ok_or(JwtError::AlgNotAccepted)?;
        if header.crit.is_some() {
            return Err(JwtError::Critical);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s64)
            .map_err(|_| JwtError::Malformed("token signature is not valid base64url"))?;
        let signing_input = &token[..h64.len() + 1 + p64.len()];

        // Keys bound to the token's alg; a kid narrows them, a key without kid stays a candidate.
        let mut candidates = self.keys.iter().filter(|k| k.alg == alg).peekable();
        if candidates.peek().is_none() {
            return Err(JwtError::AlgNotAccepted);
        }
        let mut candidates = candidates
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .peekable();
        if candidates.peek().is_none() {
            return Err(JwtError::UnknownKey);
        }
        // The header was parsed and checked above for every token, cached or not: a cache hit
        // only skips the public-key operation, for the very same bytes.
        if !self.verified.verified(token) {
            if !candidates.any(|k| k.verifies(signing_input, &sig)) {
                return Err(JwtError::BadSignature);
            }
            self.verified.remember(token);
        }

        let claims: Claims = decode_json(p64, PAYLOAD)?;
        let now = now_s as f64;
        let leeway = self.leeway_s as f64;
        match claims.exp {
            Some(exp) if now >= exp + leeway => return Err(JwtError::Expired),
            None if self.require_exp => return Err(JwtError::MissingExp),
            _ => {}
        }
        if claims.nbf.is_some_and(|nbf| now + leeway < nbf) {
            return Err(JwtError::NotYetValid);
        }
        if let Some(want) = &self.issuer {
            if claims.iss.as_ref() != Some(want) {
                return Err(JwtError::WrongIssuer);
            }
        }
        if !self.audiences.is_empty() && !claims.aud.is_some_and(|a| a.any(&self.audiences)) {
            return Err(JwtError::WrongAudience);
        }
        match claims.sub {
            None => Ok(None),
            Some(sub) if sub.is_empty() => Ok(None),
            Some(sub) if sub.len() > MAX_SUBJECT_BYTES || sub.chars().any(char::is_control) => {
                Err(JwtError::BadSubject)
            }
            Some(sub) => HeaderValue::from_str(&sub).map(Some).map_err(|_| JwtError::BadSubject),
        }
    }
}

/// Decode one base64url part as JSON; `what` names the part in the two ways it can be wrong.
fn decode_json<T: serde::de::DeserializeOwned>(
    b64: &[u8],
    what: (&'static str, &'static str),
) -> Result<T, JwtError> {
    let bytes = URL_SAFE_NO_PAD.decode(b64).map_err(|_| JwtError::Malformed(what.0))?;
    // serde would also fill a struct from a JSON array; a JOSE header or claims set is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(JwtError::Malformed(what.1));
    }
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed(what.1))
}

const HEADER: (&str, &str) =
    ("token header is not valid base64url", "token header is not a JSON object with a string alg");
const PAYLOAD: (&str, &str) =
    ("token payload is not valid base64url", "token payload is not a JSON object of valid claims");

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
