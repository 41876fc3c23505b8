//! Loading agents: compile within the load budget, judge every import
//! against the policy through the capability registry, link only what is
//! granted and pre-instantiate; and the audit, which runs the same checks
//! without building the agent.

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::Path;
use wasmparser::{
    ComponentAlias, ComponentExternalKind, ComponentInstance, ComponentOuterAliasKind, ComponentTypeRef, Encoding,
    Instance, Parser, Payload,
};
use wasmtime::component::{Component, Linker};

use crate::agent::{ActiveCapability, Agent};
use crate::audit::AuditReport;
use crate::bindings::AgentPre;
use crate::capability::{AgentSettings, Grants, ImportDecision, Interface, LoadContext, Verdict};
use crate::compile::{CompileFailure, Compiler};
use crate::error::{LoadError, Ungranted};
use crate::host::HostInner;
use crate::policy::{check_name, Limits, Policy};
use crate::task_data::TaskData;

impl HostInner {
    /// Compiles a component within the host's load budget (size, then
    /// compile time and memory in a child process; see [`crate::compile`]),
    /// with an error that says what to do if the bytes are not one.
    pub(crate) fn compile(&self, what: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        let invalid = |reason: String| LoadError::InvalidComponent { what: what.to_string(), reason };
        let budget = &self.config.load_budget;
        if bytes.len() as u64 > budget.max_component_bytes {
            return Err(LoadError::Budget {
                what: what.to_string(),
                key: "max_component_bytes",
                detail: format!(
                    "the component is {} bytes; at most {} are accepted",
                    bytes.len(),
                    budget.max_component_bytes
                ),
            });
        }
        if bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0] {
            return Err(invalid(
                "it is a core wasm module, not a component; wrap it with `chimera componentize <module.wasm> -o <component.wasm>`".into(),
            ));
        }
        if bytes.len() < 8 || bytes[..4] != *b"\0asm" {
            return Err(invalid("it does not start with the wasm magic bytes".into()));
        }
        let compile = || -> Result<Vec<u8>, CompileFailure> {
            match &self.config.compiler {
                Compiler::InProcess => {
                    self.engine.precompile_component(bytes).map_err(|e| CompileFailure::Invalid(format!("{e:#}")))
                }
                Compiler::Subprocess(program) => {
                    let program = crate::compile::worker_program(program).map_err(CompileFailure::Worker)?;
                    let scratch =
                        self.config.compile_cache_dir.clone().unwrap_or_else(|| self.config.data_dir.join("compiled"));
                    crate::compile::in_subprocess(&program, &self.engine_settings, budget, &scratch, bytes)
                }
            }
        };
        let artifact = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, bytes, &self.metrics, compile),
            None => {
                compile().and_then(|a| crate::cache::deserialize(&self.engine, &a).map_err(CompileFailure::Unloadable))
            }
        };
        artifact.map_err(|failure| match failure {
            CompileFailure::Invalid(reason) | CompileFailure::Unloadable(reason)
                if reason.contains("pooling allocator") =>
            {
                // Valid wasm, but larger than this host's instance pool admits.
                LoadError::Unsupported { agent: what.to_string(), reason: format!("{reason}; this host refuses it") }
            }
            CompileFailure::Unloadable(reason) => LoadError::Compiler { what: what.to_string(), reason },
            CompileFailure::Invalid(reason) => invalid(reason),
            CompileFailure::Budget { key, detail } => {
                self.metrics.load_refused("load-budget");
                LoadError::Budget { what: what.to_string(), key, detail }
            }
            CompileFailure::Worker(reason) => LoadError::Compiler { what: what.to_string(), reason },
        })
    }

    /// Judges every import of `component` against `policy` without running
    /// anything.
    pub(crate) fn audit(&self, name: &str, bytes: &[u8], policy: &Policy) -> Result<AuditReport, LoadError> {
        let grants = policy.grants(&self.registry)?;
        let component = self.compile(name, bytes)?;
        let (imports, exports) = self.judge(&component, &grants);
        let mut problems = Vec::new();
        if let Err(reason) = self.check_limits(policy) {
            problems.push(reason);
        }
        if let Err(e) = check_counts(name, &component, bytes, &policy.limits) {
            problems.push(e.to_string());
        }
        if !exports.iter().any(|e| e == "run") {
            problems.push("does not export `run` (world chimera:agent/agent)".to_string());
        }
        let refused = imports.iter().any(|d| d.verdict == Verdict::Refused);
        if !refused {
            // The same link `load` performs: a version or type the host's
            // interfaces do not match is found here, not at run time.
            if let Err(e) = self.link(name, &component, &imports) {
                problems.push(e.to_string());
            }
        }
        let runnable = problems.is_empty() && !refused;
        let warnings = crate::audit::policy_warnings(&self.registry, policy, &grants, name, Some(&imports));
        let grants = (0..self.registry.len()).map(|i| self.registry.get(i).audit(grants.get(i), name)).collect();
        let mut limits = policy.limits.clone();
        limits.stack_kib = Some(self.config.stack_kib);
        Ok(AuditReport {
            schema_version: crate::audit::AUDIT_SCHEMA_VERSION,
            agent: name.to_string(),
            component_bytes: bytes.len() as u64,
            component_sha256: hex(&Sha256::digest(bytes)),
            policy_sha256: None,
            imports,
            exports,
            grants,
            limits,
            runnable,
            problems,
            warnings,
        })
    }

    fn judge(&self, component: &Component, grants: &Grants) -> (Vec<ImportDecision>, Vec<String>) {
        let ty = component.component_type();
        let imports = ty.imports(&self.engine).map(|(name, _)| self.registry.decide(name, grants)).collect();
        let exports = ty.exports(&self.engine).map(|(name, _)| name.to_string()).collect();
        (imports, exports)
    }

    fn check_limits(&self, policy: &Policy) -> Result<(), String> {
        if self.config.pooling && policy.limits.memory_mib > self.config.max_memory_mib {
            return Err(format!(
                "the policy asks for memory_mib = {}, but this host's instance pool allows at most {} MiB per instance",
                policy.limits.memory_mib, self.config.max_memory_mib
            ));
        }
        if self.config.pooling && policy.limits.table_elements > self.config.max_table_elements {
            return Err(format!(
                "the policy asks for table_elements = {}, but this host's instance pool allows at most {} per table",
                policy.limits.table_elements, self.config.max_table_elements
            ));
        }
        // Each agent's share of the pool: what one of its instances may take
        // must fit what the pool holds per component, so no agent's
        // instances can take more than their share of the pool's memories,
        // tables and core instances.
        if self.config.pooling {
            let c = &self.config;
            let l = &policy.limits;
            for (key, asked, cap, field) in [
                ("instances", l.instances, c.max_core_instances_per_component, "max_core_instances_per_component"),
                ("memories", l.memories, c.max_memories_per_component, "max_memories_per_component"),
                ("tables", l.tables, c.max_tables_per_component, "max_tables_per_component"),
            ] {
                if asked > cap {
                    return Err(format!(
                        "the policy asks for [limits] {key} = {asked}, but this host's instance pool allows at most {cap} \
                         per instance (HostConfig::{field})"
                    ));
                }
            }
        }
        if let Some(stack) = policy.limits.stack_kib {
            if stack != self.config.stack_kib {
                return Err(format!(
                    "the policy asks for stack_kib = {stack}, but this host enforces {} KiB for every agent; \
                     remove stack_kib from the policy or run the host with that stack",
                    self.config.stack_kib
                ));
            }
        }
        Ok(())
    }

    /// Loads an agent from a component file; its name is the policy's
    /// `[agent] name` or the file stem.
    pub(crate) fn load_file(&self, path: &Path, policy: Policy) -> Result<Agent, LoadError> {
        let bytes = std::fs::read(path)
            .map_err(|e| LoadError::Read { path: path.display().to_string(), reason: e.to_string() })?;
        let name = agent_name(path, &policy);
        self.load(&name, &bytes, policy)
    }

    /// Loads an agent: compiles it, refuses it if it imports anything the
    /// policy does not grant (naming every such import), links only the
    /// granted interfaces, builds the state of each capability it links and
    /// pre-instantiates it.
    pub(crate) fn load(&self, name: &str, bytes: &[u8], policy: Policy) -> Result<Agent, LoadError> {
        let grants = policy.grants(&self.registry)?;
        check_name("agent name", name)?;
        self.check_limits(&policy).map_err(|reason| LoadError::Unsupported { agent: name.to_string(), reason })?;
        let component = self.compile(name, bytes)?;
        check_counts(name, &component, bytes, &policy.limits)?;
        let (imports, _) = self.judge(&component, &grants);
        let ungranted: Vec<Ungranted> = imports
            .iter()
            .filter(|d| d.verdict == Verdict::Refused)
            .map(|d| Ungranted { import: d.import.clone(), reason: d.detail.clone() })
            .collect();
        if !ungranted.is_empty() {
            for d in imports.iter().filter(|d| d.verdict == Verdict::Refused) {
                self.metrics.load_refused(d.capability);
            }
            return Err(LoadError::Ungranted { agent: name.to_string(), ungranted });
        }
        let pre = self.link(name, &component, &imports)?;
        let mut settings = AgentSettings::default();
        for i in 0..self.registry.len() {
            self.registry.get(i).configure(grants.get(i), &mut settings);
        }
        let linked: BTreeSet<usize> = imports.iter().filter_map(|d| d.link.map(|(i, _)| i)).collect();
        let kv = || self.kv_backend().map_err(|e| e.to_string());
        let interfaces: Vec<Interface> = imports.iter().filter_map(|d| d.link.map(|(_, i)| i)).collect();
        let cx = LoadContext { agent: name, limits: &policy.limits, kv: &kv, linked: &interfaces };
        let (mut active, mut counter_layout, mut offset) = (Vec::new(), Vec::new(), 0);
        for i in linked {
            let cap = self.registry.get(i).clone();
            let state = cap
                .load(grants.get(i), &cx)
                .map_err(|reason| LoadError::Unsupported { agent: name.to_string(), reason })?;
            counter_layout.push((cap.name(), cap.counters()));
            active.push(ActiveCapability { cap: cap.clone(), state, counter_offset: offset });
            offset += cap.counters().len();
        }
        Ok(Agent {
            name: name.into(),
            policy: std::sync::Arc::new(policy),
            pre,
            imports,
            active,
            counter_layout,
            settings,
            metrics: self.metrics.for_agent(name),
            slots: crate::concurrency::Slots::unlimited(),
            digest: hex(&Sha256::digest(bytes)),
        })
    }

    /// Links the granted and inert imports (each interface once) and
    /// pre-instantiates: the check `audit` runs too, so it never calls
    /// runnable what `load` refuses.
    fn link(
        &self,
        name: &str,
        component: &Component,
        imports: &[ImportDecision],
    ) -> Result<AgentPre<TaskData>, LoadError> {
        let link_err = |e: wasmtime::Error| LoadError::Link { agent: name.to_string(), reason: format!("{e:#}") };
        let mut linker: Linker<TaskData> = Linker::new(&self.engine);
        let mut linked: Vec<(usize, Interface)> = Vec::new();
        for d in imports {
            // Two versions of one interface share one implementation: add it once.
            if let Some(link) = d.link {
                if !linked.contains(&link) {
                    self.registry.get(link.0).link(&link.1, &mut linker).map_err(link_err)?;
                    linked.push(link);
                }
            }
        }
        let pre = linker.instantiate_pre(component).map_err(link_err)?;
        AgentPre::new(pre)
            .map_err(|e| LoadError::MissingEntryPoint { agent: name.to_string(), reason: format!("{e:#}") })
    }
}

/// Refuses a component that would create more core instances, memories or
/// tables than its policy allows: counted from the component before it
/// ever runs (wasmtime enforces the same limits again while instantiating).
fn check_counts(name: &str, component: &Component, bytes: &[u8], limits: &Limits) -> Result<(), LoadError> {
    let over = |resource: &str, needs: u64, key: &'static str, limit: u64| {
        Err(LoadError::OverLimit {
            agent: name.to_string(),
            detail: format!("the component creates {needs} {resource}"),
            key,
            limit,
        })
    };
    let instances =
        core_instantiations(bytes).map_err(|reason| LoadError::InvalidComponent { what: name.to_string(), reason })?;
    if instances > limits.instances.into() {
        return over("core instances", instances, "[limits] instances", limits.instances.into());
    }
    if let Some(r) = component.resources_required() {
        if u64::from(r.num_memories) > limits.memories.into() {
            return over("linear memories", r.num_memories.into(), "[limits] memories", limits.memories.into());
        }
        if u64::from(r.num_tables) > limits.tables.into() {
            return over("tables", r.num_tables.into(), "[limits] tables", limits.tables.into());
        }
    }
    Ok(())
}

/// How many core module instances instantiating the component creates:
/// each `instantiate` of a core module, and for each instantiation of a
/// nested component, what that component creates. A component imported or
/// taken from an instance counts as none (the host's linker provides no
/// components).
fn core_instantiations(bytes: &[u8]) -> Result<u64, String> {
    struct Frame {
        /// What instantiating each component of the index space creates.
        components: Vec<u64>,
        creates: u64,
        module: bool,
    }
    let mut stack: Vec<Frame> = Vec::new();
    let err = |e: wasmparser::BinaryReaderError| e.to_string();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(err)?;
        if let Payload::Version { encoding, .. } = payload {
            stack.push(Frame { components: Vec::new(), creates: 0, module: encoding == Encoding::Module });
            continue;
        }
        if let Payload::End(_) = payload {
            let done = stack.pop().ok_or("unbalanced component sections")?;
            match stack.last_mut() {
                Some(parent) if !done.module => parent.components.push(done.creates),
                Some(_) => {}
                None => return Ok(done.creates),
            }
            continue;
        }
        let depth = stack.len();
        let Some(frame) = stack.last_mut().filter(|f| !f.module) else { continue };
        match payload {
            Payload::InstanceSection(reader) => {
                for instance in reader {
                    if let Instance::Instantiate { .. } = instance.map_err(err)? {
                        frame.creates += 1;
                    }
                }
            }
            Payload::ComponentInstanceSection(reader) => {
                for instance in reader {
                    if let ComponentInstance::Instantiate { component_index, .. } = instance.map_err(err)? {
                        let n = frame.components.get(component_index as usize).copied().unwrap_or(0);
                        frame.creates = frame.creates.saturating_add(n);
                    }
                }
            }
            Payload::ComponentImportSection(reader) => {
                for import in reader {
                    if let ComponentTypeRef::Component(_) = import.map_err(err)?.ty {
                        frame.components.push(0);
                    }
                }
            }
            Payload::ComponentExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(err)?;
                    if export.kind == ComponentExternalKind::Component {
                        let n = frame.components.get(export.index as usize).copied().unwrap_or(0);
                        frame.components.push(n);
                    }
                }
            }
            Payload::ComponentAliasSection(reader) => {
                for alias in reader {
                    match alias.map_err(err)? {
                        ComponentAlias::Outer { kind: ComponentOuterAliasKind::Component, count, index } => {
                            let outer = depth.checked_sub(1 + count as usize).and_then(|d| stack.get(d));
                            let n = outer.and_then(|f| f.components.get(index as usize)).copied().unwrap_or(0);
                            stack.last_mut().expect("inside a component").components.push(n);
                        }
                        ComponentAlias::InstanceExport { kind: ComponentExternalKind::Component, .. } => {
                            stack.last_mut().expect("inside a component").components.push(0);
                        }
                        _ => {}
                    }
                }
                continue;
            }
            _ => {}
        }
    }
    Err("the component ends early".into())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn agent_name(path: &Path, policy: &Policy) -> String {
    policy.agent.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().replace(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_', "-"))
            .unwrap_or_else(|| "agent".into())
    })
}
