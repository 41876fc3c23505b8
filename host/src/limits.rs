//! Per-task limits (`[limits]` of a policy) and how an instance is held to
//! them: memory counted over all linear memories of the
//! instance together plus the host-side buffers held for it, tables, and
//! instance counts. A refused growth is
//! recorded so the task's error can name the limit.

use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::usage::UsageCounters;

/// `[limits]`: hard per-task limits, all on by default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Memory of the whole instance in MiB: all its linear memories together
    /// plus the host-side buffers held for it (kept logs, captured stdio,
    /// response bodies in flight).
    pub memory_mib: u64,
    /// CPU time spent executing wasm, in milliseconds (counted in epoch ticks).
    pub cpu_ms: u64,
    /// Wall-clock time for the whole task, host calls included, in milliseconds.
    pub timeout_ms: u64,
    /// Wasm stack in KiB. The stack is a property of the host's engine: a
    /// policy may state it, and loading fails if the host enforces another value.
    pub stack_kib: Option<u64>,
    /// Core wasm instances one component may create.
    pub instances: u32,
    /// Linear memories one component may create (all of them count
    /// together against `memory_mib`).
    pub memories: u32,
    /// Tables one component may create.
    pub tables: u32,
    /// Elements one table may grow to.
    pub table_elements: u64,
    /// Bytes of task input accepted.
    pub max_input_bytes: u64,
    /// Bytes of task output accepted.
    pub max_output_bytes: u64,
    /// Bytes of stdout and stderr kept, each; the rest is dropped and counted.
    pub stdio_bytes: u64,
    /// Host resource handles (streams, pollables) the agent may hold at once.
    pub resource_handles: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 64,
            cpu_ms: 2_000,
            timeout_ms: 10_000,
            stack_kib: None,
            instances: 32,
            memories: 2,
            tables: 4,
            table_elements: 100_000,
            max_input_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            stdio_bytes: 64 << 10,
            resource_handles: 1_000,
        }
    }
}

/// A limit the limiter refused, to name in the task's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitHit {
    Memory { limit: u64, requested: u64 },
    Table { limit: u64, requested: u64 },
}

pub(crate) struct InstanceLimiter {
    table_elements: u64,
    instances: usize,
    memories: usize,
    tables: usize,
    pub hit: Option<LimitHit>,
    usage: Arc<UsageCounters>,
}

impl InstanceLimiter {
    pub fn new(limits: &Limits, usage: Arc<UsageCounters>) -> Self {
        InstanceLimiter {
            table_elements: limits.table_elements,
            instances: limits.instances as usize,
            memories: limits.memories as usize,
            tables: limits.tables as usize,
            hit: None,
            usage,
        }
    }
}

impl wasmtime::ResourceLimiter for InstanceLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let u = &self.usage;
        let linear = u.linear_bytes.load(Relaxed) - current as u64 + desired as u64;
        // Host-side buffers held for this instance count against the same limit.
        let requested = linear + u.host_bytes.load(Relaxed);
        if requested > u.memory_limit {
            self.hit = Some(LimitHit::Memory { limit: u.memory_limit, requested });
            return Ok(false);
        }
        u.linear_bytes.store(linear, Relaxed);
        u.peak_memory.fetch_max(linear, Relaxed);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.table_elements {
            self.hit = Some(LimitHit::Table { limit: self.table_elements, requested: desired as u64 });
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}
