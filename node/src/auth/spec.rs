//! The `auth` field of a route, as users write it in the routing table.
//!
//! Only the shape lives here; `compile.rs` checks it and turns it into keys and digests. Secrets
//! never appear in clear except HS256 secrets, which are symmetric by nature (prefer RS256 or
//! ES256: then the table holds public keys only).

use serde::{Deserialize, Serialize};

/// Client authentication of one route: API keys, JWTs, or both (a request presenting the API-key
/// header is checked as an API key, any other as a JWT).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    /// Accepted API keys, each stored as the SHA-256 of the key, never the key itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<ApiKeySpec>,
    /// Header the API key is read from (default `x-api-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
    /// Pass the credential header on to the upstream. Off by default: the upstream gets the
    /// identity in `x-meridian-identity` and has no use for a credential it could leak.
    #[serde(default, skip_serializing_if = "is_false")]
    pub forward_credentials: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySpec {
    /// Who holds the key: becomes the request's identity.
    pub id: String,
    /// Lowercase or uppercase hex of SHA-256 over the key's bytes (`printf %s "$KEY" | sha256sum`).
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSpec {
    /// When set, the token's `iss` must be exactly this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// When not empty, the token's `aud` (a string or a list) must name one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    pub keys: Vec<JwtKeySpec>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// Header the token is read from: `authorization` (the default) takes `Bearer TOKEN`; any
    /// other header holds the bare token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Refuse tokens without `exp` (default true): a token that never expires cannot be revoked
    /// by waiting.
    #[serde(default = "default_true")]
    pub require_exp: bool,
}

pub fn default_leeway_s() -> u64 {
    30
}

fn default_true() -> bool {
    true
}

/// One verification key. `alg` binds the key to one algorithm, so a token cannot pick another
/// (the RS256-public-key-as-HS256-secret confusion).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeySpec {
    /// Matched against the token header's `kid`; a key without one is tried for any token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `HS256`, `RS256` or `ES256`.
    pub alg: String,
    /// HS256: the shared secret, base64 (standard alphabet), at least 32 bytes once decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_base64: Option<String>,
    /// RS256 / ES256: the public key, PEM (`BEGIN PUBLIC KEY`, or `BEGIN RSA PUBLIC KEY` for RS256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
}
