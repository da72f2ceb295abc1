//! Planning jobs from object events, pure: which templates an object matches and the job each
//! makes ([`plan`]), and how a batch's small-object jobs that share a template and destination
//! become jobs with a file list ([`coalesce`], [`merge`]). The trigger function parses events
//! into [`ObjectEvent`]s and records what this plans; the API's dry run and manual jobs plan
//! with it too.

use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};

use crate::job::{coalesced_job_id, event_job_id};
use crate::message::{JobFile, JobMessage, JobSource, V1};
use crate::path_template::RenderContext;
use crate::{JobId, ObjectRef, Template, TemplateSet};

/// One object-created event, key decoded.
#[derive(Debug, Clone)]
pub struct ObjectEvent {
    pub object: ObjectRef,
    pub event_time: DateTime<Utc>,
}

/// A job the trigger will record.
#[derive(Debug, Clone)]
pub enum Planned {
    /// A valid job of one object: recorded `queued` (possibly coalesced with others, see
    /// [`coalesce`]) and sent to its pool's queue.
    Dispatch(Box<Dispatch>),
    /// A job that can never run (e.g. its path would escape): recorded `failed` with the reason.
    Reject(Box<RejectedJob>),
}

/// A planned job of one object.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub job: JobMessage,
    /// Its template asks for one job per object (`options.per_object_jobs`).
    pub alone: bool,
}

#[derive(Debug, Clone)]
pub struct RejectedJob {
    pub job_id: JobId,
    pub template: Template,
    pub object: ObjectRef,
    pub reason: String,
}

impl Planned {
    pub fn job_id(&self) -> &JobId {
        match self {
            Planned::Dispatch(d) => &d.job.job_id,
            Planned::Reject(r) => &r.job_id,
        }
    }
}

/// The jobs one object event makes: one per matching template.
pub fn plan(templates: &TemplateSet, event: &ObjectEvent, now: DateTime<Utc>) -> Vec<Planned> {
    let object = &event.object;
    if object.is_folder_marker() {
        return Vec::new();
    }
    templates
        .matching(object)
        .map(|template| {
            let job_id = event_job_id(
                &template.id,
                &object.bucket,
                &object.key,
                object.version_id.as_deref(),
                object.sequencer.as_deref(),
                object.etag.as_deref(),
            );
            let ctx = RenderContext {
                bucket: &object.bucket,
                key: &object.key,
                event_time: event.event_time,
            };
            match template.destination.path.render(&ctx) {
                Ok(dest_path) => Planned::Dispatch(Box::new(Dispatch {
                    alone: template.options.per_object_jobs,
                    job: JobMessage {
                        v: V1,
                        job_id,
                        template_id: template.id.clone(),
                        pool: template.destination.pool.clone(),
                        source: JobSource::S3 {
                            bucket: object.bucket.clone(),
                        },
                        files: vec![JobFile {
                            key: object.key.clone(),
                            size: object.size,
                            etag: object.etag.clone(),
                            version_id: object.version_id.clone(),
                            sequencer: object.sequencer.clone(),
                            dest_path,
                        }],
                        destination: template.destination.endpoint.clone(),
                        retry: template.options.retry,
                        delivery: template.options.delivery,
                        origin: None,
                        bandwidth: template.options.bandwidth.clone(),
                        created_at: now,
                        refused: Vec::new(),
                        folder: None,
                    },
                })),
                Err(e) => Planned::Reject(Box::new(RejectedJob {
                    job_id,
                    template: template.clone(),
                    object: object.clone(),
                    reason: format!(
                        "destination path for s3://{}/{} rejected: {e}",
                        object.bucket, object.key
                    ),
                })),
            }
        })
        .collect()
}

/// Largest object that shares a job with others: bigger ones are worth a job (and a copy) each.
pub const COALESCE_MAX_OBJECT_BYTES: u64 = 16 * 1024 * 1024;
/// Most files in a coalesced job: the job and one claim per file are written in one DynamoDB
/// transaction of at most 100 items.
pub const COALESCE_MAX_FILES: usize = 99;
/// Most bytes of file entries (keys and paths) in a coalesced job, well inside an SQS message.
pub const COALESCE_MAX_ENTRY_BYTES: usize = 96 * 1024;

/// Groups one batch's planned jobs (in arrival order, each tagged with what it came from) into
/// the jobs to record: jobs of small objects for the same template, source bucket, pool,
/// destination and options share one job (at most [`COALESCE_MAX_FILES`] files, never two
/// writes of one destination path); big objects and templates with `per_object_jobs` keep one
/// job per object. Groups keep arrival order (by their first member).
pub fn coalesce<T>(planned: Vec<(T, Dispatch)>) -> Vec<Vec<(T, JobMessage)>> {
    struct Open {
        at: usize,
        bytes: usize,
        paths: HashSet<String>,
    }
    let mut groups: Vec<Vec<(T, JobMessage)>> = Vec::new();
    let mut open: HashMap<String, Open> = HashMap::new();
    for (tag, Dispatch { job, alone }) in planned {
        let key = match job.files.as_slice() {
            [file] if !alone && file.size <= COALESCE_MAX_OBJECT_BYTES => compat_key(&job),
            _ => {
                groups.push(vec![(tag, job)]);
                continue;
            }
        };
        let path = job.files[0].dest_path.to_string();
        let bytes = entry_bytes(&job);
        let fits = |o: &Open, groups: &[Vec<(T, JobMessage)>]| {
            groups[o.at].len() < COALESCE_MAX_FILES
                && o.bytes + bytes <= COALESCE_MAX_ENTRY_BYTES
                && !o.paths.contains(&path)
        };
        match open.get_mut(&key) {
            Some(o) if fits(o, &groups) => {
                o.bytes += bytes;
                o.paths.insert(path);
                groups[o.at].push((tag, job));
            }
            _ => {
                open.insert(
                    key,
                    Open {
                        at: groups.len(),
                        bytes,
                        paths: HashSet::from([path]),
                    },
                );
                groups.push(vec![(tag, job)]);
            }
        }
    }
    groups
}

/// What jobs must share to be coalesced: everything but their files.
fn compat_key(job: &JobMessage) -> String {
    let mut shape = serde_json::to_value(job).expect("job messages serialise");
    if let Some(fields) = shape.as_object_mut() {
        for own in ["job_id", "files", "created_at"] {
            fields.remove(own);
        }
    }
    shape.to_string()
}

/// A job's file entries' share of its message, roughly.
fn entry_bytes(job: &JobMessage) -> usize {
    job.files
        .iter()
        .map(|f| 160 + 2 * f.key.len() + f.dest_path.as_str().len())
        .sum()
}

/// The job of a group from [`coalesce`]: a group of one is its job unchanged; several become
/// one job (id from the members' ids, see [`coalesced_job_id`]) with every member's file.
pub fn merge(members: &[&JobMessage]) -> JobMessage {
    let [first, rest @ ..] = members else {
        panic!("a group has at least one member")
    };
    if rest.is_empty() {
        return (*first).clone();
    }
    let ids: Vec<&JobId> = members.iter().map(|m| &m.job_id).collect();
    JobMessage {
        job_id: coalesced_job_id(&ids),
        files: members
            .iter()
            .flat_map(|m| m.files.iter().cloned())
            .collect(),
        ..(*first).clone()
    }
}
