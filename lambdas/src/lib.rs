//! The cloud side of PBS Rclone: the trigger, status, api, notify and monitor Lambda functions.
//!
//! Each binary in `src/bin/` only wires configuration, AWS clients and the runtime; the work is
//! done by the modules here: one per function (`trigger`, `status`, `api`, `notify`, `monitor`),
//! what several share (`dispatch`, `flow`, `control`, `pool_rules`, `sqs_batch`, `dead_letter`,
//! `env`, `telemetry`), and the DynamoDB tables (`store`), which depend on none of the others.

pub mod api;
pub mod control;
pub mod dead_letter;
pub mod dispatch;
pub mod env;
pub mod flow;
pub mod monitor;
pub mod notify;
pub mod pool_rules;
pub mod sqs_batch;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod trigger;
pub mod webhook_guard;
