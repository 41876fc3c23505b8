//! The built-in capabilities, each in its own module with its grant type,
//! host functions and per-task state. They register through the same
//! [`Registry`] an integrator's capability does.

pub mod agent_config;
pub mod kv;
pub mod logging;
pub mod outbound_http;
pub mod tasks;
pub mod wasi;

use crate::calls::AgentCaller;
use crate::capability::{Registry, RegistryError};
use crate::config::HostConfig;

static BUILTINS: std::sync::LazyLock<Registry> = std::sync::LazyLock::new(|| {
    let mut r = Registry::default();
    register_builtins(&mut r, &HostConfig::default(), AgentCaller::detached()).expect("the built-ins are distinct");
    r
});

impl Registry {
    /// The built-in capabilities: logging, kv, outbound-http, tasks, config
    /// and the WASI baseline (with default settings; a host's own registry is
    /// built from its configuration).
    pub fn builtins() -> &'static Registry {
        &BUILTINS
    }
}

/// Adds the built-in capabilities to `registry`: logging, kv,
/// outbound-http (resolving the host's DNS overrides, adding its secrets),
/// tasks (calling agents through `caller`), config and the WASI baseline.
pub(crate) fn register_builtins(
    registry: &mut Registry,
    config: &HostConfig,
    caller: AgentCaller,
) -> Result<(), RegistryError> {
    registry
        .register(logging::Logging)?
        .register(kv::Kv)?
        .register(outbound_http::OutboundHttp::new(config.dns_overrides.clone()).with_secrets(config.secrets.clone()))?
        .register(tasks::Tasks::new(caller))?
        .register(agent_config::AgentConfig)?
        .register(wasi::Wasi)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::capability::{Registry, Verdict};
    use crate::policy::Policy;

    fn decide(import: &str, policy: &Policy) -> crate::capability::ImportDecision {
        let registry = Registry::builtins();
        registry.decide(import, &policy.grants(registry).unwrap())
    }

    #[test]
    fn classifies_imports() {
        let p = Policy::from_toml("[capabilities.logging]\n").unwrap();
        assert_eq!(decide("chimera:agent/logging@0.1.0", &p).verdict, Verdict::Granted);
        assert_eq!(decide("chimera:agent/logging@0.1.3", &p).verdict, Verdict::Granted);
        let kv = decide("chimera:agent/kv@0.1.0", &p);
        assert_eq!((kv.verdict, kv.policy_section.as_deref()), (Verdict::Refused, Some("[capabilities.kv]")));
        let newer = decide("chimera:agent/logging@0.2.0", &p);
        assert_eq!((newer.verdict, newer.capability), (Verdict::Refused, "logging"));
        assert!(newer.detail.starts_with("this host implements chimera:agent/logging@0.1.0"), "{}", newer.detail);
        assert_eq!(decide("chimera:agent/logging@0.1.0-rc", &p).verdict, Verdict::Refused);
        assert_eq!(decide("chimera:agent/logging", &p).verdict, Verdict::Refused);
        assert_eq!(decide("wasi:filesystem/types@0.2.6", &p).verdict, Verdict::Refused);
        assert_eq!(decide("wasi:sockets/tcp@0.2.9", &p).verdict, Verdict::Refused);
        let inert = Policy::from_toml("[wasi]\nfilesystem = \"inert\"\nsockets = \"inert\"\n").unwrap();
        assert_eq!(decide("wasi:filesystem/preopens@0.2.9", &inert).verdict, Verdict::Inert);
        assert_eq!(decide("wasi:sockets/ip-name-lookup@0.2.9", &inert).verdict, Verdict::Inert);
        assert_eq!(decide("wasi:sockets/tcp@0.3.0", &inert).verdict, Verdict::Refused);
        assert_eq!(decide("wasi:cli/stdout@0.2.6", &p).verdict, Verdict::Granted);
        assert_eq!(decide("wasi:cli/stdout@0.2.6", &p).capability, "wasi-cli");
        assert_eq!(decide("wasi:cli/stdout@0.3.0", &p).verdict, Verdict::Refused);
        let http = decide("wasi:http/outgoing-handler@0.2.6", &p);
        assert_eq!((http.capability, http.verdict), ("wasi-http", Verdict::Refused));
        assert_eq!(decide("evil:thing/x", &p).capability, "unknown");
        assert_eq!(decide("run", &p).verdict, Verdict::Refused);
    }
}
