//! Messages of the forwarding protocol (bincode in length-limited frames).

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// Most headers carried in either direction; more is refused as malformed.
const MAX_HEADERS: usize = 256;

/// The request as the origin received it (original path, cleaned headers), with what the
/// receiving node needs to honour the origin's promises.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardHead {
    pub method: String,
    /// Original path and query: the receiving node matches routes itself.
    pub path_and_query: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub request_id: String,
    /// The client's address, for `x-forwarded-for` already set by the origin.
    pub client_ip: String,
    /// Time left before the origin gives up, in milliseconds.
    pub deadline_ms: u64,
    /// Further forwards allowed; a request arriving with 0 is refused.
    pub hops_left: u8,
    /// Regions this request has been in.
    pub visited: Vec<String>,
    /// False when the request has no body (the stream then carries none).
    pub has_body: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
}

pub fn encode_headers(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    h.iter().map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec())).collect()
}

/// Rebuild a header map, refusing names or values HTTP would not allow.
pub fn decode_headers(list: &[(String, Vec<u8>)]) -> Result<HeaderMap, String> {
    if list.len() > MAX_HEADERS {
        return Err(format!("{} headers, at most {MAX_HEADERS}", list.len()));
    }
    let mut h = HeaderMap::with_capacity(list.len());
    for (k, v) in list {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("bad header name {k:?}"))?;
        let value = HeaderValue::from_bytes(v).map_err(|_| format!("bad value for header {k}"))?;
        h.append(name, value);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_garbage_is_refused() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let back = decode_headers(&encode_headers(&h)).expect("valid");
        assert_eq!(back.get_all("x-a").iter().count(), 2);
        assert!(decode_headers(&[("bad name".into(), b"x".to_vec())]).is_err());
        assert!(decode_headers(&[("x".into(), b"a\nb".to_vec())]).is_err());
        let many: Vec<(String, Vec<u8>)> = (0..300).map(|i| (format!("x-{i}"), b"v".to_vec())).collect();
        assert!(decode_headers(&many).is_err());
    }
}
