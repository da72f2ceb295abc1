//! Sends job status reports to the StatusQueue, retrying with backoff.

use std::time::Duration;

use chrono::Utc;
use pbs_shared::message::{JobStatus, V1};
use pbs_shared::{ExecutorId, JobId, JobResult, JobState, PoolName, StatusMessage};
use tracing::warn;

#[derive(Clone)]
pub struct StatusSender {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    executor_id: ExecutorId,
    pool: PoolName,
}

impl StatusSender {
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        queue_url: String,
        executor_id: ExecutorId,
        pool: PoolName,
    ) -> Self {
        Self {
            sqs,
            queue_url,
            executor_id,
            pool,
        }
    }

    pub fn message(
        &self,
        job_id: &JobId,
        attempt: u32,
        state: JobState,
        result: Option<JobResult>,
    ) -> StatusMessage {
        StatusMessage::Job(JobStatus {
            v: V1,
            job_id: job_id.clone(),
            executor_id: self.executor_id.clone(),
            pool: self.pool.clone(),
            attempt,
            state,
            at: Utc::now(),
            result,
        })
    }

    /// Sends one report, retrying up to `tries` times with exponential backoff.
    pub async fn send(&self, message: &StatusMessage, tries: u32) -> Result<(), String> {
        let body = serde_json::to_string(message).expect("status messages serialise");
        let mut delay = Duration::from_millis(200);
        let mut last = String::new();
        for attempt in 1..=tries.max(1) {
            match self
                .sqs
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(&body)
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => {
                    last = aws_sdk_sqs::error::DisplayErrorContext(e).to_string();
                    warn!(attempt, error = %last, "status report not sent");
                }
            }
            if attempt < tries {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
        Err(last)
    }
}
