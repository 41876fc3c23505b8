//! Running tasks: a store per task holding each linked capability's task
//! state, the call under the task's limits (CPU metered per poll, wall
//! clock, deadline, cancellation), and the report. Fresh instances
//! ([`Host::run`](crate::Host::run)) and warm ones
//! ([`WarmInstance`](crate::WarmInstance)) share every piece of it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};

use crate::agent::Agent;
use crate::bindings::AgentError;
use crate::capability::{CallChain, Counters, TaskContext, TaskHandle};
use crate::classify::{classify, Bounds, CpuExhausted, Phase};
use crate::error::TaskError;
use crate::host::HostInner;
use crate::limits::InstanceLimiter;
use crate::log::{escape_capped, TaskLog};
use crate::report::TaskReport;
use crate::task_data::TaskData;
use crate::usage::UsageCounters;

impl HostInner {
    fn bounds(&self) -> Bounds {
        Bounds { stack_kib: self.config.stack_kib, pool_slots: self.config.max_instances }
    }

    /// The log and usage counters of a new task of `agent`: what outlives its store.
    pub(crate) fn accounts(&self, agent: &Agent, task_id: u64) -> TaskHandle {
        let limits = &agent.policy.limits;
        let usage = Arc::new(UsageCounters::with_counters(limits.memory_mib << 20, agent.counter_count()));
        let log = TaskLog::new(agent.name.clone(), task_id, agent.settings.log, usage.clone());
        TaskHandle { log, usage, metrics: self.metrics.clone() }
    }

    /// A store for one task: each linked capability's task state, the
    /// limiter, the hostcall budget and the epoch callback that checks the
    /// CPU budget.
    pub(crate) fn new_store(&self, agent: &Agent, task: &TaskHandle, chain: CallChain) -> Store<TaskData> {
        let limits = &agent.policy.limits;
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.resource_handles as usize);
        let states = agent
            .active
            .iter()
            .map(|a| {
                let counters =
                    Counters { usage: task.usage.clone(), offset: a.counter_offset, len: a.cap.counters().len() };
                a.cap.instantiate(&a.state, &TaskContext { task, counters, chain, limits })
            })
            .collect();
        let data = TaskData {
            table,
            limiter: InstanceLimiter::new(limits, task.usage.clone()),
            usage: task.usage.clone(),
            cpu_ticks: 0,
            cpu_budget_ns: limits.cpu_ms.saturating_mul(1_000_000),
            metrics: self.metrics.clone(),
            states,
        };
        self.metrics.instance_started();
        let mut store = Store::new(&self.engine, data);
        store.limiter(|s| &mut s.limiter);
        // What one host call may lift from the guest follows the instance's
        // memory limit (wasmtime's default is 128 MiB whatever the limit).
        store.set_hostcall_fuel(usize::try_from(limits.memory_mib << 20).unwrap_or(usize::MAX));
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut cx| {
            let s = cx.data_mut();
            s.cpu_ticks += 1;
            s.usage.cpu_ticks.store(s.cpu_ticks, Ordering::Relaxed);
            if crate::cpu::spent_ns(&s.usage) > s.cpu_budget_ns {
                return Err(wasmtime::Error::new(CpuExhausted));
            }
            // Yield so the wall-clock timeout and other tasks get to run.
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }

    /// Instantiates `agent` in `store`.
    pub(crate) async fn instantiate(
        &self,
        agent: &Agent,
        store: &mut Store<TaskData>,
    ) -> Result<crate::bindings::Agent, TaskError> {
        match agent.pre.instantiate_async(&mut *store).await {
            Ok(instance) => Ok(instance),
            Err(e) => Err(classify(e, store.data(), &agent.policy.limits, &self.bounds(), Phase::Instantiate)),
        }
    }

    /// Calls `run` once, then lets each capability finish the call.
    pub(crate) async fn call(
        &self,
        agent: &Agent,
        store: &mut Store<TaskData>,
        instance: &crate::bindings::Agent,
        input: &str,
    ) -> Result<String, TaskError> {
        let result = instance.call_run(&mut *store, input).await;
        end_call(agent, store);
        match result {
            Ok(result) => checked_output(agent, result),
            Err(e) => Err(classify(e, store.data(), &agent.policy.limits, &self.bounds(), Phase::Call)),
        }
    }

    /// Runs a task at a place in a chain of agent-to-agent calls;
    /// `chain.deadline` is the task's own deadline.
    pub(crate) async fn run_at(
        &self,
        agent: &Agent,
        input: &str,
        mut chain: CallChain,
        cancel: Option<&tokio_util::sync::CancellationToken>,
    ) -> TaskReport {
        let task_id = self.next_task.fetch_add(1, Ordering::Relaxed);
        let limits = &agent.policy.limits;
        let task = self.accounts(agent, task_id);
        let started = Instant::now();
        let outcome = if input.len() as u64 > limits.max_input_bytes {
            Err(TaskError::InputTooLarge { size: input.len() as u64, limit: limits.max_input_bytes })
        } else {
            // One timer for the earlier of the timeout and the deadline;
            // children inherit it as their deadline.
            let timeout_at = tokio::time::Instant::from_std(started) + Duration::from_millis(limits.timeout_ms);
            let ends = chain.deadline.map_or(timeout_at, |d| d.min(timeout_at));
            let ended = if ends < timeout_at {
                TaskError::DeadlineExceeded
            } else {
                TaskError::Timeout { limit_ms: limits.timeout_ms }
            };
            chain.deadline = Some(ends);
            let store = self.new_store(agent, &task, chain);
            let cancelled = async {
                match cancel {
                    Some(token) => token.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            let run = crate::cpu::Metered::new(self.instantiate_and_call(agent, store, input), task.usage.clone());
            // Biased, the task first: one that ends in its first poll (most
            // do) never registers the timer.
            tokio::select! {
                biased;
                outcome = Box::pin(run) => outcome,
                _ = tokio::time::sleep_until(ends) => Err(ended),
                _ = cancelled => Err(TaskError::Cancelled),
            }
        };
        // The store is gone by now: what its capabilities held for the log is in it.
        self.report(agent, task_id, &task, started, outcome)
    }

    async fn instantiate_and_call(
        &self,
        agent: &Agent,
        mut store: Store<TaskData>,
        input: &str,
    ) -> Result<String, TaskError> {
        let instance = self.instantiate(agent, &mut store).await?;
        self.call(agent, &mut store, &instance, input).await
    }

    fn report(
        &self,
        agent: &Agent,
        task_id: u64,
        task: &TaskHandle,
        started: Instant,
        outcome: Result<String, TaskError>,
    ) -> TaskReport {
        let (logs, log_bytes, log_lines_dropped) = task.log.take();
        let mut usage = task.usage.snapshot(started.elapsed(), &agent.counter_layout);
        usage.log_bytes = log_bytes;
        usage.log_lines_dropped = log_lines_dropped;
        if let Err(e) = &outcome {
            tracing::debug!(agent = %agent.name, task = task_id, kind = e.kind(), "task failed: {e}");
        }
        let sample = crate::metrics::TaskOutcomeSample {
            error: outcome.as_ref().err().map(|e| (e.kind(), e.limit())),
            seconds: usage.wall_time_us as f64 / 1e6,
            peak_memory: usage.peak_memory_bytes,
            cpu_ticks: usage.cpu_ticks,
        };
        self.metrics.task_finished(&agent.name, &agent.metrics, &sample);
        self.metrics.log_lines_dropped(&agent.name, log_lines_dropped);
        TaskReport { task_id, agent: agent.name.to_string(), outcome, usage, logs }
    }
}

/// Lets each linked capability finish a call (e.g. move captured stdout
/// into the log).
pub(crate) fn end_call(agent: &Agent, store: &mut Store<TaskData>) {
    for (active, (_, state)) in agent.active.iter().zip(store.data_mut().states.iter_mut()) {
        active.cap.end_call(&mut **state);
    }
}

/// What `run` returned, checked against the output limit and with the
/// agent's own error message escaped and capped.
pub(crate) fn checked_output(agent: &Agent, result: Result<String, AgentError>) -> Result<String, TaskError> {
    match result {
        Ok(output) => {
            let limit = agent.policy.limits.max_output_bytes;
            if output.len() as u64 > limit {
                return Err(TaskError::OutputTooLarge { size: output.len() as u64, limit });
            }
            Ok(output)
        }
        Err(AgentError { message, retryable }) => {
            let mut budget = 4096;
            Err(TaskError::Agent { message: escape_capped(&message, &mut budget), retryable })
        }
    }
}
