//! End-to-end: folder transfers a person starts through the API (`POST /api/v1/transfers`)
//! between the endpoints of one site (Samba, OpenSSH, S3 and a local folder), run by a real
//! executor with rclone: filters, unicode names, a 100 MiB file, byte-identical and verified; a
//! second run that finds nothing new copies nothing; `sync` with its delete guard and backup
//! folder; `move` that keeps the source of a file it could not deliver; dry runs; and transfers
//! refused for endpoints the site does not publish or keeps from the cloud; a transfer between
//! two sites through the staging area, shown as one flow of two steps; and the console's
//! New transfer form in Chromium (screenshots in `artifacts/console/`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use pbs_e2e::browser::Browser;
use pbs_e2e::site::Site;
use pbs_e2e::{Executor, ExecutorOptions, body, unique, workspace_root};
use serde_json::{Value, json};

const MIB: usize = 1024 * 1024;

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Files under `root`, relative, with their contents.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    pbs_e2e::files_under(root)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// Waits until the site's executor has published its endpoints with a heartbeat.
async fn published(site: &Site) {
    site.stack
        .endpoints_published(&site.executor.id)
        .await
        .unwrap();
}

/// Starts a transfer in the site's pool; its job id.
async fn start(site: &Site, mut body: Value) -> String {
    body["source"]["pool"] = json!(site.pool);
    body["destination"]["pool"] = json!(site.pool);
    body["retry"] = json!({"max_attempts": 1});
    let (status, answer) = site
        .stack
        .call("POST", "/api/v1/transfers", Some(&body))
        .await
        .unwrap();
    assert_eq!(status, 201, "{answer}");
    answer["job_id"].as_str().unwrap().to_owned()
}

/// The job once it has ended, and its delivery report's outcome per path (the source key, or
/// the destination path for a file removed from the destination).
async fn ended(site: &Site, job_id: &str) -> (Value, BTreeMap<String, String>) {
    let job = site
        .stack
        .job_when(
            job_id,
            Duration::from_secs(180),
            "the transfer's end",
            |j| matches!(j["state"].as_str(), Some("succeeded" | "failed")),
        )
        .await
        .unwrap();
    let report = site.stack.report(job_id).await.unwrap();
    let outcomes = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let key = r["key"].as_str().unwrap();
            let at = if key.is_empty() {
                r["dest_path"].as_str().unwrap()
            } else {
                key
            };
            (at.to_owned(), r["outcome"].as_str().unwrap().to_owned())
        })
        .collect();
    (job, outcomes)
}

fn outcomes(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn folder_transfers_between_sftp_smb_s3_and_local_are_identical_and_a_rerun_copies_nothing() {
    let site = Site::start("transfer", ExecutorOptions::default()).await;
    let big = body(100 * MIB, 7);
    let exports = site.sftp.root.join("exports");
    write(&exports, "a.csv", b"alpha");
    write(&exports, "deep/é ü 名.csv", "unicode".as_bytes());
    write(&exports, "deep/big.csv", &big);
    write(&exports, "tmp/skip.csv", b"excluded");
    write(&exports, "notes.txt", b"not included");
    published(&site).await;

    // SFTP -> SMB, filtered, hash-verified.
    let sftp_to_smb = json!({
        "source": {"endpoint": "drop", "folder": "exports", "include": ["**/*.csv"], "exclude": ["tmp/**"]},
        "destination": {"endpoint": "nas", "folder": "in"},
        "delivery": {"verify": "hash"},
    });
    let id = start(&site, sftp_to_smb.clone()).await;
    let (job, report) = ended(&site, &id).await;
    assert_eq!(
        job["state"],
        "succeeded",
        "{job:#}\n{}",
        site.executor.log()
    );
    let copied = outcomes(&[
        ("exports/a.csv", "copied"),
        ("exports/deep/big.csv", "copied"),
        ("exports/deep/é ü 名.csv", "copied"),
    ]);
    assert_eq!(report, copied);
    // Progress, when the copy lasted long enough to report any, counts the files it found.
    if let Some(progress) = job.get("progress") {
        assert_eq!(progress["files_total"], 3, "{job:#}");
    }
    let landed = tree(&site.smb.root.join("in"));
    let want: BTreeMap<String, Vec<u8>> = [
        ("a.csv".to_owned(), b"alpha".to_vec()),
        ("deep/big.csv".to_owned(), big.clone()),
        ("deep/é ü 名.csv".to_owned(), "unicode".as_bytes().to_vec()),
    ]
    .into();
    assert!(
        landed == want,
        "the share holds {:?}",
        landed.keys().collect::<Vec<_>>()
    );

    // Nothing changed: the second run copies nothing and says so for every file.
    let again = start(&site, sftp_to_smb).await;
    let (job, report) = ended(&site, &again).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(job["result"]["files"], 0, "{job:#}");
    assert!(report.values().all(|o| o == "unchanged"), "{report:?}");
    assert_eq!(report.len(), 3);

    // SMB -> SMB, SFTP -> SFTP, SMB -> S3 and local -> S3, small files.
    write(site.outbox.path(), "out/x.txt", b"from the outbox");
    write(site.outbox.path(), "out/sub/y z.txt", b"and below");
    let routes = [
        ("nas", "in", "nas", "copy-of-in"),
        ("drop", "exports", "drop", "mirror"),
        ("nas", "in", "vault", "from-nas"),
        ("outbox", "out", "vault", "from-outbox"),
    ];
    for (source, folder, dest, to) in routes {
        let id = start(
            &site,
            json!({
                "source": {"endpoint": source, "folder": folder, "exclude": ["**/big.csv"]},
                "destination": {"endpoint": dest, "folder": to},
                "delivery": {"verify": "hash"},
            }),
        )
        .await;
        let (job, report) = ended(&site, &id).await;
        assert_eq!(job["state"], "succeeded", "{source} -> {dest}: {job:#}");
        assert!(
            !report.is_empty() && report.values().all(|o| o == "copied"),
            "{source} -> {dest}: {report:?}"
        );
    }
    assert_eq!(
        std::fs::read(site.smb.root.join("copy-of-in/deep/é ü 名.csv")).unwrap(),
        "unicode".as_bytes()
    );
    assert_eq!(
        std::fs::read(site.sftp.root.join("mirror/notes.txt")).unwrap(),
        b"not included"
    );
    assert_eq!(site.vault_object("from-nas/a.csv").await.unwrap(), b"alpha");
    assert_eq!(
        site.vault_object("from-outbox/sub/y z.txt").await.unwrap(),
        b"and below"
    );
    assert!(
        site.vault_object("from-nas/deep/big.csv").await.is_none(),
        "excluded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_mirrors_within_its_delete_guard_and_a_move_keeps_what_it_could_not_deliver() {
    let site = Site::start("sync", ExecutorOptions::default()).await;
    let (src, mirror) = (site.sftp.root.join("src"), site.smb.root.join("mirror"));
    write(&src, "keep.txt", b"kept");
    write(&src, "new.txt", b"new");
    write(&mirror, "old1.txt", b"gone 1");
    write(&mirror, "old2.txt", b"gone 2");
    published(&site).await;
    let sync = |extra: Value| {
        let mut body = json!({
            "source": {"endpoint": "drop", "folder": "src"},
            "destination": {"endpoint": "nas", "folder": "mirror"},
            "mode": "sync",
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let before = tree(&mirror);

    // Over the guard: fails before copying or deleting anything.
    let id = start(&site, sync(json!({"max_delete": 1}))).await;
    let (job, _) = ended(&site, &id).await;
    assert_eq!(
        (job["state"].as_str(), job["error_class"].as_str()),
        (Some("failed"), Some("conflict")),
        "{job:#}"
    );
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("would delete 2 file(s)"),
        "{job:#}"
    );
    assert_eq!(tree(&mirror), before, "nothing changed");

    // A dry run says what a run would do, and does nothing.
    let id = start(&site, sync(json!({"dry_run": true}))).await;
    let (job, report) = ended(&site, &id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let plan = outcomes(&[
        ("src/keep.txt", "would_copy"),
        ("src/new.txt", "would_copy"),
        ("mirror/old1.txt", "would_delete"),
        ("mirror/old2.txt", "would_delete"),
    ]);
    assert_eq!(report, plan);
    assert_eq!(tree(&mirror), before, "a dry run changes nothing");

    // With a backup folder: what the source lost moves there.
    let id = start(&site, sync(json!({"backup_folder": "attic"}))).await;
    let (job, report) = ended(&site, &id).await;
    assert_eq!(
        job["state"],
        "succeeded",
        "{job:#}\n{}",
        site.executor.log()
    );
    assert_eq!(report["mirror/old1.txt"], "backed_up", "{report:?}");
    let mirrored: Vec<String> = tree(&mirror).into_keys().collect();
    assert_eq!(mirrored, ["keep.txt", "new.txt"]);
    assert_eq!(
        std::fs::read(site.smb.root.join("attic/old2.txt")).unwrap(),
        b"gone 2"
    );

    // Without one: deleted. What is unchanged is not copied again.
    write(&mirror, "stray.txt", b"stray");
    std::fs::remove_file(src.join("new.txt")).unwrap();
    let id = start(&site, sync(json!({}))).await;
    let (job, report) = ended(&site, &id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let want = outcomes(&[
        ("src/keep.txt", "unchanged"),
        ("mirror/new.txt", "deleted"),
        ("mirror/stray.txt", "deleted"),
    ]);
    assert_eq!(report, want);
    let mirrored: Vec<String> = tree(&mirror).into_keys().collect();
    assert_eq!(mirrored, ["keep.txt"]);

    // Move: delivered and verified files leave the source; one the destination cannot take stays.
    let outgoing = site.sftp.root.join("outgoing");
    write(&outgoing, "one.txt", b"one");
    write(&outgoing, "two/two.txt", b"two");
    write(&outgoing, "back\\slash.txt", b"no such name on a share");
    // The server's account owns what a partner would have uploaded.
    let owned = std::process::Command::new("chown")
        .args(["-R", site.sftp.user])
        .arg(&outgoing)
        .status()
        .unwrap();
    assert!(owned.success());
    let id = start(
        &site,
        json!({
            "source": {"endpoint": "drop", "folder": "outgoing"},
            "destination": {"endpoint": "nas", "folder": "picked-up"},
            "mode": "move",
            "delivery": {"verify": "hash"},
        }),
    )
    .await;
    let (job, report) = ended(&site, &id).await;
    assert_eq!(
        job["state"], "failed",
        "one file could not be delivered: {job:#}"
    );
    assert_eq!(report["outgoing/one.txt"], "moved", "{report:?}\n{job:#}");
    assert_eq!(report["outgoing/two/two.txt"], "moved", "{report:?}");
    assert_eq!(
        report["outgoing/back\\slash.txt"], "not_delivered",
        "{report:?}"
    );
    let left: Vec<String> = tree(&outgoing).into_keys().collect();
    assert_eq!(
        left,
        ["back\\slash.txt"],
        "only the undelivered file stays at the source"
    );
    assert_eq!(
        std::fs::read(site.smb.root.join("picked-up/two/two.txt")).unwrap(),
        b"two"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_the_site_does_not_offer_is_refused_naming_the_endpoint() {
    let site = Site::start_with("offer", ExecutorOptions::default(), |_, _| {
        "[endpoints.sealed]\ntype = \"local\"\nroot = \"/tmp\"\ncloud = \"write\"\n".to_owned()
    })
    .await;
    published(&site).await;
    let ask = |source: &str, dest: &str, mode: &str| {
        json!({
            "source": {"pool": site.pool, "endpoint": source, "folder": "x"},
            "destination": {"pool": site.pool, "endpoint": dest, "folder": "y"},
            "mode": mode,
        })
    };
    for (body, field, says) in [
        (
            ask("ghost", "nas", "copy"),
            "source.endpoint",
            "publishes an endpoint named ghost",
        ),
        (
            ask("sealed", "nas", "copy"),
            "source.endpoint",
            "endpoint sealed of pool",
        ),
        (
            ask("drop", "sealed", "sync"),
            "destination.endpoint",
            "may not be deleted from (a sync)",
        ),
    ] {
        let (status, answer) = site
            .stack
            .call("POST", "/api/v1/transfers", Some(&body))
            .await
            .unwrap();
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
}

/// The outcomes in the job page's delivery report table, sorted.
async fn shown_outcomes(browser: &Browser) -> Vec<String> {
    browser
        .wait_for("#report tbody tr", Duration::from_secs(30))
        .await
        .unwrap();
    let v = browser
        .execute(
            "return [...document.querySelectorAll('#report tbody tr')].map((r) => r.dataset.outcome).sort();",
            json!([]),
        )
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

/// The New transfer form, from the site's SFTP `console-in` to its share's `console-out`.
async fn fill_form(browser: &Browser, console: &str, pool: &str, mode: &str) {
    browser
        .goto(&format!("{console}#/transfers"))
        .await
        .unwrap();
    browser
        .wait_for("#tr-pool", Duration::from_secs(20))
        .await
        .unwrap();
    browser.fill("#tr-pool", pool).await.unwrap();
    browser.fill("#tr-source", "drop").await.unwrap();
    browser.fill("#tr-folder", "console-in").await.unwrap();
    browser.fill("#tr-dest", "nas").await.unwrap();
    browser
        .fill("#tr-dest-folder", "console-out")
        .await
        .unwrap();
    browser.fill("#tr-mode", mode).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_form_dry_runs_and_starts_an_sftp_to_smb_transfer() {
    let site = Site::start("console-tr", ExecutorOptions::default()).await;
    write(&site.sftp.root.join("console-in"), "a.txt", b"alpha");
    write(&site.sftp.root.join("console-in"), "b/c d.txt", b"charlie");
    write(&site.smb.root.join("console-out"), "old.txt", b"stale");
    published(&site).await;
    let console = format!("{}/console", site.stack.output("LocalApiUrl"));
    let token = site.stack.token("operator").unwrap();
    let browser = Browser::signed_in(&console, &token).await.unwrap();
    let shot = |name: &str| workspace_root().join(format!("artifacts/console/{name}.png"));

    // A sync's dry run: the form says what a sync does, the job lists what it would copy and
    // delete, and nothing changes.
    fill_form(&browser, &console, &site.pool, "sync").await;
    let said = browser.text("#tr-mode-text").await.unwrap();
    assert!(
        said.contains("mirror") && said.contains("deletes"),
        "{said}"
    );
    browser.screenshot(&shot("transfer-form")).await.unwrap();
    browser.click("#tr-dry-run").await.unwrap();
    browser
        .wait_state("#job-state", "succeeded", Duration::from_secs(120))
        .await
        .unwrap();
    assert!(
        browser
            .text("#job-transfer")
            .await
            .unwrap()
            .starts_with("sync (dry run)")
    );
    assert_eq!(
        shown_outcomes(&browser).await,
        ["would_copy", "would_copy", "would_delete"]
    );
    browser.screenshot(&shot("transfer-dry-run")).await.unwrap();
    assert!(
        !site.smb.root.join("console-out/a.txt").exists(),
        "a dry run copies nothing"
    );

    // The transfer itself, a copy.
    fill_form(&browser, &console, &site.pool, "copy").await;
    browser.click("#tr-start").await.unwrap();
    browser
        .wait_state("#job-state", "succeeded", Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(shown_outcomes(&browser).await, ["copied", "copied"]);
    browser.screenshot(&shot("transfer-done")).await.unwrap();
    let landed = tree(&site.smb.root.join("console-out"));
    assert_eq!(
        landed.keys().collect::<Vec<_>>(),
        ["a.txt", "b/c d.txt", "old.txt"]
    );
    assert_eq!(landed["b/c d.txt"], b"charlie");

    // A saved transfer (an admin's template of trigger type manual), run from the list.
    let saved = unique("saved");
    let template = json!({
        "id": saved,
        "trigger": {"type": "manual", "source": "drop", "folder": "console-in", "include": ["b/**"]},
        "destination": {"pool": site.pool, "endpoint": "nas", "path": "saved-out"},
    });
    site.stack.create_template(&template).await.unwrap();
    browser
        .goto(&format!("{console}#/transfers"))
        .await
        .unwrap();
    let row = format!("#saved-transfers tr[data-template='{saved}']");
    browser
        .wait_for(&row, Duration::from_secs(20))
        .await
        .unwrap();
    browser
        .execute(
            "document.querySelector(arguments[0]).scrollIntoView();",
            json!([row]),
        )
        .await
        .unwrap();
    browser.screenshot(&shot("saved-transfers")).await.unwrap();
    browser.click(&format!("{row} .run-now")).await.unwrap();
    browser
        .wait_state("#job-state", "succeeded", Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(shown_outcomes(&browser).await, ["copied"]);
    assert_eq!(
        std::fs::read(site.smb.root.join("saved-out/b/c d.txt")).unwrap(),
        b"charlie"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_between_two_sites_goes_through_staging_as_one_flow_of_two_steps() {
    let site = Site::start("site-a", ExecutorOptions::default()).await;
    let stack = &site.stack;
    let pool_b = unique("site-b");
    let queue_b = stack.create_pool(&pool_b).await.unwrap();
    let site_b =
        Executor::start_with(stack, &pool_b, &queue_b.url, ExecutorOptions::default()).unwrap();
    let big = body(8 * MIB, 3);
    let outgoing = site.sftp.root.join("to-site-b");
    write(&outgoing, "reel/r1.bin", &big);
    write(&outgoing, "notes é.txt", b"for site b");
    published(&site).await;
    stack.endpoints_published(&site_b.id).await.unwrap();

    let body = json!({
        "source": {"pool": site.pool, "endpoint": "drop", "folder": "to-site-b"},
        "destination": {"pool": pool_b, "endpoint": "disk", "folder": "from-a"},
        "delivery": {"verify": "hash"},
        "retry": {"max_attempts": 1},
    });
    let (status, answer) = stack
        .call("POST", "/api/v1/transfers", Some(&body))
        .await
        .unwrap();
    assert_eq!(status, 201, "{answer}");
    let first = answer["job_id"].as_str().unwrap().to_owned();
    let staged = stack
        .job_when(
            &first,
            Duration::from_secs(120),
            "the staging step's end and next step",
            |j| j["state"] == "failed" || (j["state"] == "succeeded" && j["next_job"].is_string()),
        )
        .await
        .unwrap();
    assert_eq!(
        staged["state"],
        "succeeded",
        "{staged:#}\n{}",
        site.executor.log()
    );
    assert_eq!(staged["destination"], "staging");
    let second = staged["next_job"].as_str().unwrap().to_owned();
    let delivered = stack
        .job_when(
            &second,
            Duration::from_secs(120),
            "the delivery step's end",
            |j| matches!(j["state"].as_str(), Some("succeeded" | "failed")),
        )
        .await
        .unwrap();
    assert_eq!(
        delivered["state"],
        "succeeded",
        "{delivered:#}\n{}",
        site_b.log()
    );
    assert_eq!(
        (delivered["pool"].as_str(), delivered["parent_job"].as_str()),
        (Some(pool_b.as_str()), Some(first.as_str()))
    );
    assert_eq!(site_b.landed("from-a/reel/r1.bin").await.unwrap(), big);
    assert_eq!(
        site_b.landed("from-a/notes é.txt").await.unwrap(),
        b"for site b"
    );

    // One flow of two steps, and the staged copy removed once delivered.
    let (_, flow) = stack
        .call("GET", &format!("/api/v1/jobs/{second}/flow"), None)
        .await
        .unwrap();
    let steps: Vec<&str> = flow["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(steps, [first.as_str(), second.as_str()]);
    stack.staged_removed(&site.pool, &first).await.unwrap();
}
