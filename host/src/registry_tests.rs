//! The registry's contract: every interface of the `chimera:agent` WIT
//! package belongs to exactly one capability, and the version rule the
//! decisions use is the one wasmtime's linker uses — so no import can be
//! linked that the decision refused, at any version or pre-release tag.

use std::collections::BTreeMap;
use wasmtime::component::{Component, Linker};

use crate::capability::{Registry, Verdict};
use crate::policy::Policy;
use crate::task_data::TaskData;
use crate::{Host, HostConfig};

#[test]
fn every_interface_in_wit_belongs_to_exactly_one_capability() {
    let mut resolve = wit_parser::Resolve::default();
    resolve.push_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit")).unwrap();
    let registry = Registry::builtins();
    let mut seen = 0;
    for (_, package) in &resolve.packages {
        let name = format!("{}:{}", package.name.namespace, package.name.name);
        let version = package.name.version.as_ref().map(|v| v.to_string()).unwrap_or_default();
        for interface in package.interfaces.keys() {
            let owners: Vec<_> = registry
                .capabilities()
                .filter(|(_, _, ifaces)| ifaces.iter().any(|i| i.package == name && i.name == interface))
                .map(|(cap, _, ifaces)| {
                    let i = ifaces.iter().find(|i| i.package == name && i.name == interface).unwrap();
                    (cap, i.version)
                })
                .collect();
            assert_eq!(owners.len(), 1, "{name}/{interface} is provided by {owners:?}");
            assert_eq!(owners[0].1, version, "{name}/{interface}: the capability implements another version");
            seen += 1;
        }
    }
    assert_eq!(seen, 4, "logging, kv, outbound-http, tasks");
    // And no two capabilities claim one interface (the registry refuses that too).
    let mut claimed = BTreeMap::new();
    for (cap, _, ifaces) in registry.capabilities() {
        for i in ifaces {
            assert_eq!(claimed.insert((i.package, i.name), cap), None, "{i} claimed twice");
        }
    }
}

/// A component importing `name` as an instance with nothing in it: any
/// definition of that name satisfies it, so whether it links says only
/// whether the linker has `name`, by wasmtime's own matching.
fn importing(host: &Host, name: &str) -> Option<Component> {
    let wat = format!("(component (import \"{name}\" (instance)))");
    let bytes = wat::parse_str(&wat).ok()?;
    Component::new(host.engine(), bytes).ok()
}

#[test]
fn no_import_links_that_the_decision_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::new(HostConfig {
        data_dir: dir.path().into(),
        pooling: false,
        compiler: crate::compile::Compiler::InProcess,
        ..HostConfig::default()
    })
    .unwrap();
    let registry = host.capabilities();
    let every_grant = Policy::from_toml(
        "[wasi]\nfilesystem = \"inert\"\nsockets = \"inert\"\n[capabilities.logging]\n[capabilities.kv]\n\
         [capabilities.outbound_http]\n[capabilities.tasks]\n",
    )
    .unwrap();
    let policies = [
        ("nothing", Policy::from_toml("[wasi]\ncli = false\nclocks = false\nrandom = false\n").unwrap()),
        ("defaults", Policy::default()),
        ("everything", every_grant),
    ];
    let mut checked = 0;
    for (label, policy) in &policies {
        let grants = policy.grants(registry).unwrap();
        // The linker `load` builds for a component importing everything it granted.
        let mut linker: Linker<TaskData> = Linker::new(host.engine());
        for i in 0..registry.len() {
            for interface in registry.get(i).interfaces() {
                let d = registry.decide(&interface.qualified(), &grants);
                if d.verdict != Verdict::Refused {
                    registry.get(i).link(interface, &mut linker).unwrap();
                }
            }
        }
        for i in 0..registry.len() {
            for interface in registry.get(i).interfaces() {
                let v = semver::Version::parse(interface.version).unwrap();
                let (major, minor, patch) = (v.major, v.minor, v.patch);
                let base = format!("{}/{}", interface.package, interface.name);
                let versions = [
                    None,
                    Some(format!("{major}.{minor}.{patch}")),
                    Some(format!("{major}.{minor}.{}", patch + 7)),
                    Some(format!("{major}.{minor}.0")),
                    Some(format!("{major}.{minor}.{patch}-rc")),
                    Some(format!("{major}.{minor}.{}-alpha.1", patch + 1)),
                    Some(format!("{major}.{minor}.{patch}+build.5")),
                    Some(format!("{major}.{}.0", minor + 1)),
                    Some(format!("{major}.{}.0-rc-2026-01-01", minor + 1)),
                    Some(format!("{}.0.0", major + 1)),
                    Some("0.0.1".to_string()),
                ];
                for version in versions {
                    let name = match &version {
                        Some(v) => format!("{base}@{v}"),
                        None => base.clone(),
                    };
                    let Some(component) = importing(&host, &name) else { continue };
                    let decision = registry.decide(&name, &grants);
                    let linked = linker.instantiate_pre(&component).is_ok();
                    assert_eq!(
                        linked,
                        decision.verdict != Verdict::Refused,
                        "{label}: {name} is {:?} ({}) but the linker {} it",
                        decision.verdict,
                        decision.detail,
                        if linked { "serves" } else { "does not serve" }
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 3 * 27 * 8, "only {checked} names checked");
}
