//! The scheduler on Redis: several nodes (`chimera serve` processes, or
//! hosts embedding the library) share one queue, one set of task records
//! and one global concurrency cap per agent.
//!
//! Delivery is at least once, with leases in a sorted set: a node that
//! takes a task holds a lease on it (id → expiry) and extends the leases
//! of its running tasks every third of the lease. A node that dies stops
//! extending them; once a lease runs out, whichever node does its
//! housekeeping first takes the task over, marks the cut-off attempt
//! interrupted and puts the task back in its ready list. Every write of a
//! task's state is fenced by the node holding it and the state's version,
//! so a node that was cut off (and whose task was handed on) cannot
//! overwrite what the next node wrote.
//!
//! Agents are the same everywhere: the first node to register an agent
//! name in Redis sets its component digest; a node whose component for
//! that name differs refuses its tasks (submissions are answered with an
//! error naming both digests) and never takes them from the queue.

mod scripts;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::Value;
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::metrics::{ClusterMetrics, SchedulerMetrics};
use super::{
    accept, backoff, enlist, now_ms, settle, AgentChanges, AgentEntry, Agents, Attempt, AttemptLogs, CancelError,
    JournalError, SchedulerConfig, Submission, SubmitError, TaskId, TaskPage, TaskQuery, TaskRecord, TaskState,
    TaskStatus,
};
use crate::error::TaskError;
use crate::storage::redis_pool::{dropped, Idempotent, RedisPool};
use crate::storage::RedisSettings;
use crate::{Agent, Host, RunOptions};
use scripts::SCRIPTS;

/// How the scheduler shares its queue over Redis.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The Redis server (the same settings as the KV store's).
    pub redis: RedisSettings,
    /// How long a task stays with a node that stopped renewing its lease
    /// before another node runs it again. Default 10 s.
    pub lease: Duration,
    /// This node's name in leases, attempts and logs; unique per process
    /// (the default is the host name, the process id and a random suffix).
    pub node: Option<String>,
}

impl ClusterConfig {
    /// Settings for the Redis server in `redis`, with a 10 s lease.
    pub fn new(redis: RedisSettings) -> ClusterConfig {
        ClusterConfig { redis, lease: Duration::from_secs(10), node: None }
    }
}

/// How long a node sleeps between looks at the queue when it found nothing
/// and cannot hear the queue's wake-ups (its subscription is down).
const POLL: Duration = Duration::from_millis(20);
/// The same while subscribed: a wake-up comes when an agent's ready list
/// stops being empty, and the housekeeping nudges the claimer whenever
/// tasks wait, so this only bounds what a lost message can delay.
const POLL_SUBSCRIBED: Duration = Duration::from_secs(1);
/// How often a node does the housekeeping (due retries, expired leases, gauges).
const MAINTAIN_EVERY: Duration = Duration::from_millis(200);
/// How often finished tasks past retention are deleted.
const TRIM_EVERY: Duration = Duration::from_secs(5);
/// Tasks handled per housekeeping script (each script holds Redis briefly).
const BATCH: usize = 200;

/// What one agent name is registered as in Redis, for this node's component.
#[derive(Clone)]
struct Registration {
    digest: String,
    /// Why this node refuses the agent's tasks, if it does.
    refused: Option<String>,
}

pub(super) struct Cluster {
    host: Arc<Host>,
    agents: RwLock<Agents>,
    config: SchedulerConfig,
    redis: RedisPool,
    prefix: String,
    node: String,
    lease: Duration,
    /// Tasks this node holds (claimed or running), with their cancellation.
    jobs: Mutex<HashMap<TaskId, CancellationToken>>,
    permits: Arc<Semaphore>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    metrics: SchedulerMetrics,
    gauges: ClusterMetrics,
    registry: Mutex<HashMap<String, Registration>>,
    /// The last Redis failure, until a call succeeds again.
    trouble: Mutex<Option<String>>,
    /// Tasks waiting over the whole queue, as the last housekeeping saw.
    waiting: AtomicUsize,
    /// Callers of `wait` on this node, by task: told when this node writes
    /// the task's final state (tasks finished elsewhere are polled for).
    waiters: Mutex<HashMap<TaskId, Vec<oneshot::Sender<()>>>>,
    /// Whether this node is subscribed to the queue's wake-ups.
    subscribed: AtomicBool,
}

/// A task this node took from the queue and marked running.
struct Job {
    id: TaskId,
    v: u64,
    state: TaskState,
    agent: Arc<Agent>,
    input: String,
    cancel: CancellationToken,
    waited: Duration,
    slot: crate::concurrency::Slot,
}

/// A task this node took from the queue, not yet marked running.
struct Claimed {
    id: TaskId,
    v: u64,
    state: TaskState,
    input: String,
    /// When it entered its ready list (ms).
    queued: u64,
    agents: Agents,
}

/// A task's new state, to write fenced by this node and the version `v`
/// (see the `PUT` script for the ops).
#[derive(Clone, Copy)]
struct Update<'a> {
    id: TaskId,
    v: u64,
    op: &'static str,
    state: &'a TaskState,
    output: Option<&'a str>,
    logs: Option<&'a AttemptLogs>,
    /// When it finished (`final`, `cancel`) or its retry is due (`retry`).
    when: u64,
}

impl<'a> Update<'a> {
    /// A state with no output and no logs.
    fn bare(id: TaskId, v: u64, op: &'static str, state: &'a TaskState, when: u64) -> Update<'a> {
        Update { id, v, op, state, output: None, logs: None, when }
    }
}

/// A fenced write's outcome.
enum Put {
    Done {
        v: u64,
        cancel: bool,
    },
    /// Another node holds the task now, or its state moved on.
    Refused(String),
}

impl Cluster {
    pub(super) fn open(
        host: Arc<Host>,
        agents: Vec<AgentEntry>,
        config: SchedulerConfig,
        cluster: &ClusterConfig,
    ) -> Result<Arc<Cluster>, JournalError> {
        let redis = RedisPool::open(&cluster.redis).map_err(JournalError::new)?;
        if cluster.lease < Duration::from_millis(300) {
            return Err(JournalError::new("[scheduler] lease_ms must be at least 300".into()));
        }
        let node = cluster.node.clone().unwrap_or_else(default_node);
        let wake = Arc::new(Notify::new());
        let agents = enlist(&host, &wake, agents);
        let metrics = SchedulerMetrics::register(host.metrics());
        let gauges = ClusterMetrics::register(host.metrics());
        let me = Arc::new(Cluster {
            permits: Arc::new(Semaphore::new(config.workers)),
            host,
            agents: RwLock::new(Arc::new(agents)),
            config,
            redis,
            prefix: format!("{}sched:", cluster.redis.key_prefix),
            node,
            lease: cluster.lease,
            jobs: Mutex::new(HashMap::new()),
            wake,
            stop: CancellationToken::new(),
            metrics,
            gauges,
            registry: Mutex::new(HashMap::new()),
            trouble: Mutex::new(None),
            waiting: AtomicUsize::new(0),
            waiters: Mutex::new(HashMap::new()),
            subscribed: AtomicBool::new(false),
        });
        let runtime = me.config.runtime.clone().unwrap_or_else(tokio::runtime::Handle::current);
        runtime.spawn(me.clone().claimer(runtime.clone()));
        runtime.spawn(me.clone().heartbeat());
        runtime.spawn(me.clone().housekeeping());
        runtime.spawn(me.clone().listen());
        tracing::info!(node = %me.node, redis = me.redis.server(), "the task queue is shared on Redis");
        Ok(me)
    }

    fn agents_now(&self) -> Agents {
        self.agents.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn unavailable(&self, e: redis::RedisError) -> JournalError {
        let message = format!("the task queue (Redis at {}) did not answer: {e}", self.redis.server());
        *self.trouble.lock().unwrap() = Some(message.clone());
        JournalError::new(message)
    }

    fn malformed(&self, what: &str) -> JournalError {
        JournalError::new(format!("the task queue (Redis at {}) sent a malformed {what} reply", self.redis.server()))
    }

    fn healthy(&self) {
        *self.trouble.lock().unwrap() = None;
    }

    fn key(&self, kind: &str, id: TaskId) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    // ---- the API ---------------------------------------------------------

    pub(super) async fn submit(&self, submission: Submission) -> Result<TaskId, SubmitError> {
        if self.stop.is_cancelled() {
            return Err(SubmitError::ShuttingDown);
        }
        let agents = self.agents_now();
        let accepted = accept(&agents, &self.config, submission)?;
        let entry = &agents[&accepted.state.agent];
        if let Some(why) = self.verify(entry).await?.refused {
            return Err(SubmitError::AgentMismatch(why));
        }
        let state = &accepted.state;
        let id = state.id;
        let (key, seen) = match &accepted.idempotency {
            Some(entry) => (entry.key.as_str(), format!("{id}|{}", entry.digest)),
            None => ("", String::new()),
        };
        let mut call = SCRIPTS.submit.prepare_invoke();
        call.arg(&self.prefix)
            .arg(id.to_string())
            .arg(state.submitted_ms)
            .arg(self.config.max_queued)
            .arg(serde_json::to_string(state).map_err(|e| JournalError::new(e.to_string()))?)
            .arg(accepted.input.as_bytes())
            .arg(&state.agent)
            .arg(state.priority as u8)
            .arg(key)
            .arg(seen)
            .arg(self.config.idempotency_ttl.as_millis().max(1) as u64);
        let reply: Vec<String> = self.redis.invoke(&call, Idempotent::No).await.map_err(|e| self.unavailable(e))?;
        self.healthy();
        match reply.as_slice() {
            [ok] if ok == "ok" => {
                self.metrics.submitted(&state.agent);
                self.wake.notify_one();
                Ok(id)
            }
            [full] if full == "full" => {
                self.metrics.rejected.inc();
                Err(SubmitError::QueueFull { capacity: self.config.max_queued })
            }
            [seen, named] if seen == "seen" => {
                let (first, digest) = named.split_once('|').ok_or_else(|| self.malformed("idempotency"))?;
                let first: TaskId = first.parse().map_err(|_| self.malformed("idempotency"))?;
                let key = state.idempotency_key.clone().unwrap_or_default();
                match &accepted.idempotency {
                    Some(entry) if entry.digest == digest => Ok(first),
                    _ => Err(SubmitError::IdempotencyConflict { key, id: first }),
                }
            }
            _ => Err(self.malformed("submit").into()),
        }
    }

    pub(super) async fn status(&self, id: TaskId) -> Result<Option<TaskRecord>, JournalError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.key("t", id)).arg("state").arg("input").arg("output");
        let (state, input, output): (Option<String>, Option<String>, Option<String>) =
            self.redis.query(&cmd, Idempotent::Yes).await.map_err(|e| self.unavailable(e))?;
        let Some(state) = state else { return Ok(None) };
        let state: TaskState = serde_json::from_str(&state).map_err(|_| self.malformed("task"))?;
        Ok(Some(TaskRecord { state, input: input.unwrap_or_default(), output }))
    }

    pub(super) async fn logs(&self, id: TaskId) -> Result<Vec<serde_json::Value>, JournalError> {
        let mut cmd = redis::cmd("LRANGE");
        cmd.arg(self.key("l", id)).arg(0).arg(-1);
        let lines: Vec<String> = self.redis.query(&cmd, Idempotent::Yes).await.map_err(|e| self.unavailable(e))?;
        lines.iter().map(|l| serde_json::from_str(l).map_err(|_| self.malformed("log"))).collect()
    }

    pub(super) async fn list(&self, query: TaskQuery) -> Result<TaskPage, JournalError> {
        const PAGE: usize = 256;
        let limit = query.limit.clamp(1, TaskQuery::MAX_LIMIT);
        let mut start = query.cursor.map_or("+".to_string(), |c| format!("({c}"));
        let mut page = TaskPage { tasks: Vec::new(), next_cursor: None };
        let (mut scanned, mut last) = (0, None);
        loop {
            let mut cmd = redis::cmd("ZREVRANGEBYLEX");
            cmd.arg(format!("{}all", self.prefix)).arg(&start).arg("-").arg("LIMIT").arg(0).arg(PAGE);
            let ids: Vec<String> = self.redis.query(&cmd, Idempotent::Yes).await.map_err(|e| self.unavailable(e))?;
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HGET").arg(format!("{}t:{id}", self.prefix)).arg("state");
            }
            let states: Vec<Option<String>> =
                self.redis.pipeline(&pipe, Idempotent::Yes).await.map_err(|e| self.unavailable(e))?;
            for (id, state) in ids.iter().zip(states) {
                if scanned == TaskQuery::MAX_SCAN || page.tasks.len() == limit {
                    page.next_cursor = last;
                    return Ok(page);
                }
                scanned += 1;
                last = Some(id.parse().map_err(|_| self.malformed("task list"))?);
                // A task deleted by retention between the two reads is skipped.
                let Some(state) = state else { continue };
                let state: TaskState = serde_json::from_str(&state).map_err(|_| self.malformed("task"))?;
                if query.matches(&state) {
                    page.tasks.push(state);
                }
            }
            match ids.last() {
                Some(id) if ids.len() == PAGE => start = format!("({id}"),
                _ => return Ok(page),
            }
        }
    }

    pub(super) async fn wait(&self, id: TaskId) -> Option<TaskRecord> {
        // Declared first so it runs last, after the receiver is dropped.
        let _unwatch = Unwatch { waiters: &self.waiters, id };
        let (tx, told) = oneshot::channel();
        self.waiters.lock().unwrap().entry(id).or_default().push(tx);
        // Fused: once told, it stays pending in later looks.
        let mut told = futures::FutureExt::fuse(told);
        let mut pause = Duration::from_millis(5);
        loop {
            match self.status(id).await {
                Ok(None) => return None,
                Ok(Some(record)) if record.state.status.is_final() => return Some(record),
                _ => {}
            }
            tokio::select! {
                // Finished here: read at once. Elsewhere: seen at the next look.
                Ok(()) = &mut told => {}
                _ = tokio::time::sleep(pause) => {}
                _ = self.stop.cancelled() => return None,
            }
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    pub(super) async fn cancel(&self, id: TaskId) -> Result<TaskStatus, CancelError> {
        for _ in 0..16 {
            let mut call = SCRIPTS.cancel.prepare_invoke();
            call.arg(&self.prefix).arg(id.to_string());
            let answer: String = self.redis.invoke(&call, Idempotent::Yes).await.map_err(|e| self.unavailable(e))?;
            match answer.as_str() {
                "gone" => return Err(CancelError::NotFound(id)),
                // The node holding it sees the flag at its next heartbeat.
                "flagged" => {
                    if let Some(token) = self.jobs.lock().unwrap().get(&id) {
                        token.cancel();
                    }
                    return Ok(TaskStatus::Running);
                }
                "pending" => {}
                _ => {
                    let status = self.status(id).await?.map(|r| r.state.status.name()).unwrap_or("deleted");
                    return Err(CancelError::AlreadyFinished { id, status });
                }
            }
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(self.key("t", id)).arg("state").arg("v");
            let (state, v): (Option<String>, Option<u64>) =
                self.redis.query(&cmd, Idempotent::Yes).await.map_err(|e| self.unavailable(e))?;
            let (Some(state), Some(v)) = (state, v) else { return Err(CancelError::NotFound(id)) };
            let mut state: TaskState = serde_json::from_str(&state).map_err(|_| self.malformed("task"))?;
            let now = now_ms();
            state.status = TaskStatus::Cancelled;
            state.error = Some(TaskError::Cancelled);
            state.finished_ms = Some(now);
            if let Put::Done { .. } = self.put(&Update::bare(id, v, "cancel", &state, now)).await? {
                self.metrics.finished(&state.agent, TaskStatus::Cancelled);
                return Ok(TaskStatus::Cancelled);
            }
            // Taken or changed meanwhile: look again.
        }
        Err(CancelError::Journal(JournalError::new(format!("task {id} kept changing; try the cancellation again"))))
    }

    pub(super) fn agents(&self) -> Vec<AgentEntry> {
        self.agents_now().values().cloned().collect()
    }

    pub(super) fn replace_agents(&self, agents: Vec<AgentEntry>) -> AgentChanges {
        let old = self.agents_now();
        let (changes, next) = super::diff_agents(&old, agents);
        let new = Arc::new(enlist(&self.host, &self.wake, next));
        *self.agents.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        for name in old.keys().filter(|n| !new.contains_key(*n)) {
            self.host.unregister(name);
        }
        // A changed component is checked against the registry again.
        self.registry.lock().unwrap().retain(|name, r| new.get(name).is_some_and(|e| e.agent.digest() == r.digest));
        self.wake.notify_waiters();
        changes
    }

    pub(super) fn queued(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub(super) fn live(&self) -> usize {
        self.jobs.lock().unwrap().len()
    }

    pub(super) fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    pub(super) fn storage_health(&self) -> Result<(), JournalError> {
        match &*self.trouble.lock().unwrap() {
            Some(message) => Err(JournalError::new(message.clone())),
            None => Ok(()),
        }
    }

    /// Stops taking tasks and waits up to `grace` for this node's running
    /// tasks to finish; those still running then are run again by another
    /// node once their leases run out.
    pub(super) async fn shutdown(&self, grace: Duration) {
        self.stop.cancel();
        let until = Instant::now() + grace;
        while Instant::now() < until && !self.jobs.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // ---- agents ----------------------------------------------------------

    /// The agent's registration in Redis for this node's component (made
    /// if the name is new to the cluster).
    async fn verify(&self, entry: &AgentEntry) -> Result<Registration, JournalError> {
        let name = entry.agent.name();
        let digest = entry.agent.digest();
        if let Some(known) = self.registry.lock().unwrap().get(name).filter(|r| r.digest == digest) {
            return Ok(known.clone());
        }
        let mut call = SCRIPTS.register.prepare_invoke();
        call.arg(&self.prefix).arg(name).arg(format!("{digest}|{}", self.node));
        let registered: String = self.redis.invoke(&call, Idempotent::Yes).await.map_err(|e| self.unavailable(e))?;
        let (theirs, by) = registered.split_once('|').unwrap_or((registered.as_str(), "?"));
        let refused = (theirs != digest).then(|| {
            let why = format!(
                "agent `{name}` on this node is component sha256:{digest}, but the cluster on Redis runs sha256:{theirs} \
                 (registered by node {by}); run the same component on every node, or give this one another name"
            );
            tracing::error!("{why}; this node runs none of its tasks");
            why
        });
        let registration = Registration { digest: digest.to_string(), refused };
        self.registry.lock().unwrap().insert(name.to_string(), registration.clone());
        Ok(registration)
    }

    // ---- taking and running tasks ---------------------------------------

    async fn claimer(self: Arc<Self>, runtime: tokio::runtime::Handle) {
        let mut pause = Duration::from_millis(50);
        loop {
            let permit = tokio::select! {
                permit = self.permits.clone().acquire_owned() => permit.expect("the permits are never closed"),
                _ = self.stop.cancelled() => return,
            };
            let wake = self.wake.notified();
            match self.next().await {
                Ok(Some(claimed)) => {
                    pause = Duration::from_millis(50);
                    // Marked running off this loop, so the next claim need
                    // not wait for this one's start to be written.
                    let me = self.clone();
                    runtime.spawn(async move {
                        if let Some(job) = me.begin(claimed).await {
                            me.execute(job).await;
                        }
                        drop(permit);
                    });
                }
                Ok(None) => {
                    drop(permit);
                    let poll = if self.subscribed.load(Ordering::Relaxed) { POLL_SUBSCRIBED } else { POLL };
                    tokio::select! {
                        _ = wake => {}
                        _ = tokio::time::sleep(poll) => {}
                        _ = self.stop.cancelled() => return,
                    }
                }
                Err(e) => {
                    drop(permit);
                    tracing::warn!("cannot take tasks from the queue: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = self.stop.cancelled() => return,
                    }
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Takes the next task this node may run from the queue (this node now
    /// holds its lease).
    async fn next(&self) -> Result<Option<Claimed>, JournalError> {
        let agents = self.agents_now();
        let mut caps = Vec::new();
        for (name, entry) in agents.iter() {
            if entry.agent.slots.available() && self.verify(entry).await?.refused.is_none() {
                caps.push((name.as_str(), entry.max_concurrency));
            }
        }
        if caps.is_empty() {
            return Ok(None);
        }
        let now = now_ms();
        let mut call = SCRIPTS.claim.prepare_invoke();
        call.arg(&self.prefix)
            .arg(&self.node)
            .arg(now)
            .arg(self.config.aging.as_millis().max(1) as u64)
            .arg(self.lease.as_millis() as u64);
        for (name, cap) in caps {
            call.arg(name).arg(cap);
        }
        let claimed: Option<(String, u64, String, String, u64)> =
            self.redis.invoke(&call, Idempotent::No).await.map_err(|e| self.unavailable(e))?;
        self.healthy();
        let Some((id, v, state, input, queued)) = claimed else { return Ok(None) };
        let id: TaskId = id.parse().map_err(|_| self.malformed("claim"))?;
        let state: TaskState = serde_json::from_str(&state).map_err(|_| self.malformed("task"))?;
        self.jobs.lock().unwrap().insert(id, CancellationToken::new());
        Ok(Some(Claimed { id, v, state, input, queued, agents }))
    }

    /// Marks a claimed task running and returns it to run; `None` if it
    /// was settled without running or could not be started (the lease
    /// then settles it).
    async fn begin(&self, claimed: Claimed) -> Option<Job> {
        let Claimed { id, v, mut state, input, queued, agents } = claimed;
        let cancel = self.jobs.lock().unwrap().get(&id).cloned().unwrap_or_default();
        let started = self.start(id, v, &mut state, &agents).await;
        let (v, agent, slot) = match started {
            Ok(Some(ready)) => ready,
            Ok(None) => {
                self.jobs.lock().unwrap().remove(&id);
                self.wake.notify_one();
                return None;
            }
            Err(e) => {
                // Unknown whether the start was written: the lease settles it.
                tracing::warn!(task = %id, "cannot mark a task taken from the queue running: {e}");
                self.jobs.lock().unwrap().remove(&id);
                return None;
            }
        };
        let waited = Duration::from_millis(now_ms().saturating_sub(queued));
        Some(Job { id, v, state, agent, input, cancel, waited, slot })
    }

    /// Marks a claimed task running; or settles it without running (its
    /// deadline passed, it was cancelled) or hands it back (no local slot)
    /// and returns `None`.
    async fn start(
        &self,
        id: TaskId,
        v: u64,
        state: &mut TaskState,
        agents: &Agents,
    ) -> Result<Option<(u64, Arc<Agent>, crate::concurrency::Slot)>, JournalError> {
        let now = now_ms();
        let entry = agents.get(&state.agent).expect("a claimed task's agent is one this node offered");
        if state.deadline_ms.is_some_and(|d| d <= now) {
            state.status = TaskStatus::TimedOut;
            state.error = Some(TaskError::DeadlineExceeded);
            state.finished_ms = Some(now);
            self.finish(id, v, state, None, None).await;
            return Ok(None);
        }
        let Some(slot) = entry.agent.slots.try_take() else {
            // A calling agent took the last slot since this node looked.
            self.write(&Update::bare(id, v, "requeue", state, now)).await;
            return Ok(None);
        };
        state.status = TaskStatus::Running;
        state.attempts.push(Attempt {
            started_ms: now,
            finished_ms: None,
            error: None,
            usage: None,
            interrupted: false,
            node: Some(self.node.clone()),
        });
        match self.put(&Update::bare(id, v, "start", state, now)).await? {
            Put::Done { v, cancel: false } => Ok(Some((v, entry.agent.clone(), slot))),
            Put::Done { v, cancel: true } => {
                let attempt = state.attempts.last_mut().expect("just pushed");
                attempt.finished_ms = Some(now);
                attempt.error = Some(TaskError::Cancelled);
                state.status = TaskStatus::Cancelled;
                state.error = Some(TaskError::Cancelled);
                state.finished_ms = Some(now);
                self.finish(id, v, state, None, None).await;
                Ok(None)
            }
            Put::Refused(why) => {
                tracing::warn!(task = %id, "a task taken from the queue moved on before it started: {why}");
                Ok(None)
            }
        }
    }

    async fn execute(self: &Arc<Self>, job: Job) {
        let Job { id, v, mut state, agent, input, cancel, waited, slot } = job;
        self.metrics.queue_wait.observe(waited.as_secs_f64());
        let deadline = state.deadline_ms.map(|d| {
            let left = Duration::from_millis(d.saturating_sub(now_ms()));
            tokio::time::Instant::now() + left
        });
        let options = RunOptions { deadline, cancel: Some(cancel) };
        let attempt = state.attempts.len();
        let span = tracing::info_span!("task", agent = agent.name(), task = %id, attempt, node = %self.node);
        let report = tracing::Instrument::instrument(self.host.run_with(&agent, &input, options), span).await;
        drop(slot);
        let (output, retry_after) = settle(&mut state, report.outcome, report.usage, |n| backoff(&self.config, n));
        let logs = AttemptLogs { attempt: attempt as u32, lines: report.logs };
        match retry_after {
            Some(delay) => {
                let due = now_ms().saturating_add(delay.as_millis() as u64);
                let update = Update { logs: Some(&logs), ..Update::bare(id, v, "retry", &state, due) };
                if self.write(&update).await {
                    self.metrics.retried(&state.agent);
                }
            }
            None => self.finish(id, v, &state, output.as_deref(), Some(&logs)).await,
        }
        self.jobs.lock().unwrap().remove(&id);
        self.wake.notify_one();
    }

    /// Writes a final state (fenced; retried until Redis takes it).
    async fn finish(&self, id: TaskId, v: u64, state: &TaskState, output: Option<&str>, logs: Option<&AttemptLogs>) {
        let when = state.finished_ms.unwrap_or_else(now_ms);
        if self.write(&Update { id, v, op: "final", state, output, logs, when }).await {
            self.metrics.finished(&state.agent, state.status);
        }
    }

    /// Writes a state that lets the task go (`final`, `retry`, `requeue`),
    /// trying again while Redis does not answer: a finished attempt is not
    /// lost to an outage. Whether it was written (not refused as stale).
    async fn write(&self, update: &Update<'_>) -> bool {
        let mut pause = Duration::from_millis(50);
        loop {
            match self.put(update).await {
                Ok(Put::Done { .. }) => return true,
                Ok(Put::Refused(why)) => {
                    tracing::warn!(task = %update.id, "this node's result for the task is dropped: {why}");
                    return false;
                }
                Err(e) => tracing::warn!(task = %update.id, "cannot record the task's state yet: {e}"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// One fenced write of a task's state. After a dropped connection the
    /// write may or may not have reached Redis: the task's record tells
    /// (its state is byte for byte the one sent), and it is never sent twice.
    async fn put(&self, update: &Update<'_>) -> Result<Put, JournalError> {
        let Update { id, v, op, state, output, logs, when } = *update;
        let json = serde_json::to_string(state).map_err(|e| JournalError::new(e.to_string()))?;
        let logs = match logs {
            Some(logs) => serde_json::to_string(logs).map_err(|e| JournalError::new(e.to_string()))?,
            None => String::new(),
        };
        let mut call = SCRIPTS.put.prepare_invoke();
        call.arg(&self.prefix)
            .arg(id.to_string())
            .arg(&self.node)
            .arg(v)
            .arg(op)
            .arg(now_ms())
            .arg(&json)
            .arg(state.status.name())
            .arg(output.unwrap_or(""))
            .arg(if output.is_some() { "1" } else { "0" })
            .arg(&logs)
            .arg(when);
        let reply: Value = match self.redis.invoke(&call, Idempotent::No).await {
            Ok(reply) => reply,
            Err(e) if dropped(&e) => {
                let failed = self.unavailable(e);
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(self.key("t", id)).arg("state").arg("v");
                return match self.redis.query::<(Option<String>, Option<u64>)>(&cmd, Idempotent::Yes).await {
                    Ok((Some(now), Some(v))) if now == json => {
                        if matches!(op, "final" | "cancel") {
                            self.tell_waiters(id);
                        }
                        Ok(Put::Done { v, cancel: false })
                    }
                    _ => Err(failed),
                };
            }
            Err(e) => return Err(self.unavailable(e)),
        };
        self.healthy();
        let parts: Vec<Value> = redis::from_redis_value(reply).map_err(|_| self.malformed("write"))?;
        let int = |i: usize| parts.get(i).and_then(|p| redis::from_redis_value_ref::<i64>(p).ok());
        let text = |i: usize| parts.get(i).and_then(|p| redis::from_redis_value_ref::<String>(p).ok());
        match (int(0), parts.len()) {
            (Some(1), 3) => {
                let v = int(1).ok_or_else(|| self.malformed("write"))? as u64;
                if matches!(op, "final" | "cancel") {
                    self.tell_waiters(id);
                }
                Ok(Put::Done { v, cancel: text(2).is_some_and(|c| c == "1") })
            }
            (Some(0), 2) => Ok(Put::Refused(match text(1).as_deref() {
                Some("lost") => "another node took it over (this node's lease ran out)".into(),
                Some("gone") => "it was deleted".into(),
                _ => "its state changed meanwhile".into(),
            })),
            _ => Err(self.malformed("write")),
        }
    }

    fn tell_waiters(&self, id: TaskId) {
        for tx in self.waiters.lock().unwrap().remove(&id).unwrap_or_default() {
            let _ = tx.send(());
        }
    }

    /// Listens for the queue's wake-ups (see `POLL_SUBSCRIBED`), and
    /// subscribes again with backoff after the connection is lost; the
    /// claimer looks at the queue often while this node is not subscribed.
    async fn listen(self: Arc<Self>) {
        let channel = format!("{}wake", self.prefix);
        let mut pause = Duration::from_millis(50);
        loop {
            let subscribe = tokio::time::timeout(self.redis.timeout(), async {
                let mut subscription = self.redis.client().get_async_pubsub().await?;
                subscription.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(subscription)
            });
            let subscribed = tokio::select! {
                subscribed = subscribe => subscribed,
                _ = self.stop.cancelled() => return,
            };
            if let Ok(Ok(subscription)) = subscribed {
                pause = Duration::from_millis(50);
                self.subscribed.store(true, Ordering::Relaxed);
                // A wake-up may have been missed while not subscribed.
                self.wake.notify_one();
                let mut messages = subscription.into_on_message();
                loop {
                    tokio::select! {
                        message = futures::StreamExt::next(&mut messages) => match message {
                            Some(_) => self.wake.notify_one(),
                            None => break,
                        },
                        _ = self.stop.cancelled() => return,
                    }
                }
                self.subscribed.store(false, Ordering::Relaxed);
                tracing::warn!(
                    "lost the subscription to the queue's wake-ups; looking at the queue every {POLL:?} meanwhile"
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.stop.cancelled() => return,
            }
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    // ---- leases and housekeeping ----------------------------------------

    async fn heartbeat(self: Arc<Self>) {
        let every = (self.lease / 3).min(Duration::from_secs(1));
        loop {
            tokio::time::sleep(every).await;
            // Once stopping, the leases of tasks still running are renewed until they end.
            if self.stop.is_cancelled() && self.jobs.lock().unwrap().is_empty() {
                return;
            }
            let ids: Vec<String> = self.jobs.lock().unwrap().keys().map(|id| id.to_string()).collect();
            let mut call = SCRIPTS.heartbeat.prepare_invoke();
            call.arg(&self.prefix).arg(&self.node).arg(now_ms()).arg(self.lease.as_millis() as u64);
            for id in &ids {
                call.arg(id);
            }
            let stops: Vec<String> = match self.redis.invoke(&call, Idempotent::Yes).await {
                Ok(stops) => stops,
                Err(e) => {
                    tracing::warn!("cannot renew this node's leases: {}", self.unavailable(e));
                    continue;
                }
            };
            self.healthy();
            let jobs = self.jobs.lock().unwrap();
            for stop in stops {
                let (kind, id) = stop.split_at(1);
                let Some(token) = id.parse().ok().and_then(|id: TaskId| jobs.get(&id)) else { continue };
                if kind == "l" {
                    tracing::warn!(task = id, "another node took this task over; stopping it here");
                }
                token.cancel();
            }
        }
    }

    async fn housekeeping(self: Arc<Self>) {
        let mut trimmed = Instant::now();
        loop {
            // Jitter, so the nodes' housekeeping spreads out.
            let jitter = rand::Rng::random_range(&mut rand::rng(), 0..=MAINTAIN_EVERY.as_millis() as u64 / 2);
            tokio::select! {
                _ = tokio::time::sleep(MAINTAIN_EVERY + Duration::from_millis(jitter)) => {}
                _ = self.stop.cancelled() => return,
            }
            if let Err(e) = self.maintain().await {
                tracing::warn!("queue housekeeping failed: {e}");
                continue;
            }
            if trimmed.elapsed() >= TRIM_EVERY {
                trimmed = Instant::now();
                if let Err(e) = self.trim().await {
                    tracing::warn!("cannot delete finished tasks past retention: {e}");
                }
            }
        }
    }

    async fn maintain(&self) -> Result<(), JournalError> {
        let now = now_ms();
        let mut call = SCRIPTS.maintain.prepare_invoke();
        call.arg(&self.prefix)
            .arg(&self.node)
            .arg(now)
            .arg(self.lease.as_millis() as u64)
            .arg(BATCH)
            .arg(3 * self.lease.as_millis() as u64);
        type Reply = (Vec<u64>, u64, u64, u64, Vec<String>);
        let (depths, delayed, running, nodes, reaped): Reply =
            self.redis.invoke(&call, Idempotent::No).await.map_err(|e| self.unavailable(e))?;
        self.healthy();
        self.metrics.set_depths(&depths);
        self.gauges.set(delayed, running, nodes, self.jobs.lock().unwrap().len());
        self.waiting.store((depths.iter().sum::<u64>() + delayed) as usize, Ordering::Relaxed);
        if reaped.len() % 4 != 0 {
            return Err(self.malformed("housekeeping"));
        }
        for taken in reaped.chunks(4) {
            let (Ok(id), Ok(v)) = (taken[0].parse::<TaskId>(), taken[1].parse::<u64>()) else {
                return Err(self.malformed("housekeeping"));
            };
            let mut state: TaskState = serde_json::from_str(&taken[2]).map_err(|_| self.malformed("task"))?;
            self.take_over(id, v, &mut state, taken[3] == "1").await;
        }
        if depths.iter().any(|d| *d > 0) {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// A task whose node stopped renewing its lease: its cut-off attempt is
    /// marked interrupted and it waits for its turn again (or ends, if it
    /// was cancelled or its deadline passed).
    async fn take_over(&self, id: TaskId, v: u64, state: &mut TaskState, cancelled: bool) {
        let now = now_ms();
        if state.status == TaskStatus::Running {
            if let Some(last) = state.attempts.last_mut() {
                last.interrupted = true;
            }
        }
        tracing::warn!(task = %id, "the task's node stopped renewing its lease; it runs again");
        if cancelled || state.deadline_ms.is_some_and(|d| d <= now) {
            let (status, error) = if cancelled {
                (TaskStatus::Cancelled, TaskError::Cancelled)
            } else {
                (TaskStatus::TimedOut, TaskError::DeadlineExceeded)
            };
            state.status = status;
            state.error = Some(error);
            state.finished_ms = Some(now);
            self.finish(id, v, state, None, None).await;
            return;
        }
        state.status = TaskStatus::Pending;
        self.write(&Update::bare(id, v, "requeue", state, now)).await;
    }

    async fn trim(&self) -> Result<(), JournalError> {
        let retention = self.config.retention;
        let cutoff = now_ms().saturating_sub(retention.max_age.as_millis() as u64);
        loop {
            let mut call = SCRIPTS.trim.prepare_invoke();
            call.arg(&self.prefix).arg(cutoff).arg(retention.max_count).arg(BATCH);
            let deleted: u64 = self.redis.invoke(&call, Idempotent::Yes).await.map_err(|e| self.unavailable(e))?;
            if deleted < BATCH as u64 {
                return Ok(());
            }
        }
    }
}

/// Drops a waiter that stopped waiting (returned, or its caller went away)
/// from the map, so tasks finished on other nodes leave nothing behind.
struct Unwatch<'a> {
    waiters: &'a Mutex<HashMap<TaskId, Vec<oneshot::Sender<()>>>>,
    id: TaskId,
}

impl Drop for Unwatch<'_> {
    fn drop(&mut self) {
        let mut waiters = self.waiters.lock().unwrap();
        if let Some(list) = waiters.get_mut(&self.id) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                waiters.remove(&self.id);
            }
        }
    }
}

/// `{host name}-{pid}-{random}`: unique per process, readable in logs.
fn default_node() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let host = if host.is_empty() { "node".to_string() } else { host };
    let suffix: u32 = rand::Rng::random(&mut rand::rng());
    format!("{host}-{}-{:06x}", std::process::id(), suffix & 0xff_ffff)
}
