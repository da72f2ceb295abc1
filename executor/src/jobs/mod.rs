//! The job pipeline: a job message (from the work queue, or made here by a watch or schedule
//! rule) is claimed in the ledger, copied, verified, and recorded with its report.
//!
//! - `admit`: which messages from the work queue this executor obeys (its pool, its endpoints'
//!   `cloud` settings);
//! - `runner`: claim → copy → finish, for one job or a batch of jobs run together;
//! - `copy`: the one copy path (a job alone is a batch of one), with verification;
//! - `folder`: folder transfers, listed when they run, with their copy, sync and move modes;
//! - `batch`: which received jobs may share one rclone run;
//! - `cancels`, `dest_locks`: cancel requests, and one write at a time per destination path;
//! - `local`: jobs made on this executor, retried here instead of by the queue;
//! - `recovery`: what a previous run left unfinished.
//!
//! - `ports`: what it needs from outside (progress, artifact uploads), as traits `cloud` implements.
//!
//! May depend on `transfer`, `ledger`, `config` and `metrics`, never on `cloud` or `rules`:
//! `cloud::poller` and `rules` hand jobs to it.

pub mod admit;
pub mod batch;
pub mod cancels;
pub mod context;
pub mod copy;
pub mod dest_locks;
pub mod folder;
pub mod local;
pub mod ports;
pub mod recovery;
pub mod runner;
