//! An HTTP/1 upstream's response fields, passed on as the upstream wrote them.
//!
//! Turning a response head into an `http::HeaderMap` costs a name lookup, a hash and an insert
//! per field, then a walk over the map to write it out again, and a drop: about a fifth of what
//! a proxied request cost in user space. Most fields only pass through, so a response from an
//! HTTP/1 upstream keeps its head as received, and its field lines are written to an HTTP/1
//! client as they are, skipping the hop-by-hop fields and those Meridian sets itself (the header
//! map then holds only Meridian's own fields, which win over the upstream's of the same name).
//! Where a header map is needed after all (hyper's HTTP/2 and TLS servers, the peer plane),
//! [`UpstreamFields::into_map`] builds it with the same rules.
//!
//! Meridian's own fields on such a response (the node, the region and the request id) are kept
//! beside the upstream's ([`UpstreamFields::name_node`], [`UpstreamFields::set_request_id`])
//! rather than put in the header map: the node's two are rendered once per node, and the map
//! stays empty, so a proxied response allocates no map, hashes no names and drops no entries.
//!
//! The head was validated by httparse, whose name and value rules are those of `http`'s
//! `HeaderName` and `HeaderValue`. A head with a field line ending in a bare LF, with more
//! stretches to copy than [`MAX_RUNS`], or whose `connection` field names further fields to drop
//! takes the header-map path instead (`h1::parse_head`).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::headers::{self as hdr, Field};

/// Most runs a head may have (a run is a stretch of field lines between dropped ones); a head
/// with more takes the header-map path.
const MAX_RUNS: usize = 8;

/// The field lines of a response head, in the head's own buffer, sorted when the head was
/// parsed: hop-by-hop fields left out, and the lines that pass on grouped into runs written
/// with one copy each.
pub struct UpstreamFields {
    /// The whole head: status line, field lines, empty line.
    head: Bytes,
    plan: Plan,
    /// `x-meridian-node` and `x-meridian-region`, once the response is named.
    node: Option<Arc<NodeFields>>,
    /// `x-request-id`, once set.
    request_id: Option<HeaderValue>,
}

/// The fields naming the node that serves a response, `x-meridian-node` and
/// `x-meridian-region`: as values for a header map, and as the field lines an HTTP/1 response
/// carries them in, rendered once.
pub struct NodeFields {
    node: HeaderValue,
    region: HeaderValue,
    lines: Bytes,
}

impl NodeFields {
    pub fn new(node: HeaderValue, region: HeaderValue) -> NodeFields {
        let mut lines = BytesMut::new();
        for (name, value) in [(hdr::X_MERIDIAN_NODE, &node), (hdr::X_MERIDIAN_REGION, &region)] {
            lines.extend_from_slice(name.as_str().as_bytes());
            lines.extend_from_slice(b": ");
            lines.extend_from_slice(value.as_bytes());
            lines.extend_from_slice(b"\r\n");
        }
        NodeFields { node, region, lines: lines.freeze() }
    }

    pub fn node(&self) -> &HeaderValue {
        &self.node
    }

    pub fn region(&self) -> &HeaderValue {
        &self.region
    }
}

/// Which stretches of a head pass on.
pub(super) struct Plan {
    runs: [Run; MAX_RUNS],
    count: usize,
    /// Whether a `date` field passes.
    has_date: bool,
}

#[derive(Clone, Copy)]
struct Run {
    start: u32,
    end: u32,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Whole field lines, written as they are.
    Lines,
    /// A `content-length` line: the framing is the writer's, except in answers to HEAD and 304.
    Length,
    /// One field whose name (`name_len` bytes) Meridian also sets on responses: written only
    /// when the response's own fields lack it.
    Shadowed { name_len: u32 },
}

impl Plan {
    /// The plan for `head` (a complete response head) whose fields httparse parsed as `fields`;
    /// `None` when the head has more runs than [`MAX_RUNS`] or a line ending in a bare LF (the
    /// header-map path then takes it, and writes CRLF). Every field, with what its name means,
    /// goes to `each` on the way: one pass over the names for the framing facts and the plan.
    pub(super) fn new(
        fields: &[httparse::Header<'_>],
        head: &[u8],
        mut each: impl FnMut(Field, &[u8]),
    ) -> Option<Plan> {
        let base = head.as_ptr() as usize;
        let len = head.len();
        // The field lines end where the empty line starts.
        let fields_end = if len >= 2 && head[len - 2] == b'\r' { len - 2 } else { len - 1 };
        let mut plan =
            Plan { runs: [Run { start: 0, end: 0, kind: Kind::Lines }; MAX_RUNS], count: 0, has_date: false };
        let mut usable = true;
        for (i, field) in fields.iter().enumerate() {
            let name = field.name.as_bytes();
            let class = hdr::classify(name);
            each(class, field.value);
            if !usable {
                continue;
            }
            let start = name.as_ptr() as usize - base;
            // A line ends where the next begins: its name (no space may precede a field name).
            let end = fields.get(i + 1).map_or(fields_end, |next| next.name.as_ptr() as usize - base);
            if end < start + 2 || head[end - 2] != b'\r' || head[end - 1] != b'\n' {
                usable = false;
                continue;
            }
            let kind = match class {
                Field::ContentLength => Kind::Length,
                Field::SetOnResponses => Kind::Shadowed { name_len: name.len() as u32 },
                field if field.is_hop_by_hop() => continue,
                field => {
                    plan.has_date |= field == Field::Date;
                    Kind::Lines
                }
            };
            let (start, end) = (start as u32, end as u32);
            match plan.count.checked_sub(1).map(|last| &mut plan.runs[last]) {
                Some(last) if kind == Kind::Lines && last.kind == Kind::Lines && last.end == start => {
                    last.end = end
                }
                _ if plan.count == MAX_RUNS => usable = false,
                _ => {
                    plan.runs[plan.count] = Run { start, end, kind };
                    plan.count += 1;
                }
            }
        }
        usable.then_some(plan)
    }
}

impl UpstreamFields {
    /// The fields of `head`, planned by [`Plan::new`] over this same buffer.
    pub(super) fn new(head: Bytes, plan: Plan) -> UpstreamFields {
        UpstreamFields { head, plan, node: None, request_id: None }
    }

    /// Name the node that served the response (`x-meridian-node`, `x-meridian-region`),
    /// replacing the upstream's fields of those names.
    pub fn name_node(&mut self, node: &Arc<NodeFields>) {
        self.node = Some(node.clone());
    }

    /// Set the response's `x-request-id`, replacing the upstream's.
    pub fn set_request_id(&mut self, id: HeaderValue) {
        self.request_id = Some(id);
    }

    /// Whether Meridian set the field `name` (as written, any case) beside the upstream's.
    fn sets(&self, name: &[u8]) -> bool {
        match name.len() {
            12 => self.request_id.is_some() && hdr::same_name(name, "x-request-id"),
            15 => self.node.is_some() && hdr::same_name(name, "x-meridian-node"),
            17 => self.node.is_some() && hdr::same_name(name, "x-meridian-region"),
            _ => false,
        }
    }

    fn runs(&self) -> &[Run] {
        &self.plan.runs[..self.plan.count]
    }

    /// Whether `run` passes on: a `content-length` only with `keep_length`, a field Meridian
    /// sets only when neither this response's own fields nor `own` hold it.
    fn passes(&self, run: &Run, keep_length: bool, own: &HeaderMap) -> bool {
        match run.kind {
            Kind::Lines => true,
            Kind::Length => keep_length,
            Kind::Shadowed { name_len } => {
                let name = &self.head[run.start as usize..(run.start + name_len) as usize];
                // A token: ASCII. The lookup folds case.
                !self.sets(name) && std::str::from_utf8(name).is_ok_and(|name| !own.contains_key(name))
            }
        }
    }

    /// Write the passing field lines to `out`; true when a `date` field was among them.
    /// `keep_length` for answers to HEAD and 304, which keep the length the full answer has;
    /// `own` holds the fields Meridian sets, which win over the upstream's.
    pub fn write_to(&self, out: &mut BytesMut, keep_length: bool, own: &HeaderMap) -> bool {
        debug_assert!(
            own.keys().all(|k| hdr::classify(k.as_str().as_bytes()) == Field::SetOnResponses),
            "a field Meridian sets on responses is missing from headers::Field::SetOnResponses: {own:?}"
        );
        for run in self.runs() {
            if self.passes(run, keep_length, own) {
                out.extend_from_slice(&self.head[run.start as usize..run.end as usize]);
            }
        }
        if let Some(node) = &self.node {
            out.extend_from_slice(&node.lines);
        }
        if let Some(id) = &self.request_id {
            out.extend_from_slice(b"x-request-id: ");
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.plan.has_date
    }

    /// The passing fields as a header map (`content-length` kept), with Meridian's own fields
    /// (those set here and those in `own`) replacing the upstream's of the same name.
    pub fn into_map(self, own: HeaderMap) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(16);
        for run in self.runs().iter().filter(|run| self.passes(run, true, &own)) {
            let mut rest = &self.head[run.start as usize..run.end as usize];
            // Whole CRLF lines, each with a colon (httparse saw to both).
            while let Some(eol) = memchr::memchr(b'\n', rest) {
                let line = &rest[..eol - 1];
                rest = &rest[eol + 1..];
                let Some(colon) = memchr::memchr(b':', line) else { continue };
                let name = HeaderName::from_bytes(&line[..colon]);
                let value =
                    HeaderValue::from_maybe_shared(self.head.slice_ref(line[colon + 1..].trim_ascii()));
                match (name, value) {
                    (Ok(name), Ok(value)) => {
                        map.append(name, value);
                    }
                    // httparse accepted it; should `http` disagree, the field is left out.
                    _ => tracing::debug!(field = %String::from_utf8_lossy(line), "upstream field left out"),
                }
            }
        }
        if let Some(node) = &self.node {
            map.insert(hdr::X_MERIDIAN_NODE, node.node.clone());
            map.insert(hdr::X_MERIDIAN_REGION, node.region.clone());
        }
        if let Some(id) = self.request_id {
            map.insert(hdr::X_REQUEST_ID, id);
        }
        let mut last = None;
        for (name, value) in own {
            match name {
                Some(name) => {
                    map.insert(name.clone(), value);
                    last = Some(name);
                }
                None => {
                    if let Some(name) = &last {
                        map.append(name.clone(), value);
                    }
                }
            }
        }
        map
    }
}

/// Take the upstream's fields out of `resp`'s body and into its header map: for the servers
/// that write a header map (hyper's HTTP/2 and TLS ones, the peer plane).
pub fn into_header_map(resp: &mut http::Response<super::body::DownBody>) {
    if let Some(fields) = resp.body_mut().take_fields() {
        let own = std::mem::take(resp.headers_mut());
        *resp.headers_mut() = fields.into_map(own);
    }
}

/// The head parsed and planned as `h1` does; `None` when it would take the header-map path.
#[cfg(test)]
pub(super) fn parsed(head: &str) -> Option<UpstreamFields> {
    let head = Bytes::copy_from_slice(head.as_bytes());
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut slots);
    assert!(parsed.parse(&head).expect("valid head").is_complete());
    let plan = Plan::new(parsed.headers, &head, |_, _| {})?;
    Some(UpstreamFields::new(head.clone(), plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(head: &str) -> Option<UpstreamFields> {
        parsed(head)
    }

    fn written(head: &str, keep_length: bool, own: &HeaderMap) -> (String, bool) {
        let mut out = BytesMut::new();
        let has_date = fields(head).expect("plain head").write_to(&mut out, keep_length, own);
        (String::from_utf8(out.to_vec()).expect("ascii"), has_date)
    }

    #[test]
    fn fields_pass_as_written_without_hop_by_hop_framing_or_own_ones() {
        let head = "HTTP/1.1 200 OK\r\nServer: up\r\nConnection: keep-alive\r\nContent-Type: text/plain\r\n\
                    Content-Length: 6\r\nX-Request-Id: theirs\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n\
                    Keep-Alive: timeout=5\r\nTE: trailers\r\nDate: Mon, 23 Nov 2026 17:00:00 GMT\r\n\
                    X-Meridian-Region: theirs\r\n\r\n";
        let mut own = HeaderMap::new();
        own.insert("x-request-id", HeaderValue::from_static("ours"));
        let (out, has_date) = written(head, false, &own);
        assert_eq!(
            out,
            "Server: up\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n\
             Date: Mon, 23 Nov 2026 17:00:00 GMT\r\nX-Meridian-Region: theirs\r\n"
        );
        assert!(has_date);
        // HEAD and 304 answers keep the length the full answer would have had.
        let (out, _) = written(head, true, &own);
        assert!(out.contains("Content-Length: 6\r\n"), "{out}");
        let (out, has_date) = written("HTTP/1.1 204 No Content\r\n\r\n", false, &HeaderMap::new());
        assert_eq!((out.as_str(), has_date), ("", false));
        let (out, _) = written("HTTP/1.1 200 OK\r\nA:1\r\nB:  two  \r\n\r\n", false, &HeaderMap::new());
        assert_eq!(out, "A:1\r\nB:  two  \r\n", "lines pass byte for byte");
    }

    #[test]
    fn bare_lf_heads_and_many_runs_take_the_header_map_path() {
        assert!(fields("HTTP/1.1 200 OK\nA: 1\r\n\r\n").is_some(), "the status line is not passed on");
        assert!(fields("HTTP/1.1 200 OK\r\nA: 1\nB: 2\r\n\r\n").is_none());
        assert!(fields("HTTP/1.1 200 OK\r\nA: 1\r\n\n").is_some(), "the empty line may be a bare LF");
        let mut head = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..MAX_RUNS {
            head.push_str(&format!("x-{i}: v\r\nte: trailers\r\n"));
        }
        assert!(fields(&format!("{head}\r\n")).is_some(), "{MAX_RUNS} runs fit");
        assert!(fields(&format!("{head}x-last: v\r\n\r\n")).is_none());
    }

    #[test]
    fn the_header_map_has_the_same_fields_and_own_ones_win() {
        let head = "HTTP/1.1 200 OK\r\nServer: up\r\nConnection: keep-alive\r\nContent-Length: 6\r\n\
                    X-Meridian-Node: theirs\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Request-Id: r\r\n\r\n";
        let mut own = HeaderMap::new();
        own.insert("x-meridian-node", HeaderValue::from_static("n1"));
        own.append("ratelimit", HeaderValue::from_static("a"));
        own.append("ratelimit", HeaderValue::from_static("b"));
        let map = fields(head).expect("plain head").into_map(own);
        assert_eq!(map["server"], "up");
        assert_eq!(map["content-length"], "6");
        assert_eq!(map["x-request-id"], "r");
        assert!(!map.contains_key("connection"));
        assert_eq!(map.get_all("x-meridian-node").iter().collect::<Vec<_>>(), ["n1"]);
        assert_eq!(map.get_all("set-cookie").iter().collect::<Vec<_>>(), ["a=1", "b=2"]);
        assert_eq!(map.get_all("ratelimit").iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(map.len(), 8, "values, repeats counted");
    }

    #[test]
    fn fields_set_beside_the_upstreams_replace_theirs_in_lines_and_map() {
        let head =
            "HTTP/1.1 200 OK\r\nServer: up\r\nX-Meridian-Node: theirs\r\nx-meridian-region: theirs\r\n\
                    X-REQUEST-ID: theirs\r\nRateLimit: theirs\r\n\r\n";
        let node = Arc::new(NodeFields::new(HeaderValue::from_static("n1"), HeaderValue::from_static("eu")));
        let mut planned = fields(head).expect("plain head");
        planned.name_node(&node);
        planned.set_request_id(HeaderValue::from_static("id-1"));
        let mut out = BytesMut::new();
        planned.write_to(&mut out, false, &HeaderMap::new());
        assert_eq!(
            std::str::from_utf8(&out).expect("ascii"),
            "Server: up\r\nRateLimit: theirs\r\nx-meridian-node: n1\r\nx-meridian-region: eu\r\n\
             x-request-id: id-1\r\n"
        );
        let map = planned.into_map(HeaderMap::new());
        assert_eq!(map["x-meridian-node"], "n1");
        assert_eq!(map["x-meridian-region"], "eu");
        assert_eq!(map["x-request-id"], "id-1");
        assert_eq!(map["ratelimit"], "theirs");
        assert_eq!(map.len(), 5);
        // Only what was set is replaced.
        let mut planned = fields(head).expect("plain head");
        planned.set_request_id(HeaderValue::from_static("id-2"));
        let (mut out, mut own) = (BytesMut::new(), HeaderMap::new());
        own.insert("ratelimit", HeaderValue::from_static("ours"));
        planned.write_to(&mut out, false, &own);
        assert_eq!(
            std::str::from_utf8(&out).expect("ascii"),
            "Server: up\r\nX-Meridian-Node: theirs\r\nx-meridian-region: theirs\r\nx-request-id: id-2\r\n"
        );
    }

    /// What the header-map path makes of the same head: every field appended, the hop-by-hop
    /// ones stripped, Meridian's own inserted over the upstream's.
    fn reference(fields: &[(String, String)], own: &HeaderMap) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        hdr::strip_hop_by_hop(&mut map);
        for (name, value) in own {
            map.insert(name.clone(), value.clone());
        }
        map
    }

    #[test]
    fn the_written_lines_and_the_map_agree_with_the_header_map_path() {
        use rand::{Rng, SeedableRng};
        const NAMES: [&str; 15] = [
            "Server",
            "X-Meridian-Region",
            "date",
            "Content-Length",
            "connection",
            "Keep-Alive",
            "TE",
            "Trailer",
            "X-Request-Id",
            "x-meridian-node",
            "RateLimit",
            "Set-Cookie",
            "x-a",
            "Transfer-Encoding",
            "Vary",
        ];
        let mut rng = rand::rngs::SmallRng::seed_from_u64(2);
        let node = Arc::new(NodeFields::new(HeaderValue::from_static("n2"), HeaderValue::from_static("r2")));
        let mut planned_heads = 0;
        for round in 0..2_000 {
            let fields: Vec<(String, String)> = (0..rng.gen_range(0..14))
                .map(|i| {
                    let name = NAMES[rng.gen_range(0..NAMES.len())];
                    // Values `connection` may hold without naming other fields.
                    let value = match name {
                        "connection" => ["close", "keep-alive", "Keep-Alive, close"][i % 3].to_string(),
                        _ => format!("v{round}-{i}"),
                    };
                    (name.to_string(), value)
                })
                .collect();
            // Meridian's own fields, each either set beside the upstream's or in the map.
            let (stamp_node, stamp_id) = (rng.gen_bool(0.5), rng.gen_bool(0.5));
            let mut own = HeaderMap::new();
            if !stamp_id && rng.gen_bool(0.5) {
                own.insert("x-request-id", HeaderValue::from_static("ours"));
            }
            if !stamp_node && rng.gen_bool(0.5) {
                own.insert("x-meridian-node", HeaderValue::from_static("n1"));
            }
            if rng.gen_bool(0.2) {
                own.insert("ratelimit", HeaderValue::from_static("q"));
            }
            let mut head = String::from("HTTP/1.1 200 OK\r\n");
            for (name, value) in &fields {
                let gap = if rng.gen_bool(0.3) { ":" } else { ": " };
                head.push_str(&format!("{name}{gap}{value}\r\n"));
            }
            head.push_str("\r\n");
            let Some(mut planned) = super::parsed(&head) else {
                // Only a head with more stretches than fit takes the other path.
                continue;
            };
            planned_heads += 1;
            let mut set = own.clone();
            if stamp_node {
                planned.name_node(&node);
                set.insert("x-meridian-node", HeaderValue::from_static("n2"));
                set.insert("x-meridian-region", HeaderValue::from_static("r2"));
            }
            if stamp_id {
                planned.set_request_id(HeaderValue::from_static("id2"));
                set.insert("x-request-id", HeaderValue::from_static("id2"));
            }
            let want = reference(&fields, &set);
            // The lines written, read back as a map, with `content-length` kept.
            let mut out = BytesMut::new();
            let has_date = planned.write_to(&mut out, true, &own);
            assert_eq!(has_date, fields.iter().any(|(n, _)| n == "date"), "{head:?}");
            let mut written = HeaderMap::new();
            for line in std::str::from_utf8(&out).expect("ascii").split_terminator("\r\n") {
                let (name, value) = line.split_once(':').expect("a field line");
                written.append(
                    HeaderName::from_bytes(name.as_bytes()).expect("name"),
                    HeaderValue::from_str(value.trim()).expect("value"),
                );
            }
            for (name, value) in &own {
                written.append(name.clone(), value.clone());
            }
            assert_eq!(written, want, "written lines of {head:?}");
            assert_eq!(planned.into_map(own), want, "map of {head:?}");
        }
        assert!(planned_heads > 1_500, "only {planned_heads} heads were planned");
    }
}
