//! A loaded agent: compiled, checked against its policy, linked with only
//! its granted capabilities, and pre-instantiated.

use std::sync::Arc;

use crate::bindings::AgentPre;
use crate::capability::{AgentSettings, DynCapability, ErasedAgentState, ImportDecision};
use crate::concurrency::Slots;
use crate::metrics::AgentMetrics;
use crate::policy::Policy;
use crate::task_data::TaskData;

/// An agent ready to run. Every task instantiates it from its `InstancePre`.
pub struct Agent {
    pub(crate) name: Arc<str>,
    pub(crate) policy: Arc<Policy>,
    pub(crate) pre: AgentPre<TaskData>,
    pub(crate) imports: Vec<ImportDecision>,
    /// The capabilities it links, with their agent state, in link order.
    pub(crate) active: Vec<ActiveCapability>,
    /// Capability counter names, in the order of the task's counters.
    pub(crate) counter_layout: Vec<(&'static str, &'static [&'static str])>,
    pub(crate) settings: AgentSettings,
    pub(crate) metrics: AgentMetrics,
    pub(crate) slots: Arc<Slots>,
    pub(crate) digest: String,
}

/// A capability an agent links, and what it built for the agent.
pub(crate) struct ActiveCapability {
    pub cap: Arc<dyn DynCapability>,
    pub state: ErasedAgentState,
    /// Where its counters start among the task's.
    pub counter_offset: usize,
}

impl Agent {
    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy it runs under.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Its imports, all granted (or inert).
    pub fn imports(&self) -> &[ImportDecision] {
        &self.imports
    }

    /// The SHA-256 of its component, in hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Caps how many tasks of this agent run at once, whoever starts them:
    /// the scheduler, or another agent calling it through `tasks` (such a
    /// call waits for a slot within the caller's deadline). Unlimited until
    /// set; the scheduler sets its `max_concurrency`.
    pub fn set_max_concurrency(&self, n: usize) {
        self.slots.limit(n);
    }

    /// The cap set by [`Agent::set_max_concurrency`].
    pub fn max_concurrency(&self) -> usize {
        self.slots.cap()
    }

    /// How many capability counters a task of this agent has.
    pub(crate) fn counter_count(&self) -> usize {
        self.counter_layout.iter().map(|(_, names)| names.len()).sum()
    }
}
