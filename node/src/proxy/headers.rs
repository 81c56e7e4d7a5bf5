//! Header rules of a proxy: what never crosses a hop, what Meridian adds, and request ids.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_MERIDIAN_REGION: HeaderName = HeaderName::from_static("x-meridian-region");
pub const X_MERIDIAN_NODE: HeaderName = HeaderName::from_static("x-meridian-node");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What a field name, as written (in any case), means to a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Connection,
    ContentLength,
    TransferEncoding,
    Expect,
    Date,
    /// Hop-by-hop, other than `connection` and `transfer-encoding`.
    HopByHop,
    /// Set by Meridian on a proxied response itself, replacing any the upstream sent: the
    /// node, region and request id on every one, the quota state where a route has a quota.
    SetOnResponses,
    Other,
}

/// Whether `name` (a field name or value as httparse accepts them: no control characters but
/// tab) is `lower` (lowercase letters, digits and `-`) in any case. Setting bit 0x20 of each
/// such byte maps it onto a byte of `lower` exactly when the two are the same ignoring case
/// (only CR would also map onto `-`); no early exit, so a fixed length unrolls.
pub fn same_name(name: &[u8], lower: &str) -> bool {
    name.len() == lower.len()
        && name.iter().zip(lower.as_bytes()).fold(0, |acc, (a, b)| acc | ((a | 0x20) ^ b)) == 0
}

/// Sort a field name as written. By length first, then one comparison at most: this runs for
/// every field of every request and response.
pub fn classify(name: &[u8]) -> Field {
    let is = |h: &str| same_name(name, h);
    let found = |h: &str, field: Field| if is(h) { field } else { Field::Other };
    match name.len() {
        2 => found("te", Field::HopByHop),
        4 => found("date", Field::Date),
        6 => found("expect", Field::Expect),
        7 if is("trailer") || is("upgrade") => Field::HopByHop,
        9 => found("ratelimit", Field::SetOnResponses),
        10 if is("connection") => Field::Connection,
        10 => found("keep-alive", Field::HopByHop),
        12 => found("x-request-id", Field::SetOnResponses),
        14 => found("content-length", Field::ContentLength),
        15 => found("x-meridian-node", Field::SetOnResponses),
        16 if is("proxy-connection") => Field::HopByHop,
        16 => found("ratelimit-policy", Field::SetOnResponses),
        17 if is("transfer-encoding") => Field::TransferEncoding,
        17 => found("x-meridian-region", Field::SetOnResponses),
        18 => found("proxy-authenticate", Field::HopByHop),
        19 => found("proxy-authorization", Field::HopByHop),
        _ => Field::Other,
    }
}

impl Field {
    /// Whether the name is a hop-by-hop field of its own (not counting those `connection` names).
    pub fn is_hop_by_hop(self) -> bool {
        matches!(self, Field::Connection | Field::TransferEncoding | Field::HopByHop)
    }
}

/// Remove hop-by-hop headers, including any the `connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, false);
}

/// [`strip_hop_by_hop`] for a request on its way upstream, which also loses `expect`: Meridian
/// answers that itself.
pub fn strip_request_fields(headers: &mut HeaderMap) {
    strip(headers, true);
}

fn strip(headers: &mut HeaderMap, expect: bool) {
    // One pass over the names present; removals only when there is something to remove. Most
    // messages carry none of these fields, on every request and every response.
    let (mut found, mut connection) = (false, false);
    for name in headers.keys() {
        let field = classify(name.as_str().as_bytes());
        found |= field.is_hop_by_hop() || (expect && field == Field::Expect);
        connection |= field == Field::Connection;
    }
    if !found {
        return;
    }
    if connection {
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
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if expect {
        headers.remove(header::EXPECT);
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

/// 128 random bits (see [`super::rng`]) as 32 lowercase hex digits.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let id: u128 = super::rng::random();
    let mut buf = [0u8; 32];
    for (pair, byte) in buf.chunks_exact_mut(2).zip(id.to_be_bytes()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    // Owned by its shared buffer from the start: the id is cloned for the upstream head and the
    // response, and a copied buffer would be allocated again, to be shared, at the first clone.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
        .unwrap_or(HeaderValue::from_static("invalid"))
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

/// [`add_forwarded`] written straight into a request head: `chain` is the client's first
/// `x-forwarded-for` value, if it sent one.
pub fn write_forwarded(
    out: &mut bytes::BytesMut,
    chain: Option<&HeaderValue>,
    client_ip: std::net::IpAddr,
    scheme: Scheme,
) {
    let mut buf = [0u8; 64];
    let len = format_ip(client_ip, &mut buf);
    out.extend_from_slice(b"x-forwarded-for: ");
    if let Some(chain) = chain.filter(|c| !c.is_empty()) {
        out.extend_from_slice(chain.as_bytes());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(&buf[..len]);
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(scheme.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
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
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        let mut request = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        assert!(h.contains_key("x-kept") && h.contains_key("expect"));
        strip_request_fields(&mut request);
        assert_eq!(request.keys().collect::<Vec<_>>(), ["x-kept"]);
        // `expect` alone goes too.
        let mut request = HeaderMap::new();
        request.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        strip_request_fields(&mut request);
        assert!(request.is_empty());
    }

    #[test]
    fn names_compare_ignoring_case_and_nothing_else() {
        for (name, lower, same) in [
            ("Keep-Alive", "keep-alive", true),
            ("KEEP-ALIVE", "keep-alive", true),
            ("keep_alive", "keep-alive", false),
            ("keep-alivf", "keep-alive", false),
            ("keep-aliv", "keep-alive", false),
            ("X-Request-Id", "x-request-id", true),
            ("x-request-i\t", "x-request-id", false),
            ("Close", "close", true),
            ("Clos\u{e9}", "close", false),
            ("ratelimit", "ratelimit", true),
            ("RATELIMIT", "ratelimiz", false),
        ] {
            assert_eq!(same_name(name.as_bytes(), lower), same, "{name:?} vs {lower:?}");
        }
        // Every visible ASCII byte: only the letter itself, in either case, matches.
        for b in (0x20u8..0x7f).chain([b'\t']) {
            for t in b"az-09".iter() {
                let expected = b.to_ascii_lowercase() == *t;
                assert_eq!(
                    same_name(&[b], std::str::from_utf8(&[*t]).expect("ascii")),
                    expected,
                    "{b:#x} vs {t}"
                );
            }
        }
    }

    #[test]
    fn raw_names_are_read_as_the_header_map_reads_them() {
        for name in HOP_BY_HOP {
            assert!(classify(name.as_bytes()).is_hop_by_hop(), "{name}");
            assert!(classify(name.to_uppercase().as_bytes()).is_hop_by_hop(), "{name}");
        }
        for name in ["t", "tee", "connections", "x-upgrade", "content-length", "date", "expect", ""] {
            assert!(!classify(name.as_bytes()).is_hop_by_hop(), "{name}");
        }
        for name in [X_REQUEST_ID, X_MERIDIAN_NODE, X_MERIDIAN_REGION] {
            assert_eq!(classify(name.as_str().to_uppercase().as_bytes()), Field::SetOnResponses, "{name}");
        }
        for (name, field) in [
            ("Content-Length", Field::ContentLength),
            ("TRANSFER-ENCODING", Field::TransferEncoding),
            ("connection", Field::Connection),
            ("Expect", Field::Expect),
            ("Date", Field::Date),
            ("x-request-ids", Field::Other),
            ("server", Field::Other),
            ("content-type", Field::Other),
        ] {
            assert_eq!(classify(name.as_bytes()), field, "{name}");
        }
    }

    #[test]
    fn request_id_is_kept_or_generated() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(X_REQUEST_ID, HeaderValue::from_static(""));
        assert_eq!(request_id(&h).len(), 32);
        assert_ne!(new_request_id(), new_request_id());
        let id = new_request_id();
        assert!(id.as_bytes().iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)), "{id:?}");
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
