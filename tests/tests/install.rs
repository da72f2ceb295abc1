//! The executor's Debian package installed for real on this machine (`dpkg -i`, as root): its
//! `postinst` makes the service user and a private configuration, the unit's own commands
//! (`ExecStartPre`, `ExecStart`) run as that user against the test stack until `doctor` passes
//! and a job lands, and `dpkg --purge` leaves only what docs/install-executor.md says is kept.
//! This machine has no systemd as PID 1, so the unit's commands run under `runuser` with the
//! unit's `User=` and `EnvironmentFile=`; `StateDirectory=` is made as systemd would make it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pbs_e2e::package::{build_deb, run, text};
use pbs_e2e::{Stack, eventually, unique};

const USER: &str = "pbs-executor";
const CONFIG: &str = "/etc/pbs-executor/executor.toml";
const ENVIRONMENT: &str = "/etc/pbs-executor/environment";
const STATE: &str = "/var/lib/pbs-executor";

/// Owner, group and permission bits of `path`.
fn owned(path: &str) -> (String, String, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let name = |flag: &str, id: u32| {
        let out = run(Command::new("getent").arg(flag).arg(id.to_string()));
        text(&out).split(':').next().unwrap_or_default().to_owned()
    };
    (
        name("passwd", meta.uid()),
        name("group", meta.gid()),
        meta.mode() & 0o7777,
    )
}

/// The command lines of `key=` in the installed unit.
fn unit_lines(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

/// `line` (a unit command line) run as the service user with the unit's environment file.
fn as_service(line: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", USER, "--"]).args(line.split_whitespace());
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let env = std::fs::read_to_string(ENVIRONMENT).unwrap();
    for pair in env
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let (k, v) = pair.split_once('=').expect("KEY=value lines");
        cmd.env(k, v);
    }
    cmd
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deb_installs_runs_its_unit_as_its_user_delivers_a_job_and_purges_clean() {
    let uid = text(&run(Command::new("id").arg("-u")));
    assert_eq!(
        uid.trim(),
        "0",
        "installing a package needs root (CI runs as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path());
    run(Command::new("dpkg").arg("-i").arg(&deb));

    // postinst: the system user, and a configuration only root and that group can read.
    let user = text(&run(Command::new("getent").args(["passwd", USER])));
    let fields: Vec<&str> = user.trim().split(':').collect();
    assert_eq!(
        (fields[5], fields[6]),
        (STATE, "/usr/sbin/nologin"),
        "{user}"
    );
    assert_eq!(
        owned("/etc/pbs-executor"),
        ("root".into(), USER.into(), 0o750)
    );
    assert_eq!(owned(CONFIG), ("root".into(), USER.into(), 0o640));
    assert_eq!(owned("/usr/bin/pbs-executor").2, 0o755);
    let files = text(&run(Command::new("dpkg").args(["-L", "pbs-executor"])));
    let unit_path = files
        .lines()
        .find(|l| l.ends_with("/systemd/system/pbs-executor.service"))
        .unwrap_or_else(|| panic!("no unit installed: {files}"))
        .to_owned();
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert_eq!(unit_lines(&unit, "User"), [USER]);

    // A configuration for the test stack, written as an operator would (sudoedit keeps the mode).
    let stack = Stack::connect().await.unwrap();
    let pool = unique("installed");
    let queue = stack.create_pool(&pool).await.unwrap();
    let landing = dir.path().join("landing");
    let tools = dir.path().join("bin");
    std::fs::create_dir_all(&landing).unwrap();
    std::fs::create_dir_all(&tools).unwrap();
    // The service user reaches only what is its own or world-readable: rclone and the landing
    // folder are put where it can.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(pbs_e2e::rclone_bin(), tools.join("rclone")).unwrap();
    run(Command::new("chown").arg(USER).arg(&landing));
    let emulator = stack.output("EmulatorUrl");
    std::fs::write(
        CONFIG,
        format!(
            r#"executor_id = "{pool}-installed"
pool = "{pool}"
state_dir = "{STATE}"
rclone = "{rclone}"
http_listen = "off"

[cloud]
region = "us-east-1"
endpoint_url = "{emulator}"
work_queue_url = "{work}"
status_queue_url = "{status}"
wait_seconds = 1

[endpoints.disk]
type = "local"
root = "{landing}"
"#,
            rclone = tools.join("rclone").display(),
            work = queue.url,
            status = stack.status_queue_url(&pool),
            landing = landing.display(),
        ),
    )
    .unwrap();
    std::fs::write(
        ENVIRONMENT,
        "AWS_ACCESS_KEY_ID=test\nAWS_SECRET_ACCESS_KEY=test\nAWS_REGION=us-east-1\n",
    )
    .unwrap();
    run(Command::new("chgrp").arg(USER).arg(ENVIRONMENT));
    std::fs::set_permissions(ENVIRONMENT, std::fs::Permissions::from_mode(0o640)).unwrap();
    // StateDirectory=pbs-executor, StateDirectoryMode=0750: what systemd makes before starting.
    run(Command::new("install").args(["-d", "-o", USER, "-g", USER, "-m", "0750", STATE]));

    // The unit's commands, as the unit runs them.
    for pre in unit_lines(&unit, "ExecStartPre") {
        run(&mut as_service(&pre));
    }
    let start = unit_lines(&unit, "ExecStart");
    assert_eq!(start.len(), 1, "{unit}");
    let log = std::fs::File::create(dir.path().join("executor.log")).unwrap();
    let daemon = Daemon(
        as_service(&start[0])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let daemon_log =
        || std::fs::read_to_string(dir.path().join("executor.log")).unwrap_or_default();
    eventually(
        Duration::from_secs(60),
        "doctor passing as the service user",
        || async {
            let out =
                as_service(&format!("/usr/bin/pbs-executor --config {CONFIG} doctor")).output()?;
            Ok(out.status.success().then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", daemon_log()));

    let bucket = unique("quiet");
    stack.create_quiet_bucket(&bucket).await.unwrap();
    let template = unique("tpl");
    stack
        .create_template(&pbs_e2e::template_json(
            &template, &bucket, "in/**", &pool, "{key}",
        ))
        .await
        .unwrap();
    stack
        .put_object(
            &bucket,
            "in/delivered.txt",
            b"installed and running".to_vec(),
        )
        .await
        .unwrap();
    stack
        .manual_job(&template, &["in/delivered.txt"])
        .await
        .unwrap();
    let landed = landing.join("in/delivered.txt");
    eventually(
        Duration::from_secs(90),
        "the job's file landing",
        || async { Ok(landed.exists().then_some(())) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", daemon_log()));
    assert_eq!(std::fs::read(&landed).unwrap(), b"installed and running");
    let log = daemon_log();
    assert!(
        log.lines()
            .any(|l| l.starts_with('{') && l.contains("job succeeded")),
        "JSON log lines, as the unit asks: {log}"
    );
    assert_eq!(owned(landed.to_str().unwrap()).0, USER);
    drop(daemon);

    // Purge: the package's files and the whole configuration go; the state and the user stay.
    run(Command::new("dpkg").args(["--purge", "pbs-executor"]));
    for gone in [
        "/usr/bin/pbs-executor",
        "/etc/pbs-executor",
        unit_path.as_str(),
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is left after the purge");
    }
    assert!(Path::new(STATE).join("ledger.sqlite").exists());
    run(Command::new("getent").args(["passwd", USER]));
}
