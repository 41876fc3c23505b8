//! The host: one engine and instance pool, a registry of capabilities, the
//! storage behind them, and the agents other agents may call by name.

use futures::future::BoxFuture;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock, Weak};
use wasmtime::component::Component;
use wasmtime::Engine;

use crate::agent::Agent;
use crate::audit::AuditReport;
use crate::cache::CompileCache;
use crate::calls::{AgentCaller, CallAgents};
use crate::capability::{CallChain, Capability, DynCapability, Registry};
use crate::compile::EngineSettings;
use crate::config::HostConfig;
use crate::engine::EpochTicker;
use crate::error::{HostError, LoadError};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::report::{RunOptions, TaskReport};
use crate::storage::{KvBackend, RedbKv, StorageBackend};

/// Runs agents. Create one per process (it owns the engine, the instance
/// pool, the KV backend and the epoch ticker) and share it; clones are
/// cheap handles to the same host.
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
    pub(crate) engine: Engine,
    pub(crate) engine_settings: EngineSettings,
    pub(crate) config: HostConfig,
    pub(crate) registry: Registry,
    kv: Mutex<Option<Arc<dyn KvBackend>>>,
    pub(crate) next_task: AtomicU64,
    pub(crate) metrics: Arc<Metrics>,
    /// Agents other agents may call by name (see [`Host::register`]).
    agents: RwLock<HashMap<String, Arc<Agent>>>,
    pub(crate) cache: Option<CompileCache>,
    _ticker: EpochTicker,
}

/// Sets up a [`Host`]: its configuration, the capabilities an integrator
/// adds to the built-ins, and the KV backend.
///
/// ```no_run
/// # fn demo() -> Result<(), chimera_host::HostError> {
/// use chimera_host::{Host, HostConfig};
/// let host = Host::builder(HostConfig::default()).build()?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct HostBuilder {
    config: HostConfig,
    capabilities: Vec<Arc<dyn DynCapability>>,
    kv: Option<Arc<dyn KvBackend>>,
}

impl HostBuilder {
    /// Adds a capability beside the built-ins: agents whose policy grants
    /// its section may import its interfaces.
    pub fn capability<C: Capability>(mut self, capability: C) -> HostBuilder {
        self.capabilities.push(Arc::new(capability));
        self
    }

    /// The capabilities a host built from here will have, for parsing its
    /// policies before the host exists (the built-ins with default settings).
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::builtins().clone();
        for c in &self.capabilities {
            // A duplicate is reported by `build`; parsing goes on without it.
            let _ = registry.add(c.clone());
        }
        registry
    }

    /// Keeps KV data in `backend` instead of `kv.redb` in the data directory.
    pub fn kv_backend(mut self, backend: Arc<dyn KvBackend>) -> HostBuilder {
        self.kv = Some(backend);
        self
    }

    /// Creates the engine (pooling allocator, epoch interruption) and
    /// starts the epoch ticker. Fails with a clear message if the pool does
    /// not fit in the address space or a capability cannot be registered.
    pub fn build(self) -> Result<Host, HostError> {
        let (engine, engine_settings) = crate::engine::create(&self.config)?;
        let ticker = EpochTicker::start(engine.clone(), self.config.epoch_tick)?;
        let cache = self.config.cache_compiled.then(|| {
            let dir = self.config.compile_cache_dir.clone().unwrap_or_else(|| self.config.data_dir.join("compiled"));
            CompileCache::new(dir, &engine)
        });
        let metrics = Arc::new(Metrics::new(self.config.metrics));
        let mut failed = None;
        let inner = Arc::new_cyclic(|me: &Weak<HostInner>| {
            let mut registry = Registry::default();
            let caller = AgentCaller::new(me.clone() as Weak<dyn CallAgents>);
            let registered = crate::capabilities::register_builtins(&mut registry, &self.config, caller)
                .and_then(|()| self.capabilities.into_iter().try_for_each(|c| registry.add(c).map(|_| ())));
            failed = registered.err();
            HostInner {
                engine,
                engine_settings,
                config: self.config,
                registry,
                kv: Mutex::new(self.kv),
                next_task: AtomicU64::new(1),
                metrics,
                agents: Default::default(),
                cache,
                _ticker: ticker,
            }
        });
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(Host { inner }),
        }
    }
}

impl Host {
    /// A host with the built-in capabilities; see [`Host::builder`] to add
    /// your own.
    pub fn new(config: HostConfig) -> Result<Host, HostError> {
        Host::builder(config).build()
    }

    /// Sets up a host with more than the built-ins.
    pub fn builder(config: HostConfig) -> HostBuilder {
        HostBuilder { config, capabilities: Vec::new(), kv: None }
    }

    /// Runs one task in a fresh instance of `agent`. Never panics on guest
    /// behaviour: every failure is a [`TaskError`](crate::TaskError) in the report.
    pub async fn run(&self, agent: &Agent, input: &str) -> TaskReport {
        self.run_at(agent, input, CallChain::default(), None).await
    }

    /// [`Host::run`] with a deadline and a cancellation token. Cancelling
    /// interrupts a running guest at its next epoch check (within one tick)
    /// and throws its instance away.
    pub async fn run_with(&self, agent: &Agent, input: &str, options: RunOptions) -> TaskReport {
        let chain = CallChain { deadline: options.deadline, ..CallChain::default() };
        self.run_at(agent, input, chain, options.cancel.as_ref()).await
    }

    /// Loads an agent from a component file; its name is the policy's
    /// `[agent] name` or the file stem.
    pub fn load_file(&self, path: &Path, policy: Policy) -> Result<Agent, LoadError> {
        self.inner.load_file(path, policy)
    }

    /// Loads an agent: compiles it (in a budgeted child process; see
    /// [`crate::compile`]), refuses it if it imports anything the policy
    /// does not grant (naming every such import), links only the granted
    /// interfaces and pre-instantiates it.
    pub fn load(&self, name: &str, bytes: &[u8], policy: Policy) -> Result<Agent, LoadError> {
        self.inner.load(name, bytes, policy)
    }

    /// Judges every import of a component against `policy` without running
    /// anything.
    pub fn audit(&self, name: &str, bytes: &[u8], policy: &Policy) -> Result<AuditReport, LoadError> {
        self.inner.audit(name, bytes, policy)
    }

    /// Compiles a component within the host's load budget, with an error
    /// that says what to do if the bytes are not one.
    pub fn compile(&self, what: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        self.inner.compile(what, bytes)
    }

    /// Makes `agent` callable by name from agents granted `tasks`; replaces
    /// an agent of the same name.
    pub fn register(&self, agent: Arc<Agent>) {
        self.agents.write().unwrap_or_else(|e| e.into_inner()).insert(agent.name().to_string(), agent);
    }

    /// Makes the agent named `name` no longer callable by name (tasks
    /// running it finish).
    pub fn unregister(&self, name: &str) {
        self.agents.write().unwrap_or_else(|e| e.into_inner()).remove(name);
    }

    /// A registered agent.
    pub fn agent(&self, name: &str) -> Option<Arc<Agent>> {
        self.inner.find(name)
    }

    /// The wasmtime engine (for embedders that compile components themselves).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The capabilities of this host, built-in and added.
    pub fn capabilities(&self) -> &Registry {
        &self.registry
    }

    /// Parses a policy against this host's capabilities (custom ones included).
    pub fn policy_from_toml(&self, text: &str) -> Result<Policy, crate::PolicyError> {
        Policy::from_toml_with(text, &self.registry)
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

    /// Opens the KV store now (it is otherwise opened on first use), so a
    /// daemon finds a damaged file when it starts, not at an agent's first
    /// KV call.
    pub fn open_storage(&self) -> Result<(), HostError> {
        self.kv_backend().map(drop)
    }

    /// Checks that the KV store answers: a round trip to a networked one
    /// (Redis), nothing for the embedded file. The error names the store.
    pub async fn check_storage(&self) -> Result<(), String> {
        let kv = self.kv_backend().map_err(|e| e.to_string())?;
        kv.ping().await.map_err(|e| e.to_string())
    }
}

impl HostInner {
    /// The KV backend: the one the builder was given, or `kv.redb` in the
    /// data directory, opened on first use.
    pub(crate) fn kv_backend(&self) -> Result<Arc<dyn KvBackend>, HostError> {
        let mut guard = self.kv.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(kv) = &*guard {
            return Ok(kv.clone());
        }
        let kv: Arc<dyn KvBackend> = match &self.config.storage {
            StorageBackend::Embedded => {
                let dir = &self.config.data_dir;
                std::fs::create_dir_all(dir)
                    .map_err(|e| HostError::DataDir { path: dir.display().to_string(), reason: e.to_string() })?;
                Arc::new(RedbKv::open(&dir.join("kv.redb"))?)
            }
            #[cfg(feature = "redis")]
            StorageBackend::Redis(settings) => Arc::new(crate::storage::RedisKv::open(settings)?),
            #[cfg(not(feature = "redis"))]
            StorageBackend::Redis(_) => {
                return Err(HostError::Config(
                    "storage on Redis needs chimera-host built with the `redis` feature".into(),
                ))
            }
        };
        *guard = Some(kv.clone());
        Ok(kv)
    }
}

impl CallAgents for HostInner {
    fn find(&self, name: &str) -> Option<Arc<Agent>> {
        self.agents.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    fn run<'a>(&'a self, agent: &'a Agent, input: &'a str, chain: CallChain) -> BoxFuture<'a, TaskReport> {
        Box::pin(self.run_at(agent, input, chain, None))
    }
}
