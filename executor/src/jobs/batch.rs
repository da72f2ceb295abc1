//! Jobs received together, copied together. An event storm makes one job per object; run one by
//! one, each costs an rclone process (~50–80 ms before a byte moves) and its own verification.
//! Compatible jobs taken from the queue in one go instead share one
//! `rclone copy --files-from-raw` and one verification listing, while each keeps its own ledger
//! claim, attempt, per-file result, status report and SQS message.
//!
//! Compatible means: an S3 source in the same bucket, the same destination endpoint and delivery
//! rules (`overwrite` policy only: the others check each file before copying it), and files that
//! keep their relative paths under one folder on each side (`{key}`, `out/{key}`,
//! `{yyyy}/{mm}/{dd}/{key}` on one day). A job writing a path another job of the batch writes
//! runs on its own, so that two versions of one key are never in one copy.

use std::collections::{HashMap, HashSet};

use pbs_shared::{Delivery, JobMessage, JobSource, Overwrite};

use crate::transfer::{self, Item};

/// What jobs must share to be copied together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchKey {
    bucket: String,
    destination: String,
    delivery: DeliveryKey,
    bandwidth: Option<String>,
    src_dir: String,
    dst_dir: String,
}

/// [`Delivery`] as a hashable key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DeliveryKey(String);

impl From<Delivery> for DeliveryKey {
    fn from(d: Delivery) -> Self {
        Self(format!("{d:?}"))
    }
}

/// A job's files as transfer items.
pub fn items(job: &JobMessage) -> Vec<Item<'_>> {
    job.files
        .iter()
        .map(|f| Item {
            source: &f.key,
            dest: f.dest_path.as_str(),
            size: f.size,
            etag: f.etag.as_deref(),
        })
        .collect()
}

/// The batch `job` may join, or `None` when it runs on its own.
pub fn key(job: &JobMessage) -> Option<BatchKey> {
    let JobSource::S3 { bucket } = &job.source else {
        return None;
    };
    // A relay's first leg writes under its own job id: it cannot share a copy.
    if job.delivery.overwrite != Overwrite::Overwrite
        || job.files.is_empty()
        || job.destination.as_str() == pbs_shared::message::STAGING_ENDPOINT
    {
        return None;
    }
    let (src_dir, dst_dir, _) = transfer::common_folders(&items(job))?;
    Some(BatchKey {
        bucket: bucket.clone(),
        destination: job.destination.as_str().to_owned(),
        delivery: job.delivery.into(),
        bandwidth: job.bandwidth.as_ref().map(ToString::to_string),
        src_dir,
        dst_dir,
    })
}

/// Splits jobs (in arrival order) into units that run together: batches of compatible jobs of
/// at most `max_files` files, and jobs on their own. Order is kept within and across units (by
/// each unit's first job).
pub fn plan<T>(jobs: Vec<(T, Option<BatchKey>, Vec<String>)>, max_files: usize) -> Vec<Vec<T>> {
    struct Open<T> {
        members: Vec<T>,
        files: usize,
        paths: HashSet<String>,
    }
    let mut units: Vec<Option<Vec<T>>> = Vec::new();
    // Open batch per key: (index into units, members so far).
    let mut open: HashMap<BatchKey, (usize, Open<T>)> = HashMap::new();
    for (job, key, dest_paths) in jobs {
        let Some(key) = key.filter(|_| max_files > 1) else {
            units.push(Some(vec![job]));
            continue;
        };
        let fits = |o: &Open<T>| {
            o.files + dest_paths.len() <= max_files
                && dest_paths.iter().all(|p| !o.paths.contains(p))
        };
        match open.get_mut(&key) {
            Some((_, o)) if fits(o) => {
                o.files += dest_paths.len();
                o.paths.extend(dest_paths);
                o.members.push(job);
            }
            _ => {
                // A new batch for this key; a full or conflicting one is closed.
                if let Some((at, o)) = open.remove(&key) {
                    units[at] = Some(o.members);
                }
                units.push(None);
                let files = dest_paths.len();
                open.insert(
                    key,
                    (
                        units.len() - 1,
                        Open {
                            members: vec![job],
                            files,
                            paths: dest_paths.into_iter().collect(),
                        },
                    ),
                );
            }
        }
    }
    for (_, (at, o)) in open {
        units[at] = Some(o.members);
    }
    units.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(key: &str, dest: &str, overwrite: &str) -> JobMessage {
        JobMessage::parse(
            &serde_json::json!({
                "v": 1, "job_id": format!("ev-{}", key.replace(['/', '.'], "-")), "template_id": "t",
                "pool": "p", "destination": "disk",
                "source": {"type": "s3", "bucket": "b"},
                "files": [{"key": key, "size": 4, "dest_path": dest, "sequencer": "01"}],
                "retry": {"max_attempts": 3, "backoff_seconds": 10, "max_backoff_seconds": 300},
                "delivery": {"overwrite": overwrite},
                "created_at": "2026-11-25T16:30:00Z"
            })
            .to_string(),
        )
        .unwrap()
    }

    fn entry(j: &JobMessage) -> (String, Option<BatchKey>, Vec<String>) {
        (
            j.files[0].key.clone(),
            key(j),
            j.files.iter().map(|f| f.dest_path.to_string()).collect(),
        )
    }

    #[test]
    fn compatible_jobs_share_a_batch_and_others_run_alone() {
        let jobs = [
            job("in/a.bin", "out/in/a.bin", "overwrite"),
            job("in/b.bin", "out/in/b.bin", "overwrite"),
            job("in/c.bin", "elsewhere/c.bin", "overwrite"),
            job("in/d.bin", "out/in/d.bin", "skip-existing"),
            job("in/e.bin", "out/in/e.bin", "overwrite"),
        ];
        let units = plan(jobs.iter().map(entry).collect(), 100);
        assert_eq!(
            units,
            vec![
                vec!["in/a.bin".to_owned(), "in/b.bin".into(), "in/e.bin".into()],
                vec!["in/c.bin".into()],
                vec!["in/d.bin".into()],
            ]
        );
        let batch: Vec<&JobMessage> = vec![&jobs[0], &jobs[1], &jobs[4]];
        let all: Vec<Item> = batch.iter().flat_map(|j| items(j)).collect();
        let (src_dir, dst_dir, rels) = transfer::common_folders(&all).unwrap();
        assert_eq!((src_dir.as_str(), dst_dir.as_str()), ("", "out"));
        assert_eq!(rels, ["in/a.bin", "in/b.bin", "in/e.bin"]);
    }

    #[test]
    fn batches_are_capped_and_never_write_one_path_twice() {
        let jobs = [
            job("k/1", "k/1", "overwrite"),
            job("k/2", "k/2", "overwrite"),
            job("k/1", "k/1", "overwrite"),
            job("k/3", "k/3", "overwrite"),
        ];
        // The second write of k/1 closes the first batch and starts the next.
        let units = plan(jobs.iter().map(entry).collect(), 100);
        assert_eq!(
            units,
            vec![
                vec!["k/1".to_owned(), "k/2".into()],
                vec!["k/1".into(), "k/3".into()]
            ]
        );
        let units = plan(jobs.iter().map(entry).collect(), 2);
        assert_eq!(units.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
        // Batching off: every job alone.
        let units = plan(jobs.iter().map(entry).collect(), 1);
        assert_eq!(units.len(), 4);
    }
}
