//! The embedded task store: every accepted task, durably, in a redb file of
//! its own (`journal.redb`, beside the KV store but apart from it, so a
//! KV-heavy agent never slows a task's acknowledgement). A task is written
//! before its submission is acknowledged and again at every state change,
//! so a restart finds each accepted task.
//!
//! A task's state, its input and its output are kept in tables of their
//! own: a change rewrites only the state (a few hundred bytes); the input
//! is written once, at submission, and the output once, at the end.
//! Finished tasks are deleted once retention says so (oldest first); redb
//! reuses the freed pages, so the file stays as large as what is kept, and
//! it is compacted (given back to the filesystem) each time it is opened.
//!
//! Writes are group-committed: one writer thread takes every write waiting
//! at that moment and commits them in one durable transaction, so concurrent
//! tasks share one fsync instead of paying one each. A caller is answered
//! only after the transaction holding its records has committed.
//!
//! After a failed write (a full disk, an I/O error) redb refuses every later
//! write until the file is opened again, so the writer reopens it and keeps
//! the changes it could not write (all but submissions, which are refused)
//! to write them again once it can; until then [`TaskStore::health`] says
//! what is wrong.

use futures::future::BoxFuture;
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use super::now_ms;
use super::store::{Recovered, Retention, TaskPage, TaskQuery, TaskStore};
use super::task::{Change, IdempotencyEntry, TaskId, TaskRecord, TaskState};

const STATES: TableDefinition<u128, &[u8]> = TableDefinition::new("task_states");
const INPUTS: TableDefinition<u128, &[u8]> = TableDefinition::new("task_inputs");
const OUTPUTS: TableDefinition<u128, &[u8]> = TableDefinition::new("task_outputs");
/// Each task's attempts' log lines (JSON), appended as attempts end.
const LOGS: TableDefinition<u128, &[u8]> = TableDefinition::new("task_logs");
/// Finished tasks, oldest first: (finished_ms, id).
const FINISHED: TableDefinition<(u64, u128), ()> = TableDefinition::new("tasks_finished");
/// Idempotency keys, soonest to expire first: (expires_ms, key) → entry.
const IDEMPOTENCY: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("idempotency");
/// When the last write that had nothing else to write (a probe) ran.
const PROBE: TableDefinition<&str, u64> = TableDefinition::new("journal_probe");
/// The table of the journal's first format (u64 ids, whole records).
const OLD_FORMAT: &str = "journal_tasks";

/// The journal's page cache: the states of the tasks in flight and the
/// tables' upper pages; inputs and outputs are read once, if at all.
const JOURNAL_CACHE_BYTES: usize = 16 << 20;
/// Most changes committed in one transaction; more wait for the next.
const MAX_GROUP: usize = 4096;
/// Most finished tasks (or expired keys) deleted in one transaction.
const MAX_SWEEP: usize = 10_000;
/// How often retention runs, and a failed write is tried again.
const TICK: Duration = Duration::from_secs(1);

/// Why the journal could not be read or written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
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

struct Request {
    changes: Vec<Change>,
    reply: Reply,
}

/// The open file, shared by the writer and readers; `None` while the writer
/// reopens it after a failed write.
type Slot = Arc<RwLock<Option<Arc<Database>>>>;

/// The task journal on redb, group-committed by a writer thread of its own.
pub struct RedbTaskStore {
    db: Slot,
    writer: Mutex<mpsc::Sender<Request>>,
    health: Arc<Mutex<Option<JournalError>>>,
}

impl RedbTaskStore {
    /// Opens (or creates) the journal file at `path` and starts its writer,
    /// which deletes finished tasks as `retention` says.
    pub fn open(path: &Path, retention: Retention) -> Result<RedbTaskStore, JournalError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut db = open_file(path)?;
        compact(&mut db, path);
        let db: Slot = Arc::new(RwLock::new(Some(Arc::new(db))));
        let health = Arc::new(Mutex::new(None));
        let (writer, requests) = mpsc::channel();
        let mut thread = Writer {
            path: path.to_path_buf(),
            db: db.clone(),
            health: health.clone(),
            retention,
            backlog: Vec::new(),
            last_sweep: Instant::now() - TICK,
        };
        // Ends when the store is dropped and the channel closes.
        std::thread::Builder::new()
            .name("chimera-journal".into())
            .spawn(move || thread.run(&requests))
            .map_err(|e| err(format!("cannot start the journal writer: {e}")))?;
        Ok(RedbTaskStore { db, writer: Mutex::new(writer), health })
    }

    fn database(&self) -> Result<Arc<Database>, JournalError> {
        current(&self.db)
    }
}

fn current(slot: &Slot) -> Result<Arc<Database>, JournalError> {
    slot.read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or_else(|| err("the journal file is being reopened after a failed write; retry"))
}

fn open_file(path: &Path) -> Result<Database, JournalError> {
    let db = crate::storage::open_database(path, "file", JOURNAL_CACHE_BYTES).map_err(JournalError)?;
    let tx = db.begin_write().map_err(err)?;
    let old = tx.list_tables().map_err(err)?.any(|t| t.name() == OLD_FORMAT);
    if old {
        return Err(err(format!(
            "{} holds tasks in the format of an earlier version (table `{OLD_FORMAT}`), which this version does not read; \
             let the old version finish its tasks, then move the file away",
            path.display()
        )));
    }
    tx.open_table(STATES).map_err(err)?;
    tx.open_table(INPUTS).map_err(err)?;
    tx.open_table(OUTPUTS).map_err(err)?;
    tx.open_table(LOGS).map_err(err)?;
    tx.open_table(FINISHED).map_err(err)?;
    tx.open_table(IDEMPOTENCY).map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(db)
}

/// Gives the file back the space retention freed (redb reuses freed pages
/// while it runs, but never shrinks the file by itself): once, at open.
fn compact(db: &mut Database, path: &Path) {
    let before = std::fs::metadata(path).map_or(0, |m| m.len());
    match db.compact() {
        Ok(true) => {
            let after = std::fs::metadata(path).map_or(0, |m| m.len());
            tracing::info!(before, after, "task journal compacted");
        }
        Ok(false) => {}
        Err(e) => tracing::warn!("task journal: compaction skipped: {e}"),
    }
}

fn decode_state(bytes: &[u8]) -> Result<TaskState, JournalError> {
    serde_json::from_slice(bytes).map_err(|e| err(format!("a task state cannot be read: {e}")))
}

fn decode_text(bytes: &[u8]) -> Result<String, JournalError> {
    String::from_utf8(bytes.to_vec()).map_err(|e| err(format!("a task's text is not UTF-8: {e}")))
}

impl TaskStore for RedbTaskStore {
    fn load(&self) -> Result<Recovered, JournalError> {
        let tx = self.database()?.begin_read().map_err(err)?;
        let states = tx.open_table(STATES).map_err(err)?;
        let mut recovered = Recovered::default();
        for entry in states.iter().map_err(err)? {
            let state = decode_state(entry.map_err(err)?.1.value())?;
            if !state.status.is_final() {
                recovered.unfinished.push(state);
            }
        }
        let now = now_ms();
        for entry in tx.open_table(IDEMPOTENCY).map_err(err)?.range((now, "")..).map_err(err)? {
            let (_, bytes) = entry.map_err(err)?;
            let entry: IdempotencyEntry = serde_json::from_slice(bytes.value()).map_err(err)?;
            recovered.idempotency.push(entry);
        }
        Ok(recovered)
    }

    fn commit(&self, changes: Vec<Change>) -> BoxFuture<'static, Result<(), JournalError>> {
        let (reply, done) = oneshot::channel();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let sent = writer.send(Request { changes, reply }).map_err(|_| err("the journal writer has stopped"));
        Box::pin(async move {
            sent?;
            done.await.map_err(|_| err("the journal writer stopped before committing"))?
        })
    }

    fn get(&self, id: TaskId) -> BoxFuture<'static, Result<Option<TaskRecord>, JournalError>> {
        // A read of pages the writer has just touched: in the page cache, a
        // few microseconds; done in place.
        let read = || -> Result<Option<TaskRecord>, JournalError> {
            let tx = self.database()?.begin_read().map_err(err)?;
            let key = id.as_u128();
            let Some(state) = tx.open_table(STATES).map_err(err)?.get(key).map_err(err)? else {
                return Ok(None);
            };
            let state = decode_state(state.value())?;
            let text = |table| -> Result<Option<String>, JournalError> {
                let table = tx.open_table(table).map_err(err)?;
                let value = table.get(key).map_err(err)?;
                value.map(|v| decode_text(v.value())).transpose()
            };
            let input = text(INPUTS)?.unwrap_or_default();
            let output = text(OUTPUTS)?;
            Ok(Some(TaskRecord { state, input, output }))
        };
        let result = read();
        Box::pin(async move { result })
    }

    fn logs(&self, id: TaskId) -> BoxFuture<'static, Result<Vec<serde_json::Value>, JournalError>> {
        let read = || -> Result<Vec<serde_json::Value>, JournalError> {
            let tx = self.database()?.begin_read().map_err(err)?;
            let table = tx.open_table(LOGS).map_err(err)?;
            let value = table.get(id.as_u128()).map_err(err)?;
            value.map_or(Ok(Vec::new()), |v| serde_json::from_slice(v.value()).map_err(err))
        };
        let result = read();
        Box::pin(async move { result })
    }

    fn list(&self, query: TaskQuery) -> BoxFuture<'static, Result<TaskPage, JournalError>> {
        let read = || -> Result<TaskPage, JournalError> {
            let tx = self.database()?.begin_read().map_err(err)?;
            let states = tx.open_table(STATES).map_err(err)?;
            let before = query.cursor.map_or(u128::MAX, TaskId::as_u128);
            let limit = query.limit.clamp(1, TaskQuery::MAX_LIMIT);
            let mut page = TaskPage { tasks: Vec::new(), next_cursor: None };
            let mut last = None;
            for (scanned, entry) in states.range(..before).map_err(err)?.rev().enumerate() {
                let (id, bytes) = entry.map_err(err)?;
                if scanned == TaskQuery::MAX_SCAN || page.tasks.len() == limit {
                    page.next_cursor = last;
                    break;
                }
                last = Some(TaskId::from_u128(id.value()));
                let state = decode_state(bytes.value())?;
                if query.matches(&state) {
                    page.tasks.push(state);
                }
            }
            Ok(page)
        };
        let result = read();
        Box::pin(async move { result })
    }

    fn health(&self) -> Result<(), JournalError> {
        match self.health.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// The writer thread's state.
struct Writer {
    path: PathBuf,
    db: Slot,
    health: Arc<Mutex<Option<JournalError>>>,
    retention: Retention,
    /// Changes a failed write left, with their callers: written first next time.
    backlog: Vec<Request>,
    last_sweep: Instant,
}

impl Writer {
    fn run(&mut self, requests: &mpsc::Receiver<Request>) {
        loop {
            let first = match requests.recv_timeout(TICK) {
                Ok(first) => Some(first),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut group = std::mem::take(&mut self.backlog);
            let mut count: usize = group.iter().map(|r| r.changes.len()).sum();
            if let Some(first) = first {
                count += first.changes.len();
                group.push(first);
                while count < MAX_GROUP {
                    let Ok(next) = requests.try_recv() else { break };
                    count += next.changes.len();
                    group.push(next);
                }
            }
            if !group.is_empty() || self.failing() {
                self.write(group);
            }
            if !self.failing() && self.last_sweep.elapsed() >= TICK {
                self.last_sweep = Instant::now();
                if let Err(e) = self.sweep() {
                    tracing::warn!("task journal: deleting finished tasks failed: {e}");
                }
            }
        }
    }

    fn failing(&self) -> bool {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Writes a group in one transaction (or, with nothing to write while
    /// failing, a probe) and answers its callers.
    fn write(&mut self, group: Vec<Request>) {
        let result = current(&self.db).and_then(|db| write_group(&db, group.iter().flat_map(|r| r.changes.iter())));
        match result {
            Ok(()) => {
                if self.health.lock().unwrap_or_else(|e| e.into_inner()).take().is_some() {
                    tracing::info!("task journal: writing again");
                }
                for request in group {
                    let _ = request.reply.send(Ok(()));
                }
            }
            Err(e) => {
                let e = JournalError(format!("cannot write {}: {}", self.path.display(), e.0));
                if !self.failing() {
                    tracing::error!("{e}; submissions are refused until a write succeeds, tried again every {TICK:?}");
                }
                *self.health.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.clone());
                for mut request in group {
                    request.changes.retain(|c| !c.is_submission());
                    if request.changes.is_empty() {
                        let _ = request.reply.send(Err(e.clone()));
                    } else {
                        // Its submissions were refused with the others; the
                        // caller waits for the rest (a submission comes alone).
                        self.backlog.push(request);
                    }
                }
                self.reopen();
            }
        }
    }

    /// Opens the file again: redb refuses every write after a failed one
    /// until then. A reader still holding the old handle makes this fail;
    /// the next tick tries again.
    fn reopen(&mut self) {
        let mut slot = self.db.write().unwrap_or_else(|e| e.into_inner());
        slot.take();
        match open_file(&self.path) {
            Ok(db) => *slot = Some(Arc::new(db)),
            Err(e) => tracing::warn!("task journal: reopening after a failed write: {e}"),
        }
    }

    /// Deletes finished tasks past retention and expired idempotency keys.
    fn sweep(&self) -> Result<(), JournalError> {
        let db = current(&self.db)?;
        let now = now_ms();
        let cutoff = now.saturating_sub(self.retention.max_age.as_millis() as u64);
        let mut tx = db.begin_write().map_err(err)?;
        // Deletions need not reach the disk at once: the next durable write carries them.
        tx.set_durability(Durability::Eventual);
        let mut deleted = 0;
        {
            let mut finished = tx.open_table(FINISHED).map_err(err)?;
            let over = finished.len().map_err(err)?.saturating_sub(self.retention.max_count);
            let mut doomed = Vec::new();
            for entry in finished.iter().map_err(err)? {
                let (finished_ms, id) = entry.map_err(err)?.0.value();
                if doomed.len() >= MAX_SWEEP || (doomed.len() as u64 >= over && finished_ms >= cutoff) {
                    break;
                }
                doomed.push((finished_ms, id));
            }
            let mut states = tx.open_table(STATES).map_err(err)?;
            let mut inputs = tx.open_table(INPUTS).map_err(err)?;
            let mut outputs = tx.open_table(OUTPUTS).map_err(err)?;
            let mut logs = tx.open_table(LOGS).map_err(err)?;
            for key in &doomed {
                finished.remove(key).map_err(err)?;
                states.remove(key.1).map_err(err)?;
                inputs.remove(key.1).map_err(err)?;
                outputs.remove(key.1).map_err(err)?;
                logs.remove(key.1).map_err(err)?;
            }
            deleted += doomed.len();
            let mut keys = tx.open_table(IDEMPOTENCY).map_err(err)?;
            let expired: Vec<(u64, String)> = keys
                .range(..(now, ""))
                .map_err(err)?
                .take(MAX_SWEEP)
                .map(|e| e.map(|(k, _)| (k.value().0, k.value().1.to_string())).map_err(err))
                .collect::<Result<_, _>>()?;
            for (expires, key) in &expired {
                keys.remove((*expires, key.as_str())).map_err(err)?;
            }
            deleted += expired.len();
        }
        if deleted == 0 {
            tx.abort().map_err(err)
        } else {
            tx.commit().map_err(err)
        }
    }
}

fn write_group<'a>(db: &Database, changes: impl Iterator<Item = &'a Change>) -> Result<(), JournalError> {
    let tx = db.begin_write().map_err(err)?;
    {
        let mut states = tx.open_table(STATES).map_err(err)?;
        let mut inputs = tx.open_table(INPUTS).map_err(err)?;
        let mut outputs = tx.open_table(OUTPUTS).map_err(err)?;
        let mut logs = tx.open_table(LOGS).map_err(err)?;
        let mut finished = tx.open_table(FINISHED).map_err(err)?;
        let mut keys = tx.open_table(IDEMPOTENCY).map_err(err)?;
        let mut written = 0;
        // In arrival order: a later state of the same task overwrites an earlier one.
        for change in changes {
            written += 1;
            let state = &change.state;
            let id = state.id.as_u128();
            let json = serde_json::to_vec(state).map_err(err)?;
            states.insert(id, json.as_slice()).map_err(err)?;
            if let Some(input) = &change.input {
                inputs.insert(id, input.as_bytes()).map_err(err)?;
            }
            if let Some(output) = &change.output {
                outputs.insert(id, output.as_bytes()).map_err(err)?;
            }
            if let Some(attempt) = &change.logs {
                // Appended: an attempt's lines are written once, when it ends.
                let mut all: Vec<serde_json::Value> = match logs.get(id).map_err(err)? {
                    Some(v) => serde_json::from_slice(v.value()).map_err(err)?,
                    None => Vec::new(),
                };
                // Once per attempt, whatever a retried write repeats.
                if all.last().and_then(|a| a["attempt"].as_u64()).is_none_or(|n| n < attempt.attempt.into()) {
                    all.push(serde_json::to_value(attempt).map_err(err)?);
                }
                logs.insert(id, serde_json::to_vec(&all).map_err(err)?.as_slice()).map_err(err)?;
            }
            if let Some(at) = state.finished_ms.filter(|_| state.status.is_final()) {
                finished.insert((at, id), ()).map_err(err)?;
            }
            if let Some(entry) = &change.idempotency {
                let json = serde_json::to_vec(entry).map_err(err)?;
                keys.insert((entry.expires_ms, entry.key.as_str()), json.as_slice()).map_err(err)?;
            }
        }
        if written == 0 {
            // A probe after a failure: a write that needs a page of its own.
            tx.open_table(PROBE).map_err(err)?.insert("at_ms", now_ms()).map_err(err)?;
        }
    }
    tx.commit().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{AttemptLogs, Priority, TaskStatus};

    fn state(n: u128, status: TaskStatus, finished_ms: Option<u64>) -> Change {
        let state = TaskState {
            id: TaskId::from_u128(n),
            agent: "a".into(),
            priority: Priority::Normal,
            status,
            submitted_ms: 1,
            deadline_ms: None,
            idempotency_key: None,
            owner: None,
            max_attempts: 1,
            attempts: Vec::new(),
            error: None,
            finished_ms,
        };
        Change {
            state,
            input: Some(format!("in {n}").into()),
            output: Some(format!("out {n}").into()),
            idempotency: None,
            logs: Some(AttemptLogs { attempt: 1, lines: Vec::new() }),
        }
    }

    #[test]
    fn retention_deletes_the_oldest_finished_tasks_by_age_and_count_and_never_an_unfinished_one() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(24 * 3600);
        let store = RedbTaskStore::open(&dir.path().join("j.redb"), Retention { max_age: day, max_count: 3 }).unwrap();
        let now = now_ms();
        let two_days_ago = now - 2 * day.as_millis() as u64;
        let mut changes = vec![
            state(1, TaskStatus::Completed, Some(two_days_ago)),
            state(2, TaskStatus::Failed, Some(two_days_ago + 1)),
            state(3, TaskStatus::Pending, None),
        ];
        changes.extend((10..15).map(|n| state(n, TaskStatus::Completed, Some(now + n as u64))));
        let expired =
            IdempotencyEntry { key: "old".into(), id: TaskId::from_u128(1), digest: "d".into(), expires_ms: 5 };
        let live = IdempotencyEntry {
            key: "new".into(),
            id: TaskId::from_u128(3),
            digest: "d".into(),
            expires_ms: now + 60_000,
        };
        changes[0].idempotency = Some(expired);
        changes[2].idempotency = Some(live.clone());
        futures::executor::block_on(store.commit(changes)).unwrap();
        let kept = |n: u128| futures::executor::block_on(store.get(TaskId::from_u128(n))).unwrap();
        let mut swept = false;
        for _ in 0..200 {
            if kept(11).is_none() {
                swept = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(swept, "retention never ran");
        for n in [1, 2, 10, 11] {
            assert_eq!(kept(n), None, "task {n} outlived retention");
        }
        for n in [12, 13, 14] {
            let r = kept(n).unwrap();
            assert_eq!((r.input, r.output), (format!("in {n}"), Some(format!("out {n}"))));
            let logs = futures::executor::block_on(store.logs(TaskId::from_u128(n))).unwrap();
            assert_eq!(logs, [serde_json::json!({"attempt": 1, "lines": []})]);
        }
        assert!(futures::executor::block_on(store.logs(TaskId::from_u128(11))).unwrap().is_empty());
        assert_eq!(kept(3).unwrap().state.status, TaskStatus::Pending);
        let recovered = store.load().unwrap();
        assert_eq!(recovered.unfinished.iter().map(|s| s.id).collect::<Vec<_>>(), [TaskId::from_u128(3)]);
        assert_eq!(recovered.idempotency, [live]);
    }
}
