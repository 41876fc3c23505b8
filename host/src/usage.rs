//! What a task used: counted while it runs, reported when it ends.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Host calls, by capability.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Call {
    Logging,
    Kv,
    Http,
    Tasks,
}

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
    pub logging_calls: AtomicU64,
    pub kv_calls: AtomicU64,
    pub http_calls: AtomicU64,
    pub tasks_calls: AtomicU64,
    pub kv_reads: AtomicU64,
    pub kv_writes: AtomicU64,
    pub http_requests: AtomicU64,
    pub http_bytes_sent: AtomicU64,
    pub http_bytes_received: AtomicU64,
    pub stdio_dropped: AtomicU64,
    /// What the agents this task called used.
    pub callees: std::sync::Mutex<Vec<CalleeUsage>>,
}

impl UsageCounters {
    pub fn new(memory_limit: u64) -> Self {
        UsageCounters { memory_limit, ..Default::default() }
    }

    /// Reserves `n` host-side bytes for the instance if linear memory plus
    /// host buffers stay within the memory limit.
    pub fn try_hold_host(&self, n: u64) -> bool {
        let linear = self.linear_bytes.load(Relaxed);
        let held = self.host_bytes.load(Relaxed);
        if linear + held + n > self.memory_limit {
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

    pub fn count_call(&self, call: Call) {
        match call {
            Call::Logging => &self.logging_calls,
            Call::Kv => &self.kv_calls,
            Call::Http => &self.http_calls,
            Call::Tasks => &self.tasks_calls,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// Resource usage of one task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Host calls by capability.
    pub host_calls: HostCalls,
    /// KV reads (get, list-keys).
    pub kv_reads: u64,
    /// KV writes (set, delete, increment, compare-and-swap).
    pub kv_writes: u64,
    /// Outbound HTTP requests sent.
    pub http_requests: u64,
    /// Bytes sent: URL, header names and values, and body.
    pub http_bytes_sent: u64,
    /// Response body bytes received.
    pub http_bytes_received: u64,
    /// Log bytes kept.
    pub log_bytes: u64,
    /// Log lines dropped over the per-task cap.
    pub log_lines_dropped: u64,
    /// Stdout/stderr bytes dropped over the cap.
    pub stdio_bytes_dropped: u64,
    /// What each agent this task called through `tasks` used, in call order
    /// (each under its own limits, so none of it is counted above).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callees: Vec<CalleeUsage>,
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

/// Host calls made by a task, by capability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCalls {
    pub logging: u64,
    pub kv: u64,
    pub outbound_http: u64,
    #[serde(default)]
    pub tasks: u64,
}

impl UsageCounters {
    pub fn snapshot(&self, wall: Duration) -> ResourceUsage {
        let cpu_ticks = self.cpu_ticks.load(Relaxed);
        ResourceUsage {
            wall_time_us: wall.as_micros() as u64,
            cpu_ticks,
            cpu_ms: self.cpu_ns.load(Relaxed) / 1_000_000,
            peak_memory_bytes: self.peak_memory.load(Relaxed),
            peak_host_bytes: self.peak_host_bytes.load(Relaxed),
            host_calls: HostCalls {
                logging: self.logging_calls.load(Relaxed),
                kv: self.kv_calls.load(Relaxed),
                outbound_http: self.http_calls.load(Relaxed),
                tasks: self.tasks_calls.load(Relaxed),
            },
            kv_reads: self.kv_reads.load(Relaxed),
            kv_writes: self.kv_writes.load(Relaxed),
            http_requests: self.http_requests.load(Relaxed),
            http_bytes_sent: self.http_bytes_sent.load(Relaxed),
            http_bytes_received: self.http_bytes_received.load(Relaxed),
            stdio_bytes_dropped: self.stdio_dropped.load(Relaxed),
            callees: self.callees.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            ..Default::default()
        }
    }
}
