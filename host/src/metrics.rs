//! Prometheus metrics of a host. Label values come from the host side only
//! (agent names from configuration, fixed kinds and reasons), never from
//! guest strings, so a guest cannot grow the label space or forge series.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    agent: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabels {
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    agent: String,
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    agent: String,
    capability: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    capability: String,
}

/// One agent's per-task series.
#[derive(Clone)]
pub(crate) struct AgentMetrics {
    ok: Counter,
    seconds: Histogram,
    peak_memory: Histogram,
    cpu_ticks: Counter,
}

/// What a finished task reports to the metrics.
pub(crate) struct TaskOutcomeSample<'a> {
    /// `None` for success; else the error kind and the limit it hit, if any.
    pub error: Option<(&'a str, Option<&'a str>)>,
    pub seconds: f64,
    pub peak_memory: u64,
    pub cpu_ticks: u64,
}

/// The host's metrics and their registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    tasks: Family<TaskLabels, Counter>,
    limit_hits: Family<LimitLabels, Counter>,
    denials: Family<DenialLabels, Counter>,
    load_refusals: Family<RefusalLabels, Counter>,
    task_seconds: Family<AgentLabels, Histogram>,
    peak_memory: Family<AgentLabels, Histogram>,
    cpu_ticks: Family<AgentLabels, Counter>,
    log_lines_dropped: Family<AgentLabels, Counter>,
    live_instances: Gauge,
    compile_cache: Family<CacheLabels, Counter>,
    /// When off, per-task recording is skipped (for measuring its cost).
    enabled: bool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("chimera");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            tasks: Family::default(),
            limit_hits: Family::default(),
            denials: Family::default(),
            load_refusals: Family::default(),
            task_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_01, 4.0, 12))),
            peak_memory: Family::new_with_constructor(|| Histogram::new(exponential_buckets(65536.0, 4.0, 10))),
            cpu_ticks: Family::default(),
            log_lines_dropped: Family::default(),
            live_instances: Gauge::default(),
            compile_cache: Family::default(),
            enabled: true,
        };
        r.register("tasks", "Tasks run, by agent and outcome (ok or the error kind)", m.tasks.clone());
        r.register("limit_hits", "Tasks ended by a limit, by agent and limit", m.limit_hits.clone());
        r.register("denials", "Capability calls denied by policy, by agent, capability and reason", m.denials.clone());
        r.register(
            "load_refusals",
            "Agents refused at load, by the capability of each ungranted import",
            m.load_refusals.clone(),
        );
        r.register("task_duration_seconds", "Wall time of tasks, instantiation to result", m.task_seconds.clone());
        r.register("task_peak_memory_bytes", "Peak linear memory of task instances", m.peak_memory.clone());
        r.register("cpu_ticks", "Epoch ticks spent executing wasm", m.cpu_ticks.clone());
        r.register("log_lines_dropped", "Guest log lines dropped over the per-task cap", m.log_lines_dropped.clone());
        r.register("live_instances", "Instances alive now", m.live_instances.clone());
        r.register(
            "compile_cache",
            "Component loads by compiled-cache result (hit, miss, corrupt, stale)",
            m.compile_cache.clone(),
        );
        *m.registry.lock().unwrap() = r;
        m
    }
}

impl Metrics {
    /// Metrics that record (`enabled`) or skip per-task samples.
    pub fn new(enabled: bool) -> Metrics {
        Metrics { enabled, ..Metrics::default() }
    }

    /// The metrics in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }

    /// Registers more metrics (e.g. a scheduler's) in the same registry.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.registry.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Handles to one agent's per-task series, looked up once when the
    /// agent is loaded so that a task records them without label hashing.
    pub(crate) fn for_agent(&self, agent: &str) -> AgentMetrics {
        let a = AgentLabels { agent: agent.into() };
        AgentMetrics {
            ok: self.tasks.get_or_create(&TaskLabels { agent: agent.into(), outcome: "ok".into() }).clone(),
            seconds: self.task_seconds.get_or_create(&a).clone(),
            peak_memory: self.peak_memory.get_or_create(&a).clone(),
            cpu_ticks: self.cpu_ticks.get_or_create(&a).clone(),
        }
    }

    pub(crate) fn task_finished(&self, agent: &str, handles: &AgentMetrics, outcome: &TaskOutcomeSample<'_>) {
        if !self.enabled {
            return;
        }
        match outcome.error {
            None => {
                handles.ok.inc();
            }
            Some((kind, limit)) => {
                self.tasks.get_or_create(&TaskLabels { agent: agent.into(), outcome: kind.into() }).inc();
                if let Some(limit) = limit {
                    self.limit_hits.get_or_create(&LimitLabels { agent: agent.into(), limit: limit.into() }).inc();
                }
            }
        }
        handles.seconds.observe(outcome.seconds);
        handles.peak_memory.observe(outcome.peak_memory as f64);
        handles.cpu_ticks.inc_by(outcome.cpu_ticks);
    }

    pub(crate) fn log_lines_dropped(&self, agent: &str, n: u64) {
        if self.enabled && n > 0 {
            self.log_lines_dropped.get_or_create(&AgentLabels { agent: agent.into() }).inc_by(n);
        }
    }

    /// Counts a denial. `capability` and `reason` are fixed host strings.
    pub(crate) fn denied(&self, agent: &str, capability: &'static str, reason: &'static str) {
        self.denials
            .get_or_create(&DenialLabels { agent: agent.into(), capability: capability.into(), reason: reason.into() })
            .inc();
    }

    pub(crate) fn load_refused(&self, capability: &'static str) {
        self.load_refusals.get_or_create(&RefusalLabels { capability: capability.into() }).inc();
    }

    pub(crate) fn compile_cache(&self, result: &'static str) {
        self.compile_cache.get_or_create(&CacheLabels { result: result.into() }).inc();
    }

    pub(crate) fn instance_started(&self) {
        if self.enabled {
            self.live_instances.inc();
        }
    }

    pub(crate) fn instance_ended(&self) {
        if self.enabled {
            self.live_instances.dec();
        }
    }
}
