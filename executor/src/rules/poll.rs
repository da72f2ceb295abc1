//! Watched folders on SFTP, SMB and S3 endpoints: no file events reach this machine from there,
//! so the folder is listed every `poll_seconds` (one rclone listing per poll, nothing else). A
//! file is taken once its size and modification time have held for `stable_seconds` across
//! polls, so a file still being written is never copied half-way; the same filters, after-actions
//! and pool lease as a local watch apply. A file is never taken twice: the job id is a digest of
//! rule, path, size and modification time, and the ledger remembers each job, so a file kept in
//! the folder (`after = "keep"`) is not taken again after a restart, and a file changed after its
//! delivery is a new job.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use pbs_shared::PoolName;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cloud::lease::PoolLease;
use crate::config::{AfterAction, WatchRule};
use crate::jobs::local::LocalJobs;
use crate::rules::clock::{Filter, RuleJob, watch_job_id};
use crate::rules::watch::{Done, Files, Known, Seen, known, takes};
use crate::transfer::endpoints::{Endpoints, Side, join};

pub struct RemoteWatcher {
    pub rule: WatchRule,
    pub pool: PoolName,
    pub endpoints: Arc<Endpoints>,
    pub jobs: Arc<LocalJobs>,
    /// The pool's rule lease, for a rule from the cloud (see `watch`).
    pub lease: Option<Arc<PoolLease>>,
}

impl RemoteWatcher {
    /// Polls until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let filter = Filter::new(&self.rule.include, &self.rule.exclude)
            .expect("rules are checked when the configuration loads");
        let stable = Duration::from_secs(self.rule.stable_seconds);
        let keep = self.rule.after == AfterAction::Keep;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut poll = tokio::time::interval(Duration::from_secs(self.rule.poll_seconds));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut files: Option<Files> = None;
        info!(rule = %self.rule.name, endpoint = %self.rule.source, folder = %self.rule.folder,
              every_s = self.rule.poll_seconds, "watching by polling");
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(done) = done_rx.recv() => {
                    if let Some(files) = files.as_mut() {
                        files.finished(done, keep);
                    }
                }
                _ = poll.tick() => {
                    let found = match self.list(&filter).await {
                        Ok(found) => found,
                        Err(e) => {
                            warn!(rule = %self.rule.name, error = %e, "cannot list the watched folder; trying again at the next poll");
                            continue;
                        }
                    };
                    let now: HashMap<String, Seen> = found.iter().cloned().collect();
                    let files = match files.as_mut() {
                        Some(files) => {
                            files.reconcile(found);
                            files
                        }
                        None => files.insert(Files::first(&self.rule, found)),
                    };
                    let ready = files.ready(|rel| now.get(rel).copied(), stable);
                    files.take(ready, (self.lease.as_deref(), &self.rule, stable), |rel, s, why| {
                        self.start(rel, s, &done_tx, why)
                    });
                }
            }
        }
        info!(rule = %self.rule.name, "stopped watching");
    }

    /// The source endpoint as rclone's `SRC`, and a runner for listings and after-actions.
    async fn side(&self) -> Result<(Side, std::path::PathBuf), String> {
        let side = super::source_side(&self.jobs, &self.endpoints, &self.rule.source).await?;
        Ok((
            side,
            super::rule_log(&self.jobs, "watch", self.rule.name.as_str()),
        ))
    }

    /// Every file of the folder the rule takes, with its state.
    async fn list(&self, filter: &Filter) -> Result<Vec<(String, Seen)>, String> {
        let (side, log) = self.side().await?;
        let never = CancellationToken::new();
        let runner = super::runner(&self.jobs, &side, &log, &never);
        let listed = runner
            .listing(&side, &self.rule.folder, self.rule.recursive)
            .await
            .map_err(|f| f.to_string())?
            .unwrap_or_default();
        debug!(rule = %self.rule.name, files = listed.len(), "polled");
        Ok(listed
            .into_iter()
            .filter(|l| takes(&self.rule, &l.path, filter))
            .map(|l| {
                let mtime_ns = l
                    .modified
                    .and_then(|t| t.timestamp_nanos_opt())
                    .unwrap_or(0);
                (
                    l.path,
                    Seen {
                        size: l.size,
                        mtime_ns,
                    },
                )
            })
            .collect())
    }

    /// Starts the job of a settled file; false when there is nothing to do (already handled).
    fn start(
        self: &Arc<Self>,
        rel: String,
        s: Seen,
        done: &mpsc::UnboundedSender<Done>,
        why: Option<String>,
    ) -> bool {
        let job_id = watch_job_id(&self.rule.name, &rel, s.size, s.mtime_ns.into());
        let delivered = match known(&self.jobs, &self.rule, &rel, &job_id) {
            Known::New => false,
            Known::Delivered => true,
            Known::Leave => return false,
        };
        let this = self.clone();
        let done = done.clone();
        if delivered {
            // Only the after-action is left (the executor stopped before it ran).
            self.jobs.spawn(async move {
                this.after(&rel, s).await;
            });
            return false;
        }
        let mut job = RuleJob::watch(&self.rule, &self.pool, job_id, Utc::now());
        if let Some(why) = why {
            job = job.because(why);
        }
        let job = job.build(&[(rel.clone(), s.size)]);
        self.jobs.spawn(async move {
            let state = this.jobs.run(job).await;
            if state == Some(pbs_shared::JobState::Succeeded) {
                this.after(&rel, s).await;
            }
            let _ = done.send(Done {
                rel,
                seen: s,
                state,
            });
        });
        true
    }

    /// The after-transfer action, for a file delivered and verified in state `s`. A file whose
    /// size changed since is left alone: it is a new version, with its own job.
    pub async fn after(&self, rel: &str, s: Seen) {
        if self.rule.after == AfterAction::Keep {
            return;
        }
        let (side, log) = match self.side().await {
            Ok(x) => x,
            Err(e) => {
                return warn!(rule = %self.rule.name, path = %rel, error = %e, "delivered; source left alone");
            }
        };
        let never = CancellationToken::new();
        let runner = super::runner(&self.jobs, &side, &log, &never);
        let path = join(&self.rule.folder, rel);
        match runner.stat(&side, &path).await {
            Ok(Some(size)) if size == s.size => {}
            Ok(_) => {
                return info!(rule = %self.rule.name, path = %rel, "delivered; the source changed or went since, left alone");
            }
            Err(e) => {
                return warn!(rule = %self.rule.name, path = %rel, error = %e, "delivered; source left alone");
            }
        }
        let done = match self.rule.after {
            AfterAction::Keep => return,
            AfterAction::Delete => runner.delete(&side, &path).await.map(|()| "deleted"),
            AfterAction::MoveTo => {
                let archive = self.rule.archive_folder.as_deref().unwrap_or_default();
                runner
                    .move_file(&side, &path, &join(archive, rel))
                    .await
                    .map(|()| "archived")
            }
        };
        match done {
            Ok(what) => info!(rule = %self.rule.name, path = %rel, "delivered; source {what}"),
            Err(e) => {
                warn!(rule = %self.rule.name, path = %rel, error = %e, "delivered; source not removed")
            }
        }
    }
}
