//! The trigger's parsing of one SQS message body into object events, pure. S3 event
//! notifications come straight from S3, or wrapped by SNS (a `Notification` whose `Message` is the
//! S3 event; with raw delivery the body is the S3 event itself), or as EventBridge `Object
//! Created` events. Each becomes the same [`ObjectEvent`] (sequencers in one canonical form), so
//! the same upload announced through two envelopes plans the same job. Tested against the
//! fixtures the emulator's S3 emits and the shapes AWS documents.

use aws_lambda_events::s3::S3Event;
use chrono::{DateTime, Utc};
use serde_json::Value;

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
    #[error("EventBridge event: {0}")]
    BadEventBridge(String),
}

/// Parses one SQS message body: an S3 event notification, direct or in an SNS or EventBridge
/// envelope.
pub fn parse_body(body: &str) -> Result<Body, BadBody> {
    let value: Value = serde_json::from_str(body).map_err(|e| BadBody::NotJson(e.to_string()))?;
    match value.get("Type").and_then(Value::as_str) {
        // SNS (not raw delivery): the S3 event is the notification's message, as text.
        Some("Notification") if value.get("TopicArn").is_some() => {
            let message = value
                .get("Message")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    BadBody::NotS3Event("an SNS notification without a \"Message\"".into())
                })?;
            let inner: Value = serde_json::from_str(message).map_err(|e| {
                BadBody::NotS3Event(format!("the SNS notification's Message is not JSON: {e}"))
            })?;
            s3_notification(inner)
        }
        Some(kind @ ("SubscriptionConfirmation" | "UnsubscribeConfirmation")) => {
            Err(BadBody::NotS3Event(format!(
                "an SNS {kind}: confirm the events queue's subscription to the topic (its SubscribeURL), or subscribe it with CloudFormation, which needs no confirmation"
            )))
        }
        _ if value.get("detail-type").is_some() => eventbridge(&value),
        _ => s3_notification(value),
    }
}

/// An S3 event notification (`Records`), or S3's test event.
fn s3_notification(value: Value) -> Result<Body, BadBody> {
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
        let o = record.s3.object;
        let raw_key = o
            .key
            .ok_or_else(|| bad("s3.object.key is missing".into()))?;
        // Keys of S3 notifications are URL-encoded (`+` for a space).
        let key = decode_event_key(&raw_key).map_err(|e| bad(e.to_string()))?;
        let size = match o.size {
            Some(s) if s >= 0 => s as u64,
            Some(s) => return Err(bad(format!("s3.object.size is negative ({s})"))),
            None => return Err(bad("s3.object.size is missing".into())),
        };
        objects.push(object_event(
            (bucket, key, size),
            (o.e_tag, o.version_id, o.sequencer),
            record.event_time,
        ));
    }
    Ok(Body::Objects(objects))
}

/// An EventBridge event from S3: `Object Created` is one object event; S3's other events start
/// nothing. Its key is the object's key as it is (EventBridge does not URL-encode it).
fn eventbridge(value: &Value) -> Result<Body, BadBody> {
    let bad = |reason: String| BadBody::BadEventBridge(reason);
    let source = value.get("source").and_then(Value::as_str).unwrap_or("");
    if source != "aws.s3" {
        return Err(BadBody::NotS3Event(format!(
            "an EventBridge event from {source:?}, not from \"aws.s3\""
        )));
    }
    if value.get("detail-type").and_then(Value::as_str) != Some("Object Created") {
        return Ok(Body::Objects(Vec::new()));
    }
    let detail = value
        .get("detail")
        .ok_or_else(|| bad("\"detail\" is missing".into()))?;
    let text = |path: &[&str]| {
        path.iter()
            .try_fold(detail, |v, k| v.get(*k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let bucket =
        text(&["bucket", "name"]).ok_or_else(|| bad("detail.bucket.name is missing".into()))?;
    let key = text(&["object", "key"]).ok_or_else(|| bad("detail.object.key is missing".into()))?;
    let size = detail
        .get("object")
        .and_then(|o| o.get("size"))
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("detail.object.size is missing or not a whole number".into()))?;
    let time = value
        .get("time")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| bad("\"time\" is missing or not an RFC 3339 time".into()))?;
    let tags = (
        text(&["object", "etag"]),
        text(&["object", "version-id"]),
        text(&["object", "sequencer"]),
    );
    Ok(Body::Objects(vec![object_event(
        (bucket, key, size),
        tags,
        time,
    )]))
}

/// The object event of `(bucket, key, size)` with its `(etag, version id, sequencer)`.
fn object_event(
    (bucket, key, size): (String, String, u64),
    (etag, version_id, sequencer): (Option<String>, Option<String>, Option<String>),
    event_time: DateTime<Utc>,
) -> ObjectEvent {
    ObjectEvent {
        object: ObjectRef {
            bucket,
            key,
            size,
            etag: etag.filter(|e| !e.is_empty()),
            version_id: version_id.filter(|v| !v.is_empty()),
            sequencer: sequencer.as_deref().and_then(canonical_sequencer),
        },
        event_time,
    }
}

/// A sequencer in one form whichever envelope carried it: upper-case hexadecimal without leading
/// zeros (S3 compares sequencers as numbers, so `00A1` and `a1` are the same write).
fn canonical_sequencer(s: &str) -> Option<String> {
    let trimmed = s.trim().trim_start_matches('0').to_ascii_uppercase();
    match (s.trim().is_empty(), trimmed.is_empty()) {
        (true, _) => None,
        (false, true) => Some("0".into()),
        (false, false) => Some(trimmed),
    }
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
            Some("6611C4FBF030B"),
            "sequencers are kept without their leading zeros"
        );
    }

    const SNS: &str = include_str!("../../../tests/fixtures/s3-event-sns.json");
    const EVENTBRIDGE: &str = include_str!("../../../tests/fixtures/s3-event-eventbridge.json");

    #[test]
    fn every_envelope_of_one_upload_plans_the_same_job() {
        let direct = &objects(PUT)[0];
        let wrapped = &objects(SNS)[0];
        let bridged = &objects(EVENTBRIDGE)[0];
        assert_eq!(direct.object, wrapped.object, "SNS");
        assert_eq!(
            direct.object, bridged.object,
            "EventBridge: raw key, sequencer in another case and width"
        );
        let now = Utc::now();
        let ids: Vec<_> = [direct, wrapped, bridged]
            .iter()
            .map(|o| plan(&templates("{key}"), o, now)[0].job_id().clone())
            .collect();
        assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
        // SNS raw delivery is the S3 event itself; S3's test event can come through SNS too.
        let mut test = serde_json::from_str::<serde_json::Value>(SNS).unwrap();
        test["Message"] = TEST_EVENT.trim().into();
        assert!(matches!(
            parse_body(&test.to_string()).unwrap(),
            Body::TestEvent
        ));
    }

    #[test]
    fn envelopes_that_are_not_object_events_say_why() {
        let mut v: serde_json::Value = serde_json::from_str(EVENTBRIDGE).unwrap();
        v["detail-type"] = "Object Deleted".into();
        assert!(
            objects(&v.to_string()).is_empty(),
            "other S3 events start nothing"
        );
        v["source"] = "aws.ec2".into();
        let e = parse_body(&v.to_string()).unwrap_err().to_string();
        assert!(e.contains("\"aws.ec2\""), "{e}");
        let mut v: serde_json::Value = serde_json::from_str(EVENTBRIDGE).unwrap();
        v["detail"]["object"]
            .as_object_mut()
            .unwrap()
            .remove("size");
        let e = parse_body(&v.to_string()).unwrap_err().to_string();
        assert!(e.contains("detail.object.size"), "{e}");
        let mut v: serde_json::Value = serde_json::from_str(SNS).unwrap();
        v["Message"] = "not json".into();
        let e = parse_body(&v.to_string()).unwrap_err().to_string();
        assert!(e.contains("Message is not JSON"), "{e}");
        v["Type"] = "SubscriptionConfirmation".into();
        let e = parse_body(&v.to_string()).unwrap_err().to_string();
        assert!(
            e.contains("SubscriptionConfirmation") && e.contains("SubscribeURL"),
            "{e}"
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
