//! Meridian's gossip plane: a thin, typed layer over chitchat for membership, liveness and
//! advisory per-node facts.
//!
//! Gossip is advisory and unauthenticated. Nothing read here decides anything security
//! relevant: peer connections are mutual TLS, and a certificate's node id must match the member
//! gossip advertised. Every value read from the network is parsed defensively.
//!
//! # Layout
//!
//! - `config`: [`GossipConfig`], defaults and validation.
//! - `facts`: [`NodeFacts`] and [`ServiceHealth`], what a node says about itself.
//! - `keys`: the key schema, one chitchat key per fact, with limits and parsers.
//! - `membership`: [`Membership`] and [`Member`], the merged per-node view.
//! - `gossip`: the [`Gossip`] handle (start, update, watch, leave).
//! - `publish`: our own keys, kept exact in chitchat's state.
//! - `refresh`: the background task that keeps the membership watch current.
//! - `detector`: chitchat failure-detector tuning derived from `dead_after`.
//! - `transport`: hands chitchat a UDP socket bound before it starts.
//! - `generation`: per-process incarnation ids.
//! - `error`: [`GossipError`].

pub mod config;
mod detector;
pub mod error;
pub mod facts;
mod generation;
mod gossip;
pub mod keys;
pub mod membership;
mod publish;
mod refresh;
pub mod sim;
mod transport;

pub use config::GossipConfig;
pub use error::GossipError;
pub use facts::{NodeFacts, ServiceHealth};
pub use gossip::Gossip;
pub use keys::SchemaError;
pub use membership::{Member, Membership};
