//! The work-queue poller: long-polls the pool's queue (outbound only), runs up to `concurrency`
//! jobs (or batches of jobs copied together, see [`batch`]) at once, keeps received messages
//! invisible with a heartbeat, and settles each message only after its job's outcome is recorded.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use pbs_shared::JobMessage;
use pbs_shared::message::EndpointTestRequest;
use pbs_shared::pool_lease::ScheduleRun;
use pbs_shared::retry::Backoff;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::jobs::batch;
use crate::jobs::context::JobContext;
use crate::jobs::ports::Boxed;
use crate::jobs::runner::{self, Disposition, Received};
use crate::metrics::METRICS;

/// Longest a poll keeps gathering messages for one batch before the batch starts.
const GATHER_BUDGET: Duration = Duration::from_secs(2);

pub struct Poller {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub wait_seconds: i32,
    pub visibility_timeout: i32,
    /// Job slots, shared with jobs made by watch and schedule rules.
    pub slots: Arc<Semaphore>,
    /// Files one copy of jobs received together may hold; 1 runs every job on its own.
    pub batch_max_files: usize,
    pub ctx: Arc<JobContext>,
    /// Makes the jobs of the runs of the pool's cloud schedules (`None`: no rules feed).
    pub schedules: Option<Arc<dyn ScheduleRuns>>,
}

/// What makes the job of one run of a cloud schedule rule (the rules implement it: they know the
/// rule, list its folder and build the job).
pub trait ScheduleRuns: Send + Sync {
    /// The job of `run` (`Ok(None)`: the rule's folder has nothing to copy), or why this executor
    /// cannot make it (the rule is unknown here or its source cannot be listed).
    fn job_for<'a>(&'a self, run: &'a ScheduleRun)
    -> Boxed<'a, Result<Option<JobMessage>, String>>;
}

/// A received message whose visibility is being extended until it is settled.
struct Incoming {
    received: Received,
    receipt: String,
    job: Option<JobMessage>,
    /// The batch the job may join (`None`: it runs on its own).
    key: Option<batch::BatchKey>,
    beat: CancellationToken,
}

impl Poller {
    /// Polls until `shutdown`; running jobs are tracked by `tracker` and stopped by `abort`.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        abort: CancellationToken,
        tracker: TaskTracker,
    ) {
        let this = Arc::new(self);
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        info!(queue = %this.queue_url, batch_max_files = this.batch_max_files, "polling the pool's work queue");
        loop {
            let Some(permits) = this.free_slots(&shutdown).await else {
                break;
            };
            let wanted = permits.len();
            let incoming = match this.receive_or_stop(wanted, &shutdown).await {
                Some(Ok(m)) => {
                    backoff.succeeded();
                    m
                }
                Some(Err(e)) => {
                    let wait = backoff.failed();
                    warn!(error = %e, retry_in_s = wait.as_secs(), "receiving from the work queue failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
                None => break,
            };
            let incoming = this.gather(incoming, wanted, &shutdown).await;
            let started = this
                .dispatch(incoming, permits, (&shutdown, &abort, &tracker))
                .await;
            if !started {
                break;
            }
        }
        info!("stopped polling");
    }

    /// Waits for a free job slot and takes the others free now (up to one receive's 10).
    async fn free_slots(&self, shutdown: &CancellationToken) -> Option<Vec<OwnedSemaphorePermit>> {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return None,
            p = self.slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        let mut permits = vec![first];
        while permits.len() < 10 {
            match self.slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        Some(permits)
    }

    /// One long poll for `wanted` messages; `None` when shutdown came first.
    async fn receive_or_stop(
        &self,
        wanted: usize,
        shutdown: &CancellationToken,
    ) -> Option<Result<Vec<Incoming>, String>> {
        let receive = self.receive(wanted, self.wait_seconds);
        tokio::pin!(receive);
        tokio::select! {
            _ = shutdown.cancelled() => {
                // The long poll is still open at SQS, and a message it takes now would stay
                // hidden for the visibility timeout: wait for it (about wait_seconds) and hand
                // back whatever it brings at once. Bounded, for a cloud that does not answer.
                let bound = Duration::from_secs(self.wait_seconds.max(0) as u64 + 5);
                if let Ok(Ok(late)) = tokio::time::timeout(bound, receive).await {
                    self.release_all(late).await;
                }
                None
            }
            out = &mut receive => Some(out),
        }
    }

    /// Makes messages not started visible again at once, for another executor.
    async fn release_all(&self, messages: impl IntoIterator<Item = Incoming>) {
        for m in messages {
            m.beat.cancel();
            self.settle(&m.receipt, Disposition::Release(Duration::ZERO))
                .await;
        }
    }

    /// After a full receive of jobs that can be copied together, takes what else is waiting, up
    /// to a batch, so that a backlog drains with few rclone runs.
    async fn gather(
        &self,
        mut incoming: Vec<Incoming>,
        wanted: usize,
        shutdown: &CancellationToken,
    ) -> Vec<Incoming> {
        let first_full = incoming.len() >= wanted.min(10);
        let gathering = std::time::Instant::now();
        let mut files: usize = incoming.iter().map(Incoming::files).sum();
        while self.batch_max_files > 1
            && first_full
            && files < self.batch_max_files
            && incoming.iter().all(|m| m.key.is_some())
            && !shutdown.is_cancelled()
        {
            // Four receives at once: a deep queue answers each one slowly.
            let (a, b, c, d) = tokio::join!(
                self.receive(10, 0),
                self.receive(10, 0),
                self.receive(10, 0),
                self.receive(10, 0)
            );
            // A short poll may answer with fewer messages than are waiting (SQS samples its
            // servers): gather until a round brings nothing or the gathering has taken long
            // enough that the jobs already received should start.
            let mut got = 0;
            for more in [a, b, c, d] {
                match more {
                    Ok(more) => {
                        got += more.len();
                        files += more.iter().map(Incoming::files).sum::<usize>();
                        incoming.extend(more);
                    }
                    Err(e) => warn!(error = %e, "receiving more of a batch failed"),
                }
            }
            if got == 0 || gathering.elapsed() >= GATHER_BUDGET {
                break;
            }
        }
        debug!(count = incoming.len(), "received");
        incoming
    }

    /// Plans the received messages into units (batches, or jobs alone) and starts each in a job
    /// slot; false when shutdown came while waiting for a slot (the rest were released).
    async fn dispatch(
        self: &Arc<Self>,
        incoming: Vec<Incoming>,
        mut permits: Vec<OwnedSemaphorePermit>,
        (shutdown, abort, tracker): (&CancellationToken, &CancellationToken, &TaskTracker),
    ) -> bool {
        let entries = incoming
            .into_iter()
            .map(|mut m| {
                let key = m.key.take();
                let paths = m
                    .job
                    .iter()
                    .flat_map(|j| j.files.iter().map(|f| f.dest_path.to_string()))
                    .collect();
                (m, key, paths)
            })
            .collect();
        let mut units = batch::plan(entries, self.batch_max_files).into_iter();
        while let Some(unit) = units.next() {
            let permit = match permits.pop() {
                Some(p) => p,
                None => tokio::select! {
                    p = self.slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
                    _ = shutdown.cancelled() => {
                        // Not started: back to the queue for another executor at once.
                        self.release_all(std::iter::once(unit).chain(units).flatten()).await;
                        return false;
                    }
                },
            };
            let (this, abort) = (self.clone(), abort.clone());
            tracker.spawn(async move {
                this.process(unit, abort).await;
                drop(permit);
            });
        }
        true
    }

    /// Receives up to `max` messages, starting a visibility heartbeat for each.
    async fn receive(&self, max: usize, wait_seconds: i32) -> Result<Vec<Incoming>, String> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait_seconds)
            .visibility_timeout(self.visibility_timeout)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await;
        let messages = match out {
            Ok(out) => {
                METRICS.poll(true);
                out.messages.unwrap_or_default()
            }
            Err(e) => {
                METRICS.poll(false);
                return Err(aws_sdk_sqs::error::DisplayErrorContext(e).to_string());
            }
        };
        Ok(messages
            .into_iter()
            .filter_map(|message| {
                let (Some(body), Some(receipt)) = (message.body, message.receipt_handle) else {
                    return None;
                };
                let receive_count = message
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                let beat = CancellationToken::new();
                tokio::spawn(heartbeat(
                    self.sqs.clone(),
                    self.queue_url.clone(),
                    receipt.clone(),
                    self.visibility_timeout,
                    beat.clone(),
                ));
                let job = JobMessage::parse(&body).ok();
                Some(Incoming {
                    key: job.as_ref().and_then(batch::key),
                    job,
                    received: Received {
                        body,
                        receive_count,
                    },
                    receipt,
                    beat,
                })
            })
            .collect())
    }

    /// Runs one unit (a job, or jobs copied together) and settles its messages.
    async fn process(&self, unit: Vec<Incoming>, abort: CancellationToken) {
        // A job of several files (a coalesced event storm) goes the batch's way too: one copy,
        // each file checked against newer writes of its path.
        let alone = |m: &Incoming| {
            m.job
                .as_ref()
                .is_none_or(|j| j.files.len() < 2 || batch::key(j).is_none())
        };
        let test = |m: &Incoming| m.not_a_job(EndpointTestRequest::recognise);
        let run = |m: &Incoming| m.not_a_job(ScheduleRun::recognise);
        let dispositions = match unit.as_slice() {
            // An admin's endpoint test rides the work queue: the stack's functions alone send there.
            [one] if let Some(request) = test(one) => {
                vec![super::endpoint_test::run(&self.ctx, &self.sqs, &request).await]
            }
            // So does each run of a cloud schedule: one executor of the pool takes it.
            [one] if let Some(run) = run(one) => vec![self.scheduled(one, &run, &abort).await],
            [one] if alone(one) => vec![runner::handle(&self.ctx, &one.received, &abort).await],
            many => {
                let batch: Vec<(Received, JobMessage)> = many
                    .iter()
                    .map(|m| {
                        let job = m.job.clone().expect("only parsed jobs are batched");
                        (m.received.clone(), job)
                    })
                    .collect();
                runner::handle_batch(&self.ctx, &batch, &abort).await
            }
        };
        for m in &unit {
            m.beat.cancel();
        }
        let mut deletes = Vec::new();
        for (m, disposition) in unit.iter().zip(dispositions) {
            match disposition {
                Disposition::Delete => deletes.push(m.receipt.as_str()),
                other => self.settle(&m.receipt, other).await,
            }
        }
        for chunk in deletes.chunks(10) {
            self.delete(chunk).await;
        }
    }

    /// Runs one run of a cloud schedule: its job is made here (the rule's folder listed now) and
    /// settled like a queue job (attempts are the message's receive count), so a run whose executor died is taken again, as the same job, by
    /// another. A run this executor cannot make goes back to the queue for another executor
    /// (and, after the queue's receive limit, to its dead-letter queue).
    async fn scheduled(
        &self,
        m: &Incoming,
        run: &ScheduleRun,
        abort: &CancellationToken,
    ) -> Disposition {
        let made = match &self.schedules {
            Some(s) => s.job_for(run).await,
            None => Err("this executor has no rules feed (cloud.rules_bucket)".into()),
        };
        match made {
            // Made here from a rule this executor checked when it took the rule in (its
            // endpoints' `cloud` settings), like a job of its own rules: not admitted as a queued
            // job, which may never claim a rule's origin.
            Ok(Some(job)) => {
                runner::handle_local(&self.ctx, job, m.received.receive_count, abort)
                    .await
                    .0
            }
            Ok(None) => Disposition::Delete,
            Err(e) => {
                error!(template = %run.template_id, scheduled_for = %run.scheduled_for, error = %e, "schedule run not made here; back to the queue");
                Disposition::Release(Duration::from_secs(30))
            }
        }
    }

    /// Deletes up to 10 settled messages in one request.
    async fn delete(&self, receipts: &[&str]) {
        if let [one] = receipts {
            return self.settle(one, Disposition::Delete).await;
        }
        let entries: Vec<DeleteMessageBatchRequestEntry> = receipts
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*r)
                    .build()
                    .ok()
            })
            .collect();
        match self
            .sqs
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => {
                for failed in out.failed() {
                    // The outcome is in the ledger: a redelivery is acknowledged without copying.
                    error!(
                        code = failed.code(),
                        message = failed.message().unwrap_or_default(),
                        "deleting a settled message failed"
                    );
                }
            }
            Err(e) => {
                error!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "deleting settled messages failed")
            }
        }
    }

    async fn settle(&self, receipt: &str, disposition: Disposition) {
        let result = match disposition {
            Disposition::Delete => self
                .sqs
                .delete_message()
                .queue_url(&self.queue_url)
                .receipt_handle(receipt)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string()),
            Disposition::Release(after) => self
                .sqs
                .change_message_visibility()
                .queue_url(&self.queue_url)
                .receipt_handle(receipt)
                .visibility_timeout(after.as_secs_f64().ceil().min(43_200.0) as i32)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string()),
            Disposition::Keep => Ok(()),
        };
        if let Err(e) = result {
            // The outcome is in the ledger: a redelivery is acknowledged without copying again.
            error!(?disposition, error = %e, "settling the message failed");
        }
    }
}

impl Incoming {
    /// The message as `recognise` reads it, when it is no job and reads as that.
    fn not_a_job<T>(
        &self,
        recognise: impl Fn(&str) -> Option<Result<T, pbs_shared::MessageError>>,
    ) -> Option<T> {
        self.job
            .is_none()
            .then(|| recognise(&self.received.body))
            .flatten()
            .and_then(Result::ok)
    }

    /// Files of the job (1 for a message that is not a valid job).
    fn files(&self) -> usize {
        self.job.as_ref().map_or(1, |j| j.files.len().max(1))
    }
}

/// Extends a running job's visibility every third of the timeout until `stop`.
async fn heartbeat(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    receipt: String,
    visibility: i32,
    stop: CancellationToken,
) {
    let every = Duration::from_secs((visibility as u64 / 3).max(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = sqs
            .change_message_visibility()
            .queue_url(&queue_url)
            .receipt_handle(&receipt)
            .visibility_timeout(visibility)
            .send()
            .await
        {
            warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "visibility heartbeat failed");
        }
    }
}
