//! Cron schedules: at each scheduled time the rule's source folder is listed and its files copied
//! as one ordinary job.
//!
//! - A rule of the executor's own configuration ticks here ([`Scheduler`]): a run still going
//!   makes the next firing skip; after downtime, missed runs are skipped or caught up with one
//!   run, as the rule says. The last scheduled time handled is kept in the ledger, so restarts
//!   neither repeat nor forget runs.
//! - A rule from the cloud ticks in the cloud, once for the whole pool: each run comes through
//!   the pool's work queue and [`CloudSchedules`] makes its job on the executor that took it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pbs_shared::pool_lease::ScheduleRun;
use pbs_shared::{JobMessage, PoolName, TemplateId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cloud::poller::ScheduleRuns;
use crate::config::ScheduleRule;
use crate::jobs::local::LocalJobs;
use crate::jobs::ports::Boxed;
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

/// The pool's cloud schedule rules this executor can run, for the runs the cloud sends through
/// the pool's work queue.
pub struct CloudSchedules {
    pub pool: PoolName,
    pub endpoints: Arc<Endpoints>,
    pub jobs: Arc<LocalJobs>,
    rules: RwLock<HashMap<TemplateId, ScheduleRule>>,
}

impl CloudSchedules {
    pub fn new(pool: PoolName, endpoints: Arc<Endpoints>, jobs: Arc<LocalJobs>) -> Self {
        Self {
            pool,
            endpoints,
            jobs,
            rules: RwLock::new(HashMap::new()),
        }
    }

    /// Makes `rules` the cloud schedule rules in force here.
    pub fn set(&self, rules: HashMap<TemplateId, ScheduleRule>) {
        *self
            .rules
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = rules;
    }

    pub fn len(&self) -> usize {
        self.rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    async fn make(&self, run: &ScheduleRun) -> Result<Option<JobMessage>, String> {
        if run.pool != self.pool {
            return Err(format!(
                "the run is for pool {}, this executor serves pool {}",
                run.pool, self.pool
            ));
        }
        let rule = self
            .rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&run.template_id)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "no schedule rule {} runs here (unknown, disabled, or refused by this executor's configuration: see its log)",
                    run.template_id
                )
            })?;
        let scheduler = Scheduler {
            rule,
            pool: self.pool.clone(),
            endpoints: self.endpoints.clone(),
            jobs: self.jobs.clone(),
        };
        let files = scheduler
            .list()
            .await
            .map_err(|e| format!("cannot list the source: {e}"))?;
        if files.is_empty() {
            info!(rule = %run.template_id, scheduled_for = %run.scheduled_for, "scheduled run: no files to copy");
            return Ok(None);
        }
        let mut why = format!(
            "the run for {} came from the cloud through the pool's queue and this executor took it",
            run.scheduled_for.to_rfc3339()
        );
        if run.folded > 0 {
            why.push_str(&format!(
                " ({} earlier time(s) came with it and made no run of their own)",
                run.folded
            ));
        }
        let job = RuleJob::schedule(&scheduler.rule, &self.pool, run.scheduled_for)
            .because(why)
            .build(&files);
        info!(rule = %run.template_id, job_id = %job.job_id, files = files.len(), "scheduled run");
        Ok(Some(job))
    }
}

impl ScheduleRuns for CloudSchedules {
    fn job_for<'a>(
        &'a self,
        run: &'a ScheduleRun,
    ) -> Boxed<'a, Result<Option<JobMessage>, String>> {
        Box::pin(self.make(run))
    }
}
