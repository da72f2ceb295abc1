//! What follows a job's end, run by the status function once the end is recorded: the
//! template's notifications go to the NotifyQueue, a succeeded chain step starts the next step
//! with the files it delivered, and a relay's staged objects are removed once delivered.
//!
//! Each part is idempotent (the next step's id is derived from its parent's, notifications carry
//! a stable delivery id), and the job is marked `followed_up` only when all are done, so a
//! report redelivered after a partial failure finishes the work.
//!
//! A job whose template asks for nothing costs no extra request: the job comes back with the
//! update that recorded its end, and templates are cached for [`TEMPLATE_TTL`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use pbs_shared::job::chain_job_id;
use pbs_shared::message::{JobResult, JobStatus, STAGING_ENDPOINT, V1};
use pbs_shared::notify::{JobEvent, NotifyMessage};
use pbs_shared::path_template::RenderContext;
use pbs_shared::template::Trigger;
use pbs_shared::transfer::{RelayTo, TRANSFER_TEMPLATE};
use pbs_shared::{
    DeliveredFile, DestPath, EndpointName, FileOutcome, JobFile, JobId, JobMessage, JobSource,
    JobState, PoolName, RefusedFile, Template, TemplateId,
};

use crate::dispatch::{Dispatched, Dispatcher};
use crate::store::items::describe_error;
use crate::store::jobs::{Inserted, JobTable, JobView};
use crate::store::templates::TemplateTable;

/// How long a template read for a job's end is reused: an edited template's notifications and
/// next step apply to jobs ending this long after the edit at most.
pub const TEMPLATE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Staged objects live under this prefix of the staging bucket: `staging/<pool>/<job id>/…`.
pub const STAGING_PREFIX: &str = "staging/";

/// A job's end as recorded: from an executor's report, or from the API for a queued job it
/// cancelled.
pub struct Ended<'a> {
    pub job_id: &'a JobId,
    pub state: JobState,
    pub attempt: u32,
    pub pool: &'a PoolName,
    pub at: DateTime<Utc>,
    pub result: Option<&'a JobResult>,
}

impl<'a> From<&'a JobStatus> for Ended<'a> {
    fn from(st: &'a JobStatus) -> Self {
        Self {
            job_id: &st.job_id,
            state: st.state,
            attempt: st.attempt,
            pool: &st.pool,
            at: st.at,
            result: st.result.as_ref(),
        }
    }
}

/// Templates read lately, by id, with when they were read (`None`: missing or unreadable).
pub type TemplateCache = tokio::sync::Mutex<HashMap<TemplateId, (Instant, Option<Arc<Template>>)>>;

pub struct FollowUp {
    pub jobs: JobTable,
    pub templates: TemplateTable,
    pub dispatcher: Dispatcher,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    /// Where notifications are queued; unset: none are sent.
    pub notify_queue_url: Option<String>,
    /// The bucket of the relay staging area; unset: staged objects are left to its lifecycle.
    pub staging_bucket: Option<String>,
    /// Templates read lately, by id (`None`: missing or unreadable).
    pub cache: TemplateCache,
}

impl FollowUp {
    /// Runs what follows the end `st`, unless it was done before. `job` is the job as recorded
    /// with that end, when at hand; else it is read. `Err` is transient.
    pub async fn after_end(&self, st: &Ended<'_>, job: Option<JobView>) -> Result<(), String> {
        let job = match job {
            Some(j) => j,
            None => match self
                .jobs
                .get(st.job_id.as_str())
                .await
                .map_err(|e| e.to_string())?
            {
                Some(j) => j,
                None => return Ok(()),
            },
        };
        if job.followed_up || job.state != st.state.as_str() || job.attempt != st.attempt {
            return Ok(());
        }
        // A transfer started by hand has no template: what follows it is on its job.
        let transfer = job.template_id.as_deref() == Some(TRANSFER_TEMPLATE);
        let template = self.template(job.template_id.as_deref()).await?;
        if template.is_none() && !transfer {
            return Ok(());
        }
        let succeeded = st.state == JobState::Succeeded;
        let staged = succeeded
            && job.source_endpoint.as_deref() == Some(STAGING_ENDPOINT)
            && !template.as_ref().is_some_and(|t| t.options.keep_staging);
        let chained = template
            .as_ref()
            .is_some_and(|t| t.options.next_template.is_some());
        let notifies = template
            .as_ref()
            .is_some_and(|t| t.options.notify.iter().any(|n| n.fires_on(st.state)));
        let relayed = job.relay.is_some();
        if !staged && !(succeeded && (chained || relayed)) && !notifies {
            return Ok(());
        }
        let next_job = match (&job.relay, &template) {
            (Some(relay), _) if succeeded => self.start_relay(&job, st, relay).await?,
            (None, Some(t)) if succeeded => self.start_next(&job, st, t).await?,
            _ => None,
        };
        if let Some(t) = &template {
            self.notify(&job, st, t, next_job.as_ref()).await?;
        }
        if staged {
            self.remove_staged(&job).await?;
        }
        self.finish(st.job_id).await
    }

    /// Starts the second step of a transfer between pools: the files the first step staged,
    /// delivered in the destination's pool.
    async fn start_relay(
        &self,
        job: &JobView,
        st: &Ended<'_>,
        relay: &RelayTo,
    ) -> Result<Option<JobId>, String> {
        let delivered = st
            .result
            .map(|r| r.delivered.as_slice())
            .unwrap_or_default();
        match relay_step(job, delivered, relay, Utc::now()) {
            Ok(Some(message)) => self.launch(st.job_id, message).await.map(Some),
            Ok(None) => {
                info!(job_id = %st.job_id, "the transfer staged no file: no second step");
                Ok(None)
            }
            Err(reason) => {
                warn!(job_id = %st.job_id, reason = %reason, "transfer stopped after staging");
                self.jobs
                    .note_chain_error(st.job_id, &reason)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(None)
            }
        }
    }

    /// The job's template, from the cache when read within [`TEMPLATE_TTL`].
    async fn template(&self, id: Option<&str>) -> Result<Option<Arc<Template>>, String> {
        let Some(Ok(id)) = id.map(TemplateId::parse) else {
            return Ok(None);
        };
        if let Some((at, t)) = self.cache.lock().await.get(&id)
            && at.elapsed() < TEMPLATE_TTL
        {
            return Ok(t.clone());
        }
        let template = match self.templates.get(&id).await.map_err(|e| e.to_string())? {
            Some(Ok(t)) => Some(Arc::new(t)),
            Some(Err((_, why))) => {
                warn!(template = %id, reason = %why, "a template no longer parses: its jobs' ends send no notification and start no next step");
                None
            }
            None => None,
        };
        self.cache
            .lock()
            .await
            .insert(id, (Instant::now(), template.clone()));
        Ok(template)
    }

    async fn finish(&self, job: &JobId) -> Result<(), String> {
        self.jobs
            .mark_followed_up(job)
            .await
            .map_err(|e| e.to_string())
    }

    /// Starts the template's next step, if it names one; a step that cannot start is recorded on
    /// the job (`chain_error`) and the chain stops there.
    async fn start_next(
        &self,
        job: &JobView,
        st: &Ended<'_>,
        template: &Template,
    ) -> Result<Option<JobId>, String> {
        let Some(next_id) = &template.options.next_template else {
            return Ok(None);
        };
        let planned = match self
            .templates
            .get(next_id)
            .await
            .map_err(|e| e.to_string())?
        {
            None => Err(format!("next template {next_id} does not exist")),
            Some(Err((_, why))) => Err(format!("next template {next_id} does not parse: {why}")),
            Some(Ok(next)) => {
                let delivered = st
                    .result
                    .map(|r| r.delivered.as_slice())
                    .unwrap_or_default();
                next_step(job, delivered, &next, Utc::now())
            }
        };
        let message = match planned {
            Ok(Some(m)) => m,
            Ok(None) => {
                info!(job_id = %st.job_id, "chain step delivered no file: no next step");
                return Ok(None);
            }
            Err(reason) => {
                warn!(job_id = %st.job_id, reason = %reason, "chain stopped");
                self.jobs
                    .note_chain_error(st.job_id, &reason)
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(None);
            }
        };
        self.launch(st.job_id, message).await.map(Some)
    }

    /// Records `message` as the step after `parent` and sends it (once: a step already sent is
    /// not sent again when the parent's end is followed up twice).
    async fn launch(&self, parent: &JobId, message: JobMessage) -> Result<JobId, String> {
        let dispatched = match self
            .jobs
            .insert_queued(&message)
            .await
            .map_err(|e| e.to_string())?
        {
            Inserted::Exists { dispatched: true } => true,
            Inserted::New | Inserted::Exists { dispatched: false } => false,
        };
        self.jobs
            .link_chain(parent, &message.job_id)
            .await
            .map_err(|e| e.to_string())?;
        if !dispatched && let Dispatched::NoQueue(reason) = self.dispatcher.send(&message).await? {
            self.jobs
                .note_chain_error(parent, &reason)
                .await
                .map_err(|e| e.to_string())?;
        }
        info!(job_id = %parent, next_job = %message.job_id, template = %message.template_id, "chain: next step started");
        Ok(message.job_id)
    }

    /// Queues one message per notification that fires on this end.
    async fn notify(
        &self,
        job: &JobView,
        st: &Ended<'_>,
        template: &Template,
        next_job: Option<&JobId>,
    ) -> Result<(), String> {
        let firing: Vec<_> = template
            .options
            .notify
            .iter()
            .enumerate()
            .filter(|(_, n)| n.fires_on(st.state))
            .filter_map(|(i, n)| n.target().map(|t| (i, t)))
            .collect();
        if firing.is_empty() {
            return Ok(());
        }
        let Some(queue) = &self.notify_queue_url else {
            warn!(job_id = %st.job_id, "the template asks for notifications but NOTIFY_QUEUE_URL is not set");
            return Ok(());
        };
        let result = st.result;
        let event = JobEvent {
            v: V1,
            event: JobEvent::event_name(st.state),
            job_id: st.job_id.clone(),
            template_id: template.id.clone(),
            pool: st.pool.clone(),
            state: st.state,
            attempt: st.attempt,
            files: result.map_or(0, |r| r.files),
            bytes: result.map_or(0, |r| r.bytes),
            error_class: result.and_then(|r| r.error_class),
            error: result.and_then(|r| r.error.clone()),
            report_key: result.and_then(|r| r.report_key.clone()),
            parent_job: job.parent_job.as_deref().and_then(|p| JobId::parse(p).ok()),
            next_job: next_job.cloned(),
            at: st.at,
        };
        let body = serde_json::to_string(&event).expect("events serialise");
        for chunk in firing.chunks(10) {
            let entries = chunk
                .iter()
                .map(|(i, target)| {
                    let message = NotifyMessage {
                        v: V1,
                        job_id: st.job_id.clone(),
                        index: *i,
                        state: st.state,
                        target: target.clone(),
                        body: body.clone(),
                    };
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(serde_json::to_string(&message).expect("messages serialise"))
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            let out = self
                .sqs
                .send_message_batch()
                .queue_url(queue)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| describe_error(&e))?;
            if let Some(f) = out.failed().first() {
                return Err(format!(
                    "queueing notification {} of {}: {}",
                    f.id(),
                    st.job_id,
                    f.message().unwrap_or(f.code())
                ));
            }
        }
        info!(job_id = %st.job_id, notifications = firing.len(), "notifications queued");
        Ok(())
    }

    /// Deletes a relay's staged objects once its last leg has delivered them.
    async fn remove_staged(&self, job: &JobView) -> Result<(), String> {
        let Some(bucket) = &self.staging_bucket else {
            return Ok(());
        };
        let keys: Vec<String> = job
            .files
            .iter()
            .filter_map(|f| f.get("key").and_then(|k| k.as_str()))
            .map(|k| format!("{STAGING_PREFIX}{k}"))
            .collect();
        for chunk in keys.chunks(1000) {
            let objects = chunk
                .iter()
                .map(|k| {
                    aws_sdk_s3::types::ObjectIdentifier::builder()
                        .key(k)
                        .build()
                        .expect("key is set")
                })
                .collect();
            let delete = aws_sdk_s3::types::Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| e.to_string())?;
            let out = self
                .s3
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| format!("removing staged objects of {}: {e}", job.job_id))?;
            if let Some(e) = out.errors().first() {
                return Err(format!(
                    "removing staged object {}: {}",
                    e.key().unwrap_or("?"),
                    e.message().unwrap_or("?")
                ));
            }
        }
        info!(job_id = %job.job_id, objects = keys.len(), "staged objects removed after delivery");
        Ok(())
    }
}

/// The next step of a chain after `parent` delivered `delivered`: its files are read where the
/// parent wrote them. `Ok(None)`: nothing was delivered, so nothing follows. `Err`: the chain
/// cannot continue, and why.
pub fn next_step(
    parent: &JobView,
    delivered: &[DeliveredFile],
    next: &Template,
    now: DateTime<Utc>,
) -> Result<Option<JobMessage>, String> {
    if next.trigger != (Trigger::Chain {}) {
        return Err(format!(
            "next template {} is not a chain step (its trigger type must be \"chain\")",
            next.id
        ));
    }
    if !next.enabled {
        return Err(format!("next template {} is disabled", next.id));
    }
    let (Some(pool), Some(written_to)) = (parent.pool.as_deref(), parent.destination.as_deref())
    else {
        return Err("the job's pool or destination is not recorded".into());
    };
    let endpoint = EndpointName::parse(written_to).map_err(|e| e.to_string())?;
    let staged = endpoint.as_str() == STAGING_ENDPOINT;
    if !staged && next.destination.pool.as_str() != pool {
        return Err(format!(
            "next template {} runs in pool {}, but the files are on endpoint {written_to} of pool {pool}: \
             a transfer between pools goes through the staging area (destination endpoint \"{STAGING_ENDPOINT}\")",
            next.id, next.destination.pool
        ));
    }
    let files = next_files(parent, delivered, next, (pool, staged), now)?;
    if files.is_empty() {
        return Ok(None);
    }
    Ok(Some(JobMessage {
        v: V1,
        job_id: chain_job_id(&parent.job_id, &next.id),
        template_id: next.id.clone(),
        pool: next.destination.pool.clone(),
        source: JobSource::Endpoint { endpoint },
        files,
        destination: next.destination.endpoint.clone(),
        retry: next.options.retry,
        delivery: next.options.delivery,
        origin: None,
        bandwidth: next.options.bandwidth.clone(),
        created_at: now,
        refused: Vec::new(),
        folder: None,
    }))
}

/// The second step of a transfer between pools after `parent` staged `delivered`: each staged
/// file (under `<pool>/<parent job>/` of the staging area, whatever the report says) delivered to
/// the relay's folder in its pool; a name the destination cannot take fails alone. `Ok(None)`:
/// nothing was staged.
pub fn relay_step(
    parent: &JobView,
    delivered: &[DeliveredFile],
    relay: &RelayTo,
    now: DateTime<Utc>,
) -> Result<Option<JobMessage>, String> {
    let Some(pool) = parent.pool.as_deref() else {
        return Err("the job's pool is not recorded".into());
    };
    let (mut files, mut refused) = (Vec::new(), Vec::new());
    for f in delivered
        .iter()
        .filter(|f| matches!(f.outcome, FileOutcome::Copied | FileOutcome::Unchanged))
    {
        let key = format!("{pool}/{}/{}", parent.job_id, f.dest_path);
        let to = match relay.folder.as_str() {
            "" => f.dest_path.clone(),
            folder => format!("{folder}/{}", f.dest_path),
        };
        match DestPath::parse(&to) {
            Ok(dest_path) => files.push(JobFile::at(key, f.size, dest_path)),
            Err(e) => refused.push(RefusedFile {
                key,
                size: f.size,
                error: format!("{:?} cannot be delivered: {e}", f.dest_path),
            }),
        }
    }
    if files.is_empty() && refused.is_empty() {
        return Ok(None);
    }
    let template = TemplateId::parse(TRANSFER_TEMPLATE).expect("a valid template id");
    Ok(Some(JobMessage {
        v: V1,
        job_id: chain_job_id(&parent.job_id, &template),
        template_id: template,
        pool: relay.pool.clone(),
        source: JobSource::Endpoint {
            endpoint: EndpointName::parse(STAGING_ENDPOINT).expect("a valid endpoint name"),
        },
        files,
        destination: relay.endpoint.clone(),
        retry: relay.retry,
        delivery: relay.delivery,
        origin: None,
        bandwidth: None,
        created_at: now,
        refused,
        folder: None,
    }))
}

/// The files of `next` (the step after `parent`, which wrote to a `staged` area or endpoint of
/// `pool`): each file the parent delivered, read where it landed.
fn next_files(
    parent: &JobView,
    delivered: &[DeliveredFile],
    next: &Template,
    (pool, staged): (&str, bool),
    now: DateTime<Utc>,
) -> Result<Vec<JobFile>, String> {
    // Only the files the cloud asked the parent to deliver: a report cannot add paths of its own
    // for the next step to read (a job made on an executor records none, so its report stands).
    let recorded: std::collections::HashSet<(&str, &str)> = parent
        .files
        .iter()
        .filter_map(|f| Some((f.get("key")?.as_str()?, f.get("dest_path")?.as_str()?)))
        .collect();
    delivered
        .iter()
        .filter(|f| f.outcome != FileOutcome::Superseded)
        .filter(|f| {
            recorded.is_empty() || recorded.contains(&(f.key.as_str(), f.dest_path.as_str()))
        })
        .map(|f| {
            let dest_path = next
                .destination
                .path
                .render(&RenderContext {
                    bucket: "",
                    key: &f.dest_path,
                    event_time: now,
                })
                .map_err(|e| format!("next template {}: {:?}: {e}", next.id, f.dest_path))?;
            let key = if staged {
                format!("{pool}/{}/{}", parent.job_id, f.dest_path)
            } else {
                f.dest_path.clone()
            };
            Ok(JobFile::at(key, f.size, dest_path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(v: serde_json::Value) -> Template {
        Template::from_json(v.to_string().as_bytes()).unwrap()
    }

    fn parent(pool: &str, destination: &str) -> JobView {
        let item = crate::store::items::Item::from([
            ("job_id".into(), crate::store::items::s("ev-parent")),
            ("state".into(), crate::store::items::s("succeeded")),
            ("pool".into(), crate::store::items::s(pool)),
            ("destination".into(), crate::store::items::s(destination)),
        ]);
        JobView::from_item(&item)
    }

    fn delivered(dest: &str, outcome: FileOutcome) -> DeliveredFile {
        DeliveredFile {
            key: format!("src/{dest}"),
            dest_path: dest.into(),
            size: 7,
            md5: None,
            outcome,
        }
    }

    #[test]
    fn a_relay_step_delivers_what_was_staged_under_its_own_prefix() {
        let parent = parent("site-b", "staging");
        let relay: RelayTo = serde_json::from_value(serde_json::json!({
            "pool": "site-c", "endpoint": "nas", "folder": "from-b", "delivery": {"verify": "hash"}
        }))
        .unwrap();
        let staged = [
            delivered("a.txt", FileOutcome::Copied),
            delivered("deep/b.txt", FileOutcome::Unchanged),
            delivered("old.txt", FileOutcome::Superseded),
            delivered("x\\y.txt", FileOutcome::Copied),
        ];
        let step = relay_step(&parent, &staged, &relay, Utc::now())
            .unwrap()
            .unwrap();
        assert_eq!(
            (step.pool.as_str(), step.destination.as_str()),
            ("site-c", "nas")
        );
        assert_eq!(
            step.source,
            JobSource::Endpoint {
                endpoint: EndpointName::parse("staging").unwrap()
            }
        );
        let files: Vec<(&str, &str)> = step
            .files
            .iter()
            .map(|f| (f.key.as_str(), f.dest_path.as_str()))
            .collect();
        assert_eq!(
            files,
            [
                ("site-b/ev-parent/a.txt", "from-b/a.txt"),
                ("site-b/ev-parent/deep/b.txt", "from-b/deep/b.txt")
            ]
        );
        assert_eq!(
            step.refused.len(),
            1,
            "a name the share cannot take fails alone"
        );
        assert_eq!(step.delivery.verify, pbs_shared::Verify::Hash);
        assert_eq!(step.template_id.as_str(), TRANSFER_TEMPLATE);
        let again = relay_step(&parent, &staged, &relay, Utc::now())
            .unwrap()
            .unwrap();
        assert_eq!(
            step.job_id, again.job_id,
            "a repeated end starts the same step"
        );
        assert!(
            relay_step(&parent, &staged[2..3], &relay, Utc::now())
                .unwrap()
                .is_none()
        );
    }

    fn archive(pool: &str) -> Template {
        template(serde_json::json!({
            "id": "archive", "trigger": {"type": "chain"},
            "destination": {"pool": pool, "endpoint": "vault", "path": "kept/{key}"},
            "options": {"bandwidth": "4M"}
        }))
    }

    #[test]
    fn a_report_cannot_add_files_the_parent_was_not_asked_to_deliver() {
        let mut p = parent("site-b", "nas");
        p.files =
            vec![serde_json::json!({"key": "src/a/1.mxf", "dest_path": "a/1.mxf", "size": 7})];
        let files = [
            delivered("a/1.mxf", FileOutcome::Copied),
            delivered("../../etc/passwd", FileOutcome::Copied),
            delivered("other/secret.doc", FileOutcome::Copied),
        ];
        let m = next_step(&p, &files, &archive("site-b"), Utc::now())
            .unwrap()
            .unwrap();
        let keys: Vec<&str> = m.files.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["a/1.mxf"]);
    }

    #[test]
    fn the_next_step_reads_what_the_parent_wrote() {
        let files = [
            delivered("a/1.mxf", FileOutcome::Copied),
            delivered("a/2.mxf", FileOutcome::Superseded),
        ];
        let m = next_step(
            &parent("site-b", "nas"),
            &files,
            &archive("site-b"),
            Utc::now(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            m.source,
            JobSource::Endpoint {
                endpoint: EndpointName::parse("nas").unwrap()
            }
        );
        assert_eq!(m.files.len(), 1, "a superseded file is not passed on");
        assert_eq!(
            (m.files[0].key.as_str(), m.files[0].dest_path.as_str()),
            ("a/1.mxf", "kept/a/1.mxf")
        );
        assert_eq!(
            (m.pool.as_str(), m.destination.as_str()),
            ("site-b", "vault")
        );
        assert_eq!(m.bandwidth.unwrap().to_string(), "4M");
        assert_eq!(
            m.job_id,
            chain_job_id("ev-parent", &TemplateId::parse("archive").unwrap())
        );
        assert!(m.job_id.as_str().starts_with("ch-"));
    }

    #[test]
    fn a_relay_reads_the_staging_area_from_another_pool() {
        let files = [delivered("cut/ep1.mov", FileOutcome::Copied)];
        let m = next_step(
            &parent("site-b", "staging"),
            &files,
            &archive("site-c"),
            Utc::now(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(m.pool.as_str(), "site-c");
        assert_eq!(m.files[0].key, "site-b/ev-parent/cut/ep1.mov");
        assert_eq!(m.files[0].dest_path.as_str(), "kept/cut/ep1.mov");
    }

    #[test]
    fn a_chain_that_cannot_continue_says_why() {
        let files = [delivered("x", FileOutcome::Copied)];
        let e = next_step(
            &parent("site-b", "nas"),
            &files,
            &archive("site-c"),
            Utc::now(),
        )
        .unwrap_err();
        assert!(e.contains("staging"), "{e}");
        let s3 = template(serde_json::json!({
            "id": "other", "trigger": {"type": "s3", "bucket": "bkt"},
            "destination": {"pool": "site-b", "endpoint": "vault", "path": "{key}"}
        }));
        let e = next_step(&parent("site-b", "nas"), &files, &s3, Utc::now()).unwrap_err();
        assert!(e.contains("not a chain step"), "{e}");
        let none = next_step(
            &parent("site-b", "nas"),
            &[delivered("x", FileOutcome::Superseded)],
            &archive("site-b"),
            Utc::now(),
        )
        .unwrap();
        assert!(none.is_none());
    }
}
