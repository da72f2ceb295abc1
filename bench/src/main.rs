//! pbs-bench: PBS Rclone measured against raw rclone, side by side, on the local emulator.
//!
//! `./dev bench [storm options]` starts an emulator of its own, deploys the stack, builds the
//! release executor and runs `pbs-bench storm`, which prints each figure beside its baseline and
//! its target (docs/PERFORMANCE.md). Nothing here asserts: a benchmark reports.

mod folders;
mod proxy;
mod remote_big;
mod served;

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use pbs_e2e::{Executor, ExecutorOptions, Stack, eventually, files_under, template_json, unique};
use pbs_shared::{ObjectRef, Template, TemplateSet};
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(name = "pbs-bench", about = "PBS Rclone benchmarks against raw rclone")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Event storms, a big file, matching, latency and idle cost (needs PBS_E2E_OUTPUTS).
    Storm(StormArgs),
    /// A folder of a million files: a scheduled run with nothing new against
    /// `rclone copy --dry-run`, and an executor watching it (no emulator needed).
    Folders(folders::FoldersArgs),
}

#[derive(Args, Clone)]
struct StormArgs {
    /// Objects per storm (backlog drain and keeping pace).
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Bytes per storm object.
    #[arg(long, default_value_t = 4096)]
    object_size: usize,
    /// Size of the big object in MiB, delivered to local, SFTP and SMB (0 skips it).
    #[arg(long, default_value_t = 1024)]
    big_mib: usize,
    /// Templates in the matching benchmark.
    #[arg(long, default_value_t = 1000)]
    templates: usize,
    /// Events matched in the matching benchmark.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Single objects put one after another for the PUT → start latency.
    #[arg(long, default_value_t = 20)]
    latency_samples: usize,
    /// Seconds an idle executor is watched for memory and SQS requests.
    #[arg(long, default_value_t = 60)]
    idle_seconds: u64,
    /// Parallel PUTs while uploading a storm.
    #[arg(long, default_value_t = 32)]
    upload_parallelism: usize,
    /// Where the storms' objects live: `served` (a local folder behind `rclone serve s3`, the
    /// emulator serving only the control plane) or `emulator` (the emulator's own S3).
    #[arg(long, value_enum, default_value_t = DataPath::Served)]
    data_path: DataPath,
    /// Where the functions send their AWS requests (the bench's emulator is started with this
    /// as their endpoint): a counting proxy to the emulator listens there.
    #[arg(long, default_value = "127.0.0.1:4598")]
    control_proxy: String,
    /// A developer's loop (about 5 minutes): 1,000-object storms, no big object, 200 templates,
    /// 200,000 matched events, 3 latency samples, 5 s of idle watch.
    #[arg(long)]
    quick: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DataPath {
    Served,
    Emulator,
}

/// One line of the report.
struct Row {
    measure: String,
    system: String,
    baseline: String,
    ratio: String,
    target: String,
}

impl Row {
    fn new(measure: impl Into<String>, system: impl Into<String>, target: &str) -> Self {
        Self {
            measure: measure.into(),
            system: system.into(),
            baseline: String::new(),
            ratio: String::new(),
            target: target.into(),
        }
    }

    fn against(mut self, baseline: Duration, system: Duration) -> Self {
        self.baseline = format!("{:.2} s", baseline.as_secs_f64());
        self.ratio = format!("{:.2}", system.as_secs_f64() / baseline.as_secs_f64());
        self
    }
}

fn print(rows: &[Row]) {
    let head = Row {
        measure: "measure".into(),
        system: "PBS Rclone".into(),
        baseline: "raw rclone".into(),
        ratio: "ratio".into(),
        target: "target".into(),
    };
    let w = |f: fn(&Row) -> &str| {
        rows.iter()
            .chain([&head])
            .map(|r| f(r).chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths = [
        w(|r| &r.measure),
        w(|r| &r.system),
        w(|r| &r.baseline),
        w(|r| &r.ratio),
    ];
    for r in [&head].into_iter().chain(rows) {
        println!(
            "{:<a$}  {:>b$}  {:>c$}  {:>d$}  {}",
            r.measure,
            r.system,
            r.baseline,
            r.ratio,
            r.target,
            a = widths[0],
            b = widths[1],
            c = widths[2],
            d = widths[3]
        );
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Bench::Storm(args) => storm(args).await,
        Bench::Folders(args) => {
            print(&folders::run(&args).await?);
            Ok(())
        }
    }
}

async fn storm(mut args: StormArgs) -> Result<()> {
    if args.quick {
        args.objects = 1000;
        args.big_mib = 0;
        args.templates = 200;
        args.events = 200_000;
        args.latency_samples = 3;
        args.idle_seconds = 5;
    }
    let mut rows = Vec::new();
    eprintln!(
        "(e) matching {} events against {} templates ...",
        args.events, args.templates
    );
    rows.push(matching(args.templates, args.events));

    let stack = Arc::new(Stack::connect().await?);
    // Every request the functions make passes through here and is counted.
    let control = Arc::new(
        proxy::CountingProxy::start(&args.control_proxy, stack.output("EmulatorUrl")).await?,
    );
    eprintln!("(g) an idle executor for {} s ...", args.idle_seconds);
    rows.extend(idle(&stack, args.idle_seconds).await?);

    // One pool and executor for the rest, as an operator would run it.
    let site = Site::new(&stack).await?;
    let mut executor =
        Executor::start_with(&stack, &site.pool, &site.queue.url, site.opts.clone())?;
    // (f) and (d) first, while the jobs table is small enough to list.
    eprintln!(
        "(f) {} single objects, PUT → transfer start ...",
        args.latency_samples
    );
    rows.push(
        latency(
            &stack,
            &site.tpl,
            &executor,
            &site.prefix,
            args.latency_samples,
        )
        .await?,
    );
    if args.big_mib > 0 {
        eprintln!(
            "(d) one {} MiB object, verified by size, then by hash ...",
            args.big_mib
        );
        rows.extend(big_object(&stack, &site, &executor, args.big_mib).await?);
        eprintln!(
            "(d) the same size to SFTP and SMB, verified by hash, against raw rclone copyto ..."
        );
        rows.extend(remote_big::rows(&stack, args.big_mib).await?);
    }
    match args.data_path {
        DataPath::Emulator => {
            rows.extend(backlog(&stack, &site, &mut executor, &args).await?);
            rows.extend(keeping_pace(&stack, &site, &executor, &args).await?);
        }
        DataPath::Served => {
            let mut served = served::ServedSite::new(&stack, control.clone()).await?;
            rows.extend(served::backlog(&stack, &mut served, &args).await?);
            rows.extend(served::keeping_pace(&stack, &served, &args).await?);
        }
    }
    // The executor's log stays for a look at where the time went.
    let kept = pbs_e2e::workspace_root().join(".state/bench-executor.log");
    let _ = std::fs::copy(executor.dir.path().join("executor.log"), &kept);
    eprintln!("executor log: {}", kept.display());
    drop(executor);
    print(&rows);
    Ok(())
}

/// The pool, template and key prefix the storm figures use.
struct Site {
    pool: String,
    queue: pbs_e2e::PoolQueues,
    prefix: String,
    tpl: String,
    opts: ExecutorOptions,
}

impl Site {
    async fn new(stack: &Stack) -> Result<Self> {
        let pool = unique("bench");
        let queue = stack.create_pool(&pool).await?;
        let prefix = unique("storm");
        let tpl = unique("tpl");
        stack
            .create_template(&template_json(
                &tpl,
                stack.source_bucket(),
                &format!("{prefix}/**"),
                &pool,
                "{key}",
            ))
            .await?;
        let opts = ExecutorOptions {
            wait_seconds: Some(20),
            ..Default::default()
        };
        Ok(Self {
            pool,
            queue,
            prefix,
            tpl,
            opts,
        })
    }
}

/// (a) and (b): every job queued while no executor runs, then drained; raw rclone on the same
/// objects first, while nothing else runs.
async fn backlog(
    stack: &Arc<Stack>,
    site: &Site,
    executor: &mut Executor,
    args: &StormArgs,
) -> Result<Vec<Row>> {
    executor.terminate()?;
    eprintln!(
        "(a) uploading {} objects with no executor running ...",
        args.objects
    );
    let backlog = format!("{}/backlog", site.prefix);
    upload_storm(stack, &backlog, args).await?;
    // Every event taken by the trigger (its queue empty) means every object is in a queued job.
    let jobs = events_became_jobs(stack, &site.queue.url, args.objects).await?;
    eprintln!("    {} objects queued as {jobs} jobs", args.objects);
    eprintln!("(b) raw rclone copy of the same objects ...");
    let raw_dir = tempfile::tempdir()?;
    let raw = raw_rclone(
        stack.output("EmulatorUrl"),
        &["copy", &format!("SRC:{}/{backlog}", stack.source_bucket())],
        raw_dir.path(),
        &["--transfers", "4"],
    )?;
    let raw_files = files_under(raw_dir.path()).len();
    if raw_files != args.objects {
        bail!(
            "raw rclone copied {raw_files} files, expected {}",
            args.objects
        );
    }
    let started = Instant::now();
    executor.restart()?;
    let landing = executor.landing.join(&backlog);
    wait_for_files(&landing, args.objects, Duration::from_secs(3600)).await?;
    let drain = started.elapsed();
    Ok(vec![
        Row::new(
            format!(
                "(a) backlog drain, {} × {} B",
                args.objects, args.object_size
            ),
            format!("{:.2} s", drain.as_secs_f64()),
            "ratio ≤ 1.25",
        )
        .against(raw, drain),
        Row::new(
            "    jobs the trigger made of the backlog",
            format!("{jobs} for {} objects", args.objects),
            "",
        ),
    ])
}

/// (c): the same storm with everything running; where the time after the last PUT goes (until
/// the trigger has taken every event, then the executor).
async fn keeping_pace(
    stack: &Arc<Stack>,
    site: &Site,
    executor: &Executor,
    args: &StormArgs,
) -> Result<Vec<Row>> {
    eprintln!("(c) the same storm with the executor running ...");
    let live = format!("{}/live", site.prefix);
    let last_put = upload_storm(stack, &live, args).await?;
    let trigger_done = trigger_drained(stack, last_put);
    let landing = executor.landing.join(&live);
    wait_for_files(&landing, args.objects, Duration::from_secs(3600)).await?;
    let landed = last_put.elapsed();
    Ok(vec![
        Row::new(
            "(c) keeping pace: last PUT → last file landed",
            format!("{:.2} s", landed.as_secs_f64()),
            "≤ 3 s",
        ),
        Row::new(
            "    of which: last PUT → the trigger took the last event",
            format!("{:.2} s", trigger_done.await?.as_secs_f64()),
            "",
        ),
    ])
}

/// Puts `args.objects` objects under `prefix`; returns when the last PUT completed.
async fn upload_storm(stack: &Arc<Stack>, prefix: &str, args: &StormArgs) -> Result<Instant> {
    let gate = Arc::new(Semaphore::new(args.upload_parallelism));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.objects {
        let permit = gate.clone().acquire_owned().await?;
        let stack = stack.clone();
        let key = format!("{prefix}/{:02}/{i:06}.bin", i % 100);
        let body = pbs_e2e::body(args.object_size, i as u32 + 1);
        tasks.spawn(async move {
            let r = stack.put_object(stack.source_bucket(), &key, body).await;
            drop(permit);
            r
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(Instant::now())
}

/// Waits until the trigger has taken every event (the EventsQueue empty) and the pool's queue
/// holds jobs; how many.
async fn events_became_jobs(stack: &Stack, pool_queue: &str, objects: usize) -> Result<usize> {
    let events_queue = stack.output("EventsQueueUrl");
    eventually(
        Duration::from_secs(120 + objects as u64 / 20),
        "every storm event turned into queued jobs",
        || async {
            if queued(stack, events_queue).await? > 0 {
                return Ok(None);
            }
            let jobs = queued(stack, pool_queue).await?;
            Ok((jobs > 0).then_some(jobs))
        },
    )
    .await
}

/// The time from `since` until the trigger has taken the last event (the EventsQueue empty),
/// watched beside the rest.
fn trigger_drained(stack: &Arc<Stack>, since: Instant) -> tokio::task::JoinHandle<Duration> {
    let stack = stack.clone();
    tokio::spawn(async move {
        let events_queue = stack.output("EventsQueueUrl").to_owned();
        while queued(&stack, &events_queue).await.unwrap_or(1) > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        since.elapsed()
    })
}

/// Messages in a queue, visible or in flight.
async fn queued(stack: &Stack, url: &str) -> Result<usize> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = stack
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await?;
    let attrs = out.attributes().context("no queue attributes")?;
    let get = |a: A| -> usize { attrs.get(&a).and_then(|v| v.parse().ok()).unwrap_or(0) };
    Ok(get(A::ApproximateNumberOfMessages) + get(A::ApproximateNumberOfMessagesNotVisible))
}

/// Waits until `count` files are under `dir` (partials not counted).
async fn wait_for_files(dir: &Path, count: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let n = files_under(dir)
            .iter()
            .filter(|p| !p.to_string_lossy().ends_with(".partial"))
            .count();
        if n >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{n} of {count} files under {} after {timeout:?}",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs rclone against the S3 at `endpoint` as remote `SRC` (environment-only configuration, as
/// the executor does) and returns its wall time.
fn raw_rclone(endpoint: &str, args: &[&str], dest: &Path, extra: &[&str]) -> Result<Duration> {
    let mut all: Vec<OsString> = args.iter().map(OsString::from).collect();
    all.push(dest.into());
    all.extend(extra.iter().map(OsString::from));
    raw_rclone_with(endpoint, &all, &[])
}

/// [`raw_rclone`] with `args` as given and more remotes configured by `env`
/// (`RCLONE_CONFIG_<NAME>_<OPTION>`).
fn raw_rclone_with(
    endpoint: &str,
    args: &[OsString],
    env: &[(String, String)],
) -> Result<Duration> {
    let started = Instant::now();
    let out = Command::new(pbs_e2e::rclone_bin())
        .args(args)
        .env("RCLONE_CONFIG", "/dev/null")
        .env("RCLONE_CONFIG_SRC_TYPE", "s3")
        .env("RCLONE_CONFIG_SRC_PROVIDER", "Other")
        .env("RCLONE_CONFIG_SRC_ENDPOINT", endpoint)
        .env("RCLONE_CONFIG_SRC_ACCESS_KEY_ID", "test")
        .env("RCLONE_CONFIG_SRC_SECRET_ACCESS_KEY", "test")
        .env("RCLONE_CONFIG_SRC_REGION", "us-east-1")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "raw rclone failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

/// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`).
fn proc_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// (e) In-process matching: events per second on one core against `templates` templates.
fn matching(templates: usize, events: usize) -> Row {
    let set: Vec<Template> = (0..templates)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "id": format!("t{i:04}"),
                "trigger": {"type": "s3", "bucket": format!("media-{}", i % 10),
                            "key_glob": format!("site{i}/**/*.{{mov,mxf}}")},
                "destination": {"pool": "default", "endpoint": "disk", "path": "{key}"}
            }))
            .expect("benchmark templates are valid")
        })
        .collect();
    let (set, bad) = TemplateSet::compile(set);
    assert!(bad.is_empty(), "benchmark templates compile");
    let objects: Vec<ObjectRef> = (0..1000)
        .map(|i| ObjectRef {
            bucket: format!("media-{}", i % 10),
            key: format!(
                "site{}/day{}/clip{i}.{}",
                i * 7 % templates.max(1),
                i % 31,
                if i % 3 == 0 { "wav" } else { "mov" }
            ),
            size: 4096,
            etag: None,
            version_id: None,
            sequencer: None,
        })
        .collect();
    let started = Instant::now();
    let mut matched = 0usize;
    for i in 0..events {
        matched += set.matching(&objects[i % objects.len()]).count();
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    Row::new(
        format!(
            "(e) matching against {} templates ({matched} matches)",
            set.len()
        ),
        format!("{rate:.0} events/s"),
        "≥ 200000 events/s",
    )
}

/// (g) An idle executor: resident memory, and SQS requests per minute from its own counters.
async fn idle(stack: &Stack, seconds: u64) -> Result<Vec<Row>> {
    let pool = unique("idle");
    let queue = stack.create_pool(&pool).await?;
    let executor = Executor::start_with(
        stack,
        &pool,
        &queue.url,
        ExecutorOptions {
            wait_seconds: Some(20),
            ..Default::default()
        },
    )?;
    let client = reqwest_client()?;
    let metrics = |client: reqwest::Client, url: String| async move {
        let text = client.get(&url).send().await?.text().await?;
        let total: f64 = text
            .lines()
            .filter(|l| l.starts_with("pbs_sqs_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        anyhow::Ok(total)
    };
    let url = format!("{}/metrics", executor.http);
    let first = eventually(Duration::from_secs(30), "the executor's metrics", || {
        let (client, url) = (client.clone(), url.clone());
        async move { Ok(Some(metrics(client, url).await?)) }
    })
    .await?;
    // Settle past start-up, then count.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = metrics(client.clone(), url.clone()).await?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = metrics(client, url).await?;
    let rss = proc_bytes(executor.pid(), "VmRSS").context("no VmRSS")?;
    let _ = first;
    Ok(vec![
        Row::new(
            "(g) idle executor resident memory",
            format!("{:.1} MB", rss as f64 / 1e6),
            "≤ 25 MB",
        ),
        Row::new(
            "(g) idle executor SQS requests",
            format!("{:.1} /min", (after - before) * 60.0 / seconds as f64),
            "≤ 6 /min",
        ),
    ])
}

fn reqwest_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// The job of `template` whose first file is `key`.
async fn job_of(stack: &Stack, template: &str, key: &str) -> Result<Option<serde_json::Value>> {
    Ok(stack
        .jobs_of_template(template)
        .await?
        .into_iter()
        .find(|j| j["files"][0]["key"] == key))
}

/// (f) PUT → transfer start, one object at a time.
async fn latency(
    stack: &Stack,
    template: &str,
    executor: &Executor,
    prefix: &str,
    samples: usize,
) -> Result<Row> {
    let mut starts = Vec::with_capacity(samples);
    for i in 0..samples {
        let key = format!("{prefix}/latency/{i:03}.bin");
        stack
            .put_object(stack.source_bucket(), &key, pbs_e2e::body(4096, i as u32))
            .await?;
        let put_at = chrono::Utc::now();
        executor.landed(&key).await?;
        let job = eventually(Duration::from_secs(60), "the job's start time", || async {
            Ok(job_of(stack, template, &key)
                .await?
                .filter(|j| j["started_at"].is_string()))
        })
        .await?;
        let started: chrono::DateTime<chrono::Utc> =
            job["started_at"].as_str().unwrap_or_default().parse()?;
        starts.push((started - put_at).num_milliseconds().max(0) as f64 / 1000.0);
    }
    starts.sort_by(f64::total_cmp);
    let pct = |p: f64| starts[((starts.len() as f64 - 1.0) * p).round() as usize];
    Ok(Row::new(
        format!("(f) PUT → transfer start, {samples} objects"),
        format!("p50 {:.2} s, p95 {:.2} s", pct(0.5), pct(0.95)),
        "p50 ≤ 1.5 s",
    ))
}

/// (d) One big object through the system (the job's own duration) and through raw rclone
/// (`copyto`, no verification); then the same bytes through a template verifying by hash (the
/// MD5 rclone computed over the landed bytes, checked against the source's).
async fn big_object(
    stack: &Stack,
    site: &Site,
    executor: &Executor,
    mib: usize,
) -> Result<Vec<Row>> {
    let body = pbs_e2e::body(mib << 20, 7);
    let key = format!("{}/big/{mib}MiB.bin", site.prefix);
    stack
        .put_object(stack.source_bucket(), &key, body.clone())
        .await?;
    let by_size = job_duration(stack, &site.tpl, executor, &key).await?;
    // A template of its own on another prefix, so one object makes one job.
    let hashed_prefix = unique("bighash");
    let hashed_tpl = unique("tplhash");
    let mut template = template_json(
        &hashed_tpl,
        stack.source_bucket(),
        &format!("{hashed_prefix}/**"),
        &site.pool,
        "{key}",
    );
    template["options"] = serde_json::json!({"delivery": {"verify": "hash"}});
    stack.create_template(&template).await?;
    let hashed_key = format!("{hashed_prefix}/{mib}MiB.bin");
    stack
        .put_object(stack.source_bucket(), &hashed_key, body)
        .await?;
    let by_hash = job_duration(stack, &hashed_tpl, executor, &hashed_key).await?;
    let raw_dir = tempfile::tempdir()?;
    let raw = raw_rclone(
        stack.output("EmulatorUrl"),
        &["copyto", &format!("SRC:{}/{key}", stack.source_bucket())],
        &raw_dir.path().join("big.bin"),
        &[],
    )?;
    Ok(vec![
        Row::new(
            format!("(d) one {mib} MiB object, verify = size (job duration)"),
            format!("{:.2} s", by_size.as_secs_f64()),
            "ratio ≤ 1.05",
        )
        .against(raw, by_size),
        Row::new(
            format!("(d) one {mib} MiB object, verify = hash (job duration)"),
            format!("{:.2} s", by_hash.as_secs_f64()),
            "ratio ≤ 1.3",
        )
        .against(raw, by_hash),
    ])
}

/// The recorded duration of the job of `template` that copies `key`, once it has succeeded and
/// the file has landed.
async fn job_duration(
    stack: &Stack,
    template: &str,
    executor: &Executor,
    key: &str,
) -> Result<Duration> {
    let job = eventually(
        Duration::from_secs(3600),
        "the big object's job",
        || async {
            Ok(job_of(stack, template, key)
                .await?
                .filter(|j| j["state"] == "succeeded"))
        },
    )
    .await?;
    executor.landed(key).await?;
    Ok(Duration::from_millis(
        job["result"]["duration_ms"].as_u64().unwrap_or_default(),
    ))
}
