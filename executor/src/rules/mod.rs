//! Watch folders and cron schedules: the rules of the TOML file and of the cloud, each turned into
//! local jobs handed to `jobs::local`.
//!
//! - `clock`: pure decisions (filters, cron clocks, job ids, the jobs a rule makes);
//! - `watch`, `poll`, `schedule`: one worker per rule (a local folder followed through file
//!   events, a remote folder polled, a cron schedule);
//! - `rule_set`: which rules run, started, replaced and stopped as their sources change;
//! - `cloud`: the cloud rules in force, for the schedule runs and retries the cloud sends.
//!
//! May depend on `jobs`, `transfer`, `config` and `metrics`.

pub mod clock;
pub mod cloud;
pub mod poll;
pub mod rule_set;
pub mod schedule;
pub mod watch;

use std::path::{Path, PathBuf};

use pbs_shared::EndpointName;
use tokio_util::sync::CancellationToken;

use crate::jobs::local::LocalJobs;
use crate::transfer::Runner;
use crate::transfer::endpoints::{Endpoints, Side};

/// The rclone log of a rule's listings and file operations outside its jobs (`kind`: `watch`
/// or `schedule`).
pub fn rule_log(jobs: &LocalJobs, kind: &str, name: &str) -> PathBuf {
    jobs.ctx
        .config
        .state_dir
        .join("logs")
        .join(format!("{kind}-{name}.log"))
}

/// Runs a rule's rclone steps outside its jobs on `side` (no bandwidth limit; `side`'s secrets
/// redacted from errors).
pub fn runner<'a>(
    jobs: &'a LocalJobs,
    side: &Side,
    log: &'a Path,
    abort: &'a CancellationToken,
) -> Runner<'a> {
    let config = &jobs.ctx.config;
    Runner {
        rclone: &config.rclone,
        home: &config.state_dir,
        log,
        secrets: side.secrets(),
        bandwidth_limit: None,
        abort,
    }
}

/// A rule's source endpoint as rclone's `SRC` (with the executor's AWS credentials for S3).
pub async fn source_side(
    jobs: &LocalJobs,
    endpoints: &Endpoints,
    name: &EndpointName,
) -> Result<Side, String> {
    side(jobs, endpoints, name, "SRC").await
}

/// The endpoint `name` as rclone's remote `remote_name`.
pub async fn side(
    jobs: &LocalJobs,
    endpoints: &Endpoints,
    name: &EndpointName,
    remote_name: &'static str,
) -> Result<Side, String> {
    let ctx = &jobs.ctx;
    let endpoint = endpoints.get(name).map_err(|e| e.to_string())?;
    let creds = if matches!(endpoint.config, crate::config::EndpointConfig::S3(_)) {
        use aws_credential_types::provider::ProvideCredentials;
        Some(
            ctx.credentials
                .provide_credentials()
                .await
                .map_err(|e| format!("AWS credentials: {e}"))?,
        )
    } else {
        None
    };
    endpoint
        .side(remote_name, ctx.config.cloud.as_ref(), creds.as_ref())
        .map_err(|e| e.to_string())
}
