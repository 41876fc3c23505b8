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
    assert_eq!(seen, 5, "logging, kv, outbound-http, tasks, config");
    // And no two capabilities claim one interface (the registry refuses that too).
    let mut claimed = BTreeMap::new();
    for (cap, _, ifaces) in registry.capabilities() {
        for i in ifaces {
            assert_eq!(claimed.insert((i.package, i.name), cap), None, "{i} claimed twice");
        }
    }
}

/// The `chimera:agent` WIT of this repository with its package at `version`,
/// and a world `probe-<interface>` importing each interface alone.
fn wit_at(version: &str) -> (wit_parser::Resolve, wit_parser::PackageId) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../wit");
    let mut text = format!("package chimera:agent@{version};\n");
    let mut interfaces = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in source.lines().filter(|l| !l.starts_with("package ")) {
            if let Some(name) = line.strip_prefix("interface ") {
                interfaces.push(name.trim_end_matches(" {").to_string());
            }
            text.push_str(line);
            text.push('\n');
        }
    }
    for i in &interfaces {
        text.push_str(&format!("world probe-{i} {{ import {i}; }}\n"));
    }
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve.push_str("probe.wit", &text).unwrap();
    (resolve, package)
}

/// A component importing `interface` of `chimera:agent` at `version`, with
/// its real types: whether it links says whether the linker serves that
/// name, by wasmtime's own matching.
fn importing(host: &Host, interface: &str, version: &str) -> Component {
    let (resolve, package) = wit_at(version);
    let world = resolve.select_world(&[package], Some(&format!("probe-{interface}"))).unwrap();
    let mangling = wit_parser::ManglingAndAbi::Legacy(wit_parser::LiftLowerAbi::Sync);
    let mut module = wit_component::dummy_module(&resolve, world, mangling);
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8).unwrap();
    let bytes = wit_component::ComponentEncoder::default().module(&module).unwrap().validate(true).encode().unwrap();
    Component::new(host.engine(), bytes).unwrap()
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
    let everything = "[capabilities.logging]\n[capabilities.kv]\n[capabilities.outbound_http]\n[capabilities.tasks]\n";
    let versions = [
        "0.1.0",
        "0.1.7",
        "0.1.0-rc",
        "0.1.1-alpha.1",
        "0.1.0+build.5",
        "0.2.0",
        "0.2.0-rc-2026-01-01",
        "1.0.0",
        "0.0.1",
    ];
    let mut checked = 0;
    for (label, toml) in [("nothing", ""), ("everything", everything)] {
        let policy = Policy::from_toml(toml).unwrap();
        let grants = policy.grants(registry).unwrap();
        // What `load` links for a component importing every interface at
        // the host's own version: each granted one.
        let mut linker: Linker<TaskData> = Linker::new(host.engine());
        for i in 0..registry.len() {
            for interface in registry.get(i).interfaces().iter().filter(|f| f.package == "chimera:agent") {
                if registry.decide(&interface.qualified(), &grants).verdict != Verdict::Refused {
                    registry.get(i).link(interface, &mut linker).unwrap();
                }
            }
        }
        for interface in ["logging", "kv", "outbound-http", "tasks"] {
            for version in versions {
                let component = importing(&host, interface, version);
                let ty = component.component_type();
                let imports: Vec<String> = ty.imports(host.engine()).map(|(name, _)| name.to_string()).collect();
                assert_eq!(imports, [format!("chimera:agent/{interface}@{version}")]);
                let decision = registry.decide(&imports[0], &grants);
                let linked = linker.instantiate_pre(&component).is_ok();
                assert_eq!(
                    linked,
                    decision.verdict != Verdict::Refused,
                    "{label}: {} is {:?} ({}) but the linker {} it",
                    imports[0],
                    decision.verdict,
                    decision.detail,
                    if linked { "serves" } else { "does not serve" }
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2 * 4 * 9);
}
