//! `/api/v1/executors`, `/api/v1/pools`, `/api/v1/audit` and `/api/v1/refused-reports`: what runs
//! where, who did what, and which status reports the cloud refused.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Principal, Role};
use super::{ApiError, ApiState, ApiStore};
use crate::store::executors::ExecutorView;

async fn all_executors<S: ApiStore>(state: &ApiState<S>) -> Result<Vec<ExecutorView>, ApiError> {
    let mut all = state
        .store
        .executors(chrono::Utc::now())
        .await
        .map_err(ApiError::Internal)?;
    all.sort_by(|a, b| a.executor_id.cmp(&b.executor_id));
    Ok(all)
}

/// Every executor: last heartbeat, version, running jobs, online or offline (silent for more
/// than three heartbeat intervals).
pub async fn list<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    principal.require(Role::Viewer)?;
    Ok(Json(json!({"executors": all_executors(&state).await?})))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    hours: Option<String>,
    pool: Option<String>,
}

/// `GET /api/v1/stats?hours=24&pool=`: per hour over the last `hours` (1 to 168; default 24),
/// files and bytes delivered and jobs ended by outcome and error class, for the stack or one pool,
/// read from the counts the status function keeps as jobs end (never a scan of the jobs).
pub async fn stats<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    query: Result<axum::extract::Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    principal.require(Role::Viewer)?;
    let axum::extract::Query(q) = query.map_err(|e| ApiError::field("query", e.body_text()))?;
    let hours = super::error::limit_param(q.hours.as_deref(), 24, 168)
        .map_err(|_| ApiError::field("hours", "hours must be a whole number from 1 to 168"))?;
    let scope = match &q.pool {
        Some(p) => {
            let pool = pbs_shared::PoolName::parse(p).map_err(|e| ApiError::field("pool", e))?;
            crate::store::stats::pool_scope(&pool)
        }
        None => crate::store::stats::ALL.to_owned(),
    };
    let to = chrono::Utc::now();
    let from = to - chrono::Duration::hours(i64::from(hours) - 1);
    let rows = state
        .store
        .stats(&scope, from, to)
        .await
        .map_err(ApiError::Internal)?;
    let total = |field: &str| {
        rows.iter()
            .map(|r| r[field].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    Ok(Json(json!({
        "scope": scope,
        "hours": rows,
        "total": {
            "files": total("files"), "bytes": total("bytes"), "succeeded": total("succeeded"),
            "failed": total("failed"), "cancelled": total("cancelled"),
        },
    })))
}

/// Every pool that templates deliver to or executors serve: its executors (how many online), its
/// templates, and what waits in its queue (`backlog`, `null` when the pool has no queue yet;
/// `backlog_error` when the queue could not be read).
pub async fn pools<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    principal.require(Role::Viewer)?;
    #[derive(Default)]
    struct Pool {
        executors: Vec<String>,
        online: usize,
        templates: Vec<String>,
    }
    let mut pools: BTreeMap<String, Pool> = BTreeMap::new();
    for e in all_executors(&state).await? {
        let pool = pools.entry(e.pool.clone().unwrap_or_default()).or_default();
        pool.online += usize::from(e.online);
        pool.executors.push(e.executor_id);
    }
    for t in state.store.templates().await?.into_iter().flatten() {
        pools
            .entry(t.destination.pool.to_string())
            .or_default()
            .templates
            .push(t.id.to_string());
    }
    let now = chrono::Utc::now();
    // The queues are read side by side: a page of many pools waits for the slowest, not the sum.
    let list = futures_util::future::join_all(pools.into_iter().map(|(name, p)| {
        let state = &state;
        async move {
            let mut pool = json!({
                "pool": name,
                "queue": state.store.pool_queue(&name),
                "executors": p.executors,
                "online": p.online,
                "templates": p.templates,
                "backlog": null,
            });
            // An executor that never said its pool is listed under "": it has no queue to read.
            if let Ok(parsed) = pbs_shared::PoolName::parse(&name) {
                match state.store.backlog(&parsed).await {
                    Ok(backlog) => pool["backlog"] = backlog_view(backlog, now),
                    Err(e) => pool["backlog_error"] = json!(e),
                }
            }
            pool
        }
    }))
    .await;
    Ok(Json(json!({"pools": list})))
}

/// A backlog as the API shows it: the oldest waiting job with its age in seconds.
fn backlog_view(backlog: Option<super::Backlog>, now: chrono::DateTime<chrono::Utc>) -> Value {
    let Some(b) = backlog else {
        return Value::Null;
    };
    let oldest = b.oldest_job.map(|j| {
        let age = chrono::DateTime::parse_from_rfc3339(&j.created_at)
            .map(|t| (now - t.with_timezone(&chrono::Utc)).num_seconds().max(0))
            .unwrap_or(0);
        json!({"job_id": j.job_id, "created_at": j.created_at, "age_seconds": age})
    });
    json!({
        "waiting": b.waiting,
        "in_flight": b.in_flight,
        "delayed": b.delayed,
        "oldest_job": oldest,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<String>,
    next: Option<String>,
}

/// The audit log, newest first.
pub async fn audit<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    principal.require(Role::Viewer)?;
    let Query(q) = query.map_err(|e| ApiError::field("query", e.body_text()))?;
    let limit = super::limit_param(q.limit.as_deref(), 100, 500)?;
    let (entries, next) = state
        .store
        .audit_page(limit, q.next.as_deref())
        .await
        .map_err(|e| match e {
            crate::store::audit::AuditError::BadPageToken => {
                ApiError::field("next", "invalid page token")
            }
            crate::store::audit::AuditError::Dynamo(m) => ApiError::Internal(m),
        })?;
    Ok(Json(json!({"entries": entries, "next": next})))
}

/// Status reports the status function refused (another pool's, a forgery, a misconfigured
/// executor) or could not apply, with their reasons: a look at up to 10 messages of the status
/// dead-letter queue, which stay there.
pub async fn refused_reports<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    principal.require(Role::Admin)?;
    let reports = state
        .store
        .refused_reports()
        .await
        .map_err(ApiError::Internal)?;
    Ok(Json(json!({ "reports": reports })))
}
