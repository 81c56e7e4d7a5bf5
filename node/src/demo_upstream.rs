//! `meridian upstream`: a small upstream for demos, tests and benchmarks.
//!
//! Any path answers with JSON describing the request (its name, method, path, request id, body
//! size) after streaming the whole request body through. Query knobs act on one request:
//! `delay_ms=N`, `status=N`, `bytes=N` (stream N bytes back), `echo=1` (stream the body back).
//! `/_control/*` changes behaviour for all later requests (fail with a status, add latency,
//! fail health checks) and reports counters, so tests can break it on purpose and check what
//! reached it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Args)]
pub struct UpstreamArgs {
    /// Listen address, e.g. 127.0.0.1:9000 (port 0 picks one and prints it).
    #[arg(long, env = "MERIDIAN_UPSTREAM_LISTEN")]
    pub listen: SocketAddr,
    /// Name echoed in every answer, to tell upstreams apart.
    #[arg(long, env = "MERIDIAN_UPSTREAM_NAME")]
    pub name: String,
    /// Also speak HTTP/2 with prior knowledge (h2c).
    #[arg(long)]
    pub h2c: bool,
}

#[derive(Default)]
struct Knobs {
    /// When non-zero, every request (health checks excluded) answers this status.
    fail_status: AtomicU16,
    delay_ms: AtomicU64,
    unhealthy: AtomicBool,
    requests: AtomicU64,
    body_bytes: AtomicU64,
    /// How many times each request id was served, to check at-most-once delivery.
    by_request_id: Mutex<HashMap<String, u64>>,
}

type UpBody = BoxBody<Bytes, hyper::Error>;

pub async fn run(args: UpstreamArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    println!("meridian upstream {} listening http={addr}", args.name);
    let knobs = Arc::new(Knobs::default());
    let name: Arc<str> = args.name.into();
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    if !args.h2c {
        builder = builder.http1_only();
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a { Ok(x) => x, Err(_) => continue },
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let (knobs, name, builder) = (knobs.clone(), name.clone(), builder.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let (knobs, name) = (knobs.clone(), name.clone());
                async move { Ok::<_, Infallible>(serve(req, &knobs, &name).await) }
            });
            let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
        });
    }
}

fn full(status: StatusCode, body: serde_json::Value) -> Response<UpBody> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).map_err(|n| match n {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn serve(req: Request<Incoming>, knobs: &Knobs, name: &str) -> Response<UpBody> {
    let q = query(&req);
    let path = req.uri().path().to_string();
    if let Some(cmd) = path.strip_prefix("/_control/") {
        return control(cmd, &q, knobs);
    }
    if path == "/healthz" {
        return if knobs.unhealthy.load(Ordering::Relaxed) {
            full(StatusCode::SERVICE_UNAVAILABLE, json!({"name": name, "healthy": false}))
        } else {
            full(StatusCode::OK, json!({"name": name, "healthy": true}))
        };
    }
    knobs.requests.fetch_add(1, Ordering::Relaxed);
    let request_id =
        req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if !request_id.is_empty() {
        if let Ok(mut m) = knobs.by_request_id.lock() {
            if m.len() < 1_000_000 {
                *m.entry(request_id.clone()).or_insert(0) += 1;
            }
        }
    }
    let delay =
        q.get("delay_ms").and_then(|v| v.parse().ok()).unwrap_or(0) + knobs.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let fail = knobs.fail_status.load(Ordering::Relaxed);
    let status = q
        .get("status")
        .and_then(|v| v.parse::<u16>().ok())
        .or((fail != 0).then_some(fail))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let method = req.method().clone();
    let seen = |h: &str| req.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
    let info = json!({
        "name": name,
        "method": method.as_str(),
        "path": path,
        "query": req.uri().query(),
        "request_id": request_id,
        "host": seen("host"),
        "x_forwarded_for": seen("x-forwarded-for"),
        "x_forwarded_proto": seen("x-forwarded-proto"),
        "connection": seen("connection"),
        "version": format!("{:?}", req.version()),
    });
    if q.contains_key("echo") {
        // Stream the request body straight back.
        let body = req.into_body().boxed();
        let mut r = Response::new(body);
        *r.status_mut() = status;
        return r;
    }
    if let Some(n) = q.get("bytes").and_then(|v| v.parse::<u64>().ok()) {
        let mut r = Response::new(Zeros { left: n }.boxed());
        *r.status_mut() = status;
        return r;
    }
    // Count the body as it streams; keep none of it.
    let mut body = req.into_body();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    total += d.len() as u64;
                }
            }
            Err(e) => return full(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
        }
    }
    knobs.body_bytes.fetch_add(total, Ordering::Relaxed);
    let mut info = info;
    info["body_bytes"] = json!(total);
    if method == Method::HEAD {
        return full(status, json!({}));
    }
    full(status, info)
}

fn control(cmd: &str, q: &HashMap<String, String>, knobs: &Knobs) -> Response<UpBody> {
    match cmd {
        "fail" => {
            let status = q.get("status").and_then(|v| v.parse().ok()).unwrap_or(500);
            knobs.fail_status.store(status, Ordering::Relaxed);
        }
        "delay" => {
            let ms = q.get("ms").and_then(|v| v.parse().ok()).unwrap_or(0);
            knobs.delay_ms.store(ms, Ordering::Relaxed);
        }
        "healthz" => {
            let ok = q.get("ok").is_none_or(|v| v != "false");
            knobs.unhealthy.store(!ok, Ordering::Relaxed);
        }
        "reset" => {
            knobs.fail_status.store(0, Ordering::Relaxed);
            knobs.delay_ms.store(0, Ordering::Relaxed);
            knobs.unhealthy.store(false, Ordering::Relaxed);
            knobs.requests.store(0, Ordering::Relaxed);
            knobs.body_bytes.store(0, Ordering::Relaxed);
            if let Ok(mut m) = knobs.by_request_id.lock() {
                m.clear();
            }
        }
        "stats" => {}
        _ => return full(StatusCode::NOT_FOUND, json!({"error": format!("unknown control {cmd}")})),
    }
    let duplicates = knobs.by_request_id.lock().map(|m| m.values().filter(|&&n| n > 1).count()).unwrap_or(0);
    full(
        StatusCode::OK,
        json!({
            "requests": knobs.requests.load(Ordering::Relaxed),
            "body_bytes": knobs.body_bytes.load(Ordering::Relaxed),
            "fail_status": knobs.fail_status.load(Ordering::Relaxed),
            "delay_ms": knobs.delay_ms.load(Ordering::Relaxed),
            "healthy": !knobs.unhealthy.load(Ordering::Relaxed),
            "duplicate_request_ids": duplicates,
        }),
    )
}

/// A body of `left` zero bytes, produced in 64 KiB chunks.
struct Zeros {
    left: u64,
}

static ZEROS: [u8; 65536] = [0; 65536];

impl Body for Zeros {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(ZEROS.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n])))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}
