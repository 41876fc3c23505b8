//! What an auditor sees of an agent before it runs: each import and whether
//! it is granted, what each capability's grant gives, and the limits in force.

use serde::Serialize;

mod checks;
#[cfg(feature = "daemon")]
mod deployment;
mod diff;
mod digest;

pub use crate::capability::AuditWarning;
pub(crate) use checks::policy_warnings;
pub use checks::FAR_ABOVE_DEFAULT;
#[cfg(feature = "daemon")]
pub use deployment::{
    audit_deployment, CallChainBound, CallEdge, DeployedAgent, DeploymentAudit, PinStatus, SharedNamespace,
};
pub use diff::{diff_fields, diff_imports, diff_limits, diff_policies};
pub use digest::{is_sha256_hex, sha256_hex, SHA256_FORM};

use crate::capability::{GrantAudit, ImportDecision, Verdict};
use crate::policy::Limits;

/// The version of [`AuditReport`]'s JSON form: raised when a field changes
/// meaning or goes away (new fields may appear without it).
pub const AUDIT_SCHEMA_VERSION: u32 = 1;

/// The audit of one component under one policy.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct AuditReport {
    /// [`AUDIT_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The agent's name.
    pub agent: String,
    /// Component size in bytes.
    pub component_bytes: u64,
    /// The component's SHA-256, in hex.
    pub component_sha256: String,
    /// The SHA-256 of the policy file, in hex, when the audit was of one
    /// (see [`AuditReport::with_policy_file`]): what `sha256sum` prints for it.
    pub policy_sha256: Option<String>,
    /// Every import, judged.
    pub imports: Vec<ImportDecision>,
    /// The component's exports.
    pub exports: Vec<String>,
    /// Each capability of the host and what the policy grants through it.
    pub grants: Vec<GrantAudit>,
    /// The limits in force (`stack_kib` is the host's, which every agent gets).
    pub limits: Limits,
    /// `true` when every import is granted and the entry point is exported.
    pub runnable: bool,
    /// Problems other than imports (e.g. a missing entry point).
    pub problems: Vec<String>,
    /// What is risky or odd in the policy (the agent still loads; see
    /// `chimera audit --deny-warnings`).
    pub warnings: Vec<AuditWarning>,
}

impl AuditReport {
    /// Records the digest of the policy file the audited policy was read
    /// from (its bytes as on disk).
    pub fn with_policy_file(mut self, bytes: &[u8]) -> Self {
        self.policy_sha256 = Some(crate::loader::hex(&<sha2::Sha256 as sha2::Digest>::digest(bytes)));
        self
    }

    /// The imports that would be refused.
    pub fn refused(&self) -> impl Iterator<Item = &ImportDecision> {
        self.imports.iter().filter(|d| d.verdict == Verdict::Refused)
    }

    /// What the policy grants through `capability`, if the host has it.
    pub fn grant(&self, capability: &str) -> Option<&GrantAudit> {
        self.grants.iter().find(|g| g.capability == capability)
    }
}
