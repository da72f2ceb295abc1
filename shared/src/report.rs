//! Delivery reports: for every finished job, each file with its size, verified hash, source
//! version, destination path, outcome and error, as JSON (for tools) and CSV (for people). The
//! executor writes them next to the job's log; the API serves them.

use serde::{Deserialize, Serialize};

use crate::delivery::{DeliveredFile, FileOutcome};
use crate::message::JobMessage;

/// One file of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRow {
    pub job_id: String,
    /// Source key or path.
    pub key: String,
    /// The source's version id, else its ETag, when the job named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    pub size: u64,
    pub dest_path: String,
    /// Lower-case hex MD5 of the delivered content, when verified by hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// `copied`, `unchanged`, `skipped_existing`, `superseded`, or `not_delivered`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn outcome_name(o: FileOutcome) -> &'static str {
    match o {
        FileOutcome::Copied => "copied",
        FileOutcome::Unchanged => "unchanged",
        FileOutcome::SkippedExisting => "skipped_existing",
        FileOutcome::Superseded => "superseded",
        FileOutcome::Moved => "moved",
        FileOutcome::Deleted => "deleted",
        FileOutcome::BackedUp => "backed_up",
        FileOutcome::WouldCopy => "would_copy",
        FileOutcome::WouldDelete => "would_delete",
    }
}

/// The rows of `job`: each of its files with what `delivered` says of it, or `not_delivered` with
/// the job's `error`.
pub fn rows(job: &JobMessage, delivered: &[DeliveredFile], error: Option<&str>) -> Vec<ReportRow> {
    job.files
        .iter()
        .map(|f| {
            let done = delivered
                .iter()
                .find(|d| d.key == f.key && d.dest_path == f.dest_path.as_str());
            ReportRow {
                job_id: job.job_id.to_string(),
                key: f.key.clone(),
                source_version: f.version_id.clone().or_else(|| f.etag.clone()),
                size: done.map_or(f.size, |d| d.size),
                dest_path: f.dest_path.to_string(),
                md5: done.and_then(|d| d.md5.clone()),
                outcome: done
                    .map_or("not_delivered", |d| outcome_name(d.outcome))
                    .to_owned(),
                error: match done {
                    Some(_) => None,
                    None => Some(error.unwrap_or("not delivered").to_owned()),
                },
            }
        })
        .chain(job.refused.iter().map(|r| ReportRow {
            job_id: job.job_id.to_string(),
            key: r.key.clone(),
            source_version: None,
            size: r.size,
            dest_path: String::new(),
            md5: None,
            outcome: "not_delivered".into(),
            error: Some(r.error.clone()),
        }))
        .collect()
}

const CSV_HEADER: &str = "job_id,key,source_version,size,dest_path,md5,outcome,error";

/// RFC 4180: a field with a comma, quote or line break is quoted, quotes doubled.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The rows as CSV with a header line.
pub fn to_csv(rows: &[ReportRow]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push_str("\r\n");
    for r in rows {
        let fields = [
            csv_field(&r.job_id),
            csv_field(&r.key),
            csv_field(r.source_version.as_deref().unwrap_or("")),
            r.size.to_string(),
            csv_field(&r.dest_path),
            r.md5.clone().unwrap_or_default(),
            r.outcome.clone(),
            csv_field(r.error.as_deref().unwrap_or("")),
        ];
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobMessage {
        JobMessage::parse(include_str!("../../tests/fixtures/job-message.v1.json")).unwrap()
    }

    #[test]
    fn each_file_gets_its_outcome_or_the_jobs_error() {
        let job = job();
        let f = &job.files[0];
        let delivered = [DeliveredFile {
            key: f.key.clone(),
            dest_path: f.dest_path.to_string(),
            size: 42,
            md5: Some("ab".repeat(16)),
            outcome: FileOutcome::Copied,
        }];
        let ok = rows(&job, &delivered, None);
        assert_eq!(ok.len(), job.files.len());
        assert_eq!((ok[0].outcome.as_str(), ok[0].size), ("copied", 42));
        assert_eq!(
            ok[0].md5.as_deref(),
            Some("abababababababababababababababab")
        );
        assert_eq!(ok[0].error, None);
        let failed = rows(&job, &[], Some("source gone"));
        assert_eq!(failed[0].outcome, "not_delivered");
        assert_eq!(failed[0].error.as_deref(), Some("source gone"));
        assert_eq!(failed[0].md5, None);
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let row = ReportRow {
            job_id: "ev-1".into(),
            key: "a, \"b\".txt".into(),
            source_version: None,
            size: 3,
            dest_path: "x/a.txt".into(),
            md5: None,
            outcome: "not_delivered".into(),
            error: Some("line\nbreak".into()),
        };
        assert_eq!(
            to_csv(&[row]),
            "job_id,key,source_version,size,dest_path,md5,outcome,error\r\n\
             ev-1,\"a, \"\"b\"\".txt\",,3,x/a.txt,,not_delivered,\"line\nbreak\"\r\n"
        );
    }
}
