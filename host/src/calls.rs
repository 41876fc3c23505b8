//! Agents running agents: the handle through which a capability (the
//! built-in `tasks`, or an integrator's) asks the host to run another agent
//! inside a task. It holds the host weakly: a capability never keeps its
//! host alive, and a call after the host is gone finds no agent.

use futures::future::BoxFuture;
use std::sync::{Arc, Weak};

use crate::agent::Agent;
use crate::capability::CallChain;
use crate::report::TaskReport;

/// What the host does for an [`AgentCaller`].
pub(crate) trait CallAgents: Send + Sync {
    fn find(&self, name: &str) -> Option<Arc<Agent>>;
    fn run<'a>(&'a self, agent: &'a Agent, input: &'a str, chain: CallChain) -> BoxFuture<'a, TaskReport>;
}

/// Runs agents registered on a host (see [`Host::register`](crate::Host::register)).
#[derive(Clone)]
pub struct AgentCaller(Option<Weak<dyn CallAgents>>);

impl AgentCaller {
    pub(crate) fn new(host: Weak<dyn CallAgents>) -> AgentCaller {
        AgentCaller(Some(host))
    }

    /// A caller belonging to no host: it finds no agent.
    pub fn detached() -> AgentCaller {
        AgentCaller(None)
    }

    fn host(&self) -> Option<Arc<dyn CallAgents>> {
        self.0.as_ref().and_then(Weak::upgrade)
    }

    /// The registered agent called `name`.
    pub fn find(&self, name: &str) -> Option<Arc<Agent>> {
        self.host()?.find(name)
    }

    /// Runs `agent` in a fresh instance under its own policy, at `chain`
    /// (its deadline included); `None` if the host is gone.
    pub async fn call(&self, agent: &Agent, input: &str, chain: CallChain) -> Option<TaskReport> {
        let host = self.host()?;
        Some(host.run(agent, input, chain).await)
    }
}
