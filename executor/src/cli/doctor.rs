//! `pbs-executor doctor`: one line per check of what the executor needs, each failure with a fix
//! hint; the exit status is non-zero when any check fails.

use std::path::Path;
use std::time::Duration;

use aws_credential_types::provider::ProvideCredentials;
use pbs_shared::StatusMessage;
use pbs_shared::message::{Probe, V1};

use aws_credential_types::Credentials;

use crate::config::{CloudConfig, Config};
use crate::transfer::endpoints::{Endpoint, Endpoints};
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

/// Every check of `config` (already loaded), in the order an operator fixes them.
async fn run(config: &Config) -> Vec<Check> {
    let mut checks = vec![summary(config)];
    let rclone = rclone_check(config).await;
    let rclone_ok = rclone.ok;
    checks.push(rclone);
    checks.push(state_folder(&config.state_dir));
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
    let creds = if needs_aws {
        aws(config, &mut checks).await
    } else {
        None
    };
    if let (Some(endpoints), true) = (&endpoints, rclone_ok) {
        let _ = std::fs::create_dir_all(config.state_dir.join("logs"));
        let _ = std::fs::write(config.state_dir.join("rclone.conf"), "");
        for ep in endpoints.iter() {
            checks.push(endpoint(config, ep, creds.as_ref()).await);
        }
    }
    checks
}

/// What the configuration holds.
fn summary(config: &Config) -> Check {
    Check::ok(
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
    )
}

async fn rclone_check(config: &Config) -> Check {
    match rclone::check_version(&config.rclone).await {
        Ok(v) => Check::ok("rclone", v),
        Err(e) => Check::fail(
            "rclone",
            e.to_string(),
            "install rclone 1.63 or newer, or set `rclone` to its path in the configuration",
        ),
    }
}

/// The state folder can be written and has room.
fn state_folder(state: &Path) -> Check {
    let probe_file = state.join(".doctor");
    if let Err(e) = std::fs::create_dir_all(state).and_then(|()| std::fs::write(&probe_file, b"ok"))
    {
        return Check::fail(
            "state folder",
            format!("{} is not writable: {e}", state.display()),
            "create it and give the executor's user write access",
        );
    }
    let _ = std::fs::remove_file(&probe_file);
    match free_bytes(state) {
        Ok(free) if free < 1 << 30 => Check::fail(
            "state folder",
            format!("{}: only {} MiB free", state.display(), free >> 20),
            "free space there (logs under logs/ can be pruned) or move state_dir",
        ),
        Ok(free) => Check::ok(
            "state folder",
            format!("{} writable, {} GiB free", state.display(), free >> 30),
        ),
        Err(e) => Check::fail(
            "state folder",
            format!("{}: cannot read free space: {e}", state.display()),
            "check the mount of state_dir",
        ),
    }
}

/// AWS credentials, and with a cloud the work and status queues; the credentials when found.
async fn aws(config: &Config, checks: &mut Vec<Check>) -> Option<Credentials> {
    let sdk = config.aws_sdk_config().await;
    let resolved = match sdk.credentials_provider() {
        Some(p) => p.provide_credentials().await.map_err(|e| e.to_string()),
        None => Err("no credentials provider".into()),
    };
    let creds = match resolved {
        Ok(c) => {
            checks.push(Check::ok(
                "aws credentials",
                format!(
                    "access key {}…",
                    &c.access_key_id()[..c.access_key_id().len().min(4)]
                ),
            ));
            c
        }
        Err(e) => {
            checks.push(Check::fail(
                "aws credentials",
                e,
                "give the executor's user credentials: environment, a profile, an instance role or IAM Roles Anywhere",
            ));
            return None;
        }
    };
    if let Some(cloud) = &config.cloud {
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        checks.extend(work_queue(&sqs, cloud).await);
        checks.push(status_queue(&sqs, config, cloud).await);
    }
    Some(creds)
}

/// The work queue answers a signed request (which also proves the clock).
async fn work_queue(sqs: &aws_sdk_sqs::Client, cloud: &CloudConfig) -> Vec<Check> {
    use aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages as Waiting;
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&cloud.work_queue_url)
        .attribute_names(Waiting)
        .send()
        .await;
    let e = match attrs {
        Ok(out) => {
            let waiting = out
                .attributes()
                .and_then(|a| a.get(&Waiting))
                .cloned()
                .unwrap_or_else(|| "?".into());
            return vec![
                Check::ok(
                    "work queue",
                    format!(
                        "{} reachable, {waiting} message(s) waiting",
                        cloud.work_queue_url
                    ),
                ),
                Check::ok("clock", "AWS accepted the signed request"),
            ];
        }
        Err(e) => e,
    };
    let text = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
    let lower = text.to_ascii_lowercase();
    vec![
        if lower.contains("skew") || lower.contains("signature expired") {
            Check::fail(
                "clock",
                text,
                "synchronise the clock (chrony or systemd-timesyncd)",
            )
        } else if is_denied(&lower) {
            Check::fail("work queue", text, POLICY_HINT)
        } else {
            Check::fail(
                "work queue",
                text,
                "check cloud.work_queue_url and that the machine can reach SQS over HTTPS",
            )
        },
    ]
}

/// The executor may only send to its pool's status queue: a probe message proves it (the status
/// function logs it and changes nothing). A queue named for another pool is refused before: the
/// cloud would refuse every report sent through it.
async fn status_queue(sqs: &aws_sdk_sqs::Client, config: &Config, cloud: &CloudConfig) -> Check {
    let own = format!("-reports-{}", config.pool);
    if !cloud.status_queue_url.trim_end_matches('/').ends_with(&own) {
        return Check::fail(
            "status queue",
            format!(
                "{} is not pool {}'s status queue (its name ends in {own}): the cloud refuses reports for pool {} from any other",
                cloud.status_queue_url, config.pool, config.pool
            ),
            "set cloud.status_queue_url to the pool's status queue (stack output DefaultPoolStatusQueueUrl, or StatusQueueUrl of the pool's stack)",
        );
    }
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
        Ok(_) => Check::ok(
            "status queue",
            format!("{} accepts reports", cloud.status_queue_url),
        ),
        Err(e) => {
            let text = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
            let lower = text.to_ascii_lowercase();
            let hint = if is_denied(&lower) {
                POLICY_HINT
            } else {
                "check cloud.status_queue_url (stack output DefaultPoolStatusQueueUrl, or StatusQueueUrl of the pool's stack)"
            };
            Check::fail("status queue", text, hint)
        }
    }
}

/// One endpoint, probed as `endpoints test` does.
async fn endpoint(config: &Config, ep: &Endpoint, creds: Option<&Credentials>) -> Check {
    let name = format!("endpoint {}", ep.name);
    let side = match ep.side("DST", config.cloud.as_ref(), creds) {
        Ok(s) => s,
        Err(e) => return Check::fail(name, e.to_string(), "S3 endpoints need AWS credentials"),
    };
    let r = probe::probe(
        ep,
        &side,
        &config.rclone,
        &config.state_dir,
        Duration::from_secs(20),
    )
    .await;
    if r.ok {
        return Check::ok(name, r.line());
    }
    let hint = probe::hint(r.problem);
    Check::fail(name, r.line(), hint)
}
