//! The control queue: cancel requests for this executor's running jobs, the cloud's answers about
//! the pool's rule lease and retries of rule jobs, polled outbound (long poll) while jobs run and
//! after each heartbeat until its answer comes; an idle executor without cloud rules spends
//! nothing on it.

use std::sync::Arc;

use pbs_shared::ExecutorId;
use pbs_shared::message::{ControlMessage, RetryRequest, control_queue_name};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cloud::lease::PoolLease;
use crate::jobs::cancels::Cancels;
use crate::worker::{Next, Worker};

/// The control queue URL of `executor` whose pool's work queue is at `work_queue_url`: the same
/// account and endpoint, named `<work queue name>-ctl-<executor id>`.
pub fn derived_url(work_queue_url: &str, executor: &ExecutorId) -> Option<String> {
    let (base, name) = work_queue_url.trim_end_matches('/').rsplit_once('/')?;
    (!name.is_empty()).then(|| format!("{base}/{}", control_queue_name(name, executor)))
}

/// What runs a failed job of a cloud rule again (the rules implement it: they know the rule and
/// its after-action).
pub trait RuleRetries: Send + Sync {
    /// Starts the retry (in the background).
    fn retry(&self, request: RetryRequest);
}

/// Polls the executor's control queue and applies what arrives (a [`Worker`]).
pub struct ControlFollower {
    pub sqs: aws_sdk_sqs::Client,
    pub url: String,
    pub cancels: Arc<Cancels>,
    /// The pool's rule lease, when the executor runs the pool's cloud rules (the queue is then
    /// polled all the time).
    pub lease: Option<Arc<PoolLease>>,
    /// Retries of cloud rules' jobs (`None`: no rules feed).
    pub retries: Option<Arc<dyn RuleRetries>>,
    /// A failure to read the queue was logged (it is logged once until a read succeeds).
    warned: bool,
}

impl ControlFollower {
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        url: String,
        cancels: Arc<Cancels>,
        lease: Option<Arc<PoolLease>>,
        retries: Option<Arc<dyn RuleRetries>>,
    ) -> Self {
        Self {
            sqs,
            url,
            cancels,
            lease,
            retries,
            warned: false,
        }
    }

    /// Applies one control message and deletes it.
    async fn apply(&self, m: &aws_sdk_sqs::types::Message) {
        match ControlMessage::parse(m.body().unwrap_or_default()) {
            Ok(ControlMessage::Cancel(c)) => {
                let stopped = self.cancels.cancel(&c.job_id, &c.requested_by);
                info!(job_id = %c.job_id, by = %c.requested_by, running_here = stopped, "cancel requested");
            }
            Ok(ControlMessage::Lease(view)) => match &self.lease {
                Some(lease) if view.pool == *lease.pool() => lease.apply(&view),
                Some(lease) => {
                    warn!(pool = %view.pool, own = %lease.pool(), "a lease answer for another pool dropped")
                }
                None => debug!("a lease answer dropped: this executor runs no cloud rules"),
            },
            Ok(ControlMessage::Retry(r)) => match &self.retries {
                Some(retries) => {
                    info!(job_id = %r.job_id, retry_of = %r.retry_of, by = %r.requested_by, "retry requested");
                    retries.retry(r);
                }
                None => {
                    warn!(retry_of = %r.retry_of, "a retry dropped: this executor runs no cloud rules")
                }
            },
            Err(e) => warn!(error = %e, "unreadable control message dropped"),
        }
        if let Some(receipt) = m.receipt_handle()
            && let Err(e) = self
                .sqs
                .delete_message()
                .queue_url(&self.url)
                .receipt_handle(receipt)
                .send()
                .await
        {
            warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "control message not deleted; it may be applied twice");
        }
    }
}

impl Worker for ControlFollower {
    fn name(&self) -> &'static str {
        "control queue"
    }

    async fn step(&mut self, stop: &CancellationToken) -> Next {
        // Polled only while jobs run, or while the answer to a heartbeat may come: an idle
        // executor reads it once a heartbeat (a rule job's retry asked of it then waits at most
        // that long), and one without cloud rules not at all.
        let awaiting = self.lease.as_ref().is_some_and(|l| l.awaiting_answer());
        if !awaiting {
            let heartbeat = async {
                match &self.lease {
                    Some(lease) => lease.heartbeat_sent().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return Next::Done,
                _ = self.cancels.wait_for_running() => {}
                _ = heartbeat => {}
            }
        }
        let receive = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(20)
            .send();
        let received = tokio::select! {
            _ = stop.cancelled() => return Next::Done,
            r = receive => r,
        };
        match received {
            Ok(out) => {
                self.warned = false;
                for m in out.messages() {
                    self.apply(m).await;
                }
                Next::Busy
            }
            Err(e) => {
                // Typically: the queue is not made yet (the cloud makes it on the first heartbeat).
                if !self.warned {
                    warn!(queue = %self.url, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "cannot read the control queue; cancel requests wait");
                    self.warned = true;
                }
                Next::Failed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_queue_sits_beside_the_work_queue() {
        let id = ExecutorId::parse("bay-1").unwrap();
        assert_eq!(
            derived_url(
                "https://sqs.eu-west-1.amazonaws.com/123456789012/pbs-pool-default",
                &id
            )
            .as_deref(),
            Some("https://sqs.eu-west-1.amazonaws.com/123456789012/pbs-pool-default-ctl-bay-1")
        );
        assert_eq!(
            derived_url("http://127.0.0.1:4566/000000000000/q/", &id).as_deref(),
            Some("http://127.0.0.1:4566/000000000000/q-ctl-bay-1")
        );
        assert_eq!(derived_url("no-slash", &id), None);
    }
}
