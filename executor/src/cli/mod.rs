//! The one-shot subcommands: `doctor`, `endpoints test`, `jobs list` and `jobs show`.
//!
//! Each reads the configuration (and the ledger or the endpoints), prints, and exits; none starts
//! a background loop. May depend on `config`, `transfer` and `ledger`; only `main.rs` uses it.

pub mod doctor;
pub mod endpoints;
pub mod jobs;
