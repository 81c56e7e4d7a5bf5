//! [`SimCluster`]: the nodes of a tier-2 run — each a real [`RaftStore`] on its own redb file and
//! a real [`Gossip`] — on in-memory networks the driver can cut: `MemTransport` (with
//! [`SplitNet`] on top) for Raft, chitchat's `ChannelTransport` for gossip.
//!
//! Owns node lifecycles (start, crash, restart) and connectivity. It decides nothing about
//! when faults happen (the schedule does) and checks nothing (the invariants do).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use meridian_gossip::sim::ChannelTransport;
use meridian_gossip::Gossip;
use meridian_gossip::GossipConfig;
use meridian_gossip::Membership;
use meridian_gossip::NodeFacts;
use meridian_raft_store::quota::QuotaState;
use meridian_raft_store::AppliedTable;
use meridian_raft_store::MemTransport;
use meridian_raft_store::MeridianNode;
use meridian_raft_store::ProposeError;
use meridian_raft_store::RaftConfig;
use meridian_raft_store::RaftRole;
use meridian_raft_store::RaftStatus;
use meridian_raft_store::RaftStore;
use meridian_raft_store::RaftTimings;
use tokio::sync::watch;
use tokio::time::Instant;

use super::data_root::DataRoot;
use super::split::SplitNet;
use super::Tier2Config;

/// At most this many voters, spread over the regions; every other node is a learner.
pub const MAX_VOTERS: usize = 5;
/// Gossip seeds: the first nodes (one per region with three or more regions).
const SEEDS: usize = 3;
/// One-way delay of every Raft request, so replies do not arrive in the same instant.
const RAFT_LINK_DELAY: Duration = Duration::from_millis(2);
/// Small enough that a node down for a few seconds catches up from a snapshot, not the log.
const SNAPSHOT_EVERY: u64 = 50;
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on bootstrap steps that wait for the cluster (simulated time).
const BOOTSTRAP_WAIT: Duration = Duration::from_secs(30);
const CLUSTER_ID: &str = "meridian-sim";
const REGION_NAMES: [&str; 8] = ["us", "eu", "ap", "sa", "af", "me", "oc", "ca"];

/// Node `index`'s region: nodes are dealt to regions in turn, so the first nodes (the voters)
/// cover every region.
pub fn region_of(index: usize, regions: usize) -> String {
    let r = index % regions;
    REGION_NAMES.get(r).map_or_else(|| format!("r{r}"), |name| name.to_string())
}

/// Node `index`'s Meridian id, e.g. `eu-2`.
pub fn node_id(index: usize, regions: usize) -> String {
    format!("{}-{}", region_of(index, regions), index / regions + 1)
}

/// One simulated node; `up` is `None` while it is crashed.
pub struct SimNode {
    pub id: String,
    pub raft: MeridianNode,
    gossip_addr: SocketAddr,
    pub up: Option<Running>,
}

/// A node's running parts and the watches the driver reads every step.
pub struct Running {
    pub store: RaftStore,
    pub gossip: Gossip,
    pub status: watch::Receiver<RaftStatus>,
    pub applied: watch::Receiver<Option<AppliedTable>>,
    pub quota: watch::Receiver<Arc<QuotaState>>,
    pub membership: watch::Receiver<Arc<Membership>>,
    /// (routing version, raft role) last published in gossip.
    published: (u64, &'static str),
}

impl Running {
    pub fn applied_version(&self) -> u64 {
        self.applied.borrow().as_ref().map_or(0, |t| t.version)
    }
}

pub struct SimCluster {
    pub nodes: Vec<SimNode>,
    /// Holds one data dir per node.
    root: PathBuf,
    raft_net: MemTransport,
    split: SplitNet,
    gossip_net: ChannelTransport,
    /// Nodes cut off from everyone (mirrors `MemTransport::cut_off`, for the gossip links).
    isolated: BTreeSet<usize>,
    /// The minority side of the current split.
    minority: BTreeSet<usize>,
}

impl SimCluster {
    pub fn new(cfg: &Tier2Config, root: &DataRoot) -> SimCluster {
        let nodes = (0..cfg.nodes)
            .map(|i| {
                let id = node_id(i, cfg.regions);
                let ip = Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8);
                // The in-memory transport routes by id; the address is what gossip would show.
                let raft = MeridianNode::new(&id, region_of(i, cfg.regions), format!("{ip}:7443"));
                SimNode { id, raft, gossip_addr: SocketAddr::from((ip, 7946)), up: None }
            })
            .collect();
        let raft_net = MemTransport::new();
        raft_net.set_delay(RAFT_LINK_DELAY);
        SimCluster {
            nodes,
            root: root.path().to_path_buf(),
            raft_net,
            split: SplitNet::default(),
            gossip_net: ChannelTransport::default(),
            isolated: BTreeSet::new(),
            minority: BTreeSet::new(),
        }
    }

    /// Starts every node, bootstraps the first [`MAX_VOTERS`] as voters and adds the rest as
    /// learners through the leader.
    pub async fn bootstrap(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.start(i).await?;
        }
        let voter_count = self.nodes.len().min(MAX_VOTERS);
        let voters =
            meridian_raft_store::voter_map(self.nodes[..voter_count].iter().map(|n| n.raft.clone()))?;
        self.running(0)?.store.initialize(voters).await?;
        for i in voter_count..self.nodes.len() {
            let learner = self.nodes[i].raft.clone();
            let deadline = Instant::now() + BOOTSTRAP_WAIT;
            loop {
                let leader = self.wait_leader(deadline).await?;
                match self.running(leader)?.store.add_learner(learner.clone()).await {
                    Ok(()) => break,
                    Err(e @ (ProposeError::NotLeader { .. } | ProposeError::NoQuorum)) => {
                        if Instant::now() >= deadline {
                            bail!("adding learner {}: {e}", learner.id);
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => bail!("adding learner {}: {e}", learner.id),
                }
            }
        }
        self.wait_leader(Instant::now() + BOOTSTRAP_WAIT).await?;
        Ok(())
    }

    async fn wait_leader(&self, deadline: Instant) -> anyhow::Result<usize> {
        loop {
            if let Some(leader) = self.leader() {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                bail!("no leader elected within {BOOTSTRAP_WAIT:?} of simulated time");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn running(&self, i: usize) -> anyhow::Result<&Running> {
        self.nodes[i].up.as_ref().with_context(|| format!("node {} is not running", self.nodes[i].id))
    }

    /// Opens node `i`'s store from its data dir and starts its gossip (a fresh incarnation).
    pub async fn start(&mut self, i: usize) -> anyhow::Result<()> {
        if self.nodes[i].up.is_some() {
            return Ok(());
        }
        let node = &self.nodes[i];
        let config = RaftConfig {
            node: node.raft.clone(),
            data_dir: self.root.join(&node.id),
            timings: RaftTimings::lan(),
            snapshot_every: SNAPSHOT_EVERY,
            propose_timeout: PROPOSE_TIMEOUT,
        };
        let endpoint = self.split.endpoint(&node.id, self.raft_net.endpoint(&node.id));
        let store =
            RaftStore::open(config, endpoint).await.with_context(|| format!("opening {}", node.id))?;
        self.raft_net.register(store.clone());

        let mut gossip_cfg = GossipConfig::new(&node.id, CLUSTER_ID, node.gossip_addr);
        gossip_cfg.seeds = self
            .nodes
            .iter()
            .take(SEEDS)
            .filter(|n| n.id != node.id)
            .map(|n| n.gossip_addr.to_string())
            .collect();
        let facts = NodeFacts {
            region: node.raft.region.clone(),
            peer_addr: node.raft.peer_addr.clone(),
            routing_version: store.applied().borrow().as_ref().map_or(0, |t| t.version),
            ..NodeFacts::default()
        };
        let published = (facts.routing_version, "");
        let gossip = Gossip::start_on(gossip_cfg, facts, &self.gossip_net, node.gossip_addr)
            .await
            .with_context(|| format!("starting gossip of {}", node.id))?;
        let running = Running {
            status: store.watch_status(),
            applied: store.applied(),
            quota: store.quota(),
            membership: gossip.watch(),
            store,
            gossip,
            published,
        };
        self.nodes[i].up = Some(running);
        Ok(())
    }

    /// Stops node `i` without a goodbye: it leaves the Raft network, its gossip stops mid-round
    /// (peers find out by silence), and its Raft shuts down. Its data dir stays.
    pub async fn crash(&mut self, i: usize) {
        let Some(running) = self.nodes[i].up.take() else { return };
        self.raft_net.unregister(&self.nodes[i].id);
        drop(running.gossip);
        running.store.shutdown().await;
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].up.is_some()
    }

    /// Cuts node `i` off from every peer (Raft and gossip).
    pub async fn isolate(&mut self, i: usize) {
        self.raft_net.cut_off(&self.nodes[i].id);
        self.isolated.insert(i);
        self.relink_gossip().await;
    }

    pub async fn reconnect(&mut self, i: usize) {
        self.raft_net.reconnect(&self.nodes[i].id);
        self.isolated.remove(&i);
        self.relink_gossip().await;
    }

    /// Splits the cluster: `minority` on one side, everyone else on the other.
    pub async fn split(&mut self, minority: &[usize]) {
        self.minority = minority.iter().copied().collect();
        self.split.split(minority.iter().map(|i| self.nodes[*i].id.clone()));
        self.relink_gossip().await;
    }

    pub async fn heal_split(&mut self) {
        self.minority.clear();
        self.split.heal();
        self.relink_gossip().await;
    }

    /// Undoes every fault: restarts crashed nodes, reconnects everyone, ends the split.
    pub async fn heal_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.start(i).await?;
        }
        for i in std::mem::take(&mut self.isolated) {
            self.raft_net.reconnect(&self.nodes[i].id);
        }
        self.heal_split().await;
        Ok(())
    }

    /// Whether no fault is in effect: every node up, nobody cut off, no split.
    pub fn is_whole(&self) -> bool {
        self.nodes.iter().all(|n| n.up.is_some()) && self.isolated.is_empty() && self.minority.is_empty()
    }

    /// Whether `a` and `b` can talk (both may be down; this is about the links).
    pub fn linked(&self, a: usize, b: usize) -> bool {
        !self.isolated.contains(&a)
            && !self.isolated.contains(&b)
            && self.minority.contains(&a) == self.minority.contains(&b)
    }

    /// Whether node `i` is up, not cut off, and on the majority side.
    pub fn in_majority(&self, i: usize) -> bool {
        self.is_up(i) && !self.isolated.contains(&i) && !self.minority.contains(&i)
    }

    /// Makes chitchat's links match the current cut-offs and split.
    async fn relink_gossip(&self) {
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                let (x, y) = (self.nodes[a].gossip_addr, self.nodes[b].gossip_addr);
                if self.linked(a, b) {
                    self.gossip_net.add_link(x, y).await;
                } else {
                    self.gossip_net.remove_link(x, y).await;
                }
            }
        }
    }

    /// The running node that says it leads in the highest term (ties to the lowest index; the
    /// one-leader-per-term invariant reports a tie).
    pub fn leader(&self) -> Option<usize> {
        self.leader_among(|_| true)
    }

    /// Like [`Self::leader`], among the nodes `include` accepts.
    pub fn leader_among(&self, include: impl Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(running) = &node.up else { continue };
            let status = running.status.borrow();
            if status.role == RaftRole::Leader
                && include(i)
                && best.is_none_or(|(term, _)| status.term > term)
            {
                best = Some((status.term, i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// Publishes each running node's applied routing version and Raft role in gossip, where
    /// they changed — as the node does, so gossip views can be checked against Raft.
    pub async fn publish_facts(&mut self) {
        for node in &mut self.nodes {
            let Some(running) = &mut node.up else { continue };
            let role = match running.status.borrow().role {
                RaftRole::Shutdown => "",
                role => role.as_str(),
            };
            let now = (running.applied_version(), role);
            if now != running.published {
                running.published = now;
                running
                    .gossip
                    .update(|f| {
                        f.routing_version = now.0;
                        f.raft_role = now.1.to_string();
                    })
                    .await;
            }
        }
    }

    /// Stops every node.
    pub async fn shutdown(&mut self) {
        for i in 0..self.nodes.len() {
            self.crash(i).await;
        }
    }
}
