//! Turning what ended a task into a typed [`TaskError`] naming the limit:
//! by type only — the limiter's recorded hit, wasmtime's `Trap` codes, and
//! the errors the host itself raises (the epoch callback's CPU check, the
//! argument lift's size check, `wasi:cli/exit`) — never by message text.

use wasmtime::Trap;

use crate::error::TaskError;
use crate::guest_args::ArgumentsTooLarge;
use crate::limits::LimitHit;
use crate::policy::Limits;
use crate::task_data::TaskData;

/// Raised from the epoch callback when the CPU budget is spent.
#[derive(Debug)]
pub(crate) struct CpuExhausted;

impl std::fmt::Display for CpuExhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CPU budget exhausted")
    }
}

impl std::error::Error for CpuExhausted {}

/// Where the task was when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Creating the instance (its start functions run here).
    Instantiate,
    /// In the call to `run`.
    Call,
}

/// The host-wide facts an error is reported with.
pub(crate) struct Bounds {
    pub stack_kib: u64,
    pub pool_slots: u32,
}

/// The typed error for `e`, which ended a task of an agent with `limits`.
pub(crate) fn classify(
    e: wasmtime::Error,
    data: &TaskData,
    limits: &Limits,
    bounds: &Bounds,
    phase: Phase,
) -> TaskError {
    match data.limiter.hit {
        Some(LimitHit::Memory { limit, requested }) => {
            return TaskError::MemoryLimit { limit_bytes: limit, requested_bytes: requested }
        }
        Some(LimitHit::Table { limit, requested }) => return TaskError::TableLimit { limit, requested },
        None => {}
    }
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return TaskError::Exited { status: exit.0 };
    }
    if e.downcast_ref::<CpuExhausted>().is_some() {
        return TaskError::CpuLimit { limit_ms: limits.cpu_ms };
    }
    if e.downcast_ref::<ArgumentsTooLarge>().is_some() {
        return TaskError::HostCallTooLarge { limit_bytes: limits.memory_mib << 20 };
    }
    if let Some(wasmtime::component::ResourceTableError::Full) = e.downcast_ref() {
        return TaskError::HandleLimit { limit: limits.resource_handles.into() };
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
        return TaskError::PoolExhausted { slots: bounds.pool_slots };
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        if *trap == Trap::StackOverflow {
            return TaskError::StackOverflow { limit_bytes: bounds.stack_kib * 1024 };
        }
        let reason = trap.to_string().trim_start_matches("wasm trap: ").to_string();
        return match phase {
            Phase::Instantiate => TaskError::Instantiate { reason: format!("its start function trapped: {reason}") },
            Phase::Call => TaskError::Trap { reason },
        };
    }
    // Anything else is reported as it is, under the phase it happened in.
    let reason = e.root_cause().to_string();
    match phase {
        Phase::Instantiate => TaskError::Instantiate { reason },
        Phase::Call => TaskError::Trap { reason },
    }
}
