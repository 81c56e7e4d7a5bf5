//! Tier 2: fewer seeds, more real code. Tens of nodes, each a real [`RaftStore`] (openraft on
//! its own redb file) and a real gossip participant (chitchat), on in-memory networks, under
//! tokio's paused clock — driven through a seeded schedule of table writes, quota rounds,
//! crashes, cut-offs and splits, with four invariants checked after every step of simulated
//! time.
//!
//! # Layout
//!
//! - `mod.rs` — [`Tier2Config`], [`run`].
//! - `schedule.rs` — the seeded schedule: a pure function of the config, drawn from the crate's
//!   one generator (`crate::rng`, SplitMix64); `mix` hashes values that must not depend on draw
//!   order.
//! - `workload.rs` — the commands: routing tables and quota rounds with synthetic demand.
//! - `cluster.rs` — the nodes and their networks; `split.rs` — splits for the Raft transport;
//!   `data_root.rs` — where the redb files live.
//! - `driver.rs` — steps simulated time, fires the schedule, feeds the checks.
//! - `sample.rs` — what the checks see of a node.
//! - The invariants, one per file: `one_leader.rs`, `committed_versions.rs`,
//!   `convergence.rs`, `quota_ledger.rs`; and a measurement, `failover.rs`.
//! - `report.rs` — [`Tier2Report`].
//!
//! # Determinism
//!
//! The schedule and every command's bytes depend on the seed alone. What the cluster does with
//! them does not: openraft draws its election timeouts from its own unseeded generator, chitchat
//! picks gossip peers at random, and redb's writes complete on blocking threads in whatever
//! order the OS runs them. See [`Tier2Report`] for which fields that moves.
//!
//! [`RaftStore`]: meridian_raft_store::RaftStore

mod cluster;
mod committed_versions;
mod convergence;
mod data_root;
mod driver;
mod failover;
mod one_leader;
mod quota_ledger;
mod report;
mod sample;
mod schedule;
mod split;
mod workload;

use std::path::PathBuf;

use anyhow::bail;

use crate::rng::Rng;

pub use report::Observed;
pub use report::Tier2Report;
pub use report::Traffic;
pub use schedule::Action;
pub use schedule::Fault;
pub use schedule::Schedule;
pub use schedule::ScheduleSummary;
pub use schedule::Timed;

/// One tier-2 run.
#[derive(Clone, Debug)]
pub struct Tier2Config {
    pub seed: u64,
    /// Nodes in the cluster: up to five voters spread over the regions, the rest learners.
    pub nodes: usize,
    pub regions: usize,
    /// Simulated length of the workload (after bootstrap), settle period included.
    pub duration_s: u64,
    /// The last part of `duration_s`: no faults and no table writes, and by its end every node
    /// must have converged.
    pub settle_s: u64,
    /// Where the nodes' data dirs go; `None`: /dev/shm when present, else the system temp dir.
    pub data_root: Option<PathBuf>,
}

impl Tier2Config {
    /// `nodes` nodes in three regions, 20 s of workload of which the last 5 s settle.
    pub fn new(seed: u64, nodes: usize) -> Self {
        Self { seed, nodes, regions: 3, duration_s: 20, settle_s: 5, data_root: None }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if !(3..=200).contains(&self.nodes) {
            bail!("nodes: {} must be between 3 and 200", self.nodes);
        }
        if self.regions == 0 || self.regions > self.nodes {
            bail!("regions: {} must be between 1 and nodes ({})", self.regions, self.nodes);
        }
        if self.settle_s < 3 {
            bail!(
                "settle_s: {} must be at least 3 (gossip needs a few seconds to see a restart)",
                self.settle_s
            );
        }
        let min = self.settle_s + schedule::WARMUP_MS.div_ceil(1000) + 1;
        if self.duration_s < min {
            bail!("duration_s: {} must be at least settle_s + 2 ({min})", self.duration_s);
        }
        Ok(())
    }
}

/// A stateless hash of `parts` (SplitMix64's finalizer, chained): the same parts give the same
/// value in any run and in any order of evaluation (per-node, per-round demand, for one).
fn mix(parts: &[u64]) -> u64 {
    parts.iter().fold(0x243F_6A88_85A3_08D3, |h, p| Rng::new(h ^ p).next_u64())
}

/// Runs one tier-2 simulation on its own current-thread runtime with a paused clock.
///
/// Blocks the calling thread (seconds of wall time for tens of nodes); must not be called from
/// inside a tokio runtime. An `Err` means the run could not be carried out (a store would not
/// open, no leader was ever elected); what the run found wrong is in the report's `violations`.
pub fn run(cfg: &Tier2Config) -> anyhow::Result<Tier2Report> {
    cfg.validate()?;
    let schedule = schedule::Schedule::generate(cfg);
    let root = data_root::DataRoot::create(cfg.data_root.as_deref(), cfg.seed)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build()?;
    let report = runtime.block_on(async {
        let mut cluster = cluster::SimCluster::new(cfg, &root);
        let report = driver::drive(cfg, &schedule, &mut cluster).await;
        cluster.shutdown().await;
        report
    });
    // Blocking writes still in flight finish before the files go.
    drop(runtime);
    drop(root);
    report
}
