//! `pbs-executor endpoints test`: proves an endpoint works by writing, listing, reading and
//! deleting a small probe file, and says in an operator's terms what is wrong when it does not
//! (DNS, connection, host key or TLS, credentials, permission, share or path not found).
//!
//! Every step runs with short timeouts and a single try, so a broken endpoint is reported in
//! seconds rather than after rclone's usual minutes of retries.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::EndpointConfig;
use crate::transfer::endpoints::{Endpoint, Side};
use crate::transfer::rclone::{self, Invocation, Problem, RunError};

/// The outcome of probing one endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub endpoint: String,
    /// Type and address, without credentials.
    pub location: String,
    pub ok: bool,
    /// The step that failed: `list`, `write`, `read`, `delete`, `verify` or `setup`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<&'static str>,
    /// `dns`, `connect`, `host_key`, `tls`, `auth`, `permission`, `not_found`, `throttled`, or
    /// `other`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub elapsed_ms: u64,
}

impl ProbeReport {
    /// One line for a terminal.
    pub fn line(&self) -> String {
        let secs = self.elapsed_ms as f64 / 1000.0;
        if self.ok {
            format!(
                "{} ({}): ok in {secs:.2} s (list, write, read, delete)",
                self.endpoint, self.location
            )
        } else {
            format!(
                "{} ({}): FAILED [{}] at {} after {secs:.2} s: {}",
                self.endpoint,
                self.location,
                self.problem.unwrap_or("other"),
                self.step.unwrap_or("?"),
                self.message.as_deref().unwrap_or("")
            )
        }
    }
}

/// What to check when a probe fails with `problem`, in an operator's words.
pub fn hint(problem: Option<&str>) -> &'static str {
    match problem {
        Some("dns") => "check the host name and the site's DNS",
        Some("connect") => "check that the server is up and the port open from this machine",
        Some("host_key") => "check known_hosts_file against the server's host key fingerprint",
        Some("auth") => "check the user, domain and password or key",
        Some("permission") => "grant the account access to the share, folder or bucket",
        Some("not_found") => "check share, bucket and root",
        _ => "run `pbs-executor endpoints test` and read the message",
    }
}

/// Where an endpoint is, for messages (never a credential).
pub fn location(config: &EndpointConfig) -> String {
    match config {
        EndpointConfig::Local(l) => format!("local {}", l.root.display()),
        EndpointConfig::Smb(e) => format!(
            "smb //{}:{}/{}/{}",
            e.host,
            e.port,
            e.share,
            e.root.trim_matches('/')
        )
        .trim_end_matches('/')
        .to_owned(),
        EndpointConfig::Sftp(e) => format!("sftp {}@{}:{} {}", e.user, e.host, e.port, e.root),
        EndpointConfig::S3(e) => format!("s3://{}/{}", e.bucket, e.root)
            .trim_end_matches('/')
            .to_owned(),
    }
}

struct Step<'a> {
    rclone: &'a Path,
    home: &'a Path,
    log: &'a Path,
    side: &'a Side,
    cancel: CancellationToken,
}

struct StepError {
    step: &'static str,
    problem: Option<Problem>,
    message: String,
}

impl Step<'_> {
    async fn run(
        &self,
        step: &'static str,
        inv: Invocation,
        tolerate: &[i32],
    ) -> Result<(i32, Vec<u8>), StepError> {
        // One try, short timeouts: a broken endpoint answers in seconds.
        let inv = inv
            .args([
                "--low-level-retries",
                "1",
                "--contimeout",
                "5s",
                "--timeout",
                "15s",
            ])
            .remote(&self.side.remote);
        let rt = rclone::Runtime {
            rclone: self.rclone,
            home: self.home,
            log: self.log,
            secrets: &self.side.secrets(),
            cancel: &self.cancel,
            kill_after: Duration::from_secs(2),
        };
        rclone::run_checked(&rt, &inv, tolerate)
            .await
            .map_err(|e| match e {
                RunError::Spawn(message) => StepError {
                    step,
                    problem: None,
                    message,
                },
                RunError::Cancelled => StepError {
                    step,
                    problem: Some(Problem::Connect),
                    message: "no answer within the probe's time limit".into(),
                },
                RunError::Exit { code, message } => StepError {
                    step,
                    problem: rclone::diagnose(&message).or(match code {
                        Some(3 | 4) => Some(Problem::NotFound),
                        _ => None,
                    }),
                    message,
                },
            })
    }
}

/// Probes `side` (the endpoint `endpoint` as rclone remote) within `limit`.
pub async fn probe(
    endpoint: &Endpoint,
    side: &Side,
    rclone: &Path,
    home: &Path,
    limit: Duration,
) -> ProbeReport {
    let started = Instant::now();
    let log = home
        .join("logs")
        .join(format!("probe-{}.log", endpoint.name));
    let _ = std::fs::remove_file(&log);
    let cancel = CancellationToken::new();
    let timer = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            cancel.cancel();
        })
    };
    let step = Step {
        rclone,
        home,
        log: &log,
        side,
        cancel,
    };
    let result = steps(&step, endpoint).await;
    timer.abort();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let mut report = ProbeReport {
        endpoint: endpoint.name.to_string(),
        location: location(&endpoint.config),
        ok: result.is_ok(),
        step: None,
        problem: None,
        message: None,
        elapsed_ms,
    };
    if let Err(e) = result {
        report.step = Some(e.step);
        report.problem = Some(e.problem.map_or("other", Problem::as_str));
        report.message = Some(e.message);
    }
    report
}

async fn steps(step: &Step<'_>, endpoint: &Endpoint) -> Result<(), StepError> {
    // The root must exist: writing the probe would otherwise create it and hide a wrong path.
    // (S3 has no folders; a missing bucket shows at the write.)
    if !matches!(endpoint.config, EndpointConfig::S3(_)) {
        root_exists(step).await?;
    }
    let name = format!(".pbs-probe-{}", probe_suffix());
    let body = format!("pbs-executor connectivity probe {name}\n").into_bytes();
    step.run(
        "write",
        Invocation::new("rcat", step.log)
            .arg(step.side.spec(&name))
            .stdin(body.clone()),
        &[],
    )
    .await?;
    let outcome = read_back(step, &name, &body).await;
    // The probe is removed whatever happened after it was written.
    let deleted = step
        .run(
            "delete",
            Invocation::new("deletefile", step.log).arg(step.side.spec(&name)),
            &[],
        )
        .await;
    outcome.and(deleted.map(drop))
}

/// The endpoint's root folder lists.
async fn root_exists(step: &Step<'_>) -> Result<(), StepError> {
    let (code, _) = step
        .run(
            "list",
            Invocation::new("lsjson", step.log)
                .args(["--stat", "--dirs-only"])
                .arg(step.side.root_spec()),
            &[3],
        )
        .await?;
    if code == 3 {
        return Err(StepError {
            step: "list",
            problem: Some(Problem::NotFound),
            message: format!("root folder {:?} does not exist", step.side.path("")),
        });
    }
    Ok(())
}

/// The probe file `name` lists with its size and reads back as `body`.
async fn read_back(step: &Step<'_>, name: &str, body: &[u8]) -> Result<(), StepError> {
    let (_, listed) = step
        .run(
            "list",
            Invocation::new("lsjson", step.log)
                .args(["--stat", "--files-only"])
                .arg(step.side.spec(name)),
            &[],
        )
        .await?;
    let size = serde_json::from_slice::<serde_json::Value>(&listed)
        .ok()
        .and_then(|v| v["Size"].as_u64());
    if size != Some(body.len() as u64) {
        return Err(StepError {
            step: "verify",
            problem: None,
            message: format!(
                "the probe file lists with size {size:?}, {} bytes were written",
                body.len()
            ),
        });
    }
    let (_, read) = step
        .run(
            "read",
            Invocation::new("cat", step.log).arg(step.side.spec(name)),
            &[],
        )
        .await?;
    if read != body {
        return Err(StepError {
            step: "verify",
            problem: None,
            message: "the probe file reads back different from what was written".into(),
        });
    }
    Ok(())
}

fn probe_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{}", nanos, std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::transfer::endpoints::Endpoints;
    use pbs_shared::EndpointName;

    async fn probe_local(root: &Path, state: &Path) -> ProbeReport {
        std::fs::create_dir_all(state.join("logs")).unwrap();
        let config = Config::parse(&format!(
            "pool = \"p\"\nstate_dir = \"{}\"\nrclone = \"{}\"\n[endpoints.disk]\ntype = \"local\"\nroot = \"{}\"\n",
            state.display(),
            rclone::test_binary().display(),
            root.display()
        ))
        .unwrap();
        let eps = Endpoints::resolve(&config).await.unwrap();
        let ep = eps.get(&EndpointName::parse("disk").unwrap()).unwrap();
        let side = ep.side("DST", None, None).unwrap();
        probe(ep, &side, &config.rclone, state, Duration::from_secs(20)).await
    }

    #[tokio::test]
    async fn a_local_folder_passes_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let r = probe_local(&root, &dir.path().join("state")).await;
        assert!(r.ok, "{}", r.line());
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_missing_root_is_not_found_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("missing");
        let r = probe_local(&root, &dir.path().join("state")).await;
        assert!(!r.ok);
        assert_eq!((r.step, r.problem), (Some("list"), Some("not_found")));
        assert!(!root.exists(), "the probe created the root");
    }
}
