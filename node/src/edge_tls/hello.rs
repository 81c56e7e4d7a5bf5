//! A look at the ClientHello before rustls reads it: which protocol versions the client offers.
//!
//! rustls refuses clients that offer only TLS 1.0 or 1.1, but only after other checks: their
//! ClientHello lacks the `signature_algorithms` extension (TLS 1.2 introduced it), so rustls
//! answers `handshake_failure` for the missing extension. Reading the versions first lets the
//! listener answer what RFC 5246 (appendix E.1) and RFC 8446 (§4.2.1) call for, a
//! `protocol_version` alert, and count the refusal under its real reason.
//!
//! Only framing and the version fields are read; anything this parser does not understand is
//! left to rustls, which refuses it with its own alert. Never panics: every read is bounds-checked.

use super::MinTls;

/// A ClientHello larger than this is not inspected; rustls, with its own limits, judges it.
/// Real ones are 0.3–3 KiB (post-quantum key shares included); the cap bounds what a slow
/// client can make the listener buffer before the handshake timeout.
pub const MAX_HELLO: usize = 16 * 1024;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const TLS12: u16 = 0x0303;
const TLS13: u16 = 0x0304;
/// Largest TLS record payload a client may send (2^14 plus expansion allowance).
const MAX_RECORD: usize = 16384 + 2048;

#[derive(Debug, PartialEq, Eq)]
pub enum Inspect {
    /// Not all of the ClientHello has arrived yet.
    Incomplete,
    /// A whole ClientHello, and what it offers.
    Offers(Offer),
    /// Not a ClientHello this parser reads; rustls decides.
    Unparsed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// The record-layer version of the client's first record, to answer in kind.
    pub record_version: u16,
    pub tls12: bool,
    pub tls13: bool,
}

impl Offer {
    /// Whether the client offers a version the listener accepts.
    pub fn acceptable(&self, min: MinTls) -> bool {
        self.tls13 || (self.tls12 && min == MinTls::Tls12)
    }

    /// The `protocol_version` alert as a plaintext record, in the client's record version
    /// (clamped to SSL 3.0 .. TLS 1.2) so that even an old client reads it.
    pub fn protocol_version_alert(&self) -> [u8; 7] {
        let [hi, lo] = self.record_version.clamp(0x0300, TLS12).to_be_bytes();
        [0x15, hi, lo, 0x00, 0x02, 0x02, 70]
    }
}

/// Read the ClientHello at the start of `buf` (the bytes received so far).
pub fn inspect(buf: &[u8]) -> Inspect {
    // The handshake message, assembled only when it spans records (rare).
    let mut assembled: Vec<u8> = Vec::new();
    let mut record_version = None;
    let mut pos = 0;
    loop {
        let Some(header) = buf.get(pos..pos + 5) else { return Inspect::Incomplete };
        if header[0] != CONTENT_HANDSHAKE {
            return Inspect::Unparsed;
        }
        let version = u16::from_be_bytes([header[1], header[2]]);
        let record_version = *record_version.get_or_insert(version);
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Inspect::Unparsed;
        }
        let Some(payload) = buf.get(pos + 5..pos + 5 + len) else { return Inspect::Incomplete };
        pos += 5 + len;
        let message = if assembled.is_empty() {
            payload
        } else {
            assembled.extend_from_slice(payload);
            &assembled[..]
        };
        match handshake_body(message) {
            Framing::Complete(body) => {
                return parse_body(body, record_version).map_or(Inspect::Unparsed, Inspect::Offers)
            }
            Framing::Invalid => return Inspect::Unparsed,
            Framing::Partial => {
                if assembled.is_empty() {
                    assembled.extend_from_slice(payload);
                }
                if assembled.len() > MAX_HELLO {
                    return Inspect::Unparsed;
                }
            }
        }
    }
}

enum Framing<'a> {
    Complete(&'a [u8]),
    Partial,
    Invalid,
}

fn handshake_body(message: &[u8]) -> Framing<'_> {
    let Some(&[kind, a, b, c]) = message.get(..4) else { return Framing::Partial };
    if kind != HANDSHAKE_CLIENT_HELLO {
        return Framing::Invalid;
    }
    let len = (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c);
    if len > MAX_HELLO {
        return Framing::Invalid;
    }
    match message.get(4..4 + len) {
        Some(body) => Framing::Complete(body),
        None => Framing::Partial,
    }
}

/// Bounds-checked reads from the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

fn parse_body(body: &[u8], record_version: u16) -> Option<Offer> {
    let mut r = Reader(body);
    let legacy_version = r.u16()?;
    r.take(32)?; // random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    let mut supported_versions = None;
    // TLS 1.0/1.1 clients may send no extensions at all.
    if !r.0.is_empty() {
        let mut extensions = Reader(r.vec16()?);
        while !extensions.0.is_empty() {
            let kind = extensions.u16()?;
            let data = extensions.vec16()?;
            if kind == EXT_SUPPORTED_VERSIONS {
                supported_versions = Some(Reader(data).vec8()?);
            }
        }
    }
    // With the extension, it alone says what the client supports (RFC 8446 §4.2.1).
    let (tls12, tls13) = match supported_versions {
        Some(list) => {
            let offered = |v: u16| list.chunks_exact(2).any(|p| u16::from_be_bytes([p[0], p[1]]) == v);
            (offered(TLS12), offered(TLS13))
        }
        None => (legacy_version >= TLS12, false),
    };
    Some(Offer { record_version, tls12, tls13 })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A ClientHello: `legacy_version`, and `supported_versions` when given, in one record of
    /// `record_version`.
    fn client_hello(record_version: u16, legacy_version: u16, supported: Option<&[u16]>) -> Vec<u8> {
        let mut body = legacy_version.to_be_bytes().to_vec();
        body.extend_from_slice(&[7; 32]); // random
        body.push(0); // session id
        body.extend_from_slice(&[0, 4, 0x00, 0x2f, 0x00, 0xff]); // two cipher suites
        body.extend_from_slice(&[1, 0]); // null compression
        let mut exts = Vec::new();
        // server_name "a.test", to have an extension before the one that matters
        exts.extend_from_slice(&[0, 0, 0, 11, 0, 9, 0, 0, 6]);
        exts.extend_from_slice(b"a.test");
        if let Some(versions) = supported {
            let list: Vec<u8> = versions.iter().flat_map(|v| v.to_be_bytes()).collect();
            exts.extend_from_slice(&43u16.to_be_bytes());
            exts.extend_from_slice(&u16::try_from(list.len() + 1).expect("len").to_be_bytes());
            exts.push(u8::try_from(list.len()).expect("len"));
            exts.extend_from_slice(&list);
        }
        body.extend_from_slice(&u16::try_from(exts.len()).expect("len").to_be_bytes());
        body.extend_from_slice(&exts);
        let mut msg = vec![1];
        msg.extend_from_slice(&u32::try_from(body.len()).expect("len").to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        let mut rec = vec![22];
        rec.extend_from_slice(&record_version.to_be_bytes());
        rec.extend_from_slice(&u16::try_from(msg.len()).expect("len").to_be_bytes());
        rec.extend_from_slice(&msg);
        rec
    }

    fn offer(bytes: &[u8]) -> Offer {
        match inspect(bytes) {
            Inspect::Offers(o) => o,
            other => panic!("expected an offer, got {other:?}"),
        }
    }

    #[test]
    fn old_versions_are_told_apart_from_current_ones() {
        let tls10 = offer(&client_hello(0x0301, 0x0301, None));
        let tls11 = offer(&client_hello(0x0301, 0x0302, None));
        for o in [tls10, tls11] {
            assert!(!o.tls12 && !o.tls13);
            assert!(!o.acceptable(MinTls::Tls12));
        }
        assert_eq!(tls10.protocol_version_alert(), [0x15, 0x03, 0x01, 0, 2, 2, 70]);

        let tls12 = offer(&client_hello(0x0301, 0x0303, None));
        assert!(tls12.acceptable(MinTls::Tls12) && !tls12.acceptable(MinTls::Tls13));

        let both = offer(&client_hello(0x0301, 0x0303, Some(&[0x0a0a, 0x0304, 0x0303])));
        assert!(both.tls12 && both.tls13 && both.acceptable(MinTls::Tls13));

        // supported_versions alone decides when present, whatever legacy_version says.
        let old_in_ext = offer(&client_hello(0x0301, 0x0303, Some(&[0x0302, 0x0301])));
        assert!(!old_in_ext.acceptable(MinTls::Tls12));
    }

    #[test]
    fn every_prefix_is_incomplete_and_fragments_reassemble() {
        let hello = client_hello(0x0301, 0x0302, None);
        for n in 0..hello.len() {
            assert_eq!(inspect(&hello[..n]), Inspect::Incomplete, "prefix of {n} bytes");
        }
        // The same message split over two records.
        let msg = &hello[5..];
        let (a, b) = msg.split_at(20);
        let mut split = Vec::new();
        for part in [a, b] {
            split.extend_from_slice(&[22, 3, 1]);
            split.extend_from_slice(&u16::try_from(part.len()).expect("len").to_be_bytes());
            split.extend_from_slice(part);
        }
        for n in 0..split.len() {
            assert_eq!(inspect(&split[..n]), Inspect::Incomplete, "split prefix of {n} bytes");
        }
        assert_eq!(offer(&split), offer(&hello));
    }

    #[test]
    fn what_is_not_a_client_hello_is_left_to_rustls() {
        assert_eq!(inspect(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"), Inspect::Unparsed);
        assert_eq!(inspect(&[22, 3, 1, 0, 0]), Inspect::Unparsed, "empty record");
        assert_eq!(inspect(&[22, 3, 3, 0, 4, 2, 0, 0, 0]), Inspect::Unparsed, "a ServerHello");
        let mut hello = client_hello(0x0301, 0x0303, Some(&[0x0304]));
        let last = hello.len() - 1;
        hello[last - 3] = 0xff; // the supported_versions extension now claims more than it holds
        assert_eq!(inspect(&hello), Inspect::Unparsed);
        // Pseudo-random bytes after a handshake record header: never a panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut buf = vec![22, 3, 1, 1, 0];
            for _ in 0..(x % 300) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            let _ = inspect(&buf);
            x = x.wrapping_add(1);
        }
    }

    #[test]
    fn rustls_client_hellos_are_read() {
        use rustls::pki_types::ServerName;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        for (versions, tls12, tls13) in [
            (&[&rustls::version::TLS13, &rustls::version::TLS12][..], true, true),
            (&[&rustls::version::TLS12][..], true, false),
            (&[&rustls::version::TLS13][..], false, true),
        ] {
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)
                .expect("versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            let name = ServerName::try_from("a.test").expect("name");
            let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
            let mut bytes = Vec::new();
            conn.write_tls(&mut bytes).expect("hello");
            let o = offer(&bytes);
            assert_eq!((o.tls12, o.tls13), (tls12, tls13), "{versions:?}");
        }
    }
}
