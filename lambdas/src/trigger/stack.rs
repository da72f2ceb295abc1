//! The trigger's capabilities served by the deployed stack: templates from DynamoDB (cached),
//! jobs recorded in the jobs table, sent to the pools' queues, bad bodies to the events DLQ.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use pbs_shared::plan::RejectedJob;
use pbs_shared::{JobId, JobMessage, TemplateSet};

use super::TriggerStore;
use super::template_cache::TemplateCache;
use crate::dead_letter::dead_letter;
use crate::dispatch::Dispatcher;
use crate::env::TriggerEnv;
use crate::store::jobs::{EventInsert, JobTable};
use crate::store::templates::TemplateTable;

pub struct StackStore {
    env: TriggerEnv,
    sqs: aws_sdk_sqs::Client,
    jobs: JobTable,
    templates: TemplateCache,
    dispatcher: Dispatcher,
}

impl StackStore {
    pub fn new(
        env: TriggerEnv,
        dynamo: aws_sdk_dynamodb::Client,
        sqs: aws_sdk_sqs::Client,
    ) -> Self {
        let jobs = JobTable::new(dynamo.clone(), &env.jobs_table, env.job_ttl_days);
        Self {
            dispatcher: Dispatcher::new(sqs.clone(), jobs.clone(), &env.pool_queue_prefix),
            jobs,
            templates: TemplateCache::new(TemplateTable::new(dynamo, &env.templates_table)),
            env,
            sqs,
        }
    }
}

impl TriggerStore for StackStore {
    async fn templates(&self) -> Result<Arc<TemplateSet>, String> {
        self.templates.current().await.map_err(|e| e.to_string())
    }

    async fn reject(&self, job: &RejectedJob, at: DateTime<Utc>) -> Result<(), String> {
        self.jobs
            .insert_rejected(job, at)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    async fn record(&self, job: &JobMessage, events: &[&JobId]) -> Result<EventInsert, String> {
        self.jobs
            .insert_event_job(job, events)
            .await
            .map_err(|e| e.to_string())
    }

    async fn send(&self, jobs: &[&JobMessage]) -> Vec<Result<(), String>> {
        // A pool without a queue fails its job in the table: nothing to retry.
        self.dispatcher
            .send_all(jobs)
            .await
            .into_iter()
            .map(|answer| answer.map(drop))
            .collect()
    }

    async fn dead_letter(&self, body: &str, reason: &str) -> Result<(), String> {
        dead_letter(&self.sqs, &self.env.dead_letter_queue_url, body, reason).await
    }
}
