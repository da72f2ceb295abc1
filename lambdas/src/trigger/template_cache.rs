//! The trigger's copy of the templates table.
//!
//! Scanning the table for every event would cost a full read per batch; instead the trigger keeps
//! the compiled set and reads only the table's generation counter (one consistent `GetItem`) per
//! batch, reloading when it changed. A reload also happens after `MAX_AGE`, so an item edited
//! directly in DynamoDB (without the API) is picked up too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pbs_shared::TemplateSet;
use tokio::sync::Mutex;
use tracing::{error, info};

use crate::store::templates::{TemplateTable, TemplateTableError};

const MAX_AGE: Duration = Duration::from_secs(300);

struct Loaded {
    generation: u64,
    at: Instant,
    set: Arc<TemplateSet>,
}

pub struct TemplateCache {
    table: TemplateTable,
    loaded: Mutex<Option<Loaded>>,
}

impl TemplateCache {
    pub fn new(table: TemplateTable) -> Self {
        Self {
            table,
            loaded: Mutex::new(None),
        }
    }

    pub async fn current(&self) -> Result<Arc<TemplateSet>, TemplateTableError> {
        let generation = self.table.generation().await?;
        let mut loaded = self.loaded.lock().await;
        if let Some(l) = loaded.as_ref()
            && l.generation == generation
            && l.at.elapsed() < MAX_AGE
        {
            return Ok(l.set.clone());
        }
        let mut templates = Vec::new();
        for stored in self.table.load_all().await? {
            match stored {
                Ok(t) => templates.push(t),
                Err((id, reason)) => {
                    error!(template = %id, reason = %reason, "stored template is invalid and is skipped")
                }
            }
        }
        let (set, bad) = TemplateSet::compile(templates);
        for (t, e) in bad {
            error!(template = %t.id, error = %e, "template glob does not compile and is skipped");
        }
        info!(generation, templates = set.len(), "templates loaded");
        let set = Arc::new(set);
        *loaded = Some(Loaded {
            generation,
            at: Instant::now(),
            set: set.clone(),
        });
        Ok(set)
    }
}
