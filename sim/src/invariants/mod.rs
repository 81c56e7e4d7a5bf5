//! The properties checked as the simulation runs, one per file. Each is fed what it needs by the
//! run loop right after the event that could break it, and answers with a [`Violation`].

pub mod committed_version;
pub mod convergence;
pub mod dead_region;
pub mod idempotent_served;
pub mod one_leader_per_term;
pub mod quota_bound;

/// A broken invariant: which, when (simulated µs), and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub at_us: u64,
    pub detail: String,
}
