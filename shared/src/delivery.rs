//! How files are delivered: what happens when the destination already holds the file, and how a
//! delivery is verified. Chosen per template and carried in each job message.

use serde::{Deserialize, Serialize};

/// What to do when the destination path already exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overwrite {
    /// Replace it (atomically: the new file is renamed over the old one when complete).
    #[default]
    Overwrite,
    /// Leave it as it is; the file counts as skipped, not failed.
    SkipExisting,
    /// Succeed without copying when it is identical to the source (by hash), fail the job with a
    /// `conflict` error when it differs.
    FailIfDifferent,
}

impl Overwrite {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overwrite => "overwrite",
            Self::SkipExisting => "skip-existing",
            Self::FailIfDifferent => "fail-if-different",
        }
    }
}

/// How a delivered file is checked before the job counts it as delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verify {
    /// Trust rclone's own checks.
    None,
    /// The delivered file's size must equal the source's.
    #[default]
    Size,
    /// The MD5 of the delivered file, read back from the destination, must equal the source's
    /// (taken from the source's own hash where it has one, else by reading the source). Works
    /// on targets without hashes, such as SMB.
    Hash,
}

impl Verify {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Size => "size",
            Self::Hash => "hash",
        }
    }
}

/// A template's delivery rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    #[serde(default)]
    pub overwrite: Overwrite,
    #[serde(default)]
    pub verify: Verify,
}

/// What happened to one file of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOutcome {
    /// Copied (and verified as the template asks).
    Copied,
    /// Already at the destination with the same content (`fail-if-different`).
    Unchanged,
    /// Already at the destination and left alone (`skip-existing`).
    SkippedExisting,
    /// Not copied: a newer write of the same source key was already delivered.
    Superseded,
    /// A `move` transfer: delivered (or already there, unchanged) and verified, then removed from
    /// the source.
    Moved,
    /// A `sync` transfer: at the destination but no longer at the source, so deleted there.
    Deleted,
    /// A `sync` transfer: at the destination but no longer at the source, so moved to the
    /// transfer's backup folder (its `dest_path` is where it went).
    BackedUp,
    /// A dry run: would be copied.
    WouldCopy,
    /// A dry run of a `sync`: would be deleted (or moved to the backup folder).
    WouldDelete,
}

/// One file of a finished job, as recorded in its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveredFile {
    /// Source key or path.
    pub key: String,
    /// Path under the destination endpoint's root.
    pub dest_path: String,
    pub size: u64,
    /// Lower-case hex MD5 of the delivered content, when it was verified by hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    pub outcome: FileOutcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_use_the_documented_spelling_and_default() {
        let d: Delivery = serde_json::from_str("{}").unwrap();
        assert_eq!(d.overwrite, Overwrite::Overwrite);
        assert_eq!(d.verify, Verify::Size);
        let d: Delivery =
            serde_json::from_str(r#"{"overwrite":"fail-if-different","verify":"hash"}"#).unwrap();
        assert_eq!(d.overwrite, Overwrite::FailIfDifferent);
        assert_eq!(d.verify, Verify::Hash);
        assert_eq!(
            serde_json::to_string(&Overwrite::SkipExisting).unwrap(),
            "\"skip-existing\""
        );
        let e = serde_json::from_str::<Delivery>(r#"{"verify":"sha1"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant `sha1`"), "{e}");
    }
}
