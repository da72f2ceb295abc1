//! `GET /metrics` and `GET /healthz` on a loopback address (default 127.0.0.1:9464), served by
//! axum.
//!
//! The executor accepts no connection from the network: the listener binds 127.0.0.1 unless the
//! operator says otherwise, for a local Prometheus agent or node exporter textfile bridge.
//! `/healthz` answers 200 `ok`, or 503 with the reasons: the ledger cannot be written, the state
//! folder cannot be written, rclone is missing, or the work queue has not answered lately.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::ledger::Ledger;
use crate::metrics::METRICS;

/// What `/healthz` looks at.
pub struct Health {
    pub ledger: Arc<Ledger>,
    pub state_dir: PathBuf,
    pub rclone: PathBuf,
    /// The work queue's long-poll wait, when a cloud is configured.
    pub poll_wait: Option<Duration>,
}

impl Health {
    /// The reasons the executor is unhealthy (empty: healthy).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = self.ledger.check_writable() {
            problems.push(format!("ledger: {e}"));
        }
        let probe = self.state_dir.join(".healthz");
        match std::fs::write(&probe, b"ok") {
            Ok(()) => {
                let _ = std::fs::remove_file(&probe);
            }
            Err(e) => problems.push(format!(
                "state folder {} is not writable: {e}",
                self.state_dir.display()
            )),
        }
        if !rclone_runnable(&self.rclone) {
            problems.push(format!(
                "rclone {} is missing or not executable",
                self.rclone.display()
            ));
        }
        if let Some(wait) = self.poll_wait
            && METRICS.queue_silent(wait)
        {
            problems.push("the work queue has not answered for more than three polls".into());
        }
        problems
    }
}

fn rclone_runnable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let found = if path.components().count() > 1 {
        Some(path.to_owned())
    } else {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(path))
                .find(|c| c.is_file())
        })
    };
    found
        .and_then(|p| std::fs::metadata(p).ok())
        .is_some_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

async fn metrics(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let depth = health.ledger.outbox_depth().ok();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        METRICS.render(depth),
    )
}

async fn healthz(State(health): State<Arc<Health>>) -> (StatusCode, String) {
    // The checks touch the disk: off the async workers.
    let problems = tokio::task::spawn_blocking(move || health.problems())
        .await
        .unwrap_or_else(|e| vec![format!("health check failed: {e}")]);
    if problems.is_empty() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy\n{}\n", problems.join("\n")),
        )
    }
}

/// The routes, for [`serve`] and for tests.
pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(health)
}

/// Binds the listener; logs where it serves.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "serving /metrics and /healthz");
    Ok(listener)
}

/// Serves `/metrics` and `/healthz` on `listener` until `stop`.
pub async fn serve(listener: TcpListener, health: Arc<Health>, stop: CancellationToken) {
    let served = axum::serve(listener, router(health))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(e) = served {
        warn!(error = %e, "the metrics listener stopped");
    }
}
