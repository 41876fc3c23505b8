//! `chimera:agent/config`: an agent's own read-only settings, written in its
//! policy under `[capabilities.config.values]`.
//!
//! Reading them needs no grant (a policy without the section gives no
//! settings): they come from the policy the agent runs under and reach
//! nothing outside it. They are bounded in the policy (keys, sizes, total),
//! so a call costs the host at most one copy of 64 KiB; a key longer than
//! any setting's is answered without being read.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::Linker;
use wasmtime::StoreContextMut;

use crate::capability::{AuditWarning, Capability, Counters, Decision, Interface, LoadContext, TaskContext};
use crate::error::PolicyError;
use crate::guest_args::GuestStr;
use crate::policy::PolicySection;
use crate::task_data::TaskData;

/// `[capabilities.config]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigGrant {
    /// The settings, by key.
    pub values: BTreeMap<String, String>,
}

impl PolicySection for ConfigGrant {
    const SECTION: &'static str = "capabilities.config";
}

/// Most settings one policy may hold.
pub const MAX_SETTINGS: usize = 64;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 128;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 16 << 10;
/// Keys and values together, in bytes.
pub const MAX_TOTAL_BYTES: usize = 64 << 10;

/// Words in a key that suggest a secret was written where settings go.
const SECRET_WORDS: &[&str] = &["secret", "password", "passwd", "token", "api_key", "apikey", "api-key", "credential"];

const INTERFACES: &[Interface] = &[Interface::new("chimera:agent", "config", "0.1.0")];

const CALLS: usize = 0;

/// The `config` capability.
#[derive(Debug, Default)]
pub struct AgentConfig;

/// `config` as one task sees it.
pub struct ConfigTask {
    values: Arc<ConfigGrant>,
    counters: Counters,
}

impl Capability for AgentConfig {
    type Grant = ConfigGrant;
    type AgentState = Arc<ConfigGrant>;
    type TaskState = ConfigTask;

    fn name(&self) -> &'static str {
        "config"
    }

    fn section(&self) -> &'static str {
        ConfigGrant::SECTION
    }

    fn interfaces(&self) -> &[Interface] {
        INTERFACES
    }

    fn counters(&self) -> &'static [&'static str] {
        &["calls"]
    }

    fn absent_grant(&self) -> Option<ConfigGrant> {
        Some(ConfigGrant::default())
    }

    fn validate(&self, g: &ConfigGrant) -> Result<(), PolicyError> {
        let invalid = |key: String, reason: String| PolicyError::Invalid { key, reason };
        if g.values.len() > MAX_SETTINGS {
            return Err(invalid(
                "capabilities.config.values".into(),
                format!("has {} settings; at most {MAX_SETTINGS}", g.values.len()),
            ));
        }
        let mut total = 0;
        for (key, value) in &g.values {
            let ok = !key.is_empty()
                && key.len() <= MAX_KEY_BYTES
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return Err(invalid(
                    "capabilities.config.values".into(),
                    format!("{key:?} is not a valid key; use 1-{MAX_KEY_BYTES} characters from a-z, A-Z, 0-9, '-', '_', '.'"),
                ));
            }
            if value.len() > MAX_VALUE_BYTES {
                return Err(invalid(
                    format!("capabilities.config.values.{key}"),
                    format!("is {} bytes; a setting is at most {MAX_VALUE_BYTES}", value.len()),
                ));
            }
            total += key.len() + value.len();
        }
        if total > MAX_TOTAL_BYTES {
            return Err(invalid(
                "capabilities.config.values".into(),
                format!("holds {total} bytes; the settings together are at most {MAX_TOTAL_BYTES}"),
            ));
        }
        Ok(())
    }

    fn decide(&self, _: &Interface, grant: Option<&ConfigGrant>) -> Decision {
        match grant.map_or(0, |g| g.values.len()) {
            0 => Decision::Granted("no settings (add [capabilities.config.values] to the policy)".into()),
            n => Decision::Granted(format!("{n} read-only setting(s) from the policy")),
        }
    }

    fn describe(&self, g: &ConfigGrant, _agent: &str) -> Vec<String> {
        if g.values.is_empty() {
            return Vec::new();
        }
        let mut lines = vec![format!("config: {} read-only setting(s)", g.values.len())];
        lines.extend(g.values.iter().map(|(k, v)| format!("  {k} = {}", shown(v))));
        lines
    }

    fn warnings(&self, g: &ConfigGrant) -> Vec<AuditWarning> {
        g.values
            .keys()
            .filter(|k| SECRET_WORDS.iter().any(|w| k.to_ascii_lowercase().contains(w)))
            .map(|k| {
                AuditWarning::new(
                    "secret-in-config",
                    format!("capabilities.config.values.{k}"),
                    format!(
                        "`{k}` looks like a secret: settings are read by the agent and shown in audits; keep secrets \
                         in the host config's [secrets] and add them with an outbound_http rule's secret_headers"
                    ),
                )
            })
            .collect()
    }

    fn link(&self, interface: &Interface, linker: &mut Linker<TaskData>) -> wasmtime::Result<()> {
        let mut i = linker.instance(&interface.qualified())?;
        i.func_wrap("get", |store: StoreContextMut<'_, TaskData>, (key,): (GuestStr,)| {
            let task = store.data().state_ref::<ConfigTask>();
            task.counters.add(CALLS, 1);
            // No setting has a longer key: answered without reading it.
            if key.min_len() > MAX_KEY_BYTES {
                return Ok((None,));
            }
            let key = key.decode(&store)?;
            Ok((task.values.values.get(key.as_ref()).cloned(),))
        })?;
        i.func_wrap("get-all", |store: StoreContextMut<'_, TaskData>, (): ()| {
            let task = store.data().state_ref::<ConfigTask>();
            task.counters.add(CALLS, 1);
            let all: Vec<(String, String)> = task.values.values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            Ok((all,))
        })?;
        Ok(())
    }

    fn load(&self, grant: Option<&ConfigGrant>, _: &LoadContext<'_>) -> Result<Arc<ConfigGrant>, String> {
        Ok(Arc::new(grant.cloned().unwrap_or_default()))
    }

    fn instantiate(&self, values: &Arc<ConfigGrant>, cx: &TaskContext<'_>) -> ConfigTask {
        ConfigTask { values: values.clone(), counters: cx.counters() }
    }
}

/// A value for an audit line: quoted, cut at 80 bytes.
fn shown(value: &str) -> String {
    let mut budget = 80;
    format!("{:?}", crate::log::escape_capped(value, &mut budget))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    #[test]
    fn settings_are_bounded_in_the_policy() {
        let ok = Policy::from_toml("[capabilities.config.values]\nmodel = \"small\"\n\"region.eu\" = \"x\"\n").unwrap();
        let grant: ConfigGrant = ok.grant().unwrap().unwrap();
        assert_eq!(grant.values["model"], "small");
        let err = |text: &str| Policy::from_toml(text).unwrap_err().to_string();
        assert!(err("[capabilities.config.values]\n\"a b\" = \"x\"\n").contains("\"a b\" is not a valid key"));
        let long = format!("[capabilities.config.values]\nk = \"{}\"\n", "x".repeat(MAX_VALUE_BYTES + 1));
        assert!(err(&long).contains("capabilities.config.values.k"), "{}", err(&long));
        let many: String = (0..=MAX_SETTINGS).map(|i| format!("k{i} = \"v\"\n")).collect();
        assert!(err(&format!("[capabilities.config.values]\n{many}")).contains("at most 64"));
        let total: String = (0..5).map(|i| format!("k{i} = \"{}\"\n", "v".repeat(MAX_VALUE_BYTES))).collect();
        assert!(err(&format!("[capabilities.config.values]\n{total}")).contains("together are at most 65536"));
        assert!(err("[capabilities.config]\nsettings = {}\n").contains("unknown field"));
    }

    #[test]
    fn a_key_that_looks_secret_is_warned_of() {
        let g = ConfigGrant {
            values: BTreeMap::from([("OPENAI_API_KEY".into(), "x".into()), ("model".into(), "m".into())]),
        };
        let w = AgentConfig.warnings(&g);
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].code, w[0].key.as_str()), ("secret-in-config", "capabilities.config.values.OPENAI_API_KEY"));
    }
}
