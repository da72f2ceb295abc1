//! The one copy path: the files of one job, or of a batch of jobs received together (a job alone
//! is a batch of one), copied and verified, with each job's own result.
//!
//! 1. The job's source and destination become rclone remotes ([`sides`]).
//! 2. Every destination path of the batch is locked, in path order (so two batches never
//!    deadlock), and a file whose newer write already reached its path is left out (superseded).
//! 3. The files go in one `rclone copy --files-from-raw` when they keep their relative paths
//!    under one folder on each side and the policy is `overwrite`, else one by one (the other
//!    policies look at the destination before each copy). Either way each file is verified.
//! 4. The delivered writes' sequencers are recorded in one ledger transaction, and each job's
//!    result is built from its files' results: a job fails when one of its files did not land,
//!    and still lists the files that did.
//!
//! When a batch's shared copy fails as a whole, its jobs are copied again each on its own, so one
//! job's trouble does not fail the others.

use aws_credential_types::provider::ProvideCredentials;
use pbs_shared::message::{STAGING_ENDPOINT, sequencer_cmp};
use pbs_shared::{
    Bandwidth, DeliveredFile, DestPath, ErrorClass, FileOutcome, JobFile, JobId, JobMessage,
    JobSource, Overwrite,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::EndpointConfig;
use crate::jobs::context::JobContext;
use crate::jobs::dest_locks::PathLock;
use crate::transfer::endpoints::{self, Side};
use crate::transfer::links;
use crate::transfer::{self, Checked, Item, rclone};

/// How a job's copy ended.
#[derive(Debug, Clone)]
pub enum Copied {
    Done {
        files: u64,
        bytes: u64,
        /// Keys not copied because a newer write of them was already delivered.
        superseded: Vec<String>,
        delivered: Vec<DeliveredFile>,
    },
    Failed {
        class: ErrorClass,
        error: String,
        /// The files that did land (a job of several files fails for those that did not).
        delivered: Vec<DeliveredFile>,
    },
    /// Stopped by the executor's shutdown: the job runs again.
    Interrupted,
    /// Stopped at an operator's request: the job ends `cancelled`.
    Cancelled { by: String },
}

/// A failure of the whole job, before any file landed.
pub fn failed(class: ErrorClass, error: impl Into<String>) -> Copied {
    Copied::Failed {
        class,
        error: error.into(),
        delivered: Vec::new(),
    }
}

/// Runs `work`, the copy of `attempt` of `job`, with its progress reported from its rclone log
/// while it runs (when the executor reports to the cloud).
pub async fn watched<T>(
    ctx: &JobContext,
    job: &JobMessage,
    attempt: u32,
    work: impl std::future::Future<Output = T>,
) -> T {
    let Some(sink) = ctx.progress.as_ref() else {
        return work.await;
    };
    let log = rclone::log_path(&ctx.config.state_dir, job.job_id.as_str(), attempt);
    let stop = CancellationToken::new();
    let watching = tokio::spawn(sink.watch(job.clone(), attempt, log, stop.clone()));
    let out = work.await;
    stop.cancel();
    let _ = watching.await;
    out
}

/// One file of the batch and its job: `(job index, file)`.
type Planned<'a> = (usize, &'a JobFile);

/// Copies the files of `jobs` (each with its attempt), as one batch; one result per job, in
/// order. The first job's source, destination, delivery rules and bandwidth hold for all (the
/// poller groups only jobs that share them).
pub async fn copy_jobs(
    ctx: &JobContext,
    jobs: &[(&JobMessage, u32)],
    abort: &CancellationToken,
) -> Vec<Copied> {
    let (first, attempt) = jobs[0];
    let (src, dst) = match sides(ctx, first).await {
        Ok(s) => s,
        Err(c) => return vec![c; jobs.len()],
    };
    if let Some(bad) = jobs.iter().find_map(|(job, _)| unsafe_source_path(job)) {
        return vec![bad; jobs.len()];
    }
    let locks = lock_paths(ctx, jobs).await;
    let superseded = match superseded(ctx, jobs) {
        Ok(s) => s,
        Err(c) => return vec![c; jobs.len()],
    };
    let linked = linked(ctx, jobs);
    let wanted: Vec<Planned> = jobs
        .iter()
        .enumerate()
        .flat_map(|(j, (job, _))| job.files.iter().map(move |f| (j, f)))
        .zip(superseded.iter().flatten().zip(linked.iter().flatten()))
        .filter(|(_, (newer, link))| !**newer && link.is_none())
        .map(|(p, _)| p)
        .collect();
    let log = rclone::log_path(&ctx.config.state_dir, first.job_id.as_str(), attempt);
    let bandwidth = bandwidth_limit(
        ctx.config.bandwidth_limit.as_ref(),
        first.bandwidth.as_ref(),
    );
    let runner = runner(ctx, (&src, &dst), &log, bandwidth.as_deref(), abort);
    let (results, folders) = match deliver(&runner, (&src, &dst), first, &wanted).await {
        Ok(r) => r,
        Err(transfer::Fail::Interrupted) => return vec![Copied::Interrupted; jobs.len()],
        Err(transfer::Fail::Failed { error, .. }) if jobs.len() > 1 => {
            warn!(error = %error, jobs = jobs.len(), "the batch copy failed; running its jobs one by one");
            // Each job takes its own paths' locks again (they are not reentrant).
            drop(locks);
            return one_by_one(ctx, jobs, abort).await;
        }
        Err(transfer::Fail::Failed { class, error }) => return vec![failed(class, error)],
    };
    // Every job's own rclone log is the batch's.
    for (job, attempt) in jobs.iter().skip(1) {
        let theirs = rclone::log_path(&ctx.config.state_dir, job.job_id.as_str(), *attempt);
        let _ = std::fs::hard_link(&log, theirs);
    }
    let unrecorded = record_sequencers(ctx, jobs, &wanted, &results);
    drop(locks);
    let mut results = wanted.iter().map(|(j, _)| *j).zip(results).peekable();
    let mut copies = Vec::with_capacity(jobs.len());
    for (j, (((job, _), flags), links)) in jobs.iter().zip(&superseded).zip(&linked).enumerate() {
        let mut own = Vec::new();
        while let Some((_, r)) = results.next_if(|(k, _)| *k == j) {
            own.push(r);
        }
        let unrecorded = unrecorded.as_ref().filter(|(ids, _)| ids.contains(&j));
        let files = FileResults {
            job,
            superseded: flags,
            linked: links,
            results: own,
            folders: (&src, &dst, &folders),
        };
        copies.push(match unrecorded {
            Some((_, e)) => failed(ErrorClass::Internal, e.clone()),
            None => files.outcome(),
        });
    }
    copies
}

/// Each job of a batch copied on its own.
async fn one_by_one(
    ctx: &JobContext,
    jobs: &[(&JobMessage, u32)],
    abort: &CancellationToken,
) -> Vec<Copied> {
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let copied = Box::pin(copy_jobs(ctx, std::slice::from_ref(job), abort)).await;
        out.extend(copied);
    }
    out
}

/// Paths read from an endpoint obey the same rules as paths written: no escaping its root.
fn unsafe_source_path(job: &JobMessage) -> Option<Copied> {
    if !matches!(job.source, JobSource::Endpoint { .. }) {
        return None;
    }
    job.files.iter().find_map(|file| {
        DestPath::parse(&file.key).err().map(|e| {
            failed(
                ErrorClass::BadRequest,
                format!("source path {:?} is not allowed: {e}", file.key),
            )
        })
    })
}

/// The root of `endpoint` when it is a local folder of this executor.
pub(crate) fn local_root<'a>(
    ctx: &'a JobContext,
    endpoint: &pbs_shared::EndpointName,
) -> Option<&'a std::path::Path> {
    if endpoint.as_str() == STAGING_ENDPOINT {
        return None;
    }
    match &ctx.endpoints.get(endpoint).ok()?.config {
        EndpointConfig::Local(l) => Some(&l.root),
        _ => None,
    }
}

/// Per job, per file: why it may not be read or written (a symbolic link on its path under a
/// local endpoint's root), so that it fails alone and the others are copied.
fn linked(ctx: &JobContext, jobs: &[(&JobMessage, u32)]) -> Vec<Vec<Option<String>>> {
    jobs.iter()
        .map(|(job, _)| {
            let src = match &job.source {
                JobSource::Endpoint { endpoint } => local_root(ctx, endpoint),
                JobSource::S3 { .. } => None,
            };
            let dst = local_root(ctx, &job.destination);
            job.files
                .iter()
                .map(|f| {
                    let read = src.and_then(|root| links::refusal(root, &f.key));
                    let write = || {
                        dst.and_then(|root| links::refusal(root, f.dest_path.as_str()))
                            .map(|why| format!("not written: {why}"))
                    };
                    let why = read.map(|why| format!("not read: {why}")).or_else(write);
                    if let Some(why) = &why {
                        warn!(key = %f.key, reason = %why, "file refused");
                    }
                    why
                })
                .collect()
        })
        .collect()
}

/// Writes of one path run one at a time: every path of the batch, locked in path order.
async fn lock_paths(ctx: &JobContext, jobs: &[(&JobMessage, u32)]) -> Vec<PathLock> {
    let destination = jobs[0].0.destination.as_str();
    let mut paths: Vec<&str> = jobs
        .iter()
        .flat_map(|(j, _)| j.files.iter().map(|f| f.dest_path.as_str()))
        .collect();
    paths.sort_unstable();
    paths.dedup();
    let mut locks = Vec::with_capacity(paths.len());
    for p in paths {
        locks.push(ctx.dest_locks.lock(destination, p).await);
    }
    locks
}

/// Per job, per file: whether a newer write of its path was already delivered (an older write
/// never replaces a newer one).
fn superseded(ctx: &JobContext, jobs: &[(&JobMessage, u32)]) -> Result<Vec<Vec<bool>>, Copied> {
    let destination = jobs[0].0.destination.as_str();
    let mut all = Vec::with_capacity(jobs.len());
    for (job, _) in jobs {
        let mut flags = Vec::with_capacity(job.files.len());
        for file in &job.files {
            let Some(seq) = &file.sequencer else {
                flags.push(false);
                continue;
            };
            let known = ctx
                .ledger()
                .delivered_sequencer(destination, file.dest_path.as_str())
                .map_err(|e| failed(ErrorClass::Internal, e.to_string()))?;
            let newer = known.is_some_and(|k| sequencer_cmp(&k, seq).is_gt());
            if newer {
                info!(key = %file.key, "a newer write of this key was already delivered; skipped");
            }
            flags.push(newer);
        }
        all.push(flags);
    }
    Ok(all)
}

/// The folders a shared copy ran between (`None`: the files went one by one).
type Folders = Option<(String, String)>;

/// Delivers the `wanted` files: together in one rclone run when they keep their relative paths
/// under one folder on each side and the policy is `overwrite`, else one by one, stopping at the
/// first file that fails. One result per file delivered or failed, in order.
async fn deliver(
    runner: &transfer::Runner<'_>,
    (src, dst): (&Side, &Side),
    first: &JobMessage,
    wanted: &[Planned<'_>],
) -> Result<(Vec<Checked>, Folders), transfer::Fail> {
    let items: Vec<Item> = wanted.iter().map(|(_, f)| item(f)).collect();
    let together = match items.as_slice() {
        [] | [_] => None,
        _ if first.delivery.overwrite != Overwrite::Overwrite => None,
        _ => transfer::common_folders(&items),
    };
    if let Some((src_dir, dst_dir, rels)) = together {
        let sizes: Vec<u64> = items.iter().map(|i| i.size).collect();
        let etags: Vec<Option<&str>> = items.iter().map(|i| i.etag).collect();
        let checked = runner
            .deliver_each(
                src,
                dst,
                (&src_dir, &dst_dir, &rels),
                (&sizes, &etags),
                first.delivery,
            )
            .await?;
        return Ok((checked, Some((src_dir, dst_dir))));
    }
    let mut checked = Vec::with_capacity(items.len());
    for item in items {
        match runner.deliver(src, dst, item, first.delivery).await {
            Ok(d) => checked.push(Checked::Delivered(d)),
            Err(transfer::Fail::Failed { class, error }) => {
                checked.push(Checked::Failed { class, error });
                break;
            }
            Err(transfer::Fail::Interrupted) => return Err(transfer::Fail::Interrupted),
        }
    }
    Ok((checked, None))
}

fn item(f: &JobFile) -> Item<'_> {
    Item {
        source: &f.key,
        dest: f.dest_path.as_str(),
        size: f.size,
        etag: f.etag.as_deref(),
    }
}

/// Records the sequencers of the writes that landed, in one transaction for the whole copy.
/// On failure: the jobs (by index) whose writes went unrecorded, and why.
fn record_sequencers(
    ctx: &JobContext,
    jobs: &[(&JobMessage, u32)],
    wanted: &[Planned<'_>],
    results: &[Checked],
) -> Option<(Vec<usize>, String)> {
    let writes: Vec<(usize, &str, &str)> = wanted
        .iter()
        .zip(results)
        .filter(|(_, r)| matches!(r, Checked::Delivered(_)))
        .filter_map(|((j, f), _)| Some((*j, f.dest_path.as_str(), f.sequencer.as_deref()?)))
        .collect();
    if writes.is_empty() {
        return None;
    }
    let rows: Vec<(&str, &str, &JobId)> = writes
        .iter()
        .map(|(j, path, seq)| (*path, *seq, &jobs[*j].0.job_id))
        .collect();
    ctx.ledger()
        .record_delivered_all(jobs[0].0.destination.as_str(), &rows)
        .err()
        .map(|e| (writes.iter().map(|(j, ..)| *j).collect(), e.to_string()))
}

/// One job's files and what became of them, turned into the job's result.
struct FileResults<'a> {
    job: &'a JobMessage,
    /// Per file: left out because a newer write was already delivered.
    superseded: &'a [bool],
    /// Per file: left out because a link is on its path (why).
    linked: &'a [Option<String>],
    /// The results of the files not superseded, in order (fewer when the copy stopped early).
    results: Vec<Checked>,
    /// The sides, and the folders of a shared copy (for the words of a failure).
    folders: (&'a Side, &'a Side, &'a Folders),
}

impl FileResults<'_> {
    fn outcome(mut self) -> Copied {
        let (mut files, mut bytes) = (0, 0);
        let mut superseded = Vec::new();
        let mut delivered = Vec::with_capacity(self.job.files.len());
        let (mut missing, mut mismatched, mut first_failure) = (Vec::new(), Vec::new(), None);
        let mut results = std::mem::take(&mut self.results).into_iter();
        for ((file, newer), link) in self.job.files.iter().zip(self.superseded).zip(self.linked) {
            let mut entry = DeliveredFile {
                key: file.key.clone(),
                dest_path: file.dest_path.to_string(),
                size: file.size,
                md5: None,
                outcome: FileOutcome::Superseded,
            };
            if *newer {
                superseded.push(file.key.clone());
                delivered.push(entry);
                continue;
            }
            if let Some(why) = link {
                first_failure.get_or_insert((ErrorClass::BadRequest, why.clone()));
                continue;
            }
            match results.next() {
                Some(Checked::Delivered(d)) => {
                    if d.outcome == FileOutcome::Copied {
                        files += 1;
                        bytes += d.size;
                    }
                    (entry.size, entry.md5, entry.outcome) = (d.size, d.md5, d.outcome);
                    delivered.push(entry);
                }
                Some(Checked::Missing) => missing.push(file),
                Some(Checked::Mismatch(why)) => mismatched.push(why),
                Some(Checked::Failed { class, error }) => {
                    first_failure.get_or_insert((class, error));
                }
                // Not tried: the copy stopped at an earlier file's failure.
                None => {}
            }
        }
        if let Some(refused) = self.refused() {
            first_failure.get_or_insert(refused);
        }
        let fail = |class, error| Copied::Failed {
            class,
            error,
            delivered: delivered.clone(),
        };
        if let Some((class, error)) = first_failure {
            return fail(class, error);
        }
        if !missing.is_empty() {
            return fail(ErrorClass::NotFound, self.missing_error(&missing));
        }
        if !mismatched.is_empty() {
            let why: Vec<&str> = mismatched.iter().map(String::as_str).collect();
            return fail(ErrorClass::Integrity, transfer::mismatched(&why));
        }
        Copied::Done {
            files,
            bytes,
            superseded,
            delivered,
        }
    }

    /// Files the job's rule could not take (names the destination cannot hold): they fail it.
    fn refused(&self) -> Option<(ErrorClass, String)> {
        let first = self.job.refused.first()?;
        let error = match self.job.refused.len() {
            1 => first.error.clone(),
            n => format!("{n} files cannot be delivered; the first: {}", first.error),
        };
        Some((ErrorClass::BadRequest, error))
    }

    /// The words for source files that were not there. An event's object that is gone is named
    /// with the words of a file copied alone; files listed from a folder are counted against the
    /// folder.
    fn missing_error(&self, missing: &[&JobFile]) -> String {
        let (src, dst, folders) = self.folders;
        let event = matches!(self.job.source, JobSource::S3 { .. });
        match (missing, folders) {
            ([one], _) if event => transfer::source_not_found(
                &src.display(&one.key),
                &dst.display(one.dest_path.as_str()),
            ),
            (_, Some((src_dir, dst_dir))) => {
                let keys: Vec<&str> = missing.iter().map(|f| f.key.as_str()).collect();
                let (from, to) = (src.display(src_dir), dst.display(dst_dir));
                transfer::not_delivered(&keys, self.job.files.len(), &from, &to)
            }
            (_, None) => transfer::source_not_found(
                &src.display(&missing[0].key),
                &dst.display(missing[0].dest_path.as_str()),
            ),
        }
    }
}

/// Resolves the job's source and destination into rclone remotes.
pub async fn sides(ctx: &JobContext, job: &JobMessage) -> Result<(Side, Side), Copied> {
    let cloud = ctx.config.cloud.as_ref();
    let unknown = |e: endpoints::EndpointError| {
        failed(ErrorClass::BadRequest, format!("{e} (pool {})", job.pool))
    };
    // `staging` is the stack's relay staging area, not an endpoint of the configuration.
    let staging = |e: &pbs_shared::EndpointName| e.as_str() == STAGING_ENDPOINT;
    let dest = match &job.destination {
        d if staging(d) => None,
        d => Some(ctx.endpoints.get(d).map_err(unknown)?),
    };
    let source = match &job.source {
        JobSource::S3 { .. } => None,
        JobSource::Endpoint { endpoint } if staging(endpoint) => None,
        JobSource::Endpoint { endpoint } => Some(ctx.endpoints.get(endpoint).map_err(unknown)?),
    };
    let needs_aws = source.is_none_or(|s| matches!(s.config, EndpointConfig::S3(_)))
        || dest.is_none_or(|d| matches!(d.config, EndpointConfig::S3(_)));
    let creds = if needs_aws {
        match ctx.credentials.provide_credentials().await {
            Ok(c) => Some(c),
            Err(e) => {
                return Err(failed(
                    ErrorClass::Auth,
                    format!("AWS credentials for {}: {e}", job.source.describe()),
                ));
            }
        }
    } else {
        None
    };
    let bad = |e: endpoints::EndpointError| failed(ErrorClass::BadRequest, e.to_string());
    let aws = || creds.as_ref().expect("fetched above");
    let src = match (&job.source, source) {
        (JobSource::S3 { bucket }, _) => endpoints::s3_source(cloud, bucket, aws()).map_err(bad)?,
        (_, Some(ep)) => ep.side("SRC", cloud, creds.as_ref()).map_err(bad)?,
        (JobSource::Endpoint { .. }, None) => {
            endpoints::staging_side("SRC", cloud, "", aws()).map_err(bad)?
        }
    };
    let dst = match dest {
        Some(d) => d.side("DST", cloud, creds.as_ref()).map_err(bad)?,
        None => {
            let prefix = format!("{}/{}", job.pool, job.job_id);
            endpoints::staging_side("DST", cloud, &prefix, aws()).map_err(bad)?
        }
    };
    Ok((src, dst))
}

/// The rclone runner of an attempt between `src` and `dst`, logging to `log`, at most at
/// `bandwidth` (see [`bandwidth_limit`]).
pub(crate) fn runner<'a>(
    ctx: &'a JobContext,
    (src, dst): (&Side, &Side),
    log: &'a std::path::Path,
    bandwidth: Option<&'a str>,
    abort: &'a CancellationToken,
) -> transfer::Runner<'a> {
    transfer::Runner {
        rclone: &ctx.config.rclone,
        home: &ctx.config.state_dir,
        log,
        secrets: src.secrets().into_iter().chain(dst.secrets()).collect(),
        bandwidth_limit: bandwidth,
        abort,
    }
}

/// A job's rclone `--bwlimit`: the executor's limit and the job's template's, the lower at every
/// minute of the week; `None` when neither limits anything.
pub fn bandwidth_limit(own: Option<&Bandwidth>, job: Option<&Bandwidth>) -> Option<String> {
    let limit = match (own, job) {
        (None, None) => return None,
        (Some(a), None) => a.clone(),
        (None, Some(b)) => b.clone(),
        (Some(a), Some(b)) => a.lowest(b),
    };
    (!limit.is_off()).then(|| limit.to_string())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;

    use super::*;
    use crate::config::Config;
    use crate::ledger::{Journal, Ledger};
    use crate::transfer::endpoints::Endpoints;

    /// Everything a job needs, on two local folders, with an rclone that always fails.
    async fn site_whose_rclone_fails(dir: &Path) -> JobContext {
        for d in ["inbox/set", "outbox", "state/logs"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        for name in ["a.txt", "b.txt"] {
            std::fs::write(dir.join("inbox/set").join(name), "abc").unwrap();
        }
        let rclone = dir.join("rclone");
        std::fs::write(&rclone, "#!/bin/sh\nexit 1\n").unwrap();
        std::fs::set_permissions(&rclone, std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.display();
        let config = Config::parse(&format!(
            "pool = \"site\"\nstate_dir = \"{d}/state\"\nrclone = \"{d}/rclone\"\n\
             [endpoints.inbox]\ntype = \"local\"\nroot = \"{d}/inbox\"\n\
             [endpoints.outbox]\ntype = \"local\"\nroot = \"{d}/outbox\"\n"
        ))
        .unwrap();
        let endpoints = Endpoints::resolve(&config).await.unwrap();
        let ledger = Arc::new(Ledger::open(&dir.join("state/ledger.sqlite")).unwrap());
        JobContext {
            config: Arc::new(config),
            endpoints: Arc::new(endpoints),
            journal: Arc::new(Journal::new(ledger, None)),
            credentials: SharedCredentialsProvider::new(Credentials::new(
                "unused", "unused", None, None, "test",
            )),
            dest_locks: Default::default(),
            cancels: Default::default(),
            progress: None,
            artifacts: None,
        }
    }

    fn job(id: &str, key: &str) -> JobMessage {
        let message = serde_json::json!({
            "v": 1, "job_id": id, "template_id": "folder", "pool": "site",
            "source": {"type": "endpoint", "endpoint": "inbox"},
            "files": [{"key": key, "size": 3, "dest_path": key}],
            "destination": "outbox",
            "retry": {"max_attempts": 1, "backoff_seconds": 1, "max_backoff_seconds": 1},
            "delivery": {"overwrite": "overwrite"},
            "created_at": "2026-11-25T16:30:00Z"
        });
        JobMessage::parse(&message.to_string()).unwrap()
    }

    // Regression: the batch held its paths' locks while its jobs ran one by one, and each job
    // waited for its own path's lock for ever.
    #[tokio::test]
    async fn a_batch_whose_copy_fails_runs_its_jobs_one_by_one_and_each_ends() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = site_whose_rclone_fails(dir.path()).await;
        let (a, b) = (job("job-a", "set/a.txt"), job("job-b", "set/b.txt"));
        let copied = tokio::time::timeout(
            Duration::from_secs(60),
            copy_jobs(&ctx, &[(&a, 1), (&b, 1)], &CancellationToken::new()),
        )
        .await
        .expect("each job ends after the batch's copy failed");
        assert_eq!(copied.len(), 2);
        for c in copied {
            assert!(
                matches!(&c, Copied::Failed { error, .. } if error.contains("set/")),
                "{c:?}"
            );
        }
    }

    #[test]
    fn the_lower_of_the_executor_and_template_limits_applies() {
        let bw = |s: &str| Bandwidth::parse(s).unwrap();
        assert_eq!(bandwidth_limit(None, None), None);
        assert_eq!(bandwidth_limit(Some(&bw("off")), None), None);
        assert_eq!(
            bandwidth_limit(Some(&bw("8M")), None).as_deref(),
            Some("8M")
        );
        assert_eq!(
            bandwidth_limit(None, Some(&bw("2M"))).as_deref(),
            Some("2M")
        );
        assert_eq!(
            bandwidth_limit(Some(&bw("8M")), Some(&bw("2M"))).as_deref(),
            Some("2M")
        );
        assert_eq!(
            bandwidth_limit(Some(&bw("off")), Some(&bw("Mon-08:00,1M Mon-18:00,off"))).as_deref(),
            Some("Mon-08:00,1M Mon-18:00,off")
        );
        assert_eq!(
            bandwidth_limit(Some(&bw("4M")), Some(&bw("Mon-08:00,1M Mon-18:00,off"))).as_deref(),
            Some("Mon-08:00,1M Mon-18:00,4M")
        );
    }
}
