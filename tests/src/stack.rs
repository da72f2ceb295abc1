//! The deployed stack: its outputs, AWS SDK clients for it, the API with dev-issuer tokens,
//! pools made per test.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;

use crate::*;

/// The deployed stack and clients for it.
pub struct Stack {
    pub outputs: HashMap<String, String>,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub sns: aws_sdk_sns::Client,
    pub iam: aws_sdk_iam::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub http: reqwest::Client,
    /// The SDK configuration of these clients (the emulator, its region), for other clients.
    pub sdk: aws_config::SdkConfig,
    /// Dev-issuer tokens by role, minted on first use.
    tokens: std::sync::Mutex<HashMap<String, String>>,
}

impl Stack {
    pub async fn connect() -> Result<Self> {
        let path = std::env::var("PBS_E2E_OUTPUTS").context(
            "PBS_E2E_OUTPUTS is not set: end-to-end tests run through `./dev test`, which starts \
             the emulator and deploys the stack",
        )?;
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let outputs: HashMap<String, String> = serde_json::from_str(&text)?;
        let endpoint = outputs["EmulatorUrl"].clone();
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .load()
            .await;
        let s3_config = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build();
        Ok(Self {
            sqs: aws_sdk_sqs::Client::new(&config),
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            dynamo: aws_sdk_dynamodb::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            sns: aws_sdk_sns::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            lambda: aws_sdk_lambda::Client::new(&config),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            outputs,
            tokens: std::sync::Mutex::new(HashMap::new()),
            sdk: config,
        })
    }

    /// A token of the local dev issuer for `role` (`viewer`, `operator`, `admin`, or `none` for a
    /// caller in no group), named `dev-<role>`.
    pub fn token(&self, role: &str) -> Result<String> {
        if let Some(t) = self.tokens.lock().unwrap().get(role) {
            return Ok(t.clone());
        }
        let t = self.mint_token(role, &format!("dev-{role}"), 3600)?;
        self.tokens
            .lock()
            .unwrap()
            .insert(role.to_owned(), t.clone());
        Ok(t)
    }

    /// A fresh dev-issuer token for `name` in group `role`, valid `ttl_seconds` (negative: already
    /// expired).
    pub fn mint_token(&self, role: &str, name: &str, ttl_seconds: i64) -> Result<String> {
        let out = std::process::Command::new("bash")
            .arg(self.output("DevIssuer"))
            .args(["token", role, name, &ttl_seconds.to_string()])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "dev issuer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    pub fn output(&self, key: &str) -> &str {
        self.outputs
            .get(key)
            .unwrap_or_else(|| panic!("stack output {key} missing"))
    }

    pub fn source_bucket(&self) -> &str {
        self.output("SourceBucketName")
    }

    /// Creates the work queue of a new pool (`<prefix><pool>`) with its dead-letter queue (after
    /// 3 receives), and its status queue mapped to the status function, as `infra/pool.yaml`
    /// does for an operator adding a pool.
    pub async fn create_pool(&self, pool: &str) -> Result<PoolQueues> {
        self.create_status_queue(pool).await?;
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let name = format!("{}{}", self.output("PoolQueuePrefix"), pool);
        let dlq = self
            .sqs
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await?;
        let dlq_url = dlq.queue_url().context("no dlq url")?.to_owned();
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(A::QueueArn)
            .send()
            .await?;
        let dlq_arn = attrs
            .attributes()
            .and_then(|a| a.get(&A::QueueArn))
            .context("no dlq arn")?;
        let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3});
        let out = self
            .sqs
            .create_queue()
            .queue_name(&name)
            .attributes(A::VisibilityTimeout, "300")
            .attributes(A::RedrivePolicy, redrive.to_string())
            .send()
            .await?;
        Ok(PoolQueues {
            url: out.queue_url().context("no queue url")?.to_owned(),
            dlq_url,
        })
    }

    /// The status queue of `pool` (`<StatusQueuePrefix><pool>`), taken by the status function.
    async fn create_status_queue(&self, pool: &str) -> Result<()> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let name = format!("{}{pool}", self.output("StatusQueuePrefix"));
        let url = self.sqs.create_queue().queue_name(&name).send().await?;
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(url.queue_url().context("no status queue url")?)
            .attribute_names(A::QueueArn)
            .send()
            .await?;
        let arn = attrs
            .attributes()
            .and_then(|a| a.get(&A::QueueArn))
            .context("no status queue arn")?;
        self.lambda
            .create_event_source_mapping()
            .event_source_arn(arn)
            .function_name(self.output("StatusFunctionArn"))
            .batch_size(100)
            .maximum_batching_window_in_seconds(1)
            .function_response_types(
                aws_sdk_lambda::types::FunctionResponseType::ReportBatchItemFailures,
            )
            .send()
            .await
            .with_context(|| format!("mapping {name} to the status function"))?;
        Ok(())
    }

    /// The URL of `pool`'s status queue (beside the default pool's, by name).
    pub fn status_queue_url(&self, pool: &str) -> String {
        let default = self.output("DefaultPoolStatusQueueUrl");
        let base = default.rsplit_once('/').map_or(default, |(base, _)| base);
        format!("{base}/{}{pool}", self.output("StatusQueuePrefix"))
    }

    /// Invokes a function of the stack (by its stack output holding the name) and returns its
    /// JSON answer.
    pub async fn invoke(&self, function_output: &str, payload: &Value) -> Result<Value> {
        let out = self
            .lambda
            .invoke()
            .function_name(self.output(function_output))
            .payload(aws_sdk_lambda::primitives::Blob::new(payload.to_string()))
            .send()
            .await
            .with_context(|| format!("invoking {function_output}"))?;
        let text = out
            .payload()
            .map(|p| String::from_utf8_lossy(p.as_ref()).into_owned())
            .unwrap_or_default();
        anyhow::ensure!(
            out.function_error().is_none(),
            "invoking {function_output}: {text}"
        );
        serde_json::from_str(&text).with_context(|| format!("{function_output} answered {text}"))
    }

    /// A bucket with no event notifications: tests deliver crafted events for its objects.
    pub async fn create_quiet_bucket(&self, name: &str) -> Result<()> {
        self.s3.create_bucket().bucket(name).send().await?;
        Ok(())
    }

    pub async fn put_object(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<String> {
        let out = self
            .s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .with_context(|| format!("PUT s3://{bucket}/{key}"))?;
        Ok(out.e_tag().unwrap_or_default().trim_matches('"').to_owned())
    }

    fn api(&self, path: &str) -> String {
        format!("{}{}", self.output("LocalApiUrl"), path)
    }

    /// Calls the API through the emulated API Gateway as an admin; returns status and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let token = self.token("admin")?;
        self.call_with(Some(&token), method, path, body).await
    }

    /// Starts a manual job of `template` for `keys` as an operator; its id.
    pub async fn manual_job(&self, template: &str, keys: &[&str]) -> Result<String> {
        let operator = self.token("operator")?;
        let body = serde_json::json!({"template_id": template, "keys": keys});
        let (status, job) = self
            .call_with(Some(&operator), "POST", "/api/v1/jobs", Some(&body))
            .await?;
        if status != 201 {
            bail!("starting a manual job answered {status}: {job}");
        }
        job["job_id"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no job_id in {job}"))
    }

    /// Calls the API with `token` as bearer (none: no Authorization header).
    pub async fn call_with(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self.http.request(method, self.api(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("non-JSON body: {text}"))?
        };
        Ok((status, json))
    }

    pub async fn create_template(&self, template: &Value) -> Result<()> {
        let (status, body) = self
            .call("POST", "/api/v1/templates", Some(template))
            .await?;
        if status != 201 {
            bail!("creating template answered {status}: {body}");
        }
        Ok(())
    }

    /// Replaces a template through the API (`PUT`), as an admin.
    pub async fn replace_template(&self, template: &Value) -> Result<()> {
        let id = template["id"].as_str().context("the template has no id")?;
        let (status, body) = self
            .call("PUT", &format!("/api/v1/templates/{id}"), Some(template))
            .await?;
        if status != 200 {
            bail!("replacing template {id} answered {status}: {body}");
        }
        Ok(())
    }

    /// Every job of `template_id`, following pagination.
    pub async fn jobs_of_template(&self, template_id: &str) -> Result<Vec<Value>> {
        let mut jobs = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let path = match &next {
                Some(t) => format!("/api/v1/jobs?limit=100&next={t}"),
                None => "/api/v1/jobs?limit=100".to_owned(),
            };
            let (status, body) = self.call("GET", &path, None).await?;
            if status != 200 {
                bail!("listing jobs answered {status}: {body}");
            }
            for job in body["jobs"].as_array().cloned().unwrap_or_default() {
                if job["template_id"] == template_id {
                    jobs.push(job);
                }
            }
            match body["next"].as_str() {
                Some(t) => next = Some(t.to_owned()),
                None => return Ok(jobs),
            }
        }
    }

    /// A job as the API shows it.
    pub async fn job(&self, job_id: &str) -> Result<Value> {
        let (status, body) = self
            .call("GET", &format!("/api/v1/jobs/{job_id}"), None)
            .await?;
        if status != 200 {
            bail!("GET job {job_id} answered {status}: {body}");
        }
        Ok(body)
    }

    /// A job's delivery report as the API serves it (JSON).
    pub async fn report(&self, job_id: &str) -> Result<Value> {
        let (status, body) = self
            .call("GET", &format!("/api/v1/jobs/{job_id}/report"), None)
            .await?;
        if status != 200 {
            bail!("GET the report of job {job_id} answered {status}: {body}");
        }
        Ok(body)
    }

    /// Waits (up to `timeout`) until the API shows job `job_id` as `probe` wants, and returns it.
    pub async fn job_when(
        &self,
        job_id: &str,
        timeout: Duration,
        what: &str,
        probe: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        eventually(timeout, what, || async {
            let job = self.job(job_id).await?;
            Ok(probe(&job).then_some(job))
        })
        .await
    }

    /// Waits (up to a minute) until nothing is left of what job `job_id` of `pool` staged in the
    /// relay staging area (`staging/<pool>/<job id>/` of the config bucket).
    pub async fn staged_removed(&self, pool: &str, job_id: &str) -> Result<()> {
        let prefix = format!("staging/{pool}/{job_id}/");
        let bucket = self.output("ConfigBucketName");
        eventually(
            Duration::from_secs(60),
            "the staged objects removed",
            || async {
                let out = self
                    .s3
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(&prefix)
                    .send()
                    .await?;
                Ok((out.key_count().unwrap_or(0) == 0).then_some(()))
            },
        )
        .await
    }

    /// Waits (up to a minute) until executor `id` has published its endpoints with a heartbeat
    /// (`GET /api/v1/executors`).
    pub async fn endpoints_published(&self, id: &str) -> Result<()> {
        eventually(
            Duration::from_secs(60),
            "the executor's endpoints in the API",
            || async {
                let (_, answer) = self.call("GET", "/api/v1/executors", None).await?;
                let mine = answer["executors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["executor_id"] == id)
                    .cloned();
                Ok(mine
                    .filter(|e| e["endpoints"].as_array().is_some_and(|a| !a.is_empty()))
                    .map(drop))
            },
        )
        .await
    }

    /// Waits until `template_id` has `count` jobs, all in a terminal state.
    pub async fn finished_jobs(&self, template_id: &str, count: usize) -> Result<Vec<Value>> {
        eventually(
            Duration::from_secs(90),
            &format!("{count} finished jobs of {template_id}"),
            || async {
                let jobs = self.jobs_of_template(template_id).await?;
                let done = jobs
                    .iter()
                    .filter(|j| {
                        matches!(
                            j["state"].as_str(),
                            Some("succeeded" | "failed" | "cancelled")
                        )
                    })
                    .count();
                Ok((jobs.len() >= count && done == jobs.len()).then_some(jobs))
            },
        )
        .await
    }

    /// PUTs an object to a bucket without notifications and delivers its `ObjectCreated` event
    /// (with `sequencer`) to the EventsQueue; returns the ETag.
    pub async fn put_and_announce(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        sequencer: &str,
    ) -> Result<String> {
        let size = body.len() as u64;
        let etag = self.put_object(bucket, key, body).await?;
        self.send_events(&[s3_event(bucket, key, size, &etag, sequencer)])
            .await?;
        Ok(etag)
    }

    /// The messages in a queue right now, left visible for others (for dead-letter checks).
    /// Sends a job message straight to a pool's work queue, as a manual job would arrive.
    pub async fn send_job(&self, queue_url: &str, job: &Value) -> Result<()> {
        self.sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(job.to_string())
            .send()
            .await?;
        Ok(())
    }

    /// Records `job` in the jobs table as the trigger or the API records a job it makes (queued,
    /// in its pool), then sends it to the pool's queue: the cloud believes reports only about
    /// jobs it made.
    pub async fn enqueue_job(&self, queue_url: &str, job: &Value) -> Result<()> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let text = |k: &str| job[k].as_str().unwrap_or_default().to_owned();
        let created = text("created_at");
        let mut item = std::collections::HashMap::from([
            ("job_id".to_owned(), V::S(text("job_id"))),
            ("state".to_owned(), V::S("queued".into())),
            ("state_rank".to_owned(), V::N("0".into())),
            ("attempt".to_owned(), V::N("0".into())),
            ("pool".to_owned(), V::S(text("pool"))),
            ("template_id".to_owned(), V::S(text("template_id"))),
            ("destination".to_owned(), V::S(text("destination"))),
            ("files_json".to_owned(), V::S(job["files"].to_string())),
            ("list_pk".to_owned(), V::S("job".into())),
            ("created_at".to_owned(), V::S(created.clone())),
            (
                "created_sk".to_owned(),
                V::S(format!("{created}#{}", text("job_id"))),
            ),
        ]);
        if let Some(bucket) = job["source"]["bucket"].as_str() {
            item.insert("source_bucket".into(), V::S(bucket.into()));
        }
        self.dynamo
            .put_item()
            .table_name(self.output("JobsTableName"))
            .set_item(Some(item))
            .send()
            .await?;
        self.send_job(queue_url, job).await
    }

    pub async fn peek(&self, queue_url: &str) -> Result<Vec<aws_sdk_sqs::types::Message>> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .message_attribute_names("All")
            .send()
            .await?;
        Ok(out.messages.unwrap_or_default())
    }

    /// Sends raw bodies to the EventsQueue in one batch, as S3 would (possibly duplicated).
    /// Waits (up to a minute) until the EventsQueue holds no message, visible or in flight: every
    /// event sent so far has been taken by the trigger.
    pub async fn events_drained(&self) -> Result<()> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        eventually(
            Duration::from_secs(60),
            "the EventsQueue drained",
            || async {
                let out = self
                    .sqs
                    .get_queue_attributes()
                    .queue_url(self.output("EventsQueueUrl"))
                    .attribute_names(A::ApproximateNumberOfMessages)
                    .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
                    .send()
                    .await?;
                let attrs = out.attributes().cloned().unwrap_or_default();
                let count = |a: A| {
                    attrs
                        .get(&a)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                let left = count(A::ApproximateNumberOfMessages)
                    + count(A::ApproximateNumberOfMessagesNotVisible);
                Ok((left == 0).then_some(()))
            },
        )
        .await
    }

    pub async fn send_events(&self, bodies: &[String]) -> Result<()> {
        let entries = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .message_body(b)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .sqs
            .send_message_batch()
            .queue_url(self.output("EventsQueueUrl"))
            .set_entries(Some(entries))
            .send()
            .await?;
        if !out.failed().is_empty() {
            bail!("some events were not sent: {:?}", out.failed());
        }
        Ok(())
    }
}

/// A pool's work queue and its dead-letter queue.
#[derive(Debug, Clone)]
pub struct PoolQueues {
    pub url: String,
    pub dlq_url: String,
}
