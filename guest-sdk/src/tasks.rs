//! Calling other agents through the host. The policy decides which agents
//! may be called, how often and how deep; a refusal is [`CallError::Denied`].

use crate::bindings::chimera::agent::tasks;
pub use tasks::CallError;

/// Runs `agent` on `input` and returns its output.
pub fn call(agent: &str, input: &str) -> Result<String, CallError> {
    tasks::call(agent, input)
}
