//! Transfer templates: what to match, where it goes, and how.
//!
//! A template arrives as JSON (API body or DynamoDB item) and is validated field by field so that
//! an operator sees exactly which field is wrong (`trigger.key_glob`, `destination.path`, ...).

use serde::{Deserialize, Serialize};

use crate::names::{EndpointName, PoolName, TemplateId};
use crate::path_template::PathTemplate;

/// One validation failure, naming the field in dotted form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl ToString) -> Self {
        Self {
            field: field.into(),
            message: message.to_string(),
        }
    }
}

/// A transfer template as stored and exchanged (the API's JSON shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Unique id, also the key in the templates table.
    pub id: TemplateId,
    /// Free text for operators.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// A disabled template matches nothing.
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    /// What starts a job.
    pub trigger: Trigger,
    /// Where the files go.
    pub destination: Destination,
    /// How the jobs run.
    #[serde(default)]
    pub options: Options,
}

/// How a template's jobs run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Attempts and backoff for retryable failures.
    #[serde(default)]
    pub retry: crate::retry::RetryPolicy,
    /// Overwrite policy and verification.
    #[serde(default)]
    pub delivery: crate::delivery::Delivery,
    /// Who is told when a job ends (webhooks, e-mail through SNS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<crate::notify::Notification>,
    /// The template (trigger type `chain`) whose job starts when one of this template's jobs
    /// succeeds, with the files just delivered as its source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_template: Option<TemplateId>,
    /// Bandwidth limit or weekly timetable of this template's transfers (rclone `--bwlimit`
    /// syntax); with an executor's own limit, the lower applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<crate::bandwidth::Bandwidth>,
    /// For a chain step that reads a relay's staging area: keep the staged objects after a
    /// verified delivery (the bucket's lifecycle rule removes them later) instead of deleting them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_staging: bool,
    /// S3 events only: give every object its own job. By default, small objects whose events
    /// reach the trigger together share a job with a file list (one copy, one report).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_object_jobs: bool,
}

fn enabled_default() -> bool {
    true
}

/// What starts a job from this template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// An object created in S3.
    S3 {
        /// The bucket whose object events this template takes.
        bucket: String,
        /// Glob on the decoded key; `*` stays within one folder, `**` crosses folders.
        #[serde(default = "match_all")]
        key_glob: String,
        /// Smallest object size taken, in bytes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_size: Option<u64>,
        /// Largest object size taken, in bytes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_size: Option<u64>,
    },
    /// Files settling in a folder of one of the pool's local endpoints (run by its executors).
    Watch(crate::rule_spec::WatchTrigger),
    /// A cron schedule copying a folder of one of the pool's endpoints (run by its executors).
    Schedule(crate::rule_spec::ScheduleTrigger),
    /// A step of a chain: started by the template that names it in `options.next_template`,
    /// with the files that step delivered.
    Chain {},
    /// A saved transfer of a folder, run on demand.
    Manual(crate::transfer::ManualTrigger),
}

fn match_all() -> String {
    "**".to_owned()
}

/// Where a template's files are delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// The executor pool that runs the jobs.
    pub pool: PoolName,
    /// The endpoint, defined in that pool's executor configuration.
    pub endpoint: EndpointName,
    /// Path template under the endpoint's root, e.g. `{yyyy}/{mm}/{key}`.
    pub path: PathTemplate,
}

impl Template {
    /// Parses a template from JSON, reporting the first failing field by name.
    pub fn from_json(body: &[u8]) -> Result<Self, FieldError> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let template: Self =
            serde_path_to_error::deserialize(&mut de).map_err(field_error_from_serde)?;
        template.validate()?;
        Ok(template)
    }

    /// Checks the rules that a type alone does not carry.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.options
            .retry
            .check()
            .map_err(|(field, m)| FieldError::new(format!("options.retry.{field}"), m))?;
        match &self.trigger {
            Trigger::S3 {
                bucket,
                key_glob,
                min_size,
                max_size,
            } => {
                check_bucket_name(bucket).map_err(|m| FieldError::new("trigger.bucket", m))?;
                crate::glob::compile_glob(key_glob)
                    .map_err(|e| FieldError::new("trigger.key_glob", e))?;
                if let (Some(min), Some(max)) = (min_size, max_size)
                    && min > max
                {
                    return Err(FieldError::new(
                        "trigger.min_size",
                        format!("min_size {min} is larger than max_size {max}"),
                    ));
                }
            }
            Trigger::Watch(w) => crate::rule_spec::check_watch(w, self.options.delivery.verify)
                .map_err(|(f, m)| FieldError::new(format!("trigger.{f}"), m))?,
            Trigger::Schedule(s) => crate::rule_spec::check_schedule(s)
                .map_err(|(f, m)| FieldError::new(format!("trigger.{f}"), m))?,
            Trigger::Chain {} => {}
            Trigger::Manual(m) => m
                .check((&self.destination.pool, self.destination.path.as_str()))
                .map_err(|(f, m)| FieldError::new(f, m))?,
        }
        for (i, n) in self.options.notify.iter().enumerate() {
            n.check()
                .map_err(|(f, m)| FieldError::new(format!("options.notify[{i}].{f}"), m))?;
        }
        if self.options.next_template.as_ref() == Some(&self.id) {
            return Err(FieldError::new(
                "options.next_template",
                "a template cannot be its own next step",
            ));
        }
        Ok(())
    }
}

/// S3 bucket naming rules (the subset that matters for matching: length and characters).
fn check_bucket_name(bucket: &str) -> Result<(), String> {
    if !(3..=63).contains(&bucket.len()) {
        return Err(format!(
            "bucket name {bucket:?} must be 3 to 63 characters long"
        ));
    }
    if !bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Err(format!(
            "bucket name {bucket:?} may only contain lowercase letters, digits, '-' and '.'"
        ));
    }
    Ok(())
}

/// Turns a deserialisation error into a field error naming the failing field's dotted path.
fn field_error_from_serde(e: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let message = inner.to_string();
    // A missing field is reported at its parent: name the field itself.
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned());
    let field = match (missing, path.as_str()) {
        (Some(name), ".") => name,
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, ".") => "body".to_owned(),
        (None, p) => p.to_owned(),
    };
    // serde_json appends " at line L column C", which means nothing to an API user.
    let message = match message.rsplit_once(" at line ") {
        Some((head, _)) => head.to_owned(),
        None => message,
    };
    FieldError::new(field, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(path: &str, glob: &str) -> String {
        serde_json::json!({
            "id": "media-in",
            "trigger": {"type": "s3", "bucket": "pbs-source", "key_glob": glob},
            "destination": {"pool": "default", "endpoint": "local-disk", "path": path}
        })
        .to_string()
    }

    #[test]
    fn parses_a_valid_template_with_defaults() {
        let t = Template::from_json(body("{key}", "incoming/**").as_bytes()).unwrap();
        assert!(t.enabled);
        assert_eq!(t.destination.path.as_str(), "{key}");
    }

    #[test]
    fn names_the_failing_field() {
        let e = Template::from_json(body("../{key}", "**").as_bytes()).unwrap_err();
        assert_eq!(e.field, "destination.path");
        assert!(e.message.contains("escape"), "{e}");

        let e = Template::from_json(body("{key}", "a/[b").as_bytes()).unwrap_err();
        assert_eq!(e.field, "trigger.key_glob");

        let e = Template::from_json(body("{nope}", "**").as_bytes()).unwrap_err();
        assert_eq!(e.field, "destination.path");

        let e = Template::from_json(br#"{"id":"Bad"}"#).unwrap_err();
        assert_eq!(e.field, "id");

        let e = Template::from_json(br#"{"id":"ok"}"#).unwrap_err();
        assert_eq!(e.field, "trigger");

        let e = Template::from_json(br#"{"id":"ok","destination":{}}"#).unwrap_err();
        assert_eq!(e.field, "destination.pool");
    }

    #[test]
    fn rejects_unknown_fields_and_inverted_sizes() {
        let mut v: serde_json::Value = serde_json::from_str(&body("{key}", "**")).unwrap();
        v["colour"] = "blue".into();
        let e = Template::from_json(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.field, "colour");
        assert!(e.message.contains("unknown field `colour`"), "{e}");

        let mut v: serde_json::Value = serde_json::from_str(&body("{key}", "**")).unwrap();
        v["trigger"]["min_size"] = 10.into();
        v["trigger"]["max_size"] = 5.into();
        let e = Template::from_json(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.field, "trigger.min_size");
    }

    #[test]
    fn retry_policy_defaults_and_validation() {
        let t = Template::from_json(body("{key}", "**").as_bytes()).unwrap();
        assert_eq!(t.options.retry, crate::RetryPolicy::default());
        let mut v: serde_json::Value = serde_json::from_str(&body("{key}", "**")).unwrap();
        v["options"] = serde_json::json!({"retry": {"max_attempts": 50}});
        let e = Template::from_json(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.field, "options.retry.max_attempts");
        v["options"] = serde_json::json!({"retry": {"max_attempts": 5, "backoff_seconds": 2}});
        let t = Template::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(
            (
                t.options.retry.max_attempts,
                t.options.retry.max_backoff_seconds
            ),
            (5, 300)
        );
    }

    #[test]
    fn watch_and_schedule_triggers_are_checked_field_by_field() {
        let with = |trigger: serde_json::Value| {
            serde_json::json!({
                "id": "rule", "trigger": trigger,
                "destination": {"pool": "site-b", "endpoint": "nas", "path": "{key}"}
            })
            .to_string()
        };
        let t = Template::from_json(
            with(serde_json::json!({"type": "watch", "source": "drop", "folder": "in"})).as_bytes(),
        )
        .unwrap();
        let Trigger::Watch(w) = &t.trigger else {
            panic!("not a watch trigger")
        };
        assert_eq!((w.stable_seconds, w.recursive), (5, true));
        Template::from_json(
            with(serde_json::json!({"type": "schedule", "cron": "*/15 * * * *", "timezone": "Europe/Paris", "source": "sftp"})).as_bytes(),
        )
        .unwrap();
        let cases = [
            (
                serde_json::json!({"type": "watch", "source": "drop", "after": "move-to"}),
                "trigger.archive_folder",
            ),
            (
                serde_json::json!({"type": "watch", "source": "drop", "exclude": ["a/[b"]}),
                "trigger.exclude",
            ),
            (
                serde_json::json!({"type": "schedule", "cron": "0 2 * *", "source": "s"}),
                "trigger.cron",
            ),
            (
                serde_json::json!({"type": "schedule", "cron": "0 2 * * *", "timezone": "Nowhere/City", "source": "s"}),
                "trigger.timezone",
            ),
        ];
        for (trigger, field) in cases {
            let e = Template::from_json(with(trigger.clone()).as_bytes()).unwrap_err();
            assert_eq!(e.field, field, "{trigger}: {e}");
        }
        let e = Template::from_json(
            with(serde_json::json!({"type": "watch", "source": "drop", "color": 1})).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.field, "trigger");
        assert!(e.message.starts_with("unknown field `color`"), "{e}");
    }

    #[test]
    fn notifications_chains_and_bandwidth_are_options() {
        let mut v: serde_json::Value = serde_json::from_str(&body("{key}", "**")).unwrap();
        v["options"] = serde_json::json!({
            "notify": [{"on": ["failed"], "webhook": {"url": "https://h.example/x", "secret": "ssm:/pbs/h"}}],
            "next_template": "archive",
            "bandwidth": "Mon-08:00,10M Mon-18:00,off"
        });
        let t = Template::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(t.options.notify.len(), 1);
        assert_eq!(
            t.options.next_template.as_ref().unwrap().as_str(),
            "archive"
        );
        assert_eq!(
            t.options.bandwidth.as_ref().unwrap().to_string(),
            "Mon-08:00,10M Mon-18:00,off"
        );
        let back: serde_json::Value = serde_json::to_value(&t).unwrap();
        assert_eq!(back["options"]["bandwidth"], "Mon-08:00,10M Mon-18:00,off");

        for (options, field) in [
            (
                serde_json::json!({"notify": [{"webhook": {"url": "https://h/", "secret": "plain"}}]}),
                "options.notify[0].webhook.secret",
            ),
            (serde_json::json!({"bandwidth": "10Q"}), "options.bandwidth"),
            (
                serde_json::json!({"next_template": "media-in"}),
                "options.next_template",
            ),
            (
                serde_json::json!({"next_template": "Bad Id"}),
                "options.next_template",
            ),
        ] {
            v["options"] = options.clone();
            let e = Template::from_json(v.to_string().as_bytes()).unwrap_err();
            assert_eq!(e.field, field, "{options}: {e}");
        }
        let chain = serde_json::json!({
            "id": "archive", "trigger": {"type": "chain"},
            "destination": {"pool": "default", "endpoint": "sftp", "path": "{key}"}
        });
        let t = Template::from_json(chain.to_string().as_bytes()).unwrap();
        assert_eq!(t.trigger, Trigger::Chain {});
    }

    #[test]
    fn rejects_bad_bucket() {
        let mut v: serde_json::Value = serde_json::from_str(&body("{key}", "**")).unwrap();
        v["trigger"]["bucket"] = "Bad_Bucket".into();
        let e = Template::from_json(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.field, "trigger.bucket");
    }
}
