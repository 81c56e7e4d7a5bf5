//! The data plane's HTTP/1.1 server, for plain-TCP client connections.
//!
//! hyper's server runs a general dispatcher per connection: a header-timeout timer created for
//! every request head, a buffered writer, a date refresh per response, and a state machine
//! built for every kind of service. A proxy needs little of that, and on a keep-alive benchmark
//! it cost about as much as all of Meridian's own work per request. This server is the loop a
//! proxy needs and no more: read a head, hand the request to the [`Service`], write the response
//! head and body, repeat. It keeps hyper's guarantees towards clients: 431 for a head over the
//! limit or with too many fields, 400 for a malformed head or ambiguous framing (RFC 9112 §6.3:
//! both `content-length` and `transfer-encoding`, a transfer coding other than a final
//! `chunked`, or differing lengths), 408 for a head that does not arrive within the header read
//! timeout, `100 Continue` when the body is first read, pipelining, HTTP/1.0 keep-alive, and a
//! graceful close on shutdown. A connection that opens with the HTTP/2 preface is handed back to
//! the caller, to be served by hyper's HTTP/2 server.
//!
//! The socket is shared (`Arc`) between the loop and the request body, which reads straight off
//! it while the service runs; the read buffer and the body's framing state live behind a mutex
//! that only one side uses at a time.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::body::{BoxError, ClientBody, DownBody};
use super::fields::UpstreamFields;
use super::h1::{step_chunk_line, Decode, HeadFault, HeadSpans, RawFacts};
use super::timer::KeptTimer;

/// Most header fields a request head may carry (hyper's default); more is answered with 431.
pub const MAX_REQUEST_HEADERS: usize = 100;
/// Trailer fields accepted after a chunked request body.
const MAX_TRAILER_LINES: usize = 100;
/// Read size while a body streams in.
const READ_CHUNK: usize = 16 * 1024;
/// Response body frames up to this size are copied next to the head and sent with one write.
const COALESCE: usize = 16 * 1024;
/// Largest response-head buffer a connection keeps between requests.
const OUT_KEEP: usize = 16 * 1024;
/// A request body the service left unread is read and discarded, up to this much, so the
/// connection can carry the next request; a longer one closes the connection instead.
const DRAIN_MAX: u64 = 64 * 1024;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What this server serves requests with.
pub trait Service: Clone + Send + Sync + 'static {
    fn call(
        &self,
        req: Request<ClientBody>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<DownBody>> + Send + 'static + use<Self>;

    /// The answer to a request refused before it was read whole (400, 408 or 431); the
    /// connection closes after it.
    fn refuse(&self, status: StatusCode, why: &'static str) -> Response<DownBody>;
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    /// Hand a connection that opens with the HTTP/2 preface back to the caller (h2c with prior
    /// knowledge) rather than refusing it as a malformed HTTP/1 request.
    pub allow_h2: bool,
}

/// One client connection.
pub struct Conn {
    read: Mutex<ReadSide>,
    write: OwnedWriteHalf,
}

struct ReadSide {
    /// Read through tokio's `poll_read`, which notes a short read as "drained": the read after
    /// a response then waits for readiness instead of making a system call that would find
    /// nothing.
    half: OwnedReadHalf,
    st: ReadState,
}

struct ReadState {
    buf: BytesMut,
    /// Framing state of the current request's body; `Done` between requests.
    body: Decode,
    /// `100 Continue` is owed before the body's first read; the count is what was sent of it.
    continue_owed: Option<usize>,
    trailer_lines: usize,
    /// The body failed (a framing error, or the client went away): no further request can be
    /// read from this connection.
    broken: bool,
}

impl std::ops::Deref for ReadSide {
    type Target = ReadState;

    fn deref(&self) -> &ReadState {
        &self.st
    }
}

impl std::ops::DerefMut for ReadSide {
    fn deref_mut(&mut self) -> &mut ReadState {
        &mut self.st
    }
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        let (half, write) = stream.into_split();
        Conn {
            write,
            read: Mutex::new(ReadSide {
                half,
                st: ReadState {
                    buf: BytesMut::with_capacity(4096),
                    body: Decode::Done,
                    continue_owed: None,
                    trailer_lines: 0,
                    broken: false,
                },
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ReadSide> {
        self.read.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The socket and whatever the client sent past the HTTP/2 preface check, for a connection
    /// [`serve`] handed back. `None` if a request body still holds the connection (it cannot,
    /// before the first request).
    pub fn into_parts(self: Arc<Self>) -> Option<(TcpStream, Bytes)> {
        let conn = Arc::into_inner(self)?;
        let read = conn.read.into_inner().unwrap_or_else(PoisonError::into_inner);
        let stream = read.half.reunite(conn.write).ok()?;
        Some((stream, read.st.buf.freeze()))
    }
}

/// How a connection ended.
pub enum Ended {
    /// Closed, after its last response or an error.
    Closed,
    /// It opened with the HTTP/2 preface; the caller serves it.
    Http2(Arc<Conn>),
}

/// Serve requests on `conn` until the client closes it, an error or a refusal ends it, or
/// `shutdown` turns true (an idle connection closes at once, a busy one after its response).
pub async fn serve<S: Service>(
    conn: Arc<Conn>,
    peer: SocketAddr,
    svc: &S,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) -> Ended {
    let mut stop = Stop::new(shutdown);
    let mut out = BytesMut::with_capacity(1024);
    // The header read timeout: a head's deadline is the start of its wait plus the timeout.
    let mut timer = KeptTimer::default();
    // The first head's time starts at accept.
    let mut first = Some(Instant::now());
    loop {
        let head = match read_head(&conn, &limits, &mut timer, &mut stop, first.take()).await {
            Ok(Head::Request(mut head)) => {
                body_of(&conn, &mut head.req);
                head
            }
            Ok(Head::Closed) => break,
            Ok(Head::Http2) => return Ended::Http2(conn),
            Err(refusal) => {
                if let Some((status, why)) = refusal.answer() {
                    tracing::debug!(%peer, status = status.as_u16(), why, "request head refused");
                    let resp = svc.refuse(status, why);
                    let _ = write_response(&conn, &mut out, resp, false, Version::HTTP_11, false).await;
                }
                break;
            }
        };
        let Parsed { req, keep_alive, is_head } = head;
        let version = req.version();
        let Some(resp) = answer_or_gone(&conn, pin!(svc.call(req, peer)), limits.max_header_bytes).await
        else {
            tracing::debug!(%peer, "client closed the connection before its answer; request cancelled");
            break;
        };
        let keep = keep_alive && !stop.requested() && body_settled(&conn);
        // A `100 Continue` begun must be finished before the answer, and none may follow it.
        let owed = conn.lock().continue_owed.take();
        if let Some(sent) = owed.filter(|&n| n > 0 && n < CONTINUE.len()) {
            if write_all(conn.write.as_ref(), &CONTINUE[sent..]).await.is_err() {
                break;
            }
        }
        match write_response(&conn, &mut out, resp, is_head, version, keep).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "response not delivered");
                break;
            }
        }
        if out.capacity() > OUT_KEEP {
            out = BytesMut::with_capacity(1024);
        }
    }
    close(&conn);
    Ended::Closed
}

/// Await the service's answer while watching the client: one that closes its connection before
/// the answer (with its request read whole) cancels the request, as under hyper, so an abandoned
/// request does not hold its upstream exchange and in-flight slot to the end. Bytes of a next,
/// pipelined request are kept for later, up to `cap`.
async fn answer_or_gone<F: Future<Output = Response<DownBody>>>(
    conn: &Conn,
    mut answer: Pin<&mut F>,
    cap: usize,
) -> Option<Response<DownBody>> {
    poll_fn(|cx| {
        if let Poll::Ready(resp) = answer.as_mut().poll(cx) {
            return Poll::Ready(Some(resp));
        }
        let mut rd = conn.lock();
        let ReadSide { half, st } = &mut *rd;
        // While the body is still being read, its reader sees a close itself.
        while st.body == Decode::Done && st.buf.len() < cap {
            st.buf.reserve(1024);
            match tokio_util::io::poll_read_buf(Pin::new(&mut *half), cx, &mut st.buf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => break,
            }
        }
        Poll::Pending
    })
    .await
}

/// Whether the connection can carry another request once this response is out: the request's
/// body was read whole, or the service let it go and the rest of it (at most [`DRAIN_MAX`]) has
/// already arrived and is discarded here. A body still on its way closes the connection
/// instead: waiting for it would let a stalled client hold the connection open.
fn body_settled(conn: &Arc<Conn>) -> bool {
    let mut rd = conn.lock();
    if rd.body == Decode::Done {
        return !rd.broken;
    }
    // A client still waiting for `100 Continue` may or may not send its body now, and the
    // next request could not be told apart from it; a body someone still holds (an upstream
    // exchange in another task) may yet be read.
    if rd.broken || rd.continue_owed.is_some() || Arc::strong_count(conn) > 1 {
        return false;
    }
    let mut drained = 0u64;
    loop {
        match decode_step(&mut rd) {
            Ok(Step::Data(d)) => {
                drained += d.len() as u64;
                if drained > DRAIN_MAX {
                    return false;
                }
            }
            Ok(Step::End) => return true,
            Ok(Step::NeedMore) => {
                rd.buf.reserve(READ_CHUNK);
                let ReadSide { half, st } = &mut *rd;
                let buf = &mut st.buf;
                match half.try_read_buf(buf) {
                    Ok(n) if n > 0 => {}
                    _ => return false,
                }
            }
            Err(_) => return false,
        }
    }
}

/// Half-close, so the client sees the end of the last response rather than a reset, even while
/// a request body elsewhere still holds the socket.
fn close(conn: &Conn) {
    let _ = socket2::SockRef::from(conn.write.as_ref()).shutdown(std::net::Shutdown::Write);
}

// Returned once per request and moved straight out: boxing it would cost an allocation each time.
#[allow(clippy::large_enum_variant)]
enum Head {
    Request(Parsed),
    Closed,
    Http2,
}

struct Parsed {
    req: Request<ClientBody>,
    keep_alive: bool,
    is_head: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    TooLarge,
    Malformed(&'static str),
    /// The head did not arrive in time; `true` when part of it had.
    Timeout(bool),
    /// The connection failed or closed mid-head; nobody to answer.
    Gone,
}

impl Refusal {
    fn answer(&self) -> Option<(StatusCode, &'static str)> {
        match self {
            Refusal::TooLarge => Some((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head is larger than max_header_bytes or has too many fields",
            )),
            Refusal::Malformed(why) => Some((StatusCode::BAD_REQUEST, why)),
            Refusal::Timeout(true) => Some((
                StatusCode::REQUEST_TIMEOUT,
                "request head not received within the header read timeout",
            )),
            Refusal::Timeout(false) | Refusal::Gone => None,
        }
    }
}

/// Wait for the next complete request head.
async fn read_head(
    conn: &Arc<Conn>,
    limits: &Limits,
    timer: &mut KeptTimer,
    stop: &mut Stop,
    mut since: Option<Instant>,
) -> Result<Head, Refusal> {
    let mut sniff_h2 = limits.allow_h2 && since.is_some();
    poll_fn(|cx| loop {
        let mut rd = conn.lock();
        // `body_settled` saw the previous request's body through.
        debug_assert_eq!(rd.body, Decode::Done);
        if !rd.buf.is_empty() {
            if sniff_h2 {
                let n = rd.buf.len().min(H2_PREFACE.len());
                if rd.buf[..n] != H2_PREFACE[..n] {
                    sniff_h2 = false;
                } else if n == H2_PREFACE.len() {
                    return Poll::Ready(Ok(Head::Http2));
                }
            }
            if !sniff_h2 {
                match parse_request(&mut rd, limits.max_header_bytes) {
                    Ok(Some(parsed)) => return Poll::Ready(Ok(Head::Request(parsed))),
                    Ok(None) => {}
                    Err(refusal) => return Poll::Ready(Err(refusal)),
                }
                if rd.buf.len() >= limits.max_header_bytes {
                    return Poll::Ready(Err(Refusal::TooLarge));
                }
            }
        }
        let ReadSide { half, st } = &mut *rd;
        let buf = &mut st.buf;
        buf.reserve(4096);
        match tokio_util::io::poll_read_buf(Pin::new(half), cx, buf) {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(if buf.is_empty() { Ok(Head::Closed) } else { Err(Refusal::Gone) })
            }
            Poll::Ready(Ok(_)) => continue,
            Poll::Ready(Err(_)) => return Poll::Ready(Err(Refusal::Gone)),
            Poll::Pending => {}
        }
        let idle = buf.is_empty();
        drop(rd);
        if idle && stop.poll(cx).is_ready() {
            return Poll::Ready(Ok(Head::Closed));
        }
        let started = *since.get_or_insert_with(Instant::now);
        if timer.poll_until(started + limits.header_read_timeout, cx).is_ready() {
            return Poll::Ready(Err(Refusal::Timeout(!idle)));
        }
        return Poll::Pending;
    })
    .await
}

/// The server's shutdown signal, registered once per connection: a task's waker stays the
/// same, so later waits only check the flag (polling the watch each time takes its lock).
pub(crate) struct Stop {
    seen: watch::Receiver<bool>,
    changed: Pin<Box<dyn Future<Output = ()> + Send>>,
    registered: Option<std::task::Waker>,
    fired: bool,
}

impl Stop {
    fn new(rx: watch::Receiver<bool>) -> Stop {
        let mut waiting = rx.clone();
        Stop {
            seen: rx,
            changed: Box::pin(async move {
                let _ = waiting.changed().await;
            }),
            registered: None,
            fired: false,
        }
    }

    /// Whether shutdown has begun (no waker registered).
    fn requested(&mut self) -> bool {
        self.fired || self.seen.has_changed().unwrap_or(true)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.requested() {
            self.fired = true;
            return Poll::Ready(());
        }
        if self.registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        // Out of budget, the watch answers `Pending` without registering (see `KeptTimer`).
        let registers = tokio::task::coop::has_budget_remaining();
        if self.changed.as_mut().poll(cx).is_ready() {
            self.fired = true;
            return Poll::Ready(());
        }
        self.registered = registers.then(|| cx.waker().clone());
        Poll::Pending
    }
}

/// Parse a complete request head off the front of the buffer and set up its body's framing.
/// `Ok(None)` when the head is not complete yet.
fn parse_request(rd: &mut ReadState, max_head: usize) -> Result<Option<Parsed>, Refusal> {
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_REQUEST_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_request_with_uninit_headers(&mut parsed, &rd.buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(e) => return Err(Refusal::Malformed(parse_error(e))),
    };
    if len > max_head {
        return Err(Refusal::TooLarge);
    }
    let method = Method::from_bytes(parsed.method.unwrap_or("").as_bytes())
        .map_err(|_| Refusal::Malformed("invalid request method"))?;
    let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    // The target and the fields are cut from the frozen head without copying.
    let path = parsed.path.unwrap_or("");
    let target_at = path.as_ptr() as usize - rd.buf.as_ptr() as usize;
    let target = target_at..target_at + path.len();
    // Framing and persistence from the raw fields: no lookups in the header map for them.
    let facts = RawFacts::read(parsed.headers, true);
    let mut spans = HeadSpans::new();
    spans.note(parsed.headers, rd.buf.as_ptr());
    let head = rd.buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target))
        .map_err(|_| Refusal::Malformed("invalid request target"))?;
    // Room for the fields the proxy adds (forwarding facts, request id, host).
    let headers = spans.cut(&head, 5).map_err(|fault| match fault {
        HeadFault::Name(_) => Refusal::Malformed("invalid header name"),
        HeadFault::Value(_) => Refusal::Malformed("invalid header value"),
    })?;
    let body = request_framing(version, &facts)?;
    let keep_alive = match version {
        Version::HTTP_11 => !facts.close,
        _ => facts.keep_alive && !facts.close,
    };
    rd.continue_owed =
        (version == Version::HTTP_11 && body != Decode::Done && facts.expect_continue).then_some(0);
    rd.body = body;
    rd.trailer_lines = 0;
    let is_head = method == Method::HEAD;
    let mut req = Request::new(ClientBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Ok(Some(Parsed { req, keep_alive, is_head }))
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine | httparse::Error::Status => "malformed request head",
        httparse::Error::Token => "invalid request method",
        httparse::Error::Version => "unsupported HTTP version",
        _ => "malformed request head",
    }
}

/// How a request's body is delimited (RFC 9112 §6.3), refusing every ambiguous case: a
/// request that could be read two ways is how requests are smuggled past a proxy.
fn request_framing(version: Version, facts: &RawFacts) -> Result<Decode, Refusal> {
    if let Some(chunked) = facts.chunked_last {
        if version == Version::HTTP_10 {
            return Err(Refusal::Malformed("transfer-encoding in an HTTP/1.0 request"));
        }
        if facts.length != Ok(None) {
            return Err(Refusal::Malformed("both content-length and transfer-encoding"));
        }
        if !chunked {
            return Err(Refusal::Malformed("transfer-encoding must end with chunked"));
        }
        return Ok(Decode::ChunkSize);
    }
    Ok(match facts.length.map_err(Refusal::Malformed)? {
        None | Some(0) => Decode::Done,
        Some(n) => Decode::Length(n),
    })
}

enum Step {
    Data(Bytes),
    End,
    NeedMore,
}

/// Take what the buffer holds of the current body.
fn decode_step(rd: &mut ReadState) -> io::Result<Step> {
    loop {
        match rd.body {
            Decode::Done => return Ok(Step::End),
            Decode::Length(0) => rd.body = Decode::Done,
            Decode::Length(left) => {
                if rd.buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = (rd.buf.len() as u64).min(left);
                rd.body = if n == left { Decode::Done } else { Decode::Length(left - n) };
                return Ok(Step::Data(rd.buf.split_to(n as usize).freeze()));
            }
            Decode::ChunkData(0) => rd.body = Decode::ChunkEnd,
            Decode::ChunkData(left) => {
                if rd.buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = (rd.buf.len() as u64).min(left);
                rd.body = Decode::ChunkData(left - n);
                return Ok(Step::Data(rd.buf.split_to(n as usize).freeze()));
            }
            // Requests are never delimited by the connection's end.
            Decode::UntilClose => rd.body = Decode::Done,
            state @ (Decode::ChunkSize | Decode::ChunkEnd | Decode::Trailers) => {
                if state == Decode::Trailers {
                    rd.trailer_lines += 1;
                    if rd.trailer_lines > MAX_TRAILER_LINES {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "too many trailer fields"));
                    }
                }
                match step_chunk_line(&mut rd.buf, state)? {
                    Some(next) => rd.body = next,
                    None => {
                        if state == Decode::Trailers {
                            rd.trailer_lines -= 1;
                        }
                        return Ok(Step::NeedMore);
                    }
                }
            }
        }
    }
}

/// A request body read straight off the client's connection.
pub struct RequestBody {
    conn: Arc<Conn>,
    /// Bytes left, when the request gave a length.
    left: Option<u64>,
    done: bool,
}

impl RequestBody {
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let conn = &*self.conn;
        let mut rd = conn.lock();
        let result = Self::poll_locked(conn, &mut rd, cx);
        match &result {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(left), Some(d)) = (self.left.as_mut(), frame.data_ref()) {
                    *left -= d.len() as u64;
                }
                self.done = rd.body == Decode::Done;
            }
            Poll::Ready(Some(Err(_))) => {
                rd.broken = true;
                rd.body = Decode::Done;
                self.done = true;
            }
            Poll::Ready(None) => self.done = true,
            Poll::Pending => {}
        }
        result
    }

    fn poll_locked(
        conn: &Conn,
        rd: &mut ReadSide,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // The client asked to hear that its body is wanted before sending it.
        while let Some(sent) = rd.continue_owed {
            if sent == CONTINUE.len() {
                rd.continue_owed = None;
                break;
            }
            match conn.write.try_write(&CONTINUE[sent..]) {
                Ok(n) => rd.continue_owed = Some(sent + n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = ready!(conn.write.as_ref().poll_write_ready(cx)) {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                }
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
        loop {
            match decode_step(rd) {
                Ok(Step::Data(d)) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                Ok(Step::End) => return Poll::Ready(None),
                Ok(Step::NeedMore) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
            let ReadSide { half, st } = &mut *rd;
            let buf = &mut st.buf;
            buf.reserve(READ_CHUNK);
            match ready!(tokio_util::io::poll_read_buf(Pin::new(half), cx, buf)) {
                Ok(0) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "client closed the connection in the middle of the request body",
                    )
                    .into())))
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.done
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.left {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// The body of the request `parse_request` just returned, as a [`ClientBody`].
fn body_of(conn: &Arc<Conn>, req: &mut Request<ClientBody>) {
    let left = match conn.lock().body {
        Decode::Done => return,
        Decode::Length(n) => Some(n),
        _ => None,
    };
    *req.body_mut() = ClientBody::H1 { inner: RequestBody { conn: conn.clone(), left, done: false } };
}

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Write `resp`; true when the connection can carry another request afterwards.
async fn write_response(
    conn: &Conn,
    out: &mut BytesMut,
    resp: Response<DownBody>,
    is_head: bool,
    version: Version,
    keep_alive: bool,
) -> io::Result<bool> {
    let (parts, mut body) = resp.into_parts();
    let fields = body.take_fields();
    let mut body = pin!(body);
    let head = HeadOut { status: parts.status, headers: &parts.headers, fields: fields.as_deref() };
    let (framing, keep) = encode_head(out, head, &body.size_hint(), is_head, version, keep_alive);
    drop(fields);
    if framing == Framing::None {
        write_all(conn.write.as_ref(), out).await?;
        out.clear();
        return Ok(keep);
    }
    let mut sent = 0u64;
    loop {
        // While the head (or small frames) wait in `out`, take a frame that is ready at once
        // and send both with one write; otherwise send what is waiting before waiting.
        let frame = if out.is_empty() {
            poll_fn(|cx| body.as_mut().poll_frame(cx)).await
        } else {
            match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    write_all(conn.write.as_ref(), out).await?;
                    out.clear();
                    continue;
                }
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                // Whatever was sent stays short of its framing: the client sees a truncated
                // response, never a complete-looking wrong one.
                write_all(conn.write.as_ref(), out).await?;
                out.clear();
                return Err(io::Error::other(format!("response body failed: {e}")));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => d,
                // Trailers are not forwarded to HTTP/1 clients.
                Err(_) => continue,
            },
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if let Framing::Length(n) = framing {
            if sent > n {
                out.clear();
                return Err(io::Error::other("response body longer than its content-length"));
            }
        }
        let chunk_head = (framing == Framing::Chunked).then(|| chunk_size_line(data.len()));
        if out.len() + data.len() <= COALESCE {
            if let Some((line, n)) = &chunk_head {
                out.extend_from_slice(&line[..*n]);
            }
            out.extend_from_slice(&data);
            if chunk_head.is_some() {
                out.extend_from_slice(b"\r\n");
            }
        } else {
            if let Some((line, n)) = &chunk_head {
                out.extend_from_slice(&line[..*n]);
            }
            let tail: &[u8] = if chunk_head.is_some() { b"\r\n" } else { b"" };
            write_all_vectored(conn.write.as_ref(), &[out, &data, tail]).await?;
            out.clear();
        }
        if body.is_end_stream() {
            break;
        }
    }
    match framing {
        Framing::Length(n) if sent != n => {
            write_all(conn.write.as_ref(), out).await?;
            out.clear();
            return Err(io::Error::other("response body shorter than its content-length"));
        }
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        _ => {}
    }
    if !out.is_empty() {
        write_all(conn.write.as_ref(), out).await?;
        out.clear();
    }
    Ok(keep)
}

/// What a response head is written from.
struct HeadOut<'a> {
    status: StatusCode,
    /// Meridian's own fields, and the rest when `fields` is `None`.
    headers: &'a HeaderMap,
    /// An HTTP/1 upstream's fields, passed on as received.
    fields: Option<&'a UpstreamFields>,
}

/// Encode the status line and fields into `out`; returns the body's framing and whether the
/// connection stays open after this response.
fn encode_head(
    out: &mut BytesMut,
    HeadOut { status, headers, fields }: HeadOut<'_>,
    hint: &SizeHint,
    is_head: bool,
    version: Version,
    keep_alive: bool,
) -> (Framing, bool) {
    // A 101 would switch protocols, which this server does not do: the connection ends after it.
    let mut keep = keep_alive && !status.is_informational();
    let bodiless = is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let declared = || {
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|s| s.trim().parse().ok())
    };
    let framing = if bodiless {
        Framing::None
    } else if let Some(n) = hint.exact().or_else(declared) {
        Framing::Length(n)
    } else if version == Version::HTTP_11 {
        Framing::Chunked
    } else {
        keep = false;
        Framing::UntilClose
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // A HEAD or 304 answer keeps the length the full answer would have.
    let keep_length = is_head || status == StatusCode::NOT_MODIFIED;
    // Noted on the way past rather than looked up.
    let mut has_date = fields.is_some_and(|f| f.write_to(out, keep_length, headers));
    for (name, value) in headers {
        if (name == header::CONTENT_LENGTH && !keep_length)
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        has_date |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        date::append(out);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {}
    }
    if !keep {
        out.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, keep)
}

/// `{len:x}\r\n` on the stack.
fn chunk_size_line(len: usize) -> ([u8; 18], usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = 0;
    let mut v = len;
    loop {
        digits[n] = HEX[v & 15];
        n += 1;
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    let mut line = [0u8; 18];
    for i in 0..n {
        line[i] = digits[n - 1 - i];
    }
    line[n] = b'\r';
    line[n + 1] = b'\n';
    (line, n + 2)
}

async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match stream.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn write_all_vectored(stream: &TcpStream, parts: &[&[u8]]) -> io::Result<()> {
    let mut parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    while !parts.is_empty() {
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut n = match stream.try_write_vectored(&slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                stream.writable().await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        while n > 0 {
            if n >= parts[0].len() {
                n -= parts[0].len();
                parts.remove(0);
            } else {
                parts[0] = &parts[0][n..];
                n = 0;
            }
        }
    }
    Ok(())
}

/// The `date` field, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }

    pub fn append(out: &mut bytes::BytesMut) {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != secs {
                let s = httpdate::fmt_http_date(now);
                if s.len() == 29 {
                    c.1.copy_from_slice(s.as_bytes());
                    c.0 = secs;
                } else {
                    out.extend_from_slice(s.as_bytes());
                    return;
                }
            }
            out.extend_from_slice(&c.1);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderName, HeaderValue};

    fn side(raw: &[u8]) -> ReadState {
        ReadState {
            buf: BytesMut::from(raw),
            body: Decode::Done,
            continue_owed: None,
            trailer_lines: 0,
            broken: false,
        }
    }

    fn parse(raw: &[u8]) -> Result<Option<(Parsed, ReadState)>, Refusal> {
        let mut rd = side(raw);
        Ok(parse_request(&mut rd, 8192)?.map(|p| (p, rd)))
    }

    #[test]
    fn request_heads_parse_with_their_framing() {
        let (p, rd) =
            parse(b"POST /a?b=1 HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nx-a: 1\r\nx-a: 2\r\n\r\nabcGET")
                .expect("valid")
                .expect("complete");
        assert_eq!(p.req.method(), Method::POST);
        assert_eq!(p.req.uri(), "/a?b=1");
        assert_eq!(p.req.headers().get_all("x-a").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert!(p.keep_alive && !p.is_head);
        assert_eq!(rd.body, Decode::Length(3));
        assert_eq!(&rd.buf[..], b"abcGET", "the body and the next request stay in the buffer");

        let (p, rd) = parse(b"GET / HTTP/1.0\r\n\r\n").expect("valid").expect("complete");
        assert!(!p.keep_alive, "HTTP/1.0 closes unless asked");
        assert_eq!(rd.body, Decode::Done);
        let (p, _) =
            parse(b"GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").expect("ok").expect("complete");
        assert!(p.keep_alive);
        let (p, _) = parse(b"HEAD / HTTP/1.1\r\nconnection: close\r\n\r\n").expect("ok").expect("complete");
        assert!(!p.keep_alive && p.is_head);
        let (_, rd) =
            parse(b"PUT / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\nexpect: 100-continue\r\n\r\n")
                .expect("ok")
                .expect("complete");
        assert_eq!((rd.body, rd.continue_owed), (Decode::ChunkSize, Some(0)));
        assert!(parse(b"GET / HTTP/1.1\r\nhost: x\r\n").expect("partial is fine").is_none());
    }

    #[test]
    fn ambiguous_or_malformed_heads_are_refused() {
        for raw in [
            &b"POST / HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: +3\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 99999999999999999999\r\n\r\n",
            b"HELLO THERE\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw), Err(Refusal::Malformed(_))),
                "{:?} was not refused as malformed",
                String::from_utf8_lossy(raw)
            );
        }
        let (_, rd) = parse(b"POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\n")
            .expect("repeated equal lengths are one length")
            .expect("complete");
        assert_eq!(rd.body, Decode::Length(3));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_REQUEST_HEADERS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let mut rd = side(&many);
        assert_eq!(parse_request(&mut rd, 1 << 20).err(), Some(Refusal::TooLarge));
        let big = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(9000));
        let mut rd = side(big.as_bytes());
        assert_eq!(parse_request(&mut rd, 8192).err(), Some(Refusal::TooLarge));
    }

    #[test]
    fn chunked_bodies_decode_and_trailers_are_bounded() {
        let mut rd = side(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nx-t: 1\r\n\r\nNEXT");
        rd.body = Decode::ChunkSize;
        let mut got = Vec::new();
        loop {
            match decode_step(&mut rd).expect("valid") {
                Step::Data(d) => got.extend_from_slice(&d),
                Step::End => break,
                Step::NeedMore => panic!("the whole body is buffered"),
            }
        }
        assert_eq!(got, b"abcde");
        assert_eq!(&rd.buf[..], b"NEXT");
        let mut raw = b"0\r\n".to_vec();
        for _ in 0..=MAX_TRAILER_LINES {
            raw.extend_from_slice(b"x: y\r\n");
        }
        let mut rd = side(&raw);
        rd.body = Decode::ChunkSize;
        assert!(decode_step(&mut rd).is_err(), "endless trailers are an error");
    }

    fn head(
        status: StatusCode,
        headers: &[(&str, &str)],
        hint: SizeHint,
        is_head: bool,
        v: Version,
        keep: bool,
    ) -> (String, Framing, bool) {
        let mut map = HeaderMap::new();
        for (k, val) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(val).expect("value"),
            );
        }
        let mut out = BytesMut::new();
        let (f, k) =
            encode_head(&mut out, HeadOut { status, headers: &map, fields: None }, &hint, is_head, v, keep);
        (String::from_utf8(out.to_vec()).expect("ascii"), f, k)
    }

    #[test]
    fn upstream_fields_pass_with_own_fields_winning_and_one_framing() {
        let raw = "HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 6\r\nConnection: keep-alive\r\n\
                   X-Meridian-Node: theirs\r\nDate: Mon, 23 Nov 2026 09:00:00 GMT\r\n\r\n";
        let fields = super::super::fields::parsed(raw).expect("plain head");
        let mut own = HeaderMap::new();
        own.insert("x-meridian-node", HeaderValue::from_static("n1"));
        let write = |is_head: bool| {
            let mut out = BytesMut::new();
            let head = HeadOut { status: StatusCode::OK, headers: &own, fields: Some(&fields) };
            let hint = SizeHint::with_exact(if is_head { 0 } else { 6 });
            let (f, _) = encode_head(&mut out, head, &hint, is_head, Version::HTTP_11, true);
            (String::from_utf8(out.to_vec()).expect("ascii"), f)
        };
        let (h, f) = write(false);
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\nServer: up\r\nDate: Mon, 23 Nov 2026 09:00:00 GMT\r\n\
             x-meridian-node: n1\r\ncontent-length: 6\r\n\r\n"
        );
        assert_eq!(f, Framing::Length(6));
        let (h, f) = write(true);
        assert_eq!(f, Framing::None);
        assert!(h.contains("Content-Length: 6\r\n") && !h.contains("content-length"), "{h}");
    }

    #[test]
    fn response_heads_carry_exactly_one_framing() {
        let date = [("date", "Mon, 23 Nov 2026 09:00:00 GMT")];
        let (h, f, k) = head(StatusCode::OK, &date, SizeHint::with_exact(6), false, Version::HTTP_11, true);
        assert_eq!(h, "HTTP/1.1 200 OK\r\ndate: Mon, 23 Nov 2026 09:00:00 GMT\r\ncontent-length: 6\r\n\r\n");
        assert_eq!((f, k), (Framing::Length(6), true));
        let stale =
            [("content-length", "99"), ("transfer-encoding", "chunked"), ("connection", "x"), ("date", "d")];
        let (h, f, _) = head(StatusCode::OK, &stale, SizeHint::new(), false, Version::HTTP_11, true);
        assert_eq!(f, Framing::Length(99), "a declared length is used when the body cannot tell");
        assert_eq!(h.matches("content-length").count(), 1, "{h}");
        assert!(!h.contains("transfer-encoding") && !h.contains("connection"), "{h}");
        let (h, f, _) = head(StatusCode::OK, &date, SizeHint::new(), false, Version::HTTP_11, true);
        assert_eq!(f, Framing::Chunked);
        assert!(h.contains("transfer-encoding: chunked\r\n"));
        let (h, f, k) = head(StatusCode::OK, &date, SizeHint::new(), false, Version::HTTP_10, true);
        assert_eq!((f, k), (Framing::UntilClose, false), "HTTP/1.0 cannot take chunks");
        assert!(h.contains("connection: close\r\n"));
        let (h, f, k) = head(StatusCode::OK, &date, SizeHint::with_exact(1), false, Version::HTTP_10, true);
        assert_eq!((f, k), (Framing::Length(1), true));
        assert!(h.contains("connection: keep-alive\r\n"));
        let (h, f, _) = head(
            StatusCode::OK,
            &[("content-length", "42")],
            SizeHint::with_exact(0),
            true,
            Version::HTTP_11,
            true,
        );
        assert_eq!(f, Framing::None);
        assert!(h.contains("content-length: 42\r\n"), "HEAD keeps the GET's length: {h}");
        assert!(h.contains("\r\ndate: "), "a date is added when missing: {h}");
        let (h, f, _) = head(
            StatusCode::NO_CONTENT,
            &[("content-length", "0")],
            SizeHint::with_exact(0),
            false,
            Version::HTTP_11,
            true,
        );
        assert_eq!(f, Framing::None);
        assert!(!h.contains("content-length"), "{h}");
        let (h, _, k) =
            head(StatusCode::BAD_REQUEST, &date, SizeHint::with_exact(2), false, Version::HTTP_11, false);
        assert!(!k && h.contains("connection: close\r\n"));
    }

    #[test]
    fn chunk_size_lines_are_hex() {
        for (n, s) in
            [(0usize, "0\r\n"), (10, "a\r\n"), (4096, "1000\r\n"), (usize::MAX, "ffffffffffffffff\r\n")]
        {
            let (line, len) = chunk_size_line(n);
            assert_eq!(&line[..len], s.as_bytes());
        }
    }

    #[test]
    fn dates_are_imf_fixdate() {
        let mut out = BytesMut::new();
        date::append(&mut out);
        let s = std::str::from_utf8(&out).expect("ascii");
        assert_eq!(s.len(), 29, "{s}");
        assert!(s.ends_with(" GMT"), "{s}");
        assert!(httpdate::parse_http_date(s).is_ok(), "{s}");
    }
}
