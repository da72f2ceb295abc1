//! `/api/v1/jobs`: list (filtered, paginated), show, log, and the operator's actions: create a
//! manual job, retry, cancel.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use pbs_shared::TemplateSet;
use pbs_shared::message::{CancelRequest, ControlMessage, V1};
use pbs_shared::{
    ExecutorId, JobId, JobMessage, JobState, ObjectRef, PoolName, Template, TemplateId,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Principal, Role};
use super::{
    ApiError, ApiState, ApiStore, Artifact, AuditTarget, Head, MAX_ARTIFACT_BYTES, json_body,
    limit_param,
};
use crate::dispatch::Dispatched;
use crate::store::jobs::{Inserted, JobFilter, JobView};
use pbs_shared::plan::{ObjectEvent, Planned, plan};

const DEFAULT_LIMIT: i32 = 50;
const MAX_LIMIT: i32 = 500;
/// Most files one manual job may name.
pub const MAX_MANUAL_FILES: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<String>,
    next: Option<String>,
    state: Option<String>,
    template: Option<String>,
    pool: Option<String>,
    since: Option<String>,
    until: Option<String>,
    key_prefix: Option<String>,
}

/// Longest key prefix searched (an S3 key is at most 1024 bytes).
const MAX_KEY_PREFIX: usize = 1024;

fn key_prefix_param(raw: Option<String>) -> Result<Option<String>, ApiError> {
    match raw {
        Some(p) if p.is_empty() => Err(ApiError::field(
            "key_prefix",
            "key_prefix must not be empty (leave it out to list every job)",
        )),
        Some(p) if p.len() > MAX_KEY_PREFIX => Err(ApiError::field(
            "key_prefix",
            format!(
                "key_prefix is at most {MAX_KEY_PREFIX} bytes, got {}",
                p.len()
            ),
        )),
        Some(p) if p.chars().any(char::is_control) => Err(ApiError::field(
            "key_prefix",
            "key_prefix must not contain control characters",
        )),
        other => Ok(other),
    }
}

fn time_param(field: &str, raw: Option<String>) -> Result<Option<String>, ApiError> {
    raw.map(|r| {
        DateTime::parse_from_rfc3339(&r)
            .map(|t| {
                t.with_timezone(&Utc)
                    .to_rfc3339_opts(SecondsFormat::Millis, true)
            })
            .map_err(|e| {
                ApiError::field(
                    field,
                    format!(
                        "{field} must be an RFC 3339 time like 2026-01-31T08:00:00Z, got {r:?}: {e}"
                    ),
                )
            })
    })
    .transpose()
}

pub async fn list<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    principal.require(Role::Viewer)?;
    let Query(q) = query.map_err(|e| ApiError::field("query", e.body_text()))?;
    let limit = limit_param(q.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    if let Some(st) = q.state.as_deref()
        && JobState::parse(st).is_none()
    {
        return Err(ApiError::field(
            "state",
            format!(
                "state must be one of queued, running, succeeded, failed, cancelled; got {st:?}"
            ),
        ));
    }
    let filter = JobFilter {
        state: q.state,
        template: q.template,
        pool: q.pool,
        since: time_param("since", q.since)?,
        until: time_param("until", q.until)?,
        key_prefix: key_prefix_param(q.key_prefix)?,
    };
    let (jobs, next) = state
        .store
        .list_jobs(&filter, limit, q.next.as_deref())
        .await?;
    Ok(Json(json!({"jobs": jobs, "next": next})))
}

fn parse_job_id(id: &str) -> Result<JobId, ApiError> {
    JobId::parse(id).map_err(|e| ApiError::field("id", e))
}

pub(super) async fn find<S: ApiStore>(state: &ApiState<S>, id: &str) -> Result<JobView, ApiError> {
    parse_job_id(id)?;
    state
        .store
        .job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} not found")))
}

pub async fn show<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    principal.require(Role::Viewer)?;
    let job = find(&state, &id).await?;
    Ok(Json(serde_json::to_value(job).expect("jobs serialise")))
}

/// Most steps a flow shows on each side of the job asked for (chains are short; this bounds a
/// loop should links ever form one).
const MAX_FLOW_STEPS: usize = 50;

/// The chain `{id}` belongs to: its steps in order, first to last.
pub async fn flow<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    principal.require(Role::Viewer)?;
    let job = find(&state, &id).await?;
    let mut before = Vec::new();
    let mut parent = job.parent_job.clone();
    while let Some(p) = parent.take().filter(|_| before.len() < MAX_FLOW_STEPS) {
        let Some(step) = state.store.job(&p).await? else {
            break;
        };
        parent = step.parent_job.clone();
        before.push(step);
    }
    before.reverse();
    let mut steps = before;
    let mut next = job.next_job.clone();
    steps.push(job);
    let mut after = 0;
    while let Some(n) = next.take().filter(|_| after < MAX_FLOW_STEPS) {
        let Some(step) = state.store.job(&n).await? else {
            break;
        };
        next = step.next_job.clone();
        steps.push(step);
        after += 1;
    }
    Ok(Json(json!({ "steps": steps })))
}

/// An object of the logs bucket, whole.
async fn artifact<S: ApiStore>(state: &ApiState<S>, key: &str) -> Result<Vec<u8>, ApiError> {
    match state
        .store
        .artifact(key)
        .await
        .map_err(ApiError::Internal)?
    {
        Artifact::Bytes(bytes) => Ok(bytes),
        Artifact::TooLarge(size) => Err(ApiError::Conflict(format!(
            "{key} is {size} bytes, more than the API serves ({MAX_ARTIFACT_BYTES}); read it from the logs bucket"
        ))),
        Artifact::NoLogsBucket => Err(ApiError::NotFound(
            "this stack keeps no job logs or reports".into(),
        )),
    }
}

/// `GET /api/v1/jobs/{id}/log`: the attempt's rclone log as the executor uploaded it.
pub async fn log<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require(Role::Viewer)?;
    let job = find(&state, &id).await?;
    let Some(key) = job.log_key else {
        return Err(ApiError::NotFound(format!(
            "job {id} has no log yet: its executor uploads the log when an attempt ends"
        )));
    };
    let bytes = artifact(&state, &key).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    format: Option<String>,
}

/// `GET /api/v1/jobs/{id}/report[?format=csv]`: the job's delivery report, each file with size,
/// hash, source version, destination path, outcome and error (a batch's report holds every job
/// of the batch; this job's rows are served).
pub async fn report<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    Path(id): Path<String>,
    query: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    principal.require(Role::Viewer)?;
    let Query(q) = query.map_err(|e| ApiError::field("query", e.body_text()))?;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::field(
                "format",
                format!("format must be json or csv, got {other:?}"),
            ));
        }
    };
    let job = find(&state, &id).await?;
    let Some(key) = job.report_key else {
        return Err(ApiError::NotFound(format!(
            "job {id} has no delivery report: reports are written when a job finishes"
        )));
    };
    let raw = artifact(&state, &key).await?;
    let doc: Value = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::Internal(format!("report {key} is not JSON: {e}")))?;
    let rows: Vec<pbs_shared::report::ReportRow> = serde_json::from_value(doc["files"].clone())
        .map_err(|e| ApiError::Internal(format!("report {key} is malformed: {e}")))?;
    let rows: Vec<_> = rows.into_iter().filter(|r| r.job_id == id).collect();
    if csv {
        let text = pbs_shared::report::to_csv(&rows);
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response());
    }
    Ok(
        Json(json!({"job_id": id, "state": job.state, "report_key": key, "files": rows}))
            .into_response(),
    )
}

/// The body of `POST /api/v1/jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// An S3 template: its destination, rules and options apply.
    template_id: String,
    /// Object keys to deliver (1 to 1,000); each must exist and match the template.
    keys: Vec<String>,
    /// Source bucket; default: the template's.
    #[serde(default)]
    bucket: Option<String>,
}

pub async fn create<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    body: Bytes,
) -> Result<Response, ApiError> {
    principal.require(Role::Operator)?;
    let req: CreateBody = json_body(&body)?;
    let template_id =
        TemplateId::parse(&req.template_id).map_err(|e| ApiError::field("template_id", e))?;
    let job = start_manual(
        &state,
        &principal,
        &template_id,
        &req.keys,
        req.bucket,
        None,
    )
    .await?;
    Ok(created(job))
}

pub(super) fn created(job: JobView) -> Response {
    let id = job.job_id.clone();
    let mut response = (
        StatusCode::CREATED,
        Json(serde_json::to_value(job).expect("jobs serialise")),
    )
        .into_response();
    response.extensions_mut().insert(AuditTarget(id));
    response
}

/// `POST /api/v1/jobs/{id}/retry`: a new job for the same template and files, linked to the
/// original by `retry_of`. Only failed or cancelled jobs are retried: an S3 job here, a job of a
/// cloud watch or schedule rule by the executor that ran it ([`retry_rule_job`]).
pub async fn retry<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require(Role::Operator)?;
    let original = find(&state, &id).await?;
    if !matches!(original.state.as_str(), "failed" | "cancelled") {
        return Err(ApiError::Conflict(format!(
            "job {id} is {}: only failed or cancelled jobs are retried",
            original.state
        )));
    }
    if matches!(original.origin.as_deref(), Some("watch" | "schedule")) {
        return retry_rule_job(&state, &principal, &original).await;
    }
    let (Some(bucket), Some(template)) = (&original.source_bucket, &original.template_id) else {
        return Err(ApiError::Conflict(format!(
            "job {id} names no source bucket and template: it cannot be retried"
        )));
    };
    let keys: Vec<String> = original
        .files
        .iter()
        .filter_map(|f| f["key"].as_str().map(str::to_owned))
        .collect();
    let template = TemplateId::parse(template).map_err(|e| ApiError::Internal(e.to_string()))?;
    let job = start_manual(
        &state,
        &principal,
        &template,
        &keys,
        Some(bucket.clone()),
        Some(&id),
    )
    .await?;
    Ok(created(job))
}

/// Retries a failed job of a cloud watch or schedule rule: its files are known only to the
/// executor that ran it (in its ledger), so that executor is asked, on its control queue, to copy
/// them again as a new job (`wt-`/`sc-`, created in the cloud by its reports like its other
/// jobs; its story names who asked and the job it retries). 202 with the new job's id.
async fn retry_rule_job<S: ApiStore>(
    state: &ApiState<S>,
    principal: &Principal,
    original: &JobView,
) -> Result<Response, ApiError> {
    let id = &original.job_id;
    let job_id = parse_job_id(id)?;
    let template = original
        .template_id
        .as_deref()
        .and_then(|t| TemplateId::parse(t).ok());
    let cloud_rule = match &template {
        Some(t) => matches!(
            state.store.template(t).await?,
            Some(Ok(Template {
                trigger: pbs_shared::template::Trigger::Watch(_)
                    | pbs_shared::template::Trigger::Schedule(_),
                ..
            }))
        ),
        None => false,
    };
    let executor = original.executor_id.as_deref().unwrap_or("an executor");
    if !cloud_rule {
        return Err(ApiError::Conflict(format!(
            "job {id} was made by a rule of {executor}'s own configuration, not by a cloud template: that rule takes the file again when it changes"
        )));
    }
    let (Some(executor), Some(pool)) = (
        original
            .executor_id
            .as_deref()
            .and_then(|e| ExecutorId::parse(e).ok()),
        original
            .pool
            .as_deref()
            .and_then(|p| PoolName::parse(p).ok()),
    ) else {
        return Err(ApiError::Internal(format!(
            "job {id} names no executor or pool"
        )));
    };
    let online = state
        .store
        .executors(Utc::now())
        .await
        .map_err(ApiError::Internal)?
        .into_iter()
        .any(|e| e.executor_id == executor.as_str() && e.online);
    if !online {
        return Err(ApiError::Conflict(format!(
            "job {id} ran on executor {executor}, which is offline: only it has the job's files in its ledger; retry once it is back"
        )));
    }
    let now = Utc::now();
    let retry = pbs_shared::message::RetryRequest {
        v: V1,
        job_id: pbs_shared::job::rule_retry_job_id(&job_id, now),
        retry_of: job_id.clone(),
        requested_by: principal.name.clone(),
        at: now,
    };
    state
        .store
        .send_control(&pool, &executor, &ControlMessage::Retry(retry.clone()))
        .await
        .map_err(|e| {
            ApiError::Conflict(format!(
                "job {id} ran on executor {executor}, which cannot be reached: {e}"
            ))
        })?;
    tracing::info!(job_id = %retry.job_id, retry_of = %id, executor = %executor, principal = %principal.name, "rule job retry sent to its executor");
    let mut response = (
        StatusCode::ACCEPTED,
        Json(json!({"job_id": retry.job_id.as_str(), "retry_of": id, "executor_id": executor.as_str(), "state": "sent"})),
    )
        .into_response();
    response
        .extensions_mut()
        .insert(AuditTarget(retry.job_id.to_string()));
    Ok(response)
}

/// Records and dispatches a job of `template_id` for `keys`.
async fn start_manual<S: ApiStore>(
    state: &ApiState<S>,
    principal: &Principal,
    template_id: &TemplateId,
    keys: &[String],
    bucket: Option<String>,
    retry_of: Option<&str>,
) -> Result<JobView, ApiError> {
    if keys.is_empty() || keys.len() > MAX_MANUAL_FILES {
        return Err(ApiError::field(
            "keys",
            format!(
                "keys must list 1 to {MAX_MANUAL_FILES} object keys, got {}",
                keys.len()
            ),
        ));
    }
    let template = s3_template(state, template_id).await?;
    let mut message = plan_manual(state, &template, keys, bucket).await?;
    message.job_id = JobId::parse(format!("manual-{}", uuid::Uuid::new_v4().simple()))
        .expect("manual job ids are valid");
    message.v = V1;
    if state.store.insert_queued(&message).await? != Inserted::New {
        return Err(ApiError::Internal(format!(
            "job id {} already used",
            message.job_id
        )));
    }
    state
        .store
        .note_origin(&message.job_id, &principal.name, retry_of)
        .await?;
    send_or_fail(state, &message).await?;
    tracing::info!(job_id = %message.job_id, principal = %principal.name, files = message.files.len(), retry_of, "manual job created");
    find(state, message.job_id.as_str()).await
}

/// The valid S3 template a manual job is made from.
async fn s3_template<S: ApiStore>(
    state: &ApiState<S>,
    template_id: &TemplateId,
) -> Result<Template, ApiError> {
    let template: Template = match state.store.template(template_id).await? {
        Some(Ok(t)) => t,
        Some(Err((_, reason))) => {
            return Err(ApiError::Conflict(format!(
                "template {template_id} is invalid: {reason}"
            )));
        }
        None => {
            return Err(ApiError::field(
                "template_id",
                format!("template {template_id} not found"),
            ));
        }
    };
    if !matches!(template.trigger, pbs_shared::template::Trigger::S3 { .. }) {
        return Err(ApiError::field(
            "template_id",
            format!(
                "template {template_id} is a watch or schedule rule; manual jobs use S3 templates"
            ),
        ));
    }
    Ok(template)
}

/// One job for the objects `keys` (in `bucket`, else the template's), each checked against the
/// template as its event would be.
async fn plan_manual<S: ApiStore>(
    state: &ApiState<S>,
    template: &Template,
    keys: &[String],
    bucket: Option<String>,
) -> Result<JobMessage, ApiError> {
    let pbs_shared::template::Trigger::S3 { bucket: own, .. } = &template.trigger else {
        unreachable!("checked by s3_template");
    };
    let bucket = bucket.unwrap_or_else(|| own.clone());
    let now = Utc::now();
    let set = TemplateSet::compile(vec![template.clone()]).0;
    let mut message: Option<JobMessage> = None;
    for (i, key) in keys.iter().enumerate() {
        let field = format!("keys[{i}]");
        let object = head(state, &bucket, key, &field).await?;
        let event = ObjectEvent {
            object,
            event_time: now,
        };
        match plan(&set, &event, now).into_iter().next() {
            Some(Planned::Dispatch(d)) => match &mut message {
                None => message = Some(d.job),
                Some(m) => m.files.extend(d.job.files),
            },
            Some(Planned::Reject(r)) => return Err(ApiError::field(&field, r.reason)),
            None => {
                return Err(ApiError::field(
                    &field,
                    format!(
                        "s3://{bucket}/{key} does not match template {}'s bucket, key glob or size rules",
                        template.id
                    ),
                ));
            }
        }
    }
    Ok(message.expect("at least one key"))
}

/// Sends a recorded manual job; one that cannot be sent is failed (not left `queued` with no
/// message behind it), so a retry can follow.
pub(super) async fn send_or_fail<S: ApiStore>(
    state: &ApiState<S>,
    message: &JobMessage,
) -> Result<(), ApiError> {
    let e = match state.store.send_job(message).await {
        Ok(Dispatched::Sent) | Ok(Dispatched::NoQueue(_)) => return Ok(()),
        Err(e) => e,
    };
    let reason = format!("not sent to pool {}: {e}", message.pool);
    if let Err(e2) = state
        .store
        .fail_undispatchable(&message.job_id, pbs_shared::ErrorClass::Retryable, &reason)
        .await
    {
        tracing::error!(job_id = %message.job_id, error = %e2, "job left queued with no message");
    }
    Err(ApiError::Internal(format!(
        "job {} {reason}",
        message.job_id
    )))
}

/// The object at `bucket`/`key` as a manual job needs it; a missing object is the caller's error.
async fn head<S: ApiStore>(
    state: &ApiState<S>,
    bucket: &str,
    key: &str,
    field: &str,
) -> Result<ObjectRef, ApiError> {
    if key.is_empty() {
        return Err(ApiError::field(field, "an object key is empty"));
    }
    match state
        .store
        .head(bucket, key)
        .await
        .map_err(ApiError::Internal)?
    {
        Head::Found(object) => Ok(object),
        Head::Missing => Err(ApiError::field(
            field,
            format!("no object s3://{bucket}/{key}"),
        )),
        Head::Forbidden => Err(ApiError::field(
            field,
            format!(
                "s3://{bucket}/{key} may not be read by the api function (it reads the stack's source bucket)"
            ),
        )),
    }
}

/// `POST /api/v1/jobs/{id}/cancel`: a queued job is cancelled at once; a running one is stopped
/// by its executor, told through its control queue, which then reports `cancelled`.
pub async fn cancel<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require(Role::Operator)?;
    let job_id = parse_job_id(&id)?;
    let now = Utc::now();
    let state_now = match state.store.cancel_queued(&id, &principal.name, now).await? {
        None => {
            tracing::info!(job_id = %id, principal = %principal.name, "queued job cancelled");
            // No executor will report this end: the template's notifications go out from here.
            let job = find(&state, &id).await?;
            if let Some(pool) = job.pool.as_deref().and_then(|p| PoolName::parse(p).ok()) {
                let ended = crate::flow::Ended {
                    job_id: &job_id,
                    state: JobState::Cancelled,
                    attempt: job.attempt,
                    pool: &pool,
                    at: now,
                    result: None,
                };
                if let Err(e) = state.store.after_end(&ended, job).await {
                    tracing::warn!(job_id = %id, error = %e, "notifications of the cancelled job could not be queued");
                }
            }
            return Ok(Json(json!({"job_id": id, "state": "cancelled"})).into_response());
        }
        Some(s) if s.is_empty() => return Err(ApiError::NotFound(format!("job {id} not found"))),
        Some(s) => s,
    };
    if state_now != JobState::Running.as_str() {
        return Err(ApiError::Conflict(format!(
            "job {id} is already {state_now}: only queued or running jobs are cancelled"
        )));
    }
    let job = find(&state, &id).await?;
    let (Some(executor), Some(pool)) = (&job.executor_id, &job.pool) else {
        return Err(ApiError::Internal(format!(
            "running job {id} names no executor"
        )));
    };
    let executor = ExecutorId::parse(executor).map_err(|e| ApiError::Internal(e.to_string()))?;
    let pool = pbs_shared::PoolName::parse(pool).map_err(|e| ApiError::Internal(e.to_string()))?;
    let request = CancelRequest {
        v: V1,
        job_id: job_id.clone(),
        requested_by: principal.name.clone(),
        at: now,
    };
    state
        .store
        .send_control(&pool, &executor, &ControlMessage::Cancel(request))
        .await
        .map_err(|e| {
            ApiError::Conflict(format!(
                "job {id} runs on executor {executor}, which cannot be reached: {e}"
            ))
        })?;
    state
        .store
        .note_cancel_request(&job_id, &principal.name, now)
        .await?;
    tracing::info!(job_id = %id, executor = %executor, principal = %principal.name, "cancel sent to the executor");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"job_id": id, "state": "running", "cancel": "sent", "executor_id": executor.as_str()})),
    )
        .into_response())
}
