//! The rules document a pool's executors fetch (`pools/<pool>/rules.json` in the configuration
//! bucket): every enabled template of the pool with a `watch` or `schedule` trigger.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::message::V1;
use crate::names::PoolName;
use crate::template::Template;

/// The rules of one pool, as published for its executors: every enabled template of the pool
/// with a `watch` or `schedule` trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolRules {
    pub v: V1,
    pub pool: PoolName,
    pub generated_at: DateTime<Utc>,
    pub templates: Vec<Template>,
}

/// The object key of a pool's rules in the configuration bucket.
pub fn pool_rules_key(pool: &PoolName) -> String {
    format!("pools/{pool}/rules.json")
}
