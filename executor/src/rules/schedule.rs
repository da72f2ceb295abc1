//! Cron schedules: at each scheduled time the rule's source folder is listed and the files that
//! are not already at their destination are copied as one ordinary job.
//!
//! - A rule of the executor's own configuration ticks here ([`Scheduler`]): a run still going
//!   makes the next firing skip; after downtime, missed runs are skipped or caught up with one
//!   run, as the rule says. The last scheduled time handled is kept in the ledger, so restarts
//!   neither repeat nor forget runs.
//! - A rule from the cloud ticks in the cloud, once for the whole pool: each run comes through
//!   the pool's work queue and `cloud::PoolRules` makes its job on the executor that took it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pbs_shared::PoolName;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::ScheduleRule;
use crate::jobs::local::LocalJobs;
use crate::rules::clock::{Cron, Filter, Fire, RuleClock, RuleJob, RunFiles, not_at_destination};
use crate::transfer::endpoints::{Endpoints, Side};

pub struct Scheduler {
    pub rule: ScheduleRule,
    pub pool: PoolName,
    pub endpoints: Arc<Endpoints>,
    pub jobs: Arc<LocalJobs>,
}

impl Scheduler {
    /// Runs the schedule until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let cron = Cron::parse(&self.rule.cron, &self.rule.timezone)
            .expect("rules are checked when the configuration loads");
        let ledger = &self.jobs.ctx.ledger();
        let last = ledger.schedule_last(self.rule.name.as_str()).unwrap_or_else(|e| {
            warn!(rule = %self.rule.name, error = %e, "cannot read the last run; counting from now");
            None
        });
        let mut clock = RuleClock::new(cron, self.rule.missed, last);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
        let first = clock.start(Utc::now());
        if first.is_none()
            && last.is_none()
            && let Some(now) = clock.last
        {
            // A new schedule counts from now, also across a restart before its first run.
            let _ = ledger.set_schedule_last(self.rule.name.as_str(), now);
        }
        self.handle(first, &clock, &done_tx);
        info!(rule = %self.rule.name, cron = %self.rule.cron, timezone = %self.rule.timezone,
              next = ?clock.next_due(Utc::now()), "schedule active");
        loop {
            let now = Utc::now();
            // Sleep in steps of at most a minute, so a wall-clock jump is noticed.
            let wait = clock
                .next_due(now)
                .map(|next| (next - now).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(60))
                .min(Duration::from_secs(60));
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(()) = done_rx.recv() => clock.finished(),
                _ = tokio::time::sleep(wait) => {
                    let fire = clock.tick(Utc::now());
                    self.handle(fire, &clock, &done_tx);
                }
            }
        }
    }

    fn handle(
        self: &Arc<Self>,
        fire: Option<Fire>,
        clock: &RuleClock,
        done: &mpsc::UnboundedSender<()>,
    ) {
        let Some(fire) = fire else {
            return;
        };
        if let Some(last) = clock.last
            && let Err(e) = self
                .jobs
                .ctx
                .ledger()
                .set_schedule_last(self.rule.name.as_str(), last)
        {
            warn!(rule = %self.rule.name, error = %e, "cannot record the run time");
        }
        match fire {
            Fire::SkipOverlap(at) => {
                warn!(rule = %self.rule.name, scheduled_for = %at, "previous run still going; this run is skipped")
            }
            Fire::SkipMissed { latest, count } => {
                info!(rule = %self.rule.name, missed = count, latest = %latest, "runs missed while stopped are skipped (missed = \"skip\")")
            }
            Fire::Run(at) => {
                let this = self.clone();
                let done = done.clone();
                self.jobs.spawn(async move {
                    this.run_once(at).await;
                    let _ = done.send(());
                });
            }
        }
    }

    async fn run_once(&self, scheduled_for: DateTime<Utc>) {
        let files = match self.files_for(scheduled_for).await {
            Ok(f) => f,
            Err(e) => {
                error!(rule = %self.rule.name, scheduled_for = %scheduled_for, error = %e, "scheduled run failed: cannot list the source");
                return;
            }
        };
        if files.copy.is_empty() {
            return;
        }
        // A file whose name the destination cannot take fails alone; the others are copied.
        let job = RuleJob::schedule(&self.rule, &self.pool, scheduled_for).build(&files.copy);
        if !job.refused.is_empty() {
            warn!(rule = %self.rule.name, job_id = %job.job_id, refused = job.refused.len(), "files that cannot be delivered are reported failed");
        }
        info!(rule = %self.rule.name, job_id = %job.job_id, files = files.copy.len(), unchanged = files.unchanged, "scheduled run");
        self.jobs.run(job).await;
    }

    /// What the run for `scheduled_for` copies: the files of the rule's folder that its filter
    /// takes, less those already at their destination as they are here
    /// ([`not_at_destination`]). Both sides are listed at once. A destination that cannot be
    /// listed hides nothing: every file is copied, and the copy says what is wrong with it. A run
    /// with nothing to copy logs what it looked at and makes no job.
    pub async fn files_for(&self, scheduled_for: DateTime<Utc>) -> Result<RunFiles, String> {
        let started = Instant::now();
        let rule = &self.rule;
        let filter = Filter::new(&rule.include, &rule.exclude)
            .map_err(|(field, m)| format!("{field}: {m}"))?;
        let job = RuleJob::schedule(rule, &self.pool, scheduled_for);
        let dest_folder = job.dest_folder();
        let src = super::source_side(&self.jobs, &self.endpoints, &rule.source).await?;
        let log = super::rule_log(&self.jobs, "schedule", rule.name.as_str());
        let never = CancellationToken::new();
        let runner = |side: &Side| super::runner(&self.jobs, side, &log, &never);
        // A link on a folder's path: the source is not read; the destination is not compared
        // with, so every file goes to the copy, which refuses the link and says so.
        if let Some(why) = src.folder_link(&rule.folder) {
            return Err(why);
        }
        let source = async {
            runner(&src)
                .listing(&src, &rule.folder, rule.recursive)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{}: no such folder", src.display(&rule.folder)))
        };
        let dest = async {
            let folder = dest_folder.as_deref()?;
            let listed = async {
                let dst =
                    super::side(&self.jobs, &self.endpoints, &rule.destination, "DST").await?;
                if let Some(why) = dst.folder_link(folder) {
                    return Err(why);
                }
                runner(&dst)
                    .listing(&dst, folder, rule.recursive)
                    .await
                    .map_err(|e| e.to_string())
            };
            match listed.await {
                Ok(listed) => Some(listed.unwrap_or_default()),
                Err(e) => {
                    warn!(rule = %rule.name, error = %e, "cannot list the destination; every file of the run is copied");
                    None
                }
            }
        };
        let (source, dest) = tokio::join!(source, dest);
        let mut source = source?;
        let listed = source.len();
        source.retain(|l| filter.matches(&l.path));
        let files = match (dest, dest_folder.as_deref()) {
            (Some(dest), Some(folder)) => {
                not_at_destination(source, dest, rule.delivery.overwrite, |rel| {
                    job.keeps_path(folder, rel)
                })
            }
            _ => RunFiles {
                copy: source.into_iter().map(|l| (l.path, l.size)).collect(),
                unchanged: 0,
            },
        };
        if files.copy.is_empty() {
            info!(rule = %rule.name, scheduled_for = %scheduled_for, listed, unchanged = files.unchanged,
                  elapsed_ms = started.elapsed().as_millis() as u64, "scheduled run: nothing to copy");
        }
        Ok(files)
    }
}
