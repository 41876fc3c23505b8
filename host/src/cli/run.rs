//! `chimera run` with other agents beside the one it runs, so that a
//! `tasks` call finds its callee: every agent of a serve config
//! (`--config`), or callees named one by one (`--agent NAME=WASM[:POLICY]`).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{host_config, load_policy};
use crate::secrets::{SecretSource, Secrets};
use crate::server::ServeConfig;
use crate::{Agent, Host, HostBuilder, Policy, Registry};
use std::collections::BTreeMap;

/// Loads every agent of the serve config at `config` (pins checked, as
/// `chimera serve` does) and picks the one named `name` to run.
pub(super) fn from_config(
    config: &Path,
    name: &Path,
    data_dir: Option<PathBuf>,
    extend: &dyn Fn(HostBuilder) -> HostBuilder,
) -> Result<(Host, Arc<Agent>)> {
    let config = ServeConfig::from_file(config).map_err(anyhow::Error::msg)?;
    let name = name.to_string_lossy();
    if !config.agents.iter().any(|a| a.name == name) {
        let names: Vec<&str> = config.agents.iter().map(|a| a.name.as_str()).collect();
        bail!(
            "the config names no agent `{name}` (with --config, give the name of one of its agents: {})",
            if names.is_empty() { "it has none".to_string() } else { names.join(", ") }
        );
    }
    let mut host_config = config.host_config();
    host_config.secrets = config.read_secrets().map_err(anyhow::Error::msg)?;
    if let Some(dir) = data_dir {
        host_config.data_dir = dir;
    }
    let host = extend(Host::builder(host_config)).build()?;
    let agents = crate::server::load_agents(&host, &config).map_err(anyhow::Error::msg)?;
    let mut target = None;
    for entry in agents {
        entry.agent.set_max_concurrency(entry.max_concurrency);
        host.register(entry.agent.clone());
        if entry.agent.name() == name {
            target = Some(entry.agent);
        }
    }
    Ok((host, target.expect("checked above")))
}

/// One callee of `--agent`.
#[derive(Debug)]
struct Callee {
    name: String,
    component: PathBuf,
    policy: Option<PathBuf>,
}

/// `NAME=WASM` or `NAME=WASM:POLICY` (the policy after the last `:`, when
/// it names a `.toml` file).
fn parse_callee(spec: &str) -> Result<Callee> {
    let Some((name, rest)) = spec.split_once('=') else {
        bail!("--agent {spec:?}: write NAME=WASM or NAME=WASM:POLICY (e.g. word-count=word_count.wasm:policy.toml)")
    };
    if name.is_empty() || rest.is_empty() {
        bail!("--agent {spec:?}: both the name and the component are needed (NAME=WASM[:POLICY])");
    }
    let (component, policy) = match rest.rsplit_once(':') {
        Some((component, policy)) if policy.ends_with(".toml") && !component.is_empty() => {
            (component, Some(PathBuf::from(policy)))
        }
        _ => (rest, None),
    };
    Ok(Callee { name: name.to_string(), component: PathBuf::from(component), policy })
}

/// What `chimera run` names beside the component: its policy, `--agent`
/// callees and `--secret`s.
pub(super) struct Loaded<'a> {
    pub policy: Option<&'a Path>,
    pub callees: &'a [String],
    pub secrets: &'a [String],
}

/// `NAME=env:VARIABLE` or `NAME=file:PATH`.
fn parse_secret(spec: &str) -> Result<(String, SecretSource)> {
    let form = "write NAME=env:VARIABLE or NAME=file:PATH (e.g. api-key=env:API_KEY)";
    let Some((name, source)) = spec.split_once('=') else { bail!("--secret {spec:?}: {form}") };
    let source = match source.split_once(':') {
        Some(("env", var)) if !var.is_empty() => SecretSource { env: Some(var.into()), file: None },
        Some(("file", path)) if !path.is_empty() => SecretSource { env: None, file: Some(path.into()) },
        _ => bail!("--secret {spec:?}: {form}"),
    };
    Ok((name.to_string(), source))
}

/// Loads the component to run and each `--agent` callee into one host.
pub(super) fn with_callees(
    component: &Path,
    loaded: Loaded<'_>,
    data_dir: Option<PathBuf>,
    registry: &Registry,
    extend: &dyn Fn(HostBuilder) -> HostBuilder,
) -> Result<(Host, Arc<Agent>)> {
    let policy = load_policy(loaded.policy, registry)?;
    let callees = loaded.callees.iter().map(|spec| parse_callee(spec)).collect::<Result<Vec<_>>>()?;
    let sources = loaded.secrets.iter().map(|spec| parse_secret(spec)).collect::<Result<BTreeMap<_, _>>>()?;
    let callee_policies = callees
        .iter()
        .map(|c| load_policy(c.policy.as_deref(), registry).with_context(|| format!("agent `{}`", c.name)))
        .collect::<Result<Vec<Policy>>>()?;
    let mut config = host_config(&policy);
    // The engine's stack fits the largest any of them asks for.
    for p in &callee_policies {
        config.stack_kib = config.stack_kib.max(p.limits.stack_kib.unwrap_or(0));
    }
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    config.secrets = Secrets::read(&sources, Path::new("."))?;
    let host = extend(Host::builder(config)).build()?;
    for (callee, policy) in callees.into_iter().zip(callee_policies) {
        let bytes = std::fs::read(&callee.component)
            .with_context(|| format!("agent `{}`: cannot read {}", callee.name, callee.component.display()))?;
        let agent = host.load(&callee.name, &bytes, policy).with_context(|| format!("agent `{}`", callee.name))?;
        host.register(Arc::new(agent));
    }
    let agent = Arc::new(host.load_file(component, policy)?);
    host.register(agent.clone());
    Ok((host, agent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callee_is_a_name_a_component_and_maybe_a_policy() {
        let c = parse_callee("word-count=target/wc.wasm:policies/wc.toml").unwrap();
        assert_eq!(
            (c.name.as_str(), c.component.as_path(), c.policy.as_deref()),
            ("word-count", Path::new("target/wc.wasm"), Some(Path::new("policies/wc.toml")))
        );
        let c = parse_callee("wc=/tmp/a:b/wc.wasm").unwrap();
        assert_eq!((c.component.as_path(), c.policy), (Path::new("/tmp/a:b/wc.wasm"), None));
        for bad in ["wc.wasm", "=wc.wasm", "wc="] {
            assert!(parse_callee(bad).unwrap_err().to_string().contains("NAME=WASM"), "{bad}");
        }
    }

    #[test]
    fn a_secret_comes_from_a_variable_or_a_file() {
        let (name, source) = parse_secret("api-key=env:API_KEY").unwrap();
        assert_eq!((name.as_str(), source.env.as_deref(), source.file), ("api-key", Some("API_KEY"), None));
        let (_, source) = parse_secret("k=file:/run/secrets/k:1").unwrap();
        assert_eq!(source.file.as_deref(), Some(Path::new("/run/secrets/k:1")));
        for bad in ["api-key", "k=API_KEY", "k=env:", "k=vault:x"] {
            assert!(parse_secret(bad).unwrap_err().to_string().contains("NAME=env:VARIABLE"), "{bad}");
        }
    }
}
