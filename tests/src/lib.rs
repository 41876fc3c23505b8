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

/// A host on a fresh data directory with a small pool (tests run in parallel).
pub fn host_in(dir: &Path) -> Host {
    Host::new(HostConfig { data_dir: dir.to_path_buf(), max_instances: 16, ..HostConfig::default() })
        .expect("host starts")
}

/// A host whose outbound HTTP resolves `names` to fixed addresses.
pub fn host_with_dns(dir: &Path, names: &[(&str, &str)]) -> Host {
    let dns_overrides =
        names.iter().map(|(name, ip)| (name.to_string(), vec![ip.parse().expect("an IP address")])).collect();
    Host::new(HostConfig { data_dir: dir.to_path_buf(), max_instances: 16, dns_overrides, ..HostConfig::default() })
        .expect("host starts")
}

/// Parses a policy, panicking with its error.
pub fn policy(toml: &str) -> Policy {
    Policy::from_toml(toml).unwrap_or_else(|e| panic!("test policy is invalid: {e}"))
}

/// Reads a built component.
pub fn component(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The `chimera` binary, built by the test command before the tests run.
pub fn chimera_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/release/deps/<test-binary>
    let bin = exe.parent().unwrap().parent().unwrap().join("chimera");
    assert!(bin.exists(), "{} is missing: build it first with `cargo build --release --bin chimera`", bin.display());
    bin
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
