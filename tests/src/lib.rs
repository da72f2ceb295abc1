//! Helpers for the end-to-end tests: the deployed stack on the local emulator, real AWS SDK
//! clients, a real executor process with its own pool, folders and ledger.
//!
//! The stack is deployed once by `./dev test` (from `template.yaml`), which passes its outputs in
//! `PBS_E2E_OUTPUTS`. Each test makes its own pool queue, template, key prefix and executor, so
//! tests run in parallel without seeing each other's jobs.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub mod browser;
pub mod link;
pub mod receiver;
pub mod servers;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;

/// Polls `probe` every 200 ms until it yields `Some`, failing after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "timed out after {timeout:?} waiting for {what}{}",
                last_err
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a copy cannot succeed by accident and a test
/// can recompute what it uploaded.
pub fn body(len: usize, seed: u32) -> Vec<u8> {
    let mut x = 0x2545_F491u32 ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Every file below `dir` (recursively); empty if it cannot be read.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A name unique to this test run: lowercase, safe for pools, templates, buckets and keys.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 100_000_000;
    format!("{prefix}-{}-{t}-{n}", std::process::id() % 100_000)
}

/// The repository root (for templates and scripts the tests deploy or run).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The deployed stack and clients for it.
pub struct Stack {
    pub outputs: HashMap<String, String>,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub sns: aws_sdk_sns::Client,
    pub http: reqwest::Client,
    /// Dev-issuer tokens by role, minted on first use.
    tokens: std::sync::Mutex<HashMap<String, String>>,
}

impl Stack {
    pub async fn connect() -> Result<Self> {
        let path = std::env::var("PBS_E2E_OUTPUTS").context(
            "PBS_E2E_OUTPUTS is not set: end-to-end tests run through `./dev test`, which starts \
             the emulator and deploys the stack",
        )?;
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let outputs: HashMap<String, String> = serde_json::from_str(&text)?;
        let endpoint = outputs["EmulatorUrl"].clone();
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .load()
            .await;
        let s3_config = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build();
        Ok(Self {
            sqs: aws_sdk_sqs::Client::new(&config),
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            dynamo: aws_sdk_dynamodb::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            sns: aws_sdk_sns::Client::new(&config),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            outputs,
            tokens: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// A token of the local dev issuer for `role` (`viewer`, `operator`, `admin`, or `none` for a
    /// caller in no group), named `dev-<role>`.
    pub fn token(&self, role: &str) -> Result<String> {
        if let Some(t) = self.tokens.lock().unwrap().get(role) {
            return Ok(t.clone());
        }
        let t = self.mint_token(role, &format!("dev-{role}"), 3600)?;
        self.tokens
            .lock()
            .unwrap()
            .insert(role.to_owned(), t.clone());
        Ok(t)
    }

    /// A fresh dev-issuer token for `name` in group `role`, valid `ttl_seconds` (negative: already
    /// expired).
    pub fn mint_token(&self, role: &str, name: &str, ttl_seconds: i64) -> Result<String> {
        let out = std::process::Command::new("bash")
            .arg(self.output("DevIssuer"))
            .args(["token", role, name, &ttl_seconds.to_string()])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "dev issuer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    pub fn output(&self, key: &str) -> &str {
        self.outputs
            .get(key)
            .unwrap_or_else(|| panic!("stack output {key} missing"))
    }

    pub fn source_bucket(&self) -> &str {
        self.output("SourceBucketName")
    }

    /// Creates the work queue of a new pool (`<prefix><pool>`) with its dead-letter queue (after
    /// 3 receives), as an operator adding a pool does.
    pub async fn create_pool(&self, pool: &str) -> Result<PoolQueues> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let name = format!("{}{}", self.output("PoolQueuePrefix"), pool);
        let dlq = self
            .sqs
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await?;
        let dlq_url = dlq.queue_url().context("no dlq url")?.to_owned();
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(A::QueueArn)
            .send()
            .await?;
        let dlq_arn = attrs
            .attributes()
            .and_then(|a| a.get(&A::QueueArn))
            .context("no dlq arn")?;
        let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3});
        let out = self
            .sqs
            .create_queue()
            .queue_name(&name)
            .attributes(A::VisibilityTimeout, "300")
            .attributes(A::RedrivePolicy, redrive.to_string())
            .send()
            .await?;
        Ok(PoolQueues {
            url: out.queue_url().context("no queue url")?.to_owned(),
            dlq_url,
        })
    }

    /// Invokes a function of the stack (by its stack output holding the name) and returns its
    /// JSON answer.
    pub async fn invoke(&self, function_output: &str, payload: &Value) -> Result<Value> {
        let url = format!(
            "{}/2015-03-31/functions/{}/invocations",
            self.output("EmulatorUrl"),
            self.output(function_output)
        );
        let res = self.http.post(&url).json(payload).send().await?;
        let status = res.status();
        let text = res.text().await?;
        anyhow::ensure!(
            status.is_success(),
            "invoking {function_output}: {status} {text}"
        );
        serde_json::from_str(&text).with_context(|| format!("{function_output} answered {text}"))
    }

    /// A bucket with no event notifications: tests deliver crafted events for its objects.
    pub async fn create_quiet_bucket(&self, name: &str) -> Result<()> {
        self.s3.create_bucket().bucket(name).send().await?;
        Ok(())
    }

    pub async fn put_object(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<String> {
        let out = self
            .s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .with_context(|| format!("PUT s3://{bucket}/{key}"))?;
        Ok(out.e_tag().unwrap_or_default().trim_matches('"').to_owned())
    }

    fn api(&self, path: &str) -> String {
        format!("{}{}", self.output("LocalApiUrl"), path)
    }

    /// Calls the API through the emulated API Gateway as an admin; returns status and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let token = self.token("admin")?;
        self.call_with(Some(&token), method, path, body).await
    }

    /// Calls the API with `token` as bearer (none: no Authorization header).
    pub async fn call_with(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self.http.request(method, self.api(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("non-JSON body: {text}"))?
        };
        Ok((status, json))
    }

    pub async fn create_template(&self, template: &Value) -> Result<()> {
        let (status, body) = self
            .call("POST", "/api/v1/templates", Some(template))
            .await?;
        if status != 201 {
            bail!("creating template answered {status}: {body}");
        }
        Ok(())
    }

    /// Replaces a template through the API (`PUT`), as an admin.
    pub async fn replace_template(&self, template: &Value) -> Result<()> {
        let id = template["id"].as_str().context("the template has no id")?;
        let (status, body) = self
            .call("PUT", &format!("/api/v1/templates/{id}"), Some(template))
            .await?;
        if status != 200 {
            bail!("replacing template {id} answered {status}: {body}");
        }
        Ok(())
    }

    /// Every job of `template_id`, following pagination.
    pub async fn jobs_of_template(&self, template_id: &str) -> Result<Vec<Value>> {
        let mut jobs = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let path = match &next {
                Some(t) => format!("/api/v1/jobs?limit=100&next={t}"),
                None => "/api/v1/jobs?limit=100".to_owned(),
            };
            let (status, body) = self.call("GET", &path, None).await?;
            if status != 200 {
                bail!("listing jobs answered {status}: {body}");
            }
            for job in body["jobs"].as_array().cloned().unwrap_or_default() {
                if job["template_id"] == template_id {
                    jobs.push(job);
                }
            }
            match body["next"].as_str() {
                Some(t) => next = Some(t.to_owned()),
                None => return Ok(jobs),
            }
        }
    }

    /// A job as the API shows it.
    pub async fn job(&self, job_id: &str) -> Result<Value> {
        let (status, body) = self
            .call("GET", &format!("/api/v1/jobs/{job_id}"), None)
            .await?;
        if status != 200 {
            bail!("GET job {job_id} answered {status}: {body}");
        }
        Ok(body)
    }

    /// A job's delivery report as the API serves it (JSON).
    pub async fn report(&self, job_id: &str) -> Result<Value> {
        let (status, body) = self
            .call("GET", &format!("/api/v1/jobs/{job_id}/report"), None)
            .await?;
        if status != 200 {
            bail!("GET the report of job {job_id} answered {status}: {body}");
        }
        Ok(body)
    }

    /// Waits (up to `timeout`) until the API shows job `job_id` as `probe` wants, and returns it.
    pub async fn job_when(
        &self,
        job_id: &str,
        timeout: Duration,
        what: &str,
        probe: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        eventually(timeout, what, || async {
            let job = self.job(job_id).await?;
            Ok(probe(&job).then_some(job))
        })
        .await
    }

    /// Waits until `template_id` has `count` jobs, all in a terminal state.
    pub async fn finished_jobs(&self, template_id: &str, count: usize) -> Result<Vec<Value>> {
        eventually(
            Duration::from_secs(90),
            &format!("{count} finished jobs of {template_id}"),
            || async {
                let jobs = self.jobs_of_template(template_id).await?;
                let done = jobs
                    .iter()
                    .filter(|j| {
                        matches!(
                            j["state"].as_str(),
                            Some("succeeded" | "failed" | "cancelled")
                        )
                    })
                    .count();
                Ok((jobs.len() >= count && done == jobs.len()).then_some(jobs))
            },
        )
        .await
    }

    /// PUTs an object to a bucket without notifications and delivers its `ObjectCreated` event
    /// (with `sequencer`) to the EventsQueue; returns the ETag.
    pub async fn put_and_announce(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        sequencer: &str,
    ) -> Result<String> {
        let size = body.len() as u64;
        let etag = self.put_object(bucket, key, body).await?;
        self.send_events(&[s3_event(bucket, key, size, &etag, sequencer)])
            .await?;
        Ok(etag)
    }

    /// The messages in a queue right now, left visible for others (for dead-letter checks).
    /// Sends a job message straight to a pool's work queue, as a manual job would arrive.
    pub async fn send_job(&self, queue_url: &str, job: &Value) -> Result<()> {
        self.sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(job.to_string())
            .send()
            .await?;
        Ok(())
    }

    pub async fn peek(&self, queue_url: &str) -> Result<Vec<aws_sdk_sqs::types::Message>> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .message_attribute_names("All")
            .send()
            .await?;
        Ok(out.messages.unwrap_or_default())
    }

    /// Sends raw bodies to the EventsQueue in one batch, as S3 would (possibly duplicated).
    pub async fn send_events(&self, bodies: &[String]) -> Result<()> {
        let entries = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .message_body(b)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .sqs
            .send_message_batch()
            .queue_url(self.output("EventsQueueUrl"))
            .set_entries(Some(entries))
            .send()
            .await?;
        if !out.failed().is_empty() {
            bail!("some events were not sent: {:?}", out.failed());
        }
        Ok(())
    }
}

/// A pool's work queue and its dead-letter queue.
#[derive(Debug, Clone)]
pub struct PoolQueues {
    pub url: String,
    pub dlq_url: String,
}

/// An S3 `ObjectCreated:Put` notification body shaped like the one S3 sends, with the key
/// URL-encoded the way S3 encodes it.
pub fn s3_event(bucket: &str, key: &str, size: u64, etag: &str, sequencer: &str) -> String {
    let fixture = include_str!("../fixtures/s3-event-put.json");
    let mut event: Value = serde_json::from_str(fixture).unwrap();
    let record = &mut event["Records"][0];
    record["s3"]["bucket"]["name"] = bucket.into();
    record["s3"]["bucket"]["arn"] = format!("arn:aws:s3:::{bucket}").into();
    record["s3"]["object"]["key"] = encode_event_key(key).into();
    record["s3"]["object"]["size"] = size.into();
    record["s3"]["object"]["eTag"] = etag.into();
    record["s3"]["object"]["sequencer"] = sequencer.into();
    event.to_string()
}

/// S3's event key encoding: form-style, a space becomes `+`.
pub fn encode_event_key(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The project's rclone (or `PBS_RCLONE`).
pub fn rclone_bin() -> String {
    std::env::var("PBS_RCLONE").unwrap_or_else(|_| {
        workspace_root()
            .join(".tools/bin/rclone")
            .display()
            .to_string()
    })
}

fn spawn_executor(config: &Path, dir: &Path, env: &[(String, String)]) -> Result<Child> {
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
}

/// A real executor process with its own config, state dir and landing folder.
pub struct Executor {
    child: Child,
    pub id: String,
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
        let dir = tempfile::tempdir()?;
        let landing = dir.path().join("landing");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&landing)?;
        let rclone = opts.rclone.clone().unwrap_or_else(rclone_bin);
        let id = format!("{pool}-{}", opts.name.as_deref().unwrap_or("exec"));
        let emulator = stack.output("EmulatorUrl");
        let sqs_endpoint = opts.sqs_endpoint.as_deref().unwrap_or(emulator);
        let s3_endpoint = opts.s3_endpoint.as_deref().unwrap_or(emulator);
        let bandwidth = opts
            .bandwidth_limit
            .map(|b| format!("bandwidth_limit = \"{b}\"\n"))
            .unwrap_or_default();
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
rules_poll_seconds = 1
heartbeat_seconds = {heartbeat}
logs_bucket = "{rules}"
staging_bucket = "{rules}"
progress_seconds = 1
"#,
                heartbeat = opts.heartbeat_seconds.unwrap_or(60),
                wait = opts.wait_seconds.unwrap_or(1),
                status = stack.output("StatusQueueUrl"),
                rules = stack.output("ConfigBucketName"),
                visibility = opts.visibility_timeout.unwrap_or(60),
            )
        };
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

/// One test's own corner of the stack: a pool with its work queue, a template from `bucket` to the
/// pool's `disk` endpoint, and an executor serving the pool.
pub struct Scenario {
    pub pool: String,
    pub queue: PoolQueues,
    pub bucket: String,
    pub template: String,
    pub executor: Executor,
    /// The template's key glob and destination path.
    pub key_glob: String,
    pub path: String,
}

impl Scenario {
    /// With `bucket` = `None`, a new bucket without event notifications is made: the test delivers
    /// crafted events for its objects.
    pub async fn new(
        stack: &Stack,
        name: &str,
        bucket: Option<&str>,
        key_glob: &str,
        path: &str,
    ) -> Result<Self> {
        Self::with(
            stack,
            name,
            bucket,
            key_glob,
            path,
            ExecutorOptions::default(),
        )
        .await
    }

    pub async fn with(
        stack: &Stack,
        name: &str,
        bucket: Option<&str>,
        key_glob: &str,
        path: &str,
        opts: ExecutorOptions,
    ) -> Result<Self> {
        let pool = unique(name);
        let queue = stack.create_pool(&pool).await?;
        let bucket = match bucket {
            Some(b) => b.to_owned(),
            None => {
                let b = unique("quiet");
                stack.create_quiet_bucket(&b).await?;
                b
            }
        };
        let template = unique("tpl");
        stack
            .create_template(&template_json(&template, &bucket, key_glob, &pool, path))
            .await?;
        let executor = Executor::start_with(stack, &pool, &queue.url, opts)?;
        Ok(Self {
            pool,
            queue,
            bucket,
            template,
            executor,
            key_glob: key_glob.to_owned(),
            path: path.to_owned(),
        })
    }
}

impl Scenario {
    /// Sets the scenario's template to make one job per object (`options.per_object_jobs`), for
    /// tests about jobs one by one rather than the objects of a batch together.
    pub async fn per_object_jobs(&self, stack: &Stack) -> Result<()> {
        let mut template = template_json(
            &self.template,
            &self.bucket,
            &self.key_glob,
            &self.pool,
            &self.path,
        );
        template["options"] = serde_json::json!({"per_object_jobs": true});
        stack.replace_template(&template).await
    }
}

/// A template body for the API.
pub fn template_json(id: &str, bucket: &str, glob: &str, pool: &str, path: &str) -> Value {
    serde_json::json!({
        "id": id,
        "description": "end-to-end test",
        "trigger": {"type": "s3", "bucket": bucket, "key_glob": glob},
        "destination": {"pool": pool, "endpoint": "disk", "path": path}
    })
}
