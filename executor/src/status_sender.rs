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

#[cfg(test)]
mod tests {
    use super::*;
    use pbs_shared::message::field_paths;

    fn sender() -> StatusSender {
        let conf = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .build();
        StatusSender::new(
            aws_sdk_sqs::Client::from_conf(conf),
            "unused".into(),
            ExecutorId::parse("edit-bay-1").unwrap(),
            PoolName::parse("default").unwrap(),
        )
    }

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn reports_have_the_documented_shapes() {
        let s = sender();
        let id = JobId::parse("ev-1").unwrap();
        let running = serde_json::to_value(s.message(&id, 1, JobState::Running, None)).unwrap();
        assert_eq!(
            field_paths(&running),
            field_paths(&fixture("status-running.v1.json"))
        );
        let ok = JobResult {
            files: 1,
            bytes: 5,
            duration_ms: 3,
            error_class: None,
            error: None,
        };
        let done = serde_json::to_value(s.message(&id, 1, JobState::Succeeded, Some(ok))).unwrap();
        assert_eq!(
            field_paths(&done),
            field_paths(&fixture("status-succeeded.v1.json"))
        );
        let failed = JobResult {
            files: 0,
            bytes: 0,
            duration_ms: 3,
            error_class: Some(pbs_shared::ErrorClass::NotFound),
            error: Some("gone".into()),
        };
        let failed =
            serde_json::to_value(s.message(&id, 1, JobState::Failed, Some(failed))).unwrap();
        assert_eq!(
            field_paths(&failed),
            field_paths(&fixture("status-failed.v1.json"))
        );
    }
}
