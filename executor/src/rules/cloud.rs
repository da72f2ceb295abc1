//! The pool's cloud rules in force on this executor, for what the cloud asks of them by message:
//! the runs of cloud schedules (through the pool's work queue, see `schedule`) and retries of a
//! failed job of a cloud rule (on this executor's control queue: only the executor that ran a
//! job has its files, in its ledger).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use pbs_shared::message::RetryRequest;
use pbs_shared::pool_lease::ScheduleRun;
use pbs_shared::{JobMessage, JobState, PoolName, TemplateId};
use tracing::{error, info, warn};

use crate::cloud::control::RuleRetries;
use crate::cloud::poller::ScheduleRuns;
use crate::config::{AfterAction, EndpointConfig, ScheduleRule, WatchRule};
use crate::jobs::local::LocalJobs;
use crate::jobs::ports::Boxed;
use crate::rules::clock::RuleJob;
use crate::rules::poll::RemoteWatcher;
use crate::rules::schedule::Scheduler;
use crate::rules::watch::{Seen, Watcher, seen_now};
use crate::transfer::endpoints::Endpoints;

/// The cloud rules this executor took in (checked against its endpoints).
#[derive(Default)]
struct Book {
    schedules: HashMap<TemplateId, ScheduleRule>,
    watches: HashMap<TemplateId, WatchRule>,
}

pub struct PoolRules {
    pub pool: PoolName,
    pub endpoints: Arc<Endpoints>,
    pub jobs: Arc<LocalJobs>,
    book: RwLock<Book>,
}

impl PoolRules {
    pub fn new(pool: PoolName, endpoints: Arc<Endpoints>, jobs: Arc<LocalJobs>) -> Self {
        Self {
            pool,
            endpoints,
            jobs,
            book: RwLock::new(Book::default()),
        }
    }

    fn book(&self) -> std::sync::RwLockReadGuard<'_, Book> {
        self.book
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes these the cloud rules in force here.
    pub fn set(
        &self,
        schedules: HashMap<TemplateId, ScheduleRule>,
        watches: HashMap<TemplateId, WatchRule>,
    ) {
        *self
            .book
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Book { schedules, watches };
    }

    /// How many cloud schedules are in force here.
    pub fn schedules(&self) -> usize {
        self.book().schedules.len()
    }

    async fn make(&self, run: &ScheduleRun) -> Result<Option<JobMessage>, String> {
        if run.pool != self.pool {
            return Err(format!(
                "the run is for pool {}, this executor serves pool {}",
                run.pool, self.pool
            ));
        }
        let rule = self.book().schedules.get(&run.template_id).cloned().ok_or_else(|| {
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
            .files_for(run.scheduled_for)
            .await
            .map_err(|e| format!("cannot list the source: {e}"))?;
        if files.copy.is_empty() {
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
            .build(&files.copy);
        info!(rule = %run.template_id, job_id = %job.job_id, files = files.copy.len(), unchanged = files.unchanged, "scheduled run");
        Ok(Some(job))
    }

    /// Copies the files of the failed job `request.retry_of` again, as job `request.job_id`;
    /// for a watch rule, the after-action follows a verified delivery.
    async fn run_retry(&self, request: RetryRequest) {
        let ledger = self.jobs.ctx.ledger();
        let original = match ledger.job_message(&request.retry_of) {
            Ok(Some(body)) => JobMessage::parse(&body).map_err(|e| e.to_string()),
            Ok(None) => Err("this executor has no record of it".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        let mut job = match original {
            Ok(job) => job,
            Err(e) => {
                return error!(job_id = %request.retry_of, error = %e, "retry not started");
            }
        };
        let Some(origin) = job.origin.as_mut() else {
            return error!(job_id = %request.retry_of, "retry not started: not a job of a rule");
        };
        let Ok(rule) = TemplateId::parse(&origin.rule) else {
            return error!(job_id = %request.retry_of, "retry not started: its rule has no valid name");
        };
        let watch = self.book().watches.get(&rule).cloned();
        if watch.is_none() && !self.book().schedules.contains_key(&rule) {
            return error!(job_id = %request.retry_of, rule = %rule, "retry not started: the rule is no cloud rule in force here");
        }
        if !matches!(ledger.job_state(&request.job_id), Ok(None)) {
            return info!(job_id = %request.job_id, "retry already started");
        }
        origin.why = Some(format!(
            "retried from the cloud by {} (a retry of {})",
            request.requested_by, request.retry_of
        ));
        // The original's `created_at` stays: its files' paths render as they did.
        job.job_id = request.job_id.clone();
        info!(job_id = %job.job_id, retry_of = %request.retry_of, by = %request.requested_by, "retrying a rule's job");
        let state = self.jobs.run(job.clone()).await;
        if state != Some(JobState::Succeeded) {
            return;
        }
        if let Some(w) = watch.filter(|w| w.after != AfterAction::Keep) {
            for file in &job.files {
                self.after(&w, file.key.as_str(), file.size).await;
            }
        }
    }

    /// The watch rule's after-action for `key` (under the source endpoint's root), delivered
    /// with `size`: only while the file still has that size.
    async fn after(&self, rule: &WatchRule, key: &str, size: u64) {
        let rel = match rule.folder.as_str() {
            "" => key,
            folder => match key.strip_prefix(folder).and_then(|r| r.strip_prefix('/')) {
                Some(rel) => rel,
                None => {
                    return warn!(rule = %rule.name, key, "delivered; not under the rule's folder, left alone");
                }
            },
        };
        match self.endpoints.get(&rule.source).map(|e| &e.config) {
            Ok(EndpointConfig::Local(l)) => {
                let watcher = Watcher {
                    rule: rule.clone(),
                    root: l.root.clone(),
                    pool: self.pool.clone(),
                    jobs: self.jobs.clone(),
                    lease: None,
                };
                match seen_now(&watcher.folder().join(rel)) {
                    Some(s) if s.size == size => watcher.after(rel, s),
                    _ => {
                        info!(rule = %rule.name, path = %rel, "delivered; the source changed or went since, left alone")
                    }
                }
            }
            Ok(_) => {
                let watcher = RemoteWatcher {
                    rule: rule.clone(),
                    pool: self.pool.clone(),
                    endpoints: self.endpoints.clone(),
                    jobs: self.jobs.clone(),
                    lease: None,
                };
                watcher.after(rel, Seen { size, mtime_ns: 0 }).await;
            }
            Err(e) => warn!(rule = %rule.name, error = %e, "delivered; source left alone"),
        }
    }
}

impl ScheduleRuns for PoolRules {
    fn job_for<'a>(
        &'a self,
        run: &'a ScheduleRun,
    ) -> Boxed<'a, Result<Option<JobMessage>, String>> {
        Box::pin(self.make(run))
    }
}

impl RuleRetries for Arc<PoolRules> {
    fn retry(&self, request: RetryRequest) {
        let this = self.clone();
        self.jobs
            .spawn(async move { this.run_retry(request).await });
    }
}
