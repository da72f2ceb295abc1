//! The monitor function: run on a schedule, it finds executors that have gone silent and emits
//! the counts as CloudWatch metrics (embedded metric format on stdout, so no API call and no
//! extra permission), which the `ExecutorsOfflineAlarm` watches.

use chrono::Utc;
use serde::Serialize;
use serde_json::json;

use crate::env::MonitorEnv;
use crate::store::executors::{self, ExecutorView};

/// The metrics namespace of the stack's own metrics.
pub const NAMESPACE: &str = "PBSRclone";

#[derive(Debug, Serialize)]
pub struct Report {
    pub online: Vec<String>,
    pub offline: Vec<ExecutorView>,
}

pub struct Monitor {
    env: MonitorEnv,
    dynamo: aws_sdk_dynamodb::Client,
}

impl Monitor {
    pub fn new(env: MonitorEnv, dynamo: aws_sdk_dynamodb::Client) -> Self {
        Self { env, dynamo }
    }

    /// One check: prints the metric line and returns who is online and who is not.
    pub async fn check(&self) -> Result<Report, String> {
        let all = executors::list(
            &self.dynamo,
            &self.env.executors_table,
            Utc::now().timestamp_millis(),
        )
        .await?;
        let (online, offline): (Vec<_>, Vec<_>) = all.into_iter().partition(|e| e.online);
        let report = Report {
            online: online.into_iter().map(|e| e.executor_id).collect(),
            offline,
        };
        println!(
            "{}",
            metric_line(&self.env.stack_name, &report, Utc::now().timestamp_millis())
        );
        Ok(report)
    }
}

/// A CloudWatch embedded-metric-format record of the executor counts.
pub fn metric_line(stack: &str, report: &Report, now_ms: i64) -> String {
    json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Stack"]],
                "Metrics": [
                    {"Name": "ExecutorsOffline", "Unit": "Count"},
                    {"Name": "ExecutorsOnline", "Unit": "Count"}
                ]
            }]
        },
        "Stack": stack,
        "ExecutorsOffline": report.offline.len(),
        "ExecutorsOnline": report.online.len(),
        "offline": report.offline.iter().map(|e| e.executor_id.as_str()).collect::<Vec<_>>(),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_line_is_embedded_metric_format() {
        let report = Report {
            online: vec!["a".into()],
            offline: vec![],
        };
        let v: serde_json::Value = serde_json::from_str(&metric_line("pbs", &report, 7)).unwrap();
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(v["Stack"], "pbs");
        assert_eq!(v["ExecutorsOffline"], 0);
        assert_eq!(v["ExecutorsOnline"], 1);
        // Every metric named in the directive is a top-level member.
        for m in v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
        {
            assert!(v.get(m["Name"].as_str().unwrap()).is_some());
        }
    }
}
