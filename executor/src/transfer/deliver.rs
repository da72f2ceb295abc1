//! Delivering one file from a source to a destination: the overwrite policy, the copy, and its
//! verification.
//!
//! rclone writes every file to `<name>.<hex>.partial` on local, SMB and SFTP targets and renames
//! it when complete (S3 objects appear only when their upload completes), so the final name is
//! never seen half-written. Verification then reads back what was delivered: its size, and with
//! `verify = "hash"` its MD5, computed from the delivered file itself where the target has no
//! hashes (SMB, SFTP without a shell), compared with the source's. A file that fails the hash
//! check is removed, so that nothing downstream takes it for a good copy.

use std::path::Path;
use std::time::Duration;

use pbs_shared::{Delivery, ErrorClass, FileOutcome, Overwrite, Verify};
use tokio_util::sync::CancellationToken;

use crate::transfer::endpoints::join;
use crate::transfer::endpoints::{Hashes, Side};
use crate::transfer::rclone::{self, Invocation, RunError};

/// Why a delivery did not happen.
#[derive(Debug)]
pub enum Fail {
    Failed {
        class: ErrorClass,
        error: String,
    },
    /// Stopped by shutdown.
    Interrupted,
}

impl Fail {
    fn new(class: ErrorClass, error: impl Into<String>) -> Self {
        Self::Failed {
            class,
            error: error.into(),
        }
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed { error, .. } => f.write_str(error),
            Self::Interrupted => f.write_str("stopped by shutdown"),
        }
    }
}

/// One file of a [`Runner::listing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Relative to the listed folder, `/`-separated.
    pub path: String,
    pub size: u64,
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// Two modification times this close are the same: the coarsest precision of the backends
/// (SFTP and SMB keep seconds).
const MODIFY_WINDOW_MS: i64 = 1000;

impl Listed {
    /// `other` is this file unchanged: the same size, and modification times (both known) within
    /// a second of each other, as rclone decides what a copy skips.
    pub fn same_as(&self, other: &Listed) -> bool {
        let close = match (self.modified, other.modified) {
            (Some(a), Some(b)) => (a - b).num_milliseconds().abs() < MODIFY_WINDOW_MS,
            _ => false,
        };
        self.size == other.size && close
    }
}

/// What was delivered for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub size: u64,
    pub md5: Option<String>,
    pub outcome: FileOutcome,
}

/// One file to deliver.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// Path under the source side's root (an S3 key for the cloud bucket).
    pub source: &'a str,
    /// Path under the destination side's root.
    pub dest: &'a str,
    /// Size when the job was made.
    pub size: u64,
    /// The source's ETag when known (an MD5 for single-part S3 uploads).
    pub etag: Option<&'a str>,
}

/// Runs the rclone steps of one job.
pub struct Runner<'a> {
    pub rclone: &'a Path,
    pub home: &'a Path,
    pub log: &'a Path,
    pub secrets: Vec<String>,
    pub bandwidth_limit: Option<&'a str>,
    pub abort: &'a CancellationToken,
}

impl Runner<'_> {
    /// Runs `inv`; a non-zero exit becomes a classified failure prefixed with `context`. Returns
    /// the exit code and standard output when `tolerate` accepts the code.
    async fn exec(
        &self,
        inv: &Invocation,
        context: &str,
        tolerate: &[i32],
    ) -> Result<(i32, Vec<u8>), Fail> {
        let rt = rclone::Runtime {
            rclone: self.rclone,
            home: self.home,
            log: self.log,
            secrets: &self.secrets,
            cancel: self.abort,
            kill_after: Duration::from_secs(10),
        };
        rclone::run_checked(&rt, inv, tolerate)
            .await
            .map_err(|e| match e {
                RunError::Spawn(m) => Fail::new(ErrorClass::Internal, m),
                RunError::Cancelled => Fail::Interrupted,
                RunError::Exit { code, message } => Fail::new(
                    rclone::classify(code, &message),
                    format!("{context}: {message}"),
                ),
            })
    }

    /// The size of `rel` on `side`, or `None` when it does not exist.
    pub async fn stat(&self, side: &Side, rel: &str) -> Result<Option<u64>, Fail> {
        if let Some(file) = side.local_file(rel) {
            return match std::fs::metadata(&file) {
                Ok(m) if m.is_file() => Ok(Some(m.len())),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Fail::new(
                    ErrorClass::Retryable,
                    format!("{}: cannot check the file: {e}", side.display(rel)),
                )),
            };
        }
        let inv = Invocation::new("lsjson", self.log)
            .args(["--stat", "--files-only"])
            .arg(side.spec(rel))
            .remote(&side.remote);
        let (code, out) = self.exec(&inv, &side.display(rel), &[3, 4]).await?;
        if code != 0 {
            return Ok(None);
        }
        let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
            Fail::new(
                ErrorClass::Internal,
                format!("{}: unreadable listing from rclone: {e}", side.display(rel)),
            )
        })?;
        Ok(v["Size"].as_u64())
    }

    /// The MD5 of `rel` on `side`: from the side's own hashes where it has them, else by reading
    /// the file. `etag` is used for S3 sources when it is a plain MD5 (single-part upload).
    pub async fn md5(&self, side: &Side, rel: &str, etag: Option<&str>) -> Result<String, Fail> {
        if let Some(md5) = etag.and_then(etag_md5) {
            return Ok(md5);
        }
        let native = side.hashes == Hashes::Native;
        if native && let Some(h) = self.hashsum(side, rel, false).await? {
            return Ok(h);
        }
        // No hash on the backend (SMB, SFTP without a shell) or none stored for this object
        // (an S3 multipart upload): read the file.
        self.hashsum(side, rel, true).await?.ok_or_else(|| {
            Fail::new(
                ErrorClass::Retryable,
                format!("{}: rclone returned no MD5", side.display(rel)),
            )
        })
    }

    async fn hashsum(
        &self,
        side: &Side,
        rel: &str,
        download: bool,
    ) -> Result<Option<String>, Fail> {
        let mut inv = Invocation::new("hashsum", self.log).arg("md5");
        if download {
            inv = inv.arg("--download");
        }
        let inv = inv.arg(side.spec(rel)).remote(&side.remote);
        let context = format!("{}: hashing", side.display(rel));
        let (_, out) = self.exec(&inv, &context, &[]).await?;
        let text = String::from_utf8_lossy(&out);
        let hash = text.split_whitespace().next().unwrap_or_default();
        Ok(
            (hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| hash.to_ascii_lowercase()),
        )
    }

    /// Removes `rel` from `side`.
    pub async fn delete(&self, side: &Side, rel: &str) -> Result<(), Fail> {
        let inv = Invocation::new("deletefile", self.log)
            .arg(side.spec(rel))
            .remote(&side.remote);
        self.exec(&inv, &format!("{}: deleting", side.display(rel)), &[])
            .await
            .map(drop)
    }

    /// Moves `from` to `to` on `side` (a rename where the backend has one).
    pub async fn move_file(&self, side: &Side, from: &str, to: &str) -> Result<(), Fail> {
        let inv = Invocation::new("moveto", self.log)
            .arg(side.spec(from))
            .arg(side.spec(to))
            .remote(&side.remote);
        let context = format!("{}: moving to {to}", side.display(from));
        self.exec(&inv, &context, &[]).await.map(drop)
    }

    /// The files under `folder` on `side`, with paths relative to it (`None`: the folder does not
    /// exist); rclone lists no symbolic link of a local folder. rclone writes the
    /// listing to a file under the state folder and it is read back in a stream, so a folder of a
    /// million files costs the executor its paths and sizes, not rclone's JSON of them.
    pub async fn listing(
        &self,
        side: &Side,
        folder: &str,
        recursive: bool,
    ) -> Result<Option<Vec<Listed>>, Fail> {
        let context = format!("listing {}", side.display(folder));
        let spool = Spool::new(self.home).map_err(|e| {
            Fail::new(
                ErrorClass::Retryable,
                format!("{context}: cannot write the listing under the state folder: {e}"),
            )
        })?;
        let inv = Invocation::new("lsjson", self.log)
            .args(["--files-only", "--no-mimetype"])
            .arg(if recursive {
                "--recursive"
            } else {
                "--max-depth=1"
            })
            .arg(side.spec(folder))
            .remote(&side.remote)
            .stdout_to(&spool.0);
        // 3: the directory does not exist.
        let (code, _) = self.exec(&inv, &context, &[3]).await?;
        if code == 3 {
            return Ok(None);
        }
        let read = tokio::task::spawn_blocking(move || read_listing(&spool.0)).await;
        match read {
            Ok(Ok(listed)) => Ok(Some(listed)),
            Ok(Err(e)) => Err(Fail::new(
                ErrorClass::Internal,
                format!("{context}: unreadable output from rclone: {e}"),
            )),
            Err(e) => Err(Fail::new(ErrorClass::Internal, format!("{context}: {e}"))),
        }
    }

    /// Delivers one file by the template's rules.
    pub async fn deliver(
        &self,
        src: &Side,
        dst: &Side,
        item: Item<'_>,
        rules: Delivery,
    ) -> Result<Delivered, Fail> {
        let (from, to) = (src.display(item.source), dst.display(item.dest));
        if rules.overwrite != Overwrite::Overwrite
            && let Some(delivered) = self.already_there(src, dst, item, rules.overwrite).await?
        {
            return Ok(delivered);
        }
        let mut copy = rclone::copy_file(
            &src.remote,
            &src.path(item.source),
            &dst.remote,
            &dst.path(item.dest),
            self.log,
            self.bandwidth_limit,
        );
        if rules.overwrite != Overwrite::Overwrite {
            // Something written there since the check above is not replaced either.
            copy = copy.arg("--ignore-existing");
        }
        let name = item.source.rsplit('/').next().unwrap_or(item.source);
        let checked = self
            .copy_checked(copy, &format!("{from} -> {to}"), rules.verify)
            .await?
            .remove(name);
        self.verify(src, dst, item, rules.verify, checked).await
    }

    /// Runs a copy. With `verify = "hash"` it runs at debug level, and rclone's own check after
    /// each file is read from its log: the MD5s found equal on both sides (the destination's
    /// taken as the bytes landed), by path under the copy's source folder; else none.
    async fn copy_checked(
        &self,
        copy: Invocation,
        context: &str,
        verify: Verify,
    ) -> Result<std::collections::HashMap<String, String>, Fail> {
        if verify != Verify::Hash {
            return self
                .exec(&copy, context, &[])
                .await
                .map(|_| Default::default());
        }
        let offset = rclone::log_offset(self.log);
        let copied = self.exec(&copy.debug_log(), context, &[]).await;
        // Read (and its debug lines dropped) whether or not the copy succeeded.
        let checks = rclone::take_md5_checks(self.log, offset);
        copied.map(|_| checks)
    }

    /// Under `skip-existing` or `fail-if-different`, what a file already at the destination
    /// means: `Some` when nothing is to be copied, a conflict when it differs.
    async fn already_there(
        &self,
        src: &Side,
        dst: &Side,
        item: Item<'_>,
        policy: Overwrite,
    ) -> Result<Option<Delivered>, Fail> {
        let Some(size) = self.stat(dst, item.dest).await? else {
            return Ok(None);
        };
        if policy == Overwrite::SkipExisting {
            return Ok(Some(Delivered {
                size,
                md5: None,
                outcome: FileOutcome::SkippedExisting,
            }));
        }
        let theirs = self.md5(dst, item.dest, None).await?;
        let ours = self.md5(src, item.source, item.etag).await?;
        if theirs == ours {
            return Ok(Some(Delivered {
                size,
                md5: Some(ours),
                outcome: FileOutcome::Unchanged,
            }));
        }
        let (from, to) = (src.display(item.source), dst.display(item.dest));
        Err(Fail::new(
            ErrorClass::Conflict,
            format!(
                "{to} already exists and differs from {from} (MD5 {theirs}, source {ours}); \
                 the template's overwrite policy is fail-if-different"
            ),
        ))
    }

    /// Checks a file just copied: present, of the source's size, and with `verify = "hash"` of
    /// its MD5 (a file that differs is removed). `checked`: the MD5 rclone found equal on both
    /// sides as it copied; neither side is read again for it, unless the file was announced
    /// with another MD5.
    async fn verify(
        &self,
        src: &Side,
        dst: &Side,
        item: Item<'_>,
        verify: Verify,
        checked: Option<String>,
    ) -> Result<Delivered, Fail> {
        let (from, to) = (src.display(item.source), dst.display(item.dest));
        // rclone exits 0 when an S3 source is missing: it copied nothing.
        let Some(size) = self.stat(dst, item.dest).await? else {
            return Err(Fail::new(
                ErrorClass::NotFound,
                source_not_found(&from, &to),
            ));
        };
        if verify != Verify::None && size != item.size {
            // The source may have been replaced since the job was made: what counts is that the
            // delivered file matches the source as it is now.
            let now = self.stat(src, item.source).await?;
            if now != Some(size) {
                return Err(Fail::new(
                    ErrorClass::Integrity,
                    format!(
                        "{to}: {size} bytes delivered, but {from} has {}",
                        now.map_or("no file".to_owned(), |n| format!("{n} bytes"))
                    ),
                ));
            }
        }
        let md5 = match verify {
            Verify::Hash => {
                let etag = (size == item.size).then_some(item.etag).flatten();
                // rclone's check vouches for both ends: the source's MD5 of what it read, and
                // the destination's of what landed. A file announced with an MD5 (its event's
                // ETag) must match that; one without takes the check's instead of a second read
                // of the source.
                let ours = match (etag.and_then(etag_md5), &checked) {
                    (Some(announced), _) => announced,
                    (None, Some(md5)) => md5.clone(),
                    (None, None) => self.md5(src, item.source, None).await?,
                };
                let delivered = match checked {
                    Some(md5) if md5 == ours => md5,
                    _ => self.md5(dst, item.dest, None).await?,
                };
                if ours != delivered {
                    let removed = match self.delete(dst, item.dest).await {
                        Ok(()) => "the delivered file was removed".to_owned(),
                        Err(Fail::Failed { error, .. }) => {
                            format!("the delivered file could not be removed: {error}")
                        }
                        Err(Fail::Interrupted) => return Err(Fail::Interrupted),
                    };
                    return Err(Fail::new(
                        ErrorClass::Integrity,
                        format!(
                            "{to}: MD5 of the delivered file is {delivered}, but {from} has {ours}; {removed}"
                        ),
                    ));
                }
                Some(delivered)
            }
            Verify::Size | Verify::None => None,
        };
        Ok(Delivered {
            size,
            md5,
            outcome: FileOutcome::Copied,
        })
    }
}

/// For a job of several files that keep the same relative path under one folder on each side
/// (`src_dir/rel` → `dst_dir/rel`, as schedules and folder copies make them): the two folders and
/// each file's relative path. Such a job is copied by one rclone process.
pub fn common_folders(items: &[Item<'_>]) -> Option<(String, String, Vec<String>)> {
    fn split(path: &str, rel_segments: usize) -> (&str, &str) {
        let segs: Vec<&str> = path.split('/').collect();
        let cut = segs.len() - rel_segments;
        let dir_len: usize = segs[..cut].iter().map(|s| s.len() + 1).sum();
        if cut == 0 {
            ("", path)
        } else {
            (&path[..dir_len - 1], &path[dir_len..])
        }
    }
    let first = items.first()?;
    // The relative part: the longest common tail of the source and destination paths.
    let common = first
        .source
        .rsplit('/')
        .zip(first.dest.rsplit('/'))
        .take_while(|(a, b)| a == b)
        .count();
    if common == 0 {
        return None;
    }
    let (src_dir, _) = split(first.source, common);
    let (dst_dir, _) = split(first.dest, common);
    let mut rels = Vec::with_capacity(items.len());
    for item in items {
        let rel = match (
            item.source.strip_prefix(src_dir),
            item.dest.strip_prefix(dst_dir),
        ) {
            (Some(a), Some(b)) if a.trim_start_matches('/') == b.trim_start_matches('/') => {
                a.trim_start_matches('/')
            }
            _ => return None,
        };
        if rel.is_empty()
            || rel.contains(['\n', '\r'])
            || (!src_dir.is_empty() && !item.source[src_dir.len()..].starts_with('/'))
            || (!dst_dir.is_empty() && !item.dest[dst_dir.len()..].starts_with('/'))
        {
            return None;
        }
        rels.push(rel.to_owned());
    }
    Some((src_dir.to_owned(), dst_dir.to_owned(), rels))
}

/// `md5  path` lines of `rclone hashsum` as a map.
fn hash_lines(out: &[u8]) -> std::collections::HashMap<String, String> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.split_once("  "))
        .filter(|(h, _)| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|(h, p)| (p.to_owned(), h.to_ascii_lowercase()))
        .collect()
}

impl Runner<'_> {
    /// Sizes of `rels` under `dir` of `side` (missing files absent), in one listing.
    async fn sizes(
        &self,
        side: &Side,
        dir: &str,
        list: &Path,
        rels: &[String],
    ) -> Result<std::collections::HashMap<String, u64>, Fail> {
        if side.local_root.is_some() {
            let mut out = std::collections::HashMap::new();
            for rel in rels {
                if let Some(size) = self.stat(side, &join(dir, rel)).await? {
                    out.insert(rel.clone(), size);
                }
            }
            return Ok(out);
        }
        let inv = Invocation::new("lsjson", self.log)
            .args([
                "--files-only",
                "--recursive",
                "--no-mimetype",
                "--no-modtime",
            ])
            .arg("--files-from-raw")
            .arg(list.to_string_lossy())
            .arg(side.spec(dir))
            .remote(&side.remote);
        let (_, out) = self.exec(&inv, &side.display(dir), &[]).await?;
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&out).map_err(|e| {
            Fail::new(
                ErrorClass::Internal,
                format!("{}: unreadable listing from rclone: {e}", side.display(dir)),
            )
        })?;
        Ok(entries
            .iter()
            .filter_map(|e| Some((e["Path"].as_str()?.to_owned(), e["Size"].as_u64()?)))
            .collect())
    }

    /// MD5s of the files of `list` under `dir` of `side`, reading the files where the side has
    /// no hash for them.
    async fn md5s(
        &self,
        side: &Side,
        dir: &str,
        list: &Path,
        rels: &[String],
    ) -> Result<std::collections::HashMap<String, String>, Fail> {
        let hashsum = |download: bool, list: &Path| {
            let mut inv = Invocation::new("hashsum", self.log).arg("md5");
            if download {
                inv = inv.arg("--download");
            }
            inv.arg("--files-from-raw")
                .arg(list.to_string_lossy())
                .arg(side.spec(dir))
                .remote(&side.remote)
        };
        let context = format!("{}: hashing", side.display(dir));
        let mut hashes = if side.hashes == Hashes::Native {
            hash_lines(&self.exec(&hashsum(false, list), &context, &[]).await?.1)
        } else {
            Default::default()
        };
        let rest: Vec<&String> = rels.iter().filter(|r| !hashes.contains_key(*r)).collect();
        if !rest.is_empty() {
            let rest_list = list.with_extension("rehash");
            write_list(&rest_list, rest.iter().map(|r| r.as_str()))?;
            hashes.extend(hash_lines(
                &self
                    .exec(&hashsum(true, &rest_list), &context, &[])
                    .await?
                    .1,
            ));
            let _ = std::fs::remove_file(&rest_list);
        }
        Ok(hashes)
    }

    /// Delivers several files that keep their relative paths (`src_dir/rel` → `dst_dir/rel`)
    /// with one `rclone copy --files-from-raw`, then verifies each as [`Runner::deliver`] does,
    /// with a result per file: a file missing at the source or failing verification fails alone
    /// (a file failing the hash check is removed). For the `overwrite` policy only (the others
    /// check each file before copying it). Fails as a whole only when the copy or a listing does.
    pub async fn deliver_each(
        &self,
        src: &Side,
        dst: &Side,
        (src_dir, dst_dir, rels): (&str, &str, &[String]),
        (expected, etags): (&[u64], &[Option<&str>]),
        rules: Delivery,
    ) -> Result<Vec<Checked>, Fail> {
        let list = self.log.with_extension("files");
        write_list(&list, rels.iter().map(String::as_str))?;
        let copied = self
            .copy_listed(
                src,
                dst,
                (src_dir, dst_dir),
                (&list, rels.len()),
                rules.verify,
            )
            .await?;
        // `--files-from` skips names missing at the source without a word: check every file.
        let sizes = self.sizes(dst, dst_dir, &list, rels).await?;
        let mut checked: Vec<Option<Checked>> = rels
            .iter()
            .map(|r| (!sizes.contains_key(r)).then_some(Checked::Missing))
            .collect();
        let folders = (src_dir, dst_dir);
        if rules.verify != Verify::None {
            self.check_sizes(
                (src, dst),
                folders,
                (rels, expected),
                &sizes,
                &list,
                &mut checked,
            )
            .await?;
        }
        let hashes = if rules.verify == Verify::Hash {
            // A file whose MD5 rclone checked on both ends as it copied needs no second read,
            // if it landed whole and, when its event announced an MD5 (the ETag), is that one.
            let proven = rels
                .iter()
                .zip(expected.iter().zip(etags))
                .filter_map(|(r, (size, etag))| {
                    let md5 = copied.get(r)?;
                    let announced = etag.and_then(etag_md5);
                    (sizes.get(r) == Some(size) && announced.is_none_or(|a| a == *md5))
                        .then(|| (r.clone(), md5.clone()))
                })
                .collect();
            Some(
                self.check_hashes((src, dst), folders, (rels, proven), &list, &mut checked)
                    .await?,
            )
        } else {
            None
        };
        let _ = std::fs::remove_file(&list);
        Ok(rels
            .iter()
            .zip(checked)
            .map(|(r, c)| {
                c.unwrap_or_else(|| {
                    Checked::Delivered(Delivered {
                        size: sizes[r],
                        md5: hashes.as_ref().and_then(|h| h.get(r).cloned()),
                        outcome: FileOutcome::Copied,
                    })
                })
            })
            .collect())
    }

    /// `rclone copy --files-from-raw list` from `src_dir` to `dst_dir`. With `verify = "hash"`,
    /// returns the MD5s rclone checked on both sides as it copied, by path under `src_dir`.
    async fn copy_listed(
        &self,
        src: &Side,
        dst: &Side,
        (src_dir, dst_dir): (&str, &str),
        (list, files): (&Path, usize),
        verify: Verify,
    ) -> Result<std::collections::HashMap<String, String>, Fail> {
        let (from, to) = (src.display(src_dir), dst.display(dst_dir));
        let mut copy = Invocation::new("copy", self.log)
            .arg(src.spec(src_dir))
            .arg(dst.spec(dst_dir))
            .arg("--files-from-raw")
            .arg(list.to_string_lossy())
            .arg("--no-traverse")
            .remote(&src.remote)
            .remote(&dst.remote);
        // Many small files: each costs a few round trips and little bandwidth, so more of them
        // in flight (rclone's defaults are 4 transfers and 8 checkers).
        if files >= 64 {
            copy = copy.args(["--transfers", "16", "--checkers", "16"]);
        }
        if let Some(limit) = self.bandwidth_limit {
            copy = copy.args(["--bwlimit", limit]);
        }
        self.copy_checked(copy, &format!("{from} -> {to}"), verify)
            .await
    }

    /// Marks files whose delivered size is not the expected one and not the source's now.
    async fn check_sizes(
        &self,
        (src, dst): (&Side, &Side),
        (src_dir, dst_dir): (&str, &str),
        (rels, expected): (&[String], &[u64]),
        sizes: &std::collections::HashMap<String, u64>,
        list: &Path,
        checked: &mut [Option<Checked>],
    ) -> Result<(), Fail> {
        let differs = |(r, size): (&String, &u64)| sizes.get(r).is_some_and(|s| s != size);
        if !rels.iter().zip(expected).any(differs) {
            return Ok(());
        }
        // The sources may have changed since the jobs were made: compare with them now.
        let now = self.sizes(src, src_dir, list, rels).await?;
        for (i, (r, size)) in rels.iter().zip(expected).enumerate() {
            let Some(got) = sizes.get(r) else { continue };
            if got != size && now.get(r) != Some(got) {
                checked[i] = Some(Checked::Mismatch(format!(
                    "{}: {got} bytes delivered, but {} has {}",
                    dst.display(&join(dst_dir, r)),
                    src.display(&join(src_dir, r)),
                    now.get(r)
                        .map_or("no file".into(), |n| format!("{n} bytes"))
                )));
            }
        }
        Ok(())
    }

    /// Compares the MD5s of the files still unmarked on both sides, but for those `proven` (the
    /// same MD5 on both, by rclone's check as it copied); a file that differs (or has no hash on
    /// a side) is removed and marked. Returns the delivered files' MD5s.
    async fn check_hashes(
        &self,
        (src, dst): (&Side, &Side),
        (src_dir, dst_dir): (&str, &str),
        (rels, proven): (&[String], std::collections::HashMap<String, String>),
        list: &Path,
        checked: &mut [Option<Checked>],
    ) -> Result<std::collections::HashMap<String, String>, Fail> {
        let present: Vec<String> = rels
            .iter()
            .zip(checked.iter())
            .filter(|(r, c)| c.is_none() && !proven.contains_key(*r))
            .map(|(r, _)| r.clone())
            .collect();
        let (mut ours, mut theirs) = Default::default();
        if !present.is_empty() {
            let present_list = list.with_extension("present");
            write_list(&present_list, present.iter().map(String::as_str))?;
            ours = self.md5s(src, src_dir, &present_list, &present).await?;
            theirs = self.md5s(dst, dst_dir, &present_list, &present).await?;
            let _ = std::fs::remove_file(&present_list);
        }
        ours.extend(proven.clone());
        theirs.extend(proven);
        for (i, r) in rels.iter().enumerate() {
            if checked[i].is_some() {
                continue;
            }
            // A file without a hash on either side counts as a mismatch, never as a match.
            if !matches!((ours.get(r), theirs.get(r)), (Some(a), Some(b)) if a == b) {
                if let Err(Fail::Interrupted) = self.delete(dst, &join(dst_dir, r)).await {
                    return Err(Fail::Interrupted);
                }
                checked[i] = Some(Checked::Mismatch(format!(
                    "{} differs from {} by MD5 and was removed",
                    dst.display(&join(dst_dir, r)),
                    src.display(&join(src_dir, r))
                )));
            }
        }
        Ok(theirs)
    }
}

/// One file's result in a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    Delivered(Delivered),
    /// Not at the destination after the copy: the source was not found.
    Missing,
    /// Delivered but not what the source holds (why).
    Mismatch(String),
    /// Not delivered: its copy or a check before it failed.
    Failed {
        class: ErrorClass,
        error: String,
    },
}

/// The error of a file whose source is gone.
pub fn source_not_found(from: &str, to: &str) -> String {
    format!("{from}: source not found; nothing was delivered to {to}")
}

/// The error of files missing after a batch copy.
pub fn not_delivered(missing: &[&str], of: usize, from: &str, to: &str) -> String {
    format!(
        "{} of {of} file(s) not delivered to {to} (not found at {from}): {}",
        missing.len(),
        missing
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The error of files failing verification after a batch copy.
pub fn mismatched(why: &[&str]) -> String {
    match why {
        [one] => (*one).to_owned(),
        _ => format!(
            "{} file(s) failed verification: {}",
            why.len(),
            why.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
        ),
    }
}

fn write_list<'a>(path: &Path, rels: impl Iterator<Item = &'a str>) -> Result<(), Fail> {
    let mut text = String::new();
    for r in rels {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| {
        Fail::new(
            ErrorClass::Internal,
            format!("cannot write the file list {}: {e}", path.display()),
        )
    })
}

/// A file under `<state>/listings` that is removed when dropped.
struct Spool(std::path::PathBuf);

impl Spool {
    fn new(home: &Path) -> std::io::Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = home.join("listings");
        std::fs::create_dir_all(&dir)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mine = format!("{}-", std::process::id());
        if n == 0 {
            clear_stale(&dir, &mine)?;
        }
        Ok(Self(dir.join(format!("{mine}{n}.json"))))
    }
}

/// Removes the listings under `dir` whose names do not begin with `mine`: what an earlier run of
/// the executor left when it was killed mid-listing.
fn clear_stale(dir: &Path, mine: &str) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(mine) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reads `rclone lsjson` output one entry at a time. An entry without a known size (`-1`) is not
/// a file that can be copied and is left out.
fn read_listing(file: &Path) -> Result<Vec<Listed>, serde_json::Error> {
    use serde::Deserialize;
    use serde::de::{Deserializer, SeqAccess, Visitor};

    #[derive(Deserialize)]
    struct Entry {
        #[serde(rename = "Path")]
        path: String,
        #[serde(rename = "Size")]
        size: i64,
        #[serde(rename = "ModTime", default)]
        modified: Option<chrono::DateTime<chrono::FixedOffset>>,
    }
    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<Listed>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array of listed files")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(e) = seq.next_element::<Entry>()? {
                if let Ok(size) = u64::try_from(e.size) {
                    out.push(Listed {
                        path: e.path,
                        size,
                        modified: e.modified.map(|t| t.with_timezone(&chrono::Utc)),
                    });
                }
            }
            Ok(out)
        }
    }
    let f = std::fs::File::open(file).map_err(serde_json::Error::io)?;
    let mut de =
        serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(1 << 16, f));
    let listed = (&mut de).deserialize_seq(Entries)?;
    de.end()?;
    Ok(listed)
}

/// The MD5 in an S3 ETag: present only for single-part uploads (multipart ETags end in `-N`).
fn etag_md5(etag: &str) -> Option<String> {
    let e = etag.trim_matches('"');
    (e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit())).then(|| e.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item<'a>(source: &'a str, dest: &'a str) -> Item<'a> {
        Item {
            source,
            dest,
            size: 1,
            etag: None,
        }
    }

    #[test]
    fn a_listing_is_read_entry_by_entry_and_files_without_a_size_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("l.json");
        std::fs::write(
            &file,
            "[\n{\"Path\":\"a b/\\u00e9.txt\",\"Name\":\"\\u00e9.txt\",\"Size\":3,\"ModTime\":\"2026-11-30T10:00:00.5+01:00\",\"IsDir\":false},\n\
             {\"Path\":\"doc\",\"Size\":-1,\"ModTime\":\"2026-11-30T10:00:00Z\"},\n\
             {\"Path\":\"nodate\",\"Size\":0}\n]\n",
        )
        .unwrap();
        let listed = read_listing(&file).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            (listed[0].path.as_str(), listed[0].size),
            ("a b/\u{e9}.txt", 3)
        );
        assert_eq!(
            listed[0].modified.unwrap().to_rfc3339(),
            "2026-11-30T09:00:00.500+00:00"
        );
        assert_eq!(
            (listed[1].path.as_str(), listed[1].modified),
            ("nodate", None)
        );
        std::fs::write(&file, "[{\"Path\":\"a\",\"Size\":1},").unwrap();
        assert!(
            read_listing(&file).is_err(),
            "a cut-off listing is an error, not fewer files"
        );
        std::fs::write(&file, "[] trailing").unwrap();
        assert!(read_listing(&file).is_err());
    }

    #[test]
    fn listings_left_by_an_earlier_run_are_removed_and_this_runs_kept() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["41-0.json", "41-7.json", "42-0.json"] {
            std::fs::write(dir.path().join(name), "[]").unwrap();
        }
        clear_stale(dir.path(), "42-").unwrap();
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["42-0.json"]);
    }

    #[test]
    fn files_keeping_their_relative_paths_share_one_copy() {
        let items = [
            item("nightly/a.txt", "backup/2026/a.txt"),
            item("nightly/deep/b c.txt", "backup/2026/deep/b c.txt"),
        ];
        let (src, dst, rels) = common_folders(&items).unwrap();
        assert_eq!((src.as_str(), dst.as_str()), ("nightly", "backup/2026"));
        assert_eq!(rels, ["a.txt", "deep/b c.txt"]);
        let (src, dst, rels) =
            common_folders(&[item("a.txt", "a.txt"), item("x/b.txt", "x/b.txt")]).unwrap();
        assert_eq!((src.as_str(), dst.as_str()), ("", ""));
        assert_eq!(rels, ["a.txt", "x/b.txt"]);
        let (src, dst, _) = common_folders(&[
            item("set/a.txt", "to/set/a.txt"),
            item("set/b.txt", "to/set/b.txt"),
        ])
        .unwrap();
        assert_eq!((src.as_str(), dst.as_str()), ("", "to"));
        // Renamed files, or paths that do not share the folders, are copied one by one.
        assert!(common_folders(&[item("in/a.txt", "out/b.txt")]).is_none());
        assert!(
            common_folders(&[
                item("in/a.txt", "out/a.txt"),
                item("other/b.txt", "out/b.txt")
            ])
            .is_none()
        );
        assert!(
            common_folders(&[
                item("in/a.txt", "out/a.txt"),
                item("inx/b.txt", "outx/b.txt")
            ])
            .is_none()
        );
    }

    #[test]
    fn hashsum_lines_are_read_by_path() {
        let h = hash_lines(
            b"d2ba2c4075e409757ed2e77bd94d1225  sub/big file.bin\n                                  empty\nnot a hash line\n",
        );
        assert_eq!(h.len(), 1);
        assert_eq!(h["sub/big file.bin"], "d2ba2c4075e409757ed2e77bd94d1225");
    }

    #[test]
    fn only_single_part_etags_are_md5s() {
        assert_eq!(
            etag_md5("\"D2BA2C4075E409757ED2E77BD94D1225\"").as_deref(),
            Some("d2ba2c4075e409757ed2e77bd94d1225")
        );
        assert_eq!(etag_md5("d2ba2c4075e409757ed2e77bd94d1225-3"), None);
        assert_eq!(etag_md5(""), None);
    }
}
