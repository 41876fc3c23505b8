//! The store data of one task: its resource table, limiter and CPU
//! account, and the task state of each capability its agent links.

use std::any::{Any, TypeId};
use std::sync::Arc;
use wasmtime::component::ResourceTable;

use crate::limits::InstanceLimiter;
use crate::metrics::Metrics;
use crate::usage::UsageCounters;

/// What a task's store holds. Host functions reach their capability's
/// state with [`TaskData::state`].
pub struct TaskData {
    pub(crate) table: ResourceTable,
    pub(crate) limiter: InstanceLimiter,
    pub(crate) usage: Arc<UsageCounters>,
    /// Epoch ticks that found the task in wasm.
    pub(crate) cpu_ticks: u64,
    /// The CPU budget in nanoseconds (see the `cpu` module).
    pub(crate) cpu_budget_ns: u64,
    pub(crate) metrics: Arc<Metrics>,
    /// Each linked capability's task state, in the agent's order.
    pub(crate) states: Vec<(TypeId, Box<dyn Any + Send>)>,
}

impl TaskData {
    /// The task state of type `S` (a capability's
    /// [`TaskState`](crate::capability::Capability::TaskState)).
    ///
    /// # Panics
    /// If no capability of the agent has that state: a host function linked
    /// by its capability always finds its own, since the host builds the
    /// state of every capability it links.
    pub fn state<S: Send + 'static>(&mut self) -> &mut S {
        self.try_state().expect("a linked capability has its task state")
    }

    /// [`Self::state`], shared.
    pub fn state_ref<S: Send + 'static>(&self) -> &S {
        let id = TypeId::of::<S>();
        let found = self.states.iter().find(|(t, _)| *t == id).and_then(|(_, s)| s.downcast_ref::<S>());
        found.expect("a linked capability has its task state")
    }

    /// The task state of type `S`, if a capability of the agent has it.
    pub fn try_state<S: Send + 'static>(&mut self) -> Option<&mut S> {
        find_state(&mut self.states)
    }

    /// The task's resource table and the task state of type `S` at once
    /// (for interfaces whose host code needs both).
    ///
    /// # Panics
    /// As [`Self::state`].
    pub fn table_and_state<S: Send + 'static>(&mut self) -> (&mut ResourceTable, &mut S) {
        (&mut self.table, find_state(&mut self.states).expect("a linked capability has its task state"))
    }

    /// The task's resource table (handles the guest holds).
    pub fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// A capability's state and the resource table at once.
    pub fn state_and_table<S: Send + 'static>(&mut self) -> (&mut S, &mut ResourceTable) {
        let id = TypeId::of::<S>();
        let state = self.states.iter_mut().find(|(t, _)| *t == id).and_then(|(_, s)| s.downcast_mut::<S>());
        (state.expect("a linked capability has its task state"), &mut self.table)
    }
}

impl Drop for TaskData {
    // The store owns the instance: when it goes, so does the instance.
    fn drop(&mut self) {
        self.metrics.instance_ended();
        self.usage.linear_bytes.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The state of type `S` among a task's capability states.
fn find_state<S: Send + 'static>(states: &mut [(TypeId, Box<dyn Any + Send>)]) -> Option<&mut S> {
    let id = TypeId::of::<S>();
    states.iter_mut().find(|(t, _)| *t == id).and_then(|(_, s)| s.downcast_mut::<S>())
}
