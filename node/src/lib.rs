//! Meridian node: the data plane, the admin API and the command line of the `meridian` binary.
//!
//! # Layout
//!
//! - [`core`]: IO-free decisions (routing table and matching, endpoint choice, health and
//!   ejection, retry policy and budget, the local rate-limit counter). Every function takes `now` and plain data.
//! - [`gateway`]: the node's shared state; routing snapshots swapped atomically.
//! - [`proxy`]: the request path (handler, upstream pool, body types, header rules).
//! - [`server`]: the accept loop with limits and graceful drain, shared by the data plane and admin.
//! - [`admin`]: the admin API; [`metrics`]: counters and latency histograms.
//! - [`health_check`]: active probes of local endpoints.
//! - [`quota`]: global rate limits: per-request checks, the ledger's leases, demand reports.
//! - [`auth`]: a route's edge policy: IP allow/deny lists, API keys, JWTs.
//! - [`route_store`]: the versioned routing table of a standalone node.
//! - [`peer`]: node-to-node QUIC with mutual TLS; [`certs`]: the cluster CA and node certificates.
//! - [`config`], [`node`], [`ctl`], [`dev`], [`demo_upstream`]: the command line.

pub mod admin;
pub mod admin_tokens;
pub mod auth;
pub mod certs;
pub mod cluster;
pub mod config;
pub mod core;
pub mod ctl;
pub mod demo_upstream;
pub mod dev;
pub mod error;
pub mod forward;
pub mod gateway;
pub mod health_check;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod proxy;
pub mod quota;
pub mod route_store;
pub mod server;
