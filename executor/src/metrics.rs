//! Prometheus metrics and a health check, served on a loopback address (default 127.0.0.1:9464).
//!
//! The executor accepts no connection from the network: the listener binds 127.0.0.1 unless the
//! operator says otherwise, for a local Prometheus agent or node exporter textfile bridge.
//!
//! `GET /metrics`: jobs by outcome, files and bytes transferred, transfer durations, queue poll
//! errors, status outbox depth, rclone exit codes, rules in force.
//! `GET /healthz`: 200 `ok`, or 503 with the reasons: the ledger cannot be written, the state
//! folder cannot be written, rclone is missing, or the work queue has not answered lately.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::ledger::Ledger;

/// Upper bounds (seconds) of the transfer duration histogram.
const BUCKETS: [f64; 8] = [1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0];
/// Job outcomes counted.
pub const OUTCOMES: [&str; 4] = ["succeeded", "failed", "retried", "interrupted"];
/// SQS operations counted by name; any other counts as `other`.
pub const SQS_OPERATIONS: [&str; 6] = [
    "ReceiveMessage",
    "DeleteMessage",
    "ChangeMessageVisibility",
    "SendMessage",
    "SendMessageBatch",
    "GetQueueAttributes",
];

/// Process-wide counters (atomics: updated from any task without locks).
pub struct Metrics {
    jobs: [AtomicU64; 4],
    files: AtomicU64,
    bytes: AtomicU64,
    duration_buckets: [AtomicU64; 8],
    duration_count: AtomicU64,
    duration_sum_ms: AtomicU64,
    poll_errors: AtomicU64,
    /// rclone exit codes 0 to 9; the last slot counts any other (or a signal).
    rclone_exits: [AtomicU64; 11],
    watch_rules: AtomicU64,
    schedule_rules: AtomicU64,
    /// Copies of jobs received together, and the jobs they held.
    batches: AtomicU64,
    batched_jobs: AtomicU64,
    /// SQS requests (every attempt) by [`SQS_OPERATIONS`]; the last slot counts any other.
    sqs_requests: [AtomicU64; 7],
    /// Unix seconds of the last successful and failed receive from the work queue (0: never).
    last_poll_ok: AtomicI64,
    last_poll_error: AtomicI64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

pub static METRICS: Metrics = Metrics::new();

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Metrics {
    /// Every counter at zero.
    pub const fn new() -> Self {
        Self {
            jobs: [ZERO; 4],
            files: ZERO,
            bytes: ZERO,
            duration_buckets: [ZERO; 8],
            duration_count: ZERO,
            duration_sum_ms: ZERO,
            poll_errors: ZERO,
            rclone_exits: [ZERO; 11],
            watch_rules: ZERO,
            schedule_rules: ZERO,
            batches: ZERO,
            batched_jobs: ZERO,
            sqs_requests: [ZERO; 7],
            last_poll_ok: AtomicI64::new(0),
            last_poll_error: AtomicI64::new(0),
        }
    }

    /// A job attempt ended with `outcome` (one of [`OUTCOMES`]).
    pub fn job(&self, outcome: &str, files: u64, bytes: u64, duration: Duration) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.jobs[i].fetch_add(1, Ordering::Relaxed);
        }
        self.files.fetch_add(files, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let secs = duration.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.duration_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_sum_ms
            .fetch_add(duration.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn rclone_exit(&self, code: Option<i32>) {
        let slot = match code {
            Some(c @ 0..=9) => c as usize,
            _ => 10,
        };
        self.rclone_exits[slot].fetch_add(1, Ordering::Relaxed);
    }

    pub fn poll(&self, ok: bool) {
        if ok {
            self.last_poll_ok.store(now_unix(), Ordering::Relaxed);
        } else {
            self.poll_errors.fetch_add(1, Ordering::Relaxed);
            self.last_poll_error.store(now_unix(), Ordering::Relaxed);
        }
    }

    /// One copy of `jobs` jobs received together.
    pub fn batch(&self, jobs: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batched_jobs.fetch_add(jobs as u64, Ordering::Relaxed);
    }

    /// One SQS request attempt of `operation`.
    pub fn sqs_request(&self, operation: &str) {
        let slot = SQS_OPERATIONS
            .iter()
            .position(|o| *o == operation)
            .unwrap_or(SQS_OPERATIONS.len());
        self.sqs_requests[slot].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rules(&self, watch: usize, schedule: usize) {
        self.watch_rules.store(watch as u64, Ordering::Relaxed);
        self.schedule_rules
            .store(schedule as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, outbox_depth: Option<u64>) -> String {
        let mut out = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP pbs_executor_info Executor version.\n# TYPE pbs_executor_info gauge\npbs_executor_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            out,
            "# HELP pbs_jobs_total Job attempts by outcome.\n# TYPE pbs_jobs_total counter"
        );
        for (i, o) in OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "pbs_jobs_total{{outcome=\"{o}\"}} {}",
                get(&self.jobs[i])
            );
        }
        let _ = writeln!(
            out,
            "# HELP pbs_files_transferred_total Files delivered and verified.\n# TYPE pbs_files_transferred_total counter\npbs_files_transferred_total {}",
            get(&self.files)
        );
        let _ = writeln!(
            out,
            "# HELP pbs_bytes_transferred_total Bytes delivered and verified.\n# TYPE pbs_bytes_transferred_total counter\npbs_bytes_transferred_total {}",
            get(&self.bytes)
        );
        let _ = writeln!(
            out,
            "# HELP pbs_transfer_duration_seconds Duration of job attempts.\n# TYPE pbs_transfer_duration_seconds histogram"
        );
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "pbs_transfer_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                get(&self.duration_buckets[i])
            );
        }
        let count = get(&self.duration_count);
        let _ = writeln!(
            out,
            "pbs_transfer_duration_seconds_bucket{{le=\"+Inf\"}} {count}\npbs_transfer_duration_seconds_sum {:.3}\npbs_transfer_duration_seconds_count {count}",
            get(&self.duration_sum_ms) as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "# HELP pbs_queue_poll_errors_total Failed receives from the work queue.\n# TYPE pbs_queue_poll_errors_total counter\npbs_queue_poll_errors_total {}",
            get(&self.poll_errors)
        );
        let _ = writeln!(
            out,
            "# HELP pbs_batches_total Copies of jobs received together (one rclone run each).\n# TYPE pbs_batches_total counter\npbs_batches_total {}\n# HELP pbs_batched_jobs_total Jobs run in such copies.\n# TYPE pbs_batched_jobs_total counter\npbs_batched_jobs_total {}",
            get(&self.batches),
            get(&self.batched_jobs)
        );
        let _ = writeln!(
            out,
            "# HELP pbs_sqs_requests_total SQS requests sent (each attempt), by operation.\n# TYPE pbs_sqs_requests_total counter"
        );
        for (i, n) in self.sqs_requests.iter().enumerate() {
            let op = SQS_OPERATIONS.get(i).copied().unwrap_or("other");
            let _ = writeln!(
                out,
                "pbs_sqs_requests_total{{operation=\"{op}\"}} {}",
                get(n)
            );
        }
        if let Some(depth) = outbox_depth {
            let _ = writeln!(
                out,
                "# HELP pbs_status_outbox_depth Status reports waiting to be sent.\n# TYPE pbs_status_outbox_depth gauge\npbs_status_outbox_depth {depth}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP pbs_rclone_exits_total rclone runs by exit code.\n# TYPE pbs_rclone_exits_total counter"
        );
        for (code, n) in self.rclone_exits.iter().enumerate() {
            let n = get(n);
            if n > 0 {
                let label = if code == 10 {
                    "other".to_owned()
                } else {
                    code.to_string()
                };
                let _ = writeln!(out, "pbs_rclone_exits_total{{code=\"{label}\"}} {n}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP pbs_rules Watch and schedule rules in force.\n# TYPE pbs_rules gauge\npbs_rules{{kind=\"watch\"}} {}\npbs_rules{{kind=\"schedule\"}} {}",
            get(&self.watch_rules),
            get(&self.schedule_rules)
        );
        out
    }
}

/// Counts the SQS requests of a client in [`METRICS`], by the operation its `x-amz-target`
/// header names (`AmazonSQS.ReceiveMessage`, ...).
#[derive(Debug)]
pub struct CountSqsRequests;

impl aws_sdk_sqs::config::Intercept for CountSqsRequests {
    fn name(&self) -> &'static str {
        "CountSqsRequests"
    }

    fn read_before_attempt(
        &self,
        context: &aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_sqs::config::RuntimeComponents,
        _cfg: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), aws_sdk_sqs::error::BoxError> {
        let operation = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.strip_prefix("AmazonSQS."))
            .unwrap_or("other");
        METRICS.sqs_request(operation);
        Ok(())
    }
}

/// An SQS client whose requests are counted in `/metrics`.
pub fn counted_sqs_client(sdk: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::config::Builder::from(sdk)
        .interceptor(CountSqsRequests)
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

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
        if let Some(wait) = self.poll_wait {
            let ok = METRICS.last_poll_ok.load(Ordering::Relaxed);
            let err = METRICS.last_poll_error.load(Ordering::Relaxed);
            // Failing now, and no success for three long polls and a minute.
            let stale = now_unix() - ok > (3 * wait.as_secs() as i64 + 60);
            if err > ok && stale {
                problems.push("the work queue has not answered for more than three polls".into());
            }
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

/// Serves `/metrics` and `/healthz` on `listen` until `stop`.
pub async fn serve(listener: TcpListener, health: Arc<Health>, stop: CancellationToken) {
    loop {
        let (mut conn, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "metrics listener accept failed");
                    continue;
                }
            },
        };
        let health = health.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let n = match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("GET "))
                .and_then(|l| l.split(' ').next())
                .unwrap_or("");
            let (status, content_type, body) = match path {
                "/metrics" => (
                    "200 OK",
                    "text/plain; version=0.0.4",
                    METRICS.render(health.ledger.outbox_depth().ok()),
                ),
                "/healthz" => {
                    let problems = tokio::task::spawn_blocking({
                        let health = health.clone();
                        move || health.problems()
                    })
                    .await
                    .unwrap_or_else(|e| vec![format!("health check failed: {e}")]);
                    if problems.is_empty() {
                        ("200 OK", "text/plain", "ok\n".to_owned())
                    } else {
                        (
                            "503 Service Unavailable",
                            "text/plain",
                            format!("unhealthy\n{}\n", problems.join("\n")),
                        )
                    }
                }
                _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Binds the metrics listener; logs where it serves.
pub async fn bind(listen: &str) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(listen).await?;
    info!(addr = %listener.local_addr()?, "serving /metrics and /healthz");
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_counts_what_happened() {
        let m = Metrics::new();
        m.job("succeeded", 3, 300, Duration::from_secs(2));
        m.job("failed", 0, 0, Duration::from_millis(500));
        m.rclone_exit(Some(0));
        m.rclone_exit(Some(0));
        m.rclone_exit(Some(3));
        m.rclone_exit(None);
        m.poll(false);
        m.rules(2, 1);
        let text = m.render(Some(4));
        for line in [
            "pbs_jobs_total{outcome=\"succeeded\"} 1",
            "pbs_jobs_total{outcome=\"failed\"} 1",
            "pbs_files_transferred_total 3",
            "pbs_bytes_transferred_total 300",
            "pbs_transfer_duration_seconds_bucket{le=\"1\"} 1",
            "pbs_transfer_duration_seconds_bucket{le=\"5\"} 2",
            "pbs_transfer_duration_seconds_bucket{le=\"+Inf\"} 2",
            "pbs_transfer_duration_seconds_sum 2.500",
            "pbs_queue_poll_errors_total 1",
            "pbs_status_outbox_depth 4",
            "pbs_rclone_exits_total{code=\"0\"} 2",
            "pbs_rclone_exits_total{code=\"3\"} 1",
            "pbs_rclone_exits_total{code=\"other\"} 1",
            "pbs_rules{kind=\"watch\"} 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
    }
}
