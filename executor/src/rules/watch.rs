//! Watch folders: files are taken once they have settled, each as one job, and after a verified
//! delivery kept, deleted or moved to an archive folder.
//!
//! inotify events (through `notify`'s debouncer) say where to look; they are only hints. A file is
//! taken when its size and modification time have not changed for `stable_seconds`, so a file
//! still being written is never copied half-way. A full scan every `reconcile_seconds` (and at
//! start) catches what events miss: queue overflows, files that arrived while the executor was
//! down, network filesystems without inotify. The job id is a digest of rule, path, size and
//! modification time, so the same file in the same state is one job however often it is seen, and
//! a file changed after its delivery is a new job.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, new_debouncer};
use pbs_shared::{JobState, PoolName};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::cloud::lease::PoolLease;
use crate::config::{AfterAction, ExistingFiles, WatchRule};
use crate::jobs::local::LocalJobs;
use crate::rules::clock::{Filter, RuleJob, watch_job_id};
use crate::transfer::endpoints::join;
use crate::transfer::links;

/// A file's state as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub size: u64,
    pub mtime_ns: i128,
}

/// The state of the file at `path` now (`None`: no such file, or not a plain file).
pub fn seen_now(path: &Path) -> Option<Seen> {
    seen(path)
}

fn seen(path: &Path) -> Option<Seen> {
    // A link is never a file of the folder, whatever it points to.
    let m = std::fs::symlink_metadata(path).ok()?;
    if !m.is_file() {
        return None;
    }
    let mtime = m.modified().ok()?;
    let mtime_ns = match mtime.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    Some(Seen {
        size: m.len(),
        mtime_ns,
    })
}

struct Candidate {
    seen: Seen,
    since: Instant,
}

pub struct Watcher {
    pub rule: WatchRule,
    /// The source endpoint's root.
    pub root: PathBuf,
    pub pool: PoolName,
    pub jobs: Arc<LocalJobs>,
    /// The pool's rule lease, for a rule from the cloud: every executor of the pool watches,
    /// only the holder starts jobs (`None`: a rule of this executor's own configuration).
    pub lease: Option<Arc<PoolLease>>,
}

/// Whose turn a settled file is.
enum Turn {
    /// This executor's: it starts the job (saying why, for a cloud rule).
    Mine(Option<String>),
    /// Another executor of the pool delivered it in this state.
    Delivered,
    /// Another executor holds the pool's lease: the file waits, and is taken here only if this
    /// executor takes the lease over before the file is delivered or gone.
    Wait,
}

/// What a finished job tells the watch loop.
pub struct Done {
    pub rel: String,
    pub seen: Seen,
    pub state: Option<JobState>,
}

impl Watcher {
    pub fn folder(&self) -> PathBuf {
        if self.rule.folder.is_empty() {
            self.root.clone()
        } else {
            self.root.join(&self.rule.folder)
        }
    }

    /// Watches until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let folder = self.folder();
        let filter = Filter::new(&self.rule.include, &self.rule.exclude)
            .expect("rules are checked when the configuration loads");
        let stable = Duration::from_secs(self.rule.stable_seconds);
        let (event_tx, mut events) = mpsc::unbounded_channel::<Option<PathBuf>>();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        info!(rule = %self.rule.name, folder = %folder.display(), "watching");
        let mut files = self.first_scan(&folder, &filter);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut reconcile = tokio::time::interval(Duration::from_secs(self.rule.reconcile_seconds));
        reconcile.tick().await;
        let mut debouncer = self.subscribe(&folder, event_tx.clone());
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(ev) = events.recv() => {
                    for (rel, s) in self.changed(ev, &folder, &filter) {
                        files.offer(rel, s);
                    }
                }
                Some(done) = done_rx.recv() => files.finished(done, self.rule.after == AfterAction::Keep),
                _ = reconcile.tick() => {
                    // A folder that was missing (or a watch that failed) is tried again here.
                    if debouncer.is_none() {
                        debouncer = self.subscribe(&folder, event_tx.clone());
                    }
                    let found = self.scan(&folder, &filter);
                    debug!(rule = %self.rule.name, files = found.len(), "reconcile scan");
                    files.reconcile(found);
                }
                _ = tick.tick() => {
                    let ready = files.ready(|rel| seen(&folder.join(rel)), stable);
                    files.take(ready, (self.lease.as_deref(), &self.rule, stable), |rel, s, why| {
                        self.start(rel, s, &done_tx, why)
                    });
                }
            }
        }
        drop(debouncer);
        info!(rule = %self.rule.name, "stopped watching");
    }

    /// The files present at start: candidates, or settled when the rule ignores them.
    fn first_scan(&self, folder: &Path, filter: &Filter) -> Files {
        Files::first(&self.rule, self.scan(folder, filter))
    }

    /// Why `rel` (under the watch folder) may not be touched: a link on its path.
    fn linked(&self, rel: &str) -> Option<String> {
        links::refusal(&self.root, &join(&self.rule.folder, rel))
    }

    /// The files a notify event is about (`None`: events were lost, look at everything). An
    /// event through a link (the watcher follows linked folders) is about nothing of the root.
    fn changed(&self, ev: Option<PathBuf>, folder: &Path, filter: &Filter) -> Vec<(String, Seen)> {
        if let Some(rel) = ev.as_deref().and_then(|p| rel_of(folder, p))
            && let Some(why) = self.linked(&rel)
        {
            debug!(rule = %self.rule.name, reason = %why, "event skipped");
            return Vec::new();
        }
        let is_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
        match ev {
            Some(path) if is_dir(&path) => self.scan_under(&path, folder, filter),
            Some(path) => rel_of(folder, &path)
                .filter(|rel| self.takes(rel, filter))
                .and_then(|rel| seen(&path).map(|s| (rel, s)))
                .into_iter()
                .collect(),
            None => self.scan(folder, filter),
        }
    }

    /// Subscribes to the folder's events; `None` (retried on the next loop) if it cannot.
    fn subscribe(
        &self,
        folder: &Path,
        tx: mpsc::UnboundedSender<Option<PathBuf>>,
    ) -> Option<notify_debouncer_mini::Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>>
    {
        let mut debouncer = match new_debouncer(
            Duration::from_millis(200),
            move |res: DebounceEventResult| match res {
                Ok(events) => {
                    for e in events {
                        let _ = tx.send(Some(e.path));
                    }
                }
                Err(_) => {
                    let _ = tx.send(None);
                }
            },
        ) {
            Ok(d) => d,
            Err(e) => {
                error!(rule = %self.rule.name, error = %e, "cannot watch for file events; relying on the reconcile scan");
                return None;
            }
        };
        let mode = if self.rule.recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        if let Err(e) = debouncer.watcher().watch(folder, mode) {
            warn!(rule = %self.rule.name, folder = %folder.display(), error = %e, "cannot watch the folder (missing?); the reconcile scan retries");
            return None;
        }
        Some(debouncer)
    }

    fn takes(&self, rel: &str, filter: &Filter) -> bool {
        takes(&self.rule, rel, filter)
    }

    /// Every file the rule takes, with its state (none when the watch folder is reached through
    /// a link: it is not under the root).
    fn scan(&self, folder: &Path, filter: &Filter) -> Vec<(String, Seen)> {
        if let Some(why) = links::refusal(&self.root, &self.rule.folder) {
            warn!(rule = %self.rule.name, reason = %why, "watch folder not scanned");
            return Vec::new();
        }
        self.scan_under(folder, folder, filter)
    }

    fn scan_under(&self, dir: &Path, folder: &Path, filter: &Filter) -> Vec<(String, Seen)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    if self.rule.recursive {
                        stack.push(path);
                    }
                } else if kind.is_file()
                    && let Some(rel) = rel_of(folder, &path)
                    && self.takes(&rel, filter)
                    && let Some(s) = seen(&path)
                {
                    out.push((rel, s));
                }
            }
        }
        out
    }

    /// Starts the job of a settled file; false when there is nothing to do (already handled).
    fn start(
        self: &Arc<Self>,
        rel: String,
        s: Seen,
        done: &mpsc::UnboundedSender<Done>,
        why: Option<String>,
    ) -> bool {
        if let Some(why) = self.linked(&rel) {
            warn!(rule = %self.rule.name, path = %rel, reason = %why, "file not taken");
            return false;
        }
        let job_id = watch_job_id(&self.rule.name, &rel, s.size, s.mtime_ns);
        match known(&self.jobs, &self.rule, &rel, &job_id) {
            Known::New => {}
            Known::Delivered => {
                self.after(&rel, s);
                return false;
            }
            Known::Leave => return false,
        }
        // A name the destination cannot take makes a job that fails for it, with the reason.
        let mut job = RuleJob::watch(&self.rule, &self.pool, job_id, Utc::now());
        if let Some(why) = why {
            job = job.because(why);
        }
        let job = job.build(&[(rel.clone(), s.size)]);
        let this = self.clone();
        let done = done.clone();
        self.jobs.spawn(async move {
            let state = this.jobs.run(job).await;
            if state == Some(JobState::Succeeded) {
                this.after(&rel, s);
            }
            let _ = done.send(Done {
                rel,
                seen: s,
                state,
            });
        });
        true
    }

    /// The after-transfer action, for a file delivered and verified in state `s`. A file changed
    /// since is left alone: it is a new version, with its own job.
    pub fn after(&self, rel: &str, s: Seen) {
        let path = self.folder().join(rel);
        if seen(&path) != Some(s) {
            return;
        }
        if let Some(why) = self.linked(rel) {
            warn!(rule = %self.rule.name, path = %rel, reason = %why, "delivered; source left alone");
            return;
        }
        match self.rule.after {
            AfterAction::Keep => {}
            AfterAction::Delete => match std::fs::remove_file(&path) {
                Ok(()) => info!(rule = %self.rule.name, path = %rel, "delivered; source deleted"),
                Err(e) => {
                    warn!(rule = %self.rule.name, path = %rel, error = %e, "delivered; source not deleted")
                }
            },
            AfterAction::MoveTo => {
                let archive = self.rule.archive_folder.as_deref().unwrap_or_default();
                if let Some(why) = links::refusal(&self.root, &join(archive, rel)) {
                    warn!(rule = %self.rule.name, path = %rel, reason = %why, "delivered; source not archived");
                    return;
                }
                let target = self.root.join(join(archive, rel));
                let moved = target
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::rename(&path, &target));
                match moved {
                    Ok(()) => {
                        info!(rule = %self.rule.name, path = %rel, to = %target.display(), "delivered; source archived")
                    }
                    Err(e) => {
                        warn!(rule = %self.rule.name, path = %rel, error = %e, "delivered; source not archived")
                    }
                }
            }
        }
    }
}

/// Whether `rule` takes the file `rel` (relative to its folder).
pub fn takes(rule: &WatchRule, rel: &str, filter: &Filter) -> bool {
    (rule.recursive || !rel.contains('/')) && filter.matches(rel)
}

/// What this executor's ledger knows of a settled file's job.
pub enum Known {
    /// Nothing: the file is taken.
    New,
    /// Delivered before (e.g. the executor stopped before the after-action ran): only the
    /// after-action is left.
    Delivered,
    /// Its job failed (the file is taken again when it changes), or the ledger cannot say.
    Leave,
}

pub fn known(jobs: &LocalJobs, rule: &WatchRule, rel: &str, job_id: &pbs_shared::JobId) -> Known {
    match jobs.ctx.ledger().job_state(job_id) {
        Ok(Some(JobState::Succeeded)) => Known::Delivered,
        Ok(Some(JobState::Failed)) => {
            debug!(rule = %rule.name, path = %rel, "its job failed; taken again when the file changes");
            Known::Leave
        }
        Ok(_) => Known::New,
        Err(e) => {
            warn!(error = %e, "ledger unavailable; file left for the next scan");
            Known::Leave
        }
    }
}

/// Whose turn the settled file `rel` in state `s` of `rule` is: this executor's for a rule of its
/// own (`lease` is `None`) or while it holds the pool's rule lease.
fn turn(lease: Option<&PoolLease>, rule: &WatchRule, rel: &str, s: Seen) -> Turn {
    let Some(lease) = lease else {
        return Turn::Mine(None);
    };
    if lease.held() {
        let since = lease
            .held_since()
            .map(|t| format!(" since {}", t.to_rfc3339()))
            .unwrap_or_default();
        return Turn::Mine(Some(format!(
            "this executor holds the pool's rule lease{since}: it runs the pool's watch rules"
        )));
    }
    if lease.delivered(&watch_job_id(&rule.name, rel, s.size, s.mtime_ns)) {
        debug!(rule = %rule.name, path = %rel, "delivered by another executor of the pool");
        return Turn::Delivered;
    }
    Turn::Wait
}

/// `path` relative to `folder`, with `/` separators, if it is inside.
fn rel_of(folder: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(folder).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_str().map(str::to_owned))
        .collect::<Option<_>>()?;
    (!parts.is_empty()).then(|| parts.join("/"))
}
/// What a watcher knows of its folder's files, by path relative to the folder.
#[derive(Default)]
pub struct Files {
    /// Files seen changing, waiting to hold still for `stable_seconds`.
    candidates: HashMap<String, Candidate>,
    /// Files whose job is running.
    in_flight: HashSet<String>,
    /// Files known delivered (and kept) or ignored in their current state.
    settled: HashMap<String, Seen>,
}

impl Files {
    /// The files of the first scan or listing: candidates, or settled when the rule ignores the
    /// files already present.
    pub fn first(rule: &WatchRule, found: Vec<(String, Seen)>) -> Self {
        let mut files = Files::default();
        match rule.existing {
            ExistingFiles::Process => {
                for (rel, s) in found {
                    files.offer(rel, s);
                }
            }
            ExistingFiles::Ignore => {
                info!(rule = %rule.name, files = found.len(), "files already present are ignored");
                files.settled.extend(found);
            }
        }
        files
    }

    /// A file seen now (an event, or the first scan): a candidate unless settled as it is.
    pub fn offer(&mut self, rel: String, s: Seen) {
        if self.settled.get(&rel) != Some(&s) {
            self.candidates.entry(rel).or_insert(Candidate {
                seen: s,
                since: Instant::now(),
            });
        }
    }

    /// A full scan's (or listing's) files; settled files that are gone are forgotten.
    pub fn reconcile(&mut self, found: Vec<(String, Seen)>) {
        let present: HashSet<&String> = found.iter().map(|(rel, _)| rel).collect();
        self.settled.retain(|rel, _| present.contains(rel));
        for (rel, s) in found {
            self.offer(rel, s);
        }
    }

    /// A file's job ended; a delivered file that stays in the folder is settled.
    pub fn finished(&mut self, done: Done, keep: bool) {
        self.in_flight.remove(&done.rel);
        if done.state == Some(JobState::Succeeded) && keep {
            self.settled.insert(done.rel, done.seen);
        }
    }

    /// Takes the `ready` files whose turn it is here (`start` starts a job; false: nothing to
    /// do, the file is settled as it is), settles those another executor of the pool delivered,
    /// and keeps the others waiting.
    pub fn take(
        &mut self,
        ready: Vec<(String, Seen)>,
        (lease, rule, stable): (Option<&PoolLease>, &WatchRule, Duration),
        mut start: impl FnMut(String, Seen, Option<String>) -> bool,
    ) {
        for (rel, s) in ready {
            match turn(lease, rule, &rel, s) {
                Turn::Mine(why) => {
                    if start(rel.clone(), s, why) {
                        self.in_flight.insert(rel);
                    } else {
                        self.settled.insert(rel, s);
                    }
                }
                Turn::Delivered => {
                    self.settled.insert(rel, s);
                }
                Turn::Wait => self.wait(rel, s, stable),
            }
        }
    }

    /// A settled file that is another executor's turn: looked at again at the next tick, as
    /// settled as it was.
    fn wait(&mut self, rel: String, s: Seen, stable: Duration) {
        let since = Instant::now()
            .checked_sub(stable)
            .unwrap_or_else(Instant::now);
        self.candidates.insert(rel, Candidate { seen: s, since });
    }

    /// Candidates that have held still for `stable` (and are not settled as they are now), by
    /// their state `now`; they leave the candidates, as do files that are gone.
    pub fn ready(
        &mut self,
        now: impl Fn(&str) -> Option<Seen>,
        stable: Duration,
    ) -> Vec<(String, Seen)> {
        let mut ready = Vec::new();
        let in_flight = &self.in_flight;
        self.candidates.retain(|rel, c| {
            if in_flight.contains(rel) {
                return true;
            }
            match now(rel) {
                None => false,
                Some(now) if now != c.seen => {
                    c.seen = now;
                    c.since = Instant::now();
                    true
                }
                Some(now) if c.since.elapsed() >= stable => {
                    ready.push((rel.clone(), now));
                    false
                }
                Some(_) => true,
            }
        });
        ready.retain(|(rel, s)| self.settled.get(rel) != Some(s));
        ready
    }
}
