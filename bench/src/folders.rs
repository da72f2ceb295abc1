//! Folders of a million files: a scheduled run over a folder where nothing is new, against
//! `rclone copy --dry-run` of the same folders, and an executor watching such a folder. The
//! executor runs standalone (no emulator): its own time and memory, and its rclone listings'.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use pbs_e2e::{Executor, ExecutorOptions, eventually, rclone_bin};

use crate::{Row, proc_bytes};

#[derive(Args, Clone)]
pub struct FoldersArgs {
    /// Files in the folder (and in its copy at the destination).
    #[arg(long, default_value_t = 1_000_000)]
    pub files: usize,
    /// Files per subfolder.
    #[arg(long, default_value_t = 1000)]
    pub per_folder: usize,
    /// Bytes per file.
    #[arg(long, default_value_t = 100)]
    pub file_size: usize,
    /// Where the two trees are made (default: the system's temporary folder).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Only the scheduled run (`schedule`) or only the watch (`watch`).
    #[arg(long)]
    pub only: Option<Part>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Schedule,
    Watch,
}

/// The modification time every file of both trees gets: the destination is a faithful copy.
fn stamp() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000)
}

/// `root/d0000/f000000.dat` …: `files` files of `size` bytes, `per_folder` to a folder, on two
/// threads.
fn make_tree(root: &Path, files: usize, per_folder: usize, size: usize) -> Result<()> {
    let folders = files.div_ceil(per_folder);
    let body = vec![b'x'; size];
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..2)
            .map(|part| {
                let body = &body;
                s.spawn(move || -> Result<()> {
                    for d in (part..folders).step_by(2) {
                        let dir = root.join(format!("d{d:04}"));
                        std::fs::create_dir_all(&dir)?;
                        let last = ((d + 1) * per_folder).min(files);
                        for f in d * per_folder..last {
                            let file = std::fs::File::create(dir.join(format!("f{f:07}.dat")))?;
                            std::io::Write::write_all(&mut &file, body)?;
                            file.set_modified(stamp())?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        parts
            .into_iter()
            .try_for_each(|p| p.join().expect("tree maker panicked"))
    })
}

/// Runs `cmd` to its end: wall time and peak resident memory (from `wait4`).
fn timed(cmd: &mut Command) -> Result<(Duration, u64)> {
    let started = Instant::now();
    let child = cmd.spawn().context("starting the baseline")?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let took = started.elapsed();
    if pid < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{cmd:?} failed (status {status})");
    }
    Ok((took, usage.ru_maxrss as u64 * 1024))
}

/// Samples the peak resident memory of each child process of `parent` (rclone listings) until
/// dropped; `peak()` is the largest seen.
struct ChildPeaks {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl ChildPeaks {
    fn start(parent: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peaks: HashMap<u32, u64> = HashMap::new();
            while !flag.load(Ordering::Relaxed) {
                for pid in children(parent) {
                    if let Some(hwm) = proc_bytes(pid, "VmHWM") {
                        let p = peaks.entry(pid).or_default();
                        *p = (*p).max(hwm);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peaks.into_values().max().unwrap_or(0)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn peak(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or(0))
            .unwrap_or(0)
    }
}

fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // pid (comm) state ppid …: comm may hold spaces, so read after the last ')'.
                    let rest = &s[s.rfind(')')? + 2..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// The JSON log lines of `executor` whose message is `message`.
fn logged(executor: &Executor, message: &str) -> Vec<serde_json::Value> {
    executor
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == message)
        .collect()
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

fn options(rules: &str, tree: &Path) -> ExecutorOptions {
    ExecutorOptions {
        extra_config: format!(
            "[endpoints.tree]\ntype = \"local\"\nroot = \"{}\"\n\n{rules}",
            tree.display()
        ),
        env: vec![
            ("PBS_LOG_FORMAT".into(), "json".into()),
            (
                "RUST_LOG".into(),
                "info,pbs_executor::rules::watch=debug".into(),
            ),
        ],
        ..Default::default()
    }
}

pub async fn run(args: &FoldersArgs) -> Result<Vec<Row>> {
    let n = args.files;
    let base = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new()
        .prefix("pbs-bench-folders-")
        .tempdir_in(&base)?;
    let (src, dst) = (work.path().join("src"), work.path().join("dst"));
    let started = Instant::now();
    make_tree(&src, n, args.per_folder, args.file_size)?;
    make_tree(&dst, n, args.per_folder, args.file_size)?;
    eprintln!(
        "folders: two trees of {n} files made in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut rows = Vec::new();
    if args.only != Some(Part::Watch) {
        rows.extend(schedule(&src, &dst, work.path(), n).await?);
    }
    if args.only != Some(Part::Schedule) {
        rows.extend(watch(work.path()).await?);
    }
    Ok(rows)
}

/// A scheduled run over `src` (copied already to `dst`) against `rclone copy --dry-run`.
async fn schedule(src: &Path, dst: &Path, tree: &Path, n: usize) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    // The baseline: rclone's own answer to "what would a copy do?", best of two (warm caches).
    let rclone = rclone_bin();
    let mut best: Option<(Duration, u64)> = None;
    for _ in 0..2 {
        let (took, rss) = timed(
            Command::new(&rclone)
                .args(["copy", "--dry-run", "-q"])
                .arg(src)
                .arg(dst)
                .env("RCLONE_CONFIG", "/dev/null")
                .stdout(std::process::Stdio::null()),
        )?;
        eprintln!(
            "folders: rclone copy --dry-run {:.2} s, {}",
            took.as_secs_f64(),
            mb(rss)
        );
        if best.is_none_or(|(t, _)| took < t) {
            best = Some((took, rss));
        }
    }
    let (baseline, baseline_rss) = best.expect("two runs");

    // A schedule over the folder with nothing new, fired every 20 s: its runs' times from the
    // scheduled moment to the decision, the best of two.
    let rules = "[[schedule]]\nname = \"million\"\ncron = \"*/20 * * * * *\"\nsource = \"tree\"\n\
                 folder = \"src\"\ndestination = \"tree\"\npath = \"dst/{key}\"\n";
    let executor = Executor::standalone("folders", options(rules, tree))?;
    let peaks = ChildPeaks::start(executor.pid());
    let runs = eventually(Duration::from_secs(600), "two scheduled runs", || async {
        let runs = logged(&executor, "scheduled run: nothing to copy");
        Ok((runs.len() >= 2).then_some(runs))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}\n{}", executor.log()))?;
    let listing_peak = peaks.peak();
    let took = runs
        .iter()
        .filter_map(|r| {
            let at = chrono::DateTime::parse_from_rfc3339(r["timestamp"].as_str()?).ok()?;
            // Logged as chrono shows a UTC time: `2026-11-30 17:02:00 UTC`.
            let due = chrono::NaiveDateTime::parse_from_str(
                r["fields"]["scheduled_for"].as_str()?,
                "%Y-%m-%d %H:%M:%S%.f UTC",
            )
            .ok()?
            .and_utc();
            (at.to_utc() - due).to_std().ok()
        })
        .min()
        .context("no run time in the executor's log")?;
    let hwm = proc_bytes(executor.pid(), "VmHWM").context("executor memory")?;
    let unchanged = runs[0]["fields"]["unchanged"].as_u64().unwrap_or(0);
    let jobs = executor.ledger()?.len();
    rows.push(
        Row::new(
            format!("scheduled run over {n} unchanged files (scheduled time → nothing to copy)"),
            format!("{:.2} s", took.as_secs_f64()),
            "≤ 1.2",
        )
        .against(baseline, took),
    );
    rows.push(Row {
        measure: "  its memory: executor peak (rclone listings peak, each)".into(),
        system: format!("{} ({})", mb(hwm), mb(listing_peak)),
        baseline: mb(baseline_rss),
        ratio: String::new(),
        target: "≤ 300 MB".into(),
    });
    rows.push(Row::new(
        "  files found unchanged; jobs made",
        format!("{unchanged}; {jobs}"),
        &format!("{n}; 0"),
    ));
    Ok(rows)
}

/// An executor watching the folder (files already there are ignored, as after a restart
/// with `existing = "ignore"`): its start-up scan and one reconcile scan.
async fn watch(tree: &Path) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let rules = "[[watch]]\nname = \"million\"\nsource = \"tree\"\nfolder = \"src\"\n\
                 destination = \"tree\"\npath = \"dst/{key}\"\nexisting = \"ignore\"\n\
                 reconcile_seconds = 30\n";
    let executor = Executor::standalone("folders", options(rules, tree))?;
    let (watching, reconcile) =
        eventually(Duration::from_secs(600), "a reconcile scan", || async {
            let w = logged(&executor, "watching");
            let r = logged(&executor, "reconcile scan");
            Ok((!w.is_empty() && !r.is_empty()).then(|| (w[0].clone(), r[0].clone())))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", executor.log()))?;
    let hwm = proc_bytes(executor.pid(), "VmHWM").context("executor memory")?;
    let rss = proc_bytes(executor.pid(), "VmRSS").context("executor memory")?;
    let ms = |v: &serde_json::Value| v["fields"]["elapsed_ms"].as_u64().unwrap_or(0) as f64 / 1e3;
    rows.push(Row::new(
        format!(
            "watching {} files: start-up scan; a reconcile scan",
            watching["fields"]["files"]
        ),
        format!("{:.2} s; {:.2} s", ms(&watching), ms(&reconcile)),
        "",
    ));
    rows.push(Row::new(
        "  its memory: peak (resident after the reconcile)",
        format!("{} ({})", mb(hwm), mb(rss)),
        "≤ 200 MB",
    ));
    Ok(rows)
}
