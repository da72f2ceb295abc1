//! The work-queue poller: long-polls the pool's queue (outbound only), runs up to `concurrency`
//! jobs at once, keeps running jobs' messages invisible with a heartbeat, and settles each message
//! only after its job's outcome is recorded.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::job_runner::{self, Disposition, JobContext, Received};
use crate::metrics::METRICS;

pub struct Poller {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub wait_seconds: i32,
    pub visibility_timeout: i32,
    /// Job slots, shared with jobs made by watch and schedule rules.
    pub slots: Arc<Semaphore>,
    pub ctx: Arc<JobContext>,
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
        let slots = this.slots.clone();
        let mut backoff = Duration::from_secs(1);
        info!(queue = %this.queue_url, "polling the pool's work queue");
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
            };
            let mut permits = vec![first];
            while permits.len() < 10 {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let receive = this
                .sqs
                .receive_message()
                .queue_url(&this.queue_url)
                .max_number_of_messages(permits.len() as i32)
                .wait_time_seconds(this.wait_seconds)
                .visibility_timeout(this.visibility_timeout)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send();
            let out = tokio::select! {
                _ = shutdown.cancelled() => break,
                out = receive => out,
            };
            let messages = match out {
                Ok(out) => {
                    METRICS.poll(true);
                    backoff = Duration::from_secs(1);
                    out.messages.unwrap_or_default()
                }
                Err(e) => {
                    METRICS.poll(false);
                    warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), retry_in_s = backoff.as_secs(), "receiving from the work queue failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            debug!(count = messages.len(), "received");
            for message in messages {
                let permit = permits.pop().expect("never more messages than permits");
                let (Some(body), Some(receipt)) = (message.body, message.receipt_handle) else {
                    continue;
                };
                let receive_count = message
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                let this = this.clone();
                let abort = abort.clone();
                tracker.spawn(async move {
                    let received = Received {
                        body,
                        receive_count,
                    };
                    this.process(received, receipt, abort).await;
                    drop(permit);
                });
            }
        }
        info!("stopped polling");
    }

    async fn process(&self, received: Received, receipt: String, abort: CancellationToken) {
        let beat_stop = CancellationToken::new();
        let beat = tokio::spawn(heartbeat(
            self.sqs.clone(),
            self.queue_url.clone(),
            receipt.clone(),
            self.visibility_timeout,
            beat_stop.clone(),
        ));
        let disposition = job_runner::handle(&self.ctx, &received, &abort).await;
        beat_stop.cancel();
        let _ = beat.await;
        self.settle(&receipt, disposition).await;
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
