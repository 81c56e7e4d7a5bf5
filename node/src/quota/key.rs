//! Which key a request is counted under, read without allocating for ordinary keys.

use std::io::Write as _;
use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName};
use meridian_raft_store::quota::MAX_KEY_BYTES;

use crate::auth::X_MERIDIAN_IDENTITY;

/// Where a quota's key comes from (`key` in the table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `header:NAME`: the header's value; requests without it share the key `""`.
    Header(HeaderName),
    /// `client_ip`: the connecting client's address (a forwarded request never gets here).
    ClientIp,
    /// `route`: one key for the whole route, its name.
    Route,
    /// `identity`: who the route's authentication says the client is (the API key's `id`, the
    /// JWT's `sub`); requests without one share the key `""`. Read from `x-meridian-identity`,
    /// which the handler sets after authentication and strips from every client request before
    /// the quota is checked, so a client cannot choose its own key.
    Identity,
}

impl KeySource {
    /// Parses a validated table's `key`.
    pub fn parse(spec: &str) -> Option<KeySource> {
        match spec.split_once(':') {
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes()).ok().map(KeySource::Header),
            None if spec == "client_ip" => Some(KeySource::ClientIp),
            None if spec == "route" => Some(KeySource::Route),
            None if spec == "identity" => Some(KeySource::Identity),
            _ => None,
        }
    }

    /// Calls `f` with the request's key. Values that are not UTF-8 or longer than
    /// [`MAX_KEY_BYTES`] are replaced by a hash of their bytes (`#` and 16 hex digits).
    pub fn with_key<R>(
        &self,
        headers: &HeaderMap,
        client_ip: IpAddr,
        route: &str,
        f: impl FnOnce(&str) -> R,
    ) -> R {
        match self {
            KeySource::Header(name) => header_key(headers, name, f),
            KeySource::Identity => header_key(headers, &X_MERIDIAN_IDENTITY, f),
            KeySource::ClientIp => {
                let mut buf = [0u8; 48];
                let mut cursor = std::io::Cursor::new(&mut buf[..]);
                let _ = write!(cursor, "{client_ip}");
                let len = usize::try_from(cursor.position()).unwrap_or(0);
                f(std::str::from_utf8(&buf[..len]).unwrap_or(""))
            }
            KeySource::Route => f(route),
        }
    }
}

fn header_key<R>(headers: &HeaderMap, name: &HeaderName, f: impl FnOnce(&str) -> R) -> R {
    match headers.get(name) {
        None => f(""),
        Some(v) => match std::str::from_utf8(v.as_bytes()) {
            Ok(s) if s.len() <= MAX_KEY_BYTES => f(s),
            _ => f(&hashed(v.as_bytes())),
        },
    }
}

fn hashed(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("#{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_named_source() {
        let mut h = HeaderMap::new();
        h.insert("x-tenant", "acme".parse().expect("value"));
        let ip: IpAddr = "2001:db8::1".parse().expect("ip");
        let key_in =
            |h: &HeaderMap, s: &str| KeySource::parse(s).expect("spec").with_key(h, ip, "r1", str::to_string);
        let key = |s: &str| key_in(&h, s);
        assert_eq!(key("header:x-tenant"), "acme");
        assert_eq!(key("header:x-other"), "");
        assert_eq!(key("client_ip"), "2001:db8::1");
        assert_eq!(key("route"), "r1");
        assert_eq!(key("identity"), "", "no identity: the shared key");
        assert!(KeySource::parse("cookie:x").is_none());
        h.insert("x-tenant", http::HeaderValue::from_bytes(&[b'a'; 300]).expect("value"));
        let long = key_in(&h, "header:x-tenant");
        assert!(long.starts_with('#') && long.len() == 17, "{long}");
        h.insert(X_MERIDIAN_IDENTITY, "team-a".parse().expect("value"));
        assert_eq!(key_in(&h, "identity"), "team-a");
    }
}
