//! IAM identities for the trust tests: a pool stack deployed from `infra/pool.yaml`, an IAM user
//! holding exactly that pool's executor policy with an access key, and SDK clients acting as it.
//! The emulator enforces IAM (`AUTH=true`) for every caller but the account root.

use std::collections::HashMap;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::*;

/// An access key of an IAM user.
#[derive(Clone)]
pub struct Identity {
    pub user: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl Identity {
    /// The environment an executor running as this user gets.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                self.secret_access_key.clone(),
            ),
        ]
    }
}

/// SQS and S3 clients that sign as an identity.
pub struct ActingAs {
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
}

impl Stack {
    /// Deploys `infra/pool.yaml` for `pool` beside the stack, as an operator adding a pool does;
    /// its outputs (`PoolQueueUrl`, `StatusQueueUrl`, `ExecutorPolicyArn`, ...).
    pub fn deploy_pool_stack(&self, pool: &str) -> Result<HashMap<String, String>> {
        self.deploy_pool_stack_with(pool, &[])
    }

    /// [`Stack::deploy_pool_stack`] with more of `infra/pool.yaml`'s parameters (`Name=value`).
    pub fn deploy_pool_stack_with(
        &self,
        pool: &str,
        parameters: &[&str],
    ) -> Result<HashMap<String, String>> {
        let main = self.output("StackName");
        let name = format!("{main}-pool-{pool}");
        let sam = |args: &[&str]| -> Result<String> {
            let out = Command::new("sam")
                .current_dir(workspace_root())
                .env("AWS_ENDPOINT_URL", self.output("EmulatorUrl"))
                .args(args)
                .output()
                .context("running sam")?;
            if !out.status.success() {
                bail!(
                    "sam {args:?}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let (main_param, pool_param) = (format!("MainStack={main}"), format!("Pool={pool}"));
        let mut args = vec![
            "deploy",
            "--template-file",
            "infra/pool.yaml",
            "--stack-name",
            &name,
            "--capabilities",
            "CAPABILITY_IAM",
            "--no-confirm-changeset",
            "--parameter-overrides",
            &main_param,
            &pool_param,
        ];
        args.extend_from_slice(parameters);
        sam(&args)?;
        let listed = sam(&[
            "list",
            "stack-outputs",
            "--stack-name",
            &name,
            "--output",
            "json",
        ])?;
        let outputs: Vec<serde_json::Value> =
            serde_json::from_str(&listed).with_context(|| format!("stack outputs: {listed}"))?;
        Ok(outputs
            .iter()
            .filter_map(|o| {
                Some((
                    o["OutputKey"].as_str()?.to_owned(),
                    o["OutputValue"].as_str()?.to_owned(),
                ))
            })
            .collect())
    }

    /// A new IAM user `name` holding exactly the managed policy `policy_arn`, with an access key.
    pub async fn identity(&self, name: &str, policy_arn: &str) -> Result<Identity> {
        self.iam.create_user().user_name(name).send().await?;
        self.iam
            .attach_user_policy()
            .user_name(name)
            .policy_arn(policy_arn)
            .send()
            .await?;
        let key = self.iam.create_access_key().user_name(name).send().await?;
        let key = key.access_key().context("no access key in the answer")?;
        Ok(Identity {
            user: name.to_owned(),
            access_key_id: key.access_key_id().to_owned(),
            secret_access_key: key.secret_access_key().to_owned(),
        })
    }

    /// Clients that sign their requests as `who`.
    pub async fn acting_as(&self, who: &Identity) -> ActingAs {
        let creds = aws_sdk_sqs::config::Credentials::new(
            &who.access_key_id,
            &who.secret_access_key,
            None,
            None,
            "pbs-e2e",
        );
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(self.output("EmulatorUrl"))
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .load()
            .await;
        let s3 = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build();
        ActingAs {
            sqs: aws_sdk_sqs::Client::new(&config),
            s3: aws_sdk_s3::Client::from_conf(s3),
        }
    }
}
