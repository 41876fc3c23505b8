//! The task journal: every accepted task, durably, in the same embedded
//! store as KV. A task is written before its submission is acknowledged and
//! again at every final state, so a restart finds each accepted task.
//!
//! Writes are group-committed: one writer thread takes every write waiting
//! at that moment and commits them in one durable transaction, so concurrent
//! tasks share one fsync instead of paying one each. A caller is answered
//! only after the transaction holding its records has committed.

use redb::{ReadableTable, TableDefinition};
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;

use super::TaskRecord;
use crate::capabilities::kv::KvStore;

const TASKS: TableDefinition<u64, &str> = TableDefinition::new("journal_tasks");

/// Most records committed in one transaction; more wait for the next.
const MAX_GROUP: usize = 4096;

/// Why the journal could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
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

type Reply = oneshot::Sender<Result<(), JournalError>>;

#[derive(Clone)]
pub(crate) struct Journal {
    store: Arc<KvStore>,
    writer: mpsc::Sender<(Vec<TaskRecord>, Reply)>,
}

impl Journal {
    pub fn open(store: Arc<KvStore>) -> Result<Journal, JournalError> {
        let tx = store.database().begin_write().map_err(err)?;
        tx.open_table(TASKS).map_err(err)?;
        tx.commit().map_err(err)?;
        let (writer, requests) = mpsc::channel();
        let thread_store = store.clone();
        // Ends when the last `Journal` clone is dropped and the channel closes.
        std::thread::Builder::new()
            .name("chimera-journal".into())
            .spawn(move || group_commit_loop(&thread_store, &requests))
            .map_err(|e| err(format!("cannot start the journal writer: {e}")))?;
        Ok(Journal { store, writer })
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

    /// Writes `records` in one transaction and waits for them to reach the disk.
    pub fn write(&self, records: &[TaskRecord]) -> Result<(), JournalError> {
        write_group(&self.store, records.iter())
    }

    /// Queues `records` for the next group commit and waits until it is durable.
    pub async fn write_async(&self, records: Vec<TaskRecord>) -> Result<(), JournalError> {
        self.queue(records).await
    }

    /// Queues `records` for the next group commit now (so they commit no
    /// later than anything queued after this call) and returns what waits
    /// until they are durable.
    pub fn queue(&self, records: Vec<TaskRecord>) -> impl std::future::Future<Output = Result<(), JournalError>> {
        let (reply, done) = oneshot::channel();
        let sent = self.writer.send((records, reply)).map_err(|_| err("the journal writer has stopped"));
        async move {
            sent?;
            done.await.map_err(|_| err("the journal writer stopped before committing"))?
        }
    }
}

fn write_group<'a>(store: &KvStore, records: impl Iterator<Item = &'a TaskRecord>) -> Result<(), JournalError> {
    let tx = store.database().begin_write().map_err(err)?;
    {
        let mut table = tx.open_table(TASKS).map_err(err)?;
        // In arrival order: a later state of the same task overwrites an earlier one.
        for record in records {
            let json = serde_json::to_string(record).map_err(err)?;
            table.insert(record.id, json.as_str()).map_err(err)?;
        }
    }
    tx.commit().map_err(err)
}

fn group_commit_loop(store: &KvStore, requests: &mpsc::Receiver<(Vec<TaskRecord>, Reply)>) {
    while let Ok(first) = requests.recv() {
        let mut group = vec![first];
        let mut count = group[0].0.len();
        while count < MAX_GROUP {
            match requests.try_recv() {
                Ok(next) => {
                    count += next.0.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let result = write_group(store, group.iter().flat_map(|(records, _)| records.iter()));
        if let Err(e) = &result {
            tracing::error!("{e}");
        }
        for (_, reply) in group {
            let _ = reply.send(result.clone());
        }
    }
}
