//! Sends a recorded job to its pool's work queue: the trigger's event jobs and the API's manual
//! jobs and retries take the same path.

use std::collections::HashMap;

use pbs_shared::{ErrorClass, JobMessage, PoolName};
use tokio::sync::Mutex;
use tracing::{error, info};

use crate::items::describe_error;
use crate::job_table::JobTable;

/// How a dispatch ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Dispatched {
    /// On the pool's queue and marked dispatched.
    Sent,
    /// The pool has no queue: the job was recorded `failed` with this reason.
    NoQueue(String),
}

pub struct Dispatcher {
    sqs: aws_sdk_sqs::Client,
    jobs: JobTable,
    pool_queue_prefix: String,
    queue_urls: Mutex<HashMap<PoolName, String>>,
}

impl Dispatcher {
    pub fn new(sqs: aws_sdk_sqs::Client, jobs: JobTable, pool_queue_prefix: &str) -> Self {
        Self {
            sqs,
            jobs,
            pool_queue_prefix: pool_queue_prefix.to_owned(),
            queue_urls: Mutex::new(HashMap::new()),
        }
    }

    pub fn pool_queue_prefix(&self) -> &str {
        &self.pool_queue_prefix
    }

    /// Sends `message` (already recorded `queued`) to its pool's queue. `Err` is transient
    /// (SQS or DynamoDB unavailable): the caller retries.
    pub async fn send(&self, message: &JobMessage) -> Result<Dispatched, String> {
        let Some(queue_url) = self.queue_url(&message.pool).await? else {
            let reason = format!(
                "pool {:?} has no work queue (expected an SQS queue named {:?})",
                message.pool.as_str(),
                format!("{}{}", self.pool_queue_prefix, message.pool)
            );
            error!(job_id = %message.job_id, reason = %reason, "job cannot be dispatched");
            self.jobs
                .fail_undispatchable(&message.job_id, ErrorClass::BadRequest, &reason)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Dispatched::NoQueue(reason));
        };
        let body = serde_json::to_string(message).expect("job messages serialise");
        self.sqs
            .send_message()
            .queue_url(&queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| describe_error(&e))?;
        self.jobs
            .mark_dispatched(&message.job_id)
            .await
            .map_err(|e| e.to_string())?;
        info!(job_id = %message.job_id, pool = %message.pool, template = %message.template_id, "job dispatched");
        Ok(Dispatched::Sent)
    }

    /// The pool's queue URL, or `None` when the pool has no queue. Found URLs are cached for the
    /// life of the function instance; a missing queue is asked again next time.
    pub async fn queue_url(&self, pool: &PoolName) -> Result<Option<String>, String> {
        if let Some(url) = self.queue_urls.lock().await.get(pool) {
            return Ok(Some(url.clone()));
        }
        let name = format!("{}{}", self.pool_queue_prefix, pool);
        match self.sqs.get_queue_url().queue_name(&name).send().await {
            Ok(out) => {
                let url = out.queue_url().map(str::to_owned);
                if let Some(url) = &url {
                    self.queue_urls
                        .lock()
                        .await
                        .insert(pool.clone(), url.clone());
                }
                Ok(url)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_queue_does_not_exist()) =>
            {
                Ok(None)
            }
            Err(e) => Err(describe_error(&e)),
        }
    }
}
