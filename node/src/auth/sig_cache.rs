//! A route's memory of JWS signatures it has already verified, so a client that sends the same
//! token on every request pays for the public-key operation once (ES256 is ~65 µs, RS256 ~27 µs
//! on the benchmark machine) instead of per request.
//!
//! Only the signature's verdict is remembered, and only a successful one: the claims (`exp`,
//! `nbf`, `iss`, `aud`, `sub`) are still decoded and checked on every request, so a cached token
//! still expires on time. An entry is the whole signed token, compared byte for byte, so no
//! other token can match it. The cache belongs to the compiled route: a new routing-table version
//! (a key added, rotated or removed) starts with an empty one. Bounded: tokens over
//! [`MAX_CACHED_TOKEN`] bytes are not kept, each shard holds at most [`SHARD_ENTRIES`] and is
//! emptied when full. Refused tokens are never remembered.

use std::collections::HashSet;
use std::sync::Mutex;

/// Tokens longer than this are verified every time.
pub const MAX_CACHED_TOKEN: usize = 2048;
const SHARDS: usize = 8;
/// Entries per shard: at most 8 × 512 tokens, 8 MiB of tokens, per route.
pub const SHARD_ENTRIES: usize = 512;

#[derive(Default)]
pub struct SignatureCache {
    shards: [Mutex<HashSet<Box<[u8]>>>; SHARDS],
}

impl std::fmt::Debug for SignatureCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureCache").field("entries", &self.len()).finish()
    }
}

impl SignatureCache {
    fn shard(&self, token: &[u8]) -> &Mutex<HashSet<Box<[u8]>>> {
        // The last byte is part of the signature: spread enough, and free to read.
        let i = token.last().map_or(0, |b| usize::from(*b)) % SHARDS;
        &self.shards[i]
    }

    /// Whether `token` (header.payload.signature) was verified before.
    pub fn verified(&self, token: &[u8]) -> bool {
        if token.len() > MAX_CACHED_TOKEN {
            return false;
        }
        self.shard(token).lock().map(|s| s.contains(token)).unwrap_or(false)
    }

    /// Remember that `token`'s signature verified.
    pub fn remember(&self, token: &[u8]) {
        if token.len() > MAX_CACHED_TOKEN {
            return;
        }
        if let Ok(mut s) = self.shard(token).lock() {
            if s.len() >= SHARD_ENTRIES {
                s.clear();
            }
            s.insert(token.into());
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map(|s| s.len()).unwrap_or(0)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_exact_tokens_within_bounds() {
        let c = SignatureCache::default();
        c.remember(b"a.b.sig1");
        assert!(c.verified(b"a.b.sig1"));
        assert!(!c.verified(b"a.b.sig2"), "another signature is another token");
        assert!(!c.verified(b"a.b.sig"), "a prefix is another token");
        let long = vec![b'x'; MAX_CACHED_TOKEN + 1];
        c.remember(&long);
        assert!(!c.verified(&long), "long tokens are not kept");
        for i in 0..(SHARD_ENTRIES * SHARDS * 3) {
            c.remember(format!("h.p.{i}").as_bytes());
        }
        assert!(c.len() <= SHARD_ENTRIES * SHARDS, "bounded: {}", c.len());
    }
}
