//! A scenario: a pool, a template and an executor of its own, so tests run in parallel.

use anyhow::Result;
use serde_json::Value;

use crate::*;

/// One test's own corner of the stack: a pool with its work queue, a template from `bucket` to the
/// pool's `disk` endpoint, and an executor serving the pool.
pub struct Scenario {
    pub pool: String,
    pub queue: PoolQueues,
    pub bucket: String,
    pub template: String,
    pub executor: Executor,
    /// The template's key glob and destination path.
    pub key_glob: String,
    pub path: String,
}

impl Scenario {
    /// With `bucket` = `None`, a new bucket without event notifications is made: the test delivers
    /// crafted events for its objects.
    pub async fn new(
        stack: &Stack,
        name: &str,
        bucket: Option<&str>,
        key_glob: &str,
        path: &str,
    ) -> Result<Self> {
        Self::with(
            stack,
            name,
            bucket,
            key_glob,
            path,
            ExecutorOptions::default(),
        )
        .await
    }

    pub async fn with(
        stack: &Stack,
        name: &str,
        bucket: Option<&str>,
        key_glob: &str,
        path: &str,
        opts: ExecutorOptions,
    ) -> Result<Self> {
        let pool = unique(name);
        let queue = stack.create_pool(&pool).await?;
        let bucket = match bucket {
            Some(b) => b.to_owned(),
            None => {
                let b = unique("quiet");
                stack.create_quiet_bucket(&b).await?;
                b
            }
        };
        let template = unique("tpl");
        stack
            .create_template(&template_json(&template, &bucket, key_glob, &pool, path))
            .await?;
        let executor = Executor::start_with(stack, &pool, &queue.url, opts)?;
        Ok(Self {
            pool,
            queue,
            bucket,
            template,
            executor,
            key_glob: key_glob.to_owned(),
            path: path.to_owned(),
        })
    }
}

impl Scenario {
    /// Sets the scenario's template to make one job per object (`options.per_object_jobs`), for
    /// tests about jobs one by one rather than the objects of a batch together.
    pub async fn per_object_jobs(&self, stack: &Stack) -> Result<()> {
        self.with_options(stack, serde_json::json!({"per_object_jobs": true}))
            .await
    }

    /// Replaces the scenario's template with the same one carrying `options`.
    pub async fn with_options(&self, stack: &Stack, options: Value) -> Result<()> {
        let mut template = template_json(
            &self.template,
            &self.bucket,
            &self.key_glob,
            &self.pool,
            &self.path,
        );
        template["options"] = options;
        stack.replace_template(&template).await
    }

    /// Starts a manual job of the scenario's template for each key, one key each, and waits (up
    /// to 90 s each) until every one has succeeded or failed; their ids, in the keys' order.
    pub async fn ended_jobs(&self, stack: &Stack, keys: &[&str]) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for key in keys {
            ids.push(stack.manual_job(&self.template, &[key]).await?);
        }
        for id in &ids {
            stack
                .job_when(
                    id,
                    std::time::Duration::from_secs(90),
                    "the job to end",
                    |j| ["succeeded", "failed"].contains(&j["state"].as_str().unwrap_or("")),
                )
                .await?;
        }
        Ok(ids)
    }
}

/// A template body for the API.
pub fn template_json(id: &str, bucket: &str, glob: &str, pool: &str, path: &str) -> Value {
    serde_json::json!({
        "id": id,
        "description": "end-to-end test",
        "trigger": {"type": "s3", "bucket": bucket, "key_glob": glob},
        "destination": {"pool": pool, "endpoint": "disk", "path": path}
    })
}
