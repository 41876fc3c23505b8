//! The warnings every policy gets, whatever its capabilities: limits far
//! above their defaults, and grants the component never uses. Each
//! capability adds its own ([`Capability::warnings`](crate::Capability::warnings)).

use serde_json::Value;

use crate::capability::{AuditWarning, Grants, ImportDecision, Registry};
use crate::policy::{Limits, Policy};

/// A limit at least this many times its default is "far above" it.
pub const FAR_ABOVE_DEFAULT: u64 = 10;

/// Every warning of `policy` (as parsed into `grants`); with the
/// component's `imports`, also the grants it never uses.
pub(crate) fn policy_warnings(
    registry: &Registry,
    policy: &Policy,
    grants: &Grants,
    agent: &str,
    imports: Option<&[ImportDecision]>,
) -> Vec<AuditWarning> {
    let mut out = Vec::new();
    let limits = crate::capability::to_json(&policy.limits);
    high_values("limits", &limits, &crate::capability::to_json(&Limits::default()), &mut out);
    for i in 0..registry.len() {
        let cap = registry.get(i);
        let Some(grant) = grants.get(i) else { continue };
        out.extend(cap.warnings(grant));
        let section = cap.section();
        if policy.section(section).is_none() {
            // Granted by default, not by this policy: nothing it chose.
            continue;
        }
        if let (Some(value), Some(default)) = (cap.audit(Some(grant), agent).grant, cap.default_grant()) {
            high_values(section, &value, &default, &mut out);
        }
        let header = format!("[{section}]");
        if let Some(imports) = imports {
            if !imports.iter().any(|d| d.policy_section.as_deref() == Some(header.as_str())) {
                out.push(AuditWarning::new(
                    "unused-grant",
                    section,
                    format!(
                        "{header} grants {}, but the component imports none of its interfaces: remove the \
                         section (an unused grant is what a replaced component would get for free)",
                        cap.name()
                    ),
                ));
            }
        }
    }
    out
}

/// A warning for each number of `value` at least [`FAR_ABOVE_DEFAULT`]
/// times the same field of `default`.
fn high_values(section: &str, value: &Value, default: &Value, out: &mut Vec<AuditWarning>) {
    let (Some(fields), Some(defaults)) = (value.as_object(), default.as_object()) else { return };
    for (key, v) in fields {
        let (Some(v), Some(d)) = (v.as_u64(), defaults.get(key).and_then(Value::as_u64)) else { continue };
        if d > 0 && v >= d.saturating_mul(FAR_ABOVE_DEFAULT) {
            out.push(AuditWarning::new(
                "high-limit",
                format!("{section}.{key}"),
                format!(
                    "{section}.{key} = {v} is {}× the default ({d}): each task of the agent may use that much",
                    v / d
                ),
            ));
        }
    }
}
