//! No link leads out of a root: under a local endpoint's root, no file read, written, moved or
//! deleted may have a symbolic link on its path, since a link can point anywhere on the machine
//! (a watch folder linked to `/etc`, a destination folder linked into another share). rclone
//! itself never follows links (it runs without `--links` or `--copy-links`), but it opens the
//! paths it is given through the folders on them, so each path is checked here first.
//!
//! The root itself may be a link: the operator chose it.

use std::path::{Path, PathBuf};

/// The first component of `rel` (a `/`-separated path under `root`) that is a symbolic link, if
/// any. The walk ends at the first component that does not exist: nothing below it can be a
/// link yet.
pub fn link_on_path(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut at = root.to_path_buf();
    for part in rel.split('/').filter(|p| !p.is_empty() && *p != ".") {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => return Some(at),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Why `rel` under `root` may not be touched (`None`: it may), in words for a job's story.
pub fn refusal(root: &Path, rel: &str) -> Option<String> {
    let link = link_on_path(root, rel)?;
    let shown = link
        .strip_prefix(root)
        .unwrap_or(&link)
        .display()
        .to_string();
    Some(if shown == rel.trim_matches('/') {
        format!("{rel} is a symbolic link; links are never followed out of an endpoint's root")
    } else {
        format!(
            "{rel}: the folder {shown} on its path is a symbolic link; links are never followed out of an endpoint's root"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_anywhere_on_the_path_is_found_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "x").unwrap();
        std::fs::write(root.join("real/sub/file"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("real/out")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("real/file-link")).unwrap();

        assert_eq!(link_on_path(&root, "real/sub/file"), None);
        assert_eq!(link_on_path(&root, "real/sub/not-yet/new"), None);
        assert_eq!(
            link_on_path(&root, "real/out/secret"),
            Some(root.join("real/out"))
        );
        let why = refusal(&root, "real/out/secret").unwrap();
        assert!(
            why.contains("the folder real/out on its path is a symbolic link"),
            "{why}"
        );
        let why = refusal(&root, "real/file-link").unwrap();
        assert!(
            why.starts_with("real/file-link is a symbolic link"),
            "{why}"
        );
        // The root itself may be a link.
        let linked_root = dir.path().join("linked-root");
        std::os::unix::fs::symlink(&root, &linked_root).unwrap();
        assert_eq!(link_on_path(&linked_root, "real/sub/file"), None);
    }
}
