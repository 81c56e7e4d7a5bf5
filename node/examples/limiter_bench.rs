//! Microbenchmark of the per-request cost of a global rate limit on one node: the local counter
//! (`QuotaLimiter::check`) and the whole check a request pays (`QuotaPlane::check`: key from a
//! header, the wall clock, the counter), one thread and two threads at once.
//!
//! Run: `cargo run --release -p meridian --example limiter_bench` (scripts/bench-quota.sh does).
//! Prints one line per case: `case ns_per_request`. A measurement, not a test: no thresholds.

#![allow(clippy::disallowed_types)] // std::time::Instant: this measures wall time on purpose

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;
use meridian::core::limiter::{Allowance, QuotaLimiter};
use meridian::core::table::{OnPartition, QuotaSpec};
use meridian::quota::key::KeySource;
use meridian::quota::{policy_header, QuotaPlane, RouteQuota};

const N: u64 = 5_000_000;

fn per_op(f: impl Fn(u64)) -> f64 {
    // Warm up, then time N calls.
    for i in 0..N / 10 {
        f(i);
    }
    let t = Instant::now();
    for i in 0..N {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / N as f64
}

fn two_threads(f: impl Fn(u64) + Send + Sync + 'static) -> f64 {
    let f = Arc::new(f);
    let t = Instant::now();
    let handles: Vec<_> = (0..2)
        .map(|k| {
            let f = f.clone();
            std::thread::spawn(move || {
                for i in 0..N {
                    f(i * 2 + k);
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    // Wall time per request with both threads running: the throughput cost.
    t.elapsed().as_nanos() as f64 / (2 * N) as f64
}

fn main() {
    let lease = |_| Allowance { share: u64::MAX, fallback: false, hot: false };
    let keys: Vec<String> = (0..10_000).map(|i| format!("tenant-{i}")).collect();
    let keys = Arc::new(keys);

    let one = QuotaLimiter::new(1000);
    let ns = per_op(|i| {
        black_box(one.check("tenant-1", 1_000_000 + i / 1000, 1, lease));
    });
    println!("counter_one_key {ns:.1}");

    let many = QuotaLimiter::new(1000);
    let ks = keys.clone();
    let ns = per_op(|i| {
        black_box(many.check(&ks[(i % 10_000) as usize], 1_000_000 + i / 1000, 1, lease));
    });
    println!("counter_10k_keys {ns:.1}");

    let spec = QuotaSpec {
        key: "header:x-tenant".into(),
        limit: u64::MAX / 2,
        window_ms: 1000,
        on_partition: OnPartition::LocalShare,
    };
    let plane = Arc::new(QuotaPlane::default());
    let quota = Arc::new(RouteQuota {
        name: Arc::from("per-tenant"),
        key: KeySource::parse(&spec.key).expect("key"),
        limiter: plane.limiter("per-tenant", spec.window_ms),
        policy: policy_header("per-tenant", &spec),
        spec,
    });
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", "tenant-42".parse().expect("header"));
    headers.insert("user-agent", "bench".parse().expect("header"));
    let headers = Arc::new(headers);
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let now = || meridian::gateway::unix_ms();
    let (p, q, h) = (plane.clone(), quota.clone(), headers.clone());
    let ns = per_op(move |_| {
        black_box(p.check(&q, "us-1", &h, ip, "all", now()));
    });
    println!("request_check_one_thread {ns:.1}");

    let (p, q, h) = (plane.clone(), quota.clone(), headers.clone());
    let ns = two_threads(move |_| {
        black_box(p.check(&q, "us-1", &h, ip, "all", now()));
    });
    println!("request_check_two_threads_same_key {ns:.1}");

    let (p, q) = (plane.clone(), quota.clone());
    let per_thread: Vec<HeaderMap> = (0..10_000)
        .map(|i| {
            let mut h = HeaderMap::new();
            h.insert("x-tenant", format!("tenant-{i}").parse().expect("header"));
            h
        })
        .collect();
    let per_thread = Arc::new(per_thread);
    let ns = two_threads(move |i| {
        black_box(p.check(&q, "us-1", &per_thread[(i % 10_000) as usize], ip, "all", now()));
    });
    println!("request_check_two_threads_10k_keys {ns:.1}");
}
