//! The task journal: every accepted task, durably, in the same embedded
//! store as KV. A task is written before its submission is acknowledged and
//! again at every final state, so a restart finds each accepted task.

use redb::{ReadableTable, TableDefinition};
use std::sync::Arc;

use super::TaskRecord;
use crate::capabilities::kv::KvStore;

const TASKS: TableDefinition<u64, &str> = TableDefinition::new("journal_tasks");

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("task journal: {0}")]
pub struct JournalError(String);

impl JournalError {
    pub(crate) fn new(message: String) -> Self {
        JournalError(message)
    }
}

fn err(e: impl std::fmt::Display) -> JournalError {
    JournalError(e.to_string())
}

#[derive(Clone)]
pub(crate) struct Journal {
    store: Arc<KvStore>,
}

impl Journal {
    pub fn open(store: Arc<KvStore>) -> Result<Journal, JournalError> {
        let tx = store.database().begin_write().map_err(err)?;
        tx.open_table(TASKS).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Journal { store })
    }

    /// Every task in the journal.
    pub fn load(&self) -> Result<Vec<TaskRecord>, JournalError> {
        let tx = self.store.database().begin_read().map_err(err)?;
        let table = tx.open_table(TASKS).map_err(err)?;
        let mut records = Vec::new();
        for entry in table.iter().map_err(err)? {
            let (_, json) = entry.map_err(err)?;
            records.push(serde_json::from_str(json.value()).map_err(err)?);
        }
        Ok(records)
    }

    /// Writes `records` and waits for them to reach the disk.
    pub fn write(&self, records: &[TaskRecord]) -> Result<(), JournalError> {
        let tx = self.store.database().begin_write().map_err(err)?;
        {
            let mut table = tx.open_table(TASKS).map_err(err)?;
            for record in records {
                let json = serde_json::to_string(record).map_err(err)?;
                table.insert(record.id, json.as_str()).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// [`Journal::write`] off the async workers.
    pub async fn write_async(&self, records: Vec<TaskRecord>) -> Result<(), JournalError> {
        let journal = self.clone();
        tokio::task::spawn_blocking(move || journal.write(&records))
            .await
            .map_err(|e| JournalError(format!("journal writer failed: {e}")))?
    }
}
