//! The DynamoDB tables, one module each: jobs (and their views), templates, executors, endpoint
//! tests, pools, stats, the audit log, and the item helpers they share (`items`).
//!
//! Stores know tables and items only: they may depend on `items` and `pbs_shared`, never on a
//! function's handler (`trigger`, `status`, `api`, ...), which depend on them.

pub mod audit;
pub mod endpoint_tests;
pub mod executors;
pub mod items;
pub mod jobs;
pub mod pools;
pub mod stats;
pub mod templates;
