//! A pool acts once: two executors of one pool, on one shared folder, with the pool's cloud watch
//! and schedule rules. Each executor writes to its own landing folder, so where a file landed
//! says which executor copied it, and a file copied twice shows up twice.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use pbs_e2e::{Executor, ExecutorOptions, Stack, eventually, unique};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

/// Files under `dir` (relative paths), recursively.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// The executor's ledger jobs of `rule` that succeeded.
fn succeeded(executor: &Executor, rule: &str) -> HashSet<String> {
    executor
        .ledger()
        .unwrap_or_default()
        .into_iter()
        .filter(|j| j["template_id"] == rule && j["state"] == "succeeded")
        .filter_map(|j| j["job_id"].as_str().map(str::to_owned))
        .collect()
}

/// Each of `names` under `prefix` landed exactly once across both executors' landing folders.
async fn each_landed_once(a: &Executor, b: &Executor, prefix: &str, names: &[String]) {
    let landed = || {
        let mut all: Vec<String> = files_under(&a.landing.join(prefix));
        all.extend(files_under(&b.landing.join(prefix)));
        all.sort();
        all
    };
    let mut wanted: Vec<String> = names.to_vec();
    wanted.sort();
    eventually(
        WAIT,
        &format!("{names:?} landed under {prefix}"),
        || async {
            let all = landed();
            Ok(wanted.iter().all(|n| all.contains(n)).then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nA: {}\nB: {}", a.log(), b.log()));
    // Give a second copy the time to show up: three heartbeats (the lease) and more.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let all = landed();
    let mut dupes = all.clone();
    dupes.dedup();
    assert_eq!(all, dupes, "a file landed twice: {all:?}");
}

/// An executor of `pool` with endpoint `shared` on the folder `shared` (open to the cloud for
/// reading, writing and removing), heartbeats every 2 s.
fn executor_on(stack: &Stack, (pool, queue): (&str, &str), shared: &Path, name: &str) -> Executor {
    Executor::start_with(
        stack,
        pool,
        queue,
        ExecutorOptions {
            name: Some(name.into()),
            heartbeat_seconds: Some(2),
            cloud_extra: "allow_source_removal = true".into(),
            extra_config: format!(
                "[endpoints.shared]\ntype = \"local\"\nroot = \"{}\"\ncloud = \"read-write\"\n",
                shared.display()
            ),
            ..Default::default()
        },
    )
    .unwrap()
}

fn holds(executor: &Executor) -> bool {
    let log = executor.log();
    let held = log.rfind("this executor holds the pool's rule lease");
    let lost = log.rfind("the pool's rule lease is held by another executor");
    held.is_some_and(|h| lost.is_none_or(|l| l < h))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_executors_of_a_pool_run_each_rule_once_and_one_takes_over_from_a_killed_holder() {
    let stack = Stack::connect().await.unwrap();
    let pool = unique("fleet");
    let queue = stack.create_pool(&pool).await.unwrap();
    let shared = tempfile::tempdir().unwrap();
    for dir in ["keep", "move", "sched"] {
        std::fs::create_dir_all(shared.path().join(dir)).unwrap();
    }
    let mut a = executor_on(&stack, (&pool, &queue.url), shared.path(), "a");
    let mut b = executor_on(&stack, (&pool, &queue.url), shared.path(), "b");
    let keep = unique("keep");
    let mv = unique("move");
    let sched = unique("sched");
    let watch = |id: &str, folder: &str, after: Value, path: &str| {
        let mut trigger = json!({"type": "watch", "source": "shared", "folder": folder,
                                 "stable_seconds": 1, "reconcile_seconds": 5});
        if let (Some(t), Some(after)) = (trigger.as_object_mut(), after.as_object()) {
            t.extend(after.clone());
        }
        json!({"id": id, "trigger": trigger,
               "destination": {"pool": pool, "endpoint": "disk", "path": path},
               "options": {"delivery": {"verify": "hash"}}})
    };
    stack
        .create_template(&watch(&keep, "keep", json!({}), "keep/{key}"))
        .await
        .unwrap();
    stack
        .create_template(&watch(
            &mv,
            "move",
            json!({"after": "move-to", "archive_folder": "archive"}),
            "move/{key}",
        ))
        .await
        .unwrap();
    for i in 0..3 {
        std::fs::write(shared.path().join(format!("sched/s{i}.txt")), "s").unwrap();
    }
    stack
        .create_template(&json!({
            "id": sched,
            "trigger": {"type": "schedule", "cron": "*/3 * * * * *", "source": "shared", "folder": "sched"},
            "destination": {"pool": pool, "endpoint": "disk", "path": "sched/{key}"}
        }))
        .await
        .unwrap();

    // One of them takes the lease; the other watches without starting anything.
    eventually(
        WAIT,
        "one executor holding the pool's rule lease",
        || async { Ok((holds(&a) || holds(&b)).then_some(())) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nA: {}\nB: {}", a.log(), b.log()));
    let first: Vec<String> = (0..4).map(|i| format!("first-{i}.txt")).collect();
    for name in &first {
        std::fs::write(shared.path().join("keep").join(name), name).unwrap();
        std::fs::write(shared.path().join("move").join(name), name).unwrap();
    }
    each_landed_once(&a, &b, "keep", &first).await;
    each_landed_once(&a, &b, "move", &first).await;
    let (holder, other) = if holds(&a) {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert!(
        succeeded(other, &keep).is_empty() && succeeded(other, &mv).is_empty(),
        "the executor without the lease started watch jobs"
    );
    // Moved only once delivered and verified: the archive holds them, the watch folder is empty.
    assert_eq!(files_under(&shared.path().join("archive")), first);
    assert!(files_under(&shared.path().join("move")).is_empty());
    // The pool's deliveries reached the cloud (and from there the other executor) before the
    // holder dies.
    stack.finished_jobs(&keep, first.len()).await.unwrap();
    let jobs = stack.jobs_of_template(&keep).await.unwrap();
    assert!(
        jobs.iter().all(|j| j["executor_id"] == holder.id.as_str()
            && j["origin_why"]
                .as_str()
                .is_some_and(|w| w.contains("holds the pool's rule lease"))),
        "each watch job's story names the holder and why: {jobs:#?}"
    );

    // The holder dies; the other takes over and nothing is lost or copied twice.
    holder.kill9();
    let then: Vec<String> = (0..3).map(|i| format!("then-{i}.txt")).collect();
    for name in &then {
        std::fs::write(shared.path().join("keep").join(name), name).unwrap();
        std::fs::write(shared.path().join("move").join(name), name).unwrap();
    }
    let all: Vec<String> = first.iter().chain(&then).cloned().collect();
    each_landed_once(holder, other, "keep", &all).await;
    each_landed_once(holder, other, "move", &all).await;
    assert!(holds(other), "the survivor took the lease: {}", other.log());
    let mut archived = all.clone();
    archived.sort();
    assert_eq!(files_under(&shared.path().join("archive")), archived);
    for name in &then {
        assert!(other.landing.join("keep").join(name).exists());
    }

    // Each scheduled time ran once, on one executor: no run succeeded on both. A run copies only
    // what the executor's landing folder lacks, so a new file keeps the runs coming.
    let ticks = std::sync::atomic::AtomicUsize::new(0);
    let runs = eventually(WAIT, "three scheduled runs in the cloud", || async {
        let n = ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::fs::write(shared.path().join(format!("sched/t{n}.txt")), "t")?;
        let jobs = stack.jobs_of_template(&sched).await?;
        let done: Vec<Value> = jobs
            .into_iter()
            .filter(|j| j["state"] == "succeeded")
            .collect();
        Ok((done.len() >= 3).then_some(done))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nA: {}\nB: {}", holder.log(), other.log()));
    let (on_a, on_b) = (succeeded(holder, &sched), succeeded(other, &sched));
    assert!(
        on_a.is_disjoint(&on_b),
        "a scheduled run ran on both executors: {:?}",
        on_a.intersection(&on_b).collect::<Vec<_>>()
    );
    for run in &runs {
        let id = run["job_id"].as_str().unwrap();
        assert!(on_a.contains(id) || on_b.contains(id), "{run:#}");
        assert!(
            run["origin_why"]
                .as_str()
                .is_some_and(|w| w.contains("came from the cloud through the pool's queue")),
            "{run:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_job_of_a_cloud_watch_rule_is_retried_from_the_api_by_the_executor_that_ran_it() {
    let stack = Stack::connect().await.unwrap();
    let pool = unique("retry");
    let queue = stack.create_pool(&pool).await.unwrap();
    let shared = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(shared.path().join("in")).unwrap();
    let executor = executor_on(&stack, (&pool, &queue.url), shared.path(), "exec");
    // A folder where the file must land: the delivery fails until someone removes it.
    let blocker = executor.landing.join("out/report.csv");
    std::fs::create_dir_all(blocker.join("in-the-way")).unwrap();
    let rule = unique("retried");
    stack
        .create_template(&json!({
            "id": rule,
            "trigger": {"type": "watch", "source": "shared", "folder": "in", "stable_seconds": 1,
                        "reconcile_seconds": 5, "after": "move-to", "archive_folder": "done"},
            "destination": {"pool": pool, "endpoint": "disk", "path": "out/{key}"},
            "options": {"delivery": {"verify": "hash"},
                        "retry": {"max_attempts": 2, "backoff_seconds": 1, "max_backoff_seconds": 1}}
        }))
        .await
        .unwrap();
    std::fs::write(shared.path().join("in/report.csv"), "a,b\n1,2\n").unwrap();
    let failed = stack
        .finished_jobs(&rule, 1)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", executor.log()));
    let id = failed[0]["job_id"].as_str().unwrap().to_owned();
    assert_eq!(failed[0]["state"], "failed", "{:#}", failed[0]);
    // Not delivered, so not archived.
    assert!(shared.path().join("in/report.csv").exists());

    // The cause goes away; an operator retries the job from the API.
    std::fs::remove_dir_all(&blocker).unwrap();
    let operator = stack.token("operator").unwrap();
    let (status, answer) = stack
        .call_with(
            Some(&operator),
            "POST",
            &format!("/api/v1/jobs/{id}/retry"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["retry_of"], id.as_str());
    assert_eq!(answer["executor_id"], executor.id.as_str());
    let retry = answer["job_id"].as_str().unwrap().to_owned();
    let done = stack
        .job_when(&retry, WAIT, "the retry to succeed", |j| {
            j["state"] == "succeeded"
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", executor.log()));
    let why = done["origin_why"].as_str().unwrap_or_default();
    assert!(
        why.contains("retried from the cloud by") && why.contains(&id),
        "{done:#}"
    );
    assert_eq!(
        std::fs::read_to_string(executor.landing.join("out/report.csv")).unwrap(),
        "a,b\n1,2\n"
    );
    // Delivered and verified: the rule's after-action follows.
    eventually(WAIT, "the retried file archived", || async {
        Ok(shared.path().join("done/report.csv").exists().then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", executor.log()));
    assert!(!shared.path().join("in/report.csv").exists());

    // A job that did not fail is not retried.
    let (status, answer) = stack
        .call_with(
            Some(&operator),
            "POST",
            &format!("/api/v1/jobs/{retry}/retry"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "{answer}");
}
