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

use crate::agent::Agent;
use crate::bindings;
use crate::capability::{CallChain, TaskHandle};
use crate::error::TaskError;
use crate::host::Host;
use crate::task_data::TaskData;

/// A live instance of one agent, called any number of times.
pub struct WarmInstance {
    host: Host,
    agent: Arc<Agent>,
    store: Store<TaskData>,
    instance: bindings::Agent,
    task: TaskHandle,
    /// Why the instance can no longer be called.
    broken: Option<String>,
}

impl Host {
    /// Instantiates `agent` once and keeps the instance for
    /// [`WarmInstance::call`]. It holds one of the host's instance slots
    /// until dropped.
    pub async fn warm(&self, agent: Arc<Agent>) -> Result<WarmInstance, TaskError> {
        let task = self.accounts(&agent, 0);
        let mut store = self.new_store(&agent, &task, CallChain::default());
        let instance = self.instantiate(&agent, &mut store).await?;
        Ok(WarmInstance { host: self.clone(), agent, store, instance, task, broken: None })
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
        let usage = self.task.usage.clone();
        usage.cpu_ns.store(0, std::sync::atomic::Ordering::Relaxed);
        self.store.data_mut().cpu_ticks = 0;
        self.store.set_epoch_deadline(1);
        let ends = tokio::time::Instant::now() + Duration::from_millis(limits.timeout_ms);
        let call = self.host.call(&self.agent, &mut self.store, &self.instance, input);
        // Biased, the call first: one that ends in its first poll (most do)
        // never registers the timer.
        let outcome = tokio::select! {
            biased;
            r = crate::cpu::Metered::new(call, usage) => r,
            _ = tokio::time::sleep_until(ends) => Err(TaskError::Timeout { limit_ms: limits.timeout_ms }),
        };
        if let Err(e) = &outcome {
            // A trap, or a call abandoned mid-flight: the instance is not re-entrant now.
            if !matches!(e, TaskError::Agent { .. } | TaskError::OutputTooLarge { .. }) {
                self.broken =
                    Some(if matches!(e, TaskError::Timeout { .. }) { "timed out".into() } else { e.to_string() });
            }
        }
        // Log lines went to tracing as they came; what was kept is
        // released, so a long-lived instance keeps nothing: a fresh log
        // budget for the next call.
        self.task.log.take();
        outcome
    }
}
