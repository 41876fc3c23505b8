//! The scheduler's storage: every accepted task and each change of its
//! state, behind one trait. [`RedbTaskStore`](super::RedbTaskStore) is the
//! embedded implementation; a networked one (Redis) implements the same.

use futures::future::BoxFuture;
use std::time::Duration;

use super::task::{Change, IdempotencyEntry, TaskId, TaskRecord, TaskState};
use super::JournalError;

/// What a restart finds: the tasks that had not finished, and the
/// idempotency keys still live.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The states of unfinished tasks (their inputs are read when they start).
    pub unfinished: Vec<TaskState>,
    /// Idempotency keys that have not expired.
    pub idempotency: Vec<IdempotencyEntry>,
}

/// How long finished tasks are kept: a task is deleted (state, input and
/// output) once it is older than `max_age`, or once more than `max_count`
/// finished tasks are kept (oldest first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    pub max_age: Duration,
    pub max_count: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { max_age: Duration::from_secs(7 * 24 * 3600), max_count: 100_000 }
    }
}

/// Where the scheduler keeps its tasks. A state with an id already stored
/// replaces it.
pub trait TaskStore: Send + Sync + 'static {
    /// What a restart resumes. Called once, when the scheduler starts,
    /// from a thread of its own (it may block).
    fn load(&self) -> Result<Recovered, JournalError>;

    /// Queues `changes` for writing now — so they are durable no later
    /// than anything queued after this call — and returns what resolves
    /// once they are. A submission that cannot be written resolves to the
    /// error; any other change is kept and written again until it is
    /// durable (the future resolves then).
    fn commit(&self, changes: Vec<Change>) -> BoxFuture<'static, Result<(), JournalError>>;

    /// A stored task (finished tasks live only here).
    fn get(&self, id: TaskId) -> BoxFuture<'static, Result<Option<TaskRecord>, JournalError>>;

    /// Whether writes succeed now: the last error, until a write succeeds again.
    fn health(&self) -> Result<(), JournalError>;
}
