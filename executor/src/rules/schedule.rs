//! Cron schedules: at each scheduled time the rule's source folder is listed and its files copied
//! as one ordinary job.
//!
//! - A rule of the executor's own configuration ticks here ([`Scheduler`]): a run still going
//!   makes the next firing skip; after downtime, missed runs are skipped or caught up with one
//!   run, as the rule says. The last scheduled time handled is kept in the ledger, so restarts
//!   neither repeat nor forget runs.
//! - A rule from the cloud ticks in the cloud, once for the whole pool: each run comes through
//!   the pool's work queue and `cloud::PoolRules` makes its job on the executor that took it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pbs_shared::PoolName;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::ScheduleRule;
use crate::jobs::local::LocalJobs;
use crate::rules::clock::{Cron, Filter, Fire, RuleClock, RuleJob};
use crate::transfer;
use crate::transfer::endpoints::Endpoints;

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
        let files = match self.list().await {
            Ok(f) => f,
            Err(e) => {
                error!(rule = %self.rule.name, scheduled_for = %scheduled_for, error = %e, "scheduled run failed: cannot list the source");
                return;
            }
        };
        if files.is_empty() {
            info!(rule = %self.rule.name, scheduled_for = %scheduled_for, "scheduled run: no files to copy");
            return;
        }
        // A file whose name the destination cannot take fails alone; the others are copied.
        let job = RuleJob::schedule(&self.rule, &self.pool, scheduled_for).build(&files);
        if !job.refused.is_empty() {
            warn!(rule = %self.rule.name, job_id = %job.job_id, refused = job.refused.len(), "files that cannot be delivered are reported failed");
        }
        info!(rule = %self.rule.name, job_id = %job.job_id, files = files.len(), "scheduled run");
        self.jobs.run(job).await;
    }

    /// The files of the rule's folder that its filter takes.
    pub async fn list(&self) -> Result<Vec<(String, u64)>, String> {
        let ctx = &self.jobs.ctx;
        let side = super::source_side(&self.jobs, &self.endpoints, &self.rule.source).await?;
        let log = ctx
            .config
            .state_dir
            .join("logs")
            .join(format!("schedule-{}.log", self.rule.name));
        let filter = Filter::new(&self.rule.include, &self.rule.exclude)
            .map_err(|(field, m)| format!("{field}: {m}"))?;
        let files = transfer::list_files(
            &ctx.config.rclone,
            &ctx.config.state_dir,
            &log,
            &side,
            &self.rule.folder,
            self.rule.recursive,
        )
        .await?;
        Ok(files
            .into_iter()
            .filter(|(rel, _)| filter.matches(rel))
            .collect())
    }
}
