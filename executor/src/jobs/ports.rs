//! What the job pipeline needs from outside it, as small traits: where a running job's progress
//! goes, and where a finished attempt's log and delivery report go. `cloud` implements them
//! (the StatusQueue, the stack's bucket); a standalone executor has neither, and tests may bring
//! their own.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use pbs_shared::report::ReportRow;
use pbs_shared::{JobId, JobMessage};
use tokio_util::sync::CancellationToken;

/// A future a trait object can return.
pub type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a running job's progress goes.
pub trait ProgressWatch: Send + Sync {
    /// Follows `attempt` of `job` through its rclone `log` until `stop`, reporting as it goes.
    fn watch(
        &self,
        job: JobMessage,
        attempt: u32,
        log: PathBuf,
        stop: CancellationToken,
    ) -> Boxed<'static, ()>;
}

/// Where a finished attempt's log and delivery report go. Each returns the key it stored the
/// artifact under, or `None` when it could not (an artifact never fails its job).
pub trait ArtifactStore: Send + Sync {
    /// Uploads `log` as `job`'s attempt, with `secrets` redacted.
    fn upload_log<'a>(
        &'a self,
        job: &'a JobId,
        attempt: u32,
        log: &'a Path,
        secrets: &'a [String],
    ) -> Boxed<'a, Option<String>>;

    /// Uploads the delivery report of `job`'s attempt.
    fn upload_report<'a>(
        &'a self,
        job: &'a JobId,
        attempt: u32,
        rows: &'a [ReportRow],
    ) -> Boxed<'a, Option<String>>;
}
