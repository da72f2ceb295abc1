//! One lock per destination file: two jobs writing the same path (the same key written twice in
//! quick succession) run one after the other, never interleaved, so the later write cannot be
//! overtaken by an earlier one finishing last.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Above this many remembered paths, unused locks are dropped.
const PRUNE_ABOVE: usize = 1024;

/// The hold on one destination path, released when dropped.
pub type PathLock = OwnedMutexGuard<()>;

#[derive(Default)]
pub struct DestLocks {
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

impl DestLocks {
    /// Waits for and holds the lock of `path` on `endpoint` until the guard is dropped.
    pub async fn lock(&self, endpoint: &str, path: &str) -> PathLock {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            if locks.len() > PRUNE_ABOVE {
                locks.retain(|_, l| Arc::strong_count(l) > 1);
            }
            locks
                .entry(format!("{endpoint}\0{path}"))
                .or_default()
                .clone()
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_same_path_is_serialised_other_paths_are_not() {
        let locks = Arc::new(DestLocks::default());
        let held = locks.lock("disk", "a.mov").await;
        let other =
            tokio::time::timeout(Duration::from_millis(100), locks.lock("disk", "b.mov")).await;
        assert!(other.is_ok(), "another path must not wait");
        let same =
            tokio::time::timeout(Duration::from_millis(100), locks.lock("disk", "a.mov")).await;
        assert!(same.is_err(), "the same path must wait");
        let elsewhere =
            tokio::time::timeout(Duration::from_millis(100), locks.lock("share", "a.mov")).await;
        assert!(
            elsewhere.is_ok(),
            "the same path on another endpoint must not wait"
        );
        drop(held);
        let again =
            tokio::time::timeout(Duration::from_millis(100), locks.lock("disk", "a.mov")).await;
        assert!(again.is_ok());
    }
}
