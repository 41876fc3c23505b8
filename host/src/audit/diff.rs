//! `chimera audit --diff`: how two policies (or two deployments) differ,
//! in capability terms: "gains outbound-http to https://api.x/ GET",
//! "memory 64 → 128 MiB", "loses kv write".

use serde_json::Value;

use super::AuditReport;
use crate::capability::Registry;
use crate::error::PolicyError;
use crate::policy::{Limits, Policy};

/// Each field that differs between `old` and `new` (JSON forms of one
/// capability's grant), as `capability: field old → new`; list entries
/// gained and lost are named one by one.
pub fn diff_fields(capability: &str, old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(capability, "", old, new, &mut out);
    out
}

fn walk(capability: &str, path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    if old == new {
        return;
    }
    let at = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let (x, y) = (a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null));
                walk(capability, &at(key), x, y, out);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for x in b.iter().filter(|x| !a.contains(x)) {
                out.push(format!("{capability}: {path} gains {}", show(x)));
            }
            for x in a.iter().filter(|x| !b.contains(x)) {
                out.push(format!("{capability}: {path} loses {}", show(x)));
            }
        }
        _ if path.is_empty() => out.push(format!("{capability}: {} → {}", show(old), show(new))),
        _ => out.push(format!("{capability}: {path} {} → {}", show(old), show(new))),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "unset".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// How each limit is named and measured in a diff.
const LIMIT_TERMS: &[(&str, &str, &str)] = &[
    ("memory_mib", "memory", "MiB"),
    ("cpu_ms", "cpu", "ms"),
    ("timeout_ms", "timeout", "ms"),
    ("stack_kib", "stack", "KiB"),
    ("instances", "core instances", ""),
    ("memories", "memories", ""),
    ("tables", "tables", ""),
    ("table_elements", "table elements", ""),
    ("max_input_bytes", "input", "B"),
    ("max_output_bytes", "output", "B"),
    ("stdio_bytes", "stdio", "B"),
    ("resource_handles", "resource handles", ""),
];

/// Each limit that differs: `memory 64 → 128 MiB`.
pub fn diff_limits(old: &Limits, new: &Limits) -> Vec<String> {
    let (a, b) = (crate::capability::to_json(old), crate::capability::to_json(new));
    let mut out = Vec::new();
    for (key, name, unit) in LIMIT_TERMS {
        let (x, y) = (&a[*key], &b[*key]);
        if x != y {
            let show = |v: &Value| if v.is_null() { "the host's".to_string() } else { v.to_string() };
            let unit = if unit.is_empty() { String::new() } else { format!(" {unit}") };
            out.push(format!("{name} {} → {}{unit}", show(x), show(y)));
        }
    }
    out
}

/// What an agent gains and loses going from policy `old` to `new`: its
/// name, each limit, and each capability's grant (in that capability's
/// own terms). Empty when they grant the same.
pub fn diff_policies(registry: &Registry, old: &Policy, new: &Policy) -> Result<Vec<String>, PolicyError> {
    let (a, b) = (old.grants(registry)?, new.grants(registry)?);
    let mut out = Vec::new();
    if old.agent.name != new.agent.name {
        let show = |n: &Option<String>| n.clone().unwrap_or_else(|| "(the file's stem)".into());
        out.push(format!(
            "name {} → {} (the default KV namespace follows it)",
            show(&old.agent.name),
            show(&new.agent.name)
        ));
    }
    out.extend(diff_limits(&old.limits, &new.limits));
    let agent = new.agent.name.as_deref().unwrap_or("agent");
    for i in 0..registry.len() {
        out.extend(registry.get(i).diff(a.get(i), b.get(i), agent));
    }
    Ok(out)
}

/// Imports of one component whose verdict differs between two audits of it.
pub fn diff_imports(old: &AuditReport, new: &AuditReport) -> Vec<String> {
    let mut out = Vec::new();
    for n in &new.imports {
        let was = old.imports.iter().find(|o| o.import == n.import).map(|o| o.verdict);
        if was != Some(n.verdict) {
            let was = was.map_or("absent".to_string(), |v| v.to_string());
            out.push(format!("import {}: {was} → {}", n.import, n.verdict));
        }
    }
    if old.runnable != new.runnable {
        out.push(format!(
            "the component {}",
            if new.runnable { "now loads (was refused)" } else { "is now REFUSED (it loaded before)" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_and_list_entries_are_named() {
        let old = json!({"namespace": null, "n": 1, "allow": ["a", "b"]});
        let new = json!({"namespace": "x", "n": 2, "allow": ["b", "c"]});
        assert_eq!(
            diff_fields("cap", &old, &new),
            ["cap: allow gains c", "cap: allow loses a", "cap: n 1 → 2", "cap: namespace unset → x"]
        );
        assert!(diff_fields("cap", &old, &old).is_empty());
    }

    #[test]
    fn limits_are_named_with_their_units() {
        let new = Limits { memory_mib: 128, stack_kib: Some(256), ..Limits::default() };
        assert_eq!(diff_limits(&Limits::default(), &new), ["memory 64 → 128 MiB", "stack the host's → 256 KiB"]);
    }
}
