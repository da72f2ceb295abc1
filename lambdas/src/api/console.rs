//! The operator console: one page and its script and style, compiled into the api function (no
//! Node build). The files hold no data; every view loads it from `/api/v1` with the token the
//! operator signed in with.
//!
//! The page is at `/console` and its files beside it (`console.js`, `console.css`, and the
//! dashboard's charting library under `vendor/`), also under
//! `/console/` for a browser that asks with a trailing slash; the script finds the API from its
//! own address, so the console works under any stage or proxy prefix.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

const INDEX: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/console.js");
const STYLE: &str = include_str!("../../console/console.css");
/// The dashboard's charting library, vendored with its licence (`console/vendor/README.md`).
const CHART_SCRIPT: &str = include_str!("../../console/vendor/uplot.min.js");
const CHART_STYLE: &str = include_str!("../../console/vendor/uplot.min.css");
const CHART_LICENCE: &str = include_str!("../../console/vendor/LICENSE-uPlot.txt");

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
        .route("/vendor/uplot.min.js", get(chart_script))
        .route("/console/vendor/uplot.min.js", get(chart_script))
        .route("/vendor/uplot.min.css", get(chart_style))
        .route("/console/vendor/uplot.min.css", get(chart_style))
        .route("/vendor/LICENSE-uPlot.txt", get(chart_licence))
        .route("/console/vendor/LICENSE-uPlot.txt", get(chart_licence))
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

async fn chart_script() -> impl IntoResponse {
    file("text/javascript; charset=utf-8", CHART_SCRIPT)
}

async fn chart_style() -> impl IntoResponse {
    file("text/css; charset=utf-8", CHART_STYLE)
}

async fn chart_licence() -> impl IntoResponse {
    file("text/plain; charset=utf-8", CHART_LICENCE)
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
