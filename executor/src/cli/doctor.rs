//! `pbs-executor doctor`: one line per check of what the executor needs, each failure with a fix
//! hint; the exit status is non-zero when any check fails.

use std::path::Path;
use std::time::Duration;

use aws_credential_types::provider::ProvideCredentials;
use pbs_shared::StatusMessage;
use pbs_shared::message::{Probe, V1};

use crate::config::Config;
use crate::transfer::endpoints::Endpoints;
use crate::transfer::{probe, rclone};

/// The fix when AWS refuses the executor's credentials an action on a queue.
const POLICY_HINT: &str = "attach the pool's executor policy (stack output DefaultPoolExecutorPolicyArn) to these credentials";

/// Whether an AWS error text (lowercased) is a permission refusal.
fn is_denied(lower: &str) -> bool {
    lower.contains("accessdenied") || lower.contains("not authorized")
}

/// The result of one check.
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// What to do about a failure.
    pub hint: Option<&'static str>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok: true,
            detail: detail.into(),
            hint: None,
        }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, hint: &'static str) -> Self {
        Self {
            name: name.into(),
            ok: false,
            detail: detail.into(),
            hint: Some(hint),
        }
    }

    pub fn line(&self) -> String {
        match (self.ok, self.hint) {
            (true, _) => format!("ok    {}: {}", self.name, self.detail),
            (false, Some(h)) => format!("FAIL  {}: {} (fix: {h})", self.name, self.detail),
            (false, None) => format!("FAIL  {}: {}", self.name, self.detail),
        }
    }
}

/// Free space under `dir`, in bytes.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path contains a NUL byte"))?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Runs every check of `config` (already loaded).
/// Runs every check and prints one line each; fails when any check failed.
pub async fn print(config: &Config) -> anyhow::Result<()> {
    let checks = run(config).await;
    for c in &checks {
        println!("{}", c.line());
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed");
    }
    Ok(())
}

async fn run(config: &Config) -> Vec<Check> {
    let mut checks = vec![Check::ok(
        "config",
        format!(
            "pool {}, executor {}, {} endpoint(s), {} watch and {} schedule rule(s), {}",
            config.pool,
            config.executor_id(),
            config.endpoints.len(),
            config.watch.len(),
            config.schedule.len(),
            if config.cloud.is_some() {
                "cloud configured"
            } else {
                "standalone"
            }
        ),
    )];

    let rclone_ok = match rclone::check_version(&config.rclone).await {
        Ok(v) => {
            checks.push(Check::ok("rclone", v));
            true
        }
        Err(e) => {
            checks.push(Check::fail(
                "rclone",
                e.to_string(),
                "install rclone 1.63 or newer, or set `rclone` to its path in the configuration",
            ));
            false
        }
    };

    let state = &config.state_dir;
    let probe_file = state.join(".doctor");
    match std::fs::create_dir_all(state).and_then(|()| std::fs::write(&probe_file, b"ok")) {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe_file);
            match free_bytes(state) {
                Ok(free) if free < 1 << 30 => checks.push(Check::fail(
                    "state folder",
                    format!("{}: only {} MiB free", state.display(), free >> 20),
                    "free space there (logs under logs/ can be pruned) or move state_dir",
                )),
                Ok(free) => checks.push(Check::ok(
                    "state folder",
                    format!("{} writable, {} GiB free", state.display(), free >> 30),
                )),
                Err(e) => checks.push(Check::fail(
                    "state folder",
                    format!("{}: cannot read free space: {e}", state.display()),
                    "check the mount of state_dir",
                )),
            }
        }
        Err(e) => checks.push(Check::fail(
            "state folder",
            format!("{} is not writable: {e}", state.display()),
            "create it and give the executor's user write access",
        )),
    }

    let endpoints = match Endpoints::resolve(config).await {
        Ok(e) => {
            checks.push(Check::ok(
                "endpoint secrets",
                "every password variable and file is readable",
            ));
            Some(e)
        }
        Err(e) => {
            checks.push(Check::fail(
                "endpoint secrets",
                e.to_string(),
                "set the named environment variable, or make the file readable by the executor's user",
            ));
            None
        }
    };

    let needs_aws = config.cloud.is_some() || endpoints.as_ref().is_some_and(|e| e.uses_s3());
    let mut creds = None;
    if needs_aws {
        let sdk = config.aws_sdk_config().await;
        let resolved = match sdk.credentials_provider() {
            Some(p) => p.provide_credentials().await.map_err(|e| e.to_string()),
            None => Err("no credentials provider".into()),
        };
        match resolved {
            Ok(c) => {
                checks.push(Check::ok(
                    "aws credentials",
                    format!("access key {}…", &c.access_key_id()[..c.access_key_id().len().min(4)]),
                ));
                creds = Some(c);
            }
            Err(e) => checks.push(Check::fail(
                "aws credentials",
                e,
                "give the executor's user credentials: environment, a profile, an instance role or IAM Roles Anywhere",
            )),
        }
        if let (Some(cloud), Some(_)) = (&config.cloud, &creds) {
            let sqs = aws_sdk_sqs::Client::new(&sdk);
            let attrs = sqs
                .get_queue_attributes()
                .queue_url(&cloud.work_queue_url)
                .attribute_names(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages,
                )
                .send()
                .await;
            match attrs {
                Ok(out) => {
                    let waiting = out
                        .attributes()
                        .and_then(|a| {
                            a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                        })
                        .cloned()
                        .unwrap_or_else(|| "?".into());
                    checks.push(Check::ok(
                        "work queue",
                        format!(
                            "{} reachable, {waiting} message(s) waiting",
                            cloud.work_queue_url
                        ),
                    ));
                    checks.push(Check::ok("clock", "AWS accepted the signed request"));
                }
                Err(e) => {
                    let text = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
                    let lower = text.to_ascii_lowercase();
                    if lower.contains("skew") || lower.contains("signature expired") {
                        checks.push(Check::fail(
                            "clock",
                            text,
                            "synchronise the clock (chrony or systemd-timesyncd)",
                        ));
                    } else if is_denied(&lower) {
                        checks.push(Check::fail("work queue", text, POLICY_HINT));
                    } else {
                        checks.push(Check::fail(
                            "work queue",
                            text,
                            "check cloud.work_queue_url and that the machine can reach SQS over HTTPS",
                        ));
                    }
                }
            }
            // The executor may only send to the StatusQueue: a probe message proves it (the
            // status function logs it and changes nothing).
            let probe = StatusMessage::Probe(Probe {
                v: V1,
                executor_id: config.executor_id(),
                pool: config.pool.clone(),
                at: chrono::Utc::now(),
            });
            let sent = sqs
                .send_message()
                .queue_url(&cloud.status_queue_url)
                .message_body(serde_json::to_string(&probe).expect("status messages serialise"))
                .send()
                .await;
            match sent {
                Ok(_) => checks.push(Check::ok(
                    "status queue",
                    format!("{} accepts reports", cloud.status_queue_url),
                )),
                Err(e) => {
                    let text = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
                    let lower = text.to_ascii_lowercase();
                    checks.push(Check::fail(
                        "status queue",
                        text,
                        if is_denied(&lower) {
                            POLICY_HINT
                        } else {
                            "check cloud.status_queue_url (stack output StatusQueueUrl)"
                        },
                    ));
                }
            }
        }
    }

    if let (Some(endpoints), true) = (&endpoints, rclone_ok) {
        let _ = std::fs::create_dir_all(state.join("logs"));
        let _ = std::fs::write(state.join("rclone.conf"), "");
        for ep in endpoints.iter() {
            let name = format!("endpoint {}", ep.name);
            let side = match ep.side("DST", config.cloud.as_ref(), creds.as_ref()) {
                Ok(s) => s,
                Err(e) => {
                    checks.push(Check::fail(
                        name,
                        e.to_string(),
                        "S3 endpoints need AWS credentials",
                    ));
                    continue;
                }
            };
            let r = probe::probe(ep, &side, &config.rclone, state, Duration::from_secs(20)).await;
            if r.ok {
                checks.push(Check::ok(name, r.line()));
            } else {
                checks.push(Check::fail(
                    name,
                    r.line(),
                    match r.problem {
                        Some("dns") => "check the host name and the site's DNS",
                        Some("connect") => {
                            "check that the server is up and the port open from this machine"
                        }
                        Some("host_key") => {
                            "check known_hosts_file against the server's host key fingerprint"
                        }
                        Some("auth") => "check the user, domain and password or key",
                        Some("permission") => {
                            "grant the account access to the share, folder or bucket"
                        }
                        Some("not_found") => "check share, bucket and root",
                        _ => "run `pbs-executor endpoints test` and read the message",
                    },
                ));
            }
        }
    }
    checks
}
