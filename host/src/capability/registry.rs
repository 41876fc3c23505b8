//! The capabilities a host has, in registration order, and what the host
//! does by iterating them: parse a policy's sections, judge each import.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Capability, Decision, DynCapability, ErasedGrant, ImportDecision, ImportName, Interface, Verdict};
use crate::error::{PolicyError, RegistryError};

/// A set of capabilities. [`Registry::builtins`] has the host's own; a
/// [`HostBuilder`](crate::HostBuilder) adds an integrator's.
#[derive(Clone, Default)]
pub struct Registry {
    caps: Vec<Arc<dyn DynCapability>>,
}

/// Each capability's parsed grant (by registry index), `None` where the
/// policy grants nothing.
#[derive(Clone, Default)]
pub(crate) struct Grants(pub Vec<Option<ErasedGrant>>);

impl Grants {
    pub fn get(&self, index: usize) -> Option<&ErasedGrant> {
        self.0.get(index).and_then(Option::as_ref)
    }
}

impl Registry {
    /// Adds a capability. Its name, policy section, interfaces and task
    /// state type must be its own.
    pub fn register<C: Capability>(&mut self, capability: C) -> Result<&mut Registry, RegistryError> {
        self.add(Arc::new(capability))
    }

    pub(crate) fn add(&mut self, cap: Arc<dyn DynCapability>) -> Result<&mut Registry, RegistryError> {
        let name = cap.name();
        let section = cap.section();
        let plain = section.strip_prefix("capabilities.").is_some_and(|k| !k.is_empty() && !k.contains('.'));
        // `wasi` is the built-in baseline's, the one section outside `capabilities`.
        if !(plain || (section == "wasi" && name == "wasi")) {
            return Err(RegistryError::BadSection { capability: name, section });
        }
        let taken = |what: String, by| Err(RegistryError::Taken { capability: name, what, by });
        for other in &self.caps {
            if other.name() == name {
                return taken(format!("the name `{name}`"), other.name());
            }
            if other.section() == section {
                return taken(format!("the section `[{section}]`"), other.name());
            }
            if other.task_state_type() == cap.task_state_type() {
                return taken("its task state type".into(), other.name());
            }
            for i in cap.interfaces() {
                if other.interfaces().iter().any(|o| o.package == i.package && o.name == i.name) {
                    return taken(format!("the interface `{}/{}`", i.package, i.name), other.name());
                }
            }
        }
        self.caps.push(cap);
        Ok(self)
    }

    /// Each capability: its name, policy section and interfaces.
    pub fn capabilities(&self) -> impl Iterator<Item = (&'static str, &'static str, &[Interface])> + '_ {
        self.caps.iter().map(|c| (c.name(), c.section(), c.interfaces()))
    }

    pub(crate) fn get(&self, index: usize) -> &Arc<dyn DynCapability> {
        &self.caps[index]
    }

    pub(crate) fn len(&self) -> usize {
        self.caps.len()
    }

    /// Parses and validates a policy's capability sections (keyed by their
    /// dotted path); `text` is the policy's source, to name a line.
    pub(crate) fn parse(
        &self,
        sections: &BTreeMap<String, toml::Value>,
        text: Option<&str>,
    ) -> Result<Grants, PolicyError> {
        for key in sections.keys() {
            if !self.caps.iter().any(|c| c.section() == key) {
                let known: Vec<String> = self.caps.iter().map(|c| format!("[{}]", c.section())).collect();
                return Err(PolicyError::Invalid {
                    key: key.clone(),
                    reason: format!(
                        "is not a section of any capability of this host (it has {}); a custom capability's section \
                         is known only to a host it is registered with",
                        known.join(", ")
                    ),
                });
            }
        }
        let mut grants = Vec::with_capacity(self.caps.len());
        for cap in &self.caps {
            let section = cap.section();
            let grant = cap.parse(sections.get(section)).map_err(|reason| PolicyError::Section {
                section: section.to_string(),
                reason,
                line: text.and_then(|t| section_line(t, section)),
            })?;
            if let Some(g) = &grant {
                cap.validate(g)?;
            }
            grants.push(grant);
        }
        Ok(Grants(grants))
    }

    /// Judges one import under `grants`: which capability serves it (by
    /// package, interface and a semver-compatible version), and what that
    /// capability says.
    pub(crate) fn decide(&self, import: &str, grants: &Grants) -> ImportDecision {
        let refused = |capability, section: Option<&str>, detail: String| ImportDecision {
            import: import.to_string(),
            capability,
            policy_section: section.map(|s| format!("[{s}]")),
            verdict: Verdict::Refused,
            detail,
            link: None,
        };
        let Some(name) = ImportName::parse(import) else {
            return refused(
                "unknown",
                None,
                "not an interface import; Chimera links only the interfaces of its capabilities".into(),
            );
        };
        let found = self.caps.iter().enumerate().find_map(|(i, c)| {
            c.interfaces().iter().find(|f| f.package == name.package && f.name == name.interface).map(|f| (i, c, *f))
        });
        let Some((index, cap, interface)) = found else {
            return refused(
                "unknown",
                None,
                format!(
                    "no capability of this host provides `{}/{}`, so no policy can grant it",
                    name.package, name.interface
                ),
            );
        };
        let label = cap.audit_name(&interface);
        let served = name.version.and_then(|v| semver::Version::parse(v).ok()).is_some_and(|v| interface.serves(&v));
        if !served {
            let asked = name.version.map_or("no version".to_string(), |v| format!("version {v}"));
            return refused(
                label,
                Some(cap.section()),
                format!(
                    "this host implements {interface}, which does not serve {asked} (only the same semver series, \
                     and a pre-release only itself); rebuild the agent against this host's WIT"
                ),
            );
        }
        let (verdict, detail) = match cap.decide(&interface, grants.get(index)) {
            Decision::Granted(d) => (Verdict::Granted, d),
            Decision::Inert(d) => (Verdict::Inert, d),
            Decision::Refused(d) => (Verdict::Refused, d),
        };
        ImportDecision {
            import: import.to_string(),
            capability: label,
            policy_section: Some(format!("[{}]", cap.section())),
            verdict,
            detail,
            link: (verdict != Verdict::Refused).then_some((index, interface)),
        }
    }
}

/// The line of `text` where `section` starts, if it is written as a header.
fn section_line(text: &str, section: &str) -> Option<usize> {
    let headers = [format!("[{section}]"), format!("[[{section}."), format!("[{section}.")];
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            headers.iter().any(|h| l.starts_with(h.as_str()))
        })
        .map(|i| i + 1)
}
