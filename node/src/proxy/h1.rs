//! The upstream HTTP/1.1 client: one exchange at a time on a pooled connection, run inside the
//! request's own task.
//!
//! hyper's client runs each connection as a separate task and passes requests, responses and body
//! chunks between tasks through channels; for a proxy that is several wake-ups per request on the
//! hottest path. Here the request task writes the request and reads the response head itself, and
//! the response body is decoded straight from the socket as the client side of the proxy polls it.
//! Framing follows RFC 9112 §6: no body for HEAD, 1xx, 204 and 304; chunked when the last transfer
//! coding is chunked; else `content-length`; else read until close.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::{BoxError, UpBody};
use super::fields::{Plan, UpstreamFields};
use super::headers::{self as hdr, Field};
use super::pool::{ConnPool, RequestHead};
use super::timer::KeptTimer;

/// Largest upstream response head accepted.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
/// Read size while streaming a body.
const READ_CHUNK: usize = 32 * 1024;
/// Bodies up to this size are copied into the head's buffer and sent with one write.
const COALESCE: usize = 16 * 1024;
/// Largest request-head buffer an idle connection keeps for its next exchange.
const OUT_KEEP: usize = 8 * 1024;

/// An idle or busy HTTP/1.1 connection to one endpoint.
pub struct H1Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: BytesMut,
    /// The request head is encoded here; kept between exchanges so a request costs no allocation
    /// for it.
    out: BytesMut,
    /// Whether this connection has carried a request before (a reused connection may have been
    /// closed by the upstream while idle).
    pub reused: bool,
    pub idle_since: Instant,
    /// The per-try timeout, kept across exchanges.
    timer: KeptTimer,
}

#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("upstream closed the connection before sending a response")]
    ClosedBeforeResponse,
    #[error("writing the request to the upstream: {0}")]
    Write(io::Error),
    #[error("reading the upstream response: {0}")]
    Read(io::Error),
    #[error("request body: {0}")]
    ClientBody(BoxError),
    #[error("invalid upstream response: {0}")]
    Protocol(String),
    #[error("no response head before the per-try deadline")]
    TimedOut,
}

impl H1Conn {
    pub fn new(stream: TcpStream) -> H1Conn {
        let (rd, wr) = stream.into_split();
        H1Conn {
            rd,
            wr,
            buf: BytesMut::with_capacity(8 * 1024),
            out: BytesMut::with_capacity(1024),
            reused: false,
            idle_since: Instant::now(),
            timer: KeptTimer::default(),
        }
    }

    /// False when the upstream has closed (or written to) this idle connection. Costs no system
    /// call unless the socket became readable while idle.
    pub fn is_usable(&mut self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.rd.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Send `req` (at `sent_at`) and read the response head, by `deadline`. The body streams
    /// from the returned [`H1Body`], which hands the connection back to `pool` when the exchange
    /// ends cleanly.
    pub async fn send(
        mut self: Box<Self>,
        head: &RequestHead,
        body: UpBody,
        pool: Arc<ConnPool>,
        sent_at: Instant,
        deadline: Instant,
    ) -> Result<(Response<()>, H1Body), H1Error> {
        // Idle time counts from the exchange's start: one clock reading fewer per request, and
        // the idle checks only grow a little more careful.
        self.idle_since = sent_at;
        let mut timer = std::mem::take(&mut self.timer);
        let outcome = {
            let mut exchange = std::pin::pin!(self.exchange(head, body));
            std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = exchange.as_mut().poll(cx) {
                    return Poll::Ready(r);
                }
                ready!(timer.poll_until(deadline, cx));
                Poll::Ready(Err(H1Error::TimedOut))
            })
            .await
        };
        self.timer = timer;
        let ResponseHead { resp, fields, framing, keep_alive } = outcome?;
        Ok((resp, H1Body::new(self, framing, keep_alive, pool, fields)))
    }

    async fn exchange(&mut self, head: &RequestHead, body: UpBody) -> Result<ResponseHead, H1Error> {
        let mut out = std::mem::take(&mut self.out);
        let chunked = encode_head(&mut out, head, &body);
        let is_head = head.method == Method::HEAD;
        let mut early = false;
        match body {
            UpBody::Empty => write_all(&mut self.wr, &mut out).await?,
            UpBody::Buffered { data } => {
                let data = data.unwrap_or_default();
                if data.len() <= COALESCE {
                    out.extend_from_slice(&data);
                    write_all(&mut self.wr, &mut out).await?;
                } else {
                    write_all(&mut self.wr, &mut out).await?;
                    self.wr.write_all(&data).await.map_err(H1Error::Write)?;
                }
            }
            streaming @ UpBody::Streaming { .. } => {
                write_all(&mut self.wr, &mut out).await?;
                // Boxed: streamed bodies are the rarer case, and this future inline would make
                // every request's future larger.
                early = Box::pin(self.stream_body(streaming, chunked)).await?;
            }
        }
        // Kept for the next exchange unless a large head or body made it big.
        if out.capacity() <= OUT_KEEP {
            out.clear();
            self.out = out;
        }
        let mut head = self.read_head(is_head).await?;
        head.keep_alive &= !early;
        Ok(head)
    }

    /// Send a streamed body, full duplex: an upstream may answer (say, 413) before it has read
    /// the body. True when the response began before the body was all sent.
    async fn stream_body(&mut self, body: UpBody, chunked: bool) -> Result<bool, H1Error> {
        let H1Conn { rd, wr, buf, .. } = self;
        let sending = write_body(wr, body, chunked);
        let reading = read_head_ready(rd, buf);
        tokio::pin!(sending, reading);
        tokio::select! {
            sent = &mut sending => {
                sent?;
                Ok(false)
            }
            head = &mut reading => {
                head?;
                Ok(true)
            }
        }
    }

    async fn read_head(&mut self, is_head: bool) -> Result<ResponseHead, H1Error> {
        loop {
            if let Some(parsed) = parse_head(&mut self.buf, is_head)? {
                return Ok(parsed);
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(H1Error::Protocol(format!("response head larger than {MAX_HEAD} bytes")));
            }
            self.buf.reserve(8 * 1024);
            let n = self.rd.read_buf(&mut self.buf).await.map_err(H1Error::Read)?;
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    H1Error::ClosedBeforeResponse
                } else {
                    H1Error::Protocol("connection closed in the middle of the response head".into())
                });
            }
        }
    }
}

async fn write_all(wr: &mut OwnedWriteHalf, out: &mut BytesMut) -> Result<(), H1Error> {
    wr.write_all(out).await.map_err(H1Error::Write)?;
    out.clear();
    Ok(())
}

/// Wait until at least a byte of the response has arrived (used to notice early responses).
async fn read_head_ready(rd: &mut OwnedReadHalf, buf: &mut BytesMut) -> Result<(), H1Error> {
    buf.reserve(8 * 1024);
    let n = rd.read_buf(buf).await.map_err(H1Error::Read)?;
    if n == 0 {
        return Err(H1Error::ClosedBeforeResponse);
    }
    Ok(())
}

async fn write_body(wr: &mut OwnedWriteHalf, mut body: UpBody, chunked: bool) -> Result<(), H1Error> {
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(H1Error::ClientBody)?;
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        if chunked {
            let size = format!("{:x}\r\n", data.len());
            wr.write_all(size.as_bytes()).await.map_err(H1Error::Write)?;
            wr.write_all(&data).await.map_err(H1Error::Write)?;
            wr.write_all(b"\r\n").await.map_err(H1Error::Write)?;
        } else {
            wr.write_all(&data).await.map_err(H1Error::Write)?;
        }
    }
    if chunked {
        wr.write_all(b"0\r\n\r\n").await.map_err(H1Error::Write)?;
    }
    Ok(())
}

/// Write the request head; returns whether the body must be chunk-encoded.
fn encode_head(out: &mut BytesMut, head: &RequestHead, body: &UpBody) -> bool {
    let RequestHead { method, uri, headers, own } = head;
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(uri.path_and_query().map_or("/", |pq| pq.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // Noted on the way past rather than looked up.
    let mut has_length = false;
    // The client's `x-forwarded-for` chain, which Meridian's extends.
    let mut chain = None;
    for (name, value) in headers {
        has_length |= name == header::CONTENT_LENGTH;
        // Meridian's own fields replace the client's.
        if own.forwarded.is_some() && (name == hdr::X_FORWARDED_FOR || name == hdr::X_FORWARDED_PROTO) {
            if name == hdr::X_FORWARDED_FOR && chain.is_none() {
                chain = Some(value);
            }
            continue;
        }
        if own.request_id.is_some() && name == hdr::X_REQUEST_ID {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some((ip, scheme)) = own.forwarded {
        hdr::write_forwarded(out, chain, ip, scheme);
    }
    if let Some(id) = &own.request_id {
        out.extend_from_slice(b"x-request-id: ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let chunked = match body {
        UpBody::Empty => {
            if !has_length && matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
            false
        }
        UpBody::Buffered { data } => {
            if !has_length {
                let n = data.as_ref().map_or(0, Bytes::len);
                out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
            }
            false
        }
        UpBody::Streaming { .. } => {
            if !has_length {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            }
            !has_length
        }
    };
    out.extend_from_slice(b"\r\n");
    chunked
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A parsed response head.
pub(super) struct ResponseHead {
    /// Status and version; its header map holds the upstream's fields only when `fields` is
    /// `None` (a `connection` field named other fields to drop: the rare, general path).
    pub resp: Response<()>,
    /// The upstream's fields as received, passed on as they are (see [`UpstreamFields`]).
    pub fields: Option<Box<UpstreamFields>>,
    pub framing: Framing,
    /// Whether the connection can carry another exchange after this one.
    pub keep_alive: bool,
}

/// Parse a complete response head off the front of `buf`, skipping interim 1xx responses.
fn parse_head(buf: &mut BytesMut, is_head: bool) -> Result<Option<ResponseHead>, H1Error> {
    loop {
        // Uninitialised slots: filling 128 empty headers first cost more than parsing a head.
        let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut slots) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(H1Error::Protocol(e.to_string())),
        };
        let code = parsed.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| H1Error::Protocol(format!("status {code}")))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            buf.advance(len);
            continue;
        }
        let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
        // Framing and persistence come from the raw fields, read in the same pass that plans
        // how the fields pass on: no header map is built for them.
        let mut facts = RawFacts::new();
        let plan = Plan::new(parsed.headers, &buf[..len], |field, value| facts.note(field, value, false));
        let framing = framing(status, is_head, &facts)?;
        let keep_alive = version == Version::HTTP_11 && framing != Framing::UntilClose && !facts.close;
        let mut resp = Response::new(());
        *resp.status_mut() = status;
        *resp.version_mut() = version;
        // The usual head passes on as it is; one whose `connection` field names further fields
        // to drop, or that is unusual in other ways (see `Plan::new`), goes through a header map.
        if let Some(plan) = plan.filter(|_| !facts.names_others) {
            // Boxed: the response moves through several layers on its way out, and the plan with it.
            let fields = Box::new(UpstreamFields::new(buf.split_to(len).freeze(), plan));
            return Ok(Some(ResponseHead { resp, fields: Some(fields), framing, keep_alive }));
        }
        let mut spans = HeadSpans::new();
        spans.note(parsed.headers, buf.as_ptr());
        let head = buf.split_to(len).freeze();
        let mut headers = spans.cut(&head, 4).map_err(|fault| {
            H1Error::Protocol(match fault {
                HeadFault::Name(raw) => format!("bad header name {:?}", String::from_utf8_lossy(&raw)),
                HeadFault::Value(name) => format!("bad value for header {name}"),
            })
        })?;
        hdr::strip_hop_by_hop(&mut headers);
        *resp.headers_mut() = headers;
        return Ok(Some(ResponseHead { resp, fields: None, framing, keep_alive }));
    }
}

/// What a head's framing and connection fields say, read from the raw fields (RFC 9112 §6,
/// §9.6), with the list rules of `headers.rs`, without a header map.
#[derive(Debug)]
pub(super) struct RawFacts {
    /// Whether the last transfer coding of the last `transfer-encoding` field is chunked;
    /// `None` without the field.
    pub chunked_last: Option<bool>,
    /// The `content-length` value, if any; `Err` when a value is invalid or two disagree.
    pub length: Result<Option<u64>, &'static str>,
    /// `connection: close`.
    pub close: bool,
    /// `connection: keep-alive`.
    pub keep_alive: bool,
    /// `connection` names a field other than `close` and `keep-alive`.
    pub names_others: bool,
    /// The first `expect` field is `100-continue`.
    pub expect_continue: bool,
    expect_seen: bool,
}

impl RawFacts {
    pub(super) fn new() -> RawFacts {
        RawFacts {
            chunked_last: None,
            length: Ok(None),
            close: false,
            keep_alive: false,
            names_others: false,
            expect_continue: false,
            expect_seen: false,
        }
    }

    /// The facts of `fields`; see [`RawFacts::note`].
    pub(super) fn read(fields: &[httparse::Header<'_>], strict: bool) -> RawFacts {
        let mut facts = RawFacts::new();
        for field in fields {
            facts.note(hdr::classify(field.name.as_bytes()), field.value, strict);
        }
        facts
    }

    /// Take in one field, whose name means `field`. A request's `content-length` (`strict`) must
    /// be plain digits, as RFC 9112 §6.3 asks of a server; a response's may have whitespace
    /// around them.
    pub(super) fn note(&mut self, field: Field, value: &[u8], strict: bool) {
        match field {
            Field::TransferEncoding => self.chunked_last = Some(hdr::ends_chunked(as_text(value))),
            Field::ContentLength => {
                let n = if strict {
                    (!value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit))
                        .then(|| as_text(value).and_then(|s| s.parse::<u64>().ok()))
                        .flatten()
                } else {
                    as_text(value).and_then(|s| s.trim().parse::<u64>().ok())
                };
                self.length = match (self.length, n) {
                    (Err(e), _) => Err(e),
                    (_, None) => Err("invalid content-length"),
                    (Ok(Some(l)), Some(n)) if l != n => Err("conflicting content-length values"),
                    (_, Some(n)) => Ok(Some(n)),
                };
            }
            // The usual values first, without splitting a list.
            Field::Connection if hdr::same_name(value, "keep-alive") => self.keep_alive = true,
            Field::Connection if hdr::same_name(value, "close") => self.close = true,
            Field::Connection => {
                for option in as_text(value).into_iter().flat_map(hdr::list_items) {
                    self.close |= option.eq_ignore_ascii_case("close");
                    self.keep_alive |= option.eq_ignore_ascii_case("keep-alive");
                    self.names_others |= hdr::names_a_field(option);
                }
            }
            Field::Expect if !self.expect_seen => {
                self.expect_seen = true;
                self.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
            }
            _ => {}
        }
    }
}

/// A field value as `HeaderValue::to_str` would accept it: visible ASCII, space and tab.
fn as_text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// Where a parsed head's fields lie in its buffer. Header values then share the head's buffer
/// rather than being copied one by one: their offsets are noted (on the stack for the usual few
/// fields) while httparse's result borrows the buffer, and the values are cut once it is frozen.
/// Heads are bounded well below 4 GiB, so offsets fit in `u32`.
pub(super) struct HeadSpans {
    small: [(u32, u32, u32, u32); 24],
    large: Vec<(u32, u32, u32, u32)>,
    count: usize,
}

pub(super) enum HeadFault {
    Name(Vec<u8>),
    Value(HeaderName),
}

impl HeadSpans {
    pub(super) fn new() -> HeadSpans {
        HeadSpans { small: [(0, 0, 0, 0); 24], large: Vec::new(), count: 0 }
    }

    /// Note the fields of a head parsed from the buffer starting at `base`.
    pub(super) fn note(&mut self, fields: &[httparse::Header<'_>], base: *const u8) {
        let base = base as usize;
        let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        self.count = fields.len();
        let spans: &mut [(u32, u32, u32, u32)] = if fields.len() <= self.small.len() {
            &mut self.small[..fields.len()]
        } else {
            self.large.resize(fields.len(), (0, 0, 0, 0));
            &mut self.large
        };
        for (span, h) in spans.iter_mut().zip(fields) {
            *span = (offset(h.name.as_bytes()), h.name.len() as u32, offset(h.value), h.value.len() as u32);
        }
    }

    fn spans(&self) -> &[(u32, u32, u32, u32)] {
        if self.count <= self.small.len() {
            &self.small[..self.count]
        } else {
            &self.large[..]
        }
    }

    /// The fields as a header map over `head` (the frozen buffer), with room for `extra` more.
    pub(super) fn cut(&self, head: &Bytes, extra: usize) -> Result<HeaderMap, HeadFault> {
        let spans = self.spans();
        let mut headers = HeaderMap::with_capacity(self.count + extra);
        for &(name_at, name_len, value_at, value_len) in spans {
            let (name_at, value_at) = (name_at as usize, value_at as usize);
            let raw_name = &head[name_at..name_at + name_len as usize];
            let name = HeaderName::from_bytes(raw_name).map_err(|_| HeadFault::Name(raw_name.to_vec()))?;
            let Ok(value) =
                HeaderValue::from_maybe_shared(head.slice(value_at..value_at + value_len as usize))
            else {
                return Err(HeadFault::Value(name));
            };
            headers.append(name, value);
        }
        Ok(headers)
    }
}

fn framing(status: StatusCode, is_head: bool, facts: &RawFacts) -> Result<Framing, H1Error> {
    if is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Empty);
    }
    if let Some(chunked) = facts.chunked_last {
        return Ok(if chunked { Framing::Chunked } else { Framing::UntilClose });
    }
    Ok(match facts.length.map_err(|e| H1Error::Protocol(e.into()))? {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decode {
    Length(u64),
    UntilClose,
    /// Waiting for a chunk-size line.
    ChunkSize,
    /// Inside a chunk with this many bytes left.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailers,
    Done,
}

/// A response body read straight off an upstream connection.
pub struct H1Body {
    conn: Option<Box<H1Conn>>,
    state: Decode,
    reusable: bool,
    pool: Arc<ConnPool>,
    remaining_hint: Option<u64>,
    /// The response's fields, until the server writing the response takes them.
    fields: Option<Box<UpstreamFields>>,
}

impl H1Body {
    fn new(
        conn: Box<H1Conn>,
        framing: Framing,
        reusable: bool,
        pool: Arc<ConnPool>,
        fields: Option<Box<UpstreamFields>>,
    ) -> H1Body {
        let (state, hint) = match framing {
            Framing::Empty => (Decode::Done, Some(0)),
            Framing::Length(n) => (Decode::Length(n), Some(n)),
            Framing::Chunked => (Decode::ChunkSize, None),
            Framing::UntilClose => (Decode::UntilClose, None),
        };
        let mut body = H1Body { conn: Some(conn), state, reusable, pool, remaining_hint: hint, fields };
        if state == Decode::Done {
            body.finish();
        }
        body
    }

    /// The upstream's fields, for the server writing the response.
    pub fn take_fields(&mut self) -> Option<Box<UpstreamFields>> {
        self.fields.take()
    }

    /// The upstream's fields, for Meridian to set its own beside them.
    pub fn fields_mut(&mut self) -> Option<&mut UpstreamFields> {
        self.fields.as_deref_mut()
    }

    /// The exchange is over: pool the connection if it can carry another request.
    fn finish(&mut self) {
        self.state = Decode::Done;
        if let Some(mut conn) = self.conn.take() {
            if self.reusable && conn.buf.is_empty() {
                conn.reused = true;
                conn.timer.forget_waker();
                self.pool.put_idle_h1(conn);
            }
        }
    }

    /// Read more bytes into the buffer; `Ok(0)` at end of stream.
    fn poll_fill(conn: &mut H1Conn, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        conn.buf.reserve(READ_CHUNK);
        tokio_util::io::poll_read_buf(Pin::new(&mut conn.rd), cx, &mut conn.buf)
    }

    fn take_data(&mut self, max: u64) -> Option<Bytes> {
        let conn = self.conn.as_mut()?;
        if conn.buf.is_empty() {
            return None;
        }
        let n = (conn.buf.len() as u64).min(max) as usize;
        Some(conn.buf.split_to(n).freeze())
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            match this.state {
                Decode::Done => return Poll::Ready(None),
                Decode::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Decode::Length(left) => {
                    if let Some(data) = this.take_data(left) {
                        let left = left - data.len() as u64;
                        this.state = Decode::Length(left);
                        this.remaining_hint = Some(left);
                        if left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Decode::UntilClose => {
                    if let Some(data) = this.take_data(u64::MAX) {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Decode::ChunkData(0) => this.state = Decode::ChunkEnd,
                Decode::ChunkData(left) => {
                    if let Some(data) = this.take_data(left) {
                        this.state = Decode::ChunkData(left - data.len() as u64);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Decode::ChunkSize | Decode::ChunkEnd | Decode::Trailers => {
                    if let Some(conn) = this.conn.as_mut() {
                        match step_chunk_line(&mut conn.buf, this.state) {
                            Ok(Some(next)) => {
                                if next == Decode::Done {
                                    this.finish();
                                    return Poll::Ready(None);
                                }
                                this.state = next;
                                continue;
                            }
                            Ok(None) => {}
                            Err(e) => {
                                this.conn = None;
                                this.state = Decode::Done;
                                return Poll::Ready(Some(Err(e)));
                            }
                        }
                    }
                }
            }
            // Need more bytes.
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            let n = match ready!(Self::poll_fill(conn, cx)) {
                Ok(n) => n,
                Err(e) => {
                    this.conn = None;
                    this.state = Decode::Done;
                    return Poll::Ready(Some(Err(e)));
                }
            };
            if n == 0 {
                let state = this.state;
                this.conn = None;
                this.state = Decode::Done;
                if state == Decode::UntilClose {
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream closed the connection in the middle of the response body",
                ))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == Decode::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining_hint {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// Advance the chunked decoder over one line-shaped element; `Ok(None)` when more bytes are needed.
/// Strict (RFC 9112 §7.1): hex digits only in the size, no bare CR or LF anywhere, extensions of
/// visible characters, trailers as field lines. Every leniency here is a way to make a proxy and
/// the server behind it (or in front of it) read a body two ways.
pub(super) fn step_chunk_line(buf: &mut BytesMut, state: Decode) -> Result<Option<Decode>, io::Error> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("bad chunked encoding: {m}"));
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.contains(&b'\n') {
            return Err(bad("bare LF"));
        }
        if buf.len() > 4096 {
            return Err(bad("line too long"));
        }
        return Ok(None);
    };
    if eol > 4096 {
        return Err(bad("line too long"));
    }
    if buf[..eol].iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(bad("bare CR or LF"));
    }
    let line = buf.split_to(eol + 2);
    let line = &line[..eol];
    match state {
        Decode::ChunkSize => {
            let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
            if digits == 0 || digits > 15 {
                return Err(bad("size"));
            }
            let rest = &line[digits..];
            let ext = &rest[rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count()..];
            if !ext.is_empty() && ext[0] != b';' {
                return Err(bad("size"));
            }
            if ext.iter().any(|&b| b != b'\t' && !(0x20..0x7f).contains(&b)) {
                return Err(bad("extension"));
            }
            let hex = std::str::from_utf8(&line[..digits]).map_err(|_| bad("size"))?;
            let size = u64::from_str_radix(hex, 16).map_err(|_| bad("size"))?;
            Ok(Some(if size == 0 { Decode::Trailers } else { Decode::ChunkData(size) }))
        }
        Decode::ChunkEnd => {
            if line.is_empty() {
                Ok(Some(Decode::ChunkSize))
            } else {
                Err(bad("missing CRLF after chunk"))
            }
        }
        // Trailers are checked, then dropped: neither side forwards them.
        _ => {
            if line.is_empty() {
                return Ok(Some(Decode::Done));
            }
            let colon = line.iter().position(|&b| b == b':').ok_or_else(|| bad("trailer"))?;
            let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
            if colon == 0 || !line[..colon].iter().all(tchar) {
                return Err(bad("trailer"));
            }
            Ok(Some(Decode::Trailers))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head parsed, with the fields that pass on in its header map.
    fn parse(raw: &[u8], is_head: bool) -> (Response<()>, Framing, bool, BytesMut) {
        let mut buf = BytesMut::from(raw);
        let ResponseHead { mut resp, fields, framing, keep_alive } =
            parse_head(&mut buf, is_head).expect("valid").expect("complete");
        if let Some(fields) = fields {
            *resp.headers_mut() = fields.into_map(HeaderMap::new());
        }
        (resp, framing, keep_alive, buf)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let (r, f, k, rest) = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: b\r\n\r\nhello", false);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-a"], "b");
        assert_eq!(f, Framing::Length(5));
        assert!(k);
        assert_eq!(&rest[..], b"hello");
        let (_, f, _, _) = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true);
        assert_eq!(f, Framing::Empty, "HEAD has no body");
        let (_, f, _, _) = parse(b"HTTP/1.1 204 No Content\r\n\r\n", false);
        assert_eq!(f, Framing::Empty);
        let (_, f, _, _) =
            parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n", false);
        assert_eq!(f, Framing::Chunked, "transfer-encoding wins over content-length");
        let (_, f, k, _) = parse(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((f, k), (Framing::UntilClose, false));
        let (_, _, k, _) = parse(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n", false);
        assert!(!k);
        let (_, _, k, _) = parse(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false);
        assert!(!k, "HTTP/1.0 connections are not reused");
    }

    #[test]
    fn hop_by_hop_fields_are_left_out_of_the_parsed_response() {
        let (r, f, k, _) = parse(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nx-a: 1\r\ncontent-length: 2\r\n\r\nok",
            false,
        );
        assert_eq!((f, k), (Framing::Length(2), true));
        let names: Vec<&str> = r.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-a", "content-length"]);
        // A field named by `connection` goes too, wherever it stands; `close` ends reuse.
        let (r, _, k, _) = parse(
            b"HTTP/1.1 200 OK\r\nx-secret: 1\r\nConnection: x-secret, Close\r\nx-b: 2\r\ncontent-length: 0\r\n\r\n",
            false,
        );
        assert!(!k);
        // Removals from a header map may reorder it.
        let mut names: Vec<&str> = r.headers().keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "x-b"]);
        // A `transfer-encoding` that does not end in chunked reads to the close, and is not kept.
        let (r, f, k, _) = parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n", false);
        assert_eq!((f, k), (Framing::UntilClose, false));
        assert!(r.headers().is_empty());
    }

    #[test]
    fn many_headers_keep_their_order_values_and_repeats() {
        // Past the small on-stack list of header offsets (24), up to the limit (128); one more is
        // an error, not a panic.
        for n in [0usize, 1, 24, 25, 127] {
            let mut raw = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n".to_vec();
            for i in 0..n {
                raw.extend_from_slice(format!("x-h{}: v{i}\r\n", i % 7).as_bytes());
            }
            raw.extend_from_slice(b"\r\n");
            let (r, _, _, rest) = parse(&raw, false);
            assert!(rest.is_empty());
            assert_eq!(r.headers().len(), n + 1, "{n} headers");
            for k in 0..7.min(n) {
                let values: Vec<String> = r
                    .headers()
                    .get_all(format!("x-h{k}"))
                    .iter()
                    .map(|v| v.to_str().expect("ascii").to_string())
                    .collect();
                let expected: Vec<String> = (0..n).filter(|i| i % 7 == k).map(|i| format!("v{i}")).collect();
                assert_eq!(values, expected, "{n} headers, name x-h{k}");
            }
        }
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            raw.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert!(parse_head(&mut BytesMut::from(&raw[..]), false).is_err());
    }

    #[test]
    fn interim_responses_are_skipped_and_partial_heads_wait() {
        let (r, _, _, _) =
            parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n", false);
        assert_eq!(r.status(), 201);
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-le"[..]);
        assert!(parse_head(&mut buf, false).expect("partial is fine").is_none());
    }

    #[test]
    fn bad_heads_are_errors_not_panics() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 999999 OK\r\n\r\n",
            // Fields pass on as written, so httparse's checks are the only ones they get.
            b"HTTP/1.1 200 OK\r\nx-a: a\x7fb\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx-a: a\x00b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx a: b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx-a : b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx-a: b\r\n folded\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx-a: b\rc: d\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(raw);
            assert!(parse_head(&mut buf, false).is_err(), "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn chunk_lines_decode() {
        let mut buf = BytesMut::from(&b"1a;ext=1\r\n"[..]);
        assert_eq!(step_chunk_line(&mut buf, Decode::ChunkSize).expect("ok"), Some(Decode::ChunkData(26)));
        let mut buf = BytesMut::from(&b"0\r\n"[..]);
        assert_eq!(step_chunk_line(&mut buf, Decode::ChunkSize).expect("ok"), Some(Decode::Trailers));
        let mut buf = BytesMut::from(&b"x-t: 1\r\n\r\n"[..]);
        assert_eq!(step_chunk_line(&mut buf, Decode::Trailers).expect("ok"), Some(Decode::Trailers));
        assert_eq!(step_chunk_line(&mut buf, Decode::Trailers).expect("ok"), Some(Decode::Done));
        let mut buf = BytesMut::from(&b"zz\r\n"[..]);
        assert!(step_chunk_line(&mut buf, Decode::ChunkSize).is_err());
        let mut buf = BytesMut::from(&b"ffffffffffffffffff\r\n"[..]);
        assert!(step_chunk_line(&mut buf, Decode::ChunkSize).is_err());
        let mut buf = BytesMut::from(&b"12"[..]);
        assert_eq!(step_chunk_line(&mut buf, Decode::ChunkSize).expect("ok"), None);
        let mut buf = BytesMut::from(&b"5 ;a=b\r\n"[..]);
        assert_eq!(step_chunk_line(&mut buf, Decode::ChunkSize).expect("ok"), Some(Decode::ChunkData(5)));
        // Each of these reads differently in some other HTTP implementation: all are refused.
        for raw in [
            &b"+5\r\n"[..],
            b" 5\r\n",
            b"5 x\r\n",
            b"0x5\r\n",
            b"2;\nxx\r\n",
            b"2;a\rb\r\n",
            b"5\n",
            b"2;\x01\r\n",
        ] {
            let mut buf = BytesMut::from(raw);
            assert!(
                step_chunk_line(&mut buf, Decode::ChunkSize).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(raw)
            );
        }
        for raw in [&b"no colon\r\n"[..], b": v\r\n", b"bad name: v\r\n"] {
            let mut buf = BytesMut::from(raw);
            assert!(
                step_chunk_line(&mut buf, Decode::Trailers).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn request_heads_get_framing_headers() {
        let uri: http::Uri = "/a?b=1".parse().expect("uri");
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("x"));
        let head = |method: Method| RequestHead {
            method,
            uri: uri.clone(),
            headers: h.clone(),
            own: super::super::pool::OwnFields::default(),
        };
        let mut out = BytesMut::new();
        assert!(!encode_head(&mut out, &head(Method::POST), &UpBody::Empty));
        assert_eq!(&out[..], b"POST /a?b=1 HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n");
        let mut out = BytesMut::new();
        let body = UpBody::Buffered { data: Some(Bytes::from_static(b"abc")) };
        encode_head(&mut out, &head(Method::PUT), &body);
        assert!(out.ends_with(b"content-length: 3\r\n\r\n"));
        let mut out = BytesMut::new();
        encode_head(&mut out, &head(Method::GET), &UpBody::Empty);
        assert_eq!(&out[..], b"GET /a?b=1 HTTP/1.1\r\nhost: x\r\n\r\n");
    }

    /// The fields an HTTP/1 upstream gets, as a map.
    fn sent_fields(head: &RequestHead) -> HeaderMap {
        let mut out = BytesMut::new();
        encode_head(&mut out, head, &UpBody::Empty);
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut slots);
        assert!(req.parse(&out).expect("valid head").is_complete());
        let mut map = HeaderMap::new();
        for f in req.headers.iter() {
            map.append(
                HeaderName::from_bytes(f.name.as_bytes()).expect("name"),
                HeaderValue::from_bytes(f.value).expect("value"),
            );
        }
        map
    }

    #[test]
    fn own_fields_replace_the_clients_and_extend_its_chain() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("x"));
        headers.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1, 2.2.2.2"));
        headers.append("x-forwarded-for", HeaderValue::from_static("3.3.3.3"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert("x-request-id", HeaderValue::from_static("theirs"));
        let own = super::super::pool::OwnFields {
            request_id: Some(HeaderValue::from_static("ours")),
            forwarded: Some(("10.0.0.9".parse().expect("ip"), hdr::Scheme::Http)),
        };
        let mut head = RequestHead { method: Method::GET, uri: "/".parse().expect("uri"), headers, own };
        let sent = sent_fields(&head);
        assert_eq!(
            sent.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["1.1.1.1, 2.2.2.2, 10.0.0.9"]
        );
        assert_eq!(sent.get_all("x-forwarded-proto").iter().collect::<Vec<_>>(), ["http"]);
        assert_eq!(sent.get_all("x-request-id").iter().collect::<Vec<_>>(), ["ours"]);
        assert_eq!(sent["host"], "x");
        // The header map HTTP/2 upstreams and peers get says the same.
        assert_eq!(sent, head.full_headers());
        // A peer's request keeps its origin's forwarding fields; one without an id gets none.
        head.own.forwarded = None;
        head.own.request_id = None;
        let sent = sent_fields(&head);
        assert_eq!(sent.get_all("x-forwarded-for").iter().count(), 2);
        assert_eq!(sent["x-forwarded-proto"], "https");
        assert_eq!(sent["x-request-id"], "theirs");
        assert_eq!(sent, head.full_headers());
    }
}
