//! Domain types and pure logic of PBS Rclone, shared by the Lambdas and the executor.
//!
//! Nothing here performs I/O or talks to AWS: names are parsed once into newtypes, templates are
//! validated and matched, destination paths are rendered and checked so they never escape their
//! root, job states only move forward, and the versioned JSON messages exchanged between the cloud
//! and the executors are defined in one place.

pub mod bandwidth;
pub mod delivery;
pub mod dest_path;
pub mod glob;
pub mod job;
pub mod matching;
pub mod message;
pub mod names;
pub mod notify;
pub mod path_template;
pub mod plan;
pub mod pool_lease;
pub mod pool_rules;
pub mod report;
pub mod retry;
pub mod rule_spec;
pub mod s3_key;
pub mod template;
pub mod transfer;

pub use bandwidth::Bandwidth;
pub use delivery::{DeliveredFile, Delivery, FileOutcome, Overwrite, Verify};
pub use dest_path::{DestPath, PathError};
pub use job::{ErrorClass, JobState};
pub use matching::{CompiledTemplate, ObjectRef, TemplateSet};
pub use message::{
    JobFile, JobMessage, JobResult, JobSource, JobSummary, MessageError, Origin, OriginKind,
    RefusedFile, StatusMessage,
};
pub use names::{EndpointName, ExecutorId, JobId, NameError, PoolName, TemplateId};
pub use path_template::PathTemplate;
pub use retry::RetryPolicy;
pub use template::{FieldError, Template};
