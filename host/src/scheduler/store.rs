//! The scheduler's storage: every accepted task and each change of its
//! state, behind one trait. [`RedbTaskStore`](super::RedbTaskStore) is the
//! embedded implementation; a networked one (Redis) implements the same.

use futures::future::BoxFuture;
use std::time::Duration;

use serde::Serialize;

use super::task::{Change, IdempotencyEntry, TaskId, TaskRecord, TaskState, TaskStatus};
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

/// Which tasks to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    /// Only this agent's.
    pub agent: Option<String>,
    /// Only tasks in this state.
    pub status: Option<TaskStatus>,
    /// Only tasks this token submitted (`Some(None)`: submitted without one).
    pub owner: Option<Option<String>>,
    /// Only tasks older than this one (the last page's `next_cursor`).
    pub cursor: Option<TaskId>,
    /// At most this many (1 to [`TaskQuery::MAX_LIMIT`]).
    pub limit: usize,
}

impl TaskQuery {
    /// Most tasks on one page.
    pub const MAX_LIMIT: usize = 1000;
    /// Most tasks looked at to fill one page: a filter that matches few
    /// tasks gets a short page (and a cursor), not a scan of the journal.
    pub const MAX_SCAN: usize = 10_000;

    /// Whether `state` is one the query asks for.
    pub fn matches(&self, state: &TaskState) -> bool {
        self.agent.as_ref().is_none_or(|a| *a == state.agent)
            && self.status.is_none_or(|s| s == state.status)
            && self.owner.as_ref().is_none_or(|o| *o == state.owner)
    }
}

/// A page of tasks.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskPage {
    /// Their states (inputs and outputs are read one task at a time).
    pub tasks: Vec<TaskState>,
    /// Where the next page starts; `None` after the last.
    pub next_cursor: Option<TaskId>,
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

    /// What each finished attempt of the task logged: [`AttemptLogs`](super::AttemptLogs) as JSON.
    fn logs(&self, id: TaskId) -> BoxFuture<'static, Result<Vec<serde_json::Value>, JournalError>>;

    /// A page of stored tasks, newest first.
    fn list(&self, query: TaskQuery) -> BoxFuture<'static, Result<TaskPage, JournalError>>;

    /// Whether writes succeed now: the last error, until a write succeeds again.
    fn health(&self) -> Result<(), JournalError>;
}
