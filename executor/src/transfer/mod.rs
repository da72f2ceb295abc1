//! Moving bytes: endpoints resolved into rclone remotes (`endpoints`), the rclone process
//! (`rclone`), delivery with verification (`deliver`), the endpoint probe (`probe`), and the
//! rule that no symbolic link leads out of a local endpoint's root (`links`).
//!
//! May depend on `config` and `metrics` only: it knows nothing of jobs, queues or the ledger.

pub mod deliver;
pub mod endpoints;
pub mod links;
pub mod probe;
pub mod rclone;

pub use deliver::{
    Checked, Fail, Item, Listed, Runner, common_folders, mismatched, not_delivered,
    source_not_found,
};
