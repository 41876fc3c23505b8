//! Per-instance limits: memory counted over all linear memories of the
//! instance together plus the host-side buffers held for it, tables, and
//! instance counts. A refused growth is
//! recorded so the task's error can name the limit.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::policy::Limits;
use crate::usage::UsageCounters;

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
