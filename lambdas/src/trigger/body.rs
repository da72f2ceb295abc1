//! The trigger's parsing of one SQS message body into object events, pure: the S3 notification
//! parsed with `aws_lambda_events`, keys decoded. With the planning of `pbs_shared::plan`, it is
//! tested against the fixtures the emulator's S3 emits.

use aws_lambda_events::s3::S3Event;

use pbs_shared::ObjectRef;
use pbs_shared::plan::ObjectEvent;
use pbs_shared::s3_key::decode_event_key;

/// What one SQS body holds.
#[derive(Debug)]
pub enum Body {
    /// The `s3:TestEvent` S3 sends when notifications are configured: acknowledged, ignored.
    TestEvent,
    /// Object events (possibly several per body).
    Objects(Vec<ObjectEvent>),
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use pbs_shared::plan::*;
    use pbs_shared::{JobMessage, Template, TemplateSet};

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
        let [Planned::Dispatch(d)] = jobs.as_slice() else {
            panic!("{jobs:?}")
        };
        let job = &d.job;
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
        let Planned::Dispatch(d) = &jobs[0] else {
            panic!()
        };
        let produced = serde_json::to_value(&d.job).unwrap();
        assert_eq!(
            pbs_shared::message::field_paths(&produced),
            pbs_shared::message::field_paths(&fixture)
        );
    }

    /// The planned job of an object `key` of `size` bytes.
    fn planned(set: &TemplateSet, key: &str, size: u64) -> Dispatch {
        let mut v: serde_json::Value = serde_json::from_str(PUT).unwrap();
        v["Records"][0]["s3"]["object"]["key"] = key.into();
        v["Records"][0]["s3"]["object"]["size"] = size.into();
        v["Records"][0]["s3"]["object"]["sequencer"] = format!("{:016X}", key.len()).into();
        let jobs = plan(set, &objects(&v.to_string())[0], Utc::now());
        let [Planned::Dispatch(d)] = jobs.as_slice() else {
            panic!("{jobs:?}")
        };
        (**d).clone()
    }

    #[test]
    fn small_objects_of_one_template_share_a_job_and_big_ones_do_not() {
        let set = templates("{key}");
        let batch: Vec<(usize, Dispatch)> = [
            ("incoming/a.bin", 10),
            ("incoming/b.bin", 10),
            ("incoming/big.mov", COALESCE_MAX_OBJECT_BYTES + 1),
            ("incoming/a.bin", 12),
            ("incoming/c.bin", 10),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (key, size))| (i, planned(&set, key, size)))
        .collect();
        let groups = coalesce(batch);
        let tags: Vec<Vec<usize>> = groups
            .iter()
            .map(|g| g.iter().map(|(t, _)| *t).collect())
            .collect();
        // The second write of a.bin starts another job; the big object has its own.
        assert_eq!(tags, vec![vec![0, 1], vec![2], vec![3, 4]]);

        let members: Vec<&JobMessage> = groups[0].iter().map(|(_, j)| j).collect();
        let job = merge(&members);
        assert!(job.job_id.as_str().starts_with("co-"), "{}", job.job_id);
        let keys: Vec<&str> = job.files.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["incoming/a.bin", "incoming/b.bin"]);
        assert_eq!(
            (&job.template_id, &job.pool, &job.destination),
            (
                &members[0].template_id,
                &members[0].pool,
                &members[0].destination
            )
        );
        // The same events make the same job in any order; a group of one is its job unchanged.
        let reversed: Vec<&JobMessage> = members.iter().rev().copied().collect();
        assert_eq!(merge(&reversed).job_id, job.job_id);
        assert_eq!(merge(&[&groups[1][0].1]), groups[1][0].1);
    }

    #[test]
    fn coalesced_jobs_are_capped_and_per_object_templates_never_coalesce() {
        let set = templates("{key}");
        let many: Vec<(usize, Dispatch)> = (0..150)
            .map(|i| (i, planned(&set, &format!("incoming/{i}.bin"), 4096)))
            .collect();
        let sizes: Vec<usize> = coalesce(many).iter().map(Vec::len).collect();
        assert_eq!(sizes, [COALESCE_MAX_FILES, 150 - COALESCE_MAX_FILES]);

        let mut alone = planned(&set, "incoming/x.bin", 1);
        alone.alone = true;
        let other = planned(&set, "incoming/y.bin", 1);
        let groups = coalesce(vec![(0, alone.clone()), (1, alone), (2, other)]);
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);

        // Different destinations (another pool here) never share a job.
        let mut elsewhere = planned(&set, "incoming/z.bin", 1);
        elsewhere.job.pool = pbs_shared::PoolName::parse("other").unwrap();
        let (w, v) = (
            planned(&set, "incoming/w.bin", 1),
            planned(&set, "incoming/v.bin", 1),
        );
        let groups = coalesce(vec![(0, elsewhere), (1, w), (2, v)]);
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), [1, 2]);
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
