//! The store data of one task: its WASI context, handles, limiter, and the
//! per-task state of each granted capability.

use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::WasiCtx;

use crate::capabilities::kv::KvTaskState;
use crate::capabilities::logging::TaskLog;
use crate::capabilities::outbound_http::HttpAccess;
use crate::capabilities::tasks::{CallChain, TasksAccess};
use crate::host::Host;
use crate::limits::InstanceLimiter;
use crate::metrics::Metrics;
use crate::usage::UsageCounters;

pub(crate) struct TaskState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: InstanceLimiter,
    pub log: TaskLog,
    pub kv: Option<KvTaskState>,
    pub http: Option<Arc<HttpAccess>>,
    /// Requests sent by this task, against the grant's quota.
    pub http_requests: u32,
    pub usage: Arc<UsageCounters>,
    /// Epoch ticks that found the task in wasm.
    pub cpu_ticks: u64,
    /// The CPU budget in nanoseconds (see the `cpu` module).
    pub cpu_budget_ns: u64,
    pub metrics: Arc<Metrics>,
    pub tasks: Option<Arc<TasksAccess>>,
    /// Calls this task made to other agents, against the fan-out limit.
    pub calls_made: u32,
    pub chain: CallChain,
    /// The host, to run called agents.
    pub host: Host,
}

impl Drop for TaskState {
    // The store owns the instance: when it goes, so does the instance.
    fn drop(&mut self) {
        self.metrics.instance_ended();
        self.usage.linear_bytes.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}
