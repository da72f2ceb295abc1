//! The executor's Prometheus metrics: jobs by outcome, files and bytes transferred, transfer
//! durations, queue poll errors, status outbox depth, rclone exit codes, rules in force, SQS
//! requests. Counters live in one process-wide [`METRICS`] (atomics: updated from any task
//! without locks) and are encoded by `prometheus-client`; `http.rs` serves them.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the transfer duration histogram.
const BUCKETS: [f64; 8] = [1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0];
/// SQS operations counted by name; any other counts as `other`.
const SQS_OPERATIONS: [&str; 6] = [
    "ReceiveMessage",
    "DeleteMessage",
    "ChangeMessageVisibility",
    "SendMessage",
    "SendMessageBatch",
    "GetQueueAttributes",
];

/// How a job attempt ended, as `pbs_jobs_total` counts it.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values are the lower-case words operators query by
pub enum Outcome {
    succeeded,
    failed,
    cancelled,
    /// Failed, and will run again.
    retried,
    /// Stopped by the executor's shutdown; another executor (or this one) runs it again.
    interrupted,
}

impl Outcome {
    /// The outcome of an attempt that ended the job in `state`.
    pub fn of(state: pbs_shared::JobState) -> Self {
        match state {
            pbs_shared::JobState::Succeeded => Outcome::succeeded,
            pbs_shared::JobState::Cancelled => Outcome::cancelled,
            _ => Outcome::failed,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// Every metric of the executor, registered once.
pub struct Metrics {
    registry: Registry,
    jobs: Family<OutcomeLabel, Counter>,
    files: Counter,
    bytes: Counter,
    durations: Histogram,
    poll_errors: Counter,
    rclone_exits: Family<CodeLabel, Counter>,
    rules: Family<KindLabel, Gauge>,
    batches: Counter,
    batched_jobs: Counter,
    refused: Counter,
    sqs_requests: Family<OperationLabel, Counter>,
    outbox_depth: Gauge,
    /// Unix seconds of the last successful and failed receive from the work queue (0: never).
    last_poll_ok: AtomicI64,
    last_poll_error: AtomicI64,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Metrics {
    /// Every metric at zero, registered under its documented name (docs/operations.md).
    pub fn new() -> Self {
        let mut m = Self {
            jobs: Family::default(),
            files: Counter::default(),
            bytes: Counter::default(),
            durations: Histogram::new(BUCKETS),
            poll_errors: Counter::default(),
            rclone_exits: Family::default(),
            rules: Family::default(),
            batches: Counter::default(),
            batched_jobs: Counter::default(),
            refused: Counter::default(),
            sqs_requests: Family::default(),
            outbox_depth: Gauge::default(),
            last_poll_ok: AtomicI64::new(0),
            last_poll_error: AtomicI64::new(0),
            registry: Registry::default(),
        };
        // Every outcome and SQS operation is shown from the start, at zero.
        for outcome in [
            Outcome::succeeded,
            Outcome::failed,
            Outcome::cancelled,
            Outcome::retried,
            Outcome::interrupted,
        ] {
            let _ = m.jobs.get_or_create(&OutcomeLabel { outcome });
        }
        for operation in SQS_OPERATIONS.into_iter().chain(["other"]) {
            let _ = m.sqs_requests.get_or_create(&OperationLabel { operation });
        }
        m.register();
        m
    }

    /// Registers every metric in `self.registry` (metrics share their counters with their clones).
    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "pbs_executor",
            "Executor version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register("pbs_jobs", "Job attempts by outcome", self.jobs.clone());
        r.register(
            "pbs_files_transferred",
            "Files delivered and verified",
            self.files.clone(),
        );
        r.register(
            "pbs_bytes_transferred",
            "Bytes delivered and verified",
            self.bytes.clone(),
        );
        r.register(
            "pbs_transfer_duration_seconds",
            "Duration of job attempts",
            self.durations.clone(),
        );
        r.register(
            "pbs_queue_poll_errors",
            "Failed receives from the work queue",
            self.poll_errors.clone(),
        );
        r.register(
            "pbs_batches",
            "Copies of jobs received together (one rclone run each)",
            self.batches.clone(),
        );
        r.register(
            "pbs_batched_jobs",
            "Jobs run in such copies",
            self.batched_jobs.clone(),
        );
        r.register(
            "pbs_jobs_refused",
            "Queued jobs refused: another pool's, or beyond an endpoint's cloud setting",
            self.refused.clone(),
        );
        r.register(
            "pbs_sqs_requests",
            "SQS requests sent (each attempt), by operation",
            self.sqs_requests.clone(),
        );
        r.register(
            "pbs_status_outbox_depth",
            "Status reports waiting to be sent",
            self.outbox_depth.clone(),
        );
        r.register(
            "pbs_rclone_exits",
            "rclone runs by exit code",
            self.rclone_exits.clone(),
        );
        r.register(
            "pbs_rules",
            "Watch and schedule rules in force",
            self.rules.clone(),
        );
    }

    /// A queued job was refused (see `jobs::admit`).
    pub fn refused(&self) {
        self.refused.inc();
    }

    /// A job attempt ended with `outcome`, having delivered `files` files of `bytes` bytes.
    pub fn job(&self, outcome: Outcome, files: u64, bytes: u64, duration: Duration) {
        self.jobs.get_or_create(&OutcomeLabel { outcome }).inc();
        self.files.inc_by(files);
        self.bytes.inc_by(bytes);
        self.durations.observe(duration.as_secs_f64());
    }

    /// An rclone run ended with exit `code` (`None`: killed by a signal).
    pub fn rclone_exit(&self, code: Option<i32>) {
        let code = match code {
            Some(c @ 0..=9) => c.to_string(),
            _ => "other".to_owned(),
        };
        self.rclone_exits.get_or_create(&CodeLabel { code }).inc();
    }

    /// A receive from the work queue answered (`ok`) or failed.
    pub fn poll(&self, ok: bool) {
        if ok {
            self.last_poll_ok.store(now_unix(), Ordering::Relaxed);
        } else {
            self.poll_errors.inc();
            self.last_poll_error.store(now_unix(), Ordering::Relaxed);
        }
    }

    /// Whether the work queue has been failing for longer than three long polls (of `wait`) and
    /// a minute.
    pub fn queue_silent(&self, wait: Duration) -> bool {
        let ok = self.last_poll_ok.load(Ordering::Relaxed);
        let err = self.last_poll_error.load(Ordering::Relaxed);
        let stale = now_unix() - ok > (3 * wait.as_secs() as i64 + 60);
        err > ok && stale
    }

    /// One copy of `jobs` jobs received together.
    pub fn batch(&self, jobs: usize) {
        self.batches.inc();
        self.batched_jobs.inc_by(jobs as u64);
    }

    /// One SQS request attempt of `operation`.
    pub fn sqs_request(&self, operation: &str) {
        let operation = SQS_OPERATIONS
            .into_iter()
            .find(|o| *o == operation)
            .unwrap_or("other");
        self.sqs_requests
            .get_or_create(&OperationLabel { operation })
            .inc();
    }

    /// The watch and schedule rules now in force.
    pub fn rules(&self, watch: usize, schedule: usize) {
        for (kind, n) in [("watch", watch), ("schedule", schedule)] {
            self.rules.get_or_create(&KindLabel { kind }).set(n as i64);
        }
    }

    /// The text exposition (OpenMetrics), with the outbox depth read just now.
    pub fn render(&self, outbox_depth: Option<u64>) -> String {
        if let Some(depth) = outbox_depth {
            self.outbox_depth.set(depth as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn has(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in:\n{text}"
        );
    }

    #[test]
    fn the_exposition_counts_what_happened() {
        let m = Metrics::new();
        m.job(Outcome::succeeded, 3, 300, Duration::from_secs(2));
        m.job(Outcome::failed, 0, 0, Duration::from_millis(500));
        m.rclone_exit(Some(0));
        m.rclone_exit(Some(0));
        m.rclone_exit(Some(3));
        m.rclone_exit(None);
        m.poll(false);
        m.rules(2, 1);
        m.sqs_request("ReceiveMessage");
        m.sqs_request("ListQueues");
        let text = m.render(Some(4));
        for line in [
            "pbs_jobs_total{outcome=\"succeeded\"} 1",
            "pbs_jobs_total{outcome=\"failed\"} 1",
            "pbs_jobs_total{outcome=\"cancelled\"} 0",
            "pbs_files_transferred_total 3",
            "pbs_bytes_transferred_total 300",
            "pbs_transfer_duration_seconds_bucket{le=\"1.0\"} 1",
            "pbs_transfer_duration_seconds_bucket{le=\"5.0\"} 2",
            "pbs_transfer_duration_seconds_bucket{le=\"+Inf\"} 2",
            "pbs_transfer_duration_seconds_sum 2.5",
            "pbs_queue_poll_errors_total 1",
            "pbs_status_outbox_depth 4",
            "pbs_rclone_exits_total{code=\"0\"} 2",
            "pbs_rclone_exits_total{code=\"3\"} 1",
            "pbs_rclone_exits_total{code=\"other\"} 1",
            "pbs_rules{kind=\"watch\"} 2",
            "pbs_rules{kind=\"schedule\"} 1",
            "pbs_sqs_requests_total{operation=\"ReceiveMessage\"} 1",
            "pbs_sqs_requests_total{operation=\"other\"} 1",
            "pbs_executor_info{version=\"0.1.0\"} 1",
        ] {
            has(&text, line);
        }
    }

    #[test]
    fn a_cancelled_attempt_is_counted_as_cancelled() {
        let m = Metrics::new();
        m.job(Outcome::cancelled, 0, 0, Duration::from_secs(1));
        let text = m.render(None);
        has(&text, "pbs_jobs_total{outcome=\"cancelled\"} 1");
        has(&text, "pbs_jobs_total{outcome=\"failed\"} 0");
    }
}
