//! `chimera:agent/tasks`: an agent runs another agent through the host.
//!
//! The child runs in a fresh instance under its own policy, with the
//! caller's deadline (the earlier of the caller's timeout and deadline) and
//! inside the caller's call, so cancelling or timing out the caller drops
//! the child too. Fan-out per task, chain depth and a per-agent rate bound
//! what one agent can set off: a self-spawning agent stops at its limits.

use std::sync::Mutex;
use std::time::Instant;
use wasmtime::component::{HasSelf, Linker};

use super::{CapabilityDecision, Grant};
use crate::bindings::chimera::agent::tasks::{self, CallError};
use crate::host::RunOptions;
use crate::policy::{Policy, TasksGrant};
use crate::state::TaskState;
use crate::usage::Call;

/// The deepest chain of calls any policy may allow.
pub const MAX_DEPTH: u8 = 16;

pub(crate) fn decide(policy: &Policy) -> CapabilityDecision {
    CapabilityDecision {
        capability: "tasks",
        section: "[capabilities.tasks]",
        grant: match &policy.capabilities.tasks {
            Some(g) => Grant::Granted(format!(
                "may call {}; {} calls per task, depth {}, {} calls/s",
                if g.allow.is_empty() { "no agent".to_string() } else { g.allow.join(", ") },
                g.max_fan_out,
                g.max_depth,
                g.rate_per_second
            )),
            None => {
                Grant::Refused("not granted; add a [capabilities.tasks] section naming the agents it may call".into())
            }
        },
        link: |l: &mut Linker<TaskState>| tasks::add_to_linker::<TaskState, HasSelf<TaskState>>(l, |s| s),
    }
}

/// An agent's grant and its rate bucket, shared by all its tasks.
pub(crate) struct TasksAccess {
    grant: TasksGrant,
    bucket: Mutex<(f64, Instant)>,
}

impl TasksAccess {
    pub fn new(grant: &TasksGrant) -> TasksAccess {
        TasksAccess { grant: grant.clone(), bucket: Mutex::new((grant.rate_per_second as f64, Instant::now())) }
    }

    /// Takes one token from the bucket, refilled at `rate_per_second`.
    fn take_token(&self) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let rate = self.grant.rate_per_second as f64;
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(rate);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Where a task sits in a chain of calls.
#[derive(Clone, Default)]
pub(crate) struct CallChain {
    /// 0 for a task submitted from outside.
    pub depth: u8,
    /// The depth this chain may reach, set by the first agent that called.
    pub max_depth: Option<u8>,
    /// The deadline this task's children inherit.
    pub options: RunOptions,
}

impl TaskState {
    async fn call_agent(&mut self, agent: String, input: String) -> Result<String, (CallError, &'static str)> {
        let deny = |label, msg: String| Err((CallError::Denied(msg), label));
        let Some(access) = self.tasks.clone() else {
            return deny("not-granted", "tasks is not granted".into());
        };
        let grant = &access.grant;
        if !grant.allow.contains(&agent) {
            return deny("not-allowed", format!("this agent's policy does not allow calling `{agent}`"));
        }
        if self.calls_made >= grant.max_fan_out {
            return deny("fan-out", format!("this task already made {} calls (max_fan_out)", grant.max_fan_out));
        }
        let depth = self.chain.depth + 1;
        let max_depth =
            self.chain.max_depth.unwrap_or(grant.max_depth as u8).min(grant.max_depth as u8 + self.chain.depth);
        if depth > max_depth {
            return deny("depth", format!("a call at depth {depth} exceeds this chain's max_depth of {max_depth}"));
        }
        if !access.take_token() {
            return deny("rate", format!("more than {} calls per second (rate_per_second)", grant.rate_per_second));
        }
        let Some(callee) = self.host.agent(&agent) else {
            return Err((CallError::UnknownAgent(format!("no agent `{agent}` runs on this host")), "unknown-agent"));
        };
        self.calls_made += 1;
        // The child inherits the deadline; it needs no token of its own, as it
        // runs inside this call and is dropped with its caller.
        let options = RunOptions { deadline: self.chain.options.deadline, cancel: None };
        let chain = CallChain { depth, max_depth: Some(max_depth), options };
        let report = Box::pin(self.host.run_chained(&callee, &input, chain)).await;
        report.outcome.map_err(|e| (CallError::Failed(format!("`{agent}` failed: {e}")), "child-failed"))
    }
}

impl tasks::Host for TaskState {
    async fn call(&mut self, agent: String, input: String) -> wasmtime::Result<Result<String, CallError>> {
        self.usage.count_call(Call::Tasks);
        Ok(self.call_agent(agent, input).await.map_err(|(error, label)| {
            if matches!(error, CallError::Denied(_)) {
                self.metrics.denied(&self.log.agent, "tasks", label);
            }
            error
        }))
    }
}
