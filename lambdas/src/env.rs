//! Configuration of the Lambdas, read once from the environment the SAM template sets.

use std::env;

#[derive(Debug, thiserror::Error)]
#[error("environment variable {name} {problem}")]
pub struct EnvError {
    name: &'static str,
    problem: String,
}

fn required(name: &'static str) -> Result<String, EnvError> {
    match env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        Ok(_) => Err(EnvError {
            name,
            problem: "is empty".into(),
        }),
        Err(_) => Err(EnvError {
            name,
            problem: "is not set".into(),
        }),
    }
}

fn optional(name: &str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, EnvError> {
    match env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => v.trim().parse().map_err(|_| EnvError {
            name,
            problem: format!("must be a number, got {v:?}"),
        }),
    }
}

/// Settings of the trigger function.
#[derive(Debug, Clone)]
pub struct TriggerEnv {
    /// DynamoDB table of templates.
    pub templates_table: String,
    /// DynamoDB table of jobs.
    pub jobs_table: String,
    /// Pool work queues are named `<prefix><pool>`.
    pub pool_queue_prefix: String,
    /// Where unprocessable event bodies go, with the reason attached.
    pub dead_letter_queue_url: String,
    /// Days a job item is kept before DynamoDB's TTL removes it.
    pub job_ttl_days: i64,
}

impl TriggerEnv {
    pub fn from_env() -> Result<Self, EnvError> {
        Ok(Self {
            templates_table: required("TEMPLATES_TABLE")?,
            jobs_table: required("JOBS_TABLE")?,
            pool_queue_prefix: required("POOL_QUEUE_PREFIX")?,
            dead_letter_queue_url: required("EVENTS_DLQ_URL")?,
            job_ttl_days: number("JOB_TTL_DAYS", 90)?,
        })
    }
}

/// Settings of the status function.
#[derive(Debug, Clone)]
pub struct StatusEnv {
    pub jobs_table: String,
    pub executors_table: String,
    /// Where unprocessable status bodies go, with the reason attached.
    pub dead_letter_queue_url: String,
    /// Each pool's status queue is named `<prefix><pool>`: a report's pool is the one whose
    /// queue it came through.
    pub status_queue_prefix: String,
    pub job_ttl_days: i64,
    /// Pool work queues are named `<prefix><pool>`; executors' control queues after them.
    pub pool_queue_prefix: String,
    /// Templates, read when a job ends (notifications, next step).
    pub templates_table: String,
    /// Where notifications are queued for the notify function.
    pub notify_queue_url: Option<String>,
    /// The bucket of the relay staging area (`staging/…`).
    pub staging_bucket: Option<String>,
    /// Endpoint tests asked by admins, completed with what executors report.
    pub endpoint_tests_table: String,
    /// Each pool's rule lease, schedule ticks and delivered watch jobs.
    pub pools_table: String,
    /// Hourly counts of jobs ended, files and bytes delivered.
    pub stats_table: String,
}

impl StatusEnv {
    pub fn from_env() -> Result<Self, EnvError> {
        Ok(Self {
            jobs_table: required("JOBS_TABLE")?,
            executors_table: required("EXECUTORS_TABLE")?,
            dead_letter_queue_url: required("STATUS_DLQ_URL")?,
            status_queue_prefix: required("STATUS_QUEUE_PREFIX")?,
            job_ttl_days: number("JOB_TTL_DAYS", 90)?,
            pool_queue_prefix: required("POOL_QUEUE_PREFIX")?,
            templates_table: required("TEMPLATES_TABLE")?,
            notify_queue_url: optional("NOTIFY_QUEUE_URL"),
            staging_bucket: optional("STAGING_BUCKET"),
            endpoint_tests_table: required("ENDPOINT_TESTS_TABLE")?,
            pools_table: required("POOLS_TABLE")?,
            stats_table: required("STATS_TABLE")?,
        })
    }
}

/// Settings of the notify function.
#[derive(Debug, Clone)]
pub struct NotifyEnv {
    pub jobs_table: String,
    pub job_ttl_days: i64,
    /// The NotifyQueue itself (to hide a message for its backoff).
    pub queue_url: String,
    /// Where unreadable notification bodies go, with the reason attached.
    pub dead_letter_queue_url: String,
    /// Seconds before the second attempt; each later wait doubles.
    pub backoff_base_seconds: u64,
    /// Attempts before a notification is given up (recorded `failed`).
    pub max_attempts: u32,
    /// Seconds a webhook receiver has to answer.
    pub timeout_seconds: u64,
    /// Webhooks may reach loopback, link-local and private addresses (`WebhookAllowPrivateTargets`).
    pub allow_private_targets: bool,
}

impl NotifyEnv {
    pub fn from_env() -> Result<Self, EnvError> {
        Ok(Self {
            jobs_table: required("JOBS_TABLE")?,
            job_ttl_days: number("JOB_TTL_DAYS", 90)?,
            queue_url: required("NOTIFY_QUEUE_URL")?,
            dead_letter_queue_url: required("NOTIFY_DLQ_URL")?,
            backoff_base_seconds: number("NOTIFY_BACKOFF_SECONDS", 10)?,
            max_attempts: number("NOTIFY_MAX_ATTEMPTS", 8)?,
            timeout_seconds: number("NOTIFY_TIMEOUT_SECONDS", 10)?,
            allow_private_targets: optional("NOTIFY_ALLOW_PRIVATE_TARGETS").as_deref()
                == Some("true"),
        })
    }
}

/// Settings of the monitor function.
#[derive(Debug, Clone)]
pub struct MonitorEnv {
    pub executors_table: String,
    /// The metrics' `Stack` dimension.
    pub stack_name: String,
}

impl MonitorEnv {
    pub fn from_env() -> Result<Self, EnvError> {
        Ok(Self {
            executors_table: required("EXECUTORS_TABLE")?,
            stack_name: required("STACK_NAME")?,
        })
    }
}

/// Settings of the API function.
#[derive(Debug, Clone)]
pub struct ApiEnv {
    pub templates_table: String,
    pub jobs_table: String,
    pub job_ttl_days: i64,
    /// Where pools' rule documents are published; unset: watch and schedule templates are
    /// stored but not delivered.
    pub config_bucket: Option<String>,
    pub executors_table: String,
    pub audit_table: String,
    pub pool_queue_prefix: String,
    /// Where executors upload job logs (`logs/…`); unset: no log viewer.
    pub logs_bucket: Option<String>,
    /// Tokens: issuer (`iss`), optional audience (`aud` or `client_id`), and the issuer's JWKS
    /// (an https URL, or the JWKS document itself for the local dev issuer).
    pub auth_issuer: String,
    pub auth_audience: Option<String>,
    pub auth_jwks: String,
    /// Where job-end notifications are queued (for queued jobs the API cancels).
    pub notify_queue_url: Option<String>,
    /// The status dead-letter queue, whose refused reports an admin may look at.
    pub status_dlq_url: Option<String>,
    /// Endpoint tests asked by admins.
    pub endpoint_tests_table: String,
    /// Hourly counts for the dashboard.
    pub stats_table: String,
}

impl ApiEnv {
    pub fn from_env() -> Result<Self, EnvError> {
        Ok(Self {
            templates_table: required("TEMPLATES_TABLE")?,
            jobs_table: required("JOBS_TABLE")?,
            job_ttl_days: number("JOB_TTL_DAYS", 90)?,
            config_bucket: optional("CONFIG_BUCKET"),
            executors_table: required("EXECUTORS_TABLE")?,
            audit_table: required("AUDIT_TABLE")?,
            pool_queue_prefix: required("POOL_QUEUE_PREFIX")?,
            logs_bucket: optional("LOGS_BUCKET"),
            auth_issuer: required("AUTH_ISSUER")?,
            auth_audience: optional("AUTH_AUDIENCE"),
            auth_jwks: required("AUTH_JWKS")?,
            notify_queue_url: optional("NOTIFY_QUEUE_URL"),
            status_dlq_url: optional("STATUS_DLQ_URL"),
            endpoint_tests_table: required("ENDPOINT_TESTS_TABLE")?,
            stats_table: required("STATS_TABLE")?,
        })
    }
}
