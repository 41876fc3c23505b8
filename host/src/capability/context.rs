//! What the host hands a capability: at load (the agent's name and the
//! host's services), and for each task (the task's log, its memory and CPU
//! accounts, its usage counters and where it sits in a chain of calls).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::cpu::CpuMeter;
use crate::limits::Limits;
use crate::log::{LogLevel, LogSource, TaskLog};
use crate::metrics::Metrics;
use crate::storage::KvBackend;
use crate::usage::UsageCounters;

/// What a capability sees when an agent that imports it is loaded.
pub struct LoadContext<'a> {
    pub(crate) agent: &'a str,
    pub(crate) limits: &'a Limits,
    pub(crate) kv: &'a dyn Fn() -> Result<Arc<dyn KvBackend>, String>,
    /// Every interface linked for the agent, of any capability.
    pub(crate) linked: &'a [crate::capability::Interface],
}

impl LoadContext<'_> {
    /// The agent's name.
    pub fn agent(&self) -> &str {
        self.agent
    }

    /// The agent's limits.
    pub fn limits(&self) -> &Limits {
        self.limits
    }

    /// The host's key-value backend (opened on first use).
    pub fn kv_backend(&self) -> Result<Arc<dyn KvBackend>, String> {
        (self.kv)()
    }

    /// Whether the agent imports (and the host links) `package/name`.
    pub fn links(&self, package: &str, name: &str) -> bool {
        self.linked.iter().any(|i| i.package == package && i.name == name)
    }
}

/// Where a task sits in a chain of agent-to-agent calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallChain {
    /// 0 for a task submitted from outside.
    pub depth: u8,
    /// The depth this chain may reach, set by the first agent that called.
    pub max_depth: Option<u8>,
    /// When the task must end (the earlier of its deadline and its
    /// timeout): what the agents it calls inherit.
    pub deadline: Option<tokio::time::Instant>,
}

/// What a capability sees when it sets up its state for one task.
pub struct TaskContext<'a> {
    pub(crate) task: &'a TaskHandle,
    pub(crate) counters: Counters,
    pub(crate) chain: CallChain,
    pub(crate) limits: &'a Limits,
}

impl TaskContext<'_> {
    /// The task: its log, memory and CPU accounts.
    pub fn task(&self) -> &TaskHandle {
        self.task
    }

    /// This capability's usage counters for the task.
    pub fn counters(&self) -> Counters {
        self.counters.clone()
    }

    /// Where the task sits in a chain of calls.
    pub fn chain(&self) -> CallChain {
        self.chain
    }

    /// The agent's limits.
    pub fn limits(&self) -> &Limits {
        self.limits
    }
}

/// One task as host functions see it. Cheap to clone.
#[derive(Clone)]
pub struct TaskHandle {
    pub(crate) log: TaskLog,
    pub(crate) usage: Arc<UsageCounters>,
    pub(crate) metrics: Arc<Metrics>,
}

impl TaskHandle {
    /// The agent running the task.
    pub fn agent(&self) -> &str {
        &self.log.agent
    }

    /// The task's id on this host.
    pub fn task_id(&self) -> u64 {
        self.log.task_id
    }

    /// Records a line in the task's log (escaped and capped like the
    /// agent's own lines).
    pub fn log(&self, level: LogLevel, message: &str) {
        self.log.record(level, LogSource::Agent, message, &[]);
    }

    /// Reserves `bytes` of host memory for the task against its memory
    /// limit (linear memory and host buffers together); `false` when that
    /// would pass the limit. Release with [`Self::release_memory`].
    pub fn try_hold_memory(&self, bytes: u64) -> bool {
        self.usage.try_hold_host(bytes)
    }

    /// Returns memory reserved with [`Self::try_hold_memory`].
    pub fn release_memory(&self, bytes: u64) {
        self.usage.release_host(bytes)
    }

    /// The instance's memory limit in bytes.
    pub fn memory_limit(&self) -> u64 {
        self.usage.memory_limit
    }

    /// Counts a call the policy refused, by capability and a fixed reason
    /// (never guest text: these become metric labels).
    pub fn count_denial(&self, capability: &'static str, reason: &'static str) {
        self.metrics.denied(&self.log.agent, capability, reason);
    }

    /// The task's CPU account, for work done for it on another thread.
    pub fn cpu(&self) -> CpuMeter {
        CpuMeter::of(self.usage.clone())
    }
}

/// One capability's usage counters for one task, named by the capability's
/// [`counters`](super::Capability::counters) and reported in the task's
/// usage under its name.
#[derive(Clone)]
pub struct Counters {
    pub(crate) usage: Arc<UsageCounters>,
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

impl Counters {
    /// Adds `n` to the counter at `index` (of the capability's counter names).
    pub fn add(&self, index: usize, n: u64) {
        if let Some(c) = self.usage.counter(self.offset + index).filter(|_| index < self.len) {
            c.fetch_add(n, Relaxed);
        }
    }

    /// The counter's value so far.
    pub fn get(&self, index: usize) -> u64 {
        self.usage.counter(self.offset + index).filter(|_| index < self.len).map_or(0, |c| c.load(Relaxed))
    }
}
