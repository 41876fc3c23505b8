//! `chimera:agent/tasks`: an agent runs another agent through the host.
//!
//! The child runs in a fresh instance under its own policy, with the
//! caller's deadline (the earlier of the caller's timeout and deadline) and
//! inside the caller's call, so cancelling or timing out the caller drops
//! the child too. Fan-out per task, chain depth and a per-agent rate bound
//! what one agent can set off: a self-spawning agent stops at its limits.

use std::sync::Mutex;
use std::time::Instant;
use wasmtime::component::Linker;
use wasmtime::{AsContext, StoreContextMut};

use super::{CapabilityDecision, Grant};
use crate::bindings::chimera::agent::tasks::{self, CallError};
use crate::guest_args::GuestStr;
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
        link: link_checked,
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

/// Links `call`, sizing the agent name and the input before either is
/// decoded: the name against the longest agent name, the input against the
/// callee's `max_input_bytes` and, while the callee runs, against the
/// caller's memory limit (the host holds it for the caller).
fn link_checked(l: &mut Linker<TaskState>) -> wasmtime::Result<()> {
    let mut i = l.instance("chimera:agent/tasks@0.1.0")?;
    i.func_wrap_async("call", |mut store: StoreContextMut<'_, TaskState>, (agent, input): (GuestStr, GuestStr)| {
        Box::new(async move {
            store.data().usage.count_call(Call::Tasks);
            let result = match lift_call(&mut store, &agent, &input)? {
                Ok((callee, input, held)) => {
                    let result = store.data_mut().call_agent(callee, &input).await;
                    store.data().usage.release_host(held);
                    result
                }
                Err(refusal) => Err(refusal),
            };
            Ok((result.map_err(|(error, label)| {
                if matches!(error, CallError::Denied(_)) {
                    store.data().metrics.denied(&store.data().log.agent, "tasks", label);
                }
                error
            }),))
        })
    })?;
    Ok(())
}

type Refusal = (CallError, &'static str);

/// A call ready to run: the callee, the decoded input, and the host bytes
/// held for the input.
type Lifted = (std::sync::Arc<crate::host::Agent>, String, u64);

/// The call, or why not.
fn lift_call(
    store: &mut StoreContextMut<'_, TaskState>,
    agent: &GuestStr,
    input: &GuestStr,
) -> wasmtime::Result<Result<Lifted, Refusal>> {
    let deny = |label, msg: String| Ok(Err((CallError::Denied(msg), label)));
    let Some(name) = agent.decode_within(store.as_context(), 64)? else {
        return deny(
            "invalid-name",
            format!("agent names are at most 64 bytes; this one is at least {}", agent.min_len()),
        );
    };
    let data = store.data();
    match &data.tasks {
        None => return deny("not-granted", "tasks is not granted".into()),
        Some(t) if !t.grant.allow.contains(&name) => {
            return deny("not-allowed", format!("this agent's policy does not allow calling `{name}`"))
        }
        Some(_) => {}
    }
    let Some(callee) = data.host.agent(&name) else {
        return Ok(Err((CallError::UnknownAgent(format!("no agent `{name}` runs on this host")), "unknown-agent")));
    };
    let limit = callee.policy().limits.max_input_bytes;
    if input.min_len() as u64 > limit {
        return deny(
            "input-too-large",
            format!(
                "the input is at least {} bytes; `{name}` accepts at most {limit} (its max_input_bytes)",
                input.min_len()
            ),
        );
    }
    let held = input.max_len() as u64;
    if !data.usage.try_hold_host(held) {
        return deny(
            "memory-limit",
            format!("holding a {held}-byte input would take this task past its memory limit (memory_mib)"),
        );
    }
    let decoded = match input.decode(store.as_context()) {
        Ok(text) => text.into_owned(),
        Err(e) => {
            store.data().usage.release_host(held);
            return Err(e);
        }
    };
    Ok(Ok((callee, decoded, held)))
}

impl TaskState {
    /// Runs `callee` for this task once the grant's fan-out, depth and rate
    /// allow it and the callee has a free slot under its own concurrency cap
    /// (waiting for one until this task's deadline). The callee's usage and
    /// log lines join this task's report.
    async fn call_agent(&mut self, callee: std::sync::Arc<crate::host::Agent>, input: &str) -> Result<String, Refusal> {
        let deny = |label, msg: String| Err((CallError::Denied(msg), label));
        let Some(access) = self.tasks.clone() else {
            return deny("not-granted", "tasks is not granted".into());
        };
        let grant = &access.grant;
        let name = callee.name().to_string();
        if !grant.allow.contains(&name) {
            return deny("not-allowed", format!("this agent's policy does not allow calling `{name}`"));
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
        self.calls_made += 1;
        let deadline = self.chain.options.deadline;
        let slot = match callee.slots.try_take() {
            Some(slot) => slot,
            None => {
                let wait = callee.slots.take();
                let waited = match deadline {
                    Some(at) => tokio::time::timeout_at(at, wait).await.ok(),
                    None => Some(wait.await),
                };
                match waited {
                    Some(slot) => slot,
                    None => {
                        return deny(
                            "concurrency",
                            format!(
                                "`{name}` was running {} tasks (its max_concurrency) until this task's deadline",
                                callee.max_concurrency()
                            ),
                        )
                    }
                }
            }
        };
        // The child inherits the deadline; it needs no token of its own, as it
        // runs inside this call and is dropped with its caller.
        let options = RunOptions { deadline, cancel: None };
        let chain = CallChain { depth, max_depth: Some(max_depth), options };
        let report = Box::pin(self.host.run_chained(&callee, input, chain)).await;
        drop(slot);
        self.log.adopt(&name, report.logs);
        self.usage.callees.lock().unwrap_or_else(|e| e.into_inner()).push(crate::usage::CalleeUsage {
            agent: name.clone(),
            task_id: report.task_id,
            usage: report.usage,
        });
        report.outcome.map_err(|e| (CallError::Failed(format!("`{name}` failed: {e}")), "child-failed"))
    }
}

impl tasks::Host for TaskState {
    // Linked by `link_checked`, which sizes the arguments before lifting
    // them; this implementation only satisfies the bindings.
    async fn call(&mut self, agent: String, input: String) -> wasmtime::Result<Result<String, CallError>> {
        let Some(callee) = self.host.agent(&agent) else {
            return Ok(Err(CallError::UnknownAgent(format!("no agent `{agent}` runs on this host"))));
        };
        Ok(self.call_agent(callee, &input).await.map_err(|(error, _)| error))
    }
}
