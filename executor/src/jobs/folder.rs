//! Folder transfers: a job naming a folder ([`FolderTransfer`]) is planned when it runs. Both sides
//! are listed once; a file at the destination with the source's size and modification time is
//! `unchanged` and not copied (except in a `move`, which delivers and verifies every file it
//! removes); the rest go through the one copy path (`copy`), then the mode acts: `move` removes
//! each source file whose delivery was verified, `sync` deletes (or moves to
//! the backup folder) what the destination has and the source no longer has, only when every
//! file was delivered, and never more than `max_delete`: a run that would delete more fails
//! before it copies or deletes anything. A dry run reports the plan and changes nothing.
//!
//! The job's report lists every file the run looked at: copied, unchanged, moved, deleted or
//! backed up (a removed destination file is a row with an empty source key).

use std::collections::HashMap;

use pbs_shared::transfer::{FolderTransfer, TransferMode};
use pbs_shared::{
    DeliveredFile, DestPath, ErrorClass, FileOutcome, JobFile, JobMessage, JobSource, RefusedFile,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::jobs::context::JobContext;
use crate::jobs::copy::{self, Copied, copy_jobs, failed};
use crate::transfer::endpoints::{Side, join};
use crate::transfer::{self, Listed, links, rclone};

/// What a run of a folder transfer will do, decided from the two listings.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Paths relative to the folders, with their source sizes.
    pub copy: Vec<(String, u64)>,
    pub unchanged: Vec<(String, u64)>,
    /// Destination files (relative to its folder) the source does not have: `sync` only.
    pub delete: Vec<(String, u64)>,
}

/// Decides from the listings what `spec` does: `source` and `dest` are the files under each
/// side's folder; only files the filter takes count on either side.
pub fn plan(spec: &FolderTransfer, source: &[Listed], dest: &[Listed]) -> Result<Plan, String> {
    let filter = spec
        .filter()
        .map_err(|(field, why)| format!("{field}: {why}"))?;
    let there: HashMap<&str, &Listed> = dest
        .iter()
        .filter(|d| filter.matches(&d.path))
        .map(|d| (d.path.as_str(), d))
        .collect();
    let mut out = Plan::default();
    // A move removes each source it delivered and verified in this run: nothing is taken as
    // unchanged on the strength of its size and time alone.
    let skips = spec.mode != TransferMode::Move;
    for f in source.iter().filter(|f| filter.matches(&f.path)) {
        let same = skips && there.get(f.path.as_str()).is_some_and(|d| f.same_as(d));
        let list = if same {
            &mut out.unchanged
        } else {
            &mut out.copy
        };
        list.push((f.path.clone(), f.size));
    }
    if spec.mode == TransferMode::Sync {
        let wanted: std::collections::HashSet<&str> =
            source.iter().map(|f| f.path.as_str()).collect();
        out.delete = there
            .values()
            .filter(|d| !wanted.contains(d.path.as_str()))
            .map(|d| (d.path.clone(), d.size))
            .collect();
        out.delete.sort();
    }
    Ok(out)
}

/// A folder transfer's outcome, and the job its report describes (every file it looked at).
pub struct Transferred {
    pub copied: Copied,
    pub report: JobMessage,
}

/// Runs the folder transfer `spec` of `job` as attempt `attempt`.
pub async fn run(
    ctx: &JobContext,
    job: &JobMessage,
    spec: &FolderTransfer,
    attempt: u32,
    abort: &CancellationToken,
) -> Transferred {
    let unchanged_job = || job.clone();
    let fail = |copied| Transferred {
        copied,
        report: unchanged_job(),
    };
    if let Err((field, why)) = spec.check() {
        return fail(failed(
            ErrorClass::BadRequest,
            format!("folder.{field}: {why}"),
        ));
    }
    if !matches!(job.source, JobSource::Endpoint { .. }) {
        return fail(failed(
            ErrorClass::BadRequest,
            "a folder transfer reads an endpoint, not the stack's source bucket",
        ));
    }
    let (src, dst) = match copy::sides(ctx, job).await {
        Ok(s) => s,
        Err(c) => return fail(c),
    };
    if let Some(why) = src
        .folder_link(&spec.folder)
        .or_else(|| dst.folder_link(&spec.dest_folder))
    {
        return fail(failed(ErrorClass::BadRequest, why));
    }
    let log = rclone::log_path(&ctx.config.state_dir, job.job_id.as_str(), attempt);
    let runner = copy::runner(ctx, (&src, &dst), &log, None, abort);
    // Both sides are listed at once; a folder that does not exist has no files.
    let listed = tokio::try_join!(
        runner.listing(&src, &spec.folder, spec.recursive),
        runner.listing(&dst, &spec.dest_folder, spec.recursive),
    );
    let (source, dest) = match listed {
        Ok((source, dest)) => (source.unwrap_or_default(), dest.unwrap_or_default()),
        Err(transfer::Fail::Interrupted) => return fail(Copied::Interrupted),
        Err(transfer::Fail::Failed { class, error }) => return fail(failed(class, error)),
    };
    let plan = match plan(spec, &source, &dest) {
        Ok(p) => p,
        Err(why) => return fail(failed(ErrorClass::BadRequest, why)),
    };
    info!(
        mode = spec.mode.as_str(),
        copy = plan.copy.len(),
        unchanged = plan.unchanged.len(),
        delete = plan.delete.len(),
        dry_run = spec.dry_run,
        "folder transfer planned"
    );
    let to_copy = copy_job(job, spec, &plan.copy);
    let mut report = to_copy.clone();
    report.files.extend(files(spec, &plan.unchanged));
    let removed = removals(spec, &plan.delete);
    report
        .files
        .extend(removed.iter().map(|(_, file)| file.clone()));
    if let Some(limit) = spec.max_delete
        && plan.delete.len() as u64 > limit
    {
        let error = format!(
            "this sync would delete {} file(s) under {}, more than its max_delete of {limit}: nothing was copied or deleted",
            plan.delete.len(),
            dst.display(&spec.dest_folder)
        );
        return Transferred {
            copied: failed(ErrorClass::Conflict, error),
            report,
        };
    }
    let unchanged = plan.unchanged.iter().map(|(rel, size)| DeliveredFile {
        key: join(&spec.folder, rel),
        dest_path: join(&spec.dest_folder, rel),
        size: *size,
        md5: None,
        outcome: FileOutcome::Unchanged,
    });
    if spec.dry_run {
        let would_copy = to_copy.files.iter().map(|f| DeliveredFile {
            key: f.key.clone(),
            dest_path: f.dest_path.to_string(),
            size: f.size,
            md5: None,
            outcome: FileOutcome::WouldCopy,
        });
        let would_delete = removed.iter().map(|(_, f)| DeliveredFile {
            key: String::new(),
            dest_path: f.dest_path.to_string(),
            size: f.size,
            md5: None,
            outcome: FileOutcome::WouldDelete,
        });
        let delivered = would_copy.chain(unchanged).chain(would_delete).collect();
        let copied = Copied::Done {
            files: 0,
            bytes: 0,
            superseded: Vec::new(),
            delivered,
        };
        return Transferred { copied, report };
    }
    let copied = if to_copy.files.is_empty() && to_copy.refused.is_empty() {
        Copied::Done {
            files: 0,
            bytes: 0,
            superseded: Vec::new(),
            delivered: Vec::new(),
        }
    } else {
        let one = [(&to_copy, attempt)];
        let copy = copy_jobs(ctx, &one, abort);
        copy::watched(ctx, &to_copy, attempt, copy)
            .await
            .pop()
            .expect("one result per job")
    };
    let copied = with_delivered(copied, unchanged);
    let copied = match spec.mode {
        TransferMode::Copy => copied,
        TransferMode::Move => remove_sources(ctx, job, &runner, &src, copied).await,
        TransferMode::Sync => remove_extras(ctx, job, spec, &runner, &dst, &removed, copied).await,
    };
    Transferred { copied, report }
}

/// The job that copies `files` (relative to the folders); a name the destination cannot take
/// fails alone.
fn copy_job(job: &JobMessage, spec: &FolderTransfer, files: &[(String, u64)]) -> JobMessage {
    let mut out = job.clone();
    out.folder = None;
    out.files = Vec::with_capacity(files.len());
    for (rel, size) in files {
        let key = join(&spec.folder, rel);
        match DestPath::parse(&join(&spec.dest_folder, rel)) {
            Ok(dest_path) => out.files.push(JobFile::at(key, *size, dest_path)),
            Err(e) => out.refused.push(RefusedFile {
                key,
                size: *size,
                error: format!("{rel:?} cannot be delivered: {e}"),
            }),
        }
    }
    out
}

/// Report entries of files that are not copied (their destination path is valid: it was listed).
fn files(spec: &FolderTransfer, list: &[(String, u64)]) -> Vec<JobFile> {
    list.iter()
        .filter_map(|(rel, size)| {
            let dest_path = DestPath::parse(&join(&spec.dest_folder, rel)).ok()?;
            Some(JobFile::at(join(&spec.folder, rel), *size, dest_path))
        })
        .collect()
}

/// The destination files a sync removes: `(where it goes in the backup folder, its report entry
/// with an empty source key)`.
fn removals(spec: &FolderTransfer, delete: &[(String, u64)]) -> Vec<(Option<String>, JobFile)> {
    delete
        .iter()
        .filter_map(|(rel, size)| {
            let dest_path = DestPath::parse(&join(&spec.dest_folder, rel)).ok()?;
            let file = JobFile::at(String::new(), *size, dest_path);
            Some((spec.backup_folder.as_ref().map(|b| join(b, rel)), file))
        })
        .collect()
}

/// `copied` with `more` files among its delivered ones.
fn with_delivered(copied: Copied, more: impl Iterator<Item = DeliveredFile>) -> Copied {
    match copied {
        Copied::Done {
            files,
            bytes,
            superseded,
            mut delivered,
        } => {
            delivered.extend(more);
            Copied::Done {
                files,
                bytes,
                superseded,
                delivered,
            }
        }
        Copied::Failed {
            class,
            error,
            mut delivered,
        } => {
            delivered.extend(more);
            Copied::Failed {
                class,
                error,
                delivered,
            }
        }
        other => other,
    }
}

/// `move`: removes the source of every file delivered and verified (or already there,
/// unchanged); a file that failed keeps its source. A source that cannot be removed fails the
/// job, naming it; the delivery stands.
async fn remove_sources(
    ctx: &JobContext,
    job: &JobMessage,
    runner: &transfer::Runner<'_>,
    src: &Side,
    copied: Copied,
) -> Copied {
    let (delivered, failure) = match copied {
        Copied::Done { delivered, .. } => (delivered, None),
        Copied::Failed {
            class,
            error,
            delivered,
        } => (delivered, Some((class, error))),
        other => return other,
    };
    let root = match &job.source {
        JobSource::Endpoint { endpoint } => copy::local_root(ctx, endpoint),
        JobSource::S3 { .. } => None,
    };
    let mut kept = Vec::new();
    let mut out = Vec::with_capacity(delivered.len());
    for mut d in delivered {
        if !matches!(d.outcome, FileOutcome::Copied | FileOutcome::Unchanged) {
            out.push(d);
            continue;
        }
        let refused = root.and_then(|r| links::refusal(r, &d.key));
        let removed = match refused {
            Some(why) => Err(why),
            None => runner.delete(src, &d.key).await.map_err(fail_text),
        };
        match removed {
            Ok(()) => d.outcome = FileOutcome::Moved,
            Err(why) => {
                warn!(key = %d.key, reason = %why, "delivered, but its source was not removed");
                kept.push(format!("{}: {why}", src.display(&d.key)));
            }
        }
        out.push(d);
    }
    finish(
        out,
        failure,
        kept,
        "delivered, but their source was not removed",
    )
}

/// `sync`: once every file was delivered, removes (or moves to the backup folder) the
/// destination files the source no longer has. A failed copy deletes nothing.
async fn remove_extras(
    ctx: &JobContext,
    job: &JobMessage,
    spec: &FolderTransfer,
    runner: &transfer::Runner<'_>,
    dst: &Side,
    removed: &[(Option<String>, JobFile)],
    copied: Copied,
) -> Copied {
    let Copied::Done { mut delivered, .. } = copied else {
        return copied;
    };
    let root = copy::local_root(ctx, &job.destination);
    let mut kept = Vec::new();
    for (backup, file) in removed {
        let path = file.dest_path.as_str();
        let touched = [Some(path), backup.as_deref()];
        let refused =
            root.and_then(|r| touched.iter().flatten().find_map(|p| links::refusal(r, p)));
        let done = match (refused, backup) {
            (Some(why), _) => Err(why),
            (None, Some(to)) => runner
                .move_file(dst, path, to)
                .await
                .map(|_| FileOutcome::BackedUp)
                .map_err(fail_text),
            (None, None) => runner
                .delete(dst, path)
                .await
                .map(|_| FileOutcome::Deleted)
                .map_err(fail_text),
        };
        match done {
            Ok(outcome) => delivered.push(DeliveredFile {
                key: String::new(),
                dest_path: path.to_owned(),
                size: file.size,
                md5: None,
                outcome,
            }),
            Err(why) => {
                warn!(path, reason = %why, "not removed from the destination");
                kept.push(format!("{}: {why}", dst.display(path)));
            }
        }
    }
    info!(folder = %spec.dest_folder, removed = removed.len() - kept.len(), "sync removed what the source no longer has");
    finish(
        delivered,
        None,
        kept,
        "no longer at the source, but not removed from the destination",
    )
}

fn fail_text(e: transfer::Fail) -> String {
    match e {
        transfer::Fail::Failed { error, .. } => error,
        transfer::Fail::Interrupted => "interrupted".into(),
    }
}

/// The run's end: the copy's own failure first, else a failure naming the files `kept` (with
/// `what` happened to them), else done.
fn finish(
    delivered: Vec<DeliveredFile>,
    failure: Option<(ErrorClass, String)>,
    kept: Vec<String>,
    what: &str,
) -> Copied {
    let copied = delivered
        .iter()
        .filter(|d| matches!(d.outcome, FileOutcome::Copied | FileOutcome::Moved))
        .count() as u64;
    let bytes = delivered
        .iter()
        .filter(|d| matches!(d.outcome, FileOutcome::Copied | FileOutcome::Moved))
        .map(|d| d.size)
        .sum();
    let kept =
        (!kept.is_empty()).then(|| format!("{} file(s) {what}: {}", kept.len(), kept.join("; ")));
    match (failure, kept) {
        (Some((class, error)), kept) => Copied::Failed {
            class,
            error: match kept {
                Some(k) => format!("{error}; and {k}"),
                None => error,
            },
            delivered,
        },
        (None, Some(error)) => Copied::Failed {
            class: ErrorClass::Retryable,
            error,
            delivered,
        },
        (None, None) => Copied::Done {
            files: copied,
            bytes,
            superseded: Vec::new(),
            delivered,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn at(path: &str, size: u64, second: u32) -> Listed {
        Listed {
            path: path.into(),
            size,
            modified: Some(Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, second).unwrap()),
        }
    }

    fn spec(json: serde_json::Value) -> FolderTransfer {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_file_with_the_same_size_and_time_is_unchanged_and_others_are_copied() {
        let s = spec(serde_json::json!({}));
        let source = [
            at("a.txt", 3, 0),
            at("b.txt", 3, 0),
            at("c.txt", 3, 0),
            at("d.txt", 3, 0),
        ];
        let mut late = at("c.txt", 3, 0);
        late.modified = late
            .modified
            .map(|t| t + chrono::Duration::milliseconds(400));
        let dest = [
            at("a.txt", 3, 0),
            at("b.txt", 4, 0),
            late,
            at("d.txt", 3, 5),
        ];
        let p = plan(&s, &source, &dest).unwrap();
        assert_eq!(p.unchanged, [("a.txt".into(), 3), ("c.txt".into(), 3)]);
        assert_eq!(p.copy, [("b.txt".into(), 3), ("d.txt".into(), 3)]);
        assert!(p.delete.is_empty(), "a copy deletes nothing");
    }

    #[test]
    fn a_move_verifies_every_file_it_removes_even_one_that_looks_unchanged() {
        let s = spec(serde_json::json!({"mode": "move"}));
        let p = plan(&s, &[at("a.txt", 3, 0)], &[at("a.txt", 3, 0)]).unwrap();
        assert_eq!(p.copy, [("a.txt".into(), 3)]);
        assert!(p.unchanged.is_empty());
    }

    #[test]
    fn a_sync_deletes_only_what_the_filter_takes_and_the_source_lacks() {
        let s = spec(serde_json::json!({"mode": "sync", "exclude": ["keep/**"]}));
        let source = [at("a.txt", 1, 0)];
        let dest = [
            at("a.txt", 1, 0),
            at("gone.txt", 2, 0),
            at("keep/x.txt", 1, 0),
            at("x.partial", 1, 0),
        ];
        let p = plan(&s, &source, &dest).unwrap();
        assert_eq!(p.unchanged, [("a.txt".into(), 1)]);
        assert_eq!(
            p.delete,
            [("gone.txt".into(), 2)],
            "excluded and partial files stay"
        );
    }

    #[test]
    fn filters_choose_the_source_files() {
        let s = spec(serde_json::json!({"include": ["**/*.csv"], "exclude": ["tmp/**"]}));
        let source = [
            at("a.csv", 1, 0),
            at("deep/b.csv", 1, 0),
            at("tmp/c.csv", 1, 0),
            at("d.txt", 1, 0),
        ];
        let p = plan(&s, &source, &[]).unwrap();
        let copied: Vec<&str> = p.copy.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(copied, ["a.csv", "deep/b.csv"]);
    }
}
