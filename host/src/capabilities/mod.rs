//! Capabilities: what each import of a component is, whether a policy grants
//! it, and how it is added to a linker. Each capability lives in its own
//! module with its per-task state and host functions.

pub mod kv;
pub mod logging;
pub mod outbound_http;
pub mod tasks;
pub mod wasi;

use serde::Serialize;
use wasmtime::component::Linker;

use crate::policy::Policy;
use crate::state::TaskState;

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

/// One import of a component, judged against a policy.
#[derive(Debug, Clone, Serialize)]
pub struct ImportDecision {
    /// The full WIT name, e.g. `chimera:agent/kv@0.1.0`.
    pub import: String,
    /// The capability that provides it (`logging`, `kv`, `outbound-http`,
    /// `wasi-cli`, `wasi-clocks`, `wasi-random`, `wasi-filesystem`,
    /// `wasi-sockets`) or `unknown`.
    pub capability: &'static str,
    /// The policy section that grants it, if any can.
    pub policy_section: Option<&'static str>,
    /// Granted, inert or refused.
    pub verdict: Verdict,
    /// What the grant gives, what an inert interface answers, or why it is refused.
    pub detail: String,
    #[serde(skip)]
    pub(crate) link: Option<LinkFn>,
}

pub(crate) type LinkFn = fn(&mut Linker<TaskState>) -> wasmtime::Result<()>;

/// A parsed WIT interface name: `namespace:package/interface@version`.
struct InterfaceName<'a> {
    package: &'a str,
    interface: &'a str,
    version: Option<&'a str>,
}

fn parse_name(name: &str) -> Option<InterfaceName<'_>> {
    let (path, version) = match name.split_once('@') {
        Some((p, v)) => (p, Some(v)),
        None => (name, None),
    };
    let (package, interface) = path.split_once('/')?;
    package.contains(':').then_some(InterfaceName { package, interface, version })
}

/// Whether `version` is in the `major.minor` series the host implements.
fn version_in_series(version: Option<&str>, series: &str) -> bool {
    version.is_some_and(|v| v == series || v.strip_prefix(series).is_some_and(|rest| rest.starts_with('.')))
}

/// Judges one import against `policy`.
pub fn decide(import: &str, policy: &Policy) -> ImportDecision {
    let refused = |capability, section, detail: String| ImportDecision {
        import: import.to_string(),
        capability,
        policy_section: section,
        verdict: Verdict::Refused,
        detail,
        link: None,
    };
    let Some(name) = parse_name(import) else {
        return refused(
            "unknown",
            None,
            "not an interface import; Chimera links only the interfaces of its capabilities".into(),
        );
    };
    match name.package {
        "chimera:agent" => {
            if !version_in_series(name.version, "0.1") {
                return refused(
                    "unknown",
                    None,
                    format!(
                        "this host implements chimera:agent 0.1.x, not {}; rebuild the agent against this host's wit/",
                        name.version.unwrap_or("an unversioned package")
                    ),
                );
            }
            let cap = match name.interface {
                "logging" => logging::decide(policy),
                "kv" => kv::decide(policy),
                "outbound-http" => outbound_http::decide(policy),
                "tasks" => tasks::decide(policy),
                other => return refused("unknown", None, format!("chimera:agent has no interface `{other}`")),
            };
            cap.into_decision(import)
        }
        "wasi:http" => refused("wasi-http", None, "wasi:http is not offered; use chimera:agent/outbound-http".into()),
        "wasi:io" | "wasi:cli" | "wasi:clocks" | "wasi:random" | "wasi:filesystem" | "wasi:sockets" => {
            if !version_in_series(name.version, "0.2") {
                return refused(
                    "unknown",
                    None,
                    format!(
                        "this host implements WASI 0.2.x, not {}",
                        name.version.unwrap_or("an unversioned package")
                    ),
                );
            }
            match wasi::decide(name.package, name.interface, policy) {
                Some(cap) => cap.into_decision(import),
                None => refused(
                    "unknown",
                    None,
                    format!("{}/{} is not a WASI 0.2 interface this host provides", name.package, name.interface),
                ),
            }
        }
        _ => {
            refused("unknown", None, "no Chimera capability provides this interface, so no policy can grant it".into())
        }
    }
}

/// A capability module's answer for one of its interfaces.
pub(crate) struct CapabilityDecision {
    pub capability: &'static str,
    pub section: &'static str,
    pub grant: Grant,
    pub link: LinkFn,
}

/// What a policy says of one interface, with the text an auditor reads.
pub(crate) enum Grant {
    /// Linked; what the grant gives.
    Granted(String),
    /// Linked with nothing behind it; what the agent's calls get.
    Inert(String),
    /// Not linked; how a policy would grant it, or why none can.
    Refused(String),
}

impl CapabilityDecision {
    fn into_decision(self, import: &str) -> ImportDecision {
        let (verdict, detail, link) = match self.grant {
            Grant::Granted(detail) => (Verdict::Granted, detail, Some(self.link)),
            Grant::Inert(detail) => (Verdict::Inert, detail, Some(self.link)),
            Grant::Refused(detail) => (Verdict::Refused, detail, None),
        };
        ImportDecision {
            import: import.to_string(),
            capability: self.capability,
            policy_section: Some(self.section),
            verdict,
            detail,
            link,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_imports() {
        let p = Policy::from_toml("[capabilities.logging]\n").unwrap();
        assert_eq!(decide("chimera:agent/logging@0.1.0", &p).verdict, Verdict::Granted);
        let kv = decide("chimera:agent/kv@0.1.0", &p);
        assert_eq!((kv.verdict, kv.policy_section), (Verdict::Refused, Some("[capabilities.kv]")));
        assert_eq!(decide("chimera:agent/kv@0.2.0", &p).capability, "unknown");
        assert_eq!(decide("wasi:filesystem/types@0.2.6", &p).verdict, Verdict::Refused);
        assert_eq!(decide("wasi:sockets/tcp@0.2.9", &p).verdict, Verdict::Refused);
        let inert = Policy::from_toml("[wasi]\nfilesystem = \"inert\"\nsockets = \"inert\"\n").unwrap();
        assert_eq!(decide("wasi:filesystem/preopens@0.2.9", &inert).verdict, Verdict::Inert);
        assert_eq!(decide("wasi:sockets/ip-name-lookup@0.2.9", &inert).verdict, Verdict::Inert);
        assert_eq!(decide("wasi:sockets/tcp@0.3.0", &inert).verdict, Verdict::Refused);
        assert_eq!(decide("wasi:cli/stdout@0.2.6", &p).verdict, Verdict::Granted);
        assert_eq!(decide("wasi:cli/stdout@0.3.0", &p).verdict, Verdict::Refused);
        assert_eq!(decide("evil:thing/x", &p).capability, "unknown");
        assert_eq!(decide("run", &p).verdict, Verdict::Refused);
    }
}
