//! Warm instances: one instance of an agent kept alive and called again and
//! again, for an embedder that runs many small tasks of one agent back to
//! back and accepts that the agent's memory carries over between them.
//!
//! Isolation between *agents* is unchanged (an instance only ever serves the
//! agent it was made from); isolation between *tasks* of the same agent is
//! what a warm instance gives up, which is why [`Host::run`] — a fresh
//! instance per task — stays the default. Every call still runs under the
//! agent's CPU, wall-clock, input and output limits, and the instance's
//! memory limit holds over its whole life. After any failure the instance is
//! thrown away: a trap leaves it in no state to be entered again.

use std::sync::Arc;
use std::time::Duration;
use wasmtime::Store;

use crate::bindings;
use crate::capabilities::logging::TaskLog;
use crate::capabilities::tasks::CallChain;
use crate::capabilities::wasi::CapturedOutput;
use crate::error::TaskError;
use crate::host::{checked_output, stdio_into_log, Agent, Host, RunOptions};
use crate::state::TaskState;
use crate::usage::UsageCounters;

/// A live instance of one agent, called any number of times.
pub struct WarmInstance {
    host: Host,
    agent: Arc<Agent>,
    store: Store<TaskState>,
    instance: bindings::Agent,
    log: TaskLog,
    stdio: (CapturedOutput, CapturedOutput),
    /// Why the instance can no longer be called.
    broken: Option<String>,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Host {
    /// Instantiates `agent` once and keeps the instance for
    /// [`WarmInstance::call`]. It holds one of the host's instance slots
    /// until dropped.
    pub async fn warm(&self, agent: Arc<Agent>) -> Result<WarmInstance, TaskError> {
        let limits = &agent.policy.limits;
        let usage = Arc::new(UsageCounters::new(limits.memory_mib << 20));
        let logging = agent.policy.capabilities.logging.clone().unwrap_or_default();
        let log = TaskLog::new(agent.name.clone(), 0, logging, usage.clone());
        let stdio = (
            CapturedOutput::new(limits.stdio_bytes as usize, usage.clone()),
            CapturedOutput::new(limits.stdio_bytes as usize, usage.clone()),
        );
        let chain = CallChain { depth: 0, max_depth: None, options: RunOptions::default() };
        let mut store = self.new_store(&agent, log.clone(), usage, stdio.clone(), chain);
        let instance = match agent.pre.instantiate_async(&mut store).await {
            Ok(instance) => instance,
            Err(e) => return Err(self.classify(e, &store, &agent, true)),
        };
        let timer = Box::pin(tokio::time::sleep(Duration::ZERO));
        Ok(WarmInstance { host: self.clone(), agent, store, instance, log, stdio, broken: None, timer })
    }
}

impl WarmInstance {
    /// Runs one task in this instance. The agent's log lines, stdout and
    /// stderr go to the host's tracing output (they are not kept, so a
    /// long-lived instance does not pile them up).
    pub async fn call(&mut self, input: &str) -> Result<String, TaskError> {
        if let Some(reason) = &self.broken {
            return Err(TaskError::Instantiate {
                reason: format!(
                    "this warm instance of `{}` failed earlier ({reason}); warm a new one",
                    self.agent.name
                ),
            });
        }
        let limits = &self.agent.policy.limits;
        if input.len() as u64 > limits.max_input_bytes {
            return Err(TaskError::InputTooLarge { size: input.len() as u64, limit: limits.max_input_bytes });
        }
        // A fresh CPU budget for each call.
        let usage = self.store.data().usage.clone();
        usage.cpu_ns.store(0, std::sync::atomic::Ordering::Relaxed);
        self.store.data_mut().cpu_ticks = 0;
        self.store.set_epoch_deadline(1);
        let ends = tokio::time::Instant::now() + Duration::from_millis(limits.timeout_ms);
        // One timer for the instance's life, moved for each call.
        self.timer.as_mut().reset(ends);
        let call = tokio::select! {
            biased;
            r = crate::cpu::Metered::new(self.instance.call_run(&mut self.store, input), usage) => Ok(r),
            _ = self.timer.as_mut() => Err(()),
        };
        let outcome = match call {
            Ok(Ok(result)) => checked_output(&self.agent, result),
            Ok(Err(e)) => {
                let error = self.host.classify(e, &self.store, &self.agent, false);
                self.broken = Some(error.to_string());
                Err(error)
            }
            Err(_) => {
                // The call was abandoned mid-flight: the instance is not re-entrant now.
                self.broken = Some("timed out".into());
                Err(TaskError::Timeout { limit_ms: limits.timeout_ms })
            }
        };
        // Log lines went to tracing as they came; stdout and stderr go there
        // now. What was kept is released, so a long-lived instance keeps nothing.
        let dropped = stdio_into_log(&self.log, &self.stdio.0, &self.stdio.1);
        UsageCounters::add(&self.store.data().usage.stdio_dropped, dropped);
        // A fresh log budget for the next call.
        self.log.take();
        outcome
    }
}
