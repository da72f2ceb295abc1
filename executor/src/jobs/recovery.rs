//! Start-up recovery after a crash: jobs the ledger shows as still running were interrupted, and
//! rclone (killed with SIGKILL) may have left `.partial` files beside their destinations. Those
//! partials are removed, and the jobs are marked interrupted; their SQS messages reappear when the
//! visibility timeout ends, and this or another executor runs them again.

use std::path::Path;

use pbs_shared::JobMessage;
use tracing::{info, warn};

use crate::config::{Config, EndpointConfig};
use crate::ledger::{Ledger, LedgerError};

/// What recovery did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub jobs: usize,
    pub partials_removed: usize,
}

pub fn recover(config: &Config, ledger: &Ledger) -> Result<Recovered, LedgerError> {
    let mut report = Recovered::default();
    for (job_id, attempt, body) in ledger.unfinished()? {
        match JobMessage::parse(&body) {
            Ok(job) => {
                // Local targets only: on SMB and SFTP targets the partial is overwritten by the
                // next attempt's copy of the same file, under a new random suffix.
                if let Some(EndpointConfig::Local(local)) = config.endpoints.get(&job.destination) {
                    for file in &job.files {
                        let path = file
                            .dest_path
                            .segments()
                            .fold(local.root.clone(), |p, s| p.join(s));
                        report.partials_removed += remove_partials(&path);
                    }
                }
            }
            Err(e) => {
                warn!(job_id = %job_id, error = %e, "cannot read the interrupted job's message")
            }
        }
        ledger.mark_interrupted(&job_id, attempt)?;
        report.jobs += 1;
    }
    if report.jobs > 0 {
        info!(
            jobs = report.jobs,
            partials_removed = report.partials_removed,
            "recovered jobs interrupted by a crash"
        );
    }
    Ok(report)
}

/// Removes rclone's partial files for `final_path`: `<name>.<suffix>.partial` in the same folder.
/// Returns how many were removed.
fn remove_partials(final_path: &Path) -> usize {
    let (Some(dir), Some(name)) = (final_path.parent(), final_path.file_name()) else {
        return 0;
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file.starts_with(&prefix) && file.ends_with(".partial") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    info!(path = %entry.path().display(), "removed a stale partial file");
                    removed += 1;
                }
                Err(e) => {
                    warn!(path = %entry.path().display(), error = %e, "cannot remove a stale partial file")
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_the_partials_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let final_path = dir.path().join("clip one.mov");
        for name in [
            "clip one.mov.a1b2c3d4.partial",
            "clip one.mov.ffff.partial",
            "clip one.mov",
            "clip one.mov.txt",
            "other.mov.a1b2.partial",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(remove_partials(&final_path), 2);
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["clip one.mov", "clip one.mov.txt", "other.mov.a1b2.partial"]
        );
    }
}
