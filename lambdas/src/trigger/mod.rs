//! The trigger function: S3 object events (through the EventsQueue) become jobs.
//!
//! Per SQS record: parse the S3 notification, match it against the templates, record each job in
//! the jobs table with a conditional put under its deterministic id, and send it to its pool's
//! work queue. A duplicate event finds the job already recorded and sends nothing new (unless the
//! first delivery died between recording and sending). A body that can never be processed goes to
//! the dead-letter queue with its reason; a transient failure is reported as a batch item failure
//! so SQS retries that record alone.

pub mod plan;
mod template_cache;

use std::collections::HashMap;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use chrono::Utc;
use pbs_shared::{ErrorClass, JobMessage, PoolName};
use tokio::sync::Mutex;
use tracing::{error, info, warn};

use crate::dead_letter::dead_letter;
use crate::env::TriggerEnv;
use crate::items::describe_error;
use crate::job_table::{Inserted, JobTable};
use crate::template_table::TemplateTable;
use plan::{Body, Planned, parse_body, plan};
use template_cache::TemplateCache;

/// A failure worth retrying (DynamoDB or SQS unavailable, throttling).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Transient(String);

pub struct Trigger {
    env: TriggerEnv,
    sqs: aws_sdk_sqs::Client,
    jobs: JobTable,
    templates: TemplateCache,
    queue_urls: Mutex<HashMap<PoolName, Option<String>>>,
}

impl Trigger {
    pub fn new(
        env: TriggerEnv,
        dynamo: aws_sdk_dynamodb::Client,
        sqs: aws_sdk_sqs::Client,
    ) -> Self {
        Self {
            jobs: JobTable::new(dynamo.clone(), &env.jobs_table, env.job_ttl_days),
            templates: TemplateCache::new(TemplateTable::new(dynamo, &env.templates_table)),
            env,
            sqs,
            queue_urls: Mutex::new(HashMap::new()),
        }
    }

    /// Handles one batch; only records that failed transiently are returned for retry.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        crate::sqs_batch::for_each_body(event, |body| async move {
            self.handle_body(&body).await.map_err(|e| e.0)
        })
        .await
    }

    async fn handle_body(&self, body: &str) -> Result<(), Transient> {
        let objects = match parse_body(body) {
            Ok(Body::TestEvent) => {
                info!("s3:TestEvent acknowledged");
                return Ok(());
            }
            Ok(Body::Objects(objects)) => objects,
            Err(bad) => {
                let reason = bad.to_string();
                warn!(reason = %reason, "unprocessable event body sent to the dead-letter queue");
                return dead_letter(&self.sqs, &self.env.dead_letter_queue_url, body, &reason)
                    .await
                    .map_err(Transient);
            }
        };
        if objects.is_empty() {
            return Ok(());
        }
        let templates = self
            .templates
            .current()
            .await
            .map_err(|e| Transient(e.to_string()))?;
        let now = Utc::now();
        for object in &objects {
            let planned = plan(&templates, object, now);
            if planned.is_empty() {
                info!(bucket = %object.object.bucket, key = %object.object.key, "no template matches");
            }
            for job in planned {
                self.record(job).await?;
            }
        }
        Ok(())
    }

    async fn record(&self, job: Planned) -> Result<(), Transient> {
        let transient = |e: crate::job_table::JobTableError| Transient(e.to_string());
        match job {
            Planned::Reject(rejected) => {
                warn!(job_id = %rejected.job_id, template = %rejected.template.id, reason = %rejected.reason, "job rejected");
                self.jobs
                    .insert_rejected(&rejected, Utc::now())
                    .await
                    .map_err(transient)?;
                Ok(())
            }
            Planned::Dispatch(message) => {
                match self.jobs.insert_queued(&message).await.map_err(transient)? {
                    Inserted::New | Inserted::Exists { dispatched: false } => {}
                    Inserted::Exists { dispatched: true } => {
                        info!(job_id = %message.job_id, "duplicate event: job already dispatched");
                        return Ok(());
                    }
                }
                self.dispatch(&message).await
            }
        }
    }

    async fn dispatch(&self, message: &JobMessage) -> Result<(), Transient> {
        let Some(queue_url) = self.queue_url(&message.pool).await? else {
            let reason = format!(
                "pool {:?} has no work queue (expected an SQS queue named {:?})",
                message.pool.as_str(),
                format!("{}{}", self.env.pool_queue_prefix, message.pool)
            );
            error!(job_id = %message.job_id, reason = %reason, "job cannot be dispatched");
            return self
                .jobs
                .fail_undispatchable(&message.job_id, ErrorClass::BadRequest, &reason)
                .await
                .map_err(|e| Transient(e.to_string()));
        };
        let body = serde_json::to_string(message).expect("job messages serialise");
        self.sqs
            .send_message()
            .queue_url(&queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| Transient(describe_error(&e)))?;
        self.jobs
            .mark_dispatched(&message.job_id)
            .await
            .map_err(|e| Transient(e.to_string()))?;
        info!(job_id = %message.job_id, pool = %message.pool, template = %message.template_id, "job dispatched");
        Ok(())
    }

    /// The pool's queue URL, or `None` when the pool has no queue. Known answers are cached for
    /// the life of the function instance; a missing queue is asked again on the next event.
    async fn queue_url(&self, pool: &PoolName) -> Result<Option<String>, Transient> {
        if let Some(Some(url)) = self.queue_urls.lock().await.get(pool) {
            return Ok(Some(url.clone()));
        }
        let name = format!("{}{}", self.env.pool_queue_prefix, pool);
        match self.sqs.get_queue_url().queue_name(&name).send().await {
            Ok(out) => {
                let url = out.queue_url().map(str::to_owned);
                self.queue_urls
                    .lock()
                    .await
                    .insert(pool.clone(), url.clone());
                Ok(url)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_queue_does_not_exist()) =>
            {
                Ok(None)
            }
            Err(e) => Err(Transient(describe_error(&e))),
        }
    }
}
