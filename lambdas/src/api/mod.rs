//! The HTTP API (axum), served through API Gateway by `lambda_http`, and the operator console.
//!
//! Every route under `/api/v1` needs a verified JWT ([`auth`]); the role each route needs is
//! checked in its handler. Every mutating call (anything but GET and HEAD) by a verified caller
//! is written to the audit log with its principal, path and answer, whatever the answer.
//! `/healthz` and the console's static files (`/console/…`, which hold no data: every view loads
//! its data through the API with the signed-in token) are public.

pub mod auth;
mod console;
mod endpoint_tests;
mod error;
mod executors;
mod jobs;
mod openapi;
mod stack;
mod store;
mod templates;
#[cfg(test)]
mod tests;
mod transfers;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use error::ApiError;
use error::{json_body, limit_param};
pub use stack::StackStore;
pub use store::{
    ApiStore, Artifact, Backlog, Head, MAX_ARTIFACT_BYTES, Page, RefusedReport, RulesDelivery,
    WaitingJob,
};

use crate::store::audit::Caller;
use auth::{Principal, Verifier};

/// What every handler is given: the stack (through [`ApiStore`]) and the token verifier.
pub struct ApiState<S> {
    pub store: Arc<S>,
    pub auth: Verifier,
}

impl<S> ApiState<S> {
    pub fn new(store: S, auth: Verifier) -> Self {
        Self {
            store: Arc::new(store),
            auth,
        }
    }
}

impl<S> Clone for ApiState<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            auth: self.auth.clone(),
        }
    }
}

/// What a handler made, for the audit entry when the path does not say (a new job's id).
#[derive(Debug, Clone)]
pub struct AuditTarget(pub String);

/// All routes of the API and the console.
pub fn router<S: ApiStore>(state: ApiState<S>) -> Router {
    let v1 = Router::new()
        .route("/jobs", get(jobs::list::<S>).post(jobs::create::<S>))
        .route("/jobs/{id}", get(jobs::show::<S>))
        .route("/jobs/{id}/log", get(jobs::log::<S>))
        .route("/jobs/{id}/flow", get(jobs::flow::<S>))
        .route("/jobs/{id}/report", get(jobs::report::<S>))
        .route("/jobs/{id}/retry", post(jobs::retry::<S>))
        .route("/jobs/{id}/cancel", post(jobs::cancel::<S>))
        .route("/transfers", post(transfers::create::<S>))
        .route(
            "/templates",
            get(templates::list::<S>).post(templates::create::<S>),
        )
        .route("/templates/dry-run", post(templates::dry_run::<S>))
        .route("/templates/{id}/run", post(transfers::run_template::<S>))
        .route(
            "/templates/{id}",
            get(templates::show::<S>)
                .put(templates::replace::<S>)
                .delete(templates::remove::<S>),
        )
        .route("/executors", get(executors::list::<S>))
        .route("/pools", get(executors::pools::<S>))
        .route("/stats", get(executors::stats::<S>))
        .route(
            "/pools/{pool}/endpoints/{endpoint}/test",
            post(endpoint_tests::start::<S>),
        )
        .route("/endpoint-tests/{id}", get(endpoint_tests::show::<S>))
        .route("/audit", get(executors::audit::<S>))
        .route("/refused-reports", get(executors::refused_reports::<S>))
        .route("/me", get(me))
        .route("/openapi.json", get(openapi::document))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            authenticate::<S>,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .nest("/api/v1", v1)
        .merge(console::routes())
        .fallback(not_found)
        .with_state(state)
}

/// Verifies the caller of every `/api/v1` request and audits the mutating ones.
async fn authenticate<S: ApiStore>(
    State(state): State<ApiState<S>>,
    mut req: Request,
    next: Next,
) -> Response {
    let header = match req.headers().get(axum::http::header::AUTHORIZATION) {
        None => None,
        Some(v) => match v.to_str() {
            Ok(v) => Some(v.to_owned()),
            Err(_) => {
                return ApiError::Unauthorized("the Authorization header is not text".into())
                    .into_response();
            }
        },
    };
    let principal = match state.auth.verify(header.as_deref()).await {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(path = %req.uri().path(), reason = %e, "request refused");
            return e.into_response();
        }
    };
    let method = req.method().clone();
    // The path as called (this layer sits inside the `/api/v1` nest, which strips its prefix).
    let path = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| req.uri().path().to_owned(), |u| u.path().to_owned());
    req.extensions_mut().insert(principal.clone());
    let span =
        tracing::info_span!("request", method = %method, path = %path, principal = %principal.name);
    let response = tracing::Instrument::instrument(next.run(req), span).await;
    if method != Method::GET && method != Method::HEAD {
        let target = response
            .extensions()
            .get::<AuditTarget>()
            .map(|t| t.0.clone());
        let status = response.status().as_u16();
        if let Err(e) = state
            .store
            .audit(
                Caller {
                    name: &principal.name,
                    subject: &principal.subject,
                    role: principal.role.as_str(),
                },
                chrono::Utc::now(),
                method.as_str(),
                &path,
                status,
                target.as_deref(),
            )
            .await
        {
            tracing::error!(error = %e, principal = %principal.name, method = %method, path = %path, status, "audit entry not written");
        }
    }
    response
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("no verified caller".into()))
    }
}

/// `GET /api/v1/me`: who the token says the caller is.
async fn me(principal: Principal) -> axum::Json<Principal> {
    axum::Json(principal)
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}
