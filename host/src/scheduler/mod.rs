//! The scheduler: a durable, prioritised, fair task queue in front of the
//! host, with deadlines, retries with backoff for transient failures only, a
//! dead-letter state, cancellation, back-pressure and per-agent
//! concurrency caps.

mod journal;
mod metrics;
mod queue;
mod store;

pub use journal::{JournalError, RedbTaskStore};
pub use queue::{Priority, Queued, ReadyQueue};
pub use store::TaskStore;

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::error::TaskError;
use crate::usage::ResourceUsage;
use crate::{Agent, Host, RunOptions};
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
    /// The runtime the workers (and so the agents' wasm) run on; the
    /// current one when unset. A daemon gives them a runtime of their own,
    /// so agents busy in wasm or host calls never hold up its HTTP API.
    pub runtime: Option<tokio::runtime::Handle>,
    /// Where tasks are kept; `journal.redb` in the host's data directory when unset.
    pub task_store: Option<Arc<dyn TaskStore>>,
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
            runtime: None,
            task_store: None,
        }
    }
}

/// An agent the scheduler can run, with its concurrency cap.
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
    /// The task input.
    #[serde(default)]
    pub input: String,
    /// Priority; default normal.
    #[serde(default)]
    pub priority: Priority,
    /// Milliseconds from submission after which the task fails with
    /// `deadline-exceeded` (queued or running).
    pub deadline_ms: Option<u64>,
    /// A second submission with the same key returns the first task's id.
    pub idempotency_key: Option<String>,
    /// Attempts allowed for retryable failures (first run included).
    pub max_attempts: Option<u32>,
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

    fn name(self) -> &'static str {
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
}

/// Everything known about a task; what the journal keeps and the API shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskRecord {
    pub id: u64,
    pub agent: String,
    pub input: String,
    pub priority: Priority,
    pub status: TaskStatus,
    /// Submission time (ms since the Unix epoch).
    pub submitted_ms: u64,
    /// Absolute deadline (ms since the Unix epoch).
    pub deadline_ms: Option<u64>,
    pub idempotency_key: Option<String>,
    pub max_attempts: u32,
    pub attempts: Vec<Attempt>,
    pub output: Option<String>,
    pub error: Option<TaskError>,
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
    #[error("the scheduler is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Why a cancellation did nothing.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CancelError {
    #[error("no task {0}")]
    NotFound(u64),
    #[error("task {id} already finished ({status})")]
    AlreadyFinished { id: u64, status: &'static str },
}

struct State {
    queue: ReadyQueue,
    records: HashMap<u64, TaskRecord>,
    running: HashMap<u64, CancellationToken>,
    idempotency: HashMap<String, u64>,
    /// Tasks waiting out a retry delay (they count against `max_queued`).
    retrying: usize,
    /// Callers of [`Scheduler::wait`], by task.
    waiters: HashMap<u64, Vec<oneshot::Sender<TaskRecord>>>,
    next_id: u64,
}

struct Shared {
    host: Arc<Host>,
    agents: HashMap<String, AgentEntry>,
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
    shared: Arc<Shared>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Scheduler {
    /// Opens the task store (`journal.redb` in the host's data directory
    /// unless the config names one), recovers every task that had not
    /// finished (a task that was running at a crash runs again), and starts
    /// the workers. Must be called inside a tokio runtime.
    pub fn start(host: Arc<Host>, agents: Vec<AgentEntry>, config: SchedulerConfig) -> Result<Scheduler, JournalError> {
        let journal: Arc<dyn TaskStore> = match &config.task_store {
            Some(store) => store.clone(),
            None => Arc::new(RedbTaskStore::open(&host.config().data_dir.join("journal.redb"))?),
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
        for entry in &agents {
            // One cap for the agent, whether the scheduler or a calling agent starts it.
            entry.agent.set_max_concurrency(entry.max_concurrency);
            entry.agent.slots.on_free(wake.clone());
            host.register(entry.agent.clone());
        }
        let agents: HashMap<String, AgentEntry> = agents.into_iter().map(|e| (e.agent.name().to_string(), e)).collect();
        let mut state = State {
            queue: ReadyQueue::default(),
            records: HashMap::new(),
            running: HashMap::new(),
            idempotency: HashMap::new(),
            retrying: 0,
            waiters: HashMap::new(),
            next_id: 1,
        };
        let mut recovered = Vec::new();
        for mut record in loaded {
            state.next_id = state.next_id.max(record.id + 1);
            if let Some(key) = &record.idempotency_key {
                state.idempotency.insert(key.clone(), record.id);
            }
            if !record.status.is_final() {
                if record.status == TaskStatus::Running {
                    if let Some(last) = record.attempts.last_mut() {
                        last.interrupted = true;
                    }
                }
                record.status = TaskStatus::Pending;
                let agent: Arc<str> = record.agent.as_str().into();
                state.queue.push(record.priority, Queued { id: record.id, agent, since: Instant::now() });
                recovered.push(record.clone());
            }
            state.records.insert(record.id, record);
        }
        if !recovered.is_empty() {
            let written = journal.commit(recovered.clone());
            std::thread::spawn(move || futures::executor::block_on(written))
                .join()
                .unwrap_or_else(|_| Err(JournalError::new("writing the task store panicked".into())))?;
        }
        let shared = Arc::new(Shared {
            host,
            agents,
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
        for _ in 0..shared.config.workers.max(1) {
            let shared = shared.clone();
            runtime.spawn(async move { shared.worker().await });
        }
        if !recovered.is_empty() {
            tracing::info!(tasks = recovered.len(), "recovered unfinished tasks from the journal");
        }
        Ok(Scheduler { shared })
    }

    /// Accepts a task: validates it, writes it to the journal, then queues it.
    pub async fn submit(&self, submission: Submission) -> Result<u64, SubmitError> {
        let s = &self.shared;
        if s.stop.is_cancelled() {
            return Err(SubmitError::ShuttingDown);
        }
        let entry =
            s.agents.get(&submission.agent).ok_or_else(|| SubmitError::UnknownAgent(submission.agent.clone()))?;
        let limit = entry.agent.policy().limits.max_input_bytes;
        if submission.input.len() as u64 > limit {
            return Err(SubmitError::InputTooLarge {
                agent: submission.agent,
                size: submission.input.len() as u64,
                limit,
            });
        }
        let max_attempts = submission.max_attempts.unwrap_or(s.config.max_attempts);
        if !(1..=100).contains(&max_attempts) {
            return Err(SubmitError::BadAttempts(max_attempts));
        }
        let record = {
            let mut st = s.state.lock().unwrap();
            if let Some(id) = submission.idempotency_key.as_ref().and_then(|k| st.idempotency.get(k)) {
                return Ok(*id);
            }
            if st.queue.len() + st.retrying >= s.config.max_queued {
                s.metrics.rejected.inc();
                return Err(SubmitError::QueueFull { capacity: s.config.max_queued });
            }
            let id = st.next_id;
            st.next_id += 1;
            let submitted_ms = now_ms();
            let record = TaskRecord {
                id,
                agent: submission.agent,
                input: submission.input,
                priority: submission.priority,
                status: TaskStatus::Pending,
                submitted_ms,
                deadline_ms: submission.deadline_ms.map(|d| submitted_ms + d),
                idempotency_key: submission.idempotency_key,
                max_attempts,
                attempts: Vec::new(),
                output: None,
                error: None,
            };
            if let Some(key) = &record.idempotency_key {
                st.idempotency.insert(key.clone(), id);
            }
            // Reserve the id and the queue room now; the task becomes visible
            // once it is durable.
            st.retrying += 1;
            record
        };
        // The durable step runs on a task of its own: a caller that goes
        // away (a client hanging up mid-submit) cannot leave the reserved
        // room and idempotency key behind.
        let shared = self.shared.clone();
        match tokio::spawn(async move { shared.admit(record).await }).await {
            Ok(result) => result,
            Err(e) => Err(SubmitError::Journal(JournalError::new(format!("the submission was lost: {e}")))),
        }
    }

    /// The task's record, if it exists.
    pub fn status(&self, id: u64) -> Option<TaskRecord> {
        self.shared.state.lock().unwrap().records.get(&id).cloned()
    }

    /// Waits until the task reaches a final state and returns its record
    /// (`None` if there is no such task, or the scheduler stopped first).
    /// Final states reported here are already in the journal.
    pub async fn wait(&self, id: u64) -> Option<TaskRecord> {
        let done = {
            let mut st = self.shared.state.lock().unwrap();
            let record = st.records.get(&id)?;
            if record.status.is_final() {
                return Some(record.clone());
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.entry(id).or_default().push(tx);
            rx
        };
        done.await.ok()
    }

    /// Cancels a task: a queued one never runs; a running one is interrupted
    /// at its next epoch check and its instance thrown away.
    pub async fn cancel(&self, id: u64) -> Result<TaskStatus, CancelError> {
        let s = &self.shared;
        let record = {
            let mut st = s.state.lock().unwrap();
            let status = st.records.get(&id).map(|r| r.status).ok_or(CancelError::NotFound(id))?;
            if status.is_final() {
                return Err(CancelError::AlreadyFinished { id, status: status.name() });
            }
            if let Some(token) = st.running.get(&id) {
                token.cancel();
                return Ok(TaskStatus::Running);
            }
            if st.queue.remove(id) {
                s.metrics.set_queue_depth(&st.queue);
            }
            // Queued, or waiting for a retry (the retry timer sees it is final).
            let record = st.records.get_mut(&id).unwrap();
            record.status = TaskStatus::Cancelled;
            record.error = Some(TaskError::Cancelled);
            record.clone()
        };
        s.metrics.finished(&record.agent, TaskStatus::Cancelled);
        // On a task of its own, so a caller that goes away cannot stop the
        // commit or the wake-up of the task's waiters halfway.
        let shared = self.shared.clone();
        let finished = tokio::spawn(async move {
            if let Err(e) = shared.journal.commit(vec![record.clone()]).await {
                tracing::error!("{e}");
            }
            shared.notify_final(&record);
        });
        let _ = finished.await;
        Ok(TaskStatus::Cancelled)
    }

    /// Names of the agents this scheduler runs.
    pub fn agents(&self) -> impl Iterator<Item = &AgentEntry> {
        self.shared.agents.values()
    }

    /// Tasks queued now, over all priorities.
    pub fn queued(&self) -> usize {
        self.shared.state.lock().unwrap().queue.len()
    }

    /// Stops taking tasks from the queue and waits up to `grace` for running
    /// tasks to finish. Queued tasks stay in the journal for the next start;
    /// tasks still running after `grace` run again then.
    pub async fn shutdown(&self, grace: Duration) {
        let s = &self.shared;
        s.stop.cancel();
        s.wake.notify_waiters();
        let until = Instant::now() + grace;
        let busy = || !s.state.lock().unwrap().running.is_empty() || s.committing.load(Ordering::SeqCst) > 0;
        while Instant::now() < until && busy() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A task taken off the queue to run.
struct Job {
    id: u64,
    agent: Arc<Agent>,
    input: String,
    deadline_ms: Option<u64>,
    cancel: CancellationToken,
    waited: Duration,
    attempt: usize,
    /// The agent's running slot, freed when the run ends.
    slot: crate::concurrency::Slot,
}

impl Shared {
    /// Answers the callers waiting for this task's final state.
    fn notify_final(&self, record: &TaskRecord) {
        let waiters = self.state.lock().unwrap().waiters.remove(&record.id);
        for waiter in waiters.into_iter().flatten() {
            let _ = waiter.send(record.clone());
        }
    }

    /// Commits an accepted task whose id and queue room are reserved, then
    /// queues it; on failure gives the room and the idempotency key back.
    async fn admit(&self, record: TaskRecord) -> Result<u64, SubmitError> {
        let written = self.journal.commit(vec![record.clone()]).await;
        let mut st = self.state.lock().unwrap();
        st.retrying -= 1;
        if let Err(e) = written {
            if let Some(key) = &record.idempotency_key {
                st.idempotency.remove(key);
            }
            return Err(e.into());
        }
        let id = record.id;
        let agent: Arc<str> = record.agent.as_str().into();
        self.metrics.submitted(&record.agent);
        st.queue.push(record.priority, Queued { id, agent, since: Instant::now() });
        st.records.insert(id, record);
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
            let (job, expired) = {
                let mut guard = self.state.lock().unwrap();
                let st = &mut *guard;
                let caps = &self.agents;
                let runnable = |agent: &str| caps.get(agent).is_some_and(|e| e.agent.slots.available());
                let popped = st.queue.pop(Instant::now(), self.config.aging, runnable);
                self.metrics.set_queue_depth(&st.queue);
                match popped {
                    None => (None, None),
                    Some((priority, queued)) => self.start_job(st, priority, queued),
                }
            };
            if let Some(record) = expired {
                self.metrics.finished(&record.agent, record.status);
                if let Err(e) = self.journal.commit(vec![record.clone()]).await {
                    tracing::error!("{e}");
                }
                self.notify_final(&record);
                continue;
            }
            if let Some((job, record)) = job {
                // Durable before the agent runs: an attempt that had side effects
                // is on record, so one cut off by a crash is known as such.
                if let Err(e) = self.journal.commit(vec![record]).await {
                    tracing::error!("{e}");
                }
                return Some(job);
            }
            tokio::select! {
                _ = wake => {}
                _ = self.stop.cancelled() => return None,
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn start_job(
        &self,
        st: &mut State,
        priority: Priority,
        queued: Queued,
    ) -> (Option<(Job, TaskRecord)>, Option<TaskRecord>) {
        let Some(entry) = self.agents.get(&*queued.agent) else {
            // An agent removed from the configuration since the task was accepted.
            let record = st.records.get_mut(&queued.id).unwrap();
            record.status = TaskStatus::Failed;
            record.error = Some(TaskError::Instantiate {
                reason: format!("agent `{}` is not configured on this host", queued.agent),
            });
            return (None, Some(record.clone()));
        };
        let record = st.records.get_mut(&queued.id).unwrap();
        if record.deadline_ms.is_some_and(|d| d <= now_ms()) {
            record.status = TaskStatus::TimedOut;
            record.error = Some(TaskError::DeadlineExceeded);
            return (None, Some(record.clone()));
        }
        let Some(slot) = entry.agent.slots.try_take() else {
            // A calling agent took the last slot since the queue looked: wait
            // for one to be freed (that wakes the workers).
            st.queue.push(priority, queued);
            return (None, None);
        };
        record.status = TaskStatus::Running;
        record.attempts.push(Attempt {
            started_ms: now_ms(),
            finished_ms: None,
            error: None,
            usage: None,
            interrupted: false,
        });
        let job = Job {
            id: record.id,
            agent: entry.agent.clone(),
            input: record.input.clone(),
            deadline_ms: record.deadline_ms,
            cancel: CancellationToken::new(),
            waited: queued.since.elapsed(),
            attempt: record.attempts.len(),
            slot,
        };
        let record = record.clone();
        st.running.insert(job.id, job.cancel.clone());
        (Some((job, record)), None)
    }

    async fn execute(self: &Arc<Self>, job: Job) {
        self.metrics.queue_wait.observe(job.waited.as_secs_f64());
        let deadline = job.deadline_ms.map(|d| {
            let left = Duration::from_millis(d.saturating_sub(now_ms()));
            tokio::time::Instant::now() + left
        });
        let options = RunOptions { deadline, cancel: Some(job.cancel.clone()) };
        let span = tracing::info_span!("task", agent = job.agent.name(), task = job.id, attempt = job.attempt);
        let report = tracing::Instrument::instrument(self.host.run_with(&job.agent, &job.input, options), span).await;

        let mut retry_after = None;
        let record = {
            let mut st = self.state.lock().unwrap();
            st.running.remove(&job.id);
            let record = st.records.get_mut(&job.id).unwrap();
            let attempt = record.attempts.last_mut().expect("a running task has an attempt");
            attempt.finished_ms = Some(now_ms());
            attempt.usage = Some(report.usage.clone());
            attempt.error = report.outcome.as_ref().err().cloned();
            let attempts = record.attempts.len() as u32;
            match report.outcome {
                Ok(output) => {
                    record.status = TaskStatus::Completed;
                    record.output = Some(output);
                    record.error = None;
                }
                Err(e) => {
                    record.status = match &e {
                        TaskError::Cancelled => TaskStatus::Cancelled,
                        TaskError::DeadlineExceeded => TaskStatus::TimedOut,
                        // Limit hits, traps and denials are never retried.
                        e if !e.is_retryable() => TaskStatus::Failed,
                        _ if attempts >= record.max_attempts => TaskStatus::DeadLettered,
                        _ => {
                            retry_after = Some(self.backoff(attempts));
                            TaskStatus::Pending
                        }
                    };
                    record.error = Some(e);
                }
            }
            if retry_after.is_some() {
                st.retrying += 1;
            }
            st.records[&job.id].clone()
        };
        self.wake.notify_one();
        if record.status.is_final() {
            self.metrics.finished(&record.agent, record.status);
        }
        if retry_after.is_some() {
            self.metrics.retried(&record.agent);
        }
        // The worker goes on to the next task while this one's record is
        // committed (with others' in one group); its waiters are answered,
        // and a retry queued, only once the record is durable.
        let shared = self.clone();
        self.committing.fetch_add(1, Ordering::SeqCst);
        // Queued now, before the slot is freed: the start of a task this
        // slot lets run commits no earlier than this task's end, so a crash
        // never leaves more tasks "running" than there are slots.
        let written = self.journal.commit(vec![record.clone()]);
        drop(job.slot);
        tokio::spawn(async move {
            let written = written.await;
            shared.committing.fetch_sub(1, Ordering::SeqCst);
            if let Err(e) = written {
                tracing::error!("{e}");
            }
            if record.status.is_final() {
                shared.notify_final(&record);
            }
            let Some(delay) = retry_after else { return };
            tokio::time::sleep(delay).await;
            let mut st = shared.state.lock().unwrap();
            st.retrying -= 1;
            let Some(record) = st.records.get(&job.id) else { return };
            if record.status != TaskStatus::Pending {
                return; // cancelled while waiting
            }
            let (priority, agent) = (record.priority, record.agent.as_str().into());
            st.queue.push(priority, Queued { id: job.id, agent, since: Instant::now() });
            shared.metrics.set_queue_depth(&st.queue);
            drop(st);
            shared.wake.notify_one();
        });
    }

    /// Exponential backoff with ±50% jitter: base × 2^(attempt−1), capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.config.retry_base.saturating_mul(1u32 << (attempt - 1).min(20));
        let capped = exp.min(self.config.retry_max);
        capped.mul_f64(rand::rng().random_range(0.5..=1.5))
    }
}
