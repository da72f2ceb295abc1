//! The HTTP API (axum), served through API Gateway by `lambda_http`.
//!
//! Routes are plain axum handlers over [`ApiState`]; the router is built by [`router`] so that
//! layers (authentication, audit) wrap every route in one place.

mod error;
mod jobs;
mod templates;

use axum::Router;
use axum::routing::get;

pub use error::ApiError;

use crate::job_table::JobTable;
use crate::template_table::TemplateTable;

#[derive(Clone)]
pub struct ApiState {
    pub jobs: JobTable,
    pub templates: TemplateTable,
    /// Publishes pools' watch and schedule rules; `None` when no configuration bucket is set.
    pub rules: Option<crate::pool_rules::RulesPublisher>,
}

/// All routes of the API.
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/jobs", get(jobs::list))
        .route("/jobs/{id}", get(jobs::show))
        .route("/templates", get(templates::list).post(templates::create))
        .route(
            "/templates/{id}",
            get(templates::show)
                .put(templates::replace)
                .delete(templates::remove),
        );
    Router::new()
        .route("/healthz", get(healthz))
        .nest("/api/v1", v1)
        .fallback(not_found)
        .with_state(state)
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}
