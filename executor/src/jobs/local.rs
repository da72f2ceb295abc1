//! Running jobs made on the executor itself (watch folders, schedules): the same job runner as
//! queue jobs (ledger, status reports, copy, verification), with the retry policy applied here
//! instead of by the queue's visibility timeout.

use std::sync::Arc;
use std::time::Duration;

use pbs_shared::{JobMessage, JobState};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::jobs::context::JobContext;
use crate::jobs::runner::{self, Disposition};

pub struct LocalJobs {
    pub ctx: Arc<JobContext>,
    /// Job slots shared with the queue poller.
    pub slots: Arc<Semaphore>,
    /// Stops retries and new attempts.
    pub shutdown: CancellationToken,
    /// Stops running copies.
    pub abort: CancellationToken,
    /// Tracks running jobs, so shutdown waits for them.
    pub tracker: TaskTracker,
}

impl LocalJobs {
    /// Runs `task` as a tracked job task.
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Runs `job` through its attempts; returns the state it ended in, or `None` when shutdown
    /// interrupted it (the rule makes it again after the restart: same files, same job id).
    pub async fn run(&self, job: JobMessage) -> Option<JobState> {
        let mut attempt = match self.ctx.ledger().attempt_count(&job.job_id) {
            Ok(n) => n + 1,
            Err(e) => {
                warn!(job_id = %job.job_id, error = %e, "ledger unavailable; job not started");
                return None;
            }
        };
        loop {
            if self.shutdown.is_cancelled() {
                return None;
            }
            let permit = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                p = self.slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
            };
            let (disposition, ended) =
                runner::handle_local(&self.ctx, job.clone(), attempt, &self.abort).await;
            drop(permit);
            let wait = match disposition {
                Disposition::Delete => return ended,
                Disposition::Release(delay) => {
                    attempt += 1;
                    delay
                }
                // The ledger could not record the outcome: try the same attempt again shortly.
                Disposition::Keep => Duration::from_secs(5),
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
