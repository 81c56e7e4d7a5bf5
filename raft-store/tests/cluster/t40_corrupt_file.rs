//! A damaged database file is refused with an error naming it — never repaired by silently
//! dropping committed entries, never a panic.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use meridian_raft_store::MemTransport;
use meridian_raft_store::RaftConfig;
use meridian_raft_store::RaftStore;
use meridian_raft_store::StoreError;

use crate::support::node;
use crate::support::put;
use crate::support::wait_until;
use crate::support::TestDir;

const DB_FILE: &str = "raft.redb";

fn config(dir: &Path, id: &str) -> RaftConfig {
    RaftConfig::new(node(id), dir)
}

async fn open(dir: &Path, id: &str) -> Result<RaftStore, StoreError> {
    RaftStore::open(config(dir, id), MemTransport::new().endpoint(id)).await
}

/// A single-voter group that committed versions 1..=3, stopped cleanly.
async fn make_db(dir: &Path) {
    let store = open(dir, "us-1").await.unwrap();
    store.initialize(BTreeMap::from([(node("us-1").raft_id(), node("us-1"))])).await.unwrap();
    wait_until("single node leads", Duration::from_secs(5), || store.status().leader.is_some()).await;
    for v in 1..=3 {
        store.propose(put(&format!("{{\"marker\":\"MARKER-{v}\"}}"), None)).await.unwrap();
    }
    store.shutdown().await;
}

fn copy_dir(from: &Path, name: &str) -> TestDir {
    let to = TestDir::new(name);
    std::fs::copy(from.join(DB_FILE), to.path().join(DB_FILE)).unwrap();
    to
}

fn db_file(dir: &TestDir) -> PathBuf {
    dir.path().join(DB_FILE)
}

async fn expect_corrupt(dir: &TestDir, what: &str) {
    match open(dir.path(), "us-1").await {
        Err(e @ StoreError::Corrupt { .. }) => {
            let StoreError::Corrupt { path, .. } = &e else { unreachable!() };
            assert_eq!(path, &db_file(dir), "{what}: error names the file");
            assert!(e.to_string().contains(DB_FILE), "{what}: message names the file: {e}");
            eprintln!("{what}: {e}");
        }
        Err(other) => panic!("{what}: expected Corrupt, got {other}"),
        Ok(store) => {
            let version = store.applied().borrow().as_ref().map(|t| t.version);
            store.shutdown().await;
            panic!("{what}: damaged file opened (applied version {version:?})");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_are_refused_with_a_clear_error() {
    let original = TestDir::new("corrupt-original");
    make_db(original.path()).await;

    eprintln!("--- control: an intact copy opens with all three versions");
    let intact = copy_dir(original.path(), "corrupt-intact");
    let store = open(intact.path(), "us-1").await.unwrap();
    assert_eq!(store.applied().borrow().as_ref().map(|t| t.version), Some(3));
    store.shutdown().await;

    eprintln!("--- the same file opened for another node id is refused");
    match open(intact.path(), "eu-1").await {
        Err(StoreError::WrongNode { expected, found, .. }) => {
            assert_eq!((expected, found), (node("eu-1").raft_id(), node("us-1").raft_id()))
        }
        other => panic!("expected WrongNode, got {:?}", other.map(|_| ())),
    }

    eprintln!("--- a second store on an open file is refused");
    let first = open(intact.path(), "us-1").await.unwrap();
    match open(intact.path(), "us-1").await {
        Err(StoreError::AlreadyOpen { .. }) => {}
        other => panic!("expected AlreadyOpen, got {:?}", other.map(|_| ())),
    }
    first.shutdown().await;

    eprintln!("--- truncated to half its length");
    let half = copy_dir(original.path(), "corrupt-half");
    let len = std::fs::metadata(db_file(&half)).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(db_file(&half)).unwrap().set_len(len / 2).unwrap();
    expect_corrupt(&half, "truncated to half").await;

    eprintln!("--- truncated to zero bytes (must not be taken for a new, empty database)");
    let empty = copy_dir(original.path(), "corrupt-empty");
    std::fs::OpenOptions::new().write(true).open(db_file(&empty)).unwrap().set_len(0).unwrap();
    expect_corrupt(&empty, "truncated to zero").await;

    eprintln!("--- bit rot inside committed data (every copy of the newest table's marker)");
    let rot = copy_dir(original.path(), "corrupt-rot");
    let mut bytes = std::fs::read(db_file(&rot)).unwrap();
    let marker = b"MARKER-3";
    let hits: Vec<usize> =
        bytes.windows(marker.len()).enumerate().filter(|(_, w)| w == marker).map(|(i, _)| i).collect();
    assert!(!hits.is_empty(), "marker found in the file");
    for i in hits {
        bytes[i + marker.len() - 1] = b'X';
    }
    std::fs::write(db_file(&rot), &bytes).unwrap();
    expect_corrupt(&rot, "bit rot in table data").await;

    eprintln!("--- garbage over the file header");
    let header = copy_dir(original.path(), "corrupt-header");
    let mut bytes = std::fs::read(db_file(&header)).unwrap();
    bytes[..512].fill(0xA5);
    std::fs::write(db_file(&header), &bytes).unwrap();
    expect_corrupt(&header, "garbage header").await;
}
