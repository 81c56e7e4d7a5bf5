//! Gossip configuration: what the node crate fills in, and its validation.
//!
//! Owns the defaults and the rules that make a configuration usable. It does not parse files or
//! flags (the node crate does) and does not derive chitchat's detector settings ([`crate::detector`]).

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::GossipError;

/// How a node takes part in gossip.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Meridian node id, e.g. `us-1`. Also the id a peer's certificate must carry.
    pub node_id: String,
    /// Nodes with another cluster id never merge: their SYNs are refused and their state is never
    /// shown, so two clusters sharing a network cannot absorb each other.
    pub cluster_id: String,
    /// UDP bind address; port 0 picks a free port (see [`crate::Gossip::local_addr`]).
    pub listen: SocketAddr,
    /// Address peers use to reach our gossip port. Port 0 means "the port we bound".
    pub advertise: SocketAddr,
    /// `host:port` of other nodes' gossip ports; DNS names are re-resolved periodically.
    pub seeds: Vec<String>,
    /// Time between gossip rounds.
    pub gossip_interval: Duration,
    /// Target time for declaring a silent node dead (see the README for the trade-off).
    pub dead_after: Duration,
    /// Dead nodes, and deleted keys, are forgotten after this long.
    pub gc_grace: Duration,
}

impl GossipConfig {
    /// LAN defaults: a round every 200 ms, a silent node declared dead within about 2 s.
    pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_millis(200);
    pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(2);
    pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(60);

    /// A config with the defaults, advertising the listen address and no seeds.
    pub fn new(node_id: impl Into<String>, cluster_id: impl Into<String>, listen: SocketAddr) -> Self {
        GossipConfig {
            node_id: node_id.into(),
            cluster_id: cluster_id.into(),
            listen,
            advertise: listen,
            seeds: Vec::new(),
            gossip_interval: Self::DEFAULT_GOSSIP_INTERVAL,
            dead_after: Self::DEFAULT_DEAD_AFTER,
            gc_grace: Self::DEFAULT_GC_GRACE,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), GossipError> {
        let invalid =
            |field, reason: &str| Err(GossipError::InvalidConfig { field, reason: reason.to_owned() });
        for (field, id) in [("node_id", &self.node_id), ("cluster_id", &self.cluster_id)] {
            if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
                return invalid(field, "must be 1 to 128 bytes without control characters");
            }
        }
        if self.advertise.ip().is_unspecified() {
            return invalid("advertise", "must be an address peers can reach, not 0.0.0.0 or ::");
        }
        if let Some(seed) = self.seeds.iter().find(|s| s.is_empty() || s.len() > 256) {
            return invalid("seeds", &format!("`{seed}` is not a host:port"));
        }
        if self.gossip_interval < Duration::from_millis(10) || self.gossip_interval > Duration::from_secs(60)
        {
            return invalid("gossip_interval", "must be between 10 ms and 60 s");
        }
        // The detector needs a few heartbeats per detection window to tell silence from jitter.
        if self.dead_after < self.gossip_interval * 3 {
            return invalid("dead_after", "must be at least 3 gossip intervals");
        }
        if self.gc_grace < self.dead_after {
            return invalid("gc_grace", "must be at least dead_after");
        }
        Ok(())
    }

    /// The address we advertise, once the socket is bound.
    pub(crate) fn advertise_for(&self, bound: SocketAddr) -> SocketAddr {
        let mut advertise = self.advertise;
        if advertise.port() == 0 {
            advertise.set_port(bound.port());
        }
        advertise
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> GossipConfig {
        GossipConfig::new("us-1", "prod", "127.0.0.1:0".parse().unwrap())
    }

    fn field_of(cfg: &GossipConfig) -> Option<&'static str> {
        match cfg.validate() {
            Err(GossipError::InvalidConfig { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn defaults_are_valid() {
        base().validate().unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let mut c = base();
        c.node_id.clear();
        assert_eq!(field_of(&c), Some("node_id"));
        let mut c = base();
        c.advertise = "0.0.0.0:7946".parse().unwrap();
        assert_eq!(field_of(&c), Some("advertise"));
        let mut c = base();
        c.dead_after = Duration::from_millis(300);
        assert_eq!(field_of(&c), Some("dead_after"));
        let mut c = base();
        c.gc_grace = Duration::from_secs(1);
        assert_eq!(field_of(&c), Some("gc_grace"));
        let mut c = base();
        c.gossip_interval = Duration::ZERO;
        assert_eq!(field_of(&c), Some("gossip_interval"));
    }

    #[test]
    fn advertise_port_zero_takes_the_bound_port() {
        let bound: SocketAddr = "127.0.0.1:40123".parse().unwrap();
        assert_eq!(base().advertise_for(bound), bound);
        let mut c = base();
        c.advertise = "10.0.0.7:7946".parse().unwrap();
        assert_eq!(c.advertise_for(bound), c.advertise);
    }
}
