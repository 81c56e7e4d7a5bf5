//! [`DataRoot`]: the directory holding every simulated node's redb file, removed when the run
//! ends (also when it fails).

use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use anyhow::Context;

pub struct DataRoot {
    path: PathBuf,
}

impl DataRoot {
    /// A fresh directory under `parent`, or under /dev/shm when it exists (redb fsyncs every
    /// commit; on tmpfs that costs nothing), else the system temp dir.
    pub fn create(parent: Option<&Path>, seed: u64) -> anyhow::Result<DataRoot> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let shm = Path::new("/dev/shm");
        let parent = match parent {
            Some(p) => p.to_path_buf(),
            None if shm.is_dir() => shm.to_path_buf(),
            None => std::env::temp_dir(),
        };
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!("meridian-sim-t2-{seed}-{}-{n}", std::process::id()));
        // A leftover from a killed run of the same pid and counter would only confuse the nodes.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(DataRoot { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DataRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
