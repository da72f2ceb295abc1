//! What the API's handlers need from the stack, as one port: [`ApiStore`]. [`super::StackStore`]
//! serves it from DynamoDB, S3 and SQS; the unit tests in `api/tests.rs` from memory. The
//! handlers decide (roles, validation, what a state allows); the store only reads and writes.

use std::future::Future;

use chrono::{DateTime, Utc};
use pbs_shared::message::{ControlMessage, EndpointTestRequest};
use pbs_shared::{
    ErrorClass, ExecutorId, JobId, JobMessage, ObjectRef, PoolName, Template, TemplateId,
};
use serde_json::Value;

use crate::dispatch::Dispatched;
use crate::flow::Ended;
use crate::store::audit::{AuditEntry, AuditError, Caller};
use crate::store::executors::ExecutorView;
use crate::store::jobs::{Inserted, JobFilter, JobTableError, JobView};
use crate::store::templates::{Stored, TemplateTableError};

/// What a `HEAD` of a source object found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    Found(ObjectRef),
    Missing,
    /// The api function may not read it (another bucket than the stack's source bucket).
    Forbidden,
}

/// An object of the logs bucket, as the API may serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Artifact {
    Bytes(Vec<u8>),
    /// Larger than [`MAX_ARTIFACT_BYTES`]: read from the bucket instead (its size).
    TooLarge(u64),
    /// The stack keeps no logs or reports.
    NoLogsBucket,
}

/// Largest log or report the API reads and serves (executors cap logs at 4 MiB).
pub const MAX_ARTIFACT_BYTES: u64 = 32 * 1024 * 1024;

/// A status body the status function refused or could not apply, as its dead-letter queue holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefusedReport {
    /// Why (the `pbs-error` attribute).
    pub reason: String,
    /// When SQS took it (RFC 3339), when it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    pub body: String,
}

/// Whether a pool's rule document was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RulesDelivery {
    Published,
    /// The stack has no configuration bucket: rules are not delivered to executors.
    NoConfigBucket,
}

/// What waits for a pool's executors: its work queue's messages (SQS's approximate counts) and
/// its oldest job that no executor has started.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Backlog {
    /// Messages an executor can receive now.
    pub waiting: u64,
    /// Messages received and not yet deleted: jobs running, or taken by an executor that died
    /// (they come back after the visibility timeout).
    pub in_flight: u64,
    /// Messages sent with a delay: retries waiting for their time.
    pub delayed: u64,
    /// The oldest job still `queued`.
    pub oldest_job: Option<WaitingJob>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WaitingJob {
    pub job_id: String,
    /// RFC 3339.
    pub created_at: String,
}

/// One page of a list and the token of the next.
pub type Page<T> = (Vec<T>, Option<String>);

/// The stack as the API sees it. `Err(String)` is a failure of the stack (a 500), never the
/// caller's.
pub trait ApiStore: Send + Sync + 'static {
    // Jobs.
    fn list_jobs(
        &self,
        filter: &JobFilter,
        limit: i32,
        next: Option<&str>,
    ) -> impl Future<Output = Result<Page<JobView>, JobTableError>> + Send;
    fn job(&self, id: &str) -> impl Future<Output = Result<Option<JobView>, JobTableError>> + Send;
    /// Records a new job `queued`, unless its id is taken.
    fn insert_queued(
        &self,
        job: &JobMessage,
    ) -> impl Future<Output = Result<Inserted, JobTableError>> + Send;
    /// Records who made a job by hand, and which job it retries.
    fn note_origin(
        &self,
        job: &JobId,
        created_by: &str,
        retry_of: Option<&str>,
    ) -> impl Future<Output = Result<(), JobTableError>> + Send;
    /// Records where a transfer between pools delivers after its staging step.
    fn note_relay(
        &self,
        job: &JobId,
        relay: &pbs_shared::transfer::RelayTo,
    ) -> impl Future<Output = Result<(), JobTableError>> + Send;
    /// Fails a recorded job whose message could not be sent.
    fn fail_undispatchable(
        &self,
        job: &JobId,
        class: ErrorClass,
        reason: &str,
    ) -> impl Future<Output = Result<(), JobTableError>> + Send;
    /// `queued` becomes `cancelled`; else the job's state (empty: no such job), unchanged.
    fn cancel_queued(
        &self,
        id: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<String>, JobTableError>> + Send;
    fn note_cancel_request(
        &self,
        job: &JobId,
        by: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), JobTableError>> + Send;

    // Templates.
    fn templates(&self) -> impl Future<Output = Result<Vec<Stored>, TemplateTableError>> + Send;
    fn template(
        &self,
        id: &TemplateId,
    ) -> impl Future<Output = Result<Option<Stored>, TemplateTableError>> + Send;
    fn put_template(
        &self,
        template: &Template,
        create_only: bool,
    ) -> impl Future<Output = Result<(), TemplateTableError>> + Send;
    fn delete_template(
        &self,
        id: &TemplateId,
    ) -> impl Future<Output = Result<(), TemplateTableError>> + Send;
    /// Rewrites `pool`'s rule document from the templates now stored.
    fn publish_rules(
        &self,
        pool: &PoolName,
    ) -> impl Future<Output = Result<RulesDelivery, String>> + Send;

    // Objects.
    /// An object of the logs bucket, whole, unless it is larger than [`MAX_ARTIFACT_BYTES`].
    fn artifact(&self, key: &str) -> impl Future<Output = Result<Artifact, String>> + Send;
    fn head(&self, bucket: &str, key: &str) -> impl Future<Output = Result<Head, String>> + Send;

    // Queues.
    /// Sends a recorded job to its pool's queue.
    fn send_job(&self, job: &JobMessage)
    -> impl Future<Output = Result<Dispatched, String>> + Send;
    /// Tells one executor something through its control queue.
    fn send_control(
        &self,
        pool: &PoolName,
        executor: &ExecutorId,
        message: &ControlMessage,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// What follows a job's end that no executor reports (notifications of a queued job the API
    /// cancelled).
    fn after_end(
        &self,
        ended: &Ended<'_>,
        job: JobView,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// The name of `pool`'s work queue.
    fn pool_queue(&self, pool: &str) -> String;
    /// What waits in `pool`'s queue; `None` when the pool has no queue.
    fn backlog(
        &self,
        pool: &PoolName,
    ) -> impl Future<Output = Result<Option<Backlog>, String>> + Send;

    // Endpoint tests.
    /// Records a test asked of a pool, `queued`.
    fn record_endpoint_test(
        &self,
        request: &EndpointTestRequest,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Puts `request` on its pool's work queue; `Ok(false)` when the pool has no queue.
    fn send_endpoint_test(
        &self,
        request: &EndpointTestRequest,
    ) -> impl Future<Output = Result<bool, String>> + Send;
    /// A test as the API shows it.
    fn endpoint_test(&self, id: &str)
    -> impl Future<Output = Result<Option<Value>, String>> + Send;

    /// Hourly counts of `scope` (`all`, or `pool#<pool>`) from `from` to `to`, every hour shown.
    fn stats(
        &self,
        scope: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Value>, String>> + Send;

    // Executors and the audit log.
    fn executors(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<ExecutorView>, String>> + Send;
    fn audit(
        &self,
        caller: Caller<'_>,
        at: DateTime<Utc>,
        method: &str,
        path: &str,
        status: u16,
        target: Option<&str>,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Up to 10 of the status dead-letter queue's messages, left where they are.
    fn refused_reports(&self) -> impl Future<Output = Result<Vec<RefusedReport>, String>> + Send;
    fn audit_page(
        &self,
        limit: i32,
        next: Option<&str>,
    ) -> impl Future<Output = Result<Page<AuditEntry>, AuditError>> + Send;
}
