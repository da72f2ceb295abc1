//! Folder transfers: a job that names a folder of a source endpoint, listed by the executor when
//! the job runs, instead of files named when the job was made. Started by a person
//! (`POST /api/v1/transfers`); the mode says what happens besides copying.

use serde::{Deserialize, Serialize};

use crate::rule_spec::{Filter, relative_folder, yes};
use crate::{Delivery, EndpointName, PoolName, RetryPolicy};

/// The template id of transfers started by hand: a name templates may not take.
pub const TRANSFER_TEMPLATE: &str = "transfer";

/// A transfer between two pools (sites that cannot reach each other): its first step copies the
/// folder into the stack's staging area; when that succeeds, a second step in the destination's
/// pool delivers the staged files here. Kept on the first step's job; never sent to executors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayTo {
    pub pool: PoolName,
    pub endpoint: EndpointName,
    /// Folder under the endpoint's root; files keep their path relative to the source folder.
    #[serde(default)]
    pub folder: String,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default)]
    pub retry: RetryPolicy,
}

/// What a folder transfer does besides copying new and changed files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferMode {
    /// Copy new and changed files; leave everything else as it is.
    #[default]
    Copy,
    /// Make the destination folder mirror the source: also delete (or move to the backup folder)
    /// the files the source no longer has, at most `max_delete` of them.
    Sync,
    /// Copy, then remove each source file whose delivery was verified.
    Move,
}

impl TransferMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Copy => "copy",
            Self::Sync => "sync",
            Self::Move => "move",
        }
    }

    /// Whether the mode removes files (at the destination for `sync`, at the source for `move`).
    pub fn deletes(self) -> bool {
        self != Self::Copy
    }
}

/// A saved transfer: a template of trigger type `manual`, run on demand
/// (`POST /api/v1/templates/{id}/run`). Its destination's `path` is the destination folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualTrigger {
    /// The pool whose executors read the source; default: the destination's. Another pool makes
    /// the transfer a flow of two steps through the staging area (a copy only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_pool: Option<PoolName>,
    pub source: EndpointName,
    #[serde(default)]
    pub folder: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default = "yes")]
    pub recursive: bool,
    #[serde(default)]
    pub mode: TransferMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delete: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_folder: Option<String>,
}

impl ManualTrigger {
    /// The folder transfer of a run to `dest_folder` (the template's destination path).
    pub fn transfer(&self, dest_folder: &str) -> FolderTransfer {
        FolderTransfer {
            folder: self.folder.clone(),
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            recursive: self.recursive,
            dest_folder: dest_folder.to_owned(),
            mode: self.mode,
            max_delete: self.max_delete,
            backup_folder: self.backup_folder.clone(),
            dry_run: false,
        }
        .normalized()
    }

    /// Checks the trigger with its template's destination pool and path (the destination
    /// folder); the failing field (relative to the template) and why.
    pub fn check(&self, (dest_pool, path): (&PoolName, &str)) -> Result<(), (String, String)> {
        if path.contains('{') {
            return Err((
                "destination.path".into(),
                format!(
                    "{path:?}: a saved transfer's path is the destination folder (files keep their path relative to the source folder), without placeholders"
                ),
            ));
        }
        let pool = self.source_pool.as_ref().unwrap_or(dest_pool);
        if pool != dest_pool && self.mode != TransferMode::Copy {
            return Err((
                "trigger.mode".into(),
                format!(
                    "a {} between pools is not offered; copy between pools",
                    self.mode.as_str()
                ),
            ));
        }
        self.transfer(path).check().map_err(|(field, why)| {
            let field = match field {
                "dest_folder" => "destination.path".to_owned(),
                other => format!("trigger.{other}"),
            };
            (field, why)
        })
    }
}

/// A sync deletes at most this many files unless it says otherwise.
pub const DEFAULT_MAX_DELETE: u64 = 100;

/// The folder a transfer job lists when it runs, and what it does with what it finds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderTransfer {
    /// Folder under the source endpoint's root; empty for the root itself.
    #[serde(default)]
    pub folder: String,
    /// Globs on paths relative to `folder`; empty takes every file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Files of sub-folders too (the default), or the folder's own files only.
    #[serde(default = "yes")]
    pub recursive: bool,
    /// Folder under the destination endpoint's root; files keep their path relative to `folder`.
    #[serde(default)]
    pub dest_folder: String,
    #[serde(default)]
    pub mode: TransferMode,
    /// `sync`: the run fails before deleting anything when it would delete more files than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delete: Option<u64>,
    /// `sync`: files the source no longer has are moved here (a folder under the destination's
    /// root, outside `dest_folder`) instead of deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_folder: Option<String>,
    /// List both sides and report what would be copied and deleted; change nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

impl FolderTransfer {
    /// As a run takes it: folders without leading or trailing `/`, and a sync limited to
    /// [`DEFAULT_MAX_DELETE`] deletes unless it says otherwise.
    pub fn normalized(mut self) -> Self {
        self.folder = self.folder.trim_matches('/').to_owned();
        self.dest_folder = self.dest_folder.trim_matches('/').to_owned();
        if self.mode == TransferMode::Sync {
            self.max_delete = Some(self.max_delete.unwrap_or(DEFAULT_MAX_DELETE));
        }
        self
    }

    /// Whether source and destination folders hold one another, which matters when both are on
    /// the same endpoint (a copy into itself).
    pub fn folders_overlap(&self) -> bool {
        within(&self.folder, &self.dest_folder) || within(&self.dest_folder, &self.folder)
    }

    /// Checks folders and filters; the failing field (relative to the transfer) and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        relative_folder(&self.folder).map_err(|m| ("folder", m))?;
        relative_folder(&self.dest_folder).map_err(|m| ("dest_folder", m))?;
        self.filter()?;
        if let Some(backup) = &self.backup_folder {
            if self.mode != TransferMode::Sync {
                return Err((
                    "backup_folder",
                    "only a sync moves files to a backup folder".into(),
                ));
            }
            if backup.is_empty() {
                return Err(("backup_folder", "must name a folder".into()));
            }
            relative_folder(backup).map_err(|m| ("backup_folder", m))?;
            if within(backup, &self.dest_folder) || within(&self.dest_folder, backup) {
                return Err((
                    "backup_folder",
                    format!(
                        "{backup:?} must be outside the destination folder {:?} (and not hold it)",
                        self.dest_folder
                    ),
                ));
            }
        }
        if self.max_delete.is_some() && self.mode != TransferMode::Sync {
            return Err((
                "max_delete",
                "only a sync deletes files at the destination".into(),
            ));
        }
        Ok(())
    }

    pub fn filter(&self) -> Result<Filter, (&'static str, String)> {
        Filter::new(&self.include, &self.exclude)
    }
}

/// Whether `path` is `folder` or under it (the empty folder holds everything).
fn within(path: &str, folder: &str) -> bool {
    folder.is_empty() || path == folder || path.starts_with(&format!("{folder}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(json: serde_json::Value) -> FolderTransfer {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn defaults_copy_every_file_of_the_folder_tree() {
        let t = transfer(serde_json::json!({"folder": "drop"}));
        assert_eq!(t.mode, TransferMode::Copy);
        assert!(t.recursive && !t.dry_run);
        assert_eq!(t.check(), Ok(()));
        assert!(t.filter().unwrap().matches("deep/a.csv"));
    }

    #[test]
    fn folders_and_guards_are_checked_field_by_field() {
        let field = |json| transfer(json).check().unwrap_err().0;
        assert_eq!(field(serde_json::json!({"folder": "../etc"})), "folder");
        assert_eq!(
            field(serde_json::json!({"dest_folder": "/abs"})),
            "dest_folder"
        );
        assert_eq!(field(serde_json::json!({"include": ["a/[b"]})), "include");
        assert_eq!(
            field(serde_json::json!({"mode": "copy", "max_delete": 3})),
            "max_delete"
        );
        assert_eq!(
            field(
                serde_json::json!({"mode": "sync", "dest_folder": "m", "backup_folder": "m/old"})
            ),
            "backup_folder"
        );
        assert_eq!(
            field(serde_json::json!({"mode": "sync", "backup_folder": "old"})),
            "backup_folder",
            "a mirror of the whole root holds every backup folder"
        );
        let ok = transfer(
            serde_json::json!({"mode": "sync", "dest_folder": "mirror", "backup_folder": "old", "max_delete": 0}),
        );
        assert_eq!(ok.check(), Ok(()));
        let e = serde_json::from_value::<FolderTransfer>(serde_json::json!({"mode": "mirror"}))
            .unwrap_err();
        assert!(e.to_string().contains("unknown variant `mirror`"), "{e}");
    }
}
