//! `chimera audit`: one component under one policy, a whole deployment
//! (`--config`), or what changes between two policies or configs (`--diff`).

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use super::{host_config, load_policy, stem};
use crate::audit::{self as report, AuditWarning, DeploymentAudit, PinStatus};
use crate::server::ServeConfig;
use crate::{AuditReport, Host, HostBuilder, HostConfig, Verdict, AUDIT_SCHEMA_VERSION};

/// How the audit is shown and judged.
pub(super) struct Output {
    pub json: bool,
    pub deny_warnings: bool,
}

impl Output {
    /// 0 when it would run (and, with `--deny-warnings`, nothing warns), else 1.
    fn status(&self, runnable: bool, warnings: usize) -> ExitCode {
        if runnable && !(self.deny_warnings && warnings > 0) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }
}

/// A host that only audits: one pool slot, nothing cached or stored.
fn audit_host(config: HostConfig, extend: &dyn Fn(HostBuilder) -> HostBuilder) -> Result<Host> {
    let config = HostConfig { max_instances: 1, cache_compiled: false, ..config };
    Ok(extend(Host::builder(config)).build()?)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `chimera audit COMPONENT [--policy P]`.
pub(super) fn component(
    component: &Path,
    policy_path: Option<&Path>,
    extend: &dyn Fn(HostBuilder) -> HostBuilder,
    how: Output,
) -> Result<ExitCode> {
    let r = audit_one(component, policy_path, extend)?;
    if how.json {
        out!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_audit(&r)?;
    }
    Ok(how.status(r.runnable, r.warnings.len()))
}

fn audit_one(
    component: &Path,
    policy_path: Option<&Path>,
    extend: &dyn Fn(HostBuilder) -> HostBuilder,
) -> Result<AuditReport> {
    let registry = extend(Host::builder(HostConfig::default())).registry();
    let policy = load_policy(policy_path, &registry)?;
    let host = audit_host(host_config(&policy), extend)?;
    let bytes = read(component)?;
    let name = policy.agent.name.clone().unwrap_or_else(|| stem(component));
    let mut r = host.audit(&name, &bytes, &policy)?;
    if let Some(path) = policy_path {
        r = r.with_policy_file(&read(path)?);
    }
    Ok(r)
}

/// `chimera audit --config chimera.toml`.
pub(super) fn deployment(config: &Path, extend: &dyn Fn(HostBuilder) -> HostBuilder, how: Output) -> Result<ExitCode> {
    let serve = ServeConfig::from_file(config).map_err(anyhow::Error::msg)?;
    let host = audit_host(serve.host_config(), extend)?;
    let d = report::audit_deployment(&host, &serve);
    let warnings =
        d.warnings.len() + d.agents.iter().filter_map(|a| a.audit.as_ref()).map(|r| r.warnings.len()).sum::<usize>();
    if how.json {
        out!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        print_deployment(config, &d)?;
    }
    Ok(how.status(d.runnable, warnings))
}

fn print_deployment(config: &Path, d: &DeploymentAudit) -> Result<()> {
    out!("deployment {}: {} agent(s)", config.display(), d.agents.len());
    for a in &d.agents {
        out!();
        let verdict = match &a.audit {
            Some(r) if r.runnable => "runnable",
            _ => "REFUSED",
        };
        let warned = a.audit.as_ref().map_or(0, |r| r.warnings.len());
        out!("agent {} (max_concurrency {}): {verdict}, {warned} warning(s)", a.name, a.max_concurrency);
        let Some(r) = &a.audit else {
            out!("  could not be audited (see problems)");
            continue;
        };
        out!("  component {}", a.component);
        out!("    sha256 {} ({})", r.component_sha256, pin(a.component_pin));
        match (&a.policy, &r.policy_sha256) {
            (Some(p), Some(digest)) => {
                out!("  policy {p}");
                out!("    sha256 {digest} ({})", pin(a.policy_pin));
            }
            _ => out!("  policy: none (nothing granted beyond the WASI baseline)"),
        }
        let count = |v| r.imports.iter().filter(|d| d.verdict == v).count();
        let granted: Vec<&str> = r.grants.iter().filter(|g| g.granted).map(|g| g.capability).collect();
        out!(
            "  imports: {} granted, {} inert, {} refused; grants: {}",
            count(Verdict::Granted),
            count(Verdict::Inert),
            count(Verdict::Refused),
            granted.join(", ")
        );
        let l = &r.limits;
        out!("  limits: memory {} MiB, cpu {} ms, timeout {} ms", l.memory_mib, l.cpu_ms, l.timeout_ms);
        for w in &r.warnings {
            out!("  {}", warning(w));
        }
        for p in &r.problems {
            out!("  problem: {p}");
        }
        for i in r.refused() {
            out!("  REFUSED import {}: {}", i.import, i.detail);
        }
    }
    out!();
    if d.calls.is_empty() {
        out!("calls between agents: none");
    } else {
        out!("calls between agents (tasks):");
        for c in &d.calls {
            let pinned = c.pinned_sha256.as_deref().map_or("unpinned".to_string(), |p| format!("pinned sha256:{p}"));
            out!("  {} -> {} ({pinned}; {})", c.caller, c.callee, c.status);
        }
        out!();
        out!("worst case of one submitted task, every task making all its calls (fan-out × depth):");
        for c in &d.chains {
            out!(
                "  {}: {} task(s) to depth {}; memory at once {} MiB ({}); cpu {} ms in all; {} HTTP request(s); \
                 all within {} ms",
                c.root,
                c.worst_case_tasks,
                c.max_depth,
                c.peak_memory_mib,
                c.deepest_path.join(" -> "),
                c.total_cpu_ms,
                c.total_requests,
                c.timeout_ms
            );
        }
    }
    out!();
    if d.shared_namespaces.is_empty() {
        out!("shared KV namespaces: none");
    } else {
        out!("shared KV namespaces:");
        for s in &d.shared_namespaces {
            let who: Vec<String> = s
                .agents
                .iter()
                .map(|(n, w)| format!("{n} ({})", if *w { "read-write" } else { "read-only" }))
                .collect();
            out!("  {}: {}", s.namespace, who.join(", "));
        }
    }
    if !d.secrets.is_empty() {
        out!();
        out!("secrets (values never shown):");
        for s in &d.secrets {
            let sent = if s.sent_by.is_empty() { "not sent".to_string() } else { s.sent_by.join("; ") };
            out!("  {} ({}): {sent}", s.secret, s.source);
        }
    }
    if !d.warnings.is_empty() || !d.problems.is_empty() {
        out!();
    }
    for w in &d.warnings {
        out!("{}", warning(w));
    }
    for p in &d.problems {
        out!("problem: {p}");
    }
    out!();
    if d.runnable {
        out!("verdict: runnable: `chimera serve` would start every agent");
    } else {
        out!("verdict: REFUSED: `chimera serve` would not start ({} problem(s))", d.problems.len());
    }
    Ok(())
}

fn pin(status: PinStatus) -> &'static str {
    match status {
        PinStatus::Unpinned => "not pinned",
        PinStatus::Matches => "pinned: matches",
        PinStatus::Mismatch => "pinned: MISMATCH",
    }
}

fn warning(w: &AuditWarning) -> String {
    format!("warning [{}] {}: {}", w.code, w.key, w.message)
}

/// `chimera audit --diff OLD NEW [COMPONENT]`: policies, or serve configs
/// when both files have `[[agents]]`.
pub(super) fn diff(
    old: &Path,
    new: &Path,
    component: Option<&Path>,
    extend: &dyn Fn(HostBuilder) -> HostBuilder,
    how: Output,
) -> Result<ExitCode> {
    let is_config = |path: &Path| -> Result<bool> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
        Ok(table.contains_key("agents") || table.contains_key("listen"))
    };
    let changes: BTreeMap<String, Vec<String>> = match (is_config(old)?, is_config(new)?) {
        (false, false) => {
            let mut changes = policy_changes(old, new, extend)?;
            if let Some(component) = component {
                let (a, b) = (audit_one(component, Some(old), extend)?, audit_one(component, Some(new), extend)?);
                changes.extend(report::diff_imports(&a, &b));
            }
            BTreeMap::from([(String::new(), changes)])
        }
        (true, true) if component.is_none() => config_changes(old, new, extend)?,
        (true, true) => anyhow::bail!("--diff of two configs compares the components they name; give no component"),
        _ => anyhow::bail!(
            "{} and {} are not the same kind of file: --diff compares two policies or two `chimera serve` configs",
            old.display(),
            new.display()
        ),
    };
    if how.json {
        let shown = serde_json::json!({
            "schema_version": AUDIT_SCHEMA_VERSION,
            "old": old.display().to_string(),
            "new": new.display().to_string(),
            "changes": changes,
        });
        out!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(ExitCode::SUCCESS);
    }
    out!("{} -> {}", old.display(), new.display());
    if changes.values().all(Vec::is_empty) {
        out!("no change in what any agent may do");
    }
    for (agent, lines) in &changes {
        let indent = if agent.is_empty() { "" } else { "  " };
        if !agent.is_empty() && !lines.is_empty() {
            out!("agent {agent}:");
        }
        for line in lines {
            out!("{indent}{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn policy_changes(old: &Path, new: &Path, extend: &dyn Fn(HostBuilder) -> HostBuilder) -> Result<Vec<String>> {
    let registry = extend(Host::builder(HostConfig::default())).registry();
    let (a, b) = (load_policy(Some(old), &registry)?, load_policy(Some(new), &registry)?);
    Ok(report::diff_policies(&registry, &a, &b)?)
}

/// Each agent's changes between two deployments: added, removed, its
/// component and policy, its concurrency and pins.
fn config_changes(
    old: &Path,
    new: &Path,
    extend: &dyn Fn(HostBuilder) -> HostBuilder,
) -> Result<BTreeMap<String, Vec<String>>> {
    let registry = extend(Host::builder(HostConfig::default())).registry();
    let (a, b) = (
        ServeConfig::from_file(old).map_err(anyhow::Error::msg)?,
        ServeConfig::from_file(new).map_err(anyhow::Error::msg)?,
    );
    let digest = |p: &Path| read(p).map(|bytes| report::sha256_hex(&bytes));
    let mut out = BTreeMap::new();
    for agent in &b.agents {
        let mut lines = Vec::new();
        let policy = load_policy(agent.policy.as_deref(), &registry)?;
        match a.agents.iter().find(|o| o.name == agent.name) {
            None => {
                lines.push(format!("added, component sha256 {}", digest(&agent.component)?));
                lines.extend(report::diff_policies(&registry, &crate::Policy::default(), &policy)?);
            }
            Some(was) => {
                let (x, y) = (digest(&was.component)?, digest(&agent.component)?);
                if x != y {
                    lines.push(format!("component sha256 {x} → {y} (a different component: audit it)"));
                }
                let old_policy = load_policy(was.policy.as_deref(), &registry)?;
                lines.extend(report::diff_policies(&registry, &old_policy, &policy)?);
                if was.max_concurrency != agent.max_concurrency {
                    lines.push(format!("max_concurrency {} → {}", was.max_concurrency, agent.max_concurrency));
                }
                for (key, p, q) in [
                    ("sha256", &was.sha256, &agent.sha256),
                    ("policy_sha256", &was.policy_sha256, &agent.policy_sha256),
                ] {
                    if p != q {
                        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "unpinned".into());
                        lines.push(format!("{key} pin {} → {}", show(p), show(q)));
                    }
                }
            }
        }
        out.insert(agent.name.clone(), lines);
    }
    for was in a.agents.iter().filter(|o| !b.agents.iter().any(|n| n.name == o.name)) {
        out.insert(was.name.clone(), vec!["removed".to_string()]);
    }
    Ok(out)
}

/// One row of the audit table: import, capability, verdict, detail.
type Row = (String, &'static str, Verdict, String);

/// WASI interfaces of one package, version and verdict sharing a row.
struct WasiGroup {
    package: String,
    version: String,
    verdict: Verdict,
    row: usize,
    names: Vec<String>,
}

/// The audit table's rows: one per import, except that the WASI baseline's
/// interfaces of one package, version and verdict share a row
/// (`wasi:cli@0.2.6 (10 interfaces)`); `--json` lists each.
fn table_rows(imports: &[crate::ImportDecision]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let mut groups: Vec<WasiGroup> = Vec::new();
    for d in imports {
        let parsed = d.import.split_once('/').and_then(|(package, rest)| {
            let (name, version) = rest.split_once('@').unwrap_or((rest, ""));
            package.starts_with("wasi:").then(|| (package.to_string(), name.to_string(), version.to_string()))
        });
        let Some((package, name, version)) = parsed else {
            rows.push((d.import.clone(), d.capability, d.verdict, d.detail.clone()));
            continue;
        };
        match groups.iter_mut().find(|g| g.package == package && g.version == version && g.verdict == d.verdict) {
            Some(group) => group.names.push(name),
            None => {
                groups.push(WasiGroup { package, version, verdict: d.verdict, row: rows.len(), names: vec![name] });
                rows.push((String::new(), d.capability, d.verdict, d.detail.clone()));
            }
        }
    }
    for g in groups {
        let at = if g.version.is_empty() { String::new() } else { format!("@{}", g.version) };
        rows[g.row].0 = if g.names.len() == 1 {
            format!("{}/{}{at}", g.package, g.names[0])
        } else {
            format!("{}{at} ({} interfaces)", g.package, g.names.len())
        };
    }
    rows
}

fn print_audit(r: &AuditReport) -> Result<()> {
    out!("agent {} ({} bytes)", r.agent, r.component_bytes);
    out!();
    let rows = table_rows(&r.imports);
    let width = rows.iter().map(|row| row.0.len()).max().unwrap_or(6).max(6);
    out!("{:<width$}  {:<15}  {:<8}  DETAIL", "IMPORT", "CAPABILITY", "VERDICT");
    for (import, capability, verdict, detail) in rows {
        let verdict = match verdict {
            Verdict::Granted => "granted",
            Verdict::Inert => "inert",
            Verdict::Refused => "REFUSED",
        };
        out!("{import:<width$}  {capability:<15}  {verdict:<8}  {detail}");
    }
    if r.imports.is_empty() {
        out!("(no imports)");
    }
    out!();
    out!("exports: {}", r.exports.join(", "));
    let l = &r.limits;
    out!(
        "limits: memory {} MiB, cpu {} ms, timeout {} ms, stack {} KiB, input {} B, output {} B, handles {}, stdio {} B",
        l.memory_mib,
        l.cpu_ms,
        l.timeout_ms,
        l.stack_kib.unwrap_or_default(),
        l.max_input_bytes,
        l.max_output_bytes,
        l.resource_handles,
        l.stdio_bytes
    );
    out!("component sha256: {}", r.component_sha256);
    if let Some(digest) = &r.policy_sha256 {
        out!("policy sha256: {digest}");
    }
    for g in r.grants.iter().filter(|g| g.granted) {
        for line in &g.summary {
            out!("{line}");
        }
    }
    let ungranted: Vec<&str> = r.grants.iter().filter(|g| !g.granted).map(|g| g.capability).collect();
    if !ungranted.is_empty() {
        out!("not granted: {}", ungranted.join(", "));
    }
    for p in &r.problems {
        out!("problem: {p}");
    }
    for w in &r.warnings {
        out!("{}", warning(w));
    }
    out!();
    let refused = r.refused().count();
    let inert = r.imports.iter().filter(|d| d.verdict == Verdict::Inert).count();
    let warned = match r.warnings.len() {
        0 => String::new(),
        n => format!("; {n} warning(s)"),
    };
    if r.runnable && inert > 0 {
        out!(
            "verdict: runnable: every import is granted, {inert} of them inert (linked with nothing behind them){warned}"
        );
    } else if r.runnable {
        out!("verdict: runnable: every import is granted{warned}");
    } else if refused > 0 {
        out!("verdict: REFUSED: {refused} import(s) not granted{warned}");
    } else {
        out!("verdict: REFUSED{warned}");
    }
    Ok(())
}
