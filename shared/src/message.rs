//! The versioned JSON messages between the cloud side and the executors (`docs/messages.md`).
//!
//! Every body carries `"v": 1`. Parsing checks the version before the shape, so a message from a
//! newer producer is refused with a message that says so instead of a confusing field error.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::dest_path::DestPath;
use crate::job::{ErrorClass, JobState};
use crate::names::{EndpointName, ExecutorId, JobId, PoolName, TemplateId};

/// The message schema version this build reads and writes.
pub const MESSAGE_VERSION: u32 = 1;

/// Why a message body was refused.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("message body is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("message has no numeric \"v\" field (schema version)")]
    MissingVersion,
    #[error(
        "message schema version {0} is not supported (this build reads version {MESSAGE_VERSION})"
    )]
    UnsupportedVersion(u64),
    #[error("message does not match the v1 schema: {0}")]
    Shape(serde_json::Error),
}

/// Parses a versioned message body.
pub fn parse_versioned<T: DeserializeOwned>(body: &str) -> Result<T, MessageError> {
    let value: serde_json::Value = serde_json::from_str(body).map_err(MessageError::NotJson)?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        None => Err(MessageError::MissingVersion),
        Some(v) if v != u64::from(MESSAGE_VERSION) => Err(MessageError::UnsupportedVersion(v)),
        Some(_) => serde_json::from_value(value).map_err(MessageError::Shape),
    }
}

/// Always serialises as `1`; refuses any other number when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct V1;

impl Serialize for V1 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(MESSAGE_VERSION)
    }
}

impl<'de> Deserialize<'de> for V1 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        if v == MESSAGE_VERSION {
            Ok(V1)
        } else {
            Err(serde::de::Error::custom(format!(
                "unsupported schema version {v}"
            )))
        }
    }
}

/// Where a job's files come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobSource {
    /// An S3 bucket the executor reads with its own AWS credentials.
    S3 { bucket: String },
    /// An endpoint defined in the executor's configuration (SMB, SFTP, local, S3); each file's
    /// `key` is a path under the endpoint's root.
    Endpoint { endpoint: EndpointName },
}

impl JobSource {
    /// How the source reads in messages and the API: `s3://bucket` or `endpoint:name`.
    pub fn describe(&self) -> String {
        match self {
            Self::S3 { bucket } => format!("s3://{bucket}"),
            Self::Endpoint { endpoint } => format!("endpoint:{endpoint}"),
        }
    }
}

/// One file of a job: where it is read and where it is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// Source key or path, decoded.
    pub key: String,
    /// Size in bytes at the time of the event.
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// The S3 event's sequencer: orders writes of the same key (see [`sequencer_cmp`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequencer: Option<String>,
    /// Path under the destination endpoint's root.
    pub dest_path: DestPath,
}

impl JobFile {
    /// A file read from an endpoint (no S3 version, ETag or sequencer).
    pub fn at(key: String, size: u64, dest_path: DestPath) -> Self {
        Self {
            key,
            size,
            etag: None,
            version_id: None,
            sequencer: None,
            dest_path,
        }
    }
}

/// Orders two S3 event sequencers of the same key: hexadecimal strings compared after padding
/// the shorter with leading zeros (as S3 documents).
pub fn sequencer_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let width = a.len().max(b.len());
    format!("{a:0>width$}")
        .to_ascii_uppercase()
        .cmp(&format!("{b:0>width$}").to_ascii_uppercase())
}

/// A file a watch or schedule rule found but could not make part of its job (a name the
/// destination cannot take): the job fails for it alone, with its reason in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusedFile {
    /// Path under the source endpoint's root.
    pub key: String,
    pub size: u64,
    pub error: String,
}

/// A job sent to a pool's work queue: one source, one or more files, one destination endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMessage {
    pub v: V1,
    pub job_id: JobId,
    pub template_id: TemplateId,
    pub pool: PoolName,
    pub source: JobSource,
    pub files: Vec<JobFile>,
    /// The destination endpoint, resolved by the executor from its own configuration.
    pub destination: EndpointName,
    /// Attempts and backoff for retryable failures (the template's policy).
    #[serde(default)]
    pub retry: crate::retry::RetryPolicy,
    /// Overwrite policy and verification (the template's).
    #[serde(default)]
    pub delivery: crate::delivery::Delivery,
    /// For jobs an executor made itself (watch folder, schedule): which rule made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// The template's bandwidth limit or timetable (the executor's own limit also applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<crate::bandwidth::Bandwidth>,
    pub created_at: DateTime<Utc>,
    /// Files found for the job that could not be part of it, each with why (jobs made on an
    /// executor only): they fail, the others are copied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<RefusedFile>,
    /// A transfer of a folder: the executor lists it when the job runs (`files` is then empty),
    /// and copies, syncs or moves what it finds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<crate::transfer::FolderTransfer>,
}

/// The endpoint name every executor gives the stack's relay staging area (in its config bucket,
/// `staging/<pool>/<job id>/…`): a relay's first leg writes there, its second reads from there.
pub const STAGING_ENDPOINT: &str = "staging";

/// What made a job on the executor itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginKind {
    /// A file settled in a watched folder.
    Watch,
    /// A cron schedule fired.
    Schedule,
}

impl OriginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Watch => "watch",
            Self::Schedule => "schedule",
        }
    }
}

/// The rule behind a job an executor made itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    pub kind: OriginKind,
    /// The watch or schedule rule's name.
    pub rule: String,
    /// Why this executor ran it (the rule is its own, it holds the pool's rule lease, it took
    /// the schedule's run from the pool's queue), for the job's story.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// What the cloud needs to list a job it did not plan itself (sent with reports of jobs that
/// have an [`Origin`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSummary {
    pub template_id: TemplateId,
    pub origin: Origin,
    pub source: JobSource,
    pub destination: EndpointName,
    pub file_count: u64,
    pub total_bytes: u64,
    pub created_at: DateTime<Utc>,
    /// The key of the job's first file (under the source endpoint's root), so the job is found
    /// by it (`GET /api/v1/jobs?key_prefix=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_key: Option<String>,
}

impl JobMessage {
    /// The summary sent with status reports of a job made on the executor.
    pub fn summary(&self) -> Option<JobSummary> {
        let origin = self.origin.clone()?;
        Some(JobSummary {
            template_id: self.template_id.clone(),
            origin,
            source: self.source.clone(),
            destination: self.destination.clone(),
            file_count: self.files.len() as u64,
            total_bytes: self.total_bytes(),
            created_at: self.created_at,
            first_key: self.files.first().map(|f| f.key.to_string()),
        })
    }
}

impl JobMessage {
    pub fn parse(body: &str) -> Result<Self, MessageError> {
        parse_versioned(body)
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The outcome of an attempt, sent with a terminal state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobResult {
    /// Files delivered and verified.
    pub files: u64,
    /// Bytes delivered and verified.
    pub bytes: u64,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// What went wrong, naming endpoint and path, never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Anything an operator should know about a success (e.g. a file skipped because a newer
    /// version of it was already delivered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Each file's outcome, with its verified hash (empty for a failed job).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivered: Vec<crate::delivery::DeliveredFile>,
    /// Where the attempt's rclone log was uploaded (secrets redacted): a key in the logs bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_key: Option<String>,
    /// Where the delivery report (JSON; the CSV beside it with `.csv`) was uploaded: each file
    /// with size, hash, source version, destination path, outcome and error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_key: Option<String>,
}

/// A report from an executor to the StatusQueue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
// Reports are parsed and built one at a time; boxing the common variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum StatusMessage {
    /// A job changed state.
    Job(JobStatus),
    /// An executor is alive (sent every `interval_seconds`, whether or not it has work).
    Heartbeat(Heartbeat),
    /// `pbs-executor doctor` proving it may send to the StatusQueue; changes nothing.
    Probe(Probe),
    /// How far a running job has got (sent at most every few seconds while it runs).
    Progress(JobProgress),
    /// What one executor found when it tested an endpoint an admin asked about.
    EndpointTest(EndpointTestResult),
}

/// An admin's request that one executor of a pool test one of its endpoints, sent on the pool's
/// work queue (which only the stack's functions may send to): the first executor to receive it
/// runs the same probe as `pbs-executor endpoints test` and reports on its status queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointTestRequest {
    pub v: V1,
    /// Always `endpoint_test`: what tells it from a job on the same queue.
    pub kind: EndpointTestKind,
    pub test_id: String,
    pub pool: PoolName,
    pub endpoint: EndpointName,
    pub requested_by: String,
    pub at: DateTime<Utc>,
}

/// The `kind` of an [`EndpointTestRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointTestKind {
    EndpointTest,
}

impl EndpointTestRequest {
    /// `Some` when `body` is an endpoint test request (`"kind": "endpoint_test"`), with the
    /// request or why it cannot be read; `None` for anything else (a job).
    pub fn recognise(body: &str) -> Option<Result<Self, MessageError>> {
        recognise_kind(body, "endpoint_test")
    }
}

/// A message of the work queue that is not a job, told apart by its `kind`: `Some` when `body`
/// says `kind`, with the message or why it cannot be read; `None` for anything else (a job).
pub fn recognise_kind<T: DeserializeOwned>(
    body: &str,
    kind: &str,
) -> Option<Result<T, MessageError>> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    (value.get("kind")?.as_str()? == kind).then(|| parse_versioned(body))
}

/// The outcome of an endpoint test, as the executor that ran it reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointTestResult {
    pub v: V1,
    pub test_id: String,
    pub executor_id: ExecutorId,
    pub pool: PoolName,
    pub endpoint: EndpointName,
    pub ok: bool,
    /// Type and address, without credentials.
    pub location: String,
    /// The step that failed: `setup`, `list`, `write`, `read`, `delete` or `verify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// `dns`, `connect`, `host_key`, `tls`, `auth`, `permission`, `not_found`, `throttled`,
    /// `forbidden` (the site keeps the endpoint from the cloud) or `other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What to check, in an operator's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub elapsed_ms: u64,
    pub at: DateTime<Utc>,
}

/// A running job's figures, from rclone's statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobProgress {
    pub v: V1,
    pub job_id: JobId,
    pub executor_id: ExecutorId,
    pub pool: PoolName,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// Bytes copied so far, and of how many.
    pub bytes: u64,
    pub total_bytes: u64,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_per_second: u64,
    /// Seconds left at the current rate, when rclone can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
}

/// A message on an executor's control queue (`<pool queue>-ctl-<executor id>`), sent by the
/// cloud's functions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ControlMessage {
    /// Stop a job: rclone is stopped cleanly, no partial file stays, the job ends `cancelled`.
    Cancel(CancelRequest),
    /// The pool's rule lease, in answer to one of the executor's heartbeats (sent by the status
    /// function).
    Lease(LeaseView),
    /// Run a failed job of a cloud watch or schedule rule again (sent by the API to the executor
    /// that ran it, which has the job in its ledger).
    Retry(RetryRequest),
}

/// The pool's rule lease as the status function saw it when it handled one heartbeat of the
/// executor it is sent to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseView {
    pub v: V1,
    pub pool: PoolName,
    /// The heartbeat this answers (its `at`), so the executor counts the lease from when it sent
    /// that heartbeat, never from when the answer arrived.
    pub heartbeat_at: DateTime<Utc>,
    /// The executor holding the lease (`None`: nobody, e.g. the holder left the pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<ExecutorId>,
    /// When the holder took the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// How long the lease lasts from the answered heartbeat, when the receiver is the holder.
    pub lease_seconds: u32,
    /// Watch jobs the pool delivered lately (any executor): a file whose job is here is not
    /// taken again by an executor that takes the lease over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivered: Vec<JobId>,
}

/// A job of a cloud rule to run again, as a new job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    pub v: V1,
    /// The new job.
    pub job_id: JobId,
    /// The failed or cancelled job whose files it copies again.
    pub retry_of: JobId,
    /// The principal who asked, for the job's story.
    pub requested_by: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub v: V1,
    pub job_id: JobId,
    /// The principal who asked, for the job's story.
    pub requested_by: String,
    pub at: DateTime<Utc>,
}

impl ControlMessage {
    pub fn parse(body: &str) -> Result<Self, MessageError> {
        parse_versioned(body)
    }
}

/// The control queue of `executor` in a pool whose work queue is named `work_queue_name`:
/// `<work queue>-ctl-<executor id>`, which the pool's IAM policies grant as `<work queue ARN>-ctl-*`.
/// SQS names are at most 80 characters: when that is too long, the executor id is replaced by a
/// hash of it (the work queue's name stays whole, so the grant still holds); only a work queue name
/// over 59 characters is itself cut.
pub fn control_queue_name(work_queue_name: &str, executor: &ExecutorId) -> String {
    const MAX: usize = 80;
    let full = format!("{work_queue_name}-ctl-{executor}");
    if full.len() <= MAX {
        return full;
    }
    // FNV-1a, 64 bits: stable across versions and platforms.
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let keep = work_queue_name.len().min(MAX - "-ctl-".len() - 16);
    format!("{}-ctl-{hash:016x}", &work_queue_name[..keep])
}

/// A doctor's test message: the status function logs it and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub v: V1,
    pub executor_id: ExecutorId,
    pub pool: PoolName,
    pub at: DateTime<Utc>,
}

/// An executor's periodic sign of life. The cloud shows an executor offline once it has been
/// silent for more than three of its intervals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub v: V1,
    pub executor_id: ExecutorId,
    pub pool: PoolName,
    pub executor_version: String,
    pub at: DateTime<Utc>,
    /// Seconds until the next heartbeat.
    pub interval_seconds: u32,
    /// Jobs running on the executor when it was sent.
    pub running_jobs: u32,
    /// What the site offers the cloud: its endpoints' names, types and `cloud` settings (never
    /// hosts, users or secrets), so that transfers are checked and offered by what exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<OfferedEndpoint>,
    /// The executor runs the pool's cloud rules: it asks for the pool's rule lease and its
    /// heartbeats make the pool's schedules tick (see `pool_lease`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub runs_rules: bool,
}

/// One endpoint as an executor publishes it with its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferedEndpoint {
    pub name: EndpointName,
    /// `local`, `smb`, `sftp` or `s3`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What jobs from the cloud may do with it: `none`, `read`, `write` or `read-write`.
    pub cloud: String,
}

impl OfferedEndpoint {
    pub fn may_read(&self) -> bool {
        matches!(self.cloud.as_str(), "read" | "read-write")
    }

    pub fn may_write(&self) -> bool {
        matches!(self.cloud.as_str(), "write" | "read-write")
    }

    /// Files may be removed from it (a `move` from it, a `sync` to it).
    pub fn may_delete(&self) -> bool {
        self.cloud == "read-write"
    }
}

/// A job's new state as one executor saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobStatus {
    pub v: V1,
    pub job_id: JobId,
    pub executor_id: ExecutorId,
    pub pool: PoolName,
    /// The reporting executor's version, so that mixed-version pools show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_version: Option<String>,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub state: JobState,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
    /// For jobs made on the executor (watch, schedule), what the cloud needs to list them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobSummary>,
}

impl StatusMessage {
    pub fn parse(body: &str) -> Result<Self, MessageError> {
        parse_versioned(body)
    }
}

/// The field paths of a JSON value (`files[].dest_path`, ...), so a producer's output can be
/// checked against the documented fixture of its message (`tests/fixtures/`).
pub fn field_paths(value: &serde_json::Value) -> std::collections::BTreeSet<String> {
    fn walk(v: &serde_json::Value, at: &str, out: &mut std::collections::BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    out.insert(path.clone());
                    walk(child, &path, out);
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    walk(item, &format!("{at}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(value, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_queue_names_fit_sqs() {
        let id = ExecutorId::parse("site-b-01").unwrap();
        assert_eq!(
            control_queue_name("pbs-pool-default", &id),
            "pbs-pool-default-ctl-site-b-01"
        );
        let long = ExecutorId::parse("e".repeat(63)).unwrap();
        let pool_queue = "a-rather-long-stack-name-pool-default";
        let a = control_queue_name(pool_queue, &long);
        let other = ExecutorId::parse(format!("{}f", "e".repeat(62))).unwrap();
        let b = control_queue_name(pool_queue, &other);
        assert!(a.len() <= 80, "{a}");
        assert!(
            a.starts_with(&format!("{pool_queue}-ctl-")),
            "the IAM grant still holds: {a}"
        );
        assert_ne!(a, b, "names differing only at the end stay apart");
        assert_eq!(control_queue_name(&"q".repeat(79), &long).len(), 80);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn cancel_requests_parse_and_bad_ones_are_refused() {
        let ControlMessage::Cancel(c) = ControlMessage::parse(CANCEL).unwrap() else {
            panic!("the cancel fixture is a cancel request")
        };
        assert_eq!(c.requested_by, "ana@example.com");
        let lease = include_str!("../../tests/fixtures/control-lease.v1.json");
        let Ok(ControlMessage::Lease(view)) = ControlMessage::parse(lease) else {
            panic!("the lease fixture is a lease answer")
        };
        assert_eq!(
            (
                view.holder.as_ref().map(|h| h.as_str()),
                view.lease_seconds,
                view.delivered.len()
            ),
            (Some("bay-1"), 120, 1)
        );
        let run = include_str!("../../tests/fixtures/schedule-run.v1.json");
        let run = crate::pool_lease::ScheduleRun::recognise(run)
            .unwrap()
            .unwrap();
        assert_eq!(run.template_id.as_str(), "nightly-outbox");
        let Ok(StatusMessage::Progress(p)) = StatusMessage::parse(PROGRESS) else {
            panic!("the progress fixture is progress")
        };
        assert_eq!(
            (p.bytes, p.total_bytes, p.eta_seconds),
            (536870912, 1073741824, Some(2))
        );
        assert!(ControlMessage::parse(r#"{"v":1,"kind":"reboot"}"#).is_err());
        assert!(ControlMessage::parse(r#"{"kind":"cancel"}"#).is_err());
    }

    const JOB: &str = include_str!("../../tests/fixtures/job-message.v1.json");
    const RUNNING: &str = include_str!("../../tests/fixtures/status-running.v1.json");
    const SUCCEEDED: &str = include_str!("../../tests/fixtures/status-succeeded.v1.json");
    const FAILED: &str = include_str!("../../tests/fixtures/status-failed.v1.json");
    const HEARTBEAT: &str = include_str!("../../tests/fixtures/status-heartbeat.v1.json");
    const PROGRESS: &str = include_str!("../../tests/fixtures/status-progress.v1.json");
    const CANCEL: &str = include_str!("../../tests/fixtures/control-cancel.v1.json");

    #[test]
    fn job_fixture_parses_and_round_trips() {
        let job = JobMessage::parse(JOB).unwrap();
        assert_eq!(job.files.len(), 1);
        assert_eq!(job.files[0].key, "incoming/a b+c%.txt");
        let again = JobMessage::parse(&serde_json::to_string(&job).unwrap()).unwrap();
        assert_eq!(job, again);
    }

    #[test]
    fn status_fixtures_parse() {
        for body in [RUNNING, SUCCEEDED, FAILED, HEARTBEAT, PROGRESS] {
            let message = StatusMessage::parse(body).unwrap();
            let again = serde_json::to_string(&message).unwrap();
            assert_eq!(StatusMessage::parse(&again).unwrap(), message);
        }
        let StatusMessage::Heartbeat(beat) = StatusMessage::parse(HEARTBEAT).unwrap() else {
            panic!("the heartbeat fixture is a heartbeat")
        };
        assert_eq!((beat.interval_seconds, beat.running_jobs), (60, 2));
        let probe = r#"{"v":1,"kind":"probe","executor_id":"bay-1","pool":"default","at":"2026-11-25T16:31:00Z"}"#;
        assert!(matches!(
            StatusMessage::parse(probe),
            Ok(StatusMessage::Probe(_))
        ));
        let Ok(StatusMessage::Job(failed)) = StatusMessage::parse(FAILED) else {
            panic!("the failed fixture is a job report")
        };
        assert_eq!(failed.state, JobState::Failed);
        assert_eq!(
            failed.result.unwrap().error_class,
            Some(ErrorClass::NotFound)
        );
    }

    #[test]
    fn sequencers_order_like_s3_says() {
        use std::cmp::Ordering::*;
        assert_eq!(
            sequencer_cmp("0055AED6DCD90281E5", "0055AED6DCD90281E6"),
            Less
        );
        assert_eq!(
            sequencer_cmp("55AED6DCD90281E6", "0055AED6DCD90281E5"),
            Greater
        );
        assert_eq!(sequencer_cmp("00ff", "FF"), Equal);
        assert_eq!(sequencer_cmp("A", "0B"), Less);
    }

    #[test]
    fn version_is_checked_first() {
        let mut v: serde_json::Value = serde_json::from_str(JOB).unwrap();
        v["v"] = 2.into();
        assert!(matches!(
            JobMessage::parse(&v.to_string()),
            Err(MessageError::UnsupportedVersion(2))
        ));
        v.as_object_mut().unwrap().remove("v");
        assert!(matches!(
            JobMessage::parse(&v.to_string()),
            Err(MessageError::MissingVersion)
        ));
        assert!(matches!(
            JobMessage::parse("nope"),
            Err(MessageError::NotJson(_))
        ));
    }

    #[test]
    fn unsafe_destination_paths_are_refused_by_the_consumer_too() {
        let mut v: serde_json::Value = serde_json::from_str(JOB).unwrap();
        v["files"][0]["dest_path"] = "../../etc/passwd".into();
        let err = JobMessage::parse(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("escape"), "{err}");
    }
}
