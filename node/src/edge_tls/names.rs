//! Which host names a certificate serves, and how a client's SNI is compared with them.
//!
//! RFC 6125 rules, server side: names compare case-insensitively (ASCII; internationalised names
//! travel as A-labels), a wildcard is a whole left-most label (`*.example.com`) and stands for
//! exactly one label — it matches `api.example.com`, not `example.com` nor `a.b.example.com`.
//! Partial-label wildcards (`f*.example.com`) are not served. The subject's common name is never
//! used; only dNSName subjectAltNames count.

use rustls::pki_types::DnsName;

/// Longest DNS name (RFC 1035), without a trailing dot.
pub const MAX_NAME: usize = 253;

/// A name a certificate serves, normalised (lowercase, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServedName {
    /// `api.example.com`
    Exact(String),
    /// `*.example.com`, kept as the parent `example.com`.
    Wildcard(String),
}

impl std::fmt::Display for ServedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServedName::Exact(n) => f.write_str(n),
            ServedName::Wildcard(parent) => write!(f, "*.{parent}"),
        }
    }
}

/// Read one dNSName SAN of a certificate; the error says why it cannot be served.
pub fn parse_san(san: &str) -> Result<ServedName, &'static str> {
    let lower = san.strip_suffix('.').unwrap_or(san).to_ascii_lowercase();
    let (wildcard, base) = match lower.strip_prefix("*.") {
        Some(parent) => (true, parent),
        None => (false, lower.as_str()),
    };
    if base.contains('*') {
        return Err("a wildcard must be the whole left-most label, as in *.example.com");
    }
    if base.len() > MAX_NAME || DnsName::try_from(base).is_err() || base.parse::<std::net::IpAddr>().is_ok() {
        return Err("not a DNS host name");
    }
    if wildcard && !base.contains('.') {
        // `*.com` would claim a whole top-level domain; no public CA issues that.
        return Err("a wildcard needs at least two labels after it (*.example.com, not *.com)");
    }
    let base = base.to_string();
    Ok(if wildcard { ServedName::Wildcard(base) } else { ServedName::Exact(base) })
}

/// Lowercase `sni` into `buf` and drop one trailing dot; `None` if it cannot be a host name.
/// On the stack: this runs for every handshake.
pub fn normalize<'b>(sni: &str, buf: &'b mut [u8; MAX_NAME]) -> Option<&'b str> {
    let sni = sni.strip_suffix('.').unwrap_or(sni);
    let out = buf.get_mut(..sni.len())?;
    if sni.is_empty() || !sni.is_ascii() {
        return None;
    }
    for (o, b) in out.iter_mut().zip(sni.bytes()) {
        *o = b.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

/// What a one-label wildcard of `name` is keyed by: everything after the first label, when
/// both the label and the rest are non-empty.
pub fn wildcard_parent(name: &str) -> Option<&str> {
    let (first, rest) = name.split_once('.')?;
    (!first.is_empty() && !rest.is_empty()).then_some(rest)
}
