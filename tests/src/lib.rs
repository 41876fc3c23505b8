//! Shared pieces of the integration tests and benchmarks: paths of the
//! built components, a host factory, and a loopback HTTP server.

use chimera_host::{Agent, Host, HostConfig, Policy, TaskReport};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Paths of the components `build.rs` built from this repository's source.
pub mod artifacts {
    include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
}

/// A real `redis-server` on a free loopback port.
pub mod redis_server;
pub use redis_server::RedisServer;

/// The load-budget attacks, generated (see the file for each shape).
#[path = "../../attack-components/generated/compile_bombs.rs"]
pub mod compile_bombs;

/// Resets this process's peak resident memory (Linux `clear_refs`), so a
/// test can measure what one step makes the host grow by.
pub fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
}

/// This process's peak resident memory since the last reset, in KiB.
pub fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap()
}

/// A host on a fresh data directory with a small pool (tests run in parallel).
pub fn host_in(dir: &Path) -> Host {
    Host::new(HostConfig { data_dir: dir.to_path_buf(), max_instances: 16, ..HostConfig::default() })
        .expect("host starts")
}

/// A host like [`host_in`] with `change` made to its configuration.
pub fn host_with(dir: &Path, change: impl FnOnce(&mut HostConfig)) -> Host {
    let mut config = HostConfig { data_dir: dir.to_path_buf(), max_instances: 16, ..HostConfig::default() };
    change(&mut config);
    Host::new(config).expect("host starts")
}

/// A host whose outbound HTTP resolves `names` to fixed addresses.
pub fn host_with_dns(dir: &Path, names: &[(&str, &str)]) -> Host {
    let dns_overrides =
        names.iter().map(|(name, ip)| (name.to_string(), vec![ip.parse().expect("an IP address")])).collect();
    Host::new(HostConfig { data_dir: dir.to_path_buf(), max_instances: 16, dns_overrides, ..HostConfig::default() })
        .expect("host starts")
}

/// A host for the Python and JavaScript agents, whose compiled components
/// (12-18 MB each) are kept in one directory shared by every test: each is
/// compiled once per test run, not once per test. Load through
/// [`load_serially`] so two tests never compile the same one at once.
pub fn host_sharing_compiled(dir: &Path) -> Host {
    let shared = Path::new(artifacts::KV_COUNTER_PY).parent().unwrap().join("compiled-for-tests");
    Host::new(HostConfig {
        data_dir: dir.to_path_buf(),
        max_instances: 16,
        compile_cache_dir: Some(shared),
        // The test binaries load these while other tests keep both cores
        // busy, and the compile runs at a lower priority than they do.
        load_budget: chimera_host::compile::LoadBudget { compile_timeout_ms: 300_000, ..Default::default() },
        ..HostConfig::default()
    })
    .expect("host starts")
}

/// Loads an agent with other loads in this test binary held off, so a
/// component compiled by one test is found in the shared cache by the next.
pub fn load_serially(host: &Host, name: &str, path: &str, policy: Policy) -> Result<Agent, chimera_host::LoadError> {
    static LOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    host.load(name, &component(path), policy)
}

/// A file of this repository, e.g. `sample-agents/kv-counter-py/policy.toml`.
pub fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join(path)
}

/// The policy that links `wasi:filesystem` and `wasi:sockets` inert, plus `extra`.
pub fn inert_policy(extra: &str) -> Policy {
    policy(&format!("[wasi]\nfilesystem = \"inert\"\nsockets = \"inert\"\n{extra}"))
}

/// Parses a policy, panicking with its error.
pub fn policy(toml: &str) -> Policy {
    Policy::from_toml(toml).unwrap_or_else(|e| panic!("test policy is invalid: {e}"))
}

/// Reads a built component.
pub fn component(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The `chimera` binary, built by the test command before the tests run:
/// beside the running program (a bench binary in `<target>/release`) or one
/// directory up (a test binary in `<target>/release/deps`).
pub fn chimera_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dirs = [exe.parent().unwrap(), exe.parent().unwrap().parent().unwrap()];
    dirs.iter().map(|d| d.join("chimera")).find(|bin| bin.exists()).unwrap_or_else(|| {
        panic!("no chimera binary beside {}: build it first with `cargo build --release --bin chimera`", exe.display())
    })
}

/// Runs `attack` while a well-behaved agent runs alongside on the same host,
/// and again after it; asserts the bystander's results are correct both
/// times and that the bystander finished first when the attack is a slow one.
pub async fn run_beside_bystander(host: &Host, attack: &Agent, input: &str) -> TaskReport {
    let echo = host.load("bystander", &component(artifacts::ECHO), policy("[capabilities.logging]")).unwrap();
    let expected = Ok(r#"{"text":"BYSTANDER","op":"upper"}"#.to_string());
    let order = std::sync::Mutex::new(Vec::new());
    let attack_run = async {
        let r = host.run(attack, input).await;
        order.lock().unwrap().push("attack");
        r
    };
    let bystander_run = async {
        let r = host.run(&echo, r#"{"text":"bystander","op":"upper"}"#).await;
        order.lock().unwrap().push("bystander");
        r
    };
    let (report, bystander) = tokio::join!(attack_run, bystander_run);
    assert_eq!(bystander.outcome, expected, "the bystander was disturbed");
    if report.usage.cpu_ticks > 2 {
        assert_eq!(*order.lock().unwrap(), ["bystander", "attack"], "the bystander waited for the attack");
    }
    assert_eq!(host.run(&echo, r#"{"text":"bystander","op":"upper"}"#).await.outcome, expected);
    report
}

/// The value of one metric series, e.g. `chimera_tasks_total{agent="a",outcome="ok"}`.
pub fn metric(host: &Host, series: &str) -> Option<f64> {
    host.metrics().encode().lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Asserts the task outcome of `agent` was counted once with `outcome`, and
/// no instance is left alive.
pub fn assert_counted(host: &Host, agent: &str, outcome: &str) {
    let series = format!("chimera_tasks_total{{agent=\"{agent}\",outcome=\"{outcome}\"}}");
    assert_eq!(metric(host, &series), Some(1.0), "{series} in\n{}", host.metrics().encode());
    assert_eq!(metric(host, "chimera_live_instances"), Some(0.0), "an instance outlived its task");
}

/// A loopback HTTP server for outbound tests; stops when dropped.
pub struct TestServer {
    /// Where it listens (127.0.0.1, an ephemeral port).
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    /// Serves `GET /hello` (a greeting), `GET /big` (2 MiB), `GET /slow`
    /// (answers after 5 s), `GET /redirect` (307 to /hello),
    /// `GET /redirect-metadata` (307 to 169.254.169.254), `GET /endless` (a
    /// body that never ends) and `GET /headers` (5,000 response headers).
    pub async fn start() -> TestServer {
        use axum::{response::Redirect, routing::get, Router};
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = Router::new()
            .route("/hello", get(|| async { "hello from the test server" }))
            .route("/big", get(|| async { vec![b'x'; 2 << 20] }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route("/redirect", get(|| async { Redirect::temporary("/hello") }))
            .route(
                "/redirect-metadata",
                get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data/") }),
            )
            .route(
                "/endless",
                get(|| async {
                    let chunk = bytes::Bytes::from_static(&[b'x'; 65536]);
                    axum::body::Body::from_stream(futures::stream::repeat_with(move || {
                        Ok::<_, std::io::Error>(chunk.clone())
                    }))
                }),
            )
            .route(
                "/headers",
                get(|| async {
                    let mut response = axum::response::Response::new(axum::body::Body::from("flood"));
                    for i in 0..5000 {
                        let name = axum::http::HeaderName::try_from(format!("x-flood-{i}")).unwrap();
                        response.headers_mut().insert(name, axum::http::HeaderValue::from_static("1"));
                    }
                    response
                }),
            )
            .layer(axum::middleware::from_fn(move |req, next: axum::middleware::Next| {
                counter.fetch_add(1, Ordering::SeqCst);
                next.run(req)
            }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        TestServer { addr, hits, shutdown: Some(tx) }
    }

    /// Requests this server has received.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A `chimera serve` process on a loopback port, with its own config and
/// data directory; killed when dropped.
pub struct DaemonProcess {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    config: PathBuf,
    env: Vec<(String, String)>,
    stderr: Arc<std::sync::Mutex<String>>,
}

impl DaemonProcess {
    /// Writes `config` (TOML, without `listen`) as `dir/chimera.toml` and
    /// starts the daemon on an ephemeral loopback port.
    pub fn start(dir: &Path, config: &str) -> DaemonProcess {
        Self::start_env(dir, config, &[])
    }

    /// [`Self::start`] with extra environment variables for the daemon.
    pub fn start_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> DaemonProcess {
        let path = dir.join("chimera.toml");
        std::fs::write(&path, config).unwrap();
        Self::spawn(path, env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    /// Everything the daemon has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn spawn(config: PathBuf, env: Vec<(String, String)>) -> DaemonProcess {
        use std::io::BufRead;
        let mut command = serve_command(&config, "127.0.0.1:0");
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = command.spawn().expect("chimera serve starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = Arc::new(std::sync::Mutex::new(String::new()));
        let keep = kept.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut all = keep.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
                drop(all);
                if let Some(url) = line.split(" on ").nth(1).filter(|_| line.starts_with("chimera serving")) {
                    let _ = tx.send(Ok(url.to_string()));
                } else if line.starts_with("error") {
                    let _ = tx.send(Err(line));
                }
            }
        });
        let url = match rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(Ok(url)) => url,
            Ok(Err(line)) => panic!("chimera serve failed: {line}"),
            Err(_) => panic!("chimera serve did not report its address"),
        };
        DaemonProcess { child, url, config, env, stderr: kept }
    }

    /// Kills the daemon with SIGKILL (a crash) and starts it again on the
    /// same config and data directory.
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.restart();
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap()
    }

    /// Kills it with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts it again on the same config and data directory (after [`Self::kill`] or [`Self::terminate`]).
    pub fn restart(&mut self) {
        *self = Self::spawn(self.config.clone(), self.env.clone());
    }

    /// Sends SIGTERM and waits for the daemon to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

/// `chimera serve --listen LISTEN --config CONFIG`, its stderr piped.
pub fn serve_command(config: &Path, listen: &str) -> std::process::Command {
    let mut command = std::process::Command::new(chimera_bin());
    command
        .args(["serve", "--listen", listen, "--config"])
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    command
}

/// Runs `chimera serve --listen LISTEN` on `dir/chimera.toml` (written from
/// `config`) expecting it to refuse to start; returns its exit code and
/// stderr. Panics if it is still running after 120 s.
pub fn serve_refused(dir: &Path, config: &str, listen: &str) -> (Option<i32>, String) {
    let path = dir.join("chimera.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = serve_command(&path, listen).spawn().expect("chimera serve starts");
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(120) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("chimera serve started instead of refusing: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small API client for tests.
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new(daemon: &DaemonProcess) -> Api {
        Api { http: reqwest::Client::builder().no_proxy().build().unwrap(), base: daemon.url.clone() }
    }

    /// An API client that sends `token` as its bearer token.
    pub fn with_token(daemon: &DaemonProcess, token: &str) -> Api {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        let http = reqwest::Client::builder().no_proxy().default_headers(headers).build().unwrap();
        Api { http, base: daemon.url.clone() }
    }

    /// POST /v1/tasks; returns (status code, JSON body).
    pub async fn submit(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self.http.post(format!("{}/v1/tasks", self.base)).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// POST /v1/tasks, expecting acceptance; returns the task id.
    pub async fn submit_ok(&self, body: serde_json::Value) -> String {
        let (code, answer) = self.submit(body).await;
        assert_eq!(code, 202, "{answer}");
        answer["id"].as_str().unwrap().to_string()
    }

    /// GET /v1/tasks/{id}.
    pub async fn task(&self, id: &str) -> serde_json::Value {
        self.http.get(format!("{}/v1/tasks/{id}", self.base)).send().await.unwrap().json().await.unwrap()
    }

    /// DELETE /v1/tasks/{id}; returns (status code, JSON body).
    pub async fn cancel(&self, id: &str) -> (u16, serde_json::Value) {
        let r = self.http.delete(format!("{}/v1/tasks/{id}", self.base)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// POST with no body on any path; returns (status code, body text).
    pub async fn post(&self, path: &str) -> (u16, String) {
        let r = self.http.post(format!("{}{path}", self.base)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// GET on any path; returns (status code, body text).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Polls until the task is in a final state (bounded: panics after 120 s).
    pub async fn wait_final(&self, id: &str) -> serde_json::Value {
        for _ in 0..12_000 {
            let t = self.task(id).await;
            if !matches!(t["status"].as_str(), Some("pending" | "running")) {
                return t;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("task {id} did not finish");
    }

    /// Polls until the task is running (bounded).
    pub async fn wait_running(&self, id: &str) {
        for _ in 0..12_000 {
            if self.task(id).await["status"] == "running" {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("task {id} never ran");
    }
}

/// A `[[agents]]` entry for a daemon config.
pub fn agent_entry(name: &str, component: &str, policy: &str, max_concurrency: usize) -> String {
    format!(
        "[[agents]]\nname = \"{name}\"\ncomponent = {component:?}\npolicy = {policy:?}\nmax_concurrency = {max_concurrency}\n\n"
    )
}

/// Writes a policy file into `dir` and returns its path.
pub fn policy_file(dir: &Path, name: &str, toml: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    path.display().to_string()
}
