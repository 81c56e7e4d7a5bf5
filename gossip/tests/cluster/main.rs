//! Gossip integration tests: real chitchat nodes on 127.0.0.1 UDP, port 0.
//!
//! One binary, one module per concern, named by priority. Every test is a sequence of phases,
//! each opened by a line saying what it checks, and every wait is bounded.

mod support;
mod wire;

mod t10_membership;
mod t20_failure_detection;
mod t30_restart;
mod t40_garbage_datagrams;
mod t50_cluster_isolation;
mod t60_forged_messages;
mod t90_decompression_bomb;
