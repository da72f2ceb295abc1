//! A site for the endpoint and transfer suites: one pool's executor with an endpoint of every
//! kind (`nas` on Samba, `drop` and `drop-key` on OpenSSH, `vault` in an S3 bucket, `outbox` a
//! local folder), each open to the cloud for reading and writing, and the servers behind them.

use serde_json::{Value, json};

use crate::servers::{SftpServer, SmbServer};
use crate::{Executor, ExecutorOptions, PoolQueues, Stack, unique};

/// One pool's executor with every kind of endpoint, and the servers behind them.
pub struct Site {
    pub stack: Stack,
    pub smb: SmbServer,
    pub sftp: SftpServer,
    /// Bucket behind the `vault` endpoint (prefix `backup/`).
    pub vault: String,
    /// Folder behind the `outbox` endpoint (a local source).
    pub outbox: tempfile::TempDir,
    pub pool: String,
    pub queue: PoolQueues,
    pub executor: Executor,
}

impl Site {
    pub async fn start(name: &str, opts: ExecutorOptions) -> Self {
        Self::start_with(name, opts, |_, _| String::new()).await
    }

    /// `more` adds configuration that needs the servers' ports.
    pub async fn start_with(
        name: &str,
        mut opts: ExecutorOptions,
        more: impl FnOnce(&SmbServer, &SftpServer) -> String,
    ) -> Self {
        let stack = Stack::connect().await.unwrap();
        let smb = SmbServer::start().unwrap();
        let sftp = SftpServer::start().unwrap();
        opts.extra_config.push_str(&more(&smb, &sftp));
        let vault = unique("vault");
        stack.create_quiet_bucket(&vault).await.unwrap();
        let outbox = tempfile::tempdir().unwrap();
        let pool = unique(name);
        let queue = stack.create_pool(&pool).await.unwrap();
        opts.extra_config = format!(
            r#"[endpoints.nas]
type = "smb"
cloud = "read-write"
host = "127.0.0.1"
port = {smb_port}
share = "files"
user = "{user}"
password_env = "PBS_NAS_PASSWORD"

[endpoints.drop]
type = "sftp"
cloud = "read-write"
host = "127.0.0.1"
port = {sftp_port}
user = "{user}"
root = "{sftp_root}"
password_env = "PBS_DROP_PASSWORD"
known_hosts_file = "{known_hosts}"

[endpoints.drop-key]
type = "sftp"
cloud = "read-write"
host = "127.0.0.1"
port = {sftp_port}
user = "{user}"
root = "{sftp_root}"
key_file = "{key_file}"
known_hosts_file = "{known_hosts}"
hash = "none"

[endpoints.vault]
type = "s3"
cloud = "read-write"
bucket = "{vault}"
root = "backup"
endpoint_url = "{emulator}"

[endpoints.outbox]
type = "local"
cloud = "read-write"
root = "{outbox}"

{more}"#,
            smb_port = smb.port,
            user = smb.user,
            sftp_port = sftp.port,
            sftp_root = sftp.root.display(),
            known_hosts = sftp.known_hosts.display(),
            key_file = sftp.key_file.display(),
            emulator = stack.output("EmulatorUrl"),
            outbox = outbox.path().display(),
            more = opts.extra_config,
        );
        opts.env.extend([
            ("PBS_NAS_PASSWORD".to_owned(), smb.password.clone()),
            ("PBS_DROP_PASSWORD".to_owned(), sftp.password.clone()),
        ]);
        let executor = Executor::start_with(&stack, &pool, &queue.url, opts).unwrap();
        Self {
            stack,
            smb,
            sftp,
            vault,
            outbox,
            pool,
            queue,
            executor,
        }
    }

    /// A template from the source bucket's `prefix` to `endpoint`, with hash verification.
    pub async fn template(&self, prefix: &str, endpoint: &str, path: &str) -> String {
        let id = unique("tpl");
        self.stack
            .create_template(&json!({
                "id": id,
                "trigger": {"type": "s3", "bucket": self.stack.source_bucket(), "key_glob": format!("{prefix}/**")},
                "destination": {"pool": self.pool, "endpoint": endpoint, "path": path},
                "options": {"delivery": {"verify": "hash"}, "retry": {"max_attempts": 1}, "per_object_jobs": true}
            }))
            .await
            .unwrap();
        id
    }

    /// Sends a job copying `files` (paths under the source endpoint) to `dest` under `to/`.
    pub async fn send_job(
        &self,
        source: &str,
        dest: &str,
        files: &[(&str, u64)],
        to: &str,
        delivery: Value,
    ) -> String {
        let job_id = unique("manual");
        let files: Vec<Value> = files
            .iter()
            .map(
                |(rel, size)| json!({"key": rel, "size": size, "dest_path": format!("{to}/{rel}")}),
            )
            .collect();
        let job = json!({
            "v": 1,
            "job_id": job_id,
            "template_id": "manual",
            "pool": self.pool,
            "source": {"type": "endpoint", "endpoint": source},
            "files": files,
            "destination": dest,
            "retry": {"max_attempts": 1},
            "delivery": delivery,
            "created_at": chrono::Utc::now().to_rfc3339(),
        });
        self.stack.send_job(&self.queue.url, &job).await.unwrap();
        job_id
    }

    pub async fn vault_object(&self, key: &str) -> Option<Vec<u8>> {
        let out = self
            .stack
            .s3
            .get_object()
            .bucket(&self.vault)
            .key(format!("backup/{key}"))
            .send()
            .await
            .ok()?;
        Some(out.body.collect().await.ok()?.into_bytes().to_vec())
    }

    pub async fn succeeded(&self, job_id: &str) -> Value {
        let row = self.executor.finished(job_id).await.unwrap();
        assert_eq!(
            row["state"],
            "succeeded",
            "{row:#}\nexecutor log:\n{}",
            self.executor.log()
        );
        row
    }
}
