//! Shared test fixtures: temp dirs, an in-memory cluster, bounded waits.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use meridian_raft_store::AppliedTable;
use meridian_raft_store::Command;
use meridian_raft_store::MemTransport;
use meridian_raft_store::MeridianNode;
use meridian_raft_store::RaftConfig;
use meridian_raft_store::RaftRole;
use meridian_raft_store::RaftStore;
use meridian_raft_store::RaftTimings;
use tokio::time::Instant;

/// A directory under the system temp dir, removed on drop.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("meridian-raft-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn node(id: &str) -> MeridianNode {
    let region = id.split('-').next().unwrap_or(id);
    MeridianNode::new(id, region, format!("mem://{id}"))
}

pub fn put(json: &str, expected_version: Option<u64>) -> Command {
    Command::PutTable {
        table_json: json.to_string(),
        expected_version,
        cause: "test".into(),
        by_node: "test".into(),
        at_ms: 1_700_000_000_000,
    }
}

/// Polls `ready` every 10 ms until it holds; panics after `within`. Returns the time it took.
pub async fn wait_until(what: &str, within: Duration, mut ready: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if ready() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `store` has applied routing `version`.
pub async fn wait_version(store: &RaftStore, version: u64, within: Duration) -> AppliedTable {
    let mut applied = store.applied();
    let seen =
        tokio::time::timeout(within, applied.wait_for(|t| t.as_ref().is_some_and(|t| t.version >= version)))
            .await
            .unwrap_or_else(|_| {
                panic!("{} did not apply version {version} within {within:?}", store.node().id)
            })
            .expect("store stopped")
            .clone();
    let table = seen.unwrap();
    assert_eq!(table.version, version, "{} skipped past version {version}", store.node().id);
    table
}

/// Nodes with their own data dirs, on one in-memory network.
pub struct Cluster {
    pub net: MemTransport,
    pub stores: BTreeMap<String, RaftStore>,
    dirs: BTreeMap<String, TestDir>,
    pub snapshot_every: u64,
    pub propose_timeout: Duration,
}

impl Cluster {
    pub fn new(name: &str, ids: &[&str]) -> Self {
        Self {
            net: MemTransport::new(),
            stores: BTreeMap::new(),
            dirs: ids.iter().map(|id| (id.to_string(), TestDir::new(&format!("{name}-{id}")))).collect(),
            snapshot_every: RaftConfig::DEFAULT_SNAPSHOT_EVERY,
            propose_timeout: Duration::from_secs(2),
        }
    }

    pub fn config(&self, id: &str) -> RaftConfig {
        RaftConfig {
            node: node(id),
            data_dir: self.dirs[id].path().to_path_buf(),
            timings: RaftTimings::lan(),
            snapshot_every: self.snapshot_every,
            propose_timeout: self.propose_timeout,
        }
    }

    /// Opens node `id` from its data dir and makes it reachable.
    pub async fn open(&mut self, id: &str) -> RaftStore {
        let store = RaftStore::open(self.config(id), self.net.endpoint(id)).await.unwrap();
        self.net.register(store.clone());
        self.stores.insert(id.to_string(), store.clone());
        store
    }

    /// Opens every node and bootstraps them all as voters; returns the first leader.
    pub async fn start(&mut self) -> String {
        let ids: Vec<String> = self.dirs.keys().cloned().collect();
        for id in &ids {
            self.open(id).await;
        }
        let voters = meridian_raft_store::voter_map(ids.iter().map(|id| node(id))).unwrap();
        self.store(&ids[0]).initialize(voters).await.unwrap();
        let all: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.wait_leader(&all, Duration::from_secs(5)).await
    }

    pub fn store(&self, id: &str) -> &RaftStore {
        &self.stores[id]
    }

    /// Waits until the nodes `among` agree on a leader that is one of them and says it leads.
    pub async fn wait_leader(&self, among: &[&str], within: Duration) -> String {
        let mut leader = String::new();
        wait_until("an agreed leader", within, || {
            let statuses: Vec<_> = among.iter().map(|id| self.store(id).status()).collect();
            let Some(first) = statuses[0].leader_node.clone() else { return false };
            let agreed = statuses.iter().all(|s| s.leader_node.as_ref() == Some(&first));
            let leads =
                among.contains(&first.id.as_str()) && self.store(&first.id).status().role == RaftRole::Leader;
            leader = first.id;
            agreed && leads
        })
        .await;
        leader
    }

    /// Takes node `id` off the network and stops it (its data dir stays).
    pub async fn stop(&mut self, id: &str) {
        self.net.unregister(id);
        if let Some(store) = self.stores.remove(id) {
            store.shutdown().await;
        }
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<String> = self.stores.keys().cloned().collect();
        for id in ids {
            self.stop(&id).await;
        }
    }
}
