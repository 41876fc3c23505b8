//! What a task used: counted while it runs, reported when it ends.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Capability counters kept inside a task's [`UsageCounters`].
const INLINE_COUNTERS: usize = 16;

/// Live counters of one task. Atomics, so they can be read after a task
/// that was cut off by its timeout (its store is gone by then).
#[derive(Default, Debug)]
pub(crate) struct UsageCounters {
    /// The instance's memory limit: linear memories and host-side buffers together.
    pub memory_limit: u64,
    /// Linear memory of the instance now (all memories).
    pub linear_bytes: AtomicU64,
    /// Bytes the host holds for the instance now (logs, captured stdio, response bodies).
    pub host_bytes: AtomicU64,
    pub peak_host_bytes: AtomicU64,
    pub cpu_ticks: AtomicU64,
    /// CPU time spent for the task (see the `cpu` module), and the thread
    /// CPU clock at the start of the poll in progress.
    pub cpu_ns: AtomicU64,
    pub poll_started_ns: AtomicU64,
    pub peak_memory: AtomicU64,
    /// The counters of the agent's capabilities, one run after another
    /// (see [`crate::capability::Counters`]): the first [`INLINE_COUNTERS`]
    /// here, so most tasks allocate none, the rest in `more_counters`.
    counters: [AtomicU64; INLINE_COUNTERS],
    more_counters: Box<[AtomicU64]>,
    /// What the agents this task called used.
    pub callees: std::sync::Mutex<Vec<CalleeUsage>>,
}

impl UsageCounters {
    pub fn with_counters(memory_limit: u64, counters: usize) -> Self {
        UsageCounters {
            memory_limit,
            more_counters: (INLINE_COUNTERS..counters).map(|_| AtomicU64::new(0)).collect(),
            ..Default::default()
        }
    }

    /// Capability counter `i` (of those [`Self::with_counters`] made room for).
    pub fn counter(&self, i: usize) -> Option<&AtomicU64> {
        self.counters.get(i).or_else(|| self.more_counters.get(i - INLINE_COUNTERS))
    }

    /// Linear memory and host buffers held now.
    pub fn current_bytes(&self) -> u64 {
        self.linear_bytes.load(Relaxed) + self.host_bytes.load(Relaxed)
    }

    /// Reserves `n` host-side bytes for the instance if linear memory plus
    /// host buffers stay within the memory limit.
    pub fn try_hold_host(&self, n: u64) -> bool {
        if self.current_bytes().saturating_add(n) > self.memory_limit {
            return false;
        }
        let now = self.host_bytes.fetch_add(n, Relaxed) + n;
        self.peak_host_bytes.fetch_max(now, Relaxed);
        true
    }

    /// Returns host-side bytes reserved with [`Self::try_hold_host`].
    pub fn release_host(&self, n: u64) {
        self.host_bytes.fetch_sub(n, Relaxed);
    }

    /// The report of what the task used; `layout` names the capability
    /// counters in order (each capability's name and counter names).
    pub fn snapshot(&self, wall: Duration, layout: &[(&'static str, &'static [&'static str])]) -> ResourceUsage {
        let mut capabilities = BTreeMap::new();
        let mut values = self.counters.iter().chain(self.more_counters.iter());
        for (capability, names) in layout {
            let mut counters = BTreeMap::new();
            for name in names.iter() {
                let v = values.next().map_or(0, |c| c.load(Relaxed));
                if v > 0 {
                    counters.insert(Cow::Borrowed(*name), v);
                }
            }
            if !counters.is_empty() {
                capabilities.insert(Cow::Borrowed(*capability), counters);
            }
        }
        ResourceUsage {
            wall_time_us: wall.as_micros() as u64,
            cpu_ticks: self.cpu_ticks.load(Relaxed),
            cpu_ms: self.cpu_ns.load(Relaxed) / 1_000_000,
            peak_memory_bytes: self.peak_memory.load(Relaxed),
            peak_host_bytes: self.peak_host_bytes.load(Relaxed),
            capabilities,
            callees: self.callees.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            ..Default::default()
        }
    }
}

/// Counters of one capability, by name.
pub type CapabilityUsage = BTreeMap<Cow<'static, str>, u64>;

/// Resource usage of one task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResourceUsage {
    /// Wall time from the start of instantiation to the end of the call.
    pub wall_time_us: u64,
    /// Epoch ticks that found the agent executing wasm.
    pub cpu_ticks: u64,
    /// CPU time spent for the task, in milliseconds: its wasm, its host
    /// calls, and host work done for it on other threads (KV commits).
    /// Time blocked (sleeping, waiting on I/O) is not counted.
    pub cpu_ms: u64,
    /// Highest total linear memory of the instance, in bytes.
    pub peak_memory_bytes: u64,
    /// Highest host-side buffer bytes held for the instance (logs, stdio,
    /// response bodies); counted with linear memory against `memory_mib`.
    pub peak_host_bytes: u64,
    /// Log bytes kept.
    pub log_bytes: u64,
    /// Log lines dropped over the per-task cap.
    pub log_lines_dropped: u64,
    /// Each capability's counters that moved (e.g. `kv`: `calls`, `reads`,
    /// `writes`); see [`ResourceUsage::counter`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capabilities: BTreeMap<Cow<'static, str>, CapabilityUsage>,
    /// What each agent this task called through `tasks` used, in call order
    /// (each under its own limits, so none of it is counted above).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callees: Vec<CalleeUsage>,
}

impl ResourceUsage {
    /// A capability's counter, 0 if it never moved: e.g. `counter("kv", "writes")`.
    pub fn counter(&self, capability: &str, name: &str) -> u64 {
        self.capabilities.get(capability).and_then(|c| c.get(name)).copied().unwrap_or(0)
    }

    /// Host calls the task made through `capability`.
    pub fn calls(&self, capability: &str) -> u64 {
        self.counter(capability, "calls")
    }
}

/// One call to another agent and what it used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalleeUsage {
    /// The called agent.
    pub agent: String,
    /// Its task id on this host.
    pub task_id: u64,
    /// What its task used.
    pub usage: ResourceUsage,
}
