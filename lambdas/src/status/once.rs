//! A pool acts once (see `pbs_shared::pool_lease`), the status function's side: each heartbeat
//! of an executor that runs its pool's cloud rules claims or renews the pool's rule lease and is
//! answered on the executor's control queue, and makes the pool's schedules tick: each scheduled
//! time that came is moved forward with a condition (so two heartbeats handled at once tick it
//! once) and sent as one [`ScheduleRun`] through the pool's work queue, where exactly one executor
//! takes it. A pool with no executor left has no heartbeats, so its schedules stop ticking; the
//! times that came meanwhile follow each rule's `missed` policy when one comes back.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use pbs_shared::message::{ControlMessage, Heartbeat, LeaseView, V1};
use pbs_shared::pool_lease::{LEASE_INTERVALS, ScheduleRun, ScheduleRunKind, Tick, tick};
use pbs_shared::rule_spec::{Cron, MissedRuns, ScheduleTrigger};
use pbs_shared::template::Trigger;
use pbs_shared::{ExecutorId, JobId, JobState, PoolName, Template};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::dispatch::Dispatcher;
use crate::store::jobs::JobTable;
use crate::store::pools::PoolTable;
use crate::store::templates::TemplateTable;

pub struct PoolOnce {
    pub pools: PoolTable,
    pub templates: TemplateTable,
    pub jobs: JobTable,
    pub dispatcher: Dispatcher,
    pub sqs: aws_sdk_sqs::Client,
    /// Control queue URLs made sure of, by executor.
    pub controls: Mutex<HashMap<ExecutorId, String>>,
    /// Every enabled schedule template, with the templates table's generation it was read at.
    pub schedules: Mutex<Option<(u64, Vec<Template>)>>,
}

impl PoolOnce {
    /// Claims or renews the lease for `beat` (taken by SQS at `sent`) and answers it on the
    /// executor's control queue.
    pub async fn answer(&self, beat: &Heartbeat, sent: DateTime<Utc>) -> Result<(), String> {
        let interval_ms = i64::from(beat.interval_seconds.max(1)) * 1000;
        let lease_ms = interval_ms * i64::from(LEASE_INTERVALS);
        let lease = self
            .pools
            .claim(
                &beat.pool,
                &beat.executor_id,
                sent.timestamp_millis(),
                lease_ms,
            )
            .await?;
        let delivered = self
            .pools
            .delivered_since(
                &beat.pool,
                sent - chrono::Duration::milliseconds(3 * interval_ms),
            )
            .await?;
        let holds = lease.as_ref().is_some_and(|l| l.holder == beat.executor_id);
        if holds
            && lease
                .as_ref()
                .is_some_and(|l| l.sent_ms == sent.timestamp_millis())
        {
            info!(executor = %beat.executor_id, pool = %beat.pool, "rule lease held");
        }
        let view = LeaseView {
            v: V1,
            pool: beat.pool.clone(),
            heartbeat_at: beat.at,
            holder: lease.as_ref().map(|l| l.holder.clone()),
            since: lease.as_ref().map(|l| l.since),
            lease_seconds: beat.interval_seconds.max(1) * LEASE_INTERVALS,
            delivered,
        };
        let url = self.control_url(&beat.pool, &beat.executor_id).await?;
        crate::control::post(&self.sqs, &url, &ControlMessage::Lease(view))
            .await
            .map_err(|e| format!("answering the lease of {}: {e}", beat.executor_id))
    }

    async fn control_url(&self, pool: &PoolName, executor: &ExecutorId) -> Result<String, String> {
        if let Some(url) = self.controls.lock().await.get(executor) {
            return Ok(url.clone());
        }
        let prefix = self.dispatcher.pool_queue_prefix();
        let url = crate::control::ensure(&self.sqs, prefix, pool, executor).await?;
        self.controls
            .lock()
            .await
            .insert(executor.clone(), url.clone());
        Ok(url)
    }

    /// The pool's enabled schedule templates (the whole set is read again only when the
    /// templates table's generation moved).
    async fn schedules_of(&self, pool: &PoolName) -> Result<Vec<Template>, String> {
        let generation = self
            .templates
            .generation()
            .await
            .map_err(|e| e.to_string())?;
        let mut cache = self.schedules.lock().await;
        if cache.as_ref().is_none_or(|(g, _)| *g != generation) {
            let all = self.templates.load_all().await.map_err(|e| e.to_string())?;
            let schedules = all
                .into_iter()
                .filter_map(Result::ok)
                .filter(|t| t.enabled && matches!(t.trigger, Trigger::Schedule(_)))
                .collect();
            *cache = Some((generation, schedules));
        }
        let (_, schedules) = cache.as_ref().expect("filled above");
        Ok(schedules
            .iter()
            .filter(|t| &t.destination.pool == pool)
            .cloned()
            .collect())
    }

    /// Ticks the pool's schedules at `now`, for a heartbeat every `interval_seconds`.
    pub async fn tick(
        &self,
        pool: &PoolName,
        now: DateTime<Utc>,
        interval_seconds: u32,
    ) -> Result<(), String> {
        let schedules = self.schedules_of(pool).await?;
        if schedules.is_empty() {
            return Ok(());
        }
        let lasts = self.pools.ticks(pool).await?;
        // A time noticed later than this came while the pool had nobody to run it.
        let late = chrono::Duration::seconds(i64::from(interval_seconds.max(1)) * 3);
        for t in &schedules {
            let Trigger::Schedule(s) = &t.trigger else {
                continue;
            };
            let cron = match Cron::parse(&s.cron, &s.timezone) {
                Ok(c) => c,
                Err((field, m)) => {
                    warn!(template = %t.id, "schedule not ticked: trigger.{field}: {m}");
                    continue;
                }
            };
            let last = lasts.get(&t.id).copied();
            if last.is_some_and(|l| cron.due_since(l, now).is_none()) {
                continue;
            }
            let running = match last {
                Some(l) => {
                    self.still_running(&pbs_shared::job::schedule_job_id(&t.id, l))
                        .await?
                }
                None => false,
            };
            let run_once = s.missed == MissedRuns::RunOnce;
            if let Some(decision) = tick(&cron, last, now, late, run_once, running) {
                self.apply(pool, t, s, last, decision, now).await?;
            }
        }
        Ok(())
    }

    /// Whether the run `job` (of a schedule's last time) has not ended.
    async fn still_running(&self, job: &JobId) -> Result<bool, String> {
        let view = self
            .jobs
            .get(job.as_str())
            .await
            .map_err(|e| e.to_string())?;
        Ok(view.is_some_and(|j| JobState::parse(&j.state).is_some_and(|s| !s.is_terminal())))
    }

    async fn apply(
        &self,
        pool: &PoolName,
        t: &Template,
        s: &ScheduleTrigger,
        last: Option<DateTime<Utc>>,
        decision: Tick,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let (to, run) = match decision {
            Tick::Start(at) => (at, None),
            Tick::SkipMissed { latest, count } => {
                info!(template = %t.id, missed = count, latest = %latest, "scheduled times that came while the pool had no executor are skipped (missed = \"skip\")");
                (latest, None)
            }
            Tick::SkipOverlap(at) => {
                warn!(template = %t.id, scheduled_for = %at, "previous run still going; this run is skipped");
                (at, None)
            }
            Tick::Run { latest, folded } => (latest, Some(folded)),
        };
        if !self.pools.move_tick(pool, &t.id, last, to).await? {
            return Ok(());
        }
        let Some(folded) = run else {
            return Ok(());
        };
        let run = ScheduleRun {
            v: V1,
            kind: ScheduleRunKind::ScheduleRun,
            pool: pool.clone(),
            template_id: t.id.clone(),
            scheduled_for: to,
            folded,
            at: now,
        };
        match self.send(&run).await {
            Ok(()) => {
                info!(template = %t.id, scheduled_for = %to, cron = %s.cron, "schedule run sent to the pool");
                Ok(())
            }
            Err(e) => {
                // The time ticks again at the next heartbeat.
                let _ = self
                    .pools
                    .move_tick(pool, &t.id, Some(to), last.unwrap_or(to))
                    .await;
                Err(e)
            }
        }
    }

    async fn send(&self, run: &ScheduleRun) -> Result<(), String> {
        let url = self
            .dispatcher
            .queue_url(&run.pool)
            .await?
            .ok_or_else(|| format!("pool {} has no work queue", run.pool))?;
        self.sqs
            .send_message()
            .queue_url(url)
            .message_body(serde_json::to_string(run).expect("schedule runs serialise"))
            .send()
            .await
            .map(drop)
            .map_err(|e| crate::store::items::describe_error(&e))
    }
}
