//! The embedded task store: every accepted task, durably, in a redb file of
//! its own (`journal.redb`, beside the KV store but apart from it, so a
//! KV-heavy agent never slows a task's acknowledgement). A task is written
//! before its submission is acknowledged and again at every state change,
//! so a restart finds each accepted task.
//!
//! Writes are group-committed: one writer thread takes every write waiting
//! at that moment and commits them in one durable transaction, so concurrent
//! tasks share one fsync instead of paying one each. A caller is answered
//! only after the transaction holding its records has committed.

use futures::future::BoxFuture;
use redb::{Database, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;

use super::store::TaskStore;
use super::TaskRecord;

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

/// The task journal on redb, group-committed by a writer thread of its own.
pub struct RedbTaskStore {
    db: Arc<Database>,
    writer: std::sync::Mutex<mpsc::Sender<(Vec<TaskRecord>, Reply)>>,
}

impl RedbTaskStore {
    /// Opens (or creates) the journal file at `path` and starts its writer.
    pub fn open(path: &Path) -> Result<RedbTaskStore, JournalError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        }
        let db = Database::create(path).map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(TASKS).map_err(err)?;
        tx.commit().map_err(err)?;
        let db = Arc::new(db);
        let (writer, requests) = mpsc::channel();
        let thread_db = db.clone();
        // Ends when the store is dropped and the channel closes.
        std::thread::Builder::new()
            .name("chimera-journal".into())
            .spawn(move || group_commit_loop(&thread_db, &requests))
            .map_err(|e| err(format!("cannot start the journal writer: {e}")))?;
        Ok(RedbTaskStore { db, writer: std::sync::Mutex::new(writer) })
    }
}

impl TaskStore for RedbTaskStore {
    fn load(&self) -> Result<Vec<TaskRecord>, JournalError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(TASKS).map_err(err)?;
        let mut records = Vec::new();
        for entry in table.iter().map_err(err)? {
            let (_, json) = entry.map_err(err)?;
            records.push(serde_json::from_str(json.value()).map_err(err)?);
        }
        Ok(records)
    }

    fn commit(&self, records: Vec<TaskRecord>) -> BoxFuture<'static, Result<(), JournalError>> {
        let (reply, done) = oneshot::channel();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let sent = writer.send((records, reply)).map_err(|_| err("the journal writer has stopped"));
        Box::pin(async move {
            sent?;
            done.await.map_err(|_| err("the journal writer stopped before committing"))?
        })
    }
}

fn write_group<'a>(db: &Database, records: impl Iterator<Item = &'a TaskRecord>) -> Result<(), JournalError> {
    let tx = db.begin_write().map_err(err)?;
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

fn group_commit_loop(db: &Database, requests: &mpsc::Receiver<(Vec<TaskRecord>, Reply)>) {
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
        let result = write_group(db, group.iter().flat_map(|(records, _)| records.iter()));
        if let Err(e) = &result {
            tracing::error!("{e}");
        }
        for (_, reply) in group {
            let _ = reply.send(result.clone());
        }
    }
}
