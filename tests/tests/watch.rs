//! Watch folders and schedules on real files with a real executor and rclone: standalone (no
//! `[cloud]` section) unless a test says otherwise.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use pbs_e2e::{Executor, ExecutorOptions, Stack, body, eventually, unique};
use serde_json::Value;

/// A standalone executor with a local `outbox` endpoint (the watched side) and the rules given.
struct Local {
    executor: Executor,
    outbox: tempfile::TempDir,
}

impl Local {
    async fn start(rules: &str) -> Self {
        let mut opts = ExecutorOptions::default();
        let stack = Stack::connect().await.unwrap();
        let outbox = tempfile::tempdir().unwrap();
        opts.standalone = true;
        opts.extra_config = format!(
            "[endpoints.outbox]\ntype = \"local\"\nroot = \"{}\"\n\n{rules}",
            outbox.path().display()
        );
        let pool = unique("watch");
        let executor = Executor::start_with(&stack, &pool, "unused", opts).unwrap();
        Self { executor, outbox }
    }

    fn src(&self, rel: &str) -> PathBuf {
        self.outbox.path().join(rel)
    }

    /// The rule's jobs in the ledger (an error until the executor has created it).
    fn jobs_of(&self, rule: &str) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .executor
            .ledger()?
            .into_iter()
            .filter(|r| r["template_id"] == rule)
            .collect())
    }

    /// Waits until `rule` has `count` finished jobs; returns them.
    async fn finished(&self, rule: &str, count: usize) -> Vec<Value> {
        self.finished_within(rule, count, Duration::from_secs(120))
            .await
    }

    async fn finished_within(&self, rule: &str, count: usize, limit: Duration) -> Vec<Value> {
        eventually(
            limit,
            &format!("{count} finished jobs of {rule}"),
            || async {
                let jobs = self.jobs_of(rule)?;
                let done = jobs
                    .iter()
                    .filter(|j| matches!(j["state"].as_str(), Some("succeeded" | "failed")))
                    .count();
                Ok((done >= count).then_some(jobs))
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nexecutor log:\n{}", self.executor.log()))
    }
}

fn watch_rule(name: &str, extra: &str) -> String {
    format!(
        "[[watch]]\nname = \"{name}\"\nsource = \"outbox\"\ndestination = \"disk\"\npath = \"in/{{key}}\"\nstable_seconds = 2\nreconcile_seconds = 5\n{extra}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_written_slowly_is_copied_once_and_only_when_complete() {
    let l = Local::start(&watch_rule("slow", "")).await;
    let landed = l.executor.landing.join("in/slow.bin");
    let data = body(10 * 100_000, 21);
    let mut f = std::fs::File::create(l.src("slow.bin")).unwrap();
    // Ten chunks, one a second: the file is never still for the rule's 2 seconds until it is done.
    for chunk in data.chunks(100_000) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        assert!(
            !landed.exists(),
            "copied while still being written ({} bytes landed)",
            std::fs::metadata(&landed).map(|m| m.len()).unwrap_or(0)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(f);
    let got = l.executor.landed("in/slow.bin").await.unwrap();
    assert!(got == data, "landed {} bytes of {}", got.len(), data.len());
    let jobs = l.finished("slow", 1).await;
    assert_eq!(jobs.len(), 1, "one job for one file: {jobs:#?}");
    assert_eq!(jobs[0]["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_files_dropped_at_once_all_arrive_exactly_once() {
    let l = Local::start(&watch_rule("storm", "")).await;
    for i in 0..1000 {
        let dir = l.src(&format!("batch/{:02}", i % 20));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i:04}.dat")), format!("file {i}\n")).unwrap();
    }
    // One rclone process per file: minutes on a loaded two-core machine.
    let jobs = l
        .finished_within("storm", 1000, Duration::from_secs(600))
        .await;
    assert_eq!(jobs.len(), 1000, "one job per file, no duplicates");
    assert!(jobs.iter().all(|j| j["state"] == "succeeded"));
    for i in 0..1000 {
        let rel = format!("in/batch/{:02}/f{i:04}.dat", i % 20);
        let got = std::fs::read_to_string(l.executor.landing.join(&rel)).unwrap();
        assert_eq!(got, format!("file {i}\n"), "{rel}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn renamed_in_files_are_taken_and_excluded_or_temporary_names_are_not() {
    let l = Local::start(&watch_rule(
        "names",
        "include = [\"**/*.mov\", \"*.mov\"]\nexclude = [\"rejects/**\"]",
    ))
    .await;
    // Written elsewhere on the same filesystem, then renamed in: one event, complete at once.
    let staging = l
        .outbox
        .path()
        .join("..")
        .join(format!("{}-staging", unique("st")));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::create_dir_all(l.src("rejects")).unwrap();
    std::fs::write(l.src("rejects/no.mov"), "excluded").unwrap();
    std::fs::write(l.src("notes.txt"), "not included").unwrap();
    std::fs::write(l.src("clip.mov.1a2b3c4d.partial"), "temporary").unwrap();
    std::fs::write(l.src("~$lock.mov"), "temporary").unwrap();
    std::fs::write(staging.join("clip.mov"), "renamed in").unwrap();
    std::fs::rename(staging.join("clip.mov"), l.src("clip.mov")).unwrap();
    std::fs::remove_dir_all(&staging).unwrap();

    assert_eq!(
        l.executor.landed("in/clip.mov").await.unwrap(),
        b"renamed in"
    );
    // The other names were written first, so they settled no later than the renamed file: had
    // the rule taken any of them, its job would be in the ledger beside this one.
    let jobs = l.finished("names", 1).await;
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    for never in ["in/rejects/no.mov", "in/notes.txt", "in/~$lock.mov"] {
        assert!(
            !l.executor.landing.join(never).exists(),
            "{never} was copied"
        );
    }
    assert!(
        !pbs_e2e::files_under(&l.executor.landing)
            .iter()
            .any(|p| p.to_string_lossy().contains(".partial")),
        "a temporary file was copied"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn move_to_archives_only_after_a_verified_delivery() {
    let rules = format!(
        "{}{}",
        watch_rule(
            "archive",
            "folder = \"drop\"\nafter = \"move-to\"\narchive_folder = \"done\"\n[watch.delivery]\nverify = \"hash\""
        ),
        // The same, to a destination that cannot be written: the source must stay.
        "[[watch]]\nname = \"broken\"\nsource = \"outbox\"\nfolder = \"drop2\"\ndestination = \"nowhere\"\nstable_seconds = 1\nafter = \"move-to\"\narchive_folder = \"done2\"\n[watch.retry]\nmax_attempts = 1\n"
    );
    let l = Local::start(&format!(
        "[endpoints.nowhere]\ntype = \"local\"\nroot = \"/proc/pbs-cannot-write-here\"\n\n{rules}"
    ))
    .await;
    std::fs::create_dir_all(l.src("drop/sub")).unwrap();
    std::fs::create_dir_all(l.src("drop2")).unwrap();
    let data = body(200_000, 22);
    std::fs::write(l.src("drop/sub/a.bin"), &data).unwrap();
    std::fs::write(l.src("drop2/b.bin"), &data).unwrap();

    let ok = l.finished("archive", 1).await;
    assert_eq!(ok[0]["state"], "succeeded", "{ok:#?}");
    assert_eq!(l.executor.landed("in/sub/a.bin").await.unwrap(), data);
    eventually(
        Duration::from_secs(30),
        "the source to be archived",
        || async {
            Ok(
                (l.src("done/sub/a.bin").exists() && !l.src("drop/sub/a.bin").exists())
                    .then_some(()),
            )
        },
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(l.src("done/sub/a.bin")).unwrap(), data);

    let failed = l.finished("broken", 1).await;
    assert_eq!(failed[0]["state"], "failed", "{failed:#?}");
    assert!(
        l.src("drop2/b.bin").exists(),
        "a failed delivery moved its source"
    );
    assert!(
        !l.src("done2").exists(),
        "a failed delivery archived its source"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn files_that_arrive_while_the_executor_is_down_are_caught_at_start() {
    let mut l = Local::start(&watch_rule("down", "")).await;
    std::fs::write(l.src("before.txt"), "first").unwrap();
    assert_eq!(l.executor.landed("in/before.txt").await.unwrap(), b"first");
    l.executor.terminate().unwrap();
    std::fs::write(l.src("while-down.txt"), "second").unwrap();
    l.executor.restart().unwrap();
    assert_eq!(
        l.executor.landed("in/while-down.txt").await.unwrap(),
        b"second"
    );
    // The file delivered before the restart is not copied again.
    let jobs = l.finished("down", 2).await;
    assert_eq!(jobs.len(), 2, "{jobs:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_change_without_a_restart_and_jobs_show_tells_the_story() {
    let l = Local::start("").await;
    std::fs::create_dir_all(l.src("later")).unwrap();
    std::fs::write(l.src("later/x.txt"), "added rule").unwrap();
    let mut config = std::fs::read_to_string(&l.executor.config_path).unwrap();
    config.push_str(&watch_rule("added", "folder = \"later\""));
    std::fs::write(&l.executor.config_path, config).unwrap();
    assert_eq!(l.executor.landed("in/x.txt").await.unwrap(), b"added rule");
    let jobs = l.finished("added", 1).await;
    let id = jobs[0]["job_id"].as_str().unwrap();
    assert!(id.starts_with("wt-"), "{id}");

    let out = l.executor.cli(&["jobs", "show", id]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "state      succeeded",
        "origin     watch added",
        "file       later/x.txt -> in/x.txt",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    let out = l.executor.cli(&["jobs", "show", "wt-nope"]).unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("\"wt-nope\" is not in this executor's ledger")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_copies_its_folder_with_filters() {
    let l = Local::start(
        "[[schedule]]\nname = \"every-2s\"\ncron = \"*/2 * * * * *\"\nsource = \"outbox\"\nfolder = \"nightly\"\ndestination = \"disk\"\npath = \"sched/{key}\"\nexclude = [\"*.skip\"]\n",
    )
    .await;
    std::fs::create_dir_all(l.src("nightly/deep")).unwrap();
    std::fs::write(l.src("nightly/deep/a.txt"), "scheduled").unwrap();
    std::fs::write(l.src("nightly/b.skip"), "excluded").unwrap();
    assert_eq!(
        l.executor.landed("sched/deep/a.txt").await.unwrap(),
        b"scheduled"
    );
    let jobs = l.finished("every-2s", 1).await;
    assert!(jobs[0]["job_id"].as_str().unwrap().starts_with("sc-"));
    assert!(!l.executor.landing.join("sched/b.skip").exists());

    // Later runs find the file at its destination as it is here: they copy nothing and make no job.
    eventually(
        Duration::from_secs(60),
        "a run with nothing to copy",
        || async {
            Ok(l.executor
                .log()
                .contains("scheduled run: nothing to copy")
                .then_some(()))
        },
    )
    .await
    .unwrap();
    assert_eq!(
        l.jobs_of("every-2s").unwrap().len(),
        1,
        "{}",
        l.executor.log()
    );
    // A changed file and a new one: later runs copy those two only (one run, or two if a run
    // lists the folder between the two writes).
    std::fs::write(l.src("nightly/deep/a.txt"), "scheduled again").unwrap();
    std::fs::write(l.src("nightly/c.txt"), "new").unwrap();
    let later = eventually(Duration::from_secs(60), "the two files copied", || async {
        let jobs = l.jobs_of("every-2s")?;
        let later = &jobs[..jobs.len() - 1];
        let files: i64 = later.iter().filter_map(|j| j["files"].as_i64()).sum();
        let done = later.iter().all(|j| j["state"] == "succeeded");
        Ok((done && files == 2).then(|| later.to_vec()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", l.executor.log()));
    assert!(later.len() <= 2, "{later:#?}");
    assert_eq!(
        std::fs::read(l.executor.landing.join("sched/deep/a.txt")).unwrap(),
        b"scheduled again"
    );
    assert_eq!(
        std::fs::read(l.executor.landing.join("sched/c.txt")).unwrap(),
        b"new"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_jobs_are_reported_to_the_cloud_with_their_origin() {
    let stack = Stack::connect().await.unwrap();
    let pool = unique("wcloud");
    let queue = stack.create_pool(&pool).await.unwrap();
    let outbox = tempfile::tempdir().unwrap();
    let rule = unique("rule");
    let executor = Executor::start_with(
        &stack,
        &pool,
        &queue.url,
        ExecutorOptions {
            extra_config: format!(
                "[endpoints.outbox]\ntype = \"local\"\nroot = \"{}\"\n\n{}",
                outbox.path().display(),
                watch_rule(&rule, "")
            ),
            ..Default::default()
        },
    )
    .unwrap();
    std::fs::write(outbox.path().join("up.txt"), "to the cloud").unwrap();
    assert_eq!(executor.landed("in/up.txt").await.unwrap(), b"to the cloud");
    let jobs = stack.finished_jobs(&rule, 1).await.unwrap();
    let job = &jobs[0];
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(job["origin"], "watch", "{job:#}");
    assert_eq!(job["origin_rule"], rule.as_str());
    assert_eq!(job["source_endpoint"], "outbox");
    assert_eq!(job["destination"], "disk");
    assert_eq!(job["file_count"], 1);
    assert_eq!(job["result"]["files"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_from_cloud_templates_apply_change_live_and_survive_an_outage() {
    let stack = Stack::connect().await.unwrap();
    let pool = unique("crules");
    let queue = stack.create_pool(&pool).await.unwrap();
    let outbox = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(outbox.path().join("a")).unwrap();
    let mut executor = Executor::start_with(
        &stack,
        &pool,
        &queue.url,
        ExecutorOptions {
            extra_config: format!(
                // The cloud's rules read this folder.
                "[endpoints.outbox]\ntype = \"local\"\nroot = \"{}\"\ncloud = \"read-write\"\n",
                outbox.path().display()
            ),
            ..Default::default()
        },
    )
    .unwrap();
    let id = unique("cloud-rule");
    let template = |path: &str| {
        serde_json::json!({
            "id": id,
            "trigger": {"type": "watch", "source": "outbox", "folder": "a", "stable_seconds": 1, "reconcile_seconds": 5},
            "destination": {"pool": pool, "endpoint": "disk", "path": path},
            "options": {"delivery": {"verify": "hash"}}
        })
    };
    // The executor says when it has applied a new set of cloud rules.
    let applied = |executor: &Executor| executor.log().matches("cloud rules updated").count();
    let wait_applied = |before: usize| {
        let executor = &executor;
        async move {
            eventually(
                Duration::from_secs(60),
                "the executor to apply the cloud rules",
                || async move { Ok((applied(executor) > before).then_some(())) },
            )
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", executor.log()));
        }
    };

    let before = applied(&executor);
    stack
        .create_template(&template("cloud/{key}"))
        .await
        .unwrap();
    wait_applied(before).await;
    std::fs::write(outbox.path().join("a/one.txt"), "one").unwrap();
    assert_eq!(executor.landed("cloud/one.txt").await.unwrap(), b"one");
    let jobs = stack.finished_jobs(&id, 1).await.unwrap();
    assert_eq!(
        (jobs[0]["state"].as_str(), jobs[0]["origin"].as_str()),
        (Some("succeeded"), Some("watch"))
    );

    // A change applies without a restart.
    let before = applied(&executor);
    stack
        .replace_template(&template("cloud2/{key}"))
        .await
        .unwrap();
    wait_applied(before).await;
    std::fs::write(outbox.path().join("a/two.txt"), "two").unwrap();
    assert_eq!(executor.landed("cloud2/two.txt").await.unwrap(), b"two");

    // Cloud unreachable across a restart: the rules cached in the ledger keep working.
    executor.terminate().unwrap();
    let closed = pbs_e2e::servers::free_port().unwrap();
    let config = std::fs::read_to_string(&executor.config_path).unwrap();
    let config = config.replace(
        &format!("s3_endpoint_url = \"{}\"", stack.output("EmulatorUrl")),
        &format!("s3_endpoint_url = \"http://127.0.0.1:{closed}\""),
    );
    assert!(config.contains(&format!("127.0.0.1:{closed}")));
    std::fs::write(&executor.config_path, config).unwrap();
    executor.restart().unwrap();
    std::fs::write(outbox.path().join("a/three.txt"), "three").unwrap();
    assert_eq!(executor.landed("cloud2/three.txt").await.unwrap(), b"three");
    // And the cloud was really out of reach for it (the failed fetch ends after the SDK's
    // retries, possibly after the file landed).
    eventually(
        Duration::from_secs(60),
        "a failed fetch of the cloud rules",
        || async {
            Ok(executor
                .log()
                .contains("cannot fetch the cloud rules")
                .then_some(()))
        },
    )
    .await
    .unwrap();
}
