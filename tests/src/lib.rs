//! Helpers for the end-to-end tests: the deployed stack on the local emulator, real AWS SDK
//! clients, a real executor process with its own pool, folders and ledger.
//!
//! The stack is deployed once by `./dev test` (from `template.yaml`), which passes its outputs in
//! `PBS_E2E_OUTPUTS`. Each test makes its own pool queue, template, key prefix and executor, so
//! tests run in parallel without seeing each other's jobs.

use std::future::Future;
use std::path::{Path, PathBuf};

pub mod browser;
mod events;
mod executor;
mod iam;
pub mod link;
pub mod package;
pub mod receiver;
mod scenario;
pub mod servers;
pub mod site;
mod stack;

pub use events::*;
pub use executor::*;
pub use iam::*;
pub use scenario::*;
pub use stack::*;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

/// The job ids of a `GET /api/v1/jobs` answer, in order.
pub fn job_ids(answer: &serde_json::Value) -> Vec<&str> {
    answer["jobs"]
        .as_array()
        .map(|jobs| jobs.iter().filter_map(|j| j["job_id"].as_str()).collect())
        .unwrap_or_default()
}

/// Polls `probe` every 200 ms until it yields `Some`, failing after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "timed out after {timeout:?} waiting for {what}{}",
                last_err
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a copy cannot succeed by accident and a test
/// can recompute what it uploaded.
pub fn body(len: usize, seed: u32) -> Vec<u8> {
    let mut x = 0x2545_F491u32 ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Every file below `dir` (recursively); empty if it cannot be read.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A name unique to this test run: lowercase, safe for pools, templates, buckets and keys.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 100_000_000;
    format!("{prefix}-{}-{t}-{n}", std::process::id() % 100_000)
}

/// The repository root (for templates and scripts the tests deploy or run).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}
