//! End-to-end: an endpoint password kept as a systemd encrypted credential. `pbs-executor
//! secrets seal` seals it with `systemd-creds` (the host key) and writes the unit drop-in; the
//! sealed file does not hold the password in clear. These machines do not run systemd as PID 1,
//! so no unit can start: the test does what `LoadCredentialEncrypted=` does when the unit starts
//! (`systemd-creds decrypt` into a private credentials directory), then runs the executor with
//! `$CREDENTIALS_DIRECTORY` pointing there, and a job reaches the Samba share with the password.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use pbs_e2e::servers::SmbServer;
use pbs_e2e::{Executor, ExecutorOptions, Stack, executor_bin, unique};
use serde_json::json;

/// `pbs-executor secrets seal <name>` with `password` on standard input.
fn seal(name: &str, password: &str, dir: &std::path::Path) -> std::process::Output {
    let mut child = Command::new(executor_bin())
        .args(["secrets", "seal", name, "--with-key", "host", "--dir"])
        .arg(dir.join("creds"))
        .arg("--unit-dir")
        .arg(dir.join("unit"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_smb_password_sealed_as_a_systemd_credential_reaches_the_share() {
    let stack = Stack::connect().await.unwrap();
    let smb = SmbServer::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let name = "nas-password";

    let sealed = seal(name, &smb.password, work.path());
    assert!(
        sealed.status.success(),
        "{}",
        String::from_utf8_lossy(&sealed.stderr)
    );
    let said = String::from_utf8_lossy(&sealed.stdout);
    assert!(
        said.contains("password_credential = \"nas-password\""),
        "{said}"
    );
    assert!(
        !said.contains(&smb.password),
        "the password is never printed"
    );
    let cred = work.path().join("creds/nas-password.cred");
    let bytes = std::fs::read(&cred).unwrap();
    let clear = smb.password.as_bytes();
    assert!(
        !bytes.windows(clear.len()).any(|w| w == clear),
        "the sealed file holds no clear password"
    );
    assert_eq!(
        std::fs::metadata(&cred).unwrap().permissions().mode() & 0o077,
        0
    );
    let dropin =
        std::fs::read_to_string(work.path().join("unit/credential-nas-password.conf")).unwrap();
    assert!(
        dropin.contains(&format!(
            "LoadCredentialEncrypted=nas-password:{}",
            cred.display()
        )),
        "{dropin}"
    );

    // What systemd does when the unit starts: the credential, decrypted, in a private directory.
    let credentials = work.path().join("run-credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o500)).unwrap();
    let target = credentials.join(name);
    let decrypted = Command::new("systemd-creds")
        .args(["decrypt", &format!("--name={name}")])
        .arg(&cred)
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        decrypted.status.success(),
        "{}",
        String::from_utf8_lossy(&decrypted.stderr)
    );
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o400)).unwrap();

    let pool = unique("sealed");
    let queue = stack.create_pool(&pool).await.unwrap();
    let opts = ExecutorOptions {
        extra_config: format!(
            "[endpoints.nas]\ntype = \"smb\"\nhost = \"127.0.0.1\"\nport = {}\nshare = \"{}\"\nuser = \"{}\"\npassword_credential = \"{name}\"\n",
            smb.port, smb.share, smb.user
        ),
        env: vec![(
            "CREDENTIALS_DIRECTORY".into(),
            credentials.display().to_string(),
        )],
        ..Default::default()
    };
    let executor = Executor::start_with(&stack, &pool, &queue.url, opts).unwrap();
    std::fs::write(
        executor.landing.join("sealed.txt"),
        b"through the credential",
    )
    .unwrap();
    let job_id = unique("manual");
    let job = json!({
        "v": 1, "job_id": job_id, "template_id": "manual", "pool": pool,
        "source": {"type": "endpoint", "endpoint": "disk"},
        "files": [{"key": "sealed.txt", "size": 22, "dest_path": "in/sealed.txt"}],
        "destination": "nas", "retry": {"max_attempts": 1},
        "created_at": chrono::Utc::now().to_rfc3339(),
    });
    stack.send_job(&queue.url, &job).await.unwrap();
    let row = executor.finished(&job_id).await.unwrap();
    assert_eq!(row["state"], "succeeded", "{row:#}\n{}", executor.log());
    assert_eq!(
        std::fs::read(smb.root.join("in/sealed.txt")).unwrap(),
        b"through the credential"
    );

    // Outside such a unit the executor says what is missing, naming the field.
    let config = executor.config_path.clone();
    let out = Command::new(executor_bin())
        .args(["--config"])
        .arg(&config)
        .arg("check-config")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("endpoints.nas.password_credential")
            && said.contains("$CREDENTIALS_DIRECTORY is not set"),
        "{said}"
    );
}
