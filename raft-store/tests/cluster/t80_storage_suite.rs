//! openraft's own storage test suite against the redb log store and state machine.

use meridian_raft_store::LogStore;
use meridian_raft_store::StateMachineStore;
use meridian_raft_store::TypeConfig;
use openraft::testing::StoreBuilder;
use openraft::testing::Suite;
use openraft::StorageError;

use crate::support::node;
use crate::support::TestDir;

struct RedbStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TestDir> for RedbStoreBuilder {
    async fn build(&self) -> Result<(TestDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = TestDir::new("suite");
        // The suite's node ids are small integers; the file's owner is whichever node opens it.
        let (log, sm) = meridian_raft_store::open_storage(dir.path(), &node("suite")).await.unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    eprintln!("--- openraft::testing::Suite::test_all on the redb storage");
    let start = tokio::time::Instant::now();
    Suite::test_all(RedbStoreBuilder).unwrap();
    eprintln!("suite passed in {:?}", start.elapsed());
}
