//! `chimera:agent/tasks`: an agent runs another agent through the host.
//!
//! The child runs in a fresh instance under its own policy, with the
//! caller's deadline (the earlier of the caller's timeout and deadline) and
//! inside the caller's call, so cancelling or timing out the caller drops
//! the child too. Fan-out per task, chain depth and a per-agent rate bound
//! what one agent can set off: a self-spawning agent stops at its limits.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmtime::component::Linker;
use wasmtime::{AsContext, StoreContextMut};

use crate::agent::Agent;
use crate::bindings::chimera::agent::tasks::CallError;
use crate::calls::AgentCaller;
use crate::capability::{
    to_json, CallChain, Capability, Counters, Decision, Interface, LoadContext, TaskContext, TaskHandle,
};
use crate::error::PolicyError;
use crate::guest_args::GuestStr;
use crate::policy::{check_name, check_range, PolicySection};
use crate::task_data::TaskData;

/// The deepest chain of calls any policy may allow.
pub const MAX_DEPTH: u8 = 16;

/// `[capabilities.tasks]`: calling other agents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TasksGrant {
    /// The agents this agent may call: each a name, or `name@sha256:<hex>`
    /// to pin the callee to one component (a call reaching an agent of that
    /// name with another digest is refused, and so is a deployment naming
    /// it).
    pub allow: Vec<String>,
    /// Calls one task may make.
    pub max_fan_out: u32,
    /// How deep a chain of calls starting at this agent may go (1: it may
    /// call others, but they may not call further through this grant).
    pub max_depth: u32,
    /// Calls per second over all of this agent's tasks (a token bucket
    /// holding one second's worth).
    pub rate_per_second: u32,
}

impl Default for TasksGrant {
    fn default() -> Self {
        TasksGrant { allow: Vec::new(), max_fan_out: 4, max_depth: 2, rate_per_second: 100 }
    }
}

/// One entry of [`TasksGrant::allow`], read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Callee<'a> {
    /// The agent's name.
    pub name: &'a str,
    /// The SHA-256 (hex) its component must have, when pinned.
    pub sha256: Option<&'a str>,
}

impl<'a> Callee<'a> {
    /// Reads `name` or `name@sha256:<hex>`.
    pub fn parse(entry: &'a str) -> Callee<'a> {
        match entry.split_once("@sha256:") {
            Some((name, digest)) => Callee { name, sha256: Some(digest) },
            None => Callee { name: entry, sha256: None },
        }
    }

    /// Whether `digest` is what this entry allows.
    pub fn admits(&self, digest: &str) -> bool {
        self.sha256.is_none_or(|want| want == digest)
    }
}

impl TasksGrant {
    /// Each allowed callee.
    pub fn callees(&self) -> impl Iterator<Item = Callee<'_>> {
        self.allow.iter().map(|e| Callee::parse(e))
    }

    /// The entry allowing calls to `name`, if any.
    pub fn callee(&self, name: &str) -> Option<Callee<'_>> {
        self.callees().find(|c| c.name == name)
    }
}

impl PolicySection for TasksGrant {
    const SECTION: &'static str = "capabilities.tasks";
}

const INTERFACES: &[Interface] = &[Interface::new("chimera:agent", "tasks", "0.1.0")];

const CALLS: usize = 0;

/// The `tasks` capability: calls go to the agents registered on the host
/// its [`AgentCaller`] belongs to.
pub struct Tasks {
    caller: AgentCaller,
}

impl Tasks {
    /// `tasks` running callees through `caller`.
    pub fn new(caller: AgentCaller) -> Tasks {
        Tasks { caller }
    }
}

/// `tasks` as one task sees it.
pub struct TasksTask {
    access: Arc<TasksAccess>,
    caller: AgentCaller,
    /// Calls this task made to other agents, against the fan-out limit.
    calls_made: u32,
    chain: CallChain,
    task: TaskHandle,
    counters: Counters,
}

impl Capability for Tasks {
    type Grant = TasksGrant;
    type AgentState = Arc<TasksAccess>;
    type TaskState = TasksTask;

    fn name(&self) -> &'static str {
        "tasks"
    }

    fn section(&self) -> &'static str {
        TasksGrant::SECTION
    }

    fn interfaces(&self) -> &[Interface] {
        INTERFACES
    }

    fn counters(&self) -> &'static [&'static str] {
        &["calls"]
    }

    fn validate(&self, g: &TasksGrant) -> Result<(), PolicyError> {
        for (i, entry) in g.allow.iter().enumerate() {
            let key = format!("capabilities.tasks.allow[{i}]");
            let callee = Callee::parse(entry);
            check_name(&key, callee.name)?;
            if let Some(digest) = callee.sha256.filter(|d| !crate::audit::is_sha256_hex(d)) {
                return Err(PolicyError::Invalid {
                    key,
                    reason: format!("pins the digest {digest:?}, which is not a SHA-256 {}", crate::audit::SHA256_FORM),
                });
            }
        }
        check_range("capabilities.tasks.max_fan_out", g.max_fan_out.into(), 1, 1_000)?;
        check_range("capabilities.tasks.max_depth", g.max_depth.into(), 1, MAX_DEPTH.into())?;
        check_range("capabilities.tasks.rate_per_second", g.rate_per_second.into(), 1, 100_000)
    }

    fn decide(&self, _: &Interface, grant: Option<&TasksGrant>) -> Decision {
        match grant {
            Some(g) => Decision::Granted(format!(
                "may call {}; {} calls per task, depth {}, {} calls/s",
                if g.allow.is_empty() { "no agent".to_string() } else { g.allow.join(", ") },
                g.max_fan_out,
                g.max_depth,
                g.rate_per_second
            )),
            None => Decision::Refused(
                "not granted; add a [capabilities.tasks] section naming the agents it may call".into(),
            ),
        }
    }

    fn diff(&self, old: &TasksGrant, new: &TasksGrant) -> Vec<String> {
        let mut out = Vec::new();
        let pin = |d: Option<&str>| d.map_or("unpinned".to_string(), |d| format!("sha256:{d}"));
        for c in new.callees() {
            match old.callee(c.name) {
                None => out.push(format!("gains tasks call to {} ({})", c.name, pin(c.sha256))),
                Some(was) if was.sha256 != c.sha256 => {
                    out.push(format!("tasks call to {}: {} → {}", c.name, pin(was.sha256), pin(c.sha256)))
                }
                Some(_) => {}
            }
        }
        for c in old.callees().filter(|c| new.callee(c.name).is_none()) {
            out.push(format!("loses tasks call to {}", c.name));
        }
        let rest = |g: &TasksGrant| TasksGrant { allow: Vec::new(), ..g.clone() };
        out.extend(crate::audit::diff_fields("tasks", &to_json(&rest(old)), &to_json(&rest(new))));
        out
    }

    fn link(&self, interface: &Interface, linker: &mut Linker<TaskData>) -> wasmtime::Result<()> {
        link_checked(interface, linker)
    }

    fn load(&self, grant: Option<&TasksGrant>, _: &LoadContext<'_>) -> Result<Arc<TasksAccess>, String> {
        Ok(Arc::new(TasksAccess::new(&grant.cloned().unwrap_or_default())))
    }

    fn instantiate(&self, access: &Arc<TasksAccess>, cx: &TaskContext<'_>) -> TasksTask {
        TasksTask {
            access: access.clone(),
            caller: self.caller.clone(),
            calls_made: 0,
            chain: cx.chain(),
            task: cx.task().clone(),
            counters: cx.counters(),
        }
    }
}

/// An agent's grant and its rate bucket, shared by all its tasks.
pub struct TasksAccess {
    grant: TasksGrant,
    bucket: Mutex<(f64, Instant)>,
}

impl TasksAccess {
    fn new(grant: &TasksGrant) -> TasksAccess {
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

/// Links `call`, sizing the agent name and the input before either is
/// decoded: the name against the longest agent name, the input against the
/// callee's `max_input_bytes` and, while the callee runs, against the
/// caller's memory limit (the host holds it for the caller).
fn link_checked(interface: &Interface, l: &mut Linker<TaskData>) -> wasmtime::Result<()> {
    let mut i = l.instance(&interface.qualified())?;
    i.func_wrap_async("call", |mut store: StoreContextMut<'_, TaskData>, (agent, input): (GuestStr, GuestStr)| {
        Box::new(async move {
            store.data().state_ref::<TasksTask>().counters.add(CALLS, 1);
            let result = match lift_call(&mut store, &agent, &input)? {
                Ok((callee, input, held)) => {
                    let tasks = store.data_mut().state::<TasksTask>();
                    let result = tasks.call_agent(callee, &input).await;
                    tasks.task.release_memory(held);
                    result
                }
                Err(refusal) => Err(refusal),
            };
            let task = &store.data().state_ref::<TasksTask>().task;
            Ok((result.map_err(|(error, label)| {
                if matches!(error, CallError::Denied(_)) {
                    task.count_denial("tasks", label);
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
type Lifted = (Arc<Agent>, String, u64);

/// The call, or why not.
fn lift_call(
    store: &mut StoreContextMut<'_, TaskData>,
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
    let tasks = store.data().state_ref::<TasksTask>();
    let Some(allowed) = tasks.access.grant.callee(&name) else {
        return deny("not-allowed", format!("this agent's policy does not allow calling `{name}`"));
    };
    let Some(callee) = tasks.caller.find(&name) else {
        return Ok(Err((CallError::UnknownAgent(not_here(&name)), "unknown-agent")));
    };
    if !allowed.admits(callee.digest()) {
        return deny(
            "digest-mismatch",
            format!(
                "this agent's policy pins `{name}` to sha256:{}, but the `{name}` on this host is sha256:{}",
                allowed.sha256.unwrap_or_default(),
                callee.digest()
            ),
        );
    }
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
    if !tasks.task.try_hold_memory(held) {
        return deny(
            "memory-limit",
            format!("holding a {held}-byte input would take this task past its memory limit (memory_mib)"),
        );
    }
    let decoded = match input.decode(store.as_context()) {
        Ok(text) => text.into_owned(),
        Err(e) => {
            store.data().state_ref::<TasksTask>().task.release_memory(held);
            return Err(e);
        }
    };
    Ok(Ok((callee, decoded, held)))
}

impl TasksTask {
    /// Runs `callee` for this task once the grant's fan-out, depth and rate
    /// allow it and the callee has a free slot under its own concurrency cap
    /// (waiting for one until this task's deadline). The callee's usage and
    /// log lines join this task's report.
    async fn call_agent(&mut self, callee: Arc<Agent>, input: &str) -> Result<String, Refusal> {
        let deny = |label, msg: String| Err((CallError::Denied(msg), label));
        let access = self.access.clone();
        let grant = &access.grant;
        let name = callee.name().to_string();
        if !grant.callee(&name).is_some_and(|c| c.admits(callee.digest())) {
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
        let deadline = self.chain.deadline;
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
        let chain = CallChain { depth, max_depth: Some(max_depth), deadline };
        let Some(report) = self.caller.call(&callee, input, chain).await else {
            return Err((CallError::UnknownAgent(not_here(&name)), "unknown-agent"));
        };
        drop(slot);
        self.task.log.adopt(&name, report.logs);
        self.task.usage.callees.lock().unwrap_or_else(|e| e.into_inner()).push(crate::usage::CalleeUsage {
            agent: name.clone(),
            task_id: report.task_id,
            usage: report.usage,
        });
        report.outcome.map_err(|e| (CallError::Failed(format!("`{name}` failed: {e}")), "child-failed"))
    }
}

/// Why a call to `name` found no callee, and how to give it one.
fn not_here(name: &str) -> String {
    format!(
        "no agent `{name}` runs on this host (load it beside the caller: `chimera serve` and \
         `chimera run --config` load every agent of the config; `chimera run --agent {name}=FILE.wasm[:POLICY.toml]` one)"
    )
}
