//! Everything a job needs from the executor, handed to the pipeline once by the daemon.

use std::sync::Arc;

use aws_credential_types::provider::SharedCredentialsProvider;

use crate::config::Config;
use crate::jobs::cancels::Cancels;
use crate::jobs::dest_locks::DestLocks;
use crate::jobs::ports::{ArtifactStore, ProgressWatch};
use crate::ledger::{Journal, Ledger};
use crate::transfer::endpoints::Endpoints;

/// Everything a job needs from the executor.
pub struct JobContext {
    pub config: Arc<Config>,
    pub endpoints: Arc<Endpoints>,
    /// The ledger, and each job transition written with its report.
    pub journal: Arc<Journal>,
    pub credentials: SharedCredentialsProvider,
    pub dest_locks: DestLocks,
    /// Cancel requests and the running jobs they stop.
    pub cancels: Arc<Cancels>,
    /// Where running jobs' progress goes (`None`: standalone).
    pub progress: Option<Arc<dyn ProgressWatch>>,
    /// Where finished attempts' logs and reports go (`None`: they stay in the state folder).
    pub artifacts: Option<Arc<dyn ArtifactStore>>,
}

impl JobContext {
    /// The ledger, for reads (every write goes through [`JobContext::journal`]).
    pub fn ledger(&self) -> &Ledger {
        self.journal.ledger()
    }
}
