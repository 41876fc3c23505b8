//! `chimera serve`: the host as a daemon. Loads the agents named in a
//! config file, runs the scheduler, and serves the HTTP API and metrics.

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::http_edge::HttpLimits;

use crate::auth::{AuthError, AuthSection, Caller, Scope, Tokens, TOKENS_ENV};
use crate::config::HostConfig;
use crate::http_edge::{error, retry_later};
use crate::scheduler::{
    AgentChanges, AgentEntry, CancelError, Retention, Scheduler, SchedulerConfig, Submission, SubmitError, TaskId,
    TaskQuery,
};
use crate::secrets::{SecretSource, Secrets};
use crate::storage::{StorageBackend, StorageSection, REDIS_URL_ENV};
use crate::{Host, HostBuilder, Policy};

/// The daemon's configuration file (`chimera.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address of the HTTP API. Default `127.0.0.1:7878` (loopback only).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Data directory (KV store and task journal), relative to the config file.
    pub data_dir: Option<PathBuf>,
    /// Scheduler settings.
    #[serde(default)]
    pub scheduler: SchedulerSection,
    /// Instance pool size.
    pub max_instances: Option<u32>,
    /// What loading one agent may cost.
    #[serde(default)]
    pub load: LoadSection,
    /// What one client may hold of the HTTP server.
    #[serde(default)]
    pub http: HttpLimits,
    /// Who may use the API.
    #[serde(default)]
    pub auth: AuthSection,
    /// Where the agents' KV data is kept.
    #[serde(default)]
    pub storage: StorageSection,
    /// Secrets by name, each read from an environment variable or a file
    /// when the daemon starts; policies name them in `secret_headers`.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
    /// The agents to run.
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    /// The file this config was read from (what a reload reads again).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:7878".parse().unwrap()
}

/// `[scheduler]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSection {
    pub workers: Option<usize>,
    pub max_queued: Option<usize>,
    pub aging_ms: Option<u64>,
    pub retry_base_ms: Option<u64>,
    pub retry_max_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    /// How long SIGTERM waits for running tasks. Default 10 s.
    pub shutdown_grace_ms: Option<u64>,
    /// How long an idempotency key names its task, in seconds. Default 86400.
    pub idempotency_ttl_s: Option<u64>,
    /// How long finished tasks are kept.
    #[serde(default)]
    pub retain_finished: RetainSection,
    /// With `[storage] backend = "redis"`: how long a node that stopped
    /// renewing its leases keeps its tasks before another node runs them
    /// again. Default 10000.
    pub lease_ms: Option<u64>,
    /// With `[storage] backend = "redis"`: this node's name in leases and
    /// attempts. Default: host name, process id and a random suffix.
    pub node: Option<String>,
}

/// `[scheduler.retain_finished]`: finished tasks are deleted once older
/// than `max_age_s`, or once more than `max_count` are kept (oldest first).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RetainSection {
    /// Default 604800 (7 days).
    pub max_age_s: Option<u64>,
    /// Default 100000.
    pub max_count: Option<u64>,
}

/// `[load]`: the load budget (see [`crate::compile::LoadBudget`]).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LoadSection {
    /// Largest component accepted, in bytes. Default 64 MiB.
    pub max_component_bytes: Option<u64>,
    /// Time to compile one component, in milliseconds. Default 30 s.
    pub compile_timeout_ms: Option<u64>,
    /// Memory to compile one component, in MiB. Default 1024.
    pub compile_memory_mib: Option<u64>,
}

/// `[[agents]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's name (API, metrics, KV namespace default).
    pub name: String,
    /// Its component, relative to the config file.
    pub component: PathBuf,
    /// Its policy, relative to the config file. Without it: the empty policy.
    pub policy: Option<PathBuf>,
    /// Its tasks that may run at once. Default 4.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// The SHA-256 (hex) its component must have: the daemon refuses to
    /// run any other (at start and at reload). `chimera audit` prints it.
    pub sha256: Option<String>,
    /// The SHA-256 (hex) its policy file must have.
    pub policy_sha256: Option<String>,
}

fn default_concurrency() -> usize {
    4
}

impl ServeConfig {
    /// Reads a config file; relative paths in it are taken from its folder.
    pub fn from_file(path: &Path) -> Result<ServeConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut config: ServeConfig =
            toml::from_str(&text).map_err(|e| format!("{} is not a valid config: {}", path.display(), e.message()))?;
        config.validate().map_err(|e| format!("{}: {e}", path.display()))?;
        config.source = Some(path.to_path_buf());
        let base = path.parent().unwrap_or(Path::new("."));
        config.data_dir = config.data_dir.map(|d| base.join(d));
        config.auth.tokens_file = config.auth.tokens_file.map(|f| base.join(f));
        for source in config.secrets.values_mut() {
            source.file = source.file.as_ref().map(|f| base.join(f));
        }
        for a in &mut config.agents {
            a.component = base.join(&a.component);
            a.policy = a.policy.as_ref().map(|p| base.join(p));
        }
        Ok(config)
    }

    /// Checks the whole file before anything is started: every section's
    /// values, and each agent named once.
    pub fn validate(&self) -> Result<(), String> {
        self.http.validate()?;
        self.storage_backend()?;
        self.scheduler_config().validate()?;
        if !self.listen.ip().is_loopback() && !Tokens::configured(&self.auth) {
            return Err(format!(
                "listen = {} is reachable from other machines, and the API has no authentication: \
                 configure [auth] tokens_file (or ${TOKENS_ENV}), or listen on 127.0.0.1",
                self.listen
            ));
        }
        let mut names = std::collections::HashSet::new();
        for a in &self.agents {
            if !names.insert(a.name.as_str()) {
                return Err(format!("agent `{}` is configured twice; give each [[agents]] entry its own name", a.name));
            }
            if a.max_concurrency == 0 {
                return Err(format!("agent `{}`: max_concurrency must be at least 1", a.name));
            }
            for (key, pin) in [("sha256", &a.sha256), ("policy_sha256", &a.policy_sha256)] {
                if let Some(digest) = pin.as_deref().filter(|d| !crate::audit::is_sha256_hex(d)) {
                    let form = crate::audit::SHA256_FORM;
                    return Err(format!("agent `{}`: {key} = {digest:?} is not a SHA-256 {form}", a.name));
                }
            }
        }
        Ok(())
    }

    /// The secrets `[secrets]` names, read now from the environment and files.
    pub fn read_secrets(&self) -> Result<Secrets, String> {
        Secrets::read(&self.secrets, Path::new(".")).map_err(|e| e.to_string())
    }

    /// Where the agents' KV data is kept: `[storage]`, with
    /// `$CHIMERA_REDIS_URL` for a missing `redis_url`.
    pub fn storage_backend(&self) -> Result<StorageBackend, String> {
        self.storage.backend(std::env::var(REDIS_URL_ENV).ok())
    }

    /// The host this config describes: its data directory, storage, pool
    /// size and load budget (a `[storage]` that does not check is left
    /// embedded here; [`Self::validate`] refuses it).
    pub fn host_config(&self) -> HostConfig {
        let mut host_config =
            HostConfig { storage: self.storage_backend().unwrap_or_default(), ..HostConfig::default() };
        if let Some(dir) = &self.data_dir {
            host_config.data_dir = dir.clone();
        }
        if let Some(n) = self.max_instances {
            host_config.max_instances = n;
        }
        let budget = &mut host_config.load_budget;
        let load = &self.load;
        budget.max_component_bytes = load.max_component_bytes.unwrap_or(budget.max_component_bytes);
        budget.compile_timeout_ms = load.compile_timeout_ms.unwrap_or(budget.compile_timeout_ms);
        budget.compile_memory_mib = load.compile_memory_mib.unwrap_or(budget.compile_memory_mib);
        host_config
    }

    fn scheduler_config(&self) -> SchedulerConfig {
        let s = &self.scheduler;
        let d = SchedulerConfig::default();
        let keep = &s.retain_finished;
        SchedulerConfig {
            idempotency_ttl: s.idempotency_ttl_s.map_or(d.idempotency_ttl, Duration::from_secs),
            retention: Retention {
                max_age: keep.max_age_s.map_or(d.retention.max_age, Duration::from_secs),
                max_count: keep.max_count.unwrap_or(d.retention.max_count),
            },
            workers: s.workers.unwrap_or(d.workers),
            max_queued: s.max_queued.unwrap_or(d.max_queued),
            aging: s.aging_ms.map_or(d.aging, Duration::from_millis),
            retry_base: s.retry_base_ms.map_or(d.retry_base, Duration::from_millis),
            retry_max: s.retry_max_ms.map_or(d.retry_max, Duration::from_millis),
            max_attempts: s.max_attempts.unwrap_or(d.max_attempts),
            // On Redis the queue is shared too: every node on it is one cluster.
            #[cfg(feature = "redis")]
            cluster: match self.storage_backend() {
                Ok(StorageBackend::Redis(redis)) => Some(crate::scheduler::ClusterConfig {
                    redis,
                    lease: s.lease_ms.map_or(Duration::from_secs(10), Duration::from_millis),
                    node: s.node.clone(),
                }),
                _ => None,
            },
            ..d
        }
    }
}

/// A running daemon: the host, the scheduler, and the API router.
pub struct Daemon {
    pub host: Arc<Host>,
    pub scheduler: Scheduler,
    http: HttpLimits,
    /// The config file, for reloads.
    source: Option<PathBuf>,
    /// The router being served, swapped on reload.
    app: std::sync::OnceLock<Arc<std::sync::RwLock<Router>>>,
    reloading: tokio::sync::Mutex<()>,
    /// The API's tokens; `None`: no authentication (loopback only).
    tokens: Option<Arc<Tokens>>,
    /// Where the agents run: threads of their own, at a lower priority than
    /// the API's, so agents keeping every core busy (in wasm or in host
    /// calls) never keep the API from answering.
    tasks_runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Dropped from async code: a runtime may not block there.
        if let Some(runtime) = self.tasks_runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The runtime agents run on: one thread per core (and its blocking pool),
/// each lowered in priority below the API's threads.
fn tasks_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("chimera-task")
        .on_thread_start(crate::cpu::lower_thread_priority)
        .enable_all()
        .build()
}

impl Daemon {
    /// Creates the host, loads every agent (refusing to start if any agent
    /// is refused, naming it), and starts the scheduler (recovering the journal).
    pub fn start(config: &ServeConfig) -> Result<Daemon, String> {
        Daemon::start_with(config, &|b| b)
    }

    /// [`Daemon::start`] with the capabilities `extend` adds to the host.
    pub fn start_with(config: &ServeConfig, extend: &dyn Fn(HostBuilder) -> HostBuilder) -> Result<Daemon, String> {
        let mut host_config = config.host_config();
        config.validate()?;
        host_config.secrets = config.read_secrets()?;
        let tokens = Tokens::load(&config.auth, Path::new("."))?.map(Arc::new);
        let host = Arc::new(extend(Host::builder(host_config)).build().map_err(|e| e.to_string())?);
        host.open_storage().map_err(|e| e.to_string())?;
        let agents = load_agents(&host, config)?;
        let runtime = tasks_runtime().map_err(|e| format!("cannot start the task runtime: {e}"))?;
        let scheduler_config = SchedulerConfig { runtime: Some(runtime.handle().clone()), ..config.scheduler_config() };
        let scheduler = match Scheduler::start(host.clone(), agents, scheduler_config) {
            Ok(scheduler) => scheduler,
            Err(e) => {
                // Called from async code, where a runtime may not block on its way out.
                runtime.shutdown_background();
                return Err(e.to_string());
            }
        };
        Ok(Daemon {
            host,
            scheduler,
            http: config.http.clone(),
            tokens,
            source: config.source.clone(),
            app: std::sync::OnceLock::new(),
            reloading: tokio::sync::Mutex::new(()),
            tasks_runtime: Some(runtime),
        })
    }

    /// Reads the config file again and runs its agents from now on: new
    /// tasks get the new components and policies, running tasks finish
    /// under the old ones, and a file that does not check or load is
    /// refused whole (the agents running stay). Only `[[agents]]` (and the
    /// policy files they name) are read again; the rest needs a restart.
    pub async fn reload(self: &Arc<Self>) -> Result<AgentChanges, String> {
        let _one_at_a_time = self.reloading.lock().await;
        let path = self.source.clone().ok_or("this daemon was started without a config file: nothing to reload")?;
        let host = self.host.clone();
        // Reading and compiling block: off the async workers.
        let loaded = tokio::task::spawn_blocking(move || {
            let config = ServeConfig::from_file(&path)?;
            load_agents(&host, &config)
        })
        .await
        .map_err(|e| format!("the reload stopped: {e}"))?;
        let agents = loaded.map_err(|e| {
            tracing::warn!("reload refused, the agents running stay: {e}");
            e
        })?;
        let changes = self.scheduler.replace_agents(agents);
        if let Some(app) = self.app.get() {
            // The body limit follows the agents' largest input.
            *app.write().unwrap_or_else(|e| e.into_inner()) = self.router();
        }
        tracing::info!(added = ?changes.added, removed = ?changes.removed, changed = ?changes.changed, "reloaded the agents");
        Ok(changes)
    }

    /// The HTTP API.
    pub fn router(self: &Arc<Self>) -> Router {
        let max_input =
            self.scheduler.agents().iter().map(|e| e.agent.policy().limits.max_input_bytes).max().unwrap_or(1 << 20);
        let router = Router::new()
            .route("/v1/tasks", get(list).post(submit))
            .route("/v1/tasks/{id}", get(status).delete(cancel))
            .route("/v1/tasks/{id}/logs", get(logs))
            .route("/v1/agents", get(agents))
            .route("/healthz", get(health))
            .route("/readyz", get(ready))
            .route("/metrics", get(metrics))
            .route("/v1/admin/reload", axum::routing::post(reload))
            .layer(axum::middleware::from_fn_with_state(self.tokens.clone(), authenticate))
            // Room for the largest input any agent accepts, JSON-escaped.
            .layer(DefaultBodyLimit::max((max_input as usize).saturating_mul(2) + (64 << 10)))
            .with_state(Arc::new(ApiState {
                host: self.host.clone(),
                scheduler: self.scheduler.clone(),
                retry_after_s: self.http.retry_after_s,
                daemon: Arc::downgrade(self),
            }));
        crate::http_edge::harden(router, &self.http)
    }
}

/// Loads every agent `config` names (refusing all, naming the agent, if one is refused).
pub(crate) fn load_agents(host: &Host, config: &ServeConfig) -> Result<Vec<AgentEntry>, String> {
    let mut agents = Vec::new();
    for a in &config.agents {
        let read =
            |p: &Path| std::fs::read(p).map_err(|e| format!("agent `{}`: cannot read {}: {e}", a.name, p.display()));
        let policy = match &a.policy {
            Some(p) => {
                // The digest of the bytes parsed, so a file replaced meanwhile cannot slip past the pin.
                let bytes = read(p)?;
                check_pin(a, "policy", p, a.policy_sha256.as_deref(), &bytes)?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| format!("agent `{}`: {} is not UTF-8 text", a.name, p.display()))?;
                Policy::from_toml_with(&text, host.capabilities()).map_err(|e| e.in_file(p).to_string())?
            }
            None => Policy::default(),
        };
        let bytes = read(&a.component)?;
        // Checked before compiling: an unapproved component costs no compile.
        check_pin(a, "component", &a.component, a.sha256.as_deref(), &bytes)?;
        let agent = host.load(&a.name, &bytes, policy).map_err(|e| e.to_string())?;
        agents.push(AgentEntry { agent: Arc::new(agent), max_concurrency: a.max_concurrency });
    }
    check_callee_pins(&agents)?;
    Ok(agents)
}

/// Refuses `bytes` (agent `a`'s `what`, read from `path`) unless they have the pinned digest.
fn check_pin(a: &AgentConfig, what: &str, path: &Path, pinned: Option<&str>, bytes: &[u8]) -> Result<(), String> {
    let Some(pinned) = pinned else { return Ok(()) };
    let actual = crate::audit::sha256_hex(bytes);
    if actual == pinned {
        return Ok(());
    }
    let key = if what == "policy" { "policy_sha256" } else { "sha256" };
    Err(format!(
        "agent `{}`: its {what} {} has sha256 {actual}, but the config pins {key} = \"{pinned}\"; the daemon runs \
         only what was approved (audit the new file, then update the pin)",
        a.name,
        path.display()
    ))
}

/// Refuses a set of agents in which a `tasks` grant pins a callee that
/// runs here with another component.
fn check_callee_pins(agents: &[AgentEntry]) -> Result<(), String> {
    for caller in agents {
        let Ok(Some(grant)) = caller.agent.policy().grant::<crate::capabilities::tasks::TasksGrant>() else { continue };
        for c in grant.callees() {
            let Some(callee) = agents.iter().find(|e| e.agent.name() == c.name) else { continue };
            if !c.admits(callee.agent.digest()) {
                return Err(format!(
                    "agent `{}` pins its callee `{}` to sha256:{}, but the `{}` configured here is sha256:{}; \
                     update the pin in its policy or deploy the approved component",
                    caller.agent.name(),
                    c.name,
                    c.sha256.unwrap_or_default(),
                    c.name,
                    callee.agent.digest()
                ));
            }
        }
    }
    Ok(())
}

/// What the API answers while the daemon starts (loads its agents and
/// recovers its journal): `/healthz` says it is alive and starting,
/// `/readyz` and every other endpoint `503` with `Retry-After`. Each
/// answer closes its connection, so a client's next request meets the
/// daemon once it is ready.
fn starting_router(http: &HttpLimits) -> Router {
    let after = http.retry_after_s;
    let close = |mut r: Response| {
        r.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        r
    };
    Router::new()
        .route("/healthz", get(move || async move { close(Json(json!({ "status": "starting" })).into_response()) }))
        .fallback(move || async move {
            close(retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                "the daemon is starting (loading its agents); retry later",
                after,
            ))
        })
}

/// Runs `chimera serve` on `listener`: answers at once (see
/// [`starting_router`]) while it loads the agents `config` names, with the
/// capabilities `extend` adds, then serves the API until SIGTERM or
/// SIGINT; then stops accepting, lets open connections finish the request
/// in progress, and drains running tasks, each for at most the grace
/// period (returning as soon as they are done); queued tasks stay in the
/// journal. `ready` is called once the API is the daemon's. Needs a
/// multi-threaded runtime.
pub async fn run(
    config: &ServeConfig,
    extend: &dyn Fn(HostBuilder) -> HostBuilder,
    listener: tokio::net::TcpListener,
    ready: impl FnOnce(),
) -> Result<(), String> {
    let stop = tokio_util::sync::CancellationToken::new();
    let signal = {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.cancel();
        })
    };
    let grace = Duration::from_millis(config.scheduler.shutdown_grace_ms.unwrap_or(10_000));
    let app = Arc::new(std::sync::RwLock::new(starting_router(&config.http)));
    let serving =
        tokio::spawn(crate::http_edge::serve(listener, app.clone(), config.http.clone(), stop.clone(), grace));
    // Loading compiles agents (in child processes, waited on here): the
    // API keeps answering on the runtime's other threads meanwhile.
    let daemon = match tokio::task::block_in_place(|| Daemon::start_with(config, extend)) {
        Ok(daemon) => Arc::new(daemon),
        Err(e) => {
            stop.cancel();
            let _ = serving.await;
            return Err(e);
        }
    };
    if let StorageBackend::Redis(settings) = &config.host_config().storage {
        match daemon.host.check_storage().await {
            Ok(()) => {
                tracing::info!("KV store: Redis (prefix {:?}, {} connections)", settings.key_prefix, settings.pool_size)
            }
            // Not fatal: the connections are re-made with backoff, and KV
            // calls fail as unavailable until Redis answers.
            Err(e) => tracing::warn!("{e}; KV calls fail until it answers"),
        }
    }
    *app.write().unwrap_or_else(|e| e.into_inner()) = daemon.router();
    let _ = daemon.app.set(app);
    ready();
    // SIGHUP reloads the agents.
    let hangups = {
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
            while hup.recv().await.is_some() {
                let _ = daemon.reload().await;
            }
        })
    };
    stop.cancelled().await;
    hangups.abort();
    tracing::info!("shutting down: draining running tasks for up to {grace:?}");
    daemon.scheduler.shutdown(grace).await;
    let served = serving.await.map_err(|e| e.to_string())?;
    signal.abort();
    served.map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

/// Names the caller of every endpoint but `/healthz` (for load balancers):
/// anyone without authentication, else the token's owner (`401` without one).
async fn authenticate(
    State(tokens): State<Option<Arc<Tokens>>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !matches!(request.uri().path(), "/healthz" | "/readyz") {
        let caller = match &tokens {
            None => Arc::new(Caller::anyone()),
            Some(tokens) => {
                let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                match tokens.authenticate(header) {
                    Ok(caller) => caller,
                    Err(e) => return unauthenticated(e),
                }
            }
        };
        request.extensions_mut().insert(caller);
    }
    next.run(request).await
}

fn unauthenticated(e: AuthError) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, e);
    response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    response
}

type Who = axum::Extension<Arc<Caller>>;

struct ApiState {
    host: Arc<Host>,
    scheduler: Scheduler,
    retry_after_s: u64,
    /// For reloads (weak: the daemon holds the router that holds this).
    daemon: std::sync::Weak<Daemon>,
}

type Api = State<Arc<ApiState>>;

#[derive(Serialize)]
struct Accepted {
    id: TaskId,
    status: &'static str,
}

async fn submit(State(api): Api, who: Who, body: Result<Json<Submission>, JsonRejection>) -> Response {
    if let Err(e) = who.require(Scope::Submit) {
        return error(StatusCode::FORBIDDEN, e);
    }
    let Json(mut submission) = match body {
        Ok(b) => b,
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    submission.owner = who.name.clone();
    match api.scheduler.submit(submission).await {
        Ok(id) => (StatusCode::ACCEPTED, Json(Accepted { id, status: "pending" })).into_response(),
        Err(e) => {
            let status = match &e {
                SubmitError::UnknownAgent(_) => StatusCode::NOT_FOUND,
                SubmitError::InputTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                SubmitError::BadAttempts(_) | SubmitError::BadDeadline(_) | SubmitError::BadIdempotencyKey(_) => {
                    StatusCode::BAD_REQUEST
                }
                SubmitError::IdempotencyConflict { .. } | SubmitError::AgentMismatch(_) => StatusCode::CONFLICT,
                SubmitError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
                // The journal cannot be written (a full disk...): worth retrying.
                SubmitError::ShuttingDown | SubmitError::Journal(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            if matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
                return retry_later(status, e, api.retry_after_s);
            }
            error(status, e)
        }
    }
}

fn parse_id(raw: &str) -> Result<TaskId, String> {
    raw.parse()
}

/// The task `raw` names, if the caller holds `scope` and may see the task;
/// else the answer to give (another token's task is "not found", as one
/// that does not exist).
async fn own_task(
    api: &ApiState,
    who: &Caller,
    scope: Scope,
    raw: &str,
) -> Result<crate::scheduler::TaskRecord, Response> {
    who.require(scope).map_err(|e| error(StatusCode::FORBIDDEN, e))?;
    let id = parse_id(raw).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    match api.scheduler.status(id).await {
        Ok(Some(record)) if who.owns(record.state.owner.as_deref()) => Ok(record),
        Ok(_) => Err(error(
            StatusCode::NOT_FOUND,
            format!("no task {id} (finished tasks are kept as [scheduler.retain_finished] says)"),
        )),
        Err(e) => Err(retry_later(StatusCode::SERVICE_UNAVAILABLE, e, api.retry_after_s)),
    }
}

async fn status(State(api): Api, who: Who, UrlPath(raw): UrlPath<String>) -> Response {
    match own_task(&api, &who, Scope::Read, &raw).await {
        Ok(record) => Json(record).into_response(),
        Err(answer) => answer,
    }
}

async fn logs(State(api): Api, who: Who, UrlPath(raw): UrlPath<String>) -> Response {
    let id = match own_task(&api, &who, Scope::Read, &raw).await {
        Ok(record) => record.state.id,
        Err(answer) => return answer,
    };
    match api.scheduler.logs(id).await {
        Ok(attempts) => Json(json!({ "id": id, "attempts": attempts })).into_response(),
        Err(e) => retry_later(StatusCode::SERVICE_UNAVAILABLE, e, api.retry_after_s),
    }
}

/// `GET /v1/tasks?agent=&status=&cursor=&limit=`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    agent: Option<String>,
    status: Option<crate::scheduler::TaskStatus>,
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(api): Api,
    who: Who,
    params: Result<axum::extract::Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(e) = who.require(Scope::Read) {
        return error(StatusCode::FORBIDDEN, e);
    }
    let params = match params {
        Ok(axum::extract::Query(p)) => p,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let cursor = match params.cursor.as_deref().map(parse_id).transpose() {
        Ok(cursor) => cursor,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("cursor: {e}")),
    };
    let limit = params.limit.unwrap_or(100);
    if !(1..=TaskQuery::MAX_LIMIT).contains(&limit) {
        return error(StatusCode::BAD_REQUEST, format!("limit must be between 1 and {}", TaskQuery::MAX_LIMIT));
    }
    // A token sees its own tasks; admin sees every one.
    let owner = (!who.may(Scope::Admin)).then(|| who.name.clone());
    let query = TaskQuery { agent: params.agent, status: params.status, owner, cursor, limit };
    match api.scheduler.list(query).await {
        Ok(page) => Json(page).into_response(),
        Err(e) => retry_later(StatusCode::SERVICE_UNAVAILABLE, e, api.retry_after_s),
    }
}

async fn cancel(State(api): Api, who: Who, UrlPath(raw): UrlPath<String>) -> Response {
    let id = match own_task(&api, &who, Scope::Cancel, &raw).await {
        Ok(record) => record.state.id,
        Err(answer) => return answer,
    };
    match api.scheduler.cancel(id).await {
        Ok(status) => Json(json!({ "id": id, "status": status })).into_response(),
        Err(e @ CancelError::NotFound(_)) => error(StatusCode::NOT_FOUND, e),
        Err(e @ CancelError::AlreadyFinished { .. }) => error(StatusCode::CONFLICT, e),
        Err(e @ CancelError::Journal(_)) => retry_later(StatusCode::SERVICE_UNAVAILABLE, e, api.retry_after_s),
    }
}

async fn agents(State(api): Api, who: Who) -> Response {
    if let Err(e) = who.require(Scope::Read) {
        return error(StatusCode::FORBIDDEN, e);
    }
    let list: Vec<_> = api
        .scheduler
        .agents()
        .iter()
        .map(|e| {
            let mut agent = json!({
                "name": e.agent.name(),
                "max_concurrency": e.max_concurrency,
                "imports": e.agent.imports(),
                "digest": e.agent.digest(),
            });
            // Grants and limits are for operators only.
            if who.may(Scope::Admin) {
                agent["policy"] = json!(e.agent.policy());
            }
            agent
        })
        .collect();
    Json(json!({ "agents": list })).into_response()
}

async fn health(State(api): Api) -> Response {
    let (queued, in_memory) = (api.scheduler.queued(), api.scheduler.live());
    match api.scheduler.storage_health() {
        Ok(()) => Json(json!({ "status": "ok", "queued": queued, "in_memory": in_memory })).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "degraded", "queued": queued, "in_memory": in_memory, "storage": e.to_string() })),
        )
            .into_response(),
    }
}

/// `POST /v1/admin/reload` (admin): what changed, or why the new config was refused.
async fn reload(State(api): Api, who: Who) -> Response {
    if let Err(e) = who.require(Scope::Admin) {
        return error(StatusCode::FORBIDDEN, e);
    }
    let Some(daemon) = api.daemon.upgrade() else {
        return retry_later(StatusCode::SERVICE_UNAVAILABLE, "the daemon is shutting down", api.retry_after_s);
    };
    match daemon.reload().await {
        Ok(changes) => Json(changes).into_response(),
        Err(e) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, format!("the new config was refused, the agents running stay: {e}"))
        }
    }
}

/// Whether the daemon takes tasks now: `503` while its storage fails or
/// once it is stopping (apart from `/healthz`, which says it is alive).
async fn ready(State(api): Api) -> Response {
    match api.scheduler.storage_health() {
        _ if api.scheduler.stopping() => {
            retry_later(StatusCode::SERVICE_UNAVAILABLE, "the daemon is shutting down", api.retry_after_s)
        }
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(e) => retry_later(StatusCode::SERVICE_UNAVAILABLE, e, api.retry_after_s),
    }
}

async fn metrics(State(api): Api, who: Who) -> Response {
    if let Err(e) = who.require(Scope::Admin) {
        return error(StatusCode::FORBIDDEN, e);
    }
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        api.host.metrics().encode(),
    )
        .into_response()
}
