//! Body types of the proxy: what goes upstream and what goes back to the client.
//!
//! Both stream: a chunk is forwarded as it arrives and nothing accumulates beyond hyper's own
//! buffers, so memory per request stays flat whatever the body size. Small request bodies are the
//! one exception, buffered up to a fixed size so an idempotent request can be retried.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::h1::H1Body;
use super::h1_server::RequestBody;
use super::inflight::InFlightGuard;
use super::pool::UpstreamBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client's body exceeded the configured limit while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

pin_project_lite::pin_project! {
    /// A client's request body: from an HTTP connection, or streamed over the peer plane by the
    /// node that forwarded the request.
    #[project = ClientBodyProj]
    pub enum ClientBody {
        /// A request without a body.
        Empty,
        /// Read off a plain HTTP/1.1 connection by Meridian's own server.
        H1 { inner: RequestBody },
        Http {
            #[pin]
            inner: Incoming,
        },
        Peer {
            rx: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>,
            // Known up front for an empty forwarded body.
            ended: bool,
        },
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ClientBodyProj::Empty => Poll::Ready(None),
            ClientBodyProj::H1 { inner } => inner.poll_frame(cx),
            ClientBodyProj::Http { inner } => {
                Poll::Ready(ready!(inner.poll_frame(cx)).map(|r| r.map_err(|e| Box::new(e) as BoxError)))
            }
            ClientBodyProj::Peer { rx, ended } => {
                if *ended {
                    return Poll::Ready(None);
                }
                match ready!(rx.poll_recv(cx)) {
                    Some(r) => Poll::Ready(Some(r.map(Frame::data))),
                    None => {
                        *ended = true;
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::H1 { inner } => inner.is_end_stream(),
            ClientBody::Http { inner } => inner.is_end_stream(),
            ClientBody::Peer { ended, .. } => *ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::H1 { inner } => inner.size_hint(),
            ClientBody::Http { inner } => inner.size_hint(),
            ClientBody::Peer { .. } => SizeHint::default(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request body on its way upstream.
    #[project = UpBodyProj]
    pub enum UpBody {
        Empty,
        Buffered { data: Option<Bytes> },
        Streaming {
            #[pin]
            inner: ClientBody,
            seen: u64,
            limit: u64,
            // Raised when the limit trips, so the proxy can answer 413 rather than 502.
            tripped: Arc<AtomicBool>,
        },
    }
}

impl UpBody {
    pub fn streaming(inner: ClientBody, limit: u64) -> (UpBody, Arc<AtomicBool>) {
        let tripped = Arc::new(AtomicBool::new(false));
        (UpBody::Streaming { inner, seen: 0, limit, tripped: tripped.clone() }, tripped)
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            UpBodyProj::Empty => Poll::Ready(None),
            UpBodyProj::Buffered { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            UpBodyProj::Streaming { inner, seen, limit, tripped } => match ready!(inner.poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        *seen += d.len() as u64;
                        if *seen > *limit {
                            tripped.store(true, Ordering::Relaxed);
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit: *limit }))));
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Some(Err(e)) => Poll::Ready(Some(Err(e))),
                None => Poll::Ready(None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Empty => true,
            UpBody::Buffered { data } => data.is_none(),
            UpBody::Streaming { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Empty => SizeHint::with_exact(0),
            UpBody::Buffered { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            UpBody::Streaming { inner, .. } => inner.size_hint(),
        }
    }
}

/// What a streaming response holds on to until its body ends, so least-in-flight and load
/// shedding see a streaming response as load.
pub struct Held {
    pub endpoint: InFlightGuard,
    pub node: InFlightGuard,
}

pin_project_lite::pin_project! {
    /// A response body on its way to the client.
    #[project = DownBodyProj]
    pub enum DownBody {
        Full { data: Option<Bytes> },
        H1 {
            #[pin]
            inner: H1Body,
            held: Option<Held>,
        },
        H2 {
            #[pin]
            inner: Incoming,
            held: Option<Held>,
        },
        // A response served by a peer in another region, streamed back over the peer plane.
        Forwarded {
            rx: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>,
            held: Option<InFlightGuard>,
        },
    }
}

impl DownBody {
    pub fn full(data: impl Into<Bytes>) -> DownBody {
        let data: Bytes = data.into();
        DownBody::Full { data: if data.is_empty() { None } else { Some(data) } }
    }

    /// The fields of an HTTP/1 upstream's response, passed on as received; the response's
    /// header map holds only Meridian's own fields until they are taken.
    pub fn take_fields(&mut self) -> Option<Box<crate::proxy::fields::UpstreamFields>> {
        match self {
            DownBody::H1 { inner, .. } => inner.take_fields(),
            _ => None,
        }
    }

    /// The fields of an HTTP/1 upstream's response, for Meridian to set its own beside them
    /// (`None`: they are in the header map).
    pub fn fields_mut(&mut self) -> Option<&mut crate::proxy::fields::UpstreamFields> {
        match self {
            DownBody::H1 { inner, .. } => inner.fields_mut(),
            DownBody::Full { .. } | DownBody::H2 { .. } | DownBody::Forwarded { .. } => None,
        }
    }

    pub fn upstream(body: UpstreamBody, held: Held) -> DownBody {
        match body {
            UpstreamBody::H1(inner) => {
                let done = inner.is_end_stream();
                DownBody::H1 { inner, held: (!done).then_some(held) }
            }
            UpstreamBody::H2(inner) => DownBody::H2 { inner, held: Some(held) },
        }
    }
}

/// Poll an upstream body, releasing the in-flight guards once it ends (hyper stops polling when
/// `is_end_stream` says so, so the end is noticed after the last frame as well as on `None`).
fn poll_upstream<B>(
    mut inner: Pin<&mut B>,
    held: &mut Option<Held>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let polled = ready!(inner.as_mut().poll_frame(cx));
    if !matches!(polled, Some(Ok(_))) || inner.is_end_stream() {
        held.take();
    }
    Poll::Ready(polled.map(|r| r.map_err(Into::into)))
}

impl Body for DownBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            DownBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            DownBodyProj::H1 { inner, held } => poll_upstream(inner, held, cx),
            DownBodyProj::H2 { inner, held } => poll_upstream(inner, held, cx),
            DownBodyProj::Forwarded { rx, held } => match ready!(rx.poll_recv(cx)) {
                Some(r) => Poll::Ready(Some(r.map(Frame::data))),
                None => {
                    held.take();
                    Poll::Ready(None)
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DownBody::Full { data } => data.is_none(),
            DownBody::H1 { inner, .. } => inner.is_end_stream(),
            DownBody::H2 { inner, .. } => inner.is_end_stream(),
            DownBody::Forwarded { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DownBody::Full { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            DownBody::H1 { inner, .. } => inner.size_hint(),
            DownBody::H2 { inner, .. } => inner.size_hint(),
            DownBody::Forwarded { .. } => SizeHint::default(),
        }
    }
}
