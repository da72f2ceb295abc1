//! The one-shot subcommands: `doctor`, `endpoints test`, `jobs list`, `jobs show` and
//! `secrets seal`.
//!
//! Each reads the configuration (and the ledger or the endpoints), prints, and exits; none starts
//! a background loop. May depend on `config`, `transfer` and `ledger`; only `main.rs` uses it.

pub mod doctor;
pub mod endpoints;
pub mod jobs;
pub mod secrets;
