//! The IO-free core: decisions as plain functions of data and `now`.
//!
//! Nothing in here opens a socket, spawns a task or reads a clock. The node's async shell and the
//! simulator both drive these same functions, which is what makes a simulated run mean something.

pub mod balancer;
pub mod failover;
pub mod health;
pub mod limiter;
pub mod matcher;
pub mod retry;
pub mod table;
