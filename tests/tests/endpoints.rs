//! SMB, SFTP, S3 and local endpoints against real servers: Samba's smbd and OpenSSH's sshd on
//! 127.0.0.1 (started per test by `pbs_e2e::servers`), the emulator's S3, and real rclone.
//!
//! Routes: S3→SMB, S3→SFTP, S3→local (S3 events through the trigger), and SFTP→SMB, local→S3,
//! SMB→S3, local→SFTP (jobs sent to the pool's queue as manual jobs arrive). Also: final names
//! never seen before the file is complete, hash verification that catches an altered file,
//! passwords that never leave the executor, and fast classified failures.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pbs_e2e::browser::Browser;
use pbs_e2e::site::Site;
use pbs_e2e::{ExecutorOptions, body, eventually, unique};
use serde_json::{Value, json};

const MIB: usize = 1024 * 1024;

/// A tree with a 100 MiB file, names with spaces and non-ASCII characters, and nested folders.
fn tree() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("big file.bin", body(100 * MIB, 7)),
        (
            "dossier été/naïve café.txt",
            "crème brûlée\n".repeat(500).into_bytes(),
        ),
        ("nested/deeper/日本語 ファイル.txt", body(10_000, 8)),
        ("a b/c d/e f.dat", body(MIB, 9)),
    ]
}

fn write_tree(root: &Path, files: &[(&str, Vec<u8>)]) {
    for (rel, data) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
    }
}

fn assert_same(what: &str, got: Option<Vec<u8>>, want: &[u8]) {
    match got {
        Some(g) if g == want => {}
        Some(g) => panic!(
            "{what}: {} bytes delivered, {} expected, or different content",
            g.len(),
            want.len()
        ),
        None => panic!("{what}: not delivered"),
    }
}

fn sizes<'a>(files: &'a [(&'a str, Vec<u8>)]) -> Vec<(&'a str, u64)> {
    files.iter().map(|(r, d)| (*r, d.len() as u64)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_objects_reach_smb_sftp_and_local_byte_identical_with_their_hashes() {
    let site = Site::start("s3-routes", ExecutorOptions::default()).await;
    let prefix = unique("tree");
    let templates = [
        (site.template(&prefix, "nas", "s3/{key}").await, "nas"),
        (site.template(&prefix, "drop", "s3/{key}").await, "drop"),
        (site.template(&prefix, "disk", "s3/{key}").await, "disk"),
    ];
    let files = tree();
    let mut etags = Vec::new();
    for (rel, data) in &files {
        let key = format!("{prefix}/{rel}");
        let etag = site
            .stack
            .put_object(site.stack.source_bucket(), &key, data.clone())
            .await
            .unwrap();
        etags.push((key, etag));
    }
    for (tpl, endpoint) in &templates {
        let jobs = site.stack.finished_jobs(tpl, files.len()).await.unwrap();
        for job in &jobs {
            assert_eq!(
                job["state"],
                "succeeded",
                "{endpoint}: {job:#}\n{}",
                site.executor.log()
            );
            // The per-file result carries the verified MD5, equal to the source's.
            let delivered = &job["result"]["delivered"][0];
            let key = delivered["key"].as_str().unwrap();
            let etag = &etags.iter().find(|(k, _)| k == key).unwrap().1;
            assert_eq!(delivered["md5"].as_str(), Some(etag.as_str()), "{job:#}");
            assert_eq!(delivered["outcome"], "copied");
        }
    }
    for (rel, data) in &files {
        let rel = format!("s3/{prefix}/{rel}");
        assert_same(
            &format!("smb {rel}"),
            std::fs::read(site.smb.root.join(&rel)).ok(),
            data,
        );
        assert_same(
            &format!("sftp {rel}"),
            std::fs::read(site.sftp.root.join(&rel)).ok(),
            data,
        );
        assert_same(
            &format!("local {rel}"),
            std::fs::read(site.executor.landing.join(&rel)).ok(),
            data,
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_sources_reach_sftp_smb_and_s3_byte_identical() {
    let site = Site::start("ep-routes", ExecutorOptions::default()).await;
    let files = tree();
    write_tree(site.outbox.path(), &files);
    write_tree(&site.sftp.root.join("seed"), &files);
    write_tree(&site.smb.root.join("seed"), &files);
    let seeded: Vec<(String, u64)> = sizes(&files)
        .into_iter()
        .map(|(r, s)| (format!("seed/{r}"), s))
        .collect();
    let seeded: Vec<(&str, u64)> = seeded.iter().map(|(r, s)| (r.as_str(), *s)).collect();
    let hash = json!({"verify": "hash"});

    let local_to_s3 = site
        .send_job(
            "outbox",
            "vault",
            &sizes(&files),
            "from-local",
            hash.clone(),
        )
        .await;
    let local_to_sftp = site
        .send_job("outbox", "drop", &sizes(&files), "from-local", hash.clone())
        .await;
    // The SFTP source is read with key authentication and no server-side hashes.
    let sftp_to_smb = site
        .send_job("drop-key", "nas", &seeded, "from-sftp", hash.clone())
        .await;
    let smb_to_s3 = site
        .send_job("nas", "vault", &seeded, "from-smb", hash.clone())
        .await;
    for job in [&local_to_s3, &local_to_sftp, &sftp_to_smb, &smb_to_s3] {
        let row = site.succeeded(job).await;
        assert_eq!(row["files"], files.len(), "{row:#}");
    }
    for (rel, data) in &files {
        assert_same(
            &format!("local->s3 {rel}"),
            site.vault_object(&format!("from-local/{rel}")).await,
            data,
        );
        assert_same(
            &format!("local->sftp {rel}"),
            std::fs::read(site.sftp.root.join("from-local").join(rel)).ok(),
            data,
        );
        assert_same(
            &format!("sftp->smb {rel}"),
            std::fs::read(site.smb.root.join("from-sftp/seed").join(rel)).ok(),
            data,
        );
        assert_same(
            &format!("smb->s3 {rel}"),
            site.vault_object(&format!("from-smb/seed/{rel}")).await,
            data,
        );
    }
}

/// Polls `path` until `stop`: whenever the final name exists it must hold the whole file.
/// Returns whether a `.partial` beside it was ever seen (the copy was watched in progress).
fn watch_folder(path: PathBuf, full: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let dir = path.parent().unwrap().to_owned();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut saw_partial = false;
        while !stop.load(Ordering::SeqCst) {
            if let Ok(m) = std::fs::metadata(&path) {
                assert_eq!(
                    m.len(),
                    full,
                    "{} visible under its final name before it was complete",
                    path.display()
                );
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                saw_partial |= entries.flatten().any(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with(&name) && n.ends_with(".partial")
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        saw_partial
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn no_target_shows_the_final_name_before_the_file_is_complete() {
    let site = Site::start(
        "atomic",
        ExecutorOptions {
            bandwidth_limit: Some("2M".into()),
            ..Default::default()
        },
    )
    .await;
    let data = body(6 * MIB, 11);
    let full = data.len() as u64;
    std::fs::write(site.outbox.path().join("slow.bin"), &data).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let watchers = [
        ("local", site.executor.landing.join("atomic/slow.bin")),
        ("smb", site.smb.root.join("atomic/slow.bin")),
        ("sftp", site.sftp.root.join("atomic/slow.bin")),
    ]
    .map(|(kind, path)| (kind, watch_folder(path, full, stop.clone())));
    // S3: the object must never be listed with less than its full size.
    let s3_watch = {
        let (s3, bucket, stop) = (site.stack.s3.clone(), site.vault.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(head) = s3
                    .head_object()
                    .bucket(&bucket)
                    .key("backup/atomic/slow.bin")
                    .send()
                    .await
                {
                    assert_eq!(
                        head.content_length(),
                        Some(full as i64),
                        "S3 object incomplete"
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let files = [("slow.bin", full)];
    let none = json!({});
    let jobs = [
        site.send_job("outbox", "disk", &files, "atomic", none.clone())
            .await,
        site.send_job("outbox", "nas", &files, "atomic", none.clone())
            .await,
        site.send_job("outbox", "drop", &files, "atomic", none.clone())
            .await,
        site.send_job("outbox", "vault", &files, "atomic", none.clone())
            .await,
    ];
    for job in &jobs {
        site.succeeded(job).await;
    }
    stop.store(true, Ordering::SeqCst);
    for (kind, watcher) in watchers {
        let saw_partial = watcher
            .join()
            .expect("a watcher saw an incomplete final file");
        assert!(
            saw_partial,
            "{kind}: the copy was never seen in progress (too fast to prove anything)"
        );
    }
    s3_watch.await.expect("S3 showed an incomplete object");
    assert_same(
        "local",
        std::fs::read(site.executor.landing.join("atomic/slow.bin")).ok(),
        &data,
    );
    assert_same(
        "smb",
        std::fs::read(site.smb.root.join("atomic/slow.bin")).ok(),
        &data,
    );
    assert_same(
        "sftp",
        std::fs::read(site.sftp.root.join("atomic/slow.bin")).ok(),
        &data,
    );
    assert_same("s3", site.vault_object("atomic/slow.bin").await, &data);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_delivery_verified_by_hash_is_hashed_as_it_lands_and_not_read_again() {
    let rclone = pbs_e2e::RecordingRclone::new().unwrap();
    let site = Site::start(
        "hash-landed",
        ExecutorOptions {
            rclone: Some(rclone.path.display().to_string()),
            ..Default::default()
        },
    )
    .await;
    let prefix = unique("landed");
    let tpl = site.template(&prefix, "disk", "s3/{key}").await;
    let data = body(3_000_000, 21);
    let key = format!("{prefix}/clip ü.bin");
    let etag = site
        .stack
        .put_object(site.stack.source_bucket(), &key, data.clone())
        .await
        .unwrap();
    let jobs = site.stack.finished_jobs(&tpl, 1).await.unwrap();
    let job = &jobs[0];
    assert_eq!(
        job["state"],
        "succeeded",
        "{job:#}\n{}",
        site.executor.log()
    );
    // The MD5 in the result is the one rclone computed over the bytes as they were written,
    // found equal to the source's (its ETag).
    assert_eq!(
        job["result"]["delivered"][0]["md5"].as_str(),
        Some(etag.as_str()),
        "{job:#}"
    );
    assert_same(
        "local",
        std::fs::read(site.executor.landing.join(format!("s3/{key}"))).ok(),
        &data,
    );
    // Local files to S3 (one, copied alone) and to SFTP (three, copied together): rclone hashed
    // each as it read it, and the S3 object's ETag or the SFTP server's md5sum of what landed
    // matched, so neither end is read again.
    let files = [
        ("one.bin", body(70_000, 31)),
        ("set/a.bin", body(1_000, 32)),
        ("set/b ü.bin", body(2_000, 33)),
        ("set/c.bin", body(3_000, 34)),
    ];
    for (rel, data) in &files {
        let path = site.outbox.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    let hash = json!({"verify": "hash"});
    let to_s3 = site
        .send_job(
            "outbox",
            "vault",
            &[("one.bin", 70_000)],
            "up",
            hash.clone(),
        )
        .await;
    let to_sftp = site
        .send_job(
            "outbox",
            "drop",
            &[
                ("set/a.bin", 1_000),
                ("set/b ü.bin", 2_000),
                ("set/c.bin", 3_000),
            ],
            "up",
            hash,
        )
        .await;
    for (job, files) in [(&to_s3, 1), (&to_sftp, 3)] {
        let row = site.succeeded(job).await;
        assert_eq!(row["files"], files, "{row:#}");
    }
    for (rel, data) in &files[1..] {
        assert_same(
            &format!("sftp {rel}"),
            std::fs::read(site.sftp.root.join("up").join(rel)).ok(),
            data,
        );
    }
    let verbs = rclone.verbs();
    assert!(verbs.iter().any(|v| v == "copyto"), "{verbs:?}");
    assert!(verbs.iter().any(|v| v == "copy"), "{verbs:?}");
    assert!(
        !verbs.iter().any(|v| v == "hashsum"),
        "a file was hashed again after the copy: {verbs:?}"
    );
    // The job's log keeps what rclone says at info level, and none of the debug lines the
    // check was read from (the log is uploaded; debug lines name hosts and users).
    let job_id = job["job_id"].as_str().unwrap();
    let log =
        std::fs::read_to_string(site.executor.state.join(format!("logs/{job_id}.1.log"))).unwrap();
    assert!(log.contains("Copied (new)"), "{log}");
    assert!(!log.contains("\"level\":\"debug\""), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hash_verification_fails_a_file_altered_after_delivery_and_removes_it() {
    // An rclone wrapper that alters the delivered file on the share just before the executor
    // reads it back: what a faulty disk, a broken NAS cache or a meddling process would do. It
    // passes everything through until it knows the share's folder.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("tampered");
    let wrapper = dir.path().join("rclone-wrapper.sh");
    let script = |target: &Path| {
        format!(
            "if [ \"$1\" = hashsum ] && [ -f '{target}' ]; then\n\
               for a in \"$@\"; do case \"$a\" in DST:*) printf 'X' | dd of='{target}' bs=1 seek=100 conv=notrunc 2>/dev/null; touch '{marker}';; esac; done\n\
             fi",
            target = target.display(),
            marker = marker.display(),
        )
    };
    pbs_e2e::rclone_wrapper(&wrapper, &script(&dir.path().join("nothing-yet"))).unwrap();
    let site = Site::start(
        "verify",
        ExecutorOptions {
            rclone: Some(wrapper.display().to_string()),
            ..Default::default()
        },
    )
    .await;
    let target = site.smb.root.join("verify/precious.bin");
    pbs_e2e::rclone_wrapper(&wrapper, &script(&target)).unwrap();

    let data = body(300_000, 12);
    std::fs::write(site.outbox.path().join("precious.bin"), &data).unwrap();
    let job = site
        .send_job(
            "outbox",
            "nas",
            &[("precious.bin", data.len() as u64)],
            "verify",
            json!({"verify": "hash"}),
        )
        .await;
    let row = site.executor.finished(&job).await.unwrap();
    assert!(
        marker.exists(),
        "the wrapper never altered the file: the test proves nothing"
    );
    assert_eq!(row["state"], "failed", "{row:#}");
    assert_eq!(row["error_class"], "integrity", "{row:#}");
    let error = row["error"].as_str().unwrap();
    assert!(
        error.contains("nas:verify/precious.bin: MD5 of the delivered file is")
            && error.contains("the delivered file was removed"),
        "{error}"
    );
    assert!(
        !target.exists(),
        "the altered file was left under its final name"
    );
}

/// rclone processes whose parent is `pid`: (cmdline, environ), NUL-separated.
fn rclone_children(pid: u32) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let p = entry.path();
        let Ok(stat) = std::fs::read_to_string(p.join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(after) = stat.rsplit_once(") ").map(|(_, a)| a) else {
            continue;
        };
        let ppid: u32 = after
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if ppid != pid || !stat.contains("(rclone)") {
            continue;
        }
        let cmdline = std::fs::read(p.join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(p.join("environ")).unwrap_or_default();
        found.push((
            String::from_utf8_lossy(&cmdline).replace('\0', " "),
            String::from_utf8_lossy(&environ).into_owned(),
        ));
    }
    found
}

fn env_value(environ: &str, key: &str) -> Option<String> {
    environ
        .split('\0')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread")]
async fn smb_and_sftp_passwords_never_leave_the_executor() {
    let site = Site::start(
        "secrets",
        ExecutorOptions {
            bandwidth_limit: Some("2M".into()),
            ..Default::default()
        },
    )
    .await;
    let prefix = unique("secret");
    let to_nas = site.template(&prefix, "nas", "{key}").await;
    let to_drop = site.template(&prefix, "drop", "{key}").await;
    let data = body(6 * MIB, 13);
    site.stack
        .put_object(
            site.stack.source_bucket(),
            &format!("{prefix}/f.bin"),
            data.clone(),
        )
        .await
        .unwrap();

    // While the copies run, read the rclone children's argv and environment.
    let pid = site.executor.pid();
    let mut obscured: HashSet<String> = HashSet::new();
    let mut argvs: Vec<String> = Vec::new();
    eventually(
        Duration::from_secs(60),
        "both copies to be seen running",
        || {
            for (cmdline, environ) in rclone_children(pid) {
                if cmdline.contains("copyto")
                    && let Some(pass) = env_value(&environ, "RCLONE_CONFIG_DST_PASS")
                {
                    obscured.insert(pass);
                }
                argvs.push(cmdline);
            }
            let seen = obscured.len();
            async move { Ok((seen >= 2).then_some(())) }
        },
    )
    .await
    .unwrap();
    site.stack.finished_jobs(&to_nas, 1).await.unwrap();
    site.stack.finished_jobs(&to_drop, 1).await.unwrap();

    let clear = [site.smb.password.clone(), site.sftp.password.clone()];
    let secrets: Vec<&String> = clear.iter().chain(obscured.iter()).collect();
    assert!(
        !obscured.contains(&site.smb.password) && !obscured.contains(&site.sftp.password),
        "rclone got a clear-text password"
    );
    let mut places: Vec<(String, String)> = argvs
        .into_iter()
        .map(|a| ("rclone argv".to_owned(), a))
        .collect();
    places.push(("executor log".into(), site.executor.log()));
    for file in pbs_e2e::files_under(&site.executor.state) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        places.push((
            file.display().to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    for tpl in [&to_nas, &to_drop] {
        let jobs = site.stack.jobs_of_template(tpl).await.unwrap();
        assert_eq!(jobs[0]["state"], "succeeded", "{jobs:#?}");
        places.push((
            format!("jobs of {tpl} (DynamoDB via the API)"),
            serde_json::to_string(&jobs).unwrap(),
        ));
    }
    for (place, text) in &places {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a password appears in {place}"
            );
        }
    }
    assert_same(
        "smb",
        std::fs::read(site.smb.root.join(format!("{prefix}/f.bin"))).ok(),
        &data,
    );
    assert_same(
        "sftp",
        std::fs::read(site.sftp.root.join(format!("{prefix}/f.bin"))).ok(),
        &data,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_unknown_share_and_unreachable_host_fail_fast_and_classified() {
    let other = tempfile::tempdir().unwrap();
    let closed_port = pbs_e2e::servers::free_port().unwrap();
    let site = Site::start_with(
        "failfast",
        ExecutorOptions {
            env: vec![("PBS_WRONG_PASSWORD".into(), "not-the-password".into())],
            ..Default::default()
        },
        |smb, sftp| {
            // A known_hosts entry for the SFTP server's address, with some other host's key.
            let status = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(other.path().join("k"))
                .status()
                .unwrap();
            assert!(status.success());
            let other_pub = std::fs::read_to_string(other.path().join("k.pub")).unwrap();
            let mut parts = other_pub.split_whitespace();
            let bad_known_hosts = other.path().join("known_hosts");
            std::fs::write(
                &bad_known_hosts,
                format!(
                    "[127.0.0.1]:{} {} {}\n",
                    sftp.port,
                    parts.next().unwrap(),
                    parts.next().unwrap()
                ),
            )
            .unwrap();
            format!(
                r#"
[endpoints.nas-badpw]
type = "smb"
host = "127.0.0.1"
port = {smb}
share = "files"
user = "pbs-test"
password_env = "PBS_WRONG_PASSWORD"

[endpoints.nas-noshare]
type = "smb"
host = "127.0.0.1"
port = {smb}
share = "nosuchshare"
user = "pbs-test"
password_env = "PBS_NAS_PASSWORD"

[endpoints.nas-down]
type = "smb"
host = "127.0.0.1"
port = {closed_port}
share = "files"
user = "pbs-test"
password_env = "PBS_NAS_PASSWORD"

[endpoints.drop-badpw]
type = "sftp"
host = "127.0.0.1"
port = {sftp}
user = "pbs-test"
password_env = "PBS_WRONG_PASSWORD"
known_hosts_file = "{known_hosts}"

[endpoints.drop-badkey]
type = "sftp"
host = "127.0.0.1"
port = {sftp}
user = "pbs-test"
password_env = "PBS_DROP_PASSWORD"
known_hosts_file = "{bad_known_hosts}"
"#,
                smb = smb.port,
                sftp = sftp.port,
                known_hosts = sftp.known_hosts.display(),
                bad_known_hosts = bad_known_hosts.display(),
            )
        },
    )
    .await;

    // The connectivity test: good endpoints pass, each broken one names its problem.
    let out = site.executor.cli(&["endpoints", "test", "--json"]).unwrap();
    assert!(
        !out.status.success(),
        "a failing endpoint must fail the command"
    );
    let reports: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let report = |name: &str| {
        reports
            .iter()
            .find(|r| r["endpoint"] == name)
            .unwrap_or_else(|| panic!("no report for {name}: {reports:#?}"))
            .clone()
    };
    for good in ["disk", "nas", "drop", "drop-key", "vault", "outbox"] {
        assert_eq!(report(good)["ok"], true, "{:#}", report(good));
    }
    for (bad, problem) in [
        ("nas-badpw", "auth"),
        ("nas-noshare", "not_found"),
        ("nas-down", "connect"),
        ("drop-badpw", "auth"),
        ("drop-badkey", "host_key"),
    ] {
        let r = report(bad);
        assert_eq!(
            (r["ok"].clone(), r["problem"].clone()),
            (json!(false), json!(problem)),
            "{r:#}"
        );
        let message = r["message"].as_str().unwrap();
        assert!(!message.contains("not-the-password") && !message.contains(&site.smb.password));
        println!("{bad}: {problem} in {} ms: {message}", r["elapsed_ms"]);
    }

    // Jobs: auth and not-found are final after one attempt although retries are allowed; an
    // unreachable host is retryable. Each message names the endpoint and path.
    std::fs::write(site.outbox.path().join("f.txt"), "payload").unwrap();
    for (dest, class, attempts) in [
        ("nas-badpw", "auth", 3),
        ("nas-noshare", "not_found", 3),
        ("drop-badkey", "auth", 3),
        ("nas-down", "retryable", 1),
    ] {
        let job_id = unique("manual");
        let job = json!({
            "v": 1, "job_id": job_id, "template_id": "manual", "pool": site.pool,
            "source": {"type": "endpoint", "endpoint": "outbox"},
            "files": [{"key": "f.txt", "size": 7, "dest_path": "in/f.txt"}],
            "destination": dest,
            "retry": {"max_attempts": attempts, "backoff_seconds": 1},
            "created_at": chrono::Utc::now().to_rfc3339(),
        });
        let sent = std::time::Instant::now();
        site.stack.send_job(&site.queue.url, &job).await.unwrap();
        let row = site.executor.finished(&job_id).await.unwrap();
        println!(
            "{dest}: job failed {:?} after it was sent: {}",
            sent.elapsed(),
            row["error"]
        );
        assert_eq!(row["state"], "failed", "{dest}: {row:#}");
        assert_eq!(row["error_class"], class, "{dest}: {row:#}");
        assert_eq!(row["attempts"], 1, "{dest}: {row:#}");
        let error = row["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("{dest}:in/f.txt")),
            "{dest}: {error}"
        );
        assert!(!error.contains("not-the-password"), "{dest}: {error}");
    }

    // A missing secret stops the executor at start, naming endpoint and field.
    let out = std::process::Command::new(pbs_e2e::executor_bin())
        .arg("--config")
        .arg(&site.executor.config_path)
        .arg("check-config")
        .env_remove("PBS_NAS_PASSWORD")
        .env("PBS_DROP_PASSWORD", &site.sftp.password)
        .env("PBS_WRONG_PASSWORD", "not-the-password")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "endpoints.nas.password_env: environment variable PBS_NAS_PASSWORD is not set or empty"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_job_is_one_copy_and_a_file_missing_at_the_source_is_named() {
    let site = Site::start("batch", ExecutorOptions::default()).await;
    let files = [
        ("a.txt", "alpha"),
        ("deep/b c.txt", "bravo"),
        ("deep/é.txt", "echo"),
    ];
    for (rel, text) in files {
        let path = site.outbox.path().join("set").join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let listed: Vec<(String, u64)> = files
        .iter()
        .map(|(rel, text)| (format!("set/{rel}"), text.len() as u64))
        .collect();
    let listed: Vec<(&str, u64)> = listed.iter().map(|(r, s)| (r.as_str(), *s)).collect();
    let ok = site
        .send_job("outbox", "nas", &listed, "batch", json!({"verify": "hash"}))
        .await;
    let row = site.succeeded(&ok).await;
    assert_eq!(row["files"], 3, "{row:#}");
    for (rel, text) in files {
        let got = std::fs::read(site.smb.root.join("batch/set").join(rel)).ok();
        assert_same(rel, got, text.as_bytes());
    }
    // One copy for the folder: a name missing at the source is not skipped in silence.
    let mut with_missing = listed.clone();
    with_missing.push(("set/missing.txt", 4));
    let bad = site
        .send_job("outbox", "nas", &with_missing, "batch2", json!({}))
        .await;
    let row = site.executor.finished(&bad).await.unwrap();
    assert_eq!(
        (row["state"].as_str(), row["error_class"].as_str()),
        (Some("failed"), Some("not_found")),
        "{row:#}"
    );
    let error = row["error"].as_str().unwrap();
    assert!(
        error.starts_with("1 of 4 file(s) not delivered to nas:batch2")
            && error.ends_with("set/missing.txt"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_passes_a_good_setup_and_names_each_broken_part_with_a_fix() {
    let site = Site::start("doctor", ExecutorOptions::default()).await;
    let doctor = |config: &Path, clear_aws: bool| {
        let mut cmd = std::process::Command::new(pbs_e2e::executor_bin());
        cmd.arg("--config")
            .arg(config)
            .arg("doctor")
            .env("PBS_NAS_PASSWORD", &site.smb.password)
            .env("PBS_DROP_PASSWORD", &site.sftp.password);
        if clear_aws {
            for var in [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "AWS_PROFILE",
            ] {
                cmd.env_remove(var);
            }
            cmd.env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
                .env("AWS_CONFIG_FILE", "/nonexistent/config")
                .env("AWS_EC2_METADATA_DISABLED", "true");
        }
        let out = cmd.output().unwrap();
        (out.status.success(), String::from_utf8(out.stdout).unwrap())
    };
    let (ok, text) = doctor(&site.executor.config_path, false);
    assert!(ok, "{text}");
    for line in [
        "ok    rclone: rclone v1.",
        "ok    state folder: ",
        "ok    endpoint secrets: ",
        "ok    aws credentials: ",
        "ok    work queue: ",
        "ok    status queue: ",
        "ok    clock: ",
        "ok    endpoint nas: ",
        "ok    endpoint drop: ",
        "ok    endpoint vault: ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "{line:?} missing:\n{text}"
        );
    }

    let broken = |edit: &dyn Fn(String) -> String| {
        let path = site
            .executor
            .dir
            .path()
            .join(format!("{}.toml", unique("broken")));
        let config = std::fs::read_to_string(&site.executor.config_path).unwrap();
        std::fs::write(&path, edit(config)).unwrap();
        path
    };
    // rclone missing.
    let rclone = pbs_e2e::rclone_bin();
    let path = broken(&|c| c.replace(&rclone, "/nonexistent/rclone"));
    let (ok, text) = doctor(&path, false);
    assert!(!ok);
    assert!(
        text.lines().any(
            |l| l.starts_with("FAIL  rclone: cannot run /nonexistent/rclone")
                && l.contains("(fix: install rclone 1.63 or newer")
        ),
        "{text}"
    );
    // A status queue that does not exist.
    let status_url = site.stack.status_queue_url(&site.pool);
    let (base, name) = status_url.rsplit_once('/').unwrap();
    let missing = format!("{base}/missing-{name}");
    let path = broken(&|c| c.replace(&status_url, &missing));
    let (ok, text) = doctor(&path, false);
    assert!(!ok);
    assert!(
        text.lines().any(|l| l.starts_with("FAIL  status queue: ")
            && l.contains("(fix: check cloud.status_queue_url")),
        "{text}"
    );
    // Another pool's status queue: every report through it would be refused.
    let other = site.stack.status_queue_url("default");
    let path = broken(&|c| c.replace(&status_url, &other));
    let (ok, text) = doctor(&path, false);
    assert!(!ok);
    assert!(
        text.lines().any(|l| l.starts_with("FAIL  status queue: ")
            && l.contains(&format!("is not pool {}'s status queue", site.pool))),
        "{text}"
    );
    // No AWS credentials at all.
    let (ok, text) = doctor(&site.executor.config_path, true);
    assert!(!ok);
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL  aws credentials: ")
                && l.contains("(fix: give the executor's user credentials")),
        "{text}"
    );
    // An endpoint nothing answers on.
    let closed = pbs_e2e::servers::free_port().unwrap();
    let path = broken(&|c| {
        format!(
            "{c}\n[endpoints.nas-down]\ntype = \"smb\"\nhost = \"127.0.0.1\"\nport = {closed}\nshare = \"files\"\nuser = \"pbs-test\"\npassword_env = \"PBS_NAS_PASSWORD\"\n"
        )
    });
    let (ok, text) = doctor(&path, false);
    assert!(!ok);
    let line = text
        .lines()
        .find(|l| l.starts_with("FAIL  endpoint nas-down: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("FAILED [connect]") && line.contains("(fix: check that the server is up"),
        "{line}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("ok    endpoint nas: ")),
        "{text}"
    );
}

/// Asks the site's pool to test `endpoint` through the API; the test once an executor answered.
async fn test_endpoint(site: &Site, endpoint: &str) -> Value {
    let path = format!("/api/v1/pools/{}/endpoints/{endpoint}/test", site.pool);
    let (status, asked) = site.stack.call("POST", &path, None).await.unwrap();
    assert_eq!(status, 202, "{asked}");
    let id = asked["test_id"].as_str().unwrap().to_owned();
    eventually(
        Duration::from_secs(60),
        "the endpoint test's answer",
        || async {
            let (_, t) = site
                .stack
                .call("GET", &format!("/api/v1/endpoint-tests/{id}"), None)
                .await?;
            Ok((t["state"] != "queued").then_some(t))
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_test_asked_from_the_cloud_runs_on_site_and_shows_the_fix() {
    let opts = ExecutorOptions {
        env: vec![("PBS_WRONG_PASSWORD".into(), "not-the-password".into())],
        ..Default::default()
    };
    let site = Site::start_with("probe", opts, |smb, _| {
        format!(
            "[endpoints.wrong-pass]\ntype = \"smb\"\ncloud = \"write\"\nhost = \"127.0.0.1\"\nport = {}\nshare = \"{}\"\nuser = \"{}\"\npassword_env = \"PBS_WRONG_PASSWORD\"\n",
            smb.port, smb.share, smb.user
        )
    })
    .await;
    site.stack
        .endpoints_published(&site.executor.id)
        .await
        .unwrap();

    let good = test_endpoint(&site, "nas").await;
    assert_eq!(good["state"], "passed", "{good:#}");
    assert_eq!(good["executor_id"], site.executor.id.as_str());
    let bad = test_endpoint(&site, "wrong-pass").await;
    assert_eq!(
        (bad["state"].as_str(), bad["problem"].as_str()),
        (Some("failed"), Some("auth")),
        "{bad:#}"
    );
    assert!(
        bad["hint"].as_str().unwrap().contains("password"),
        "{bad:#}"
    );
    let (status, _) = site
        .stack
        .call(
            "POST",
            &format!("/api/v1/pools/{}/endpoints/ghost/test", site.pool),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 404, "an endpoint no executor of the pool publishes");

    // The same from the console's Executors page.
    let console = format!("{}/console", site.stack.output("LocalApiUrl"));
    let token = site.stack.token("admin").unwrap();
    let browser = Browser::signed_in(&console, &token).await.unwrap();
    browser
        .goto(&format!("{console}#/executors"))
        .await
        .unwrap();
    let row = format!(
        "#endpoints tr[data-pool='{}'][data-endpoint='wrong-pass']",
        site.pool
    );
    browser
        .click(&format!("{row} .test-endpoint"))
        .await
        .unwrap();
    let answer = format!("{row} .test-answer");
    browser
        .wait_state(&answer, "failed", Duration::from_secs(60))
        .await
        .unwrap();
    let shown = browser.text(&answer).await.unwrap();
    assert!(
        shown.contains("[auth]") && shown.contains("Fix:") && shown.contains("password"),
        "{shown}"
    );
    browser
        .execute(
            "document.querySelector(arguments[0]).scrollIntoView();",
            json!([row]),
        )
        .await
        .unwrap();
    browser
        .screenshot(&pbs_e2e::workspace_root().join("artifacts/console/endpoint-test.png"))
        .await
        .unwrap();
}
