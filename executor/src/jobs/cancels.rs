//! Cancel requests from the cloud (through the control queue) and the running jobs they stop.
//!
//! A running job registers its cancellation token under its id; a request cancels it and is
//! remembered for an hour, so a job that reaches this executor after its cancel (it was queued
//! when the operator cancelled it) is not started.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pbs_shared::JobId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long a cancel request is remembered.
const REMEMBER: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub struct Cancels {
    inner: Mutex<Inner>,
    /// Woken when the first job starts, so the control queue is polled only while jobs run.
    started: Notify,
}

#[derive(Default)]
struct Inner {
    running: HashMap<JobId, CancellationToken>,
    /// Job id → who asked, and when the request arrived.
    requested: HashMap<JobId, (String, Instant)>,
}

/// Unregisters a running job when dropped.
pub struct Registration<'a> {
    cancels: &'a Cancels,
    ids: Vec<JobId>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut inner = self.cancels.lock();
        for id in &self.ids {
            inner.running.remove(id);
        }
    }
}

impl Cancels {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers jobs running under `token` (one job, or a batch sharing one copy).
    pub fn register<'a>(
        &'a self,
        ids: impl IntoIterator<Item = &'a JobId>,
        token: &CancellationToken,
    ) -> Registration<'a> {
        let ids: Vec<JobId> = ids.into_iter().cloned().collect();
        {
            let mut inner = self.lock();
            for id in &ids {
                inner.running.insert(id.clone(), token.clone());
            }
        }
        self.started.notify_waiters();
        Registration { cancels: self, ids }
    }

    /// Records a request to cancel `job` and stops it if it runs here; returns whether it did.
    pub fn cancel(&self, job: &JobId, by: &str) -> bool {
        let mut inner = self.lock();
        inner.requested.retain(|_, (_, at)| at.elapsed() < REMEMBER);
        inner
            .requested
            .insert(job.clone(), (by.to_owned(), Instant::now()));
        match inner.running.get(job) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Who asked to cancel `job`, if anyone did.
    pub fn requested(&self, job: &JobId) -> Option<String> {
        self.lock().requested.get(job).map(|(by, _)| by.clone())
    }

    pub fn running(&self) -> usize {
        self.lock().running.len()
    }

    /// Returns when at least one job runs.
    pub async fn wait_for_running(&self) {
        loop {
            let notified = self.started.notified();
            if self.running() > 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_stops_the_running_job_and_is_remembered_for_a_later_delivery() {
        let cancels = Cancels::default();
        let a = JobId::parse("ev-a").unwrap();
        let b = JobId::parse("ev-b").unwrap();
        let token = CancellationToken::new();
        {
            let _running = cancels.register([&a], &token);
            assert_eq!(cancels.running(), 1);
            assert!(cancels.cancel(&a, "ana"));
            assert!(token.is_cancelled());
        }
        assert_eq!(cancels.running(), 0, "unregistered when the job ends");
        // Not running here (yet): nothing is stopped, but the request stays.
        assert!(!cancels.cancel(&b, "bo"));
        assert_eq!(cancels.requested(&b).as_deref(), Some("bo"));
        assert_eq!(cancels.requested(&JobId::parse("ev-c").unwrap()), None);
    }
}
