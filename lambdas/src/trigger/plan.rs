//! The trigger's pure core: from one SQS message body to the jobs it should create.
//!
//! No AWS here: parsing the S3 notification, decoding keys, matching templates and rendering
//! destination paths are plain functions, tested against the fixtures the emulator's S3 emits.

use aws_lambda_events::s3::S3Event;
use chrono::{DateTime, Utc};
use pbs_shared::job::event_job_id;
use pbs_shared::message::{JobFile, JobMessage, JobSource, V1};
use pbs_shared::path_template::RenderContext;
use pbs_shared::s3_key::decode_event_key;
use pbs_shared::{JobId, ObjectRef, Template, TemplateSet};

/// What one SQS body holds.
#[derive(Debug)]
pub enum Body {
    /// The `s3:TestEvent` S3 sends when notifications are configured: acknowledged, ignored.
    TestEvent,
    /// Object events (possibly several per body).
    Objects(Vec<ObjectEvent>),
}

/// One object-created event, key decoded.
#[derive(Debug, Clone)]
pub struct ObjectEvent {
    pub object: ObjectRef,
    pub event_time: DateTime<Utc>,
}

/// Why a body cannot be processed; such a message goes to the dead-letter queue with this reason.
#[derive(Debug, thiserror::Error)]
pub enum BadBody {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is JSON but not an S3 event notification: {0}")]
    NotS3Event(String),
    #[error("S3 event has no records")]
    NoRecords,
    #[error("record {index}: {reason}")]
    BadRecord { index: usize, reason: String },
}

/// Parses one SQS message body as an S3 event notification.
pub fn parse_body(body: &str) -> Result<Body, BadBody> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| BadBody::NotJson(e.to_string()))?;
    if value.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
        return Ok(Body::TestEvent);
    }
    if value.get("Records").is_none() {
        return Err(BadBody::NotS3Event("it has no \"Records\" field".into()));
    }
    let event: S3Event =
        serde_json::from_value(value).map_err(|e| BadBody::NotS3Event(e.to_string()))?;
    if event.records.is_empty() {
        return Err(BadBody::NoRecords);
    }
    let mut objects = Vec::with_capacity(event.records.len());
    for (index, record) in event.records.into_iter().enumerate() {
        let bad = |reason: String| BadBody::BadRecord { index, reason };
        if record.event_source.as_deref() != Some("aws:s3") {
            return Err(bad(format!(
                "eventSource is {:?}, expected \"aws:s3\"",
                record.event_source
            )));
        }
        let name = record.event_name.unwrap_or_default();
        if !name.starts_with("ObjectCreated:") {
            // Deletes, restores and the like start no transfer.
            continue;
        }
        let bucket = record
            .s3
            .bucket
            .name
            .ok_or_else(|| bad("s3.bucket.name is missing".into()))?;
        let raw_key = record
            .s3
            .object
            .key
            .ok_or_else(|| bad("s3.object.key is missing".into()))?;
        let key = decode_event_key(&raw_key).map_err(|e| bad(e.to_string()))?;
        let size = match record.s3.object.size {
            Some(s) if s >= 0 => s as u64,
            Some(s) => return Err(bad(format!("s3.object.size is negative ({s})"))),
            None => return Err(bad("s3.object.size is missing".into())),
        };
        objects.push(ObjectEvent {
            object: ObjectRef {
                bucket,
                key,
                size,
                etag: record.s3.object.e_tag.filter(|e| !e.is_empty()),
                version_id: record.s3.object.version_id.filter(|v| !v.is_empty()),
                sequencer: record.s3.object.sequencer.filter(|s| !s.is_empty()),
            },
            event_time: record.event_time,
        });
    }
    Ok(Body::Objects(objects))
}

/// A job the trigger will record.
#[derive(Debug, Clone)]
pub enum Planned {
    /// A valid job: recorded `queued` and sent to its pool's queue.
    Dispatch(Box<JobMessage>),
    /// A job that can never run (e.g. its path would escape): recorded `failed` with the reason.
    Reject(Box<RejectedJob>),
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
            Planned::Dispatch(m) => &m.job_id,
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
                Ok(dest_path) => Planned::Dispatch(Box::new(JobMessage {
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

#[cfg(test)]
mod tests {
    use super::*;

    const PUT: &str = include_str!("../../../tests/fixtures/s3-event-put.json");
    const TEST_EVENT: &str = include_str!("../../../tests/fixtures/s3-test-event.json");

    fn templates(path: &str) -> TemplateSet {
        let t: Template = serde_json::from_value(serde_json::json!({
            "id": "media-in",
            "trigger": {"type": "s3", "bucket": "pbs-source", "key_glob": "incoming/**"},
            "destination": {"pool": "default", "endpoint": "local-disk", "path": path}
        }))
        .unwrap();
        TemplateSet::compile(vec![t]).0
    }

    fn objects(body: &str) -> Vec<ObjectEvent> {
        match parse_body(body).unwrap() {
            Body::Objects(o) => o,
            Body::TestEvent => panic!("test event"),
        }
    }

    #[test]
    fn parses_the_emulator_fixture_and_decodes_the_key() {
        let objs = objects(PUT);
        assert_eq!(objs.len(), 1);
        assert_eq!(objs[0].object.key, "incoming/a b+c%.txt/été.txt");
        assert_eq!(objs[0].object.size, 5);
        assert_eq!(
            objs[0].object.sequencer.as_deref(),
            Some("000006611C4FBF030B")
        );
    }

    #[test]
    fn test_event_is_recognised() {
        assert!(matches!(parse_body(TEST_EVENT).unwrap(), Body::TestEvent));
    }

    #[test]
    fn bad_bodies_say_why() {
        assert!(matches!(parse_body("not json{"), Err(BadBody::NotJson(_))));
        let e = parse_body(r#"{"hello":"world"}"#).unwrap_err();
        assert!(matches!(e, BadBody::NotS3Event(_)), "{e}");
        assert!(matches!(
            parse_body(r#"{"Records":[]}"#),
            Err(BadBody::NoRecords)
        ));
        let mut v: serde_json::Value = serde_json::from_str(PUT).unwrap();
        v["Records"][0]["eventSource"] = "aws:sqs".into();
        let e = parse_body(&v.to_string()).unwrap_err().to_string();
        assert!(e.contains("record 0") && e.contains("aws:sqs"), "{e}");
        v["Records"][0]["eventSource"] = "aws:s3".into();
        v["Records"][0]["s3"]["object"]["key"] = "%FF".into();
        assert!(
            parse_body(&v.to_string())
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
    }

    #[test]
    fn non_create_events_start_nothing() {
        let mut v: serde_json::Value = serde_json::from_str(PUT).unwrap();
        v["Records"][0]["eventName"] = "ObjectRemoved:Delete".into();
        assert!(objects(&v.to_string()).is_empty());
    }

    #[test]
    fn plans_a_job_with_the_rendered_path() {
        let now = Utc::now();
        let obj = &objects(PUT)[0];
        let jobs = plan(&templates("{yyyy}/{mm}/{dd}/{key}"), obj, now);
        let [Planned::Dispatch(job)] = jobs.as_slice() else {
            panic!("{jobs:?}")
        };
        assert_eq!(
            job.files[0].dest_path.as_str(),
            "2026/11/25/incoming/a b+c%.txt/été.txt"
        );
        assert_eq!(job.pool.as_str(), "default");
        // The same event always plans the same job id.
        assert_eq!(plan(&templates("{key}"), obj, now)[0].job_id(), &job.job_id);
    }

    #[test]
    fn planned_jobs_have_the_documented_shape() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/job-message.v1.json"))
                .unwrap();
        let jobs = plan(&templates("{key}"), &objects(PUT)[0], Utc::now());
        let Planned::Dispatch(job) = &jobs[0] else {
            panic!()
        };
        let produced = serde_json::to_value(job).unwrap();
        assert_eq!(
            pbs_shared::message::field_paths(&produced),
            pbs_shared::message::field_paths(&fixture)
        );
    }

    #[test]
    fn an_escaping_key_is_rejected_with_the_reason() {
        let mut v: serde_json::Value = serde_json::from_str(PUT).unwrap();
        v["Records"][0]["s3"]["object"]["key"] = "incoming/../../etc/passwd".into();
        let obj = &objects(&v.to_string())[0];
        let jobs = plan(&templates("{key}"), obj, Utc::now());
        let [Planned::Reject(r)] = jobs.as_slice() else {
            panic!("{jobs:?}")
        };
        assert!(r.reason.contains("'..'"), "{}", r.reason);
    }

    #[test]
    fn unmatched_objects_and_folder_markers_plan_nothing() {
        let mut v: serde_json::Value = serde_json::from_str(PUT).unwrap();
        v["Records"][0]["s3"]["object"]["key"] = "elsewhere/x".into();
        assert!(plan(&templates("{key}"), &objects(&v.to_string())[0], Utc::now()).is_empty());
        v["Records"][0]["s3"]["object"]["key"] = "incoming/folder/".into();
        v["Records"][0]["s3"]["object"]["size"] = 0.into();
        assert!(plan(&templates("{key}"), &objects(&v.to_string())[0], Utc::now()).is_empty());
    }
}
