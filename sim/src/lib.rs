//! `meridian-sim`: what the real decision code does in a cluster far bigger than this machine can
//! hold, under faults — and the same answer for the same seed.
//!
//! # Layout
//!
//! - Tier 1 (`world.rs`, `run.rs`): an event queue over a virtual clock with one seeded RNG, a
//!   latency matrix between regions, message loss, partitions, node crashes and upstream failures.
//!   It drives the node's own IO-free core (`meridian::core`: route matching, endpoint choice,
//!   health and ejection, retry and cross-region budgets, failover choice, the quota limiter) and
//!   the replicated quota ledger (`meridian_raft_store::quota`), with models of gossip and Raft.
//! - `invariants/`: one property per file, checked after every event that could break it.
//! - `faults.rs`, `scenario.rs`: fault specifications and the standard scenarios.
//! - `rng.rs`: the only randomness (SplitMix64). No wall clock, no `HashMap` order reaches the
//!   output: the same seed prints the same bytes.
//! - `tier2/`: fewer nodes, more real code — the real Raft store and gossip layer in memory,
//!   under tokio's paused clock.

pub mod faults;
pub mod invariants;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod tier2;
pub mod world;
