//! Integration tests of the Raft store: real redb files under a temp dir, nodes talking over
//! `MemTransport`. One test binary (one link of openraft) with a module per area, named by
//! priority as in openraft's own tests.

// Test helpers outside `#[test]` fns: a failed unwrap here is a failed test, as inside them.
#![allow(clippy::unwrap_used)]

mod support;

mod t10_basic;
mod t15_membership;
mod t20_failover;
mod t30_restart;
mod t40_corrupt_file;
mod t50_no_quorum;
mod t60_malformed_rpc;
mod t70_snapshot;
mod t80_storage_suite;
mod t90_quota_ledger;
