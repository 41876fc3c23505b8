//! The host: one engine and instance pool, agents loaded against their
//! policies, and tasks run in fresh instances under limits.

use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use crate::audit::AuditReport;
use crate::bindings::{AgentError, AgentPre};
use crate::capabilities::kv::{KvStore, KvTaskState};
use crate::capabilities::logging::{LogLine, LogSource, TaskLog};
use crate::capabilities::outbound_http::HttpAccess;
use crate::capabilities::tasks::{CallChain, TasksAccess};
use crate::capabilities::wasi::{locked_down_ctx, CapturedOutput};
use crate::capabilities::{self, ImportDecision, Verdict};
use crate::compile::{CompileFailure, Compiler, EngineSettings};
use crate::config::HostConfig;
use crate::error::{HostError, LoadError, TaskError, Ungranted};
use crate::limits::{InstanceLimiter, LimitHit};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::state::TaskState;
use crate::usage::{ResourceUsage, UsageCounters};

/// Runs agents. Create one per process (it owns the engine, the instance
/// pool, the KV store and the epoch ticker) and share it; clones are cheap
/// handles to the same host.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

impl std::ops::Deref for Host {
    type Target = HostInner;
    fn deref(&self) -> &HostInner {
        &self.inner
    }
}

#[doc(hidden)]
pub struct HostInner {
    engine: Engine,
    config: HostConfig,
    kv: Mutex<Option<Arc<KvStore>>>,
    next_task: AtomicU64,
    metrics: Arc<Metrics>,
    /// Agents other agents may call by name (see [`Host::register`]).
    registry: std::sync::RwLock<std::collections::HashMap<String, Arc<Agent>>>,
    cache: Option<crate::cache::CompileCache>,
    engine_settings: EngineSettings,
    _ticker: EpochTicker,
}

/// An agent ready to run: compiled, checked against its policy, linked with
/// only its granted capabilities, and pre-instantiated.
pub struct Agent {
    pub(crate) name: Arc<str>,
    pub(crate) policy: Arc<Policy>,
    pub(crate) pre: AgentPre<TaskState>,
    imports: Vec<ImportDecision>,
    kv: Option<(Arc<KvStore>, Arc<str>)>,
    http: Option<Arc<HttpAccess>>,
    tasks: Option<Arc<TasksAccess>>,
    metrics: crate::metrics::AgentMetrics,
    pub(crate) slots: Arc<crate::concurrency::Slots>,
}

impl Agent {
    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy it runs under.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Caps how many tasks of this agent run at once, whoever starts them:
    /// the scheduler, or another agent calling it through `tasks` (such a
    /// call waits for a slot within the caller's deadline). Unlimited until
    /// set; the scheduler sets its `max_concurrency`.
    pub fn set_max_concurrency(&self, n: usize) {
        self.slots.limit(n);
    }

    /// The cap set by [`Agent::set_max_concurrency`].
    pub fn max_concurrency(&self) -> usize {
        self.slots.cap()
    }

    /// Its imports, all granted.
    pub fn imports(&self) -> &[ImportDecision] {
        &self.imports
    }
}

/// Moves what the task wrote to stdout and stderr into its log, line by
/// line; returns the bytes dropped past the stdio cap.
pub(crate) fn stdio_into_log(log: &TaskLog, stdout: &CapturedOutput, stderr: &CapturedOutput) -> u64 {
    use crate::bindings::chimera::agent::logging::Level;
    let mut dropped = 0;
    for (pipe, source, level) in [(stdout, LogSource::Stdout, Level::Info), (stderr, LogSource::Stderr, Level::Warn)] {
        if pipe.is_empty() {
            continue;
        }
        let (text, lost) = pipe.take();
        dropped += lost;
        for line in text.lines() {
            log.record(level, source, line, &[]);
        }
    }
    dropped
}

/// What `run` returned, checked against the output limit and with the
/// agent's own error message escaped and capped.
pub(crate) fn checked_output(agent: &Agent, result: Result<String, AgentError>) -> Result<String, TaskError> {
    match result {
        Ok(output) => {
            let limit = agent.policy.limits.max_output_bytes;
            if output.len() as u64 > limit {
                return Err(TaskError::OutputTooLarge { size: output.len() as u64, limit });
            }
            Ok(output)
        }
        Err(AgentError { message, retryable }) => {
            let mut budget = 4096;
            Err(TaskError::Agent {
                message: crate::capabilities::logging::escape_capped(&message, &mut budget),
                retryable,
            })
        }
    }
}

/// The result of one task, with what it used and what it logged.
#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    /// Unique within this host.
    pub task_id: u64,
    /// The agent's name.
    pub agent: String,
    /// The agent's output, or how the task failed.
    pub outcome: Result<String, TaskError>,
    /// Resources used.
    pub usage: ResourceUsage,
    /// Log lines (from `logging`, stdout and stderr), escaped and capped.
    pub logs: Vec<LogLine>,
}

/// How to run one task beyond its policy: a deadline and a way to cancel it.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The task fails with [`TaskError::DeadlineExceeded`] at this instant.
    pub deadline: Option<tokio::time::Instant>,
    /// Cancelling this token ends the task with [`TaskError::Cancelled`].
    pub cancel: Option<tokio_util::sync::CancellationToken>,
}

/// Raised from the epoch callback when the CPU budget is spent.
#[derive(Debug)]
struct CpuExhausted;

impl std::fmt::Display for CpuExhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CPU budget exhausted")
    }
}

impl std::error::Error for CpuExhausted {}

impl Host {
    /// Creates the engine (pooling allocator, epoch interruption) and starts
    /// the epoch ticker. Fails with a clear message if the pool does not fit
    /// in the address space.
    pub fn new(config: HostConfig) -> Result<Host, HostError> {
        if config.max_instances == 0 {
            return Err(HostError::Config("max_instances must be at least 1".into()));
        }
        if config.epoch_tick.is_zero() {
            return Err(HostError::Config("epoch_tick must be longer than zero".into()));
        }
        if !(16..=64 * 1024).contains(&config.stack_kib) {
            return Err(HostError::Config(format!(
                "stack_kib is {}; it must be between 16 and 65536",
                config.stack_kib
            )));
        }
        let budget = &config.load_budget;
        if budget.compile_timeout_ms == 0 || budget.compile_memory_mib < 16 || budget.max_component_bytes < 8 {
            return Err(HostError::Config(format!(
                "load budget {budget:?}: compile_timeout_ms must be at least 1, compile_memory_mib at least 16 and \
                 max_component_bytes at least 8"
            )));
        }
        if config.pooling
            && (config.max_core_instances_per_component == 0
                || config.max_memories_per_component == 0
                || config.max_tables_per_component == 0)
        {
            return Err(HostError::Config(
                "the per-component instance, memory and table caps must be at least 1".into(),
            ));
        }
        let c = EngineSettings::from_config(&config).config(false);
        let engine = Engine::new(&c).map_err(|e| {
            HostError::Engine(format!(
                "{e}. The instance pool ({} instances, up to {} MiB of linear memory each) may not fit in this machine's \
                 address space or memory limits: lower HostConfig::max_instances or max_memory_mib, or disable pooling",
                config.max_instances, config.max_memory_mib
            ))
        })?;
        let engine_settings = EngineSettings::from_config(&config);
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick);
        let cache = config.cache_compiled.then(|| {
            let dir = config.compile_cache_dir.clone().unwrap_or_else(|| config.data_dir.join("compiled"));
            crate::cache::CompileCache::new(dir, &engine)
        });
        let metrics = Arc::new(Metrics::new(config.metrics));
        Ok(Host {
            inner: Arc::new(HostInner {
                engine,
                config,
                kv: Mutex::new(None),
                next_task: AtomicU64::new(1),
                metrics,
                registry: Default::default(),
                cache,
                engine_settings,
                _ticker: ticker,
            }),
        })
    }

    /// The wasmtime engine (for embedders that compile components themselves).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The WebAssembly proposals this host accepts, read back from its
    /// engine: exactly the pinned set (see the `features` module), never more.
    pub fn wasm_features(&self) -> Vec<&'static str> {
        crate::features::enabled_in(&self.engine).expect("the engine accepts exactly the pinned proposals")
    }

    /// The host's metrics (Prometheus text via [`Metrics::encode`]).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The configuration this host was created with.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Compiles a component within the host's load budget (size, then
    /// compile time and memory in a child process; see [`crate::compile`]),
    /// with an error that says what to do if the bytes are not one.
    pub fn compile(&self, what: &str, bytes: &[u8]) -> Result<Component, LoadError> {
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
    pub fn audit(&self, name: &str, bytes: &[u8], policy: &Policy) -> Result<AuditReport, LoadError> {
        policy.validate()?;
        let component = self.compile(name, bytes)?;
        let (imports, exports) = self.judge(&component, policy);
        let mut problems = Vec::new();
        if let Err(reason) = self.check_limits(policy) {
            problems.push(reason);
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
        Ok(AuditReport {
            agent: name.to_string(),
            component_bytes: bytes.len() as u64,
            imports,
            exports,
            kv_namespace: policy.kv_namespace(name),
            wasi: policy.wasi.clone(),
            capabilities: policy.capabilities.clone(),
            limits: policy.limits.clone(),
            stack_kib: self.config.stack_kib,
            runnable,
            problems,
        })
    }

    fn judge(&self, component: &Component, policy: &Policy) -> (Vec<ImportDecision>, Vec<String>) {
        let ty = component.component_type();
        let imports = ty.imports(&self.engine).map(|(name, _)| capabilities::decide(name, policy)).collect();
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
    pub fn load_file(&self, path: &Path, policy: Policy) -> Result<Agent, LoadError> {
        let bytes = std::fs::read(path)
            .map_err(|e| LoadError::Read { path: path.display().to_string(), reason: e.to_string() })?;
        let name = agent_name(path, &policy);
        self.load(&name, &bytes, policy)
    }

    /// Loads an agent: compiles it, refuses it if it imports anything the
    /// policy does not grant (naming every such import), links only the
    /// granted interfaces and pre-instantiates it.
    pub fn load(&self, name: &str, bytes: &[u8], policy: Policy) -> Result<Agent, LoadError> {
        policy.validate()?;
        crate::policy::check_name("agent name", name)?;
        self.check_limits(&policy).map_err(|reason| LoadError::Unsupported { agent: name.to_string(), reason })?;
        let component = self.compile(name, bytes)?;
        let (imports, _) = self.judge(&component, &policy);
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
        let kv = match policy.kv_namespace(name) {
            Some(ns) => Some((
                self.kv_store()
                    .map_err(|e| LoadError::Unsupported { agent: name.to_string(), reason: e.to_string() })?,
                ns.into(),
            )),
            None => None,
        };
        let http = match &policy.capabilities.outbound_http {
            Some(g) => Some(Arc::new(
                HttpAccess::new(g, &self.config.dns_overrides)
                    .map_err(|reason| LoadError::Unsupported { agent: name.to_string(), reason })?,
            )),
            None => None,
        };
        let tasks = policy.capabilities.tasks.as_ref().map(|g| Arc::new(TasksAccess::new(g)));
        let metrics = self.metrics.for_agent(name);
        let slots = crate::concurrency::Slots::unlimited();
        Ok(Agent { name: name.into(), policy: Arc::new(policy), pre, imports, kv, http, tasks, metrics, slots })
    }

    /// Links the granted and inert imports (each interface once) and
    /// pre-instantiates: the check `audit` runs too, so it never calls
    /// runnable what `load` refuses.
    fn link(
        &self,
        name: &str,
        component: &Component,
        imports: &[ImportDecision],
    ) -> Result<AgentPre<TaskState>, LoadError> {
        let link_err = |e: wasmtime::Error| LoadError::Link { agent: name.to_string(), reason: format!("{e:#}") };
        let mut linker: Linker<TaskState> = Linker::new(&self.engine);
        let mut linked: Vec<&str> = Vec::new();
        for d in imports {
            // Two versions of one interface share one implementation: add it once.
            let interface = d.import.split('@').next().unwrap_or(&d.import);
            if let (false, Some(link)) = (linked.contains(&interface), d.link) {
                link(&mut linker).map_err(link_err)?;
                linked.push(interface);
            }
        }
        let pre = linker.instantiate_pre(component).map_err(link_err)?;
        AgentPre::new(pre)
            .map_err(|e| LoadError::MissingEntryPoint { agent: name.to_string(), reason: format!("{e:#}") })
    }

    /// The KV store, opened on first use.
    pub(crate) fn kv_store(&self) -> Result<Arc<KvStore>, HostError> {
        let mut guard = self.kv.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = &*guard {
            return Ok(store.clone());
        }
        let dir = &self.config.data_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| HostError::DataDir { path: dir.display().to_string(), reason: e.to_string() })?;
        let store = Arc::new(KvStore::open(&dir.join("kv.redb"))?);
        *guard = Some(store.clone());
        Ok(store)
    }

    /// Runs one task in a fresh instance of `agent`. Never panics on guest
    /// behaviour: every failure is a [`TaskError`] in the report.
    pub async fn run(&self, agent: &Agent, input: &str) -> TaskReport {
        self.run_with(agent, input, RunOptions::default()).await
    }

    /// Makes `agent` callable by name from agents granted `tasks`; replaces
    /// an agent of the same name.
    pub fn register(&self, agent: Arc<Agent>) {
        self.registry.write().unwrap_or_else(|e| e.into_inner()).insert(agent.name().to_string(), agent);
    }

    /// A registered agent.
    pub fn agent(&self, name: &str) -> Option<Arc<Agent>> {
        self.registry.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// [`Host::run`] with a deadline and a cancellation token. Cancelling
    /// interrupts a running guest at its next epoch check (within one tick)
    /// and throws its instance away.
    pub async fn run_with(&self, agent: &Agent, input: &str, options: RunOptions) -> TaskReport {
        self.run_chained(agent, input, CallChain { depth: 0, max_depth: None, options }).await
    }

    /// Runs a task at a place in a chain of agent-to-agent calls.
    pub(crate) async fn run_chained(&self, agent: &Agent, input: &str, mut chain: CallChain) -> TaskReport {
        let options = chain.options.clone();
        let task_id = self.next_task.fetch_add(1, Ordering::Relaxed);
        let limits = &agent.policy.limits;
        let usage = Arc::new(UsageCounters::new(limits.memory_mib << 20));
        let logging = agent.policy.capabilities.logging.clone().unwrap_or_default();
        let log = TaskLog::new(agent.name.clone(), task_id, logging, usage.clone());
        let started = Instant::now();
        let outcome = if input.len() as u64 > limits.max_input_bytes {
            Err(TaskError::InputTooLarge { size: input.len() as u64, limit: limits.max_input_bytes })
        } else {
            let stdout = CapturedOutput::new(limits.stdio_bytes as usize, usage.clone());
            let stderr = CapturedOutput::new(limits.stdio_bytes as usize, usage.clone());
            let timeout = Duration::from_millis(limits.timeout_ms);
            // Children inherit the earlier of this task's deadline and timeout.
            let ends = tokio::time::Instant::now() + timeout;
            chain.options.deadline = Some(options.deadline.map_or(ends, |d| d.min(ends)));
            let store = self.new_store(agent, log.clone(), usage.clone(), (stdout.clone(), stderr.clone()), chain);
            let cancelled = async {
                match &options.cancel {
                    Some(token) => token.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            let deadline = async {
                match options.deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let outcome = tokio::select! {
                r = tokio::time::timeout(timeout, Box::pin(crate::cpu::Metered::new(self.instantiate_and_call(agent, store, input), usage.clone()))) => match r {
                    Ok(outcome) => outcome,
                    Err(_) => Err(TaskError::Timeout { limit_ms: limits.timeout_ms }),
                },
                _ = cancelled => Err(TaskError::Cancelled),
                _ = deadline => Err(TaskError::DeadlineExceeded),
            };
            let dropped = stdio_into_log(&log, &stdout, &stderr);
            UsageCounters::add(&usage.stdio_dropped, dropped);
            outcome
        };
        let (logs, log_bytes, log_lines_dropped) = log.take();
        let mut report_usage = usage.snapshot(started.elapsed());
        report_usage.log_bytes = log_bytes;
        report_usage.log_lines_dropped = log_lines_dropped;
        if let Err(e) = &outcome {
            tracing::debug!(agent = %agent.name, task = task_id, kind = e.kind(), "task failed: {e}");
        }
        let sample = crate::metrics::TaskOutcomeSample {
            error: outcome.as_ref().err().map(|e| (e.kind(), e.limit())),
            seconds: report_usage.wall_time_us as f64 / 1e6,
            peak_memory: report_usage.peak_memory_bytes,
            cpu_ticks: report_usage.cpu_ticks,
        };
        self.metrics.task_finished(&agent.name, &agent.metrics, &sample);
        self.metrics.log_lines_dropped(&agent.name, log_lines_dropped);
        TaskReport { task_id, agent: agent.name.to_string(), outcome, usage: report_usage, logs }
    }

    pub(crate) fn new_store(
        &self,
        agent: &Agent,
        log: TaskLog,
        usage: Arc<UsageCounters>,
        (stdout, stderr): (CapturedOutput, CapturedOutput),
        chain: CallChain,
    ) -> Store<TaskState> {
        let policy = &agent.policy;
        let mut table = ResourceTable::new();
        table.set_max_capacity(policy.limits.resource_handles as usize);
        let state = TaskState {
            wasi: locked_down_ctx(&policy.wasi, stdout, stderr),
            table,
            limiter: InstanceLimiter::new(&policy.limits, usage.clone()),
            log,
            kv: agent.kv.as_ref().map(|(store, ns)| KvTaskState {
                store: store.clone(),
                namespace: ns.clone(),
                grant: policy.capabilities.kv.clone().unwrap_or_default(),
            }),
            http: agent.http.clone(),
            http_requests: 0,
            usage,
            cpu_ticks: 0,
            cpu_budget_ns: policy.limits.cpu_ms.saturating_mul(1_000_000),
            metrics: self.metrics.clone(),
            tasks: agent.tasks.clone(),
            calls_made: 0,
            chain,
            host: self.clone(),
        };
        self.metrics.instance_started();
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // What one host call may lift from the guest follows the instance's
        // memory limit (wasmtime's default is 128 MiB whatever the limit).
        store.set_hostcall_fuel(usize::try_from(policy.limits.memory_mib << 20).unwrap_or(usize::MAX));
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut cx| {
            let s = cx.data_mut();
            s.cpu_ticks += 1;
            s.usage.cpu_ticks.store(s.cpu_ticks, Ordering::Relaxed);
            if crate::cpu::spent_ns(&s.usage) > s.cpu_budget_ns {
                return Err(wasmtime::Error::new(CpuExhausted));
            }
            // Yield so the wall-clock timeout and other tasks get to run.
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }

    async fn instantiate_and_call(
        &self,
        agent: &Agent,
        mut store: Store<TaskState>,
        input: &str,
    ) -> Result<String, TaskError> {
        let instance = match agent.pre.instantiate_async(&mut store).await {
            Ok(i) => i,
            Err(e) => return Err(self.classify(e, &store, agent, true)),
        };
        let result = match instance.call_run(&mut store, input).await {
            Ok(r) => r,
            Err(e) => return Err(self.classify(e, &store, agent, false)),
        };
        checked_output(agent, result)
    }

    /// Turns a wasmtime error into a typed task error naming the limit.
    pub(crate) fn classify(
        &self,
        e: wasmtime::Error,
        store: &Store<TaskState>,
        agent: &Agent,
        instantiating: bool,
    ) -> TaskError {
        let limits = &agent.policy.limits;
        match store.data().limiter.hit {
            Some(LimitHit::Memory { limit, requested }) => {
                return TaskError::MemoryLimit { limit_bytes: limit, requested_bytes: requested }
            }
            Some(LimitHit::Table { limit, requested }) => return TaskError::TableLimit { limit, requested },
            None => {}
        }
        if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            return TaskError::Exited { status: exit.0 };
        }
        if e.downcast_ref::<CpuExhausted>().is_some() {
            return TaskError::CpuLimit { limit_ms: limits.cpu_ms };
        }
        if let Some(trap) = e.downcast_ref::<Trap>() {
            return match trap {
                Trap::StackOverflow => TaskError::StackOverflow { limit_bytes: self.config.stack_kib * 1024 },
                other => TaskError::Trap { reason: other.to_string().trim_start_matches("wasm trap: ").to_string() },
            };
        }
        if let Some(wasmtime::component::ResourceTableError::Full) = e.downcast_ref() {
            return TaskError::HandleLimit { limit: limits.resource_handles.into() };
        }
        let root = e.root_cause().to_string();
        // wasmtime's hostcall-fuel error has no public type: its text is all there is.
        if root.starts_with("too much data is being copied between the host and the guest") {
            return TaskError::HostCallTooLarge { limit_bytes: limits.memory_mib << 20 };
        }
        if let Some(rest) = root.strip_prefix("resource limit exceeded: ") {
            // wasmtime reports count limits only as text: "<kind> count too high at <n>".
            let (resource, limit, key) = match rest.split(' ').next() {
                Some("instance") => ("core instances", limits.instances as u64, "[limits] instances"),
                Some("table") => ("tables", limits.tables as u64, "[limits] tables"),
                Some("memory") => ("memories", limits.memories as u64, "[limits] memories"),
                _ => ("resources", 0, "[limits]"),
            };
            return TaskError::CountLimit { resource: resource.into(), limit, key: key.into() };
        }
        if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
            return TaskError::Instantiate {
                reason: format!(
                    "all {} instance slots of this host are in use; retry later",
                    self.config.max_instances
                ),
            };
        }
        if instantiating {
            TaskError::Instantiate { reason: root }
        } else {
            TaskError::Trap { reason: root }
        }
    }
}

fn agent_name(path: &Path, policy: &Policy) -> String {
    policy.agent.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().replace(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_', "-"))
            .unwrap_or_else(|| "agent".into())
    })
}

/// Advances the engine's epoch every tick, from a thread of its own.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("chimera-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .expect("spawn the epoch thread");
        EpochTicker { stop, thread: Some(thread) }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
