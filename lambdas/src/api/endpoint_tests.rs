//! Endpoint tests from the console: an admin asks a pool to test one of its endpoints
//! (`POST /api/v1/pools/{pool}/endpoints/{endpoint}/test`); the request goes on the pool's work
//! queue, one executor runs the same probe as `pbs-executor endpoints test` and reports through
//! its status queue, and `GET /api/v1/endpoint-tests/{id}` shows each step's outcome with the fix.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use pbs_shared::message::{EndpointTestKind, EndpointTestRequest, V1};
use pbs_shared::{EndpointName, PoolName};

use super::auth::{Principal, Role};
use super::{ApiError, ApiState, ApiStore, AuditTarget};

pub async fn start<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    Path((pool, endpoint)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    principal.require(Role::Admin)?;
    let pool = PoolName::parse(&pool).map_err(|e| ApiError::NotFound(e.to_string()))?;
    let endpoint = EndpointName::parse(&endpoint).map_err(|e| ApiError::NotFound(e.to_string()))?;
    let now = Utc::now();
    let executors = state
        .store
        .executors(now)
        .await
        .map_err(ApiError::Internal)?;
    let offered = super::transfers::published(&executors, &pool);
    if !offered.iter().any(|o| o.name == endpoint) {
        return Err(ApiError::NotFound(super::transfers::unpublished(
            &pool, &endpoint, &offered,
        )));
    }
    let request = EndpointTestRequest {
        v: V1,
        kind: EndpointTestKind::EndpointTest,
        test_id: format!("et-{}", uuid::Uuid::new_v4().simple()),
        pool,
        endpoint,
        requested_by: principal.name.clone(),
        at: now,
    };
    state
        .store
        .record_endpoint_test(&request)
        .await
        .map_err(ApiError::Internal)?;
    if !state
        .store
        .send_endpoint_test(&request)
        .await
        .map_err(ApiError::Internal)?
    {
        return Err(ApiError::Conflict(format!(
            "pool {} has no work queue",
            request.pool
        )));
    }
    tracing::info!(test_id = %request.test_id, pool = %request.pool, endpoint = %request.endpoint, principal = %principal.name, "endpoint test asked");
    let view = state
        .store
        .endpoint_test(&request.test_id)
        .await
        .map_err(ApiError::Internal)?
        .unwrap_or_default();
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    response
        .extensions_mut()
        .insert(AuditTarget(request.test_id));
    Ok(response)
}

pub async fn show<S: ApiStore>(
    State(state): State<ApiState<S>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require(Role::Viewer)?;
    state
        .store
        .endpoint_test(&id)
        .await
        .map_err(ApiError::Internal)?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("endpoint test {id} not found")))
}
