//! The request path: match, choose, send, stream back.

pub mod body;
pub mod fields;
pub mod h1;
pub mod h1_server;
pub mod handler;
pub mod headers;
pub mod inflight;
pub mod pool;
pub mod rng;
pub mod timer;
