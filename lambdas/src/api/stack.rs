//! The API's [`ApiStore`] served by the deployed stack: the jobs, templates, executors and audit
//! tables, the logs and source buckets, the pools' work and control queues.

use chrono::{DateTime, Utc};
use pbs_shared::message::{ControlMessage, EndpointTestRequest};
use pbs_shared::{
    ErrorClass, ExecutorId, JobId, JobMessage, ObjectRef, PoolName, Template, TemplateId,
};

use super::store::{
    ApiStore, Artifact, Backlog, Head, MAX_ARTIFACT_BYTES, Page, RefusedReport, RulesDelivery,
    WaitingJob,
};
use crate::dispatch::{Dispatched, Dispatcher};
use crate::env::ApiEnv;
use crate::flow::{Ended, FollowUp};
use crate::pool_rules::RulesPublisher;
use crate::store::audit::{AuditEntry, AuditError, AuditLog, Caller};
use crate::store::executors::ExecutorView;
use crate::store::items::describe_error;
use crate::store::jobs::{Inserted, JobFilter, JobTable, JobTableError, JobView};
use crate::store::templates::{Stored, TemplateTable, TemplateTableError};

pub struct StackStore {
    jobs: JobTable,
    templates: TemplateTable,
    /// Publishes pools' watch and schedule rules; `None` when no configuration bucket is set.
    rules: Option<RulesPublisher>,
    audit: AuditLog,
    /// Sends manual jobs and retries to their pools' queues.
    dispatcher: Dispatcher,
    dynamo: aws_sdk_dynamodb::Client,
    executors_table: String,
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    /// Where executors upload job logs; `None`: logs stay on the executors.
    logs_bucket: Option<String>,
    /// What follows a job's end, for queued jobs the API cancels itself (notifications).
    follow_up: FollowUp,
    status_dlq_url: Option<String>,
    tests: crate::store::endpoint_tests::EndpointTests,
    stats: crate::store::stats::StatsTable,
}

impl StackStore {
    pub fn new(
        env: ApiEnv,
        dynamo: aws_sdk_dynamodb::Client,
        sqs: aws_sdk_sqs::Client,
        s3: aws_sdk_s3::Client,
    ) -> Self {
        let jobs = JobTable::new(dynamo.clone(), &env.jobs_table, env.job_ttl_days);
        let templates = TemplateTable::new(dynamo.clone(), &env.templates_table);
        let dispatcher = || Dispatcher::new(sqs.clone(), jobs.clone(), &env.pool_queue_prefix);
        Self {
            follow_up: FollowUp {
                jobs: jobs.clone(),
                templates: templates.clone(),
                dispatcher: dispatcher(),
                sqs: sqs.clone(),
                s3: s3.clone(),
                notify_queue_url: env.notify_queue_url.clone(),
                // A cancelled job delivered nothing: no staged object is removed from here.
                staging_bucket: None,
                cache: Default::default(),
            },
            dispatcher: dispatcher(),
            rules: env
                .config_bucket
                .as_ref()
                .map(|bucket| RulesPublisher::new(s3.clone(), bucket)),
            audit: AuditLog::new(dynamo.clone(), &env.audit_table),
            tests: crate::store::endpoint_tests::EndpointTests::new(
                dynamo.clone(),
                &env.endpoint_tests_table,
            ),
            stats: crate::store::stats::StatsTable::new(dynamo.clone(), &env.stats_table),
            jobs,
            templates,
            executors_table: env.executors_table,
            status_dlq_url: env.status_dlq_url,
            logs_bucket: env.logs_bucket,
            dynamo,
            sqs,
            s3,
        }
    }
}

impl ApiStore for StackStore {
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        limit: i32,
        next: Option<&str>,
    ) -> Result<Page<JobView>, JobTableError> {
        self.jobs.list(filter, limit, next).await
    }

    async fn job(&self, id: &str) -> Result<Option<JobView>, JobTableError> {
        self.jobs.get(id).await
    }

    async fn insert_queued(&self, job: &JobMessage) -> Result<Inserted, JobTableError> {
        self.jobs.insert_queued(job).await
    }

    async fn note_origin(
        &self,
        job: &JobId,
        created_by: &str,
        retry_of: Option<&str>,
    ) -> Result<(), JobTableError> {
        self.jobs.note_origin(job, created_by, retry_of).await
    }

    async fn note_relay(
        &self,
        job: &JobId,
        relay: &pbs_shared::transfer::RelayTo,
    ) -> Result<(), JobTableError> {
        self.jobs.note_relay(job, relay).await
    }

    async fn fail_undispatchable(
        &self,
        job: &JobId,
        class: ErrorClass,
        reason: &str,
    ) -> Result<(), JobTableError> {
        self.jobs.fail_undispatchable(job, class, reason).await
    }

    async fn cancel_queued(
        &self,
        id: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<String>, JobTableError> {
        self.jobs.cancel_queued(id, by, at).await
    }

    async fn note_cancel_request(
        &self,
        job: &JobId,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), JobTableError> {
        self.jobs.note_cancel_request(job, by, at).await
    }

    async fn templates(&self) -> Result<Vec<Stored>, TemplateTableError> {
        self.templates.load_all().await
    }

    async fn template(&self, id: &TemplateId) -> Result<Option<Stored>, TemplateTableError> {
        self.templates.get(id).await
    }

    async fn put_template(
        &self,
        template: &Template,
        create_only: bool,
    ) -> Result<(), TemplateTableError> {
        self.templates.put(template, create_only).await
    }

    async fn delete_template(&self, id: &TemplateId) -> Result<(), TemplateTableError> {
        self.templates.delete(id).await
    }

    async fn publish_rules(&self, pool: &PoolName) -> Result<RulesDelivery, String> {
        let Some(publisher) = &self.rules else {
            return Ok(RulesDelivery::NoConfigBucket);
        };
        publisher.publish(&self.templates, pool).await?;
        Ok(RulesDelivery::Published)
    }

    async fn artifact(&self, key: &str) -> Result<Artifact, String> {
        let Some(bucket) = &self.logs_bucket else {
            return Ok(Artifact::NoLogsBucket);
        };
        let object = self
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| format!("reading s3://{bucket}/{key}: {}", describe_error(&e)))?;
        let size = object.content_length().unwrap_or(0).max(0) as u64;
        if size > MAX_ARTIFACT_BYTES {
            return Ok(Artifact::TooLarge(size));
        }
        let bytes = object
            .body
            .collect()
            .await
            .map_err(|e| format!("reading s3://{bucket}/{key}: {e}"))?;
        Ok(Artifact::Bytes(bytes.into_bytes().to_vec()))
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Head, String> {
        match self.s3.head_object().bucket(bucket).key(key).send().await {
            Ok(out) => Ok(Head::Found(ObjectRef {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                etag: out.e_tag().map(|e| e.trim_matches('"').to_owned()),
                version_id: out.version_id().map(str::to_owned),
                sequencer: None,
            })),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_not_found()) => Ok(Head::Missing),
            Err(aws_sdk_s3::error::SdkError::ServiceError(se))
                if se.raw().status().as_u16() == 403 =>
            {
                Ok(Head::Forbidden)
            }
            Err(e) => Err(format!("HEAD s3://{bucket}/{key}: {}", describe_error(&e))),
        }
    }

    async fn send_job(&self, job: &JobMessage) -> Result<Dispatched, String> {
        self.dispatcher.send(job).await
    }

    async fn send_control(
        &self,
        pool: &PoolName,
        executor: &ExecutorId,
        message: &ControlMessage,
    ) -> Result<(), String> {
        crate::control::send(&self.sqs, &self.dispatcher, pool, executor, message).await
    }

    async fn after_end(&self, ended: &Ended<'_>, job: JobView) -> Result<(), String> {
        self.follow_up.after_end(ended, Some(job)).await
    }

    fn pool_queue(&self, pool: &str) -> String {
        format!("{}{pool}", self.dispatcher.pool_queue_prefix())
    }

    async fn backlog(&self, pool: &PoolName) -> Result<Option<Backlog>, String> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let Some(url) = self.dispatcher.queue_url(pool).await? else {
            return Ok(None);
        };
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(A::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| format!("reading the queue of pool {pool}: {}", describe_error(&e)))?;
        let count = |name: A| {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let oldest_job = self
            .jobs
            .oldest_waiting(pool.as_str())
            .await
            .map_err(|e| e.to_string())?
            .map(|(job_id, created_at)| WaitingJob { job_id, created_at });
        Ok(Some(Backlog {
            waiting: count(A::ApproximateNumberOfMessages),
            in_flight: count(A::ApproximateNumberOfMessagesNotVisible),
            delayed: count(A::ApproximateNumberOfMessagesDelayed),
            oldest_job,
        }))
    }

    async fn record_endpoint_test(&self, request: &EndpointTestRequest) -> Result<(), String> {
        self.tests.create(request).await
    }

    async fn send_endpoint_test(&self, request: &EndpointTestRequest) -> Result<bool, String> {
        let Some(url) = self.dispatcher.queue_url(&request.pool).await? else {
            return Ok(false);
        };
        self.sqs
            .send_message()
            .queue_url(url)
            .message_body(serde_json::to_string(request).expect("requests serialise"))
            .send()
            .await
            .map(|_| true)
            .map_err(|e| crate::store::items::describe_error(&e))
    }

    async fn endpoint_test(&self, id: &str) -> Result<Option<serde_json::Value>, String> {
        self.tests.get(id).await
    }

    async fn stats(
        &self,
        scope: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<serde_json::Value>, String> {
        self.stats.hours(scope, from, to).await
    }

    async fn executors(&self, now: DateTime<Utc>) -> Result<Vec<ExecutorView>, String> {
        crate::store::executors::list(&self.dynamo, &self.executors_table, now.timestamp_millis())
            .await
    }

    async fn audit(
        &self,
        caller: Caller<'_>,
        at: DateTime<Utc>,
        method: &str,
        path: &str,
        status: u16,
        target: Option<&str>,
    ) -> Result<(), String> {
        self.audit
            .record(caller, at, method, path, status, target)
            .await
    }

    async fn refused_reports(&self) -> Result<Vec<RefusedReport>, String> {
        let Some(url) = &self.status_dlq_url else {
            return Ok(Vec::new());
        };
        use aws_sdk_sqs::types::MessageSystemAttributeName as A;
        let out = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            // A look only: the messages stay visible for the operator's redrive or purge.
            .visibility_timeout(0)
            .message_attribute_names("All")
            .message_system_attribute_names(A::SentTimestamp)
            .send()
            .await
            .map_err(|e| format!("reading the status DLQ: {}", describe_error(&e)))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| RefusedReport {
                reason: m
                    .message_attributes()
                    .and_then(|a| a.get(crate::dead_letter::REASON_ATTRIBUTE))
                    .and_then(|v| v.string_value())
                    .unwrap_or_default()
                    .to_owned(),
                sent_at: m
                    .attributes()
                    .and_then(|a| a.get(&A::SentTimestamp))
                    .and_then(|ms| ms.parse::<i64>().ok())
                    .and_then(DateTime::from_timestamp_millis)
                    .map(|t| t.to_rfc3339()),
                body: m.body().unwrap_or_default().to_owned(),
            })
            .collect())
    }

    async fn audit_page(
        &self,
        limit: i32,
        next: Option<&str>,
    ) -> Result<Page<AuditEntry>, AuditError> {
        self.audit.list(limit, next).await
    }
}
