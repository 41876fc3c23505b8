//! Agent policies: what an agent may import and the limits it runs under.
//!
//! A policy is a TOML file. `[agent]` and `[limits]` belong to the host;
//! every other section belongs to one capability (`[wasi]`,
//! `[capabilities.kv]`, ...), which parses and validates it: a capability
//! section present means granted, absent means refused. Limits take safe
//! defaults. Unknown keys and sections are errors, so a misspelt grant or
//! limit can never silently do nothing.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use crate::capability::{Grants, Registry};
use crate::error::PolicyError;
pub use crate::limits::Limits;

/// A policy: the agent's identity, its limits, and the capability sections
/// as written (each validated by its capability when parsed, and again by
/// the host that loads an agent under it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Who the agent is.
    pub agent: AgentSection,
    /// Per-task limits.
    pub limits: Limits,
    /// Capability sections by dotted path (`wasi`, `capabilities.kv`).
    sections: BTreeMap<String, toml::Value>,
}

/// A capability's policy section as a Rust type, for
/// [`Policy::grant`] and [`PolicyBuilder::grant`].
pub trait PolicySection: Serialize + DeserializeOwned {
    /// Its dotted path, e.g. `capabilities.kv`.
    const SECTION: &'static str;
}

/// The file's shape: host sections typed, capability sections raw.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    agent: AgentSection,
    #[serde(default)]
    limits: Limits,
    wasi: Option<toml::Value>,
    #[serde(default)]
    capabilities: toml::Table,
}

impl Serialize for Policy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            agent: &'a AgentSection,
            limits: &'a Limits,
            #[serde(skip_serializing_if = "Option::is_none")]
            wasi: Option<&'a toml::Value>,
            capabilities: BTreeMap<&'a str, &'a toml::Value>,
        }
        let capabilities =
            self.sections.iter().filter_map(|(k, v)| Some((k.strip_prefix("capabilities.")?, v))).collect();
        Shown { agent: &self.agent, limits: &self.limits, wasi: self.sections.get("wasi"), capabilities }.serialize(s)
    }
}

/// `[agent]`: the agent's identity.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Name used in logs, metrics and the KV default namespace. Defaults to
    /// the component file's stem.
    pub name: Option<String>,
}

const MIB: u64 = 1 << 20;

impl Policy {
    /// Reads and validates a policy file against the built-in capabilities.
    pub fn from_file(path: &Path) -> Result<Policy, PolicyError> {
        Policy::from_file_with(path, Registry::builtins())
    }

    /// Reads and validates a policy file against `registry` (a host's
    /// [`Host::capabilities`](crate::Host::capabilities), custom ones included).
    pub fn from_file_with(path: &Path, registry: &Registry) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError::Read { path: path.display().to_string(), reason: e.to_string() })?;
        Policy::from_toml_with(&text, registry).map_err(|e| e.in_file(path))
    }

    /// Parses and validates policy TOML against the built-in capabilities.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        Policy::from_toml_with(text, Registry::builtins())
    }

    /// Parses and validates policy TOML against `registry`.
    pub fn from_toml_with(text: &str, registry: &Registry) -> Result<Policy, PolicyError> {
        let file: PolicyFile = toml::from_str(text)
            .map_err(|e| PolicyError::Syntax(e.message().to_string(), span_line(text, e.span())))?;
        let mut sections = BTreeMap::new();
        if let Some(wasi) = file.wasi {
            sections.insert("wasi".to_string(), wasi);
        }
        for (key, value) in file.capabilities {
            sections.insert(format!("capabilities.{key}"), value);
        }
        let policy = Policy { agent: file.agent, limits: file.limits, sections };
        policy.validate_core()?;
        registry.parse(&policy.sections, Some(text))?;
        Ok(policy)
    }

    /// A policy built in code: nothing granted, default limits.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder { policy: Policy::default() }
    }

    /// Checks every value against the built-in capabilities.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.grants(Registry::builtins()).map(|_| ())
    }

    /// Checks every value and parses each capability's grant.
    pub(crate) fn grants(&self, registry: &Registry) -> Result<Grants, PolicyError> {
        self.validate_core()?;
        registry.parse(&self.sections, None)
    }

    /// A capability section as written, by dotted path.
    pub fn section(&self, path: &str) -> Option<&toml::Value> {
        self.sections.get(path)
    }

    /// The dotted paths of the capability sections present.
    pub fn section_paths(&self) -> impl Iterator<Item = &str> {
        self.sections.keys().map(String::as_str)
    }

    /// A capability section as its Rust type (`None` when absent).
    pub fn grant<G: PolicySection>(&self) -> Result<Option<G>, PolicyError> {
        self.sections
            .get(G::SECTION)
            .map(|v| {
                v.clone().try_into::<G>().map_err(|e| PolicyError::Section {
                    section: G::SECTION.to_string(),
                    reason: e.message().to_string(),
                    line: None,
                })
            })
            .transpose()
    }

    fn validate_core(&self) -> Result<(), PolicyError> {
        let l = &self.limits;
        check_range("limits.memory_mib", l.memory_mib, 1, 16 * 1024)?;
        check_range("limits.cpu_ms", l.cpu_ms, 1, 24 * 3600 * 1000)?;
        check_range("limits.timeout_ms", l.timeout_ms, 1, 24 * 3600 * 1000)?;
        if let Some(stack) = l.stack_kib {
            check_range("limits.stack_kib", stack, 16, 64 * 1024)?;
        }
        check_range("limits.instances", l.instances.into(), 1, 10_000)?;
        check_range("limits.memories", l.memories.into(), 1, 10_000)?;
        check_range("limits.tables", l.tables.into(), 1, 10_000)?;
        check_range("limits.table_elements", l.table_elements, 1, 10_000_000)?;
        check_range("limits.max_input_bytes", l.max_input_bytes, 1, 1024 * MIB)?;
        check_range("limits.max_output_bytes", l.max_output_bytes, 1, 1024 * MIB)?;
        check_range("limits.stdio_bytes", l.stdio_bytes, 0, 64 * MIB)?;
        check_range("limits.resource_handles", l.resource_handles.into(), 1, 1_000_000)?;
        if let Some(name) = &self.agent.name {
            check_name("agent.name", name)?;
        }
        Ok(())
    }
}

/// Builds a [`Policy`] in code.
///
/// ```
/// use chimera_host::{Policy, capabilities::kv::KvGrant};
/// let policy = Policy::builder()
///     .name("counter")
///     .limits(|l| l.memory_mib = 32)
///     .grant(&KvGrant { namespace: Some("counters".into()), ..KvGrant::default() })
///     .build()
///     .unwrap();
/// assert_eq!(policy.limits.memory_mib, 32);
/// ```
#[derive(Debug, Clone)]
pub struct PolicyBuilder {
    policy: Policy,
}

impl PolicyBuilder {
    /// The agent's name.
    pub fn name(mut self, name: &str) -> Self {
        self.policy.agent.name = Some(name.to_string());
        self
    }

    /// Changes the limits.
    pub fn limits(mut self, change: impl FnOnce(&mut Limits)) -> Self {
        change(&mut self.policy.limits);
        self
    }

    /// Grants a capability with its section's values.
    pub fn grant<G: PolicySection>(mut self, grant: &G) -> Self {
        let value = toml::Value::try_from(grant).unwrap_or_else(|_| toml::Value::Table(Default::default()));
        self.policy.sections.insert(G::SECTION.to_string(), value);
        self
    }

    /// Sets a section by dotted path, as TOML (e.g. a custom capability's).
    pub fn section(mut self, path: &str, value: toml::Value) -> Self {
        self.policy.sections.insert(path.to_string(), value);
        self
    }

    /// The policy, with its limits and name checked; its capability
    /// sections are checked by the host that loads an agent under it
    /// (which knows its custom capabilities), or by [`Policy::validate`].
    pub fn build(self) -> Result<Policy, PolicyError> {
        self.policy.validate_core()?;
        Ok(self.policy)
    }
}

/// Checks that `value` of the policy key `key` is within `min..=max`.
pub fn check_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), PolicyError> {
    if value < min || value > max {
        return Err(PolicyError::Invalid {
            key: key.to_string(),
            reason: format!("is {value}; it must be between {min} and {max}"),
        });
    }
    Ok(())
}

/// Checks a name used as a namespace or label: short, plain, never path-like.
pub fn check_name(key: &str, name: &str) -> Result<(), PolicyError> {
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
    use crate::capabilities::kv::KvGrant;
    use crate::capabilities::wasi::{InertOrRefused, WasiGrant};

    #[test]
    fn empty_policy_grants_nothing_and_sets_limits() {
        let p = Policy::from_toml("").unwrap();
        assert_eq!(p.section_paths().count(), 0);
        assert_eq!(p.grant::<KvGrant>().unwrap(), None);
        assert_eq!(p.limits.memory_mib, 64);
    }

    #[test]
    fn unknown_keys_and_sections_are_errors() {
        let err = Policy::from_toml("[limits]\nmemory_mb = 5\n").unwrap_err().to_string();
        assert!(err.contains("memory_mb"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let err = Policy::from_toml("[limits]\n[capabilities.kv]\nmax_keyz = 1\n").unwrap_err().to_string();
        assert!(err.starts_with("policy section [capabilities.kv] (line 2): unknown field `max_keyz`"), "{err}");
        let err = Policy::from_toml("[capabilities.kvv]\n").unwrap_err().to_string();
        assert!(err.starts_with("policy key `capabilities.kvv` is not a section of any capability"), "{err}");
        assert!(err.contains("[capabilities.kv]"), "{err}");
    }

    #[test]
    fn filesystem_and_sockets_are_refused_unless_inert_is_asked_for() {
        let p = Policy::from_toml("").unwrap();
        assert_eq!(p.grant::<WasiGrant>().unwrap(), None);
        let p = Policy::from_toml("[wasi]\nfilesystem = \"inert\"\nsockets = \"inert\"\n").unwrap();
        let w = p.grant::<WasiGrant>().unwrap().unwrap();
        assert_eq!((w.filesystem, w.sockets), (InertOrRefused::Inert, InertOrRefused::Inert));
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

    #[test]
    fn a_built_policy_equals_the_parsed_one() {
        let built = Policy::builder()
            .name("counter")
            .limits(|l| l.memory_mib = 32)
            .grant(&KvGrant { namespace: Some("counters".into()), ..KvGrant::default() })
            .build()
            .unwrap();
        built.validate().unwrap();
        let kv = built.grant::<KvGrant>().unwrap().unwrap();
        assert_eq!((kv.namespace.as_deref(), kv.max_keys), (Some("counters"), 10_000));
        let parsed = Policy::from_toml(&toml::to_string(&built).unwrap()).unwrap();
        assert_eq!(parsed.grant::<KvGrant>().unwrap(), Some(kv));
        assert_eq!((parsed.agent, parsed.limits), (built.agent.clone(), built.limits.clone()));
        let err = Policy::builder().limits(|l| l.cpu_ms = 0).build().unwrap_err().to_string();
        assert_eq!(err, "policy key `limits.cpu_ms` is 0; it must be between 1 and 86400000");
    }
}
