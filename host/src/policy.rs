//! Agent policies: what an agent may import and the limits it runs under.
//!
//! A policy is a TOML file. Every section is optional; what is absent is
//! denied (capabilities) or takes a safe default (limits). Unknown keys are
//! errors, so a misspelt grant or limit can never silently do nothing.

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::PolicyError;

/// Everything a policy file says, validated.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Who the agent is.
    #[serde(default)]
    pub agent: AgentSection,
    /// Per-task limits.
    #[serde(default)]
    pub limits: Limits,
    /// The locked-down WASI baseline.
    #[serde(default)]
    pub wasi: WasiGrant,
    /// Chimera capabilities granted to the agent.
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// `[agent]`: the agent's identity.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Name used in logs, metrics and the KV default namespace. Defaults to
    /// the component file's stem.
    pub name: Option<String>,
}

/// `[limits]`: hard per-task limits, all on by default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Memory of the whole instance in MiB: all its linear memories together
    /// plus the host-side buffers held for it (kept logs, captured stdio,
    /// response bodies in flight).
    pub memory_mib: u64,
    /// CPU time spent executing wasm, in milliseconds (counted in epoch ticks).
    pub cpu_ms: u64,
    /// Wall-clock time for the whole task, host calls included, in milliseconds.
    pub timeout_ms: u64,
    /// Wasm stack in KiB. The stack is a property of the host's engine: a
    /// policy may state it, and loading fails if the host enforces another value.
    pub stack_kib: Option<u64>,
    /// Core wasm instances one component may create.
    pub instances: u32,
    /// Linear memories one component may create (all of them count
    /// together against `memory_mib`).
    pub memories: u32,
    /// Tables one component may create.
    pub tables: u32,
    /// Elements one table may grow to.
    pub table_elements: u64,
    /// Bytes of task input accepted.
    pub max_input_bytes: u64,
    /// Bytes of task output accepted.
    pub max_output_bytes: u64,
    /// Bytes of stdout and stderr kept, each; the rest is dropped and counted.
    pub stdio_bytes: u64,
    /// Host resource handles (streams, pollables) the agent may hold at once.
    pub resource_handles: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 64,
            cpu_ms: 2_000,
            timeout_ms: 10_000,
            stack_kib: None,
            instances: 32,
            memories: 2,
            tables: 4,
            table_elements: 100_000,
            max_input_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            stdio_bytes: 64 << 10,
            resource_handles: 1_000,
        }
    }
}

/// `[wasi]`: which parts of the locked-down WASI baseline are linked.
///
/// `wasi:filesystem` and `wasi:sockets` are never granted: they are refused
/// (the default) or, when a policy asks for it, linked *inert* — present so a
/// language runtime that imports them can start, with nothing behind them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WasiGrant {
    /// `wasi:cli/*` (and `wasi:io/*`): empty environment, empty stdin,
    /// stdout/stderr captured into the task's log, no terminal.
    pub cli: bool,
    /// `wasi:clocks/*`, coarsened to `clock_resolution_ms`.
    pub clocks: bool,
    /// `wasi:random/*`.
    pub random: bool,
    /// Resolution of the guest's clocks, in milliseconds (at least 1).
    pub clock_resolution_ms: u64,
    /// `wasi:filesystem/*`: `"refused"` (default) or `"inert"` — linked with
    /// no preopened directory, so every path fails inside the agent.
    pub filesystem: InertOrRefused,
    /// `wasi:sockets/*`: `"refused"` (default) or `"inert"` — linked with TCP,
    /// UDP, every socket address and every name lookup refused.
    pub sockets: InertOrRefused,
}

impl Default for WasiGrant {
    fn default() -> Self {
        WasiGrant {
            cli: true,
            clocks: true,
            random: true,
            clock_resolution_ms: 1,
            filesystem: InertOrRefused::Refused,
            sockets: InertOrRefused::Refused,
        }
    }
}

/// How a WASI interface that is never granted is treated.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InertOrRefused {
    /// Not linked: a component importing it does not load.
    #[default]
    Refused,
    /// Linked with nothing behind it: every call fails inside the agent.
    Inert,
}

/// `[capabilities.*]`: a section present means granted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// `[capabilities.logging]`
    pub logging: Option<LoggingGrant>,
    /// `[capabilities.kv]`
    pub kv: Option<KvGrant>,
    /// `[capabilities.outbound_http]`
    pub outbound_http: Option<HttpGrant>,
    /// `[capabilities.tasks]`
    pub tasks: Option<TasksGrant>,
}

/// `[capabilities.tasks]`: calling other agents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TasksGrant {
    /// Names of the agents this agent may call.
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

/// `[capabilities.logging]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingGrant {
    /// Bytes kept of one line (message and fields); longer lines are cut.
    pub max_line_bytes: u64,
    /// Bytes of log kept per task; later lines are dropped and counted.
    pub max_bytes_per_task: u64,
}

impl Default for LoggingGrant {
    fn default() -> Self {
        LoggingGrant { max_line_bytes: 4 << 10, max_bytes_per_task: 64 << 10 }
    }
}

/// `[capabilities.kv]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KvGrant {
    /// The namespace all keys live in. Defaults to the agent's name.
    pub namespace: Option<String>,
    /// Only get and list-keys are allowed.
    pub read_only: bool,
    /// Longest key, in bytes.
    pub max_key_bytes: u64,
    /// Largest value, in bytes.
    pub max_value_bytes: u64,
    /// Most keys returned by one list-keys call (a page also stops at 1 MiB
    /// of keys, or sooner if the instance's memory limit leaves less).
    pub max_page_keys: u32,
    /// Most keys the namespace may hold. Agents sharing a namespace share
    /// its contents: the quota of the agent writing applies to them.
    pub max_keys: u64,
    /// Most bytes the namespace may hold, keys and values together.
    pub max_bytes: u64,
}

impl Default for KvGrant {
    fn default() -> Self {
        KvGrant {
            namespace: None,
            read_only: false,
            max_key_bytes: 512,
            max_value_bytes: 64 << 10,
            max_page_keys: 256,
            max_keys: 10_000,
            max_bytes: 64 << 20,
        }
    }
}

/// `[capabilities.outbound_http]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpGrant {
    /// Requests per task.
    pub max_requests: u32,
    /// Largest request, in bytes: URL, header names and values, and body
    /// together (what the agent sends; at most 100 headers).
    pub max_request_bytes: u64,
    /// Largest response body, in bytes; a larger one fails with `too-large`.
    pub max_response_bytes: u64,
    /// Time for one request, connect to last byte, in milliseconds.
    pub timeout_ms: u64,
    /// The allowed URLs; nothing else is reachable.
    pub allow: Vec<HttpAllow>,
}

impl Default for HttpGrant {
    fn default() -> Self {
        HttpGrant {
            max_requests: 16,
            max_request_bytes: 1 << 20,
            max_response_bytes: 1 << 20,
            timeout_ms: 5_000,
            allow: Vec::new(),
        }
    }
}

/// `[[capabilities.outbound_http.allow]]`: one allowed URL pattern.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpAllow {
    /// `scheme://host[:port]/path-prefix`; the host may be `*.suffix`.
    pub url: String,
    /// Allowed methods (upper case); default `["GET"]`.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Allow loopback, private and link-local addresses for this URL.
    /// Without it such addresses are refused even when the host name matches.
    #[serde(default)]
    pub allow_private: bool,
}

fn default_methods() -> Vec<String> {
    vec!["GET".to_string()]
}

const MIB: u64 = 1 << 20;

impl Policy {
    /// Reads and validates a policy file.
    pub fn from_file(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError::Read { path: path.display().to_string(), reason: e.to_string() })?;
        Policy::from_toml(&text).map_err(|e| e.in_file(path))
    }

    /// Parses and validates policy TOML.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = toml::from_str(text)
            .map_err(|e| PolicyError::Syntax(e.message().to_string(), span_line(text, e.span())))?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks that every value is in a range the host can enforce.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let l = &self.limits;
        range("limits.memory_mib", l.memory_mib, 1, 16 * 1024)?;
        range("limits.cpu_ms", l.cpu_ms, 1, 24 * 3600 * 1000)?;
        range("limits.timeout_ms", l.timeout_ms, 1, 24 * 3600 * 1000)?;
        if let Some(stack) = l.stack_kib {
            range("limits.stack_kib", stack, 16, 64 * 1024)?;
        }
        range("limits.instances", l.instances.into(), 1, 10_000)?;
        range("limits.memories", l.memories.into(), 1, 10_000)?;
        range("limits.tables", l.tables.into(), 1, 10_000)?;
        range("limits.table_elements", l.table_elements, 1, 10_000_000)?;
        range("limits.max_input_bytes", l.max_input_bytes, 1, 1024 * MIB)?;
        range("limits.max_output_bytes", l.max_output_bytes, 1, 1024 * MIB)?;
        range("limits.stdio_bytes", l.stdio_bytes, 0, 64 * MIB)?;
        range("limits.resource_handles", l.resource_handles.into(), 1, 1_000_000)?;
        range("wasi.clock_resolution_ms", self.wasi.clock_resolution_ms, 1, 3_600_000)?;
        if let Some(name) = &self.agent.name {
            check_name("agent.name", name)?;
        }
        if let Some(g) = &self.capabilities.logging {
            range("capabilities.logging.max_line_bytes", g.max_line_bytes, 16, MIB)?;
            range("capabilities.logging.max_bytes_per_task", g.max_bytes_per_task, 0, 256 * MIB)?;
        }
        if let Some(g) = &self.capabilities.kv {
            if let Some(ns) = &g.namespace {
                check_name("capabilities.kv.namespace", ns)?;
            }
            range("capabilities.kv.max_key_bytes", g.max_key_bytes, 1, 64 << 10)?;
            range("capabilities.kv.max_value_bytes", g.max_value_bytes, 1, 64 * MIB)?;
            range("capabilities.kv.max_page_keys", g.max_page_keys.into(), 1, 10_000)?;
            range("capabilities.kv.max_keys", g.max_keys, 1, 100_000_000)?;
            range("capabilities.kv.max_bytes", g.max_bytes, 1, 64 * 1024 * MIB)?;
        }
        if let Some(g) = &self.capabilities.outbound_http {
            range("capabilities.outbound_http.max_requests", g.max_requests.into(), 1, 100_000)?;
            range("capabilities.outbound_http.max_request_bytes", g.max_request_bytes, 0, 1024 * MIB)?;
            range("capabilities.outbound_http.max_response_bytes", g.max_response_bytes, 1, 1024 * MIB)?;
            range("capabilities.outbound_http.timeout_ms", g.timeout_ms, 1, 3_600_000)?;
            for (i, allow) in g.allow.iter().enumerate() {
                crate::capabilities::outbound_http::UrlPattern::parse(&allow.url).map_err(|reason| {
                    PolicyError::Invalid { key: format!("capabilities.outbound_http.allow[{i}].url"), reason }
                })?;
                if allow.methods.is_empty() {
                    return Err(PolicyError::Invalid {
                        key: format!("capabilities.outbound_http.allow[{i}].methods"),
                        reason: "is empty; list at least one method such as \"GET\"".into(),
                    });
                }
                for m in &allow.methods {
                    crate::capabilities::outbound_http::parse_method(m).map_err(|reason| PolicyError::Invalid {
                        key: format!("capabilities.outbound_http.allow[{i}].methods"),
                        reason,
                    })?;
                }
            }
        }
        if let Some(g) = &self.capabilities.tasks {
            for (i, name) in g.allow.iter().enumerate() {
                check_name(&format!("capabilities.tasks.allow[{i}]"), name)?;
            }
            range("capabilities.tasks.max_fan_out", g.max_fan_out.into(), 1, 1_000)?;
            range("capabilities.tasks.max_depth", g.max_depth.into(), 1, crate::capabilities::tasks::MAX_DEPTH.into())?;
            range("capabilities.tasks.rate_per_second", g.rate_per_second.into(), 1, 100_000)?;
        }
        Ok(())
    }

    /// The KV namespace this agent is bound to, if KV is granted.
    pub fn kv_namespace(&self, agent_name: &str) -> Option<String> {
        let kv = self.capabilities.kv.as_ref()?;
        Some(kv.namespace.clone().unwrap_or_else(|| agent_name.to_string()))
    }
}

fn range(key: &str, value: u64, min: u64, max: u64) -> Result<(), PolicyError> {
    if value < min || value > max {
        return Err(PolicyError::Invalid {
            key: key.to_string(),
            reason: format!("is {value}; it must be between {min} and {max}"),
        });
    }
    Ok(())
}

/// Names used as namespaces and labels: short, plain, never path-like.
pub(crate) fn check_name(key: &str, name: &str) -> Result<(), PolicyError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(PolicyError::Invalid {
            key: key.to_string(),
            reason: format!("{name:?} is not a valid name; use 1-64 characters from a-z, A-Z, 0-9, '-', '_', '.' (not starting with '.')"),
        })
    }
}

fn span_line(text: &str, span: Option<std::ops::Range<usize>>) -> Option<usize> {
    span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_policy_grants_nothing_and_sets_limits() {
        let p = Policy::from_toml("").unwrap();
        assert!(
            p.capabilities.logging.is_none() && p.capabilities.kv.is_none() && p.capabilities.outbound_http.is_none()
        );
        assert_eq!(p.limits.memory_mib, 64);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Policy::from_toml("[limits]\nmemory_mb = 5\n").unwrap_err().to_string();
        assert!(err.contains("memory_mb"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn filesystem_and_sockets_are_refused_unless_inert_is_asked_for() {
        let p = Policy::from_toml("").unwrap();
        assert_eq!((p.wasi.filesystem, p.wasi.sockets), (InertOrRefused::Refused, InertOrRefused::Refused));
        let p = Policy::from_toml("[wasi]\nfilesystem = \"inert\"\nsockets = \"inert\"\n").unwrap();
        assert_eq!((p.wasi.filesystem, p.wasi.sockets), (InertOrRefused::Inert, InertOrRefused::Inert));
        let err = Policy::from_toml("[wasi]\nfilesystem = \"granted\"\n").unwrap_err().to_string();
        assert!(err.contains("granted") && err.contains("inert") && err.contains("refused"), "{err}");
    }

    #[test]
    fn absurd_values_are_rejected() {
        let err = Policy::from_toml("[limits]\nmemory_mib = 0\n").unwrap_err().to_string();
        assert_eq!(err, "policy key `limits.memory_mib` is 0; it must be between 1 and 16384");
        let err = Policy::from_toml("[capabilities.kv]\nnamespace = \"../other\"\n").unwrap_err().to_string();
        assert!(err.contains("capabilities.kv.namespace"), "{err}");
        let err = Policy::from_toml(
            "[capabilities.outbound_http]\n[[capabilities.outbound_http.allow]]\nurl = \"ftp://x/\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("allow[0].url") && err.contains("ftp"), "{err}");
    }
}
