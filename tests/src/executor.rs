//! A real executor process: its configuration, folders, ledger, logs and metrics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::*;

/// The project's rclone (or `PBS_RCLONE`).
pub fn rclone_bin() -> String {
    std::env::var("PBS_RCLONE").unwrap_or_else(|_| {
        workspace_root()
            .join(".tools/bin/rclone")
            .display()
            .to_string()
    })
}

/// Writes at `path` an executable rclone wrapper: `before` (shell lines; the arguments are in
/// `$@`) runs first, then the project's rclone with the same arguments. Written again, it takes
/// effect from the next run.
pub fn rclone_wrapper(path: &Path, before: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let script = format!("#!/bin/sh\n{before}\nexec '{}' \"$@\"\n", rclone_bin());
    std::fs::write(path, script).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// An rclone that notes each verb it runs, and the names each `hashsum` is given through
/// `--files-from-raw`, before running the project's: how the executor used rclone.
pub struct RecordingRclone {
    /// The wrapper, for [`ExecutorOptions::rclone`].
    pub path: PathBuf,
    calls: PathBuf,
    _dir: tempfile::TempDir,
}

impl RecordingRclone {
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let (path, calls) = (dir.path().join("rclone"), dir.path().join("calls"));
        let calls_arg = calls.display();
        rclone_wrapper(
            &path,
            &format!(
                "echo \"$1\" >> '{calls_arg}'\n\
                 if [ \"$1\" = hashsum ]; then prev=; for a in \"$@\"; do\n\
                   [ \"$prev\" = --files-from-raw ] && sed 's/^/name: /' \"$a\" >> '{calls_arg}'; prev=$a\n\
                 done; fi"
            ),
        )?;
        Ok(Self {
            path,
            calls,
            _dir: dir,
        })
    }

    /// Everything noted so far, for failure messages.
    pub fn record(&self) -> String {
        std::fs::read_to_string(&self.calls).unwrap_or_default()
    }

    /// The verbs run so far, in order.
    pub fn verbs(&self) -> Vec<String> {
        self.record()
            .lines()
            .filter(|l| !l.starts_with("name: "))
            .map(str::to_owned)
            .collect()
    }

    /// The names hashed through a list so far.
    pub fn hashed(&self) -> std::collections::BTreeSet<String> {
        self.record()
            .lines()
            .filter_map(|l| l.strip_prefix("name: "))
            .map(str::to_owned)
            .collect()
    }
}

pub(crate) fn spawn_executor(config: &Path, dir: &Path, env: &[(String, String)]) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("executor.log"))?;
    Command::new(executor_bin())
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", executor_bin()))
}

/// The executor binary under test (or `PBS_EXECUTOR_BIN`).
pub fn executor_bin() -> String {
    std::env::var("PBS_EXECUTOR_BIN").unwrap_or_else(|_| {
        workspace_root()
            .join("target/debug/pbs-executor")
            .display()
            .to_string()
    })
}

/// How a test executor differs from the default one.
#[derive(Debug, Clone, Default)]
pub struct ExecutorOptions {
    /// SQS endpoint (e.g. a [`link::Link`] to cut); S3 is still read from the emulator directly.
    pub sqs_endpoint: Option<String>,
    /// S3 endpoint for reading sources (e.g. a [`link::Link`] to cut); default the emulator.
    pub s3_endpoint: Option<String>,
    /// rclone `--bwlimit`, to make copies slow enough to interrupt.
    pub bandwidth_limit: Option<String>,
    /// Seconds; default 60.
    pub visibility_timeout: Option<u32>,
    /// Suffix of the executor id, to run several executors on one pool.
    pub name: Option<String>,
    /// More TOML appended to the configuration (endpoints beside the default `disk`).
    pub extra_config: String,
    /// Environment variables for the executor (e.g. the endpoint passwords it reads).
    pub env: Vec<(String, String)>,
    /// rclone binary; default the project's.
    pub rclone: Option<String>,
    /// No `[cloud]` section: the executor runs its watch and schedule rules only.
    pub standalone: bool,
    /// `cloud.heartbeat_seconds`; default the executor's (60).
    pub heartbeat_seconds: Option<u32>,
    /// `cloud.wait_seconds` (long poll); default 1, so tests see new messages at once.
    pub wait_seconds: Option<u32>,
    /// More TOML lines of the `[cloud]` section (e.g. `allow_source_removal = true`).
    pub cloud_extra: String,
    /// `cloud.rules_poll_seconds`; default 1, so tests see rule changes at once.
    pub rules_poll_seconds: Option<u32>,
}

/// A real executor process with its own config, state dir and landing folder.
pub struct Executor {
    child: Child,
    pub id: String,
    pub pool: String,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub landing: PathBuf,
    pub state: PathBuf,
    /// Base URL of its `/metrics` and `/healthz`.
    pub http: String,
    env: Vec<(String, String)>,
}

impl Executor {
    /// Starts an executor for `pool`, writing endpoint `disk` to a fresh landing folder.
    pub fn start(stack: &Stack, pool: &str, work_queue_url: &str) -> Result<Self> {
        Self::start_with(stack, pool, work_queue_url, ExecutorOptions::default())
    }

    pub fn start_with(
        stack: &Stack,
        pool: &str,
        work_queue_url: &str,
        opts: ExecutorOptions,
    ) -> Result<Self> {
        let emulator = stack.output("EmulatorUrl");
        let sqs_endpoint = opts.sqs_endpoint.as_deref().unwrap_or(emulator);
        let s3_endpoint = opts.s3_endpoint.as_deref().unwrap_or(emulator);
        let cloud = if opts.standalone {
            String::new()
        } else {
            format!(
                r#"[cloud]
region = "us-east-1"
endpoint_url = "{sqs_endpoint}"
s3_endpoint_url = "{s3_endpoint}"
work_queue_url = "{work_queue_url}"
status_queue_url = "{status}"
wait_seconds = {wait}
visibility_timeout_seconds = {visibility}
rules_bucket = "{rules}"
rules_poll_seconds = {rules_poll}
heartbeat_seconds = {heartbeat}
logs_bucket = "{rules}"
staging_bucket = "{rules}"
progress_seconds = 1
{cloud_extra}
"#,
                cloud_extra = opts.cloud_extra,
                rules_poll = opts.rules_poll_seconds.unwrap_or(1),
                heartbeat = opts.heartbeat_seconds.unwrap_or(60),
                wait = opts.wait_seconds.unwrap_or(1),
                status = stack.status_queue_url(pool),
                rules = stack.output("ConfigBucketName"),
                visibility = opts.visibility_timeout.unwrap_or(60),
            )
        };
        Self::launch(pool, &cloud, opts)
    }

    /// An executor without a `[cloud]` section: its own watch and schedule rules only, no
    /// emulator needed.
    pub fn standalone(pool: &str, opts: ExecutorOptions) -> Result<Self> {
        Self::launch(pool, "", opts)
    }

    fn launch(pool: &str, cloud: &str, opts: ExecutorOptions) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let landing = dir.path().join("landing");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&landing)?;
        let rclone = opts.rclone.clone().unwrap_or_else(rclone_bin);
        let id = format!("{pool}-{}", opts.name.as_deref().unwrap_or("exec"));
        let bandwidth = opts
            .bandwidth_limit
            .map(|b| format!("bandwidth_limit = \"{b}\"\n"))
            .unwrap_or_default();
        let http_port = servers::free_port()?;
        let config = format!(
            r#"executor_id = "{id}"
pool = "{pool}"
state_dir = "{state}"
http_listen = "127.0.0.1:{http_port}"
concurrency = 4
rclone = "{rclone}"
shutdown_grace_seconds = 5
{bandwidth}
{cloud}
[endpoints.disk]
type = "local"
root = "{landing}"
# Chain steps read what the step before delivered here.
cloud = "read-write"

{extra}
"#,
            extra = opts.extra_config,
            state = state.display(),
            landing = landing.display(),
        );
        let config_path = dir.path().join("executor.toml");
        std::fs::write(&config_path, config)?;
        let child = spawn_executor(&config_path, dir.path(), &opts.env)?;
        Ok(Self {
            child,
            id,
            pool: pool.to_owned(),
            dir,
            config_path,
            landing,
            state,
            http: format!("http://127.0.0.1:{http_port}"),
            env: opts.env,
        })
    }

    /// `kill -9`: no shutdown, no cleanup, as in a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the process to exit.
    pub fn terminate(&mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        self.child.wait()?;
        Ok(())
    }

    /// Starts the executor again with the same configuration and state.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.child = spawn_executor(&self.config_path, self.dir.path(), &self.env)?;
        Ok(())
    }

    /// The executor's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every TCP socket the executor process listens on, as `address:port`, read from its open
    /// files and the kernel's socket tables (`/proc/<pid>/fd`, `/proc/net/tcp` and `tcp6`).
    pub fn listening(&self) -> Result<Vec<String>> {
        listening_sockets(self.pid())
    }

    /// Runs `pbs-executor --config <this executor's config> ARGS` with its environment.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new(executor_bin())
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .with_context(|| format!("running pbs-executor {args:?}"))
    }

    /// The job's row in the executor's ledger once it has reached a terminal state.
    pub async fn finished(&self, job_id: &str) -> Result<Value> {
        eventually(
            Duration::from_secs(120),
            &format!("job {job_id} to finish"),
            || async {
                Ok(self.ledger()?.into_iter().find(|r| {
                    r["job_id"] == job_id
                        && matches!(
                            r["state"].as_str(),
                            Some("succeeded" | "failed" | "cancelled")
                        )
                }))
            },
        )
        .await
        .with_context(|| format!("executor log:\n{}", self.log()))
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The executor's own log, for failure messages.
    pub fn log(&self) -> String {
        match std::fs::read(self.dir.path().join("executor.log")) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("<executor log unreadable: {e}>"),
        }
    }

    /// Rows of the executor's ledger, through `pbs-executor jobs list --json`.
    pub fn ledger(&self) -> Result<Vec<Value>> {
        let out = Command::new(executor_bin())
            .arg("--config")
            .arg(&self.config_path)
            .args(["jobs", "list", "--json", "--limit", "100000"])
            .output()?;
        if !out.status.success() {
            bail!("jobs list failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        String::from_utf8(out.stdout)?
            .lines()
            .map(|l| serde_json::from_str(l).context("jobs list line"))
            .collect()
    }

    /// The executor's Prometheus page (`/metrics`).
    pub async fn metrics(&self) -> Result<String> {
        let res = reqwest::get(format!("{}/metrics", self.http)).await?;
        anyhow::ensure!(res.status().is_success(), "GET /metrics: {}", res.status());
        Ok(res.text().await?)
    }

    /// Waits for a file to appear under the landing folder.
    pub async fn landed(&self, rel: &str) -> Result<Vec<u8>> {
        let path = self.landing.join(rel);
        eventually(
            Duration::from_secs(90),
            &format!("{} to land", path.display()),
            || async { Ok(std::fs::read(&path).ok()) },
        )
        .await
        .with_context(|| format!("executor log:\n{}", self.log()))
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The TCP sockets in state LISTEN that process `pid` holds open, as `address:port`.
pub fn listening_sockets(pid: u32) -> Result<Vec<String>> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(fd?.path()) else {
            continue;
        };
        if let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
        {
            inodes.insert(inode.to_owned());
        }
    }
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))?;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || f[3] != "0A" || !inodes.contains(f[9]) {
                continue;
            }
            out.push(socket_address(f[1])?);
        }
    }
    out.sort();
    Ok(out)
}

/// `0100007F:24F8` (IPv4) or 32 hex digits and a port (IPv6), each 32-bit word in host order
/// (little-endian here), as `127.0.0.1:9464` or `[::1]:9464`.
fn socket_address(hex: &str) -> Result<String> {
    let (addr, port) = hex
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("no port in {hex}"))?;
    let port = u16::from_str_radix(port, 16)?;
    let words: Vec<u32> = (0..addr.len() / 8)
        .map(|i| u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16))
        .collect::<Result<_, _>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    Ok(match bytes.len() {
        4 => format!(
            "{}:{port}",
            std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])
        ),
        16 => {
            let octets: [u8; 16] = bytes.try_into().expect("16 bytes");
            format!("[{}]:{port}", std::net::Ipv6Addr::from(octets))
        }
        n => anyhow::bail!("an address of {n} bytes in {hex}"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_socket_addresses_read_as_written() {
        assert_eq!(
            super::socket_address("0100007F:24F8").unwrap(),
            "127.0.0.1:9464"
        );
        assert_eq!(
            super::socket_address("00000000000000000000000001000000:0016").unwrap(),
            "[::1]:22"
        );
        assert_eq!(
            super::socket_address("00000000:0050").unwrap(),
            "0.0.0.0:80"
        );
    }
}
