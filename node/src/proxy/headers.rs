//! Header rules of a proxy: what never crosses a hop, what Meridian adds, and request ids.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_MERIDIAN_REGION: HeaderName = HeaderName::from_static("x-meridian-region");
pub const X_MERIDIAN_NODE: HeaderName = HeaderName::from_static("x-meridian-node");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus `expect`,
/// which Meridian answers itself.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `name` is a hop-by-hop field of its own (not counting those `connection` names).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Remove hop-by-hop headers, including any the `connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present, then a hashed removal only for those found: most
    // messages carry none of them, or only `connection: keep-alive`, on every request and
    // every response.
    let mut present = [false; 9];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    if present[0] {
        // `close` and `keep-alive` are the usual options and name no other header (a
        // `keep-alive` header is removed below anyway): no allocation for them.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(list_items)
            .filter(|n| names_a_field(n))
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
}

/// The request id to use: the client's when it is sane, else a fresh one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 200 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    new_request_id()
}

/// 128 random bits as 32 lowercase hex digits.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let id: u128 = rand::random();
    let mut buf = [0u8; 32];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((id >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("invalid"))
}

/// How a client reached this node: the listener it connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Append the client address to `x-forwarded-for` and state the scheme it used (replacing any
/// `x-forwarded-proto` the client sent: only the listener knows).
pub fn add_forwarded(headers: &mut HeaderMap, client_ip: std::net::IpAddr, scheme: Scheme) {
    // Formatted on the stack: this runs for every request.
    let mut buf = [0u8; 64];
    let len = format_ip(client_ip, &mut buf);
    let ip = &buf[..len];
    // One lookup for the read and the write.
    match headers.entry(X_FORWARDED_FOR) {
        header::Entry::Occupied(mut e) => {
            let prev = e.get().as_bytes();
            let xff = if prev.is_empty() {
                HeaderValue::from_bytes(ip)
            } else {
                HeaderValue::from_bytes(&[prev, b", ", ip].concat())
            };
            // Replaces every earlier value: the first one carries the chain.
            if let Ok(v) = xff {
                e.insert(v);
            }
        }
        header::Entry::Vacant(e) => {
            if let Ok(v) = HeaderValue::from_bytes(ip) {
                e.insert(v);
            }
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme.as_str()));
}

/// Write `ip` into `buf` (which holds the longest IPv6 text), returning its length. IPv4, the
/// usual case, is done by hand: the formatting machinery costs more than the rest of this.
fn format_ip(ip: std::net::IpAddr, buf: &mut [u8; 64]) -> usize {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
            len
        }
        std::net::IpAddr::V6(_) => {
            use std::io::Write as _;
            let mut cur = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cur, "{ip}");
            cur.position() as usize
        }
    }
}

/// Whether a `connection` field lists `token`.
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| list_items(s).any(|t| t.eq_ignore_ascii_case(token))))
}

/// The elements of a list-valued field such as `connection` or `transfer-encoding`, trimmed.
pub fn list_items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim)
}

/// Whether a `connection` option names a field to drop: anything but `close` and `keep-alive`.
pub fn names_a_field(option: &str) -> bool {
    !option.is_empty() && !option.eq_ignore_ascii_case("close") && !option.eq_ignore_ascii_case("keep-alive")
}

/// Whether a `transfer-encoding` value (`None` when it is not text) ends in the chunked coding.
pub fn ends_chunked(value: Option<&str>) -> bool {
    value.and_then(|s| s.rsplit(',').next()).map_or("", str::trim).eq_ignore_ascii_case("chunked")
}

/// For a message with `transfer-encoding`, whether its last coding is `chunked` (RFC 9112 §6.3);
/// `None` without the field.
pub fn chunked_last(headers: &HeaderMap) -> Option<bool> {
    let te = headers.get_all(header::TRANSFER_ENCODING).iter().next_back()?;
    Some(ends_chunked(te.to_str().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn request_id_is_kept_or_generated() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(X_REQUEST_ID, HeaderValue::from_static(""));
        assert_eq!(request_id(&h).len(), 32);
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn addresses_are_written_as_std_writes_them() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.0.255",
            "127.0.0.1",
            "192.168.100.9",
            "255.255.255.255",
            "::1",
            "2001:db8::8:800:200c:417a",
            "::ffff:1.2.3.4",
        ] {
            let ip: std::net::IpAddr = ip.parse().expect("ip");
            let mut buf = [0u8; 64];
            let len = format_ip(ip, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[..len]).expect("utf-8"), ip.to_string());
        }
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        add_forwarded(&mut h, "10.0.0.1".parse().expect("ip"), Scheme::Http);
        assert_eq!(h[X_FORWARDED_FOR], "1.2.3.4, 10.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "http", "a client cannot claim https over plain HTTP");
        add_forwarded(&mut h, "10.0.0.2".parse().expect("ip"), Scheme::Https);
        assert_eq!(h[X_FORWARDED_PROTO], "https");
    }
}
