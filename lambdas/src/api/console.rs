//! The operator console: one page and its script and style, compiled into the api function (no
//! Node build). The files hold no data; every view loads it from `/api/v1` with the token the
//! operator signed in with.
//!
//! The page is at `/console` and its files beside it (`console.js`, `console.css`), also under
//! `/console/` for a browser that asks with a trailing slash; the script finds the API from its
//! own address, so the console works under any stage or proxy prefix.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

const INDEX: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/console.js");
const STYLE: &str = include_str!("../../console/console.css");

/// Content-Security-Policy: only this origin's script and style; no inline script.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The console's routes, for a router of any state (the files need none).
pub fn routes<T: Clone + Send + Sync + 'static>() -> Router<T> {
    Router::new()
        .route("/", get(|| async { Redirect::to("console") }))
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console.js", get(script))
        .route("/console/console.js", get(script))
        .route("/console.css", get(style))
        .route("/console/console.css", get(style))
}

async fn index() -> impl IntoResponse {
    file("text/html; charset=utf-8", INDEX)
}

async fn script() -> impl IntoResponse {
    file("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> impl IntoResponse {
    file("text/css; charset=utf-8", STYLE)
}

fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
