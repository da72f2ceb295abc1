//! Watch folders and cron schedules: the rules of the TOML file and of the cloud, each turned into
//! local jobs handed to `jobs::local`.
//!
//! - `clock`: pure decisions (filters, cron clocks, job ids, the jobs a rule makes);
//! - `watch`, `schedule`: one worker per rule;
//! - `rule_set`: which rules run, started, replaced and stopped as their sources change.
//!
//! May depend on `jobs`, `transfer`, `config` and `metrics`.

pub mod clock;
pub mod rule_set;
pub mod schedule;
pub mod watch;
