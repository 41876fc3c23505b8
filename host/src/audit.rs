//! What an auditor sees of an agent before it runs: each import and whether
//! it is granted, the grants, and the limits in force.

use serde::Serialize;

use crate::capabilities::{ImportDecision, Verdict};
use crate::policy::{Capabilities, Limits, WasiGrant};

/// The audit of one component under one policy.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// The agent's name.
    pub agent: String,
    /// Component size in bytes.
    pub component_bytes: u64,
    /// Every import, judged.
    pub imports: Vec<ImportDecision>,
    /// The component's exports.
    pub exports: Vec<String>,
    /// The KV namespace the agent is bound to, if KV is granted.
    pub kv_namespace: Option<String>,
    /// The WASI baseline grant.
    pub wasi: WasiGrant,
    /// The capability grants, as written in the policy.
    pub capabilities: Capabilities,
    /// The limits in force.
    pub limits: Limits,
    /// The wasm stack the host enforces, in KiB.
    pub stack_kib: u64,
    /// `true` when every import is granted and the entry point is exported.
    pub runnable: bool,
    /// Problems other than imports (e.g. a missing entry point).
    pub problems: Vec<String>,
}

impl AuditReport {
    /// The imports that would be refused.
    pub fn refused(&self) -> impl Iterator<Item = &ImportDecision> {
        self.imports.iter().filter(|d| d.verdict == Verdict::Refused)
    }
}
