//! Running the real gossip layer on a transport other than UDP, for the simulator.
//!
//! Owns only the entry point: [`Gossip::start_on`] takes the same path as [`Gossip::start`]
//! (validation, key schema, chitchat, refresher) with the socket opened by the caller's
//! transport — typically chitchat's in-memory [`ChannelTransport`], whose links the simulator
//! cuts and restores to partition the cluster.

use std::net::SocketAddr;

pub use chitchat::transport::ChannelTransport;
pub use chitchat::transport::Transport;

use crate::config::GossipConfig;
use crate::error::GossipError;
use crate::facts::NodeFacts;
use crate::gossip::Gossip;

impl Gossip {
    /// Starts gossip with chitchat's socket opened on `transport` at `listen`.
    ///
    /// `listen` must be the exact address the transport will open (no port 0): it is also the
    /// address we advertise unless `cfg.advertise` names another one. `cfg.listen` is ignored.
    pub async fn start_on(
        cfg: GossipConfig,
        facts: NodeFacts,
        transport: &dyn Transport,
        listen: SocketAddr,
    ) -> Result<Gossip, GossipError> {
        let local = Self::checked_local(&cfg, facts)?;
        Self::start_with(cfg, local, transport, listen).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn two_nodes_meet_on_the_channel_transport() {
        let net = ChannelTransport::default();
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let mut a_cfg = GossipConfig::new("us-1", "c", addr(1));
        a_cfg.seeds = vec![addr(2).to_string()];
        let b_cfg = GossipConfig::new("eu-1", "c", addr(2));
        let a = Gossip::start_on(a_cfg, NodeFacts::default(), &net, addr(1)).await.unwrap();
        let b = Gossip::start_on(b_cfg, NodeFacts::default(), &net, addr(2)).await.unwrap();
        let mut view = b.watch();
        tokio::time::timeout(
            Duration::from_secs(5),
            view.wait_for(|m| m.get("us-1").is_some_and(|m| m.live)),
        )
        .await
        .expect("eu-1 sees us-1 within 5 s")
        .unwrap();
        assert_eq!(a.local_addr(), addr(1));
    }
}
