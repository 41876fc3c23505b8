//! The scheduler's storage: every accepted task and each change of its
//! state, behind one trait. [`RedbTaskStore`](super::RedbTaskStore) is the
//! embedded implementation; a networked one (Redis) implements the same.

use futures::future::BoxFuture;

use super::{JournalError, TaskRecord};

/// Where the scheduler keeps its tasks. A record with an id already stored
/// replaces it.
pub trait TaskStore: Send + Sync + 'static {
    /// Every stored task. Called once, when the scheduler starts, from a
    /// thread of its own (it may block).
    fn load(&self) -> Result<Vec<TaskRecord>, JournalError>;

    /// Queues `records` for writing now — so they are durable no later
    /// than anything queued after this call — and returns what resolves
    /// once they are. Batches: one call carries every record of a change,
    /// and an implementation may write what several calls queued together.
    fn commit(&self, records: Vec<TaskRecord>) -> BoxFuture<'static, Result<(), JournalError>>;
}
