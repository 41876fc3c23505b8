//! `chimera audit --config`: a whole deployment as an auditor signs it
//! off — every agent's audit and pins, the `tasks` call graph with the
//! worst case one submitted task can set off along it, and the KV
//! namespaces agents share.

use super::digest::sha256_hex;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::{AuditReport, AuditWarning, AUDIT_SCHEMA_VERSION};
use crate::capabilities::kv::KvGrant;
use crate::capabilities::outbound_http::HttpGrant;
use crate::capabilities::tasks::TasksGrant;
use crate::capability::Verdict;
use crate::server::{AgentConfig, ServeConfig};
use crate::{Host, Policy};

/// A task that can set off more tasks than this (fan-out × depth) is warned of.
pub const LARGE_FAN_OUT: u64 = 1_000;

/// The audit of a deployment (a `chimera serve` config).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DeploymentAudit {
    /// [`AUDIT_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Each `[[agents]]` entry, in order.
    pub agents: Vec<DeployedAgent>,
    /// Each call an agent's `tasks` grant allows (when it imports `tasks`).
    pub calls: Vec<CallEdge>,
    /// For each agent that may call others: the most one of its tasks can
    /// set off along the call graph.
    pub chains: Vec<CallChainBound>,
    /// KV namespaces granted to more than one agent.
    pub shared_namespaces: Vec<SharedNamespace>,
    /// Each secret the config defines or a policy names: where its value
    /// comes from (never the value) and where agents' rules send it.
    pub secrets: Vec<SecretUse>,
    /// Warnings about the deployment as a whole (each agent's own are in its audit).
    pub warnings: Vec<AuditWarning>,
    /// What keeps the deployment from starting: refused agents, pin mismatches.
    pub problems: Vec<String>,
    /// `true` when `chimera serve` would start it.
    pub runnable: bool,
}

/// One agent of a deployment.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DeployedAgent {
    /// Its name in the config.
    pub name: String,
    /// Its component file.
    pub component: String,
    /// Its policy file, if any.
    pub policy: Option<String>,
    /// Its tasks that may run at once.
    pub max_concurrency: usize,
    /// The config's `sha256` against the component's digest.
    pub component_pin: PinStatus,
    /// The config's `policy_sha256` against the policy file's digest.
    pub policy_pin: PinStatus,
    /// The audit of its component under its policy (`None` if either could not be read).
    pub audit: Option<AuditReport>,
}

/// A digest pinned in the config, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PinStatus {
    /// Nothing is pinned.
    Unpinned,
    /// The file has the pinned digest.
    Matches,
    /// The file has another digest: the daemon refuses the agent.
    Mismatch,
}

impl PinStatus {
    /// `pinned` (if any) against `actual`.
    pub fn of(pinned: Option<&str>, actual: &str) -> PinStatus {
        match pinned {
            None => PinStatus::Unpinned,
            Some(p) if p == actual => PinStatus::Matches,
            Some(_) => PinStatus::Mismatch,
        }
    }
}

/// One call a `tasks` grant allows.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct CallEdge {
    /// The agent calling.
    pub caller: String,
    /// The agent it may call.
    pub callee: String,
    /// The digest the grant pins the callee to, if any.
    pub pinned_sha256: Option<String>,
    /// The callee's digest in this deployment (`None`: not deployed).
    pub callee_sha256: Option<String>,
    /// `ok`, `unknown-callee` (no such agent here: its calls fail) or
    /// `digest-mismatch` (the daemon refuses the deployment).
    pub status: &'static str,
}

/// The worst case of one task of `root` along the call graph: every task
/// making all the calls its fan-out allows, each to the costliest callee,
/// down to the depth the chain allows. Calls are synchronous, so the tasks
/// alive at once are one path: memory adds up along the deepest path; CPU
/// and requests add up over the whole tree. Every child shares the root's
/// deadline, so the tree's wall-clock time is the root's timeout.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct CallChainBound {
    /// The agent submitted.
    pub root: String,
    /// The deepest call reached (the root is depth 0).
    pub max_depth: u32,
    /// Tasks in the tree, the root included (saturates at `u64::MAX`).
    pub worst_case_tasks: u64,
    /// Memory of the tasks alive at once along the costliest path, in MiB.
    pub peak_memory_mib: u64,
    /// CPU of the whole tree, in milliseconds.
    pub total_cpu_ms: u64,
    /// Outbound HTTP requests of the whole tree.
    pub total_requests: u64,
    /// Wall-clock bound of the whole tree (the root's `timeout_ms`).
    pub timeout_ms: u64,
    /// The path that holds the most memory at once, root first.
    pub deepest_path: Vec<String>,
}

/// A KV namespace more than one agent is granted.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct SharedNamespace {
    /// The namespace.
    pub namespace: String,
    /// The agents granted it, and whether each may write.
    pub agents: Vec<(String, bool)>,
}

/// One secret of a deployment.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct SecretUse {
    /// Its name.
    pub secret: String,
    /// `env VARIABLE`, `file PATH`, or `not defined` (the daemon refuses
    /// the agents that name it).
    pub source: String,
    /// Each rule that adds it: `agent: Header to URL`.
    pub sent_by: Vec<String>,
}

/// What the deployment audit knows of one agent, for the call graph.
struct Node {
    /// The secrets its outbound-http rules add: (secret, `Header to URL`).
    secrets: Vec<(String, String)>,
    policy: Policy,
    digest: String,
    /// Its `tasks` grant, when it imports `tasks` and is granted it.
    calls: Option<TasksGrant>,
    /// Requests per task, when it imports outbound-http and is granted it.
    requests: u64,
}

/// Audits every agent `config` names with `host`'s capabilities, and the
/// deployment they make together. Nothing runs; files that cannot be read
/// are problems of the audit, not errors.
pub fn audit_deployment(host: &Host, config: &ServeConfig) -> DeploymentAudit {
    let mut problems = Vec::new();
    let mut agents = Vec::new();
    let mut nodes: HashMap<String, Node> = HashMap::new();
    for a in &config.agents {
        let (deployed, node) = audit_agent(host, a, &mut problems);
        if let Some(node) = node {
            nodes.insert(a.name.clone(), node);
        }
        agents.push(deployed);
    }
    let mut warnings = Vec::new();
    let mut calls = Vec::new();
    for a in &config.agents {
        let Some(grant) = nodes.get(&a.name).and_then(|n| n.calls.as_ref()) else { continue };
        for c in grant.callees() {
            let callee_sha256 = nodes.get(c.name).map(|n| n.digest.clone());
            let status = match &callee_sha256 {
                None => {
                    warnings.push(AuditWarning::new(
                        "unknown-callee",
                        format!("{}: capabilities.tasks.allow", a.name),
                        format!(
                            "`{}` may call `{}`, which this deployment does not run: its calls fail",
                            a.name, c.name
                        ),
                    ));
                    "unknown-callee"
                }
                Some(d) if !c.admits(d) => {
                    problems.push(format!(
                        "`{}` pins its callee `{}` to sha256:{}, but this deployment's `{}` is sha256:{d}",
                        a.name,
                        c.name,
                        c.sha256.unwrap_or_default(),
                        c.name
                    ));
                    "digest-mismatch"
                }
                Some(_) => "ok",
            };
            calls.push(CallEdge {
                caller: a.name.clone(),
                callee: c.name.to_string(),
                pinned_sha256: c.sha256.map(str::to_string),
                callee_sha256,
                status,
            });
        }
    }
    let chains: Vec<CallChainBound> = config
        .agents
        .iter()
        .filter(|a| nodes.get(&a.name).is_some_and(|n| n.calls.is_some()))
        .map(|a| chain_bound(&nodes, &a.name))
        .collect();
    for c in chains.iter().filter(|c| c.worst_case_tasks > LARGE_FAN_OUT) {
        warnings.push(AuditWarning::new(
            "large-fan-out",
            format!("{}: capabilities.tasks", c.root),
            format!(
                "one task of `{}` may set off {} tasks (fan-out at each of {} levels): lower max_fan_out or max_depth",
                c.root, c.worst_case_tasks, c.max_depth
            ),
        ));
    }
    let secrets = secret_uses(config, &nodes, &mut warnings, &mut problems);
    let shared_namespaces = shared_namespaces(&agents, &nodes);
    for s in &shared_namespaces {
        let names: Vec<&str> = s.agents.iter().map(|(n, _)| n.as_str()).collect();
        let writers: Vec<&str> = s.agents.iter().filter(|(_, w)| *w).map(|(n, _)| n.as_str()).collect();
        let what = match writers.as_slice() {
            [] => "all read-only: none can change what the others read".to_string(),
            [one] => format!("{one} writes what the others read"),
            many => format!("{} each overwrite the others' keys, and all read them", many.join(", ")),
        };
        warnings.push(AuditWarning::new(
            "shared-namespace",
            format!("namespace {}", s.namespace),
            format!("the KV namespace `{}` is granted to {}: {what}", s.namespace, names.join(", ")),
        ));
    }
    let runnable = problems.is_empty() && agents.iter().all(|a| a.audit.as_ref().is_some_and(|r| r.runnable));
    DeploymentAudit {
        schema_version: AUDIT_SCHEMA_VERSION,
        agents,
        calls,
        chains,
        shared_namespaces,
        secrets,
        warnings,
        problems,
        runnable,
    }
}

/// Where each secret comes from and goes; a secret named but not defined
/// is a problem (the daemon would refuse), one defined but never sent a warning.
fn secret_uses(
    config: &ServeConfig,
    nodes: &HashMap<String, Node>,
    warnings: &mut Vec<AuditWarning>,
    problems: &mut Vec<String>,
) -> Vec<SecretUse> {
    let mut uses: BTreeMap<String, Vec<String>> = config.secrets.keys().map(|k| (k.clone(), Vec::new())).collect();
    for a in &config.agents {
        for (secret, rule) in nodes.get(&a.name).map_or(&[][..], |n| &n.secrets[..]) {
            uses.entry(secret.clone()).or_default().push(format!("{}: {rule}", a.name));
            if !config.secrets.contains_key(secret) {
                problems.push(format!(
                    "agent `{}` adds secret `{secret}` ({rule}), which the config's [secrets] does not define",
                    a.name
                ));
            }
        }
    }
    uses.into_iter()
        .map(|(secret, sent_by)| {
            let source = match config.secrets.get(&secret) {
                Some(s) => match (&s.env, &s.file) {
                    (Some(var), _) => format!("env {var}"),
                    (None, Some(file)) => format!("file {}", file.display()),
                    (None, None) => "no source".to_string(),
                },
                None => "not defined".to_string(),
            };
            if sent_by.is_empty() {
                warnings.push(AuditWarning::new(
                    "unused-secret",
                    format!("secrets.{secret}"),
                    format!("the secret `{secret}` is defined but no agent's rule adds it: remove it from [secrets]"),
                ));
            }
            SecretUse { secret, source, sent_by }
        })
        .collect()
}

fn audit_agent(host: &Host, a: &AgentConfig, problems: &mut Vec<String>) -> (DeployedAgent, Option<Node>) {
    let show = |p: &Path| p.display().to_string();
    let mut deployed = DeployedAgent {
        name: a.name.clone(),
        component: show(&a.component),
        policy: a.policy.as_deref().map(show),
        max_concurrency: a.max_concurrency,
        component_pin: PinStatus::Unpinned,
        policy_pin: PinStatus::Unpinned,
        audit: None,
    };
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("agent `{}`: cannot read {}: {e}", a.name, p.display()));
    let policy_bytes = match a.policy.as_deref().map(read).transpose() {
        Ok(bytes) => bytes,
        Err(e) => {
            problems.push(e);
            return (deployed, None);
        }
    };
    let policy = match &a.policy {
        Some(p) => match Policy::from_file_with(p, host.capabilities()) {
            Ok(policy) => policy,
            Err(e) => {
                problems.push(format!("agent `{}`: {e}", a.name));
                return (deployed, None);
            }
        },
        None => Policy::default(),
    };
    let policy_digest = policy_bytes.as_deref().map(sha256_hex);
    if let Some(digest) = &policy_digest {
        deployed.policy_pin = PinStatus::of(a.policy_sha256.as_deref(), digest);
    }
    let component = match read(&a.component) {
        Ok(bytes) => bytes,
        Err(e) => {
            problems.push(e);
            return (deployed, None);
        }
    };
    let digest = sha256_hex(&component);
    deployed.component_pin = PinStatus::of(a.sha256.as_deref(), &digest);
    let pins = [
        ("component", "sha256", deployed.component_pin, Some(&digest), &a.sha256),
        ("policy", "policy_sha256", deployed.policy_pin, policy_digest.as_ref(), &a.policy_sha256),
    ];
    for (what, key, status, actual, pinned) in pins {
        if let (PinStatus::Mismatch, Some(actual), Some(pinned)) = (status, actual, pinned) {
            problems.push(format!(
                "agent `{}`: its {what} has sha256 {actual}, but the config pins {key} = \"{pinned}\"",
                a.name
            ));
        }
    }
    let mut report = match host.audit(&a.name, &component, &policy) {
        Ok(report) => report,
        Err(e) => {
            problems.push(e.to_string());
            return (deployed, None);
        }
    };
    if let Some(bytes) = &policy_bytes {
        report = report.with_policy_file(bytes);
    }
    let imports = |section: &str| {
        let header = format!("[{section}]");
        report.imports.iter().any(|d| d.verdict == Verdict::Granted && d.policy_section.as_deref() == Some(&header))
    };
    let calls = if imports("capabilities.tasks") { policy.grant::<TasksGrant>().ok().flatten() } else { None };
    let http = if imports("capabilities.outbound_http") { policy.grant::<HttpGrant>().ok().flatten() } else { None };
    let requests = http.as_ref().map_or(0, |g| g.max_requests.into());
    let secrets = http
        .iter()
        .flat_map(|g| &g.allow)
        .flat_map(|rule| {
            rule.secret_headers.iter().map(move |h| (h.secret.clone(), format!("{} to {}", h.name, rule.url)))
        })
        .collect();
    if !report.runnable {
        problems.push(format!("agent `{}` is refused (see its audit)", a.name));
    }
    deployed.audit = Some(report);
    (deployed, Some(Node { secrets, policy, digest, calls, requests }))
}

/// The namespaces more than one agent is granted (through an import of kv).
fn shared_namespaces(agents: &[DeployedAgent], nodes: &HashMap<String, Node>) -> Vec<SharedNamespace> {
    let mut by_namespace: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    for a in agents {
        let (Some(report), Some(node)) = (&a.audit, nodes.get(&a.name)) else { continue };
        let uses_kv = report
            .imports
            .iter()
            .any(|d| d.verdict == Verdict::Granted && d.policy_section.as_deref() == Some("[capabilities.kv]"));
        let Some(grant) = node.policy.grant::<KvGrant>().ok().flatten().filter(|_| uses_kv) else { continue };
        by_namespace.entry(grant.namespace_of(&a.name)).or_default().push((a.name.clone(), !grant.read_only));
    }
    by_namespace
        .into_iter()
        .filter(|(_, agents)| agents.len() > 1)
        .map(|(namespace, agents)| SharedNamespace { namespace, agents })
        .collect()
}

/// The worst case below one task, computed once per (agent, depth, chain limit).
#[derive(Clone)]
struct Bound {
    tasks: u64,
    depth: u32,
    memory: u64,
    cpu: u64,
    requests: u64,
    path: Vec<String>,
}

fn chain_bound(nodes: &HashMap<String, Node>, root: &str) -> CallChainBound {
    let mut memo = HashMap::new();
    let b = bound(nodes, root, 0, None, &mut memo);
    CallChainBound {
        root: root.to_string(),
        max_depth: b.depth,
        worst_case_tasks: b.tasks,
        peak_memory_mib: b.memory,
        total_cpu_ms: b.cpu,
        total_requests: b.requests,
        timeout_ms: nodes[root].policy.limits.timeout_ms,
        deepest_path: b.path,
    }
}

/// The worst case of a task of `agent` at `depth` in a chain limited to
/// `max_depth` (`None` at the root): the rule the `tasks` capability
/// enforces, where each call's limit is the smaller of the chain's and the
/// caller's own `max_depth` counted from where it stands.
fn bound(
    nodes: &HashMap<String, Node>,
    agent: &str,
    depth: u32,
    max_depth: Option<u32>,
    memo: &mut HashMap<(String, u32, Option<u32>), Bound>,
) -> Bound {
    let key = (agent.to_string(), depth, max_depth);
    if let Some(b) = memo.get(&key) {
        return b.clone();
    }
    let node = &nodes[agent];
    let own = &node.policy.limits;
    let mut b = Bound {
        tasks: 1,
        depth,
        memory: own.memory_mib,
        cpu: own.cpu_ms,
        requests: node.requests,
        path: vec![agent.to_string()],
    };
    if let Some(grant) = &node.calls {
        let limit = max_depth.unwrap_or(grant.max_depth).min(grant.max_depth + depth);
        if depth < limit {
            let fan_out = u64::from(grant.max_fan_out);
            let children: Vec<Bound> = grant
                .callees()
                .filter(|c| nodes.get(c.name).is_some_and(|n| c.admits(&n.digest)))
                .map(|c| bound(nodes, c.name, depth + 1, Some(limit), memo))
                .collect();
            if let Some(worst) = children.iter().max_by_key(|c| c.tasks) {
                b.tasks = b.tasks.saturating_add(fan_out.saturating_mul(worst.tasks));
            }
            if let Some(worst) = children.iter().map(|c| c.cpu).max() {
                b.cpu = b.cpu.saturating_add(fan_out.saturating_mul(worst));
            }
            if let Some(worst) = children.iter().map(|c| c.requests).max() {
                b.requests = b.requests.saturating_add(fan_out.saturating_mul(worst));
            }
            if let Some(deepest) = children.iter().max_by_key(|c| (c.memory, c.depth)) {
                b.memory = b.memory.saturating_add(deepest.memory);
                b.path.extend(deepest.path.iter().cloned());
            }
            b.depth = children.iter().map(|c| c.depth).max().unwrap_or(depth);
        }
    }
    memo.insert(key, b.clone());
    b
}
