//! Capabilities: what an agent may import, one unit each.
//!
//! A capability owns everything about itself: its WIT interfaces, its
//! policy section (parsed and validated, errors naming the key), its
//! decision for each import (granted, inert or refused, with the reason an
//! auditor reads), how it is added to a linker, its per-agent and per-task
//! state, and its usage counters. The host keeps capabilities in a
//! [`Registry`] and iterates it to parse policies, audit, link and report
//! usage; the built-ins (logging, kv, outbound-http, tasks and the WASI
//! baseline) register exactly as an integrator's own capability does with
//! [`HostBuilder::capability`](crate::HostBuilder::capability).
//!
//! Host functions reach their capability's task state through the store
//! data, [`TaskData::state`], keyed by the state's type.

mod context;
mod erased;
mod interface;
mod registry;

pub use crate::cpu::CpuMeter;
pub use crate::error::RegistryError;
pub use context::{CallChain, Counters, LoadContext, TaskContext, TaskHandle};
pub use interface::Interface;
pub use registry::Registry;

pub(crate) use erased::{DynCapability, ErasedAgentState, ErasedGrant};
pub(crate) use interface::ImportName;
pub(crate) use registry::Grants;

use serde::de::DeserializeOwned;
use serde::Serialize;
use wasmtime::component::Linker;

use crate::error::PolicyError;
use crate::log::LogLimits;
use crate::task_data::TaskData;

/// One capability: its interfaces, policy section, decisions, linking and
/// state. See the [module docs](self).
pub trait Capability: Send + Sync + 'static {
    /// What its policy section holds, deserialized from TOML (unknown keys
    /// should be errors: `#[serde(deny_unknown_fields)]`).
    type Grant: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// Built once per loaded agent that imports it (clients, handles).
    type AgentState: Send + Sync + 'static;
    /// Built for every task of such an agent, kept in the task's store
    /// data; host functions reach it with [`TaskData::state`]. Each
    /// capability's task state must be a type of its own.
    type TaskState: Send + 'static;

    /// A short name for audit output, metrics and usage, e.g. `kv`.
    fn name(&self) -> &'static str;

    /// Where its grant lives in a policy, as a dotted TOML path:
    /// `capabilities.kv` is the `[capabilities.kv]` section.
    fn section(&self) -> &'static str;

    /// The WIT interfaces it provides. No two capabilities of a registry
    /// may provide the same one.
    fn interfaces(&self) -> &[Interface];

    /// The name an import of `interface` is shown under in audits and
    /// metrics; the capability's name unless it groups its interfaces.
    fn audit_name(&self, _interface: &Interface) -> &'static str {
        self.name()
    }

    /// Names of its usage counters (see [`Counters`]).
    fn counters(&self) -> &'static [&'static str] {
        &[]
    }

    /// The grant of a policy without its section; `None` (the default)
    /// means an absent section grants nothing.
    fn absent_grant(&self) -> Option<Self::Grant> {
        None
    }

    /// Checks the values of a parsed grant; errors name the key in full
    /// (e.g. `capabilities.kv.max_keys`).
    fn validate(&self, _grant: &Self::Grant) -> Result<(), PolicyError> {
        Ok(())
    }

    /// Judges an import of one of its interfaces under the policy's grant.
    fn decide(&self, interface: &Interface, grant: Option<&Self::Grant>) -> Decision;

    /// Lines an auditor reads about the grant (beyond each import's detail).
    fn describe(&self, _grant: &Self::Grant, _agent: &str) -> Vec<String> {
        Vec::new()
    }

    /// What is risky or odd about a grant, for `chimera audit` (and
    /// `--deny-warnings`). Limits far above the section's defaults are
    /// found by the host for every capability; this is for the rest.
    fn warnings(&self, _grant: &Self::Grant) -> Vec<AuditWarning> {
        Vec::new()
    }

    /// How a grant changed, in capability terms (`loses kv write`), for
    /// `chimera audit --diff`. The default names each changed field.
    fn diff(&self, old: &Self::Grant, new: &Self::Grant) -> Vec<String> {
        crate::audit::diff_fields(self.name(), &to_json(old), &to_json(new))
    }

    /// Adjusts agent-wide settings from the grant (e.g. how much log is kept).
    fn configure(&self, _grant: &Self::Grant, _settings: &mut AgentSettings) {}

    /// Adds `interface` to the linker. Called only for interfaces
    /// [`decide`](Self::decide) granted or made inert, once each.
    fn link(&self, interface: &Interface, linker: &mut Linker<TaskData>) -> wasmtime::Result<()>;

    /// Builds the agent's state when an agent linking any of its
    /// interfaces is loaded; an error refuses the agent with that reason.
    fn load(&self, grant: Option<&Self::Grant>, cx: &LoadContext<'_>) -> Result<Self::AgentState, String>;

    /// Builds the state of one task.
    fn instantiate(&self, agent: &Self::AgentState, cx: &TaskContext<'_>) -> Self::TaskState;

    /// Called after each call into the instance returns (a fresh task's one
    /// call, or each call of a warm instance).
    fn end_call(&self, _task: &mut Self::TaskState) {}
}

/// A grant as JSON, for comparing fields (`Null` if it does not serialize).
pub(crate) fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// Something in a policy an auditor should look at before signing off:
/// risky (private addresses allowed) or odd (a rule that can never match).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuditWarning {
    /// A stable code: `allow-private`, `metadata-address`,
    /// `private-wildcard`, `broad-wildcard`, `network-range`,
    /// `never-matches`, `unused-grant`, `high-limit`, `shared-namespace`,
    /// `unknown-callee`, `unpinned-callee`, `large-fan-out`, `secret-in-clear`, `secret-wildcard`.
    pub code: &'static str,
    /// The policy key (or config entry) it is about, e.g.
    /// `capabilities.outbound_http.allow[0]`.
    pub key: String,
    /// What is risky and what to do, in plain words.
    pub message: String,
}

impl AuditWarning {
    /// A warning about `key`.
    pub fn new(code: &'static str, key: impl Into<String>, message: impl Into<String>) -> AuditWarning {
        AuditWarning { code, key: key.into(), message: message.into() }
    }
}

/// A capability's answer for one import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Linked; what the grant gives.
    Granted(String),
    /// Linked with nothing behind it; what the agent's calls get.
    Inert(String),
    /// Not linked; how a policy would grant it, or why none can.
    Refused(String),
}

/// Settings of a loaded agent that capabilities may adjust in
/// [`Capability::configure`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentSettings {
    /// How much of each task's log is kept.
    pub log: LogLimits,
}

/// How the host treats one import of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Linked: the policy grants it.
    Granted,
    /// Linked with nothing behind it, because the policy asks for that: the
    /// agent loads, and every call it makes through the interface fails.
    Inert,
    /// Not linked: loading the agent fails.
    Refused,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Granted => "granted",
            Verdict::Inert => "inert",
            Verdict::Refused => "refused",
        })
    }
}

/// One import of a component, judged against a policy.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ImportDecision {
    /// The full WIT name, e.g. `chimera:agent/kv@0.1.0`.
    pub import: String,
    /// The capability that provides it, or `unknown`.
    pub capability: &'static str,
    /// The policy section that grants it, if any can.
    pub policy_section: Option<String>,
    /// Granted, inert or refused.
    pub verdict: Verdict,
    /// What the grant gives, what an inert interface answers, or why it is refused.
    pub detail: String,
    /// The capability (index in the registry) and interface that serve it, when linked.
    #[serde(skip)]
    pub(crate) link: Option<(usize, Interface)>,
}

/// What a policy grants through one capability, for an auditor.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct GrantAudit {
    /// The capability's name.
    pub capability: &'static str,
    /// Its policy section, e.g. `capabilities.kv`.
    pub section: &'static str,
    /// Whether the policy grants it (the section is present, or the
    /// capability grants by default).
    pub granted: bool,
    /// The grant with every default filled in.
    pub grant: Option<serde_json::Value>,
    /// What it means, in lines an auditor reads.
    pub summary: Vec<String>,
}
