//! Publishing a pool's watch and schedule rules for its executors.
//!
//! Executors never receive inbound connections, so rules travel the same way as everything else:
//! the executors fetch them. When a template with a `watch` or `schedule` trigger changes, the api
//! function rewrites `pools/<pool>/rules.json` in the configuration bucket with every enabled such
//! template of that pool; each executor of the pool polls the object with its ETag (a conditional
//! GET that costs nothing when unchanged) and keeps the last copy in its ledger, so its rules keep
//! working while the cloud is unreachable.

use chrono::Utc;
use pbs_shared::pool_rules::{PoolRules, pool_rules_key};
use pbs_shared::template::Trigger;
use pbs_shared::{PoolName, Template};

use crate::store::templates::TemplateTable;

/// Whether a template is delivered to executors as a rule.
pub fn is_rule(t: &Template) -> bool {
    matches!(t.trigger, Trigger::Watch(_) | Trigger::Schedule(_))
}

#[derive(Clone)]
pub struct RulesPublisher {
    s3: aws_sdk_s3::Client,
    bucket: String,
}

impl RulesPublisher {
    pub fn new(s3: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            s3,
            bucket: bucket.into(),
        }
    }

    /// Rewrites `pool`'s rule document from the templates table.
    pub async fn publish(&self, templates: &TemplateTable, pool: &PoolName) -> Result<(), String> {
        let mut rules: Vec<Template> = templates
            .load_all()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(Result::ok)
            .filter(|t| t.enabled && &t.destination.pool == pool && is_rule(t))
            .collect();
        rules.sort_by(|a, b| a.id.cmp(&b.id));
        let doc = PoolRules {
            v: pbs_shared::message::V1,
            pool: pool.clone(),
            generated_at: Utc::now(),
            templates: rules,
        };
        let body = serde_json::to_vec_pretty(&doc).expect("rules serialise");
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(pool_rules_key(pool))
            .content_type("application/json")
            .body(body.into())
            .send()
            .await
            .map_err(|e| {
                format!(
                    "publishing the rules of pool {pool} to s3://{}/{}: {}",
                    self.bucket,
                    pool_rules_key(pool),
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
        tracing::info!(pool = %pool, rules = doc.templates.len(), "pool rules published");
        Ok(())
    }
}
