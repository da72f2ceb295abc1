//! Folders on SFTP and SMB endpoints watched by polling (real sshd, samba and rclone), with cloud
//! watch rules: a file written slowly is taken once, after it settled; `after = "move-to"` moves
//! only files that were delivered and verified.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use pbs_e2e::site::Site;
use pbs_e2e::{ExecutorOptions, eventually, unique};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

/// A folder on a server's disk the endpoint's account may write in.
fn open_folder(root: &Path, rel: &str) {
    let dir = root.join(rel);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
}

/// Writes `chunks` to `path` one by one, `gap` apart, as a slow upload does.
fn write_slowly(path: &Path, chunks: &[&str], gap: Duration) {
    let mut file = std::fs::File::create(path).unwrap();
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(gap);
        }
        file.write_all(chunk.as_bytes()).unwrap();
        file.flush().unwrap();
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn sftp_and_smb_folders_are_polled_a_slow_file_is_taken_once_settled_and_only_verified_files_move()
 {
    let site = Site::start(
        "poll",
        ExecutorOptions {
            cloud_extra: "allow_source_removal = true".into(),
            ..Default::default()
        },
    )
    .await;
    let stack = &site.stack;
    let mut rules = Vec::new();
    for (endpoint, root) in [("drop", &site.sftp.root), ("nas", &site.smb.root)] {
        open_folder(root, "in");
        open_folder(root, "done");
        let id = unique(&format!("poll-{endpoint}"));
        stack
            .create_template(&json!({
                "id": id,
                "trigger": {"type": "watch", "source": endpoint, "folder": "in",
                            "stable_seconds": 3, "poll_seconds": 1,
                            "after": "move-to", "archive_folder": "done"},
                "destination": {"pool": site.pool, "endpoint": "disk", "path": format!("{endpoint}/{{key}}")},
                "options": {"delivery": {"verify": "hash"}}
            }))
            .await
            .unwrap();
        rules.push((endpoint, root.clone(), id));
    }
    let executor = &site.executor;
    eventually(WAIT, "both rules polling", || async {
        Ok((executor.log().matches("watching by polling").count() >= 2).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", executor.log()));

    // A file written over four seconds (each pause shorter than stable_seconds), and on the SFTP
    // server one whose name the destination cannot take (a backslash; samba would mangle it): its
    // job fails and the file stays.
    let chunks = ["first part,", " second part,", " third part,", " the end"];
    let whole: String = chunks.concat();
    std::thread::scope(|s| {
        for (_, root, _) in &rules {
            let root = root.clone();
            s.spawn(move || {
                write_slowly(
                    &root.join("in/slow.txt"),
                    &chunks,
                    Duration::from_millis(1300),
                );
            });
        }
    });
    std::fs::write(site.sftp.root.join("in/bad\\name.txt"), "refused").unwrap();

    for (endpoint, root, id) in &rules {
        let landed = executor
            .landed(&format!("{endpoint}/slow.txt"))
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", executor.log()));
        assert_eq!(String::from_utf8(landed).unwrap(), whole, "{endpoint}");
        // Moved once delivered and verified.
        eventually(WAIT, &format!("{endpoint}: slow.txt archived"), || async {
            Ok(names(&root.join("done"))
                .contains(&"slow.txt".to_owned())
                .then_some(()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", executor.log()));
        // The refused file failed and stays where it was.
        let refused = usize::from(*endpoint == "drop");
        let jobs = eventually(WAIT, &format!("{endpoint}: finished jobs"), || async {
            let jobs: Vec<Value> = executor
                .ledger()?
                .into_iter()
                .filter(|j| j["template_id"] == id.as_str())
                .collect();
            let done = jobs
                .iter()
                .filter(|j| matches!(j["state"].as_str(), Some("succeeded" | "failed")))
                .count();
            Ok((done > refused).then_some(jobs))
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", executor.log()));
        let states: Vec<&str> = jobs.iter().filter_map(|j| j["state"].as_str()).collect();
        assert_eq!(
            jobs.len(),
            1 + refused,
            "one job per file, each taken once: {jobs:#?}"
        );
        assert!(states.contains(&"succeeded"), "{jobs:#?}");
        assert_eq!(states.contains(&"failed"), refused == 1, "{jobs:#?}");
        let stays: &[&str] = if refused == 1 {
            &["bad\\name.txt"]
        } else {
            &[]
        };
        assert_eq!(names(&root.join("in")), stays, "{endpoint}");
        assert_eq!(names(&root.join("done")), ["slow.txt"], "{endpoint}");
    }

    // Polls go on; nothing is taken again (each poll costs one listing and finds the same
    // failed file, whose job is in the ledger).
    let before = executor.ledger().unwrap().len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(executor.ledger().unwrap().len(), before);
}
