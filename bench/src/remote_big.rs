//! (d) over the network: one big object delivered to an SFTP server and an SMB share with
//! `verify = "hash"` (the SFTP server hashes the landed file with `md5sum`; SMB has no hashes, so
//! the executor reads the landed file back), against raw `rclone copyto` of the same object to
//! the same place without verification: the cost of proof where it is dearest.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pbs_e2e::servers::{SftpServer, SmbServer};
use pbs_e2e::{Executor, ExecutorOptions, Stack, eventually, template_json, unique};

use crate::Row;

/// A destination the bench delivers to: the executor's endpoint, and raw rclone's remote.
struct Target {
    name: &'static str,
    /// The endpoint's TOML.
    toml: String,
    /// rclone's `DST` remote for the raw run, and the path under it.
    raw_env: Vec<(String, String)>,
    raw_path: String,
}

fn obscured(password: &str) -> Result<String> {
    let out = Command::new(pbs_e2e::rclone_bin())
        .args(["obscure", password])
        .env("RCLONE_CONFIG", "/dev/null")
        .output()?;
    if !out.status.success() {
        bail!("rclone obscure failed");
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

fn sftp(server: &SftpServer) -> Result<Target> {
    Ok(Target {
        name: "sftp",
        toml: format!(
            "[endpoints.sftp]\ntype = \"sftp\"\ncloud = \"write\"\nhost = \"127.0.0.1\"\nport = {}\n\
             user = \"{}\"\nroot = \"{}\"\npassword_env = \"PBS_BENCH_SFTP\"\nknown_hosts_file = \"{}\"\n",
            server.port,
            server.user,
            server.root.display(),
            server.known_hosts.display()
        ),
        raw_env: vec![
            ("RCLONE_CONFIG_DST_TYPE".into(), "sftp".into()),
            ("RCLONE_CONFIG_DST_HOST".into(), "127.0.0.1".into()),
            ("RCLONE_CONFIG_DST_PORT".into(), server.port.to_string()),
            ("RCLONE_CONFIG_DST_USER".into(), server.user.into()),
            ("RCLONE_CONFIG_DST_PASS".into(), obscured(&server.password)?),
            (
                "RCLONE_CONFIG_DST_KNOWN_HOSTS_FILE".into(),
                server.known_hosts.display().to_string(),
            ),
        ],
        raw_path: format!("{}/raw.bin", server.root.display()),
    })
}

fn smb(server: &SmbServer) -> Result<Target> {
    Ok(Target {
        name: "smb",
        toml: format!(
            "[endpoints.smb]\ntype = \"smb\"\ncloud = \"write\"\nhost = \"127.0.0.1\"\nport = {}\n\
             share = \"{}\"\nuser = \"{}\"\npassword_env = \"PBS_BENCH_SMB\"\n",
            server.port, server.share, server.user
        ),
        raw_env: vec![
            ("RCLONE_CONFIG_DST_TYPE".into(), "smb".into()),
            ("RCLONE_CONFIG_DST_HOST".into(), "127.0.0.1".into()),
            ("RCLONE_CONFIG_DST_PORT".into(), server.port.to_string()),
            ("RCLONE_CONFIG_DST_USER".into(), server.user.into()),
            ("RCLONE_CONFIG_DST_PASS".into(), obscured(&server.password)?),
        ],
        raw_path: format!("{}/raw.bin", server.share),
    })
}

/// Raw `rclone copyto SRC:bucket/key DST:path`, no verification beyond rclone's own.
fn raw_copy(stack: &Stack, key: &str, target: &Target) -> Result<Duration> {
    crate::raw_rclone_with(
        stack.output("EmulatorUrl"),
        &[
            "copyto".into(),
            format!("SRC:{}/{key}", stack.source_bucket()).into(),
            format!("DST:{}", target.raw_path).into(),
        ],
        &target.raw_env,
    )
    .with_context(|| format!("raw rclone to {}", target.name))
}

/// The rows for a `mib` MiB object to SFTP and to SMB, verified by hash.
pub async fn rows(stack: &Stack, mib: usize) -> Result<Vec<Row>> {
    let (sftp_server, smb_server) = (SftpServer::start()?, SmbServer::start()?);
    let targets = [sftp(&sftp_server)?, smb(&smb_server)?];
    let pool = unique("bigremote");
    let queue = stack.create_pool(&pool).await?;
    let executor = Executor::start_with(
        stack,
        &pool,
        &queue.url,
        ExecutorOptions {
            extra_config: targets.iter().map(|t| t.toml.as_str()).collect(),
            env: vec![
                ("PBS_BENCH_SFTP".into(), sftp_server.password.clone()),
                ("PBS_BENCH_SMB".into(), smb_server.password.clone()),
            ],
            ..Default::default()
        },
    )?;
    let body = pbs_e2e::body(mib << 20, 11);
    let mut rows = Vec::new();
    for target in &targets {
        let prefix = unique("bigremote");
        let tpl = unique("tplremote");
        let mut template = template_json(
            &tpl,
            stack.source_bucket(),
            &format!("{prefix}/**"),
            &pool,
            "{key}",
        );
        template["destination"]["endpoint"] = target.name.into();
        template["options"] = serde_json::json!({"delivery": {"verify": "hash"}});
        stack.create_template(&template).await?;
        let key = format!("{prefix}/{mib}MiB.bin");
        stack
            .put_object(stack.source_bucket(), &key, body.clone())
            .await?;
        let job = eventually(
            Duration::from_secs(3600),
            "the big object's job",
            || async {
                let job = crate::job_of(stack, &tpl, &key).await?;
                if let Some(j) = &job
                    && j["state"] == "failed"
                {
                    bail!("the job failed: {j:#}\n{}", executor.log());
                }
                Ok(job.filter(|j| j["state"] == "succeeded"))
            },
        )
        .await?;
        let system =
            Duration::from_millis(job["result"]["duration_ms"].as_u64().unwrap_or_default());
        let raw = raw_copy(stack, &key, target)?;
        rows.push(
            Row::new(
                format!(
                    "(d) one {mib} MiB object to {}, verify = hash (job duration)",
                    target.name
                ),
                format!("{:.2} s", system.as_secs_f64()),
                "",
            )
            .against(raw, system),
        );
    }
    Ok(rows)
}
