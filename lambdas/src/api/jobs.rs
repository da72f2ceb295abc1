//! `GET /api/v1/jobs` and `GET /api/v1/jobs/{id}`.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState};

const DEFAULT_LIMIT: i32 = 50;
const MAX_LIMIT: i32 = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<String>,
    next: Option<String>,
}

pub async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::field("query", e.body_text()))?;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<i32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::field(
                    "limit",
                    format!("limit must be a whole number from 1 to {MAX_LIMIT}, got {raw:?}"),
                ));
            }
        },
    };
    let (jobs, next) = state.jobs.list(limit, q.next.as_deref()).await?;
    Ok(Json(json!({"jobs": jobs, "next": next})))
}

pub async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    pbs_shared::JobId::parse(id.as_str()).map_err(|e| ApiError::field("id", e))?;
    match state.jobs.get(&id).await? {
        Some(job) => Ok(Json(serde_json::to_value(job).expect("jobs serialise"))),
        None => Err(ApiError::NotFound(format!("job {id} not found"))),
    }
}
