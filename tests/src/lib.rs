//! Shared pieces of the integration tests and benchmarks: paths of the
//! built components, a host factory, and a loopback HTTP server.

use chimera_host::{Host, HostConfig, Policy};
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

/// A loopback HTTP server for outbound tests; stops when dropped.
pub struct TestServer {
    /// Where it listens (127.0.0.1, an ephemeral port).
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    /// Serves `GET /hello` (a greeting), `GET /big` (2 MiB), `GET /slow`
    /// (answers after 5 s) and `GET /redirect` (302 to /hello).
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
