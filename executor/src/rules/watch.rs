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

use std::collections::{BTreeMap, HashMap, HashSet};
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
    /// Nanoseconds since 1970 (negative before; saturated past the year 2262).
    pub mtime_ns: i64,
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
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let mtime_ns = match mtime.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => nanos(d),
        Err(e) => -nanos(e.duration()),
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
        let started = Instant::now();
        let mut files = self.first_scan(&folder, &filter);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut reconcile = tokio::time::interval(Duration::from_secs(self.rule.reconcile_seconds));
        reconcile.tick().await;
        let mut debouncer = self.subscribe(&folder, event_tx.clone());
        info!(rule = %self.rule.name, folder = %folder.display(), files = files.known(),
              elapsed_ms = started.elapsed().as_millis() as u64, "watching");
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
                    let started = Instant::now();
                    let listed = self.rescan(&mut files, &folder, &filter);
                    debug!(rule = %self.rule.name, files = listed,
                           elapsed_ms = started.elapsed().as_millis() as u64, "reconcile scan");
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
        Files::first_with(&self.rule, |files| {
            self.rescan(files, folder, filter);
        })
    }

    /// A full scan handed to `files` file by file (no list of the whole folder is built):
    /// settled files it does not find are forgotten.
    fn rescan(&self, files: &mut Files, folder: &Path, filter: &Filter) -> usize {
        let mut count = 0;
        files.begin_scan();
        if self.folder_linked().is_none() {
            self.scan_each(folder, folder, filter, &mut |rel, s| {
                count += 1;
                files.found(rel, s);
            });
        }
        files.end_scan();
        count
    }

    fn folder_linked(&self) -> Option<String> {
        let why = links::refusal(&self.root, &self.rule.folder)?;
        warn!(rule = %self.rule.name, reason = %why, "watch folder not scanned");
        Some(why)
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
        if self.folder_linked().is_some() {
            return Vec::new();
        }
        self.scan_under(folder, folder, filter)
    }

    fn scan_under(&self, dir: &Path, folder: &Path, filter: &Filter) -> Vec<(String, Seen)> {
        let mut out = Vec::new();
        self.scan_each(dir, folder, filter, &mut |rel, s| out.push((rel, s)));
        out
    }

    /// Each file the rule takes under `dir`, with its state.
    fn scan_each(
        &self,
        dir: &Path,
        folder: &Path,
        filter: &Filter,
        each: &mut dyn FnMut(String, Seen),
    ) {
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
                    each(rel, s);
                }
            }
        }
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
        let job_id = watch_job_id(&self.rule.name, &rel, s.size, s.mtime_ns.into());
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
    if lease.delivered(&watch_job_id(&rule.name, rel, s.size, s.mtime_ns.into())) {
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
pub struct Files {
    /// Until the first full scan ends: files it finds are settled as they are (the rule ignores
    /// the files already present).
    ignore_found: bool,
    /// Files seen changing, waiting to hold still for `stable_seconds`.
    candidates: HashMap<String, Candidate>,
    /// Files whose job is running.
    in_flight: HashSet<String>,
    /// Files known delivered (and kept) or ignored in their current state: in a folder of a
    /// million files, nearly all of them, so kept compact (no hash table to double in size).
    settled: BTreeMap<Box<str>, Settled>,
    /// Counts full scans: a settled file not marked by the last one is gone.
    scan: u32,
}

#[derive(Debug, Clone, Copy)]
struct Settled {
    seen: Seen,
    /// The last full scan that found it.
    scan: u32,
}

impl Files {
    /// Before the first scan or listing; `existing` says what becomes of the files it finds.
    pub fn new(existing: ExistingFiles) -> Self {
        Self {
            ignore_found: existing == ExistingFiles::Ignore,
            candidates: HashMap::new(),
            in_flight: HashSet::new(),
            settled: BTreeMap::new(),
            scan: 0,
        }
    }

    /// The files of the first scan or listing: candidates, or settled when the rule ignores the
    /// files already present.
    pub fn first(rule: &WatchRule, found: Vec<(String, Seen)>) -> Self {
        Self::first_with(rule, |files| files.reconcile(found))
    }

    /// The state after the first full scan, which `scan` hands to it.
    pub fn first_with(rule: &WatchRule, scan: impl FnOnce(&mut Files)) -> Self {
        let mut files = Files::new(rule.existing);
        scan(&mut files);
        if rule.existing == ExistingFiles::Ignore {
            info!(rule = %rule.name, files = files.known(), "files already present are ignored");
        }
        files
    }

    /// Files being watched for settling or settled as they are.
    pub fn known(&self) -> usize {
        self.candidates.len() + self.settled.len()
    }

    /// The state in which `rel` is settled, if it is.
    fn settled_as(&self, rel: &str) -> Option<Seen> {
        self.settled.get(rel).map(|x| x.seen)
    }

    fn settle(&mut self, rel: String, seen: Seen) {
        let scan = self.scan;
        self.settled
            .insert(rel.into_boxed_str(), Settled { seen, scan });
    }

    /// A file seen now (an event): a candidate unless settled as it is.
    pub fn offer(&mut self, rel: String, s: Seen) {
        if self.settled_as(&rel) != Some(s) {
            self.candidates.entry(rel).or_insert(Candidate {
                seen: s,
                since: Instant::now(),
            });
        }
    }

    /// A full scan begins: [`Files::found`] for each file, then [`Files::end_scan`].
    pub fn begin_scan(&mut self) {
        self.scan = self.scan.wrapping_add(1);
    }

    /// A file of the full scan going on. The first scan settles what it finds when the rule
    /// ignores the files already present.
    pub fn found(&mut self, rel: String, s: Seen) {
        let scan = self.scan;
        if let Some(x) = self.settled.get_mut(rel.as_str()) {
            x.scan = scan;
            if x.seen == s {
                return;
            }
        } else if self.ignore_found {
            return self.settle(rel, s);
        }
        self.offer(rel, s);
    }

    /// The full scan is over: settled files it did not find are gone, and forgotten.
    pub fn end_scan(&mut self) {
        let scan = self.scan;
        self.settled.retain(|_, x| x.scan == scan);
        self.ignore_found = false;
    }

    /// A full scan's (or listing's) files at once.
    pub fn reconcile(&mut self, found: Vec<(String, Seen)>) {
        self.begin_scan();
        for (rel, s) in found {
            self.found(rel, s);
        }
        self.end_scan();
    }

    /// A file's job ended; a delivered file that stays in the folder is settled.
    pub fn finished(&mut self, done: Done, keep: bool) {
        self.in_flight.remove(&done.rel);
        if done.state == Some(JobState::Succeeded) && keep {
            self.settle(done.rel, done.seen);
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
                        self.settle(rel, s);
                    }
                }
                Turn::Delivered => self.settle(rel, s),
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
        ready.retain(|(rel, s)| self.settled_as(rel) != Some(*s));
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(size: u64, mtime_ns: i64) -> Seen {
        Seen { size, mtime_ns }
    }

    fn scan(files: &mut Files, found: &[(&str, Seen)]) {
        files.reconcile(found.iter().map(|(r, s)| (r.to_string(), *s)).collect());
    }

    fn ready(files: &mut Files, now: &[(&str, Seen)]) -> Vec<String> {
        let now: HashMap<&str, Seen> = now.iter().copied().collect();
        let mut ready: Vec<String> = files
            .ready(|rel| now.get(rel).copied(), Duration::ZERO)
            .into_iter()
            .map(|(rel, _)| rel)
            .collect();
        ready.sort();
        ready
    }

    #[test]
    fn files_present_at_start_are_ignored_only_by_the_first_scan() {
        let mut files = Files::new(ExistingFiles::Ignore);
        scan(&mut files, &[("old.txt", at(1, 1))]);
        assert_eq!(files.known(), 1);
        assert!(ready(&mut files, &[("old.txt", at(1, 1))]).is_empty());
        // Later scans offer what is new or changed.
        let now = [("old.txt", at(2, 2)), ("new.txt", at(1, 1))];
        scan(&mut files, &now);
        assert_eq!(ready(&mut files, &now), ["new.txt", "old.txt"]);

        let mut files = Files::new(ExistingFiles::Process);
        scan(&mut files, &[("old.txt", at(1, 1))]);
        assert_eq!(ready(&mut files, &[("old.txt", at(1, 1))]), ["old.txt"]);
    }

    #[test]
    fn a_delivered_file_stays_settled_until_it_changes_or_goes() {
        let mut files = Files::new(ExistingFiles::Process);
        scan(&mut files, &[("a.txt", at(1, 1))]);
        assert_eq!(ready(&mut files, &[("a.txt", at(1, 1))]), ["a.txt"]);
        files.in_flight.insert("a.txt".into());
        files.finished(
            Done {
                rel: "a.txt".into(),
                seen: at(1, 1),
                state: Some(JobState::Succeeded),
            },
            true,
        );
        // Found again as it was: nothing to do.
        scan(&mut files, &[("a.txt", at(1, 1))]);
        assert!(ready(&mut files, &[("a.txt", at(1, 1))]).is_empty());
        assert_eq!(files.known(), 1);
        // Gone: forgotten; back in the same state: a file to take again.
        scan(&mut files, &[]);
        assert_eq!(files.known(), 0);
        scan(&mut files, &[("a.txt", at(1, 1))]);
        assert_eq!(ready(&mut files, &[("a.txt", at(1, 1))]), ["a.txt"]);
    }

    #[test]
    fn a_candidate_that_changes_waits_again_and_one_that_goes_is_dropped() {
        let mut files = Files::new(ExistingFiles::Process);
        files.offer("a.txt".into(), at(1, 1));
        files.offer("b.txt".into(), at(1, 1));
        let stable = Duration::from_secs(3600);
        let now = |rel: &str| (rel == "a.txt").then_some(at(2, 2));
        assert!(files.ready(now, stable).is_empty());
        assert_eq!(files.known(), 1, "b.txt went");
        assert_eq!(
            files.ready(now, Duration::ZERO),
            [("a.txt".into(), at(2, 2))]
        );
    }
}
