//! What running a task gives back, and how to run one beyond its policy.

use serde::Serialize;

use crate::error::TaskError;
use crate::log::LogLine;
use crate::usage::ResourceUsage;

/// The result of one task, with what it used and what it logged.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct TaskReport {
    /// Unique within this host.
    pub task_id: u64,
    /// The agent's name.
    pub agent: String,
    /// The agent's output, or how the task failed.
    pub outcome: Result<String, TaskError>,
    /// Resources used.
    pub usage: ResourceUsage,
    /// Log lines (from `logging`, stdout and stderr), escaped and capped.
    pub logs: Vec<LogLine>,
}

/// How to run one task beyond its policy: a deadline and a way to cancel it.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The task fails with [`TaskError::DeadlineExceeded`] at this instant.
    pub deadline: Option<tokio::time::Instant>,
    /// Cancelling this token ends the task with [`TaskError::Cancelled`].
    pub cancel: Option<tokio_util::sync::CancellationToken>,
}

impl RunOptions {
    /// Options with a deadline and a cancellation token, each optional.
    pub fn new(
        deadline: Option<tokio::time::Instant>,
        cancel: Option<tokio_util::sync::CancellationToken>,
    ) -> RunOptions {
        RunOptions { deadline, cancel }
    }
}
