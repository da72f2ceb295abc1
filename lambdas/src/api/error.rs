//! API errors and their JSON shape: `{"error": {"code", "message", "field"?}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pbs_shared::FieldError;
use serde_json::json;
use tracing::error;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(FieldError),
    /// No token, or one that does not verify (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A verified caller whose role is too low (403).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: &str, message: impl ToString) -> Self {
        Self::BadRequest(FieldError::new(field, message))
    }
}

/// A JSON request body as `T`; a bad one is a 400 naming the field at fault (`body` for the
/// whole, e.g. a missing field).
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        ApiError::field(if field == "." { "body" } else { &field }, e.inner())
    })
}

/// The `limit` query parameter: `default` when absent, else a whole number from 1 to `max`.
pub fn limit_param(raw: Option<&str>, default: i32, max: i32) -> Result<i32, ApiError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    raw.parse::<i32>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::field(
                "limit",
                format!("limit must be a whole number from 1 to {max}, got {raw:?}"),
            )
        })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = match &self {
            ApiError::BadRequest(f) => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                Some(f.field.clone()),
            ),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", None),
            ApiError::Internal(m) => {
                error!(error = %m, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", None)
            }
        };
        let message = match &self {
            ApiError::BadRequest(f) => f.message.clone(),
            // Internal details stay in the log.
            ApiError::Internal(_) => "internal error; see the api function's log".to_owned(),
            other => other.to_string(),
        };
        let mut body = json!({"error": {"code": code, "message": message}});
        if let Some(field) = field {
            body["error"]["field"] = field.into();
        }
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"pbs-rclone\""),
            );
        }
        response
    }
}

impl From<crate::store::templates::TemplateTableError> for ApiError {
    fn from(e: crate::store::templates::TemplateTableError) -> Self {
        use crate::store::templates::TemplateTableError as E;
        match e {
            E::Exists(id) => ApiError::Conflict(format!("template {id} already exists")),
            E::NotFound(id) => ApiError::NotFound(format!("template {id} not found")),
            E::Dynamo(m) => ApiError::Internal(m),
        }
    }
}

impl From<crate::store::jobs::JobTableError> for ApiError {
    fn from(e: crate::store::jobs::JobTableError) -> Self {
        use crate::store::jobs::JobTableError as E;
        match e {
            E::BadPageToken => ApiError::field("next", "invalid page token"),
            E::Dynamo(m) => ApiError::Internal(m),
        }
    }
}
