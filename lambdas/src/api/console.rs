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

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The files beside the page: (path relative to it, content type, body). The charting library
/// of the dashboard is vendored with its licence (`console/vendor/README.md`).
const FILES: [(&str, &str, &str); 5] = [
    ("console.js", JS, include_str!("../../console/console.js")),
    (
        "console.css",
        CSS,
        include_str!("../../console/console.css"),
    ),
    (
        "vendor/uplot.min.js",
        JS,
        include_str!("../../console/vendor/uplot.min.js"),
    ),
    (
        "vendor/uplot.min.css",
        CSS,
        include_str!("../../console/vendor/uplot.min.css"),
    ),
    (
        "vendor/LICENSE-uPlot.txt",
        "text/plain; charset=utf-8",
        include_str!("../../console/vendor/LICENSE-uPlot.txt"),
    ),
];

/// Content-Security-Policy: only this origin's script and style; no inline script.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The console's routes, for a router of any state (the files need none). Each file is served
/// beside `/console` and beside `/console/`, where a browser resolves it from either address.
pub fn routes<T: Clone + Send + Sync + 'static>() -> Router<T> {
    let index = || async { file("text/html; charset=utf-8", INDEX) };
    let mut router = Router::new()
        .route("/", get(|| async { Redirect::to("console") }))
        .route("/console", get(index))
        .route("/console/", get(index));
    for (path, content_type, body) in FILES {
        let serve = move || async move { file(content_type, body) };
        router = router
            .route(&format!("/{path}"), get(serve))
            .route(&format!("/console/{path}"), get(serve));
    }
    router
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
