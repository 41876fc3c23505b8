//! The scheduler: a durable, prioritised, fair task queue in front of the
//! host, with deadlines, retries with backoff for transient failures only, a
//! dead-letter state, cancellation, back-pressure and per-agent
//! concurrency caps.
//!
//! What a caller can read of a task is what the journal holds: the API and
//! [`Scheduler::wait`] read the journal, never the scheduler's working copy,
//! so a task shown `completed` never runs again, whatever crashes. Memory
//! holds only the states of unfinished tasks (inputs are read from the
//! journal when a task starts, outputs go straight to it); finished tasks
//! are kept in the journal as long as [`Retention`] says.

#[cfg(feature = "redis")]
mod cluster;
mod idempotency;
mod journal;
mod metrics;
mod queue;
mod store;
mod task;

#[cfg(feature = "redis")]
pub use cluster::ClusterConfig;
pub use journal::{JournalError, RedbTaskStore};
pub use queue::{Priority, Queued, ReadyQueue};
pub use store::{Recovered, Retention, TaskStore};
pub use store::{TaskPage, TaskQuery};
pub use task::{Attempt, AttemptLogs, Change, IdempotencyEntry, TaskId, TaskRecord, TaskState, TaskStatus};

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::error::TaskError;
use crate::{Agent, Host, RunOptions};
use idempotency::{Idempotency, Reuse};
use metrics::SchedulerMetrics;

/// Scheduler settings.
#[derive(Clone)]
pub struct SchedulerConfig {
    /// Tasks in progress at once, over all agents. Workers are tasks on the
    /// async runtime, not threads: the runtime's threads (one per core) run
    /// the wasm. Default: 32 per core, so the cores stay busy while tasks
    /// wait for their journal records to commit (each task's start is
    /// durable before the agent runs).
    pub workers: usize,
    /// Tasks waiting (queued or waiting to retry) before submissions are refused.
    pub max_queued: usize,
    /// Waiting this long raises a task's effective priority by one level.
    pub aging: Duration,
    /// First retry delay; doubles with each attempt, with ±50% jitter.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Attempts per task (first run included) unless the submission says otherwise.
    pub max_attempts: u32,
    /// How long an idempotency key names its task. Default 24 h.
    pub idempotency_ttl: Duration,
    /// How long finished tasks are kept (the embedded journal; a custom
    /// store applies its own).
    pub retention: Retention,
    /// The runtime the workers (and so the agents' wasm) run on; the
    /// current one when unset. A daemon gives them a runtime of their own,
    /// so agents busy in wasm or host calls never hold up its HTTP API.
    pub runtime: Option<tokio::runtime::Handle>,
    /// Where tasks are kept; `journal.redb` in the host's data directory when unset.
    pub task_store: Option<Arc<dyn TaskStore>>,
    /// A queue shared with other nodes on Redis instead of this process's
    /// own (`task_store` is then unused: the tasks are kept in Redis).
    #[cfg(feature = "redis")]
    pub cluster: Option<ClusterConfig>,
}

impl std::fmt::Debug for SchedulerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerConfig")
            .field("workers", &self.workers)
            .field("max_queued", &self.max_queued)
            .field("aging", &self.aging)
            .field("retry_base", &self.retry_base)
            .field("retry_max", &self.retry_max)
            .field("max_attempts", &self.max_attempts)
            .field("idempotency_ttl", &self.idempotency_ttl)
            .field("retention", &self.retention)
            .field("task_store", &self.task_store.as_ref().map(|_| "custom"))
            .finish_non_exhaustive()
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            workers: 32 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_queued: 10_000,
            aging: Duration::from_secs(2),
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            max_attempts: 3,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            retention: Retention::default(),
            runtime: None,
            task_store: None,
            #[cfg(feature = "redis")]
            cluster: None,
        }
    }
}

impl SchedulerConfig {
    /// Checks the settings that would leave a scheduler unable to run
    /// anything, naming the `[scheduler]` key at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.workers == 0 {
            return Err("[scheduler] workers must be at least 1".into());
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(format!("[scheduler] max_attempts must be between 1 and 100, not {}", self.max_attempts));
        }
        if self.max_queued == 0 {
            return Err("[scheduler] max_queued must be at least 1".into());
        }
        if self.retry_base > self.retry_max {
            return Err("[scheduler] retry_base_ms must not be above retry_max_ms".into());
        }
        Ok(())
    }
}

/// An agent the scheduler can run, with its concurrency cap.
#[derive(Clone)]
pub struct AgentEntry {
    /// The loaded agent.
    pub agent: Arc<Agent>,
    /// Its tasks that may run at once.
    pub max_concurrency: usize,
}

/// A task to submit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// The agent's name.
    pub agent: String,
    /// The task input: a string, or any other JSON value (given to the
    /// agent as its JSON text).
    #[serde(default, deserialize_with = "input_text")]
    pub input: String,
    /// Priority; default normal.
    #[serde(default)]
    pub priority: Priority,
    /// Milliseconds from submission after which the task fails with
    /// `deadline-exceeded` (queued or running).
    pub deadline_ms: Option<u64>,
    /// A second submission with the same key (within the key's time to
    /// live) returns the first task's id if it names the same agent and
    /// input, and is refused if not.
    pub idempotency_key: Option<String>,
    /// Attempts allowed for retryable failures (first run included).
    pub max_attempts: Option<u32>,
    /// Who submits (the daemon sets it from the caller's token; a request
    /// cannot): the task is theirs, and idempotency keys are theirs alone.
    #[serde(skip)]
    pub owner: Option<String>,
}

/// A submission's `input`: a JSON string as it is, any other value as its JSON text.
fn input_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(text) => text,
        other => other.to_string(),
    })
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("unknown agent `{0}`; GET /v1/agents lists the agents this host runs")]
    UnknownAgent(String),
    #[error("input too large: {size} bytes; agent `{agent}` accepts at most {limit} ([limits] max_input_bytes)")]
    InputTooLarge { agent: String, size: u64, limit: u64 },
    #[error("the queue is full ({capacity} tasks waiting); retry later")]
    QueueFull { capacity: usize },
    #[error("max_attempts must be between 1 and 100, not {0}")]
    BadAttempts(u32),
    #[error("deadline_ms {0} is too far in the future; give milliseconds from now")]
    BadDeadline(u64),
    #[error("idempotency_key is {0} bytes; give 1 to {max} bytes", max = MAX_IDEMPOTENCY_KEY)]
    BadIdempotencyKey(usize),
    #[error("idempotency key {key:?} names task {id}, submitted with another agent or input; use a new key")]
    IdempotencyConflict { key: String, id: TaskId },
    #[error("the scheduler is shutting down")]
    ShuttingDown,
    /// This node's component for the agent is not the one the cluster runs.
    #[error("{0}")]
    AgentMismatch(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Why a cancellation did nothing.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CancelError {
    #[error("no task {0}")]
    NotFound(TaskId),
    #[error("task {id} already finished ({status})")]
    AlreadyFinished { id: TaskId, status: &'static str },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

struct State {
    queue: ReadyQueue,
    /// The working states of unfinished tasks (and of finished ones until
    /// their final state is committed).
    live: HashMap<TaskId, TaskState>,
    running: HashMap<TaskId, CancellationToken>,
    idempotency: Idempotency,
    /// Tasks waiting out a retry delay, and submissions being committed
    /// (they count against `max_queued`).
    retrying: usize,
    /// Callers of [`Scheduler::wait`], by task: told once its final state is committed.
    waiters: HashMap<TaskId, Vec<oneshot::Sender<()>>>,
}

/// The agents by name; replaced whole by [`Scheduler::replace_agents`].
type Agents = Arc<HashMap<String, AgentEntry>>;

/// What [`Scheduler::replace_agents`] changed, by agent name.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// A new component (digest), policy or concurrency cap.
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
}

struct Shared {
    host: Arc<Host>,
    agents: std::sync::RwLock<Agents>,
    config: SchedulerConfig,
    state: Mutex<State>,
    wake: Arc<Notify>,
    journal: Arc<dyn TaskStore>,
    stop: CancellationToken,
    metrics: SchedulerMetrics,
    /// Records of finished attempts on their way to the journal.
    committing: AtomicUsize,
}

/// The scheduler. Cheap to clone; all clones share one queue.
#[derive(Clone)]
pub struct Scheduler {
    inner: Inner,
}

/// Where the queue is: in this process, or on Redis shared with other nodes.
#[derive(Clone)]
enum Inner {
    Local(Arc<Shared>),
    #[cfg(feature = "redis")]
    Cluster(Arc<cluster::Cluster>),
}

/// A submission that passed the checks every scheduler makes, ready to queue.
struct Accepted {
    state: TaskState,
    input: Arc<str>,
    /// Its idempotency key (scoped to its owner), if it has one.
    idempotency: Option<IdempotencyEntry>,
}

/// The longest idempotency key, in bytes: keys are kept (and, on a
/// cluster, sent to Redis) with every task that has one.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

/// Checks a submission against the agents and settings, and makes its task.
fn accept(agents: &Agents, config: &SchedulerConfig, submission: Submission) -> Result<Accepted, SubmitError> {
    let limit = match agents.get(&submission.agent) {
        Some(entry) => entry.agent.policy().limits.max_input_bytes,
        None => return Err(SubmitError::UnknownAgent(submission.agent)),
    };
    if submission.input.len() as u64 > limit {
        return Err(SubmitError::InputTooLarge { agent: submission.agent, size: submission.input.len() as u64, limit });
    }
    if let Some(key) = &submission.idempotency_key {
        if !(1..=MAX_IDEMPOTENCY_KEY).contains(&key.len()) {
            return Err(SubmitError::BadIdempotencyKey(key.len()));
        }
    }
    let max_attempts = submission.max_attempts.unwrap_or(config.max_attempts);
    if !(1..=100).contains(&max_attempts) {
        return Err(SubmitError::BadAttempts(max_attempts));
    }
    let submitted_ms = now_ms();
    let deadline_ms = match submission.deadline_ms {
        Some(d) => Some(submitted_ms.checked_add(d).ok_or(SubmitError::BadDeadline(d))?),
        None => None,
    };
    let input: Arc<str> = submission.input.into();
    let id = TaskId::generate();
    // Each owner's keys are apart (length-prefixed: no two owners' keys meet).
    let idempotency = submission.idempotency_key.as_ref().map(|key| IdempotencyEntry {
        key: match &submission.owner {
            Some(owner) => format!("{}:{owner}:{key}", owner.len()),
            None => key.clone(),
        },
        id,
        digest: Idempotency::digest(&submission.agent, &input),
        expires_ms: submitted_ms.saturating_add(config.idempotency_ttl.as_millis() as u64),
    });
    let state = TaskState {
        id,
        agent: submission.agent,
        priority: submission.priority,
        status: TaskStatus::Pending,
        submitted_ms,
        deadline_ms,
        idempotency_key: submission.idempotency_key,
        owner: submission.owner,
        max_attempts,
        attempts: Vec::new(),
        error: None,
        finished_ms: None,
    };
    Ok(Accepted { state, input, idempotency })
}

/// Closes a task's last attempt with a run's outcome and gives the task
/// its next status: final, or pending with the delay before its retry
/// (transient failures only, while attempts are left). Returns the output
/// and that delay.
fn settle(
    task: &mut TaskState,
    outcome: Result<String, TaskError>,
    usage: crate::usage::ResourceUsage,
    backoff: impl FnOnce(u32) -> Duration,
) -> (Option<Arc<str>>, Option<Duration>) {
    let now = now_ms();
    let attempts = task.attempts.len() as u32;
    let attempt = task.attempts.last_mut().expect("a running task has an attempt");
    attempt.finished_ms = Some(now);
    attempt.usage = Some(usage);
    attempt.error = outcome.as_ref().err().cloned();
    let (mut output, mut retry_after) = (None, None);
    match outcome {
        Ok(out) => {
            task.status = TaskStatus::Completed;
            output = Some(Arc::<str>::from(out));
            task.error = None;
        }
        Err(e) => {
            task.status = match &e {
                TaskError::Cancelled => TaskStatus::Cancelled,
                TaskError::DeadlineExceeded => TaskStatus::TimedOut,
                // Limit hits, traps and denials are never retried.
                e if !e.is_retryable() => TaskStatus::Failed,
                _ if attempts >= task.max_attempts => TaskStatus::DeadLettered,
                _ => {
                    retry_after = Some(backoff(attempts));
                    TaskStatus::Pending
                }
            };
            task.error = Some(e);
        }
    }
    if task.status.is_final() {
        task.finished_ms = Some(now);
    }
    (output, retry_after)
}

/// Exponential backoff with ±50% jitter: base × 2^(attempt−1), capped.
fn backoff(config: &SchedulerConfig, attempt: u32) -> Duration {
    let exp = config.retry_base.saturating_mul(1u32 << (attempt - 1).min(20));
    let capped = exp.min(config.retry_max);
    capped.mul_f64(rand::rng().random_range(0.5..=1.5))
}

/// What replacing `old` by `agents` changes, and the agents to run: an
/// unchanged one stays as it is (its slots, and so its cap, hold across
/// the reload).
fn diff_agents(old: &Agents, agents: Vec<AgentEntry>) -> (AgentChanges, Vec<AgentEntry>) {
    let mut changes = AgentChanges::default();
    let mut next = Vec::with_capacity(agents.len());
    for entry in agents {
        let name = entry.agent.name().to_string();
        match old.get(&name) {
            None => changes.added.push(name),
            Some(was)
                if was.agent.digest() == entry.agent.digest()
                    && was.max_concurrency == entry.max_concurrency
                    && serde_json::to_value(was.agent.policy()).ok()
                        == serde_json::to_value(entry.agent.policy()).ok() =>
            {
                changes.unchanged.push(name);
                next.push(was.clone());
                continue;
            }
            Some(_) => changes.changed.push(name),
        }
        next.push(entry);
    }
    changes.removed = old.keys().filter(|n| !next.iter().any(|e| e.agent.name() == n.as_str())).cloned().collect();
    for list in [&mut changes.added, &mut changes.removed, &mut changes.changed, &mut changes.unchanged] {
        list.sort();
    }
    (changes, next)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The change to commit for a task's working state.
fn staged(state: &TaskState, output: Option<Arc<str>>) -> Change {
    Change { state: state.clone(), input: None, output, idempotency: None, logs: None }
}

impl Scheduler {
    /// Starts the scheduler. With `config.cluster` set, the queue is the
    /// one on Redis that every node configured with it shares (see
    /// [`ClusterConfig`]). Otherwise it opens the task store
    /// (`journal.redb` in the host's data directory unless the config names
    /// one), recovers every task that had not finished (a task that was
    /// running at a crash runs again, its cut-off attempt marked
    /// interrupted), and starts the workers. Must be called inside a tokio
    /// runtime.
    pub fn start(host: Arc<Host>, agents: Vec<AgentEntry>, config: SchedulerConfig) -> Result<Scheduler, JournalError> {
        config.validate().map_err(JournalError::new)?;
        #[cfg(feature = "redis")]
        if let Some(cluster) = config.cluster.clone() {
            let cluster = cluster::Cluster::open(host, agents, config, &cluster)?;
            return Ok(Scheduler { inner: Inner::Cluster(cluster) });
        }
        Ok(Scheduler { inner: Inner::Local(Shared::open(host, agents, config)?) })
    }

    /// Accepts a task: validates it, writes it to the journal, then queues it.
    pub async fn submit(&self, submission: Submission) -> Result<TaskId, SubmitError> {
        match &self.inner {
            Inner::Local(s) => s.clone().submit(submission).await,
            #[cfg(feature = "redis")]
            Inner::Cluster(c) => c.submit(submission).await,
        }
    }

    /// The log lines of each of the task's finished attempts, as committed.
    pub async fn logs(&self, id: TaskId) -> Result<Vec<serde_json::Value>, JournalError> {
        match &self.inner {
            Inner::Local(s) => s.journal.logs(id).await,
            #[cfg(feature = "redis")]
            Inner::Cluster(c) => c.logs(id).await,
        }
    }

    /// A page of tasks (newest first) as committed, as `query` filters them.
    pub async fn list(&self, query: TaskQuery) -> Result<TaskPage, JournalError> {
        match &self.inner {
            Inner::Local(s) => s.journal.list(query).await,
            #[cfg(feature = "redis")]
            Inner::Cluster(c) => c.list(query).await,
        }
    }

    /// The task's record as committed, if it exists (finished tasks are
    /// kept as long as the retention settings say).
    pub async fn status(&self, id: TaskId) -> Result<Option<TaskRecord>, JournalError> {
        match &self.inner {
            Inner::Local(s) => s.journal.get(id).await,
            #[cfg(feature = "redis")]
            Inner::Cluster(c) => c.status(id).await,
        }
    }

    /// Waits until the task reaches a final state and returns its record
    /// (`None` if there is no such task, or the scheduler stopped first).
    /// Final states reported here are already in the journal.
    pub async fn wait(&self, id: TaskId) -> Option<TaskRecord> {
        match &self.inner {
            Inner::Local(s) => s.wait(id).await,
            #[cfg(feature = "redis")]
            Inner::Cluster(c) => c.wait(id).await,
        }
    }

    /// Cancels a task: a queued one never runs; a running one is interrupted
    /// at its next epoch check and its instance thrown away (on a cluster,
    /// by the node running it, at its next lease renewal).
    pub async fn cancel(&self, id: TaskId) -> Result<TaskStatus, CancelError> {
        match &self.inner {
            Inner::Local(s) => s.clone().cancel(id).await,
            #[cfg(feature = "redis")]
            Inner::Cluster(c) => c.cancel(id).await,
        }
    }

    /// The agents this scheduler runs now.
    pub fn agents(&self) -> Vec<AgentEntry> {
        match &self.inner {
            Inner::Local(s) => s.agents_now().values().cloned().collect(),
            #[cfg(feature = "redis")]
            Inner::Cluster(c) => c.agents(),
        }
    }

    /// Runs `agents` from now on instead of the current ones: new tasks
    /// (and calls from other agents) get the new agents and their
    /// policies; tasks running finish with the agent they started with;
    /// queued tasks of an agent no longer there fail when their turn comes.
    pub fn replace_agents(&self, agents: Vec<AgentEntry>) -> AgentChanges {
        match &self.inner {
            Inner::Local(s) => s.replace_agents(agents),
            #[cfg(feature = "redis")]
            Inner::Cluster(c) => c.replace_agents(agents),
        }
    }

    /// Tasks waiting now, over all priorities (on a cluster: over the
    /// whole queue, as this node's last housekeeping saw, retries included).
    pub fn queued(&self) -> usize {
        match &self.inner {
            Inner::Local(s) => s.state.lock().unwrap().queue.len(),
            #[cfg(feature = "redis")]
            Inner::Cluster(c) => c.queued(),
        }
    }

    /// Tasks in memory now: unfinished, or finished with their final state
    /// still being committed (on a cluster: the tasks this node holds).
    pub fn live(&self) -> usize {
        match &self.inner {
            Inner::Local(s) => s.state.lock().unwrap().live.len(),
            #[cfg(feature = "redis")]
            Inner::Cluster(c) => c.live(),
        }
    }

    /// Whether [`Scheduler::shutdown`] has been called.
    pub fn stopping(&self) -> bool {
        match &self.inner {
            Inner::Local(s) => s.stop.is_cancelled(),
            #[cfg(feature = "redis")]
            Inner::Cluster(c) => c.stopping(),
        }
    }

    /// Whether the task store writes now (the last error if not).
    pub fn storage_health(&self) -> Result<(), JournalError> {
        match &self.inner {
            Inner::Local(s) => s.journal.health(),
            #[cfg(feature = "redis")]
            Inner::Cluster(c) => c.storage_health(),
        }
    }

    /// Stops taking tasks from the queue and waits up to `grace` for running
    /// tasks to finish (returning as soon as they have). Queued tasks stay
    /// in the journal for the next start; tasks still running after
    /// `grace` run again then.
    pub async fn shutdown(&self, grace: Duration) {
        match &self.inner {
            Inner::Local(s) => s.shutdown(grace).await,
            #[cfg(feature = "redis")]
            Inner::Cluster(c) => c.shutdown(grace).await,
        }
    }
}

/// What a task popped off the queue gets.
enum Claim {
    /// A slot of its agent: it may start.
    Slot(Claimed),
    /// Its final state (its deadline passed, its agent is gone), to commit.
    Ended(Box<Change>),
    /// Nothing: its agent's slots were taken meanwhile; it is queued again.
    Busy,
}

struct Claimed {
    priority: Priority,
    queued: Queued,
    agent: Arc<Agent>,
    slot: crate::concurrency::Slot,
}

/// A task taken off the queue to run.
struct Job {
    id: TaskId,
    agent: Arc<Agent>,
    input: Arc<str>,
    deadline_ms: Option<u64>,
    cancel: CancellationToken,
    waited: Duration,
    attempt: usize,
    /// The agent's running slot, freed when the run ends.
    slot: crate::concurrency::Slot,
}

/// The agents by name, each with its cap set, waking the workers when a
/// slot frees, and registered with the host (callable by other agents).
fn enlist(host: &Host, wake: &Arc<Notify>, agents: Vec<AgentEntry>) -> HashMap<String, AgentEntry> {
    for entry in &agents {
        // One cap for the agent, whether the scheduler or a calling agent starts it.
        entry.agent.set_max_concurrency(entry.max_concurrency);
        entry.agent.slots.on_free(wake.clone());
        host.register(entry.agent.clone());
    }
    agents.into_iter().map(|e| (e.agent.name().to_string(), e)).collect()
}

impl Shared {
    /// The local scheduler: recovers the journal's unfinished tasks and
    /// starts the workers.
    fn open(host: Arc<Host>, agents: Vec<AgentEntry>, config: SchedulerConfig) -> Result<Arc<Shared>, JournalError> {
        let journal: Arc<dyn TaskStore> = match &config.task_store {
            Some(store) => store.clone(),
            None => Arc::new(RedbTaskStore::open(&host.config().data_dir.join("journal.redb"), config.retention)?),
        };
        // Recovery reads and writes the store: off the async workers.
        let loaded = {
            let journal = journal.clone();
            std::thread::spawn(move || journal.load())
                .join()
                .unwrap_or_else(|_| Err(JournalError::new("reading the task store panicked".into())))?
        };
        let metrics = SchedulerMetrics::register(host.metrics());
        let wake = Arc::new(Notify::new());
        let agents = enlist(&host, &wake, agents);
        let mut state = State {
            queue: ReadyQueue::default(),
            live: HashMap::new(),
            running: HashMap::new(),
            idempotency: Idempotency::default(),
            retrying: 0,
            waiters: HashMap::new(),
        };
        for entry in loaded.idempotency {
            state.idempotency.insert(entry);
        }
        let mut recovered = Vec::new();
        for mut working in loaded.unfinished {
            if working.status == TaskStatus::Running {
                if let Some(last) = working.attempts.last_mut() {
                    last.interrupted = true;
                }
            }
            working.status = TaskStatus::Pending;
            let agent: Arc<str> = working.agent.as_str().into();
            state.queue.push(working.priority, Queued { id: working.id, agent, since: Instant::now() });
            recovered.push(staged(&working, None));
            state.live.insert(working.id, working);
        }
        if !recovered.is_empty() {
            let written = journal.commit(recovered.clone());
            std::thread::spawn(move || futures::executor::block_on(written))
                .join()
                .unwrap_or_else(|_| Err(JournalError::new("writing the task store panicked".into())))?;
        }
        let shared = Arc::new(Shared {
            host,
            agents: std::sync::RwLock::new(Arc::new(agents)),
            config,
            state: Mutex::new(state),
            wake: wake.clone(),
            journal,
            stop: CancellationToken::new(),
            metrics,
            committing: AtomicUsize::new(0),
        });
        shared.metrics.set_queue_depth(&shared.state.lock().unwrap().queue);
        let runtime = shared.config.runtime.clone().unwrap_or_else(tokio::runtime::Handle::current);
        for _ in 0..shared.config.workers {
            let shared = shared.clone();
            runtime.spawn(async move { shared.worker().await });
        }
        if !recovered.is_empty() {
            tracing::info!(tasks = recovered.len(), "recovered unfinished tasks from the journal");
        }
        Ok(shared)
    }

    async fn submit(self: Arc<Self>, submission: Submission) -> Result<TaskId, SubmitError> {
        if self.stop.is_cancelled() {
            return Err(SubmitError::ShuttingDown);
        }
        let Accepted { state, input, idempotency } = accept(&self.agents_now(), &self.config, submission)?;
        {
            let mut st = self.state.lock().unwrap();
            if let Some(entry) = &idempotency {
                match st.idempotency.reuse(&entry.key, &state.agent, &input, state.submitted_ms) {
                    Reuse::Same(id) => return Ok(id),
                    Reuse::Conflict(id) => {
                        let key = state.idempotency_key.clone().unwrap_or_default();
                        return Err(SubmitError::IdempotencyConflict { key, id });
                    }
                    Reuse::Free => {}
                }
            }
            if st.queue.len() + st.retrying >= self.config.max_queued {
                self.metrics.rejected.inc();
                return Err(SubmitError::QueueFull { capacity: self.config.max_queued });
            }
            if let Some(entry) = &idempotency {
                st.idempotency.insert(entry.clone());
            }
            // Reserve the queue room now; the task becomes visible once it is durable.
            st.retrying += 1;
        }
        let change = Change { state, input: Some(input), output: None, idempotency, logs: None };
        // The durable step runs on a task of its own: a caller that goes
        // away (a client hanging up mid-submit) cannot leave the reserved
        // room and idempotency key behind.
        match tokio::spawn(async move { self.admit(change).await }).await {
            Ok(result) => result,
            Err(e) => Err(SubmitError::Journal(JournalError::new(format!("the submission was lost: {e}")))),
        }
    }

    async fn wait(&self, id: TaskId) -> Option<TaskRecord> {
        let done = {
            let mut st = self.state.lock().unwrap();
            if !st.live.contains_key(&id) {
                None
            } else {
                let (tx, rx) = oneshot::channel();
                st.waiters.entry(id).or_default().push(tx);
                Some(rx)
            }
        };
        if let Some(done) = done {
            done.await.ok()?;
        }
        self.journal.get(id).await.ok().flatten().filter(|r| r.state.status.is_final())
    }

    async fn cancel(self: Arc<Self>, id: TaskId) -> Result<TaskStatus, CancelError> {
        let staged = {
            let mut guard = self.state.lock().unwrap();
            let st = &mut *guard;
            match st.live.get_mut(&id) {
                None => None,
                Some(_) if st.running.contains_key(&id) => {
                    st.running[&id].cancel();
                    return Ok(TaskStatus::Running);
                }
                Some(task) if task.status.is_final() => {
                    return Err(CancelError::AlreadyFinished { id, status: task.status.name() });
                }
                Some(task) => {
                    if st.queue.remove(id) {
                        self.metrics.set_queue_depth(&st.queue);
                    }
                    // Queued, being started, or waiting for a retry (each
                    // of those sees it is final).
                    task.status = TaskStatus::Cancelled;
                    task.error = Some(TaskError::Cancelled);
                    task.finished_ms = Some(now_ms());
                    Some(staged(task, None))
                }
            }
        };
        let Some(staged) = staged else {
            return match self.journal.get(id).await? {
                Some(r) => Err(CancelError::AlreadyFinished { id, status: r.state.status.name() }),
                None => Err(CancelError::NotFound(id)),
            };
        };
        self.metrics.finished(&staged.state.agent, TaskStatus::Cancelled);
        // On a task of its own, so a caller that goes away cannot stop the
        // commit or the wake-up of the task's waiters halfway.
        let _ = tokio::spawn(async move { self.commit_and_show(staged).await }).await;
        Ok(TaskStatus::Cancelled)
    }

    fn replace_agents(&self, agents: Vec<AgentEntry>) -> AgentChanges {
        let old = self.agents_now();
        let (changes, next) = diff_agents(&old, agents);
        let new = Arc::new(enlist(&self.host, &self.wake, next));
        *self.agents.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        for name in old.keys().filter(|n| !new.contains_key(*n)) {
            self.host.unregister(name);
        }
        // Queued tasks of a new or changed agent may run now.
        self.wake.notify_waiters();
        changes
    }

    async fn shutdown(&self, grace: Duration) {
        self.stop.cancel();
        self.wake.notify_waiters();
        let until = Instant::now() + grace;
        let busy = || !self.state.lock().unwrap().running.is_empty() || self.committing.load(Ordering::SeqCst) > 0;
        while Instant::now() < until && busy() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The agents of the moment.
    fn agents_now(&self) -> Agents {
        self.agents.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Commits a change, then (for a final state) lets the task leave
    /// memory and tells its waiters.
    async fn commit_and_show(&self, change: Change) {
        let (id, status) = (change.state.id, change.state.status);
        match self.journal.commit(vec![change]).await {
            Ok(()) => self.committed(id, status),
            Err(e) => tracing::error!("{e}"),
        }
    }

    /// A change of the task to `status` is durable.
    fn committed(&self, id: TaskId, status: TaskStatus) {
        if !status.is_final() {
            return;
        }
        let mut st = self.state.lock().unwrap();
        st.live.remove(&id);
        let waiters = st.waiters.remove(&id);
        drop(st);
        for waiter in waiters.into_iter().flatten() {
            let _ = waiter.send(());
        }
    }

    /// Commits an accepted task whose id and queue room are reserved, then
    /// queues it; on failure gives the room and the idempotency key back.
    async fn admit(&self, change: Change) -> Result<TaskId, SubmitError> {
        let written = self.journal.commit(vec![change.clone()]).await;
        let mut st = self.state.lock().unwrap();
        st.retrying -= 1;
        let state = change.state;
        if let Err(e) = written {
            if let Some(entry) = &change.idempotency {
                st.idempotency.remove(&entry.key);
            }
            return Err(e.into());
        }
        let id = state.id;
        let agent: Arc<str> = state.agent.as_str().into();
        self.metrics.submitted(&state.agent);
        st.queue.push(state.priority, Queued { id, agent, since: Instant::now() });
        st.live.insert(id, state);
        self.metrics.set_queue_depth(&st.queue);
        drop(st);
        self.wake.notify_one();
        Ok(id)
    }

    async fn worker(self: Arc<Self>) {
        // Stopping is seen only between jobs and while waiting for one: a
        // job being started (its start committing) is never dropped halfway.
        while let Some(job) = self.next_job().await {
            self.execute(job).await;
        }
    }

    /// Waits for the next runnable task and marks it running; `None` once
    /// the scheduler stops.
    async fn next_job(&self) -> Option<Job> {
        loop {
            if self.stop.is_cancelled() {
                return None;
            }
            let wake = self.wake.notified();
            let popped = {
                let mut guard = self.state.lock().unwrap();
                let st = &mut *guard;
                let caps = self.agents_now();
                let runnable = |agent: &str| caps.get(agent).is_some_and(|e| e.agent.slots.available());
                let popped = st.queue.pop(Instant::now(), self.config.aging, runnable);
                self.metrics.set_queue_depth(&st.queue);
                popped.map(|(priority, queued)| self.claim(st, priority, queued))
            };
            match popped {
                Some(Claim::Ended(ended)) => {
                    // It ended before it could start (deadline passed, agent gone).
                    self.metrics.finished(&ended.state.agent, ended.state.status);
                    self.commit_and_show(*ended).await;
                }
                Some(Claim::Slot(claimed)) => {
                    if let Some(job) = self.start(claimed).await {
                        return Some(job);
                    }
                }
                Some(Claim::Busy) => {}
                None => tokio::select! {
                    _ = wake => {}
                    _ = self.stop.cancelled() => return None,
                },
            }
        }
    }

    /// What a popped task gets: a slot of its agent, or its final state if
    /// it cannot start, or nothing when the agent has no free slot after all.
    fn claim(&self, st: &mut State, priority: Priority, queued: Queued) -> Claim {
        let task = st.live.get_mut(&queued.id).expect("a queued task is live");
        let agents = self.agents_now();
        let Some(entry) = agents.get(&*queued.agent) else {
            // An agent removed from the configuration since the task was accepted.
            task.status = TaskStatus::Failed;
            task.error = Some(TaskError::Instantiate {
                reason: format!("agent `{}` is not configured on this host", queued.agent),
            });
            task.finished_ms = Some(now_ms());
            return Claim::Ended(Box::new(staged(task, None)));
        };
        let now = now_ms();
        if task.deadline_ms.is_some_and(|d| d <= now) {
            task.status = TaskStatus::TimedOut;
            task.error = Some(TaskError::DeadlineExceeded);
            task.finished_ms = Some(now);
            return Claim::Ended(Box::new(staged(task, None)));
        }
        let Some(slot) = entry.agent.slots.try_take() else {
            // A calling agent took the last slot since the queue looked: wait
            // for one to be freed (that wakes the workers).
            st.queue.push(priority, queued);
            return Claim::Busy;
        };
        Claim::Slot(Claimed { priority, queued, agent: entry.agent.clone(), slot })
    }

    /// Reads the claimed task's input, marks it running and commits that
    /// (durable before the agent runs: an attempt that had side effects is
    /// on record, so one cut off by a crash is known as such). `None` if it
    /// was cancelled meanwhile, or its input cannot be read now (it goes
    /// back to the queue).
    async fn start(&self, claimed: Claimed) -> Option<Job> {
        let Claimed { priority, queued, agent, slot } = claimed;
        let input = match self.journal.get(queued.id).await {
            Ok(Some(record)) => Arc::<str>::from(record.input),
            outcome => {
                let why = match outcome {
                    Err(e) => e.to_string(),
                    _ => "the task is not in the journal".into(),
                };
                tracing::error!(task = %queued.id, "cannot read the task's input: {why}; it waits in the queue");
                drop(slot);
                {
                    let mut st = self.state.lock().unwrap();
                    if st.live.get(&queued.id).is_some_and(|t| t.status == TaskStatus::Pending) {
                        st.queue.push(priority, queued);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                return None;
            }
        };
        let (job, start) = {
            let mut guard = self.state.lock().unwrap();
            let st = &mut *guard;
            let task = st.live.get_mut(&queued.id)?;
            if task.status != TaskStatus::Pending {
                return None; // cancelled while its input was read
            }
            let now = now_ms();
            task.status = TaskStatus::Running;
            task.attempts.push(Attempt {
                started_ms: now,
                finished_ms: None,
                error: None,
                usage: None,
                interrupted: false,
                node: None,
            });
            let job = Job {
                id: queued.id,
                agent,
                input,
                deadline_ms: task.deadline_ms,
                cancel: CancellationToken::new(),
                waited: queued.since.elapsed(),
                attempt: task.attempts.len(),
                slot,
            };
            let start = staged(task, None);
            st.running.insert(job.id, job.cancel.clone());
            (job, start)
        };
        self.commit_and_show(start).await;
        Some(job)
    }

    async fn execute(self: &Arc<Self>, job: Job) {
        self.metrics.queue_wait.observe(job.waited.as_secs_f64());
        let deadline = job.deadline_ms.map(|d| {
            let left = Duration::from_millis(d.saturating_sub(now_ms()));
            tokio::time::Instant::now() + left
        });
        let options = RunOptions { deadline, cancel: Some(job.cancel.clone()) };
        let span = tracing::info_span!("task", agent = job.agent.name(), task = %job.id, attempt = job.attempt);
        let report = tracing::Instrument::instrument(self.host.run_with(&job.agent, &job.input, options), span).await;

        let staged = {
            let mut guard = self.state.lock().unwrap();
            let st = &mut *guard;
            st.running.remove(&job.id);
            let record = st.live.get_mut(&job.id).expect("a running task is live");
            let (output, retry_after) = settle(record, report.outcome, report.usage, |n| backoff(&self.config, n));
            if retry_after.is_some() {
                st.retrying += 1;
            }
            let mut change = staged(record, output);
            change.logs = Some(AttemptLogs { attempt: record.attempts.len() as u32, lines: report.logs });
            (change, retry_after)
        };
        let (staged, retry_after) = staged;
        self.wake.notify_one();
        let (agent, status) = (staged.state.agent.clone(), staged.state.status);
        if status.is_final() {
            self.metrics.finished(&agent, status);
        }
        if retry_after.is_some() {
            self.metrics.retried(&agent);
        }
        // The worker goes on to the next task while this one's record is
        // committed (with others' in one group); its waiters are answered,
        // and a retry queued, only once the record is durable.
        let shared = self.clone();
        self.committing.fetch_add(1, Ordering::SeqCst);
        // Queued now, before the slot is freed: the start of a task this
        // slot lets run commits no earlier than this task's end, so a crash
        // never leaves more tasks "running" than there are slots.
        let written = self.journal.commit(vec![staged]);
        drop(job.slot);
        tokio::spawn(async move {
            let written = written.await;
            shared.committing.fetch_sub(1, Ordering::SeqCst);
            match written {
                Ok(()) => shared.committed(job.id, status),
                Err(e) => tracing::error!("{e}"),
            }
            let Some(delay) = retry_after else { return };
            tokio::time::sleep(delay).await;
            let mut st = shared.state.lock().unwrap();
            st.retrying -= 1;
            let Some(task) = st.live.get(&job.id) else { return };
            if task.status != TaskStatus::Pending {
                return; // cancelled while waiting
            }
            let (priority, agent) = (task.priority, task.agent.as_str().into());
            st.queue.push(priority, Queued { id: job.id, agent, since: Instant::now() });
            shared.metrics.set_queue_depth(&st.queue);
            drop(st);
            shared.wake.notify_one();
        });
    }
}
