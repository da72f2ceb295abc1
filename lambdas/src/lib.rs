//! The cloud side of PBS Rclone: the trigger, status, api and monitor Lambda functions.
//!
//! Each binary in `src/bin/` only wires configuration, AWS clients and the runtime; the work is
//! done by the modules here.

pub mod api;
pub mod audit;
pub mod control;
pub mod dead_letter;
pub mod dispatch;
pub mod env;
pub mod executors;
pub mod flow;
pub mod items;
pub mod job_table;
pub mod monitor;
pub mod notify;
pub mod pool_rules;
pub mod sqs_batch;
pub mod status;
pub mod telemetry;
pub mod template_table;
pub mod trigger;
