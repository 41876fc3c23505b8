//! What the scheduler knows of a task: its id, its state (what changes, and
//! what the journal rewrites at each change) and the record the API shows
//! (the state with the task's input and output, which are stored once each).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

use super::Priority;
use crate::error::TaskError;
use crate::log::LogLine;
use crate::usage::ResourceUsage;

/// A task's id: a UUIDv7, so ids are unguessable (74 random bits), never
/// reused (even by a host whose journal was lost), and ordered by
/// submission time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(uuid::Uuid);

impl TaskId {
    /// A new id for a task submitted now.
    pub(crate) fn generate() -> TaskId {
        TaskId(uuid::Uuid::now_v7())
    }

    /// The id as the 128-bit number it is (the journal's key).
    pub fn as_u128(self) -> u128 {
        self.0.as_u128()
    }

    /// The id whose number is `n`.
    pub fn from_u128(n: u128) -> TaskId {
        TaskId(uuid::Uuid::from_u128(n))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for TaskId {
    type Err = String;
    fn from_str(raw: &str) -> Result<TaskId, String> {
        uuid::Uuid::parse_str(raw)
            .map(TaskId)
            .map_err(|_| format!("{raw:?} is not a task id (ids are UUIDs, as `chimera submit` prints them)"))
    }
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskStatus {
    /// Queued, or waiting for a retry.
    Pending,
    /// An attempt is running.
    Running,
    /// Finished with output.
    Completed,
    /// Failed with a non-retryable error (a trap, a limit hit, a denial...).
    Failed,
    /// Cancelled.
    Cancelled,
    /// Its deadline passed.
    TimedOut,
    /// Failed with retryable errors until its attempts ran out.
    DeadLettered,
}

impl TaskStatus {
    /// Whether the task is done for good.
    pub fn is_final(self) -> bool {
        !matches!(self, TaskStatus::Pending | TaskStatus::Running)
    }

    /// The name the API uses.
    pub fn name(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::TimedOut => "timed-out",
            TaskStatus::DeadLettered => "dead-lettered",
        }
    }
}

/// One attempt at running a task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attempt {
    /// When it started (ms since the Unix epoch).
    pub started_ms: u64,
    /// When it ended, if it did.
    pub finished_ms: Option<u64>,
    /// How it failed; `None` if it succeeded or never finished.
    pub error: Option<TaskError>,
    /// What it used.
    pub usage: Option<ResourceUsage>,
    /// The host stopped while it ran; it was run again.
    #[serde(default)]
    pub interrupted: bool,
    /// The node that ran it, on a queue shared over Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What changes over a task's life: everything known about it but its input
/// and output. The journal rewrites this (a few hundred bytes) at each
/// change; the input is written once, at submission, and the output once,
/// at the end.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskState {
    pub id: TaskId,
    pub agent: String,
    pub priority: Priority,
    pub status: TaskStatus,
    /// Submission time (ms since the Unix epoch).
    pub submitted_ms: u64,
    /// Absolute deadline (ms since the Unix epoch).
    pub deadline_ms: Option<u64>,
    pub idempotency_key: Option<String>,
    /// The name of the token that submitted it (none without authentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub max_attempts: u32,
    pub attempts: Vec<Attempt>,
    pub error: Option<TaskError>,
    /// When the task reached its final state (ms since the Unix epoch);
    /// retention counts from here.
    #[serde(default)]
    pub finished_ms: Option<u64>,
}

/// Everything known about a task, as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskRecord {
    #[serde(flatten)]
    pub state: TaskState,
    pub input: String,
    pub output: Option<String>,
}

/// Who submitted a task under which idempotency key, and what: a second
/// submission with the same key gets the first task's id if it asks for the
/// same thing, and a conflict if not.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IdempotencyEntry {
    /// The key, scoped by its submitter.
    pub key: String,
    pub id: TaskId,
    /// SHA-256 of the agent's name and the input (hex).
    pub digest: String,
    /// When the key may be used for another task (ms since the Unix epoch).
    pub expires_ms: u64,
}

/// One change of a task, as the journal writes it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The task's state after the change.
    pub state: TaskState,
    /// The input, on the submission only.
    pub input: Option<Arc<str>>,
    /// The output, on completion only.
    pub output: Option<Arc<str>>,
    /// The idempotency key the submission reserved.
    pub idempotency: Option<IdempotencyEntry>,
    /// The log lines of the attempt that just ended.
    pub logs: Option<AttemptLogs>,
}

/// What one attempt logged (already escaped and capped by the host). The
/// journal keeps it as JSON, and gives it back as such.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AttemptLogs {
    /// The attempt's number, from 1.
    pub attempt: u32,
    pub lines: Vec<LogLine>,
}

impl Change {
    /// Whether this is a submission: one that cannot be written is refused
    /// (its submitter is told), where any later change is kept and written
    /// again until it is durable.
    pub fn is_submission(&self) -> bool {
        self.input.is_some()
    }
}
