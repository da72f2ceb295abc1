//! The executor's configuration: one TOML file, every field documented, unknown fields refused.
//!
//! Secrets never appear here in clear text in a way that could leak: AWS credentials come from
//! the standard provider chain (environment, profile, instance role), not from this file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pbs_shared::{EndpointName, ExecutorId, PoolName};
use serde::Deserialize;

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This executor's id, unique within its pool. Default: the host name.
    #[serde(default)]
    pub executor_id: Option<ExecutorId>,
    /// The pool this executor serves.
    pub pool: PoolName,
    /// Folder for the ledger (SQLite), job logs and rclone's empty config file.
    pub state_dir: PathBuf,
    /// Jobs run at the same time.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Path of the rclone binary (1.63 or newer: it writes `.partial` files and renames them).
    #[serde(default = "default_rclone")]
    pub rclone: PathBuf,
    /// Bandwidth limit for each transfer, in rclone's `--bwlimit` syntax (`10M` = 10 MiB/s,
    /// `512k`). Default: unlimited.
    #[serde(default)]
    pub bandwidth_limit: Option<String>,
    /// Seconds a running job may take to finish after SIGTERM/SIGINT before rclone is stopped and
    /// its message released to another executor.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_seconds: u64,
    /// The cloud connection. Without it the executor runs standalone.
    #[serde(default)]
    pub cloud: Option<CloudConfig>,
    /// Named endpoints that templates refer to as destinations.
    #[serde(default)]
    pub endpoints: BTreeMap<EndpointName, EndpointConfig>,
}

/// How the executor reaches its pool's queues (outbound HTTPS only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// AWS region of the stack.
    pub region: String,
    /// Endpoint URL override, e.g. a local emulator. Default: AWS.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Endpoint URL for reading source objects from S3, if it differs from `endpoint_url`
    /// (e.g. an S3 VPC endpoint or gateway). Default: `endpoint_url`.
    #[serde(default)]
    pub s3_endpoint_url: Option<String>,
    /// The pool's work queue URL (stack output `DefaultPoolQueueUrl` for the default pool).
    pub work_queue_url: String,
    /// The StatusQueue URL (stack output `StatusQueueUrl`).
    pub status_queue_url: String,
    /// Long-poll wait, 1 to 20 seconds.
    #[serde(default = "default_wait")]
    pub wait_seconds: i32,
    /// How long a received job stays invisible to other executors; renewed while it runs.
    #[serde(default = "default_visibility")]
    pub visibility_timeout_seconds: i32,
}

/// A destination the executor can write to.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EndpointConfig {
    /// A folder on this machine.
    Local {
        /// Absolute path of the endpoint's root folder; files never land outside it.
        root: PathBuf,
    },
}

fn default_concurrency() -> usize {
    4
}
fn default_rclone() -> PathBuf {
    PathBuf::from("rclone")
}
fn default_shutdown_grace() -> u64 {
    30
}
fn default_wait() -> i32 {
    20
}
fn default_visibility() -> i32 {
    300
}

/// rclone's single-rate `--bwlimit` syntax: a number with an optional unit suffix, or `off`.
fn is_bwlimit(v: &str) -> bool {
    if v == "off" {
        return true;
    }
    let digits = v.trim_end_matches(|c: char| "bBkKmMgGtTpP".contains(c));
    v.len() - digits.len() <= 1
        && !digits.is_empty()
        && digits.parse::<f64>().is_ok_and(|n| n > 0.0)
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 || self.concurrency > 256 {
            return Err(format!(
                "concurrency must be 1 to 256, got {}",
                self.concurrency
            ));
        }
        if let Some(limit) = &self.bandwidth_limit
            && !is_bwlimit(limit)
        {
            return Err(format!(
                "bandwidth_limit {limit:?} is not a rate such as \"10M\", \"512k\" or \"off\""
            ));
        }
        if let Some(cloud) = &self.cloud {
            if !(1..=20).contains(&cloud.wait_seconds) {
                return Err(format!(
                    "cloud.wait_seconds must be 1 to 20, got {}",
                    cloud.wait_seconds
                ));
            }
            if !(10..=43_200).contains(&cloud.visibility_timeout_seconds) {
                return Err(format!(
                    "cloud.visibility_timeout_seconds must be 10 to 43200, got {}",
                    cloud.visibility_timeout_seconds
                ));
            }
        }
        for (name, endpoint) in &self.endpoints {
            match endpoint {
                EndpointConfig::Local { root } if !root.is_absolute() => {
                    return Err(format!(
                        "endpoints.{name}.root must be an absolute path, got {}",
                        root.display()
                    ));
                }
                EndpointConfig::Local { .. } => {}
            }
        }
        Ok(())
    }

    /// The executor id, defaulting to the host name (made safe as an id).
    pub fn executor_id(&self) -> ExecutorId {
        if let Some(id) = &self.executor_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let slug: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(63)
            .collect();
        ExecutorId::parse(slug.trim_start_matches('-'))
            .unwrap_or_else(|_| ExecutorId::parse("executor").expect("valid id"))
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../infra/executor.example.toml");

    #[test]
    fn the_shipped_example_parses() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.pool.as_str(), "default");
        assert!(c.cloud.is_some());
        assert!(!c.endpoints.is_empty());
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        let e =
            Config::parse("pool = \"default\"\nstate_dir = \"/tmp\"\ncolour = 1\n").unwrap_err();
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = Config::parse("pool = \"Default\"\nstate_dir = \"/tmp\"\n").unwrap_err();
        assert!(e.contains("invalid pool name"), "{e}");
        let e = Config::parse(
            "pool = \"p\"\nstate_dir = \"/tmp\"\n[endpoints.disk]\ntype = \"local\"\nroot = \"rel\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("endpoints.disk.root must be an absolute path"),
            "{e}"
        );
        let e = Config::parse("pool = \"p\"\nstate_dir = \"/tmp\"\nbandwidth_limit = \"fast\"\n")
            .unwrap_err();
        assert!(e.contains("bandwidth_limit \"fast\""), "{e}");
        assert!(
            Config::parse("pool = \"p\"\nstate_dir = \"/tmp\"\nbandwidth_limit = \"2.5M\"\n")
                .is_ok()
        );
        let e = Config::parse("pool = \"p\"\nstate_dir = \"/tmp\"\nconcurrency = 0\n").unwrap_err();
        assert!(e.contains("concurrency"), "{e}");
        let e = Config::parse(
            "pool = \"p\"\nstate_dir = \"/tmp\"\n[endpoints.x]\ntype = \"ftp\"\nroot = \"/\"\n",
        )
        .unwrap_err();
        assert!(e.contains("unknown variant `ftp`"), "{e}");
    }
}
