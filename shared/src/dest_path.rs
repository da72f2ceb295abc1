//! Destination paths: relative, normalised paths that can never leave the endpoint's root.
//!
//! A rendered path is checked as a whole, and anything that could climb out of the root or confuse
//! the systems reading the target (`..`, absolute paths, NUL and other control characters, names
//! too long for SMB, SFTP or local filesystems) is rejected with a message saying why. Nothing is
//! silently rewritten into another folder.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Longest single path segment, in bytes (the common limit of ext4, NTFS/SMB and most SFTP servers).
pub const MAX_SEGMENT_BYTES: usize = 255;
/// Longest whole path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path {0:?} is absolute; destination paths are relative to the endpoint's root")]
    Absolute(String),
    #[error("path {0:?} contains a '..' segment that would escape the destination root")]
    ParentSegment(String),
    #[error("path {0:?} contains a '.' or empty segment")]
    EmptySegment(String),
    #[error("path {0:?} contains a NUL or control character")]
    ControlCharacter(String),
    #[error("path {path:?} has a segment of {len} bytes (limit {MAX_SEGMENT_BYTES})")]
    SegmentTooLong { path: String, len: usize },
    #[error("path is {0} bytes long (limit {MAX_PATH_BYTES})")]
    TooLong(usize),
    #[error("path {0:?} contains a backslash, which SMB servers treat as a separator")]
    Backslash(String),
}

/// A validated relative destination path, segments joined with `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DestPath(String);

impl DestPath {
    /// Validates `path` strictly: every rule above applies, and empty segments are an error.
    pub fn parse(path: &str) -> Result<Self, PathError> {
        check_relative(path)?;
        for segment in path.split('/') {
            check_segment(path, segment)?;
        }
        Ok(Self(path.to_owned()))
    }

    /// Validates a path assembled by a template: empty segments (left where a placeholder such as
    /// `{dirname}` rendered to nothing) are dropped, every other rule of [`DestPath::parse`] holds.
    pub fn from_rendered(rendered: &str) -> Result<Self, PathError> {
        check_relative(rendered)?;
        let segments: Vec<&str> = rendered.split('/').filter(|s| !s.is_empty()).collect();
        if segments.is_empty() {
            return Err(PathError::Empty);
        }
        let joined = segments.join("/");
        for segment in &segments {
            check_segment(rendered, segment)?;
        }
        Ok(Self(joined))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments of the path, first to last.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

fn check_relative(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong(path.len()));
    }
    if path.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter(path.escape_debug().to_string()));
    }
    if path.starts_with('/') || looks_like_drive(path) {
        return Err(PathError::Absolute(path.to_owned()));
    }
    if path.contains('\\') {
        return Err(PathError::Backslash(path.to_owned()));
    }
    Ok(())
}

/// `C:` and the like are absolute on SMB targets.
fn looks_like_drive(path: &str) -> bool {
    let b = path.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

fn check_segment(path: &str, segment: &str) -> Result<(), PathError> {
    match segment {
        ".." => Err(PathError::ParentSegment(path.to_owned())),
        "" | "." => Err(PathError::EmptySegment(path.to_owned())),
        s if s.len() > MAX_SEGMENT_BYTES => Err(PathError::SegmentTooLong {
            path: path.to_owned(),
            len: s.len(),
        }),
        _ => Ok(()),
    }
}

impl fmt::Display for DestPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DestPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for p in [
            "a",
            "a/b/c.txt",
            "dir/a b+c%.txt",
            "été/🎬.mov",
            "..a/b..",
            ".hidden",
        ] {
            assert_eq!(DestPath::parse(p).unwrap().as_str(), p);
        }
    }

    #[test]
    fn rejects_traversal_in_every_position() {
        for p in ["..", "../x", "a/../../x", "a/..", "a/b/../c"] {
            assert!(
                matches!(DestPath::parse(p), Err(PathError::ParentSegment(_))),
                "{p} was accepted"
            );
            assert!(matches!(
                DestPath::from_rendered(p),
                Err(PathError::ParentSegment(_))
            ));
        }
    }

    #[test]
    fn rejects_absolute_and_drive_paths() {
        for p in ["/etc/passwd", "//server/share", "C:/Windows", "c:x"] {
            assert!(
                matches!(DestPath::parse(p), Err(PathError::Absolute(_))),
                "{p}"
            );
            assert!(matches!(
                DestPath::from_rendered(p),
                Err(PathError::Absolute(_))
            ));
        }
    }

    #[test]
    fn rejects_control_characters_and_backslashes() {
        assert!(matches!(
            DestPath::parse("a\0b"),
            Err(PathError::ControlCharacter(_))
        ));
        assert!(matches!(
            DestPath::parse("a\nb"),
            Err(PathError::ControlCharacter(_))
        ));
        assert!(matches!(
            DestPath::parse("a\u{7f}"),
            Err(PathError::ControlCharacter(_))
        ));
        assert!(matches!(
            DestPath::parse("..\\x"),
            Err(PathError::Backslash(_))
        ));
    }

    #[test]
    fn rejects_long_names() {
        let long = "x".repeat(256);
        assert!(matches!(
            DestPath::parse(&long),
            Err(PathError::SegmentTooLong { len: 256, .. })
        ));
        let deep = vec!["abcdefgh"; 200].join("/");
        assert!(matches!(DestPath::parse(&deep), Err(PathError::TooLong(_))));
    }

    #[test]
    fn strict_parse_refuses_empty_segments_rendered_drops_them() {
        assert!(matches!(
            DestPath::parse("a//b"),
            Err(PathError::EmptySegment(_))
        ));
        assert!(matches!(
            DestPath::parse("a/./b"),
            Err(PathError::EmptySegment(_))
        ));
        assert_eq!(DestPath::from_rendered("a//b").unwrap().as_str(), "a/b");
        assert!(matches!(
            DestPath::from_rendered("a/./b"),
            Err(PathError::EmptySegment(_))
        ));
        assert_eq!(DestPath::from_rendered(""), Err(PathError::Empty));
    }
}
