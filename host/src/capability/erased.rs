//! [`Capability`] behind one object-safe trait, so capabilities of
//! different types live in one registry.

use std::any::{Any, TypeId};
use std::sync::Arc;
use wasmtime::component::Linker;

use super::{AgentSettings, AuditWarning, Capability, Decision, GrantAudit, Interface, LoadContext, TaskContext};
use crate::error::PolicyError;
use crate::task_data::TaskData;

/// A parsed grant of some capability.
pub(crate) type ErasedGrant = Arc<dyn Any + Send + Sync>;
/// The agent state of some capability.
pub(crate) type ErasedAgentState = Arc<dyn Any + Send + Sync>;

pub(crate) trait DynCapability: Send + Sync {
    fn name(&self) -> &'static str;
    fn section(&self) -> &'static str;
    fn interfaces(&self) -> &[Interface];
    fn audit_name(&self, interface: &Interface) -> &'static str;
    fn counters(&self) -> &'static [&'static str];
    fn task_state_type(&self) -> TypeId;
    /// Parses and validates the section (`None`: absent).
    fn parse(&self, raw: Option<&toml::Value>) -> Result<Option<ErasedGrant>, String>;
    fn validate(&self, grant: &ErasedGrant) -> Result<(), PolicyError>;
    fn decide(&self, interface: &Interface, grant: Option<&ErasedGrant>) -> Decision;
    fn audit(&self, grant: Option<&ErasedGrant>, agent: &str) -> GrantAudit;
    fn warnings(&self, grant: &ErasedGrant) -> Vec<AuditWarning>;
    /// The grant an empty section gives, as JSON (the section's defaults),
    /// if an empty section parses.
    fn default_grant(&self) -> Option<serde_json::Value>;
    /// `None`: the grant did not change.
    fn diff(&self, old: Option<&ErasedGrant>, new: Option<&ErasedGrant>, agent: &str) -> Vec<String>;
    fn configure(&self, grant: Option<&ErasedGrant>, settings: &mut AgentSettings);
    fn link(&self, interface: &Interface, linker: &mut Linker<TaskData>) -> wasmtime::Result<()>;
    fn load(&self, grant: Option<&ErasedGrant>, cx: &LoadContext<'_>) -> Result<ErasedAgentState, String>;
    fn instantiate(&self, agent: &ErasedAgentState, cx: &TaskContext<'_>) -> (TypeId, Box<dyn Any + Send>);
    fn end_call(&self, task: &mut (dyn Any + Send));
}

fn typed<C: Capability>(grant: Option<&ErasedGrant>) -> Option<&C::Grant> {
    grant.and_then(|g| g.downcast_ref::<C::Grant>())
}

impl<C: Capability> DynCapability for C {
    fn name(&self) -> &'static str {
        Capability::name(self)
    }

    fn section(&self) -> &'static str {
        Capability::section(self)
    }

    fn interfaces(&self) -> &[Interface] {
        Capability::interfaces(self)
    }

    fn audit_name(&self, interface: &Interface) -> &'static str {
        Capability::audit_name(self, interface)
    }

    fn counters(&self) -> &'static [&'static str] {
        Capability::counters(self)
    }

    fn task_state_type(&self) -> TypeId {
        TypeId::of::<C::TaskState>()
    }

    fn parse(&self, raw: Option<&toml::Value>) -> Result<Option<ErasedGrant>, String> {
        let grant = match raw {
            Some(value) => Some(value.clone().try_into::<C::Grant>().map_err(|e| e.message().to_string())?),
            None => self.absent_grant(),
        };
        Ok(grant.map(|g| Arc::new(g) as ErasedGrant))
    }

    fn validate(&self, grant: &ErasedGrant) -> Result<(), PolicyError> {
        match grant.downcast_ref::<C::Grant>() {
            Some(g) => Capability::validate(self, g),
            None => Ok(()),
        }
    }

    fn decide(&self, interface: &Interface, grant: Option<&ErasedGrant>) -> Decision {
        Capability::decide(self, interface, typed::<C>(grant))
    }

    fn audit(&self, grant: Option<&ErasedGrant>, agent: &str) -> GrantAudit {
        let grant = typed::<C>(grant);
        GrantAudit {
            capability: Capability::name(self),
            section: Capability::section(self),
            granted: grant.is_some(),
            grant: grant.and_then(|g| serde_json::to_value(g).ok()),
            summary: grant.map(|g| self.describe(g, agent)).unwrap_or_default(),
        }
    }

    fn warnings(&self, grant: &ErasedGrant) -> Vec<AuditWarning> {
        grant.downcast_ref::<C::Grant>().map(|g| Capability::warnings(self, g)).unwrap_or_default()
    }

    fn default_grant(&self) -> Option<serde_json::Value> {
        let empty = toml::Value::Table(toml::Table::new());
        empty.try_into::<C::Grant>().ok().map(|g| super::to_json(&g))
    }

    fn diff(&self, old: Option<&ErasedGrant>, new: Option<&ErasedGrant>, agent: &str) -> Vec<String> {
        let name = Capability::name(self);
        match (typed::<C>(old), typed::<C>(new)) {
            (None, None) => Vec::new(),
            (None, Some(g)) => {
                let mut said = self.describe(g, agent);
                if said.is_empty() {
                    // What an import of it would be granted.
                    let first = Capability::interfaces(self).first();
                    if let Some(Decision::Granted(detail)) = first.map(|i| Capability::decide(self, i, Some(g))) {
                        said.push(detail);
                    }
                }
                let mut lines = vec![format!("gains {name}")];
                lines.extend(said.into_iter().map(|l| format!("  {}", l.trim_start())));
                lines
            }
            (Some(_), None) => vec![format!("loses {name}")],
            (Some(a), Some(b)) => Capability::diff(self, a, b),
        }
    }

    fn configure(&self, grant: Option<&ErasedGrant>, settings: &mut AgentSettings) {
        if let Some(g) = typed::<C>(grant) {
            Capability::configure(self, g, settings)
        }
    }

    fn link(&self, interface: &Interface, linker: &mut Linker<TaskData>) -> wasmtime::Result<()> {
        Capability::link(self, interface, linker)
    }

    fn load(&self, grant: Option<&ErasedGrant>, cx: &LoadContext<'_>) -> Result<ErasedAgentState, String> {
        Ok(Arc::new(Capability::load(self, typed::<C>(grant), cx)?))
    }

    fn instantiate(&self, agent: &ErasedAgentState, cx: &TaskContext<'_>) -> (TypeId, Box<dyn Any + Send>) {
        let agent = agent.downcast_ref::<C::AgentState>().expect("an agent state is built by its own capability");
        (TypeId::of::<C::TaskState>(), Box::new(Capability::instantiate(self, agent, cx)))
    }

    fn end_call(&self, task: &mut (dyn Any + Send)) {
        if let Some(task) = task.downcast_mut::<C::TaskState>() {
            Capability::end_call(self, task)
        }
    }
}
