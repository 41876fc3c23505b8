//! Errors the host reports: loading (policy, component, imports) and tasks.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy {path}: {reason}")]
    Read { path: String, reason: String },
    /// The TOML is malformed or names an unknown key.
    #[error("policy is not valid TOML{}: {}", .1.map(|l| format!(" (line {l})")).unwrap_or_default(), .0)]
    Syntax(String, Option<usize>),
    /// A value is out of range or malformed.
    #[error("policy key `{key}` {reason}")]
    Invalid { key: String, reason: String },
    /// A capability's section does not parse (an unknown key, a wrong type).
    #[error("policy section [{section}]{}: {reason}", .line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Section { section: String, reason: String, line: Option<usize> },
    /// The same, with the file it came from.
    #[error("{path}: {inner}")]
    InFile { path: String, inner: Box<PolicyError> },
}

impl PolicyError {
    pub(crate) fn in_file(self, path: &Path) -> PolicyError {
        PolicyError::InFile { path: path.display().to_string(), inner: Box::new(self) }
    }
}

/// One import the policy does not grant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ungranted {
    /// The full WIT name, e.g. `wasi:filesystem/types@0.2.6`.
    pub import: String,
    /// Why it is refused and what would grant it.
    pub reason: String,
}

/// Why an agent could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The policy is unusable.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The component file could not be read.
    #[error("cannot read component {path}: {reason}")]
    Read { path: String, reason: String },
    /// The bytes are not a valid WebAssembly component.
    #[error("{what} is not a valid WebAssembly component: {reason}. Build agents with `cargo build --target wasm32-wasip2 --release` (or wrap a core module with `chimera componentize`)")]
    InvalidComponent { what: String, reason: String },
    /// The component imports something its policy does not grant.
    #[error("agent `{agent}` imports {} interface(s) its policy does not grant:\n{}", .ungranted.len(), list_ungranted(.ungranted))]
    Ungranted { agent: String, ungranted: Vec<Ungranted> },
    /// The component does not export the `run` entry point of `chimera:agent/agent`.
    #[error("agent `{agent}` does not export the entry point `run: func(input: string) -> result<string, agent-error>` of world chimera:agent/agent: {reason}")]
    MissingEntryPoint { agent: String, reason: String },
    /// The policy asks for something this host cannot give.
    #[error("agent `{agent}`: {reason}")]
    Unsupported { agent: String, reason: String },
    /// The component would create more core instances, memories or tables
    /// than its policy allows (counted before it runs).
    #[error("agent `{agent}` exceeds its policy: {detail}, more than {key} = {limit} allows")]
    OverLimit { agent: String, detail: String, key: &'static str, limit: u64 },
    /// Loading it would cost more than the host's load budget allows.
    #[error("{what} exceeds the load budget: {detail} (limit `{key}`; raise it in HostConfig::load_budget or the `[load]` section of chimera.toml if the component is trusted)")]
    Budget { what: String, key: &'static str, detail: String },
    /// The compile worker could not be run.
    #[error("cannot compile {what}: {reason}")]
    Compiler { what: String, reason: String },
    /// Linking failed after the grant check passed (a type mismatch between
    /// the component's import and the host's interface version).
    #[error("agent `{agent}` cannot be linked: {reason}")]
    Link { agent: String, reason: String },
}

fn list_ungranted(list: &[Ungranted]) -> String {
    list.iter().map(|u| format!("  - {}: {}", u.import, u.reason)).collect::<Vec<_>>().join("\n")
}

/// Why the host itself could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The engine configuration was refused (e.g. the pool does not fit in
    /// the address space).
    #[error("cannot create the wasm engine: {0}")]
    Engine(String),
    /// The data directory or store could not be opened.
    #[error("cannot open the data directory {path}: {reason}")]
    DataDir { path: String, reason: String },
    /// A store file in the data directory is damaged or cannot be opened
    /// (the message names the file and what to do).
    #[error("{0}")]
    StoreFile(String),
    /// Bad host configuration.
    #[error("invalid host configuration: {0}")]
    Config(String),
    /// A capability could not be registered.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// How a task ended when it did not succeed. Every variant names the limit
/// or rule involved; none carries a raw wasmtime backtrace.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum TaskError {
    /// Linear memory would have grown past the policy's limit.
    #[error("memory limit exceeded: the instance asked for {requested_bytes} bytes of linear memory; the limit is {limit_bytes} ([limits] memory_mib)")]
    MemoryLimit { limit_bytes: u64, requested_bytes: u64 },
    /// A table would have grown past the limit.
    #[error(
        "table limit exceeded: a table asked for {requested} elements; the limit is {limit} ([limits] table_elements)"
    )]
    TableLimit { limit: u64, requested: u64 },
    /// The agent holds more host resource handles than allowed.
    #[error(
        "resource handle limit exceeded: the agent holds more than {limit} host handles ([limits] resource_handles)"
    )]
    HandleLimit { limit: u64 },
    /// The agent spent its CPU budget.
    #[error(
        "CPU limit exceeded: the task used more than {limit_ms} ms of CPU in wasm and host calls ([limits] cpu_ms)"
    )]
    CpuLimit { limit_ms: u64 },
    /// The task took longer than its wall-clock timeout.
    #[error("timed out: the task ran longer than {limit_ms} ms ([limits] timeout_ms)")]
    Timeout { limit_ms: u64 },
    /// The wasm stack overflowed.
    #[error("stack overflow: the agent exceeded the {limit_bytes}-byte wasm stack")]
    StackOverflow { limit_bytes: u64 },
    /// The input is larger than the policy accepts.
    #[error("input too large: {size} bytes; the limit is {limit} ([limits] max_input_bytes)")]
    InputTooLarge { size: u64, limit: u64 },
    /// The output is larger than the policy accepts.
    #[error("output too large: {size} bytes; the limit is {limit} ([limits] max_output_bytes)")]
    OutputTooLarge { size: u64, limit: u64 },
    /// One host call handed the host more argument bytes than it may lift
    /// (strings and lists it points at, counted before any copy).
    #[error(
        "a host call's arguments exceed {limit_bytes} bytes, what one call may hand the host ([limits] memory_mib)"
    )]
    HostCallTooLarge { limit_bytes: u64 },
    /// The agent called `wasi:cli/exit` instead of returning a result.
    #[error("the agent exited with status {status} (wasi:cli/exit) instead of returning a result")]
    Exited { status: i32 },
    /// The agent trapped (a wasm trap, a panic, or a host-detected violation).
    #[error("the agent trapped: {reason}")]
    Trap { reason: String },
    /// Every instance slot of the host's pool was in use; a later attempt may succeed.
    #[error("cannot instantiate the agent: all {slots} instance slots of this host are in use; retry later")]
    PoolExhausted { slots: u32 },
    /// The instance could not be created: its start function trapped, or a
    /// warm instance failed earlier. Running it again gives the same result.
    #[error("cannot instantiate the agent: {reason}")]
    Instantiate { reason: String },
    /// The task's deadline passed before it finished.
    #[error("deadline exceeded: the task did not finish before its deadline")]
    DeadlineExceeded,
    /// The task was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The agent returned an error of its own.
    #[error("the agent failed: {message}")]
    Agent { message: String, retryable: bool },
}

impl TaskError {
    /// A short, fixed label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            TaskError::MemoryLimit { .. } => "memory-limit",
            TaskError::TableLimit { .. } => "table-limit",
            TaskError::HandleLimit { .. } => "handle-limit",
            TaskError::CpuLimit { .. } => "cpu-limit",
            TaskError::Timeout { .. } => "timeout",
            TaskError::StackOverflow { .. } => "stack-overflow",
            TaskError::InputTooLarge { .. } => "input-too-large",
            TaskError::OutputTooLarge { .. } => "output-too-large",
            TaskError::Exited { .. } => "exit",
            TaskError::HostCallTooLarge { .. } => "host-call-too-large",
            TaskError::Trap { .. } => "trap",
            TaskError::PoolExhausted { .. } => "pool-exhausted",
            TaskError::Instantiate { .. } => "instantiate",
            TaskError::DeadlineExceeded => "deadline-exceeded",
            TaskError::Cancelled => "cancelled",
            TaskError::Agent { .. } => "agent-error",
        }
    }

    /// The limit this error is a hit of, if it is one (a fixed label).
    pub fn limit(&self) -> Option<&'static str> {
        Some(match self {
            TaskError::MemoryLimit { .. } => "memory",
            TaskError::TableLimit { .. } => "table",
            TaskError::HandleLimit { .. } => "handles",
            TaskError::CpuLimit { .. } => "cpu",
            TaskError::Timeout { .. } => "timeout",
            TaskError::StackOverflow { .. } => "stack",
            TaskError::InputTooLarge { .. } => "input",
            TaskError::OutputTooLarge { .. } => "output",
            TaskError::HostCallTooLarge { .. } => "memory",
            _ => return None,
        })
    }

    /// Whether running the task again may succeed. Limit hits, traps and
    /// denials never are.
    pub fn is_retryable(&self) -> bool {
        matches!(self, TaskError::Agent { retryable: true, .. } | TaskError::PoolExhausted { .. })
    }
}

/// Why a capability cannot join a registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Another capability already has this name, section, interface or task-state type.
    #[error("capability `{capability}` cannot be registered: {what} is already taken by `{by}`")]
    Taken { capability: &'static str, what: String, by: &'static str },
    /// The policy section is not one a policy file can hold.
    #[error("capability `{capability}` cannot be registered: its section `{section}` must be `capabilities.<name>` (one key, no dots)")]
    BadSection { capability: &'static str, section: &'static str },
}
