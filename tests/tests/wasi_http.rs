//! `wasi:http/outgoing-handler` under the `[capabilities.outbound_http]`
//! rules: a Rust agent on the standard `wasip2` bindings gets through only
//! what one rule allows, hits the same quota, size limits and private-address
//! defence as `chimera:agent/outbound-http`, gets redirects back instead of
//! followed, and has the rule's secret header added.

use chimera_host::{Agent, Host, Secrets, TaskReport};
use chimera_tests::{artifacts, component, host_with, metric, policy};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A loopback service: `GET /hello`, `POST /echo` (the body back),
/// `GET /big` (100 KiB), `GET /redirect` (307 to `redirect_to`); it counts
/// requests and keeps each request's `authorization` header.
struct Service {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    auth: Arc<Mutex<Vec<Option<String>>>>,
}

async fn service(redirect_to: String) -> Service {
    use axum::routing::{get, post};
    let hits = Arc::new(AtomicUsize::new(0));
    let auth: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let (h, a) = (hits.clone(), auth.clone());
    let app = axum::Router::new()
        .route("/hello", get(|| async { "hello over wasi:http" }))
        .route("/echo", post(|body: String| async move { body }))
        .route("/big", get(|| async { "x".repeat(100 << 10) }))
        .route("/redirect", get(move || async move { axum::response::Redirect::temporary(&redirect_to) }))
        .layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            h.fetch_add(1, Ordering::SeqCst);
            let header = req.headers().get("authorization").map(|v| v.to_str().unwrap().to_string());
            a.lock().unwrap().push(header);
            next.run(req)
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Service { addr, hits, auth }
}

fn rules(port: u16, grant: &str, rule: &str) -> String {
    format!(
        "[capabilities.outbound_http]\n{grant}\n[[capabilities.outbound_http.allow]]\nurl = \"http://127.0.0.1:{port}/\"\n\
         methods = [\"GET\", \"POST\"]\nallow_private = true\n{rule}\n"
    )
}

async fn fetch(host: &Host, agent: &Agent, spec: Value) -> (Value, TaskReport) {
    let report = host.run(agent, &spec.to_string()).await;
    let out = serde_json::from_str(report.outcome.as_ref().unwrap_or_else(|e| panic!("{e}"))).unwrap();
    (out, report)
}

fn warned(report: &TaskReport, text: &str) -> bool {
    report.logs.iter().any(|l| l.message.starts_with("wasi:http request refused") && l.message.contains(text))
}

#[tokio::test(flavor = "multi_thread")]
async fn wasi_http_requests_pass_only_under_the_outbound_http_rules() {
    let landing = service(String::new()).await;
    let svc = service(format!("http://{}/hello", landing.addr)).await;
    let port = svc.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(dir.path(), |_| {});
    let agent =
        host.load("wasi-http-fetch", &component(artifacts::WASI_HTTP_FETCH), policy(&rules(port, "", ""))).unwrap();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");

    let (out, report) = fetch(&host, &agent, json!({"url": url("/hello")})).await;
    assert_eq!((out["status"].as_u64(), out["body"].as_str()), (Some(200), Some("hello over wasi:http")), "{out}");
    assert_eq!(report.usage.counter("outbound-http", "requests"), 1);
    assert_eq!(report.usage.counter("outbound-http", "bytes_sent"), url("/hello").len() as u64);
    assert_eq!(report.usage.counter("outbound-http", "bytes_received"), "hello over wasi:http".len() as u64);
    // A body goes out (counted), written after the request was handed over.
    let text = "y".repeat(20_000);
    let (out, report) = fetch(&host, &agent, json!({"method": "POST", "url": url("/echo"), "body": text})).await;
    assert_eq!(out["body"].as_str().map(str::len), Some(20_000), "{out}");
    assert!(report.usage.counter("outbound-http", "bytes_sent") >= 20_000 + url("/echo").len() as u64);
    assert_eq!(svc.hits.load(Ordering::SeqCst), 2);

    // No rule: refused before anything goes out, the reason in the task's log.
    let other = format!("http://{}/hello", landing.addr);
    let (out, report) = fetch(&host, &agent, json!({"url": other})).await;
    assert_eq!(out, json!({"error": "ErrorCode::HttpRequestDenied"}));
    assert!(warned(&report, &format!("(no-rule): no allow rule of this agent's policy matches GET {other}")));
    // A method no rule allows, and one no rule can allow.
    let (out, _) = fetch(&host, &agent, json!({"method": "PUT", "url": url("/echo")})).await;
    assert_eq!(out, json!({"error": "ErrorCode::HttpRequestDenied"}));
    let (out, report) = fetch(&host, &agent, json!({"method": "TRACE", "url": url("/hello")})).await;
    assert_eq!(out, json!({"error": "ErrorCode::HttpRequestDenied"}));
    assert!(warned(&report, "the TRACE method is not one a rule can allow"));
    // Headers the host keeps to itself are refused when the agent sets them.
    for name in ["proxy-authorization", "te", "host", "transfer-encoding"] {
        let (out, _) = fetch(&host, &agent, json!({"url": url("/hello"), "headers": [[name, "x"]]})).await;
        assert_eq!(
            out,
            json!({"error": "ErrorCode::InternalError(Some(\"header: HeaderError::Forbidden\"))"}),
            "{name}"
        );
    }
    // A redirect is handed back, not followed.
    let (out, _) = fetch(&host, &agent, json!({"url": url("/redirect")})).await;
    assert_eq!(out["status"], 307, "{out}");
    assert_eq!(landing.hits.load(Ordering::SeqCst), 0, "the redirect was followed");
    assert_eq!(svc.hits.load(Ordering::SeqCst), 3);
    assert_eq!(
        metric(&host, r#"chimera_denials_total{agent="wasi-http-fetch",capability="outbound-http",reason="no-rule"}"#),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wasi_http_hits_the_same_quota_and_size_limits() {
    let svc = service(String::new()).await;
    let port = svc.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(dir.path(), |_| {});
    let grant = "max_requests = 2\nmax_request_bytes = 1000\nmax_response_bytes = 65536";
    let agent =
        host.load("wasi-http-fetch", &component(artifacts::WASI_HTTP_FETCH), policy(&rules(port, grant, ""))).unwrap();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");

    let (out, report) = fetch(&host, &agent, json!({"url": url("/hello"), "repeat": 3})).await;
    assert_eq!(out, json!({"error": "ErrorCode::HttpRequestDenied"}));
    assert!(warned(&report, "(quota): this task already sent 2 requests (max_requests)"));
    assert_eq!(report.usage.counter("outbound-http", "requests"), 2);
    assert_eq!(svc.hits.load(Ordering::SeqCst), 2);
    // A body past what max_request_bytes leaves: refused, never sent.
    let (out, report) =
        fetch(&host, &agent, json!({"method": "POST", "url": url("/echo"), "body": "z".repeat(2000)})).await;
    assert_eq!(out, json!({"error": "ErrorCode::HttpRequestBodySize(None)"}));
    assert!(warned(&report, "(too-large): the request body is more than"));
    assert_eq!(svc.hits.load(Ordering::SeqCst), 2);
    // A response past max_response_bytes.
    let (out, report) = fetch(&host, &agent, json!({"url": url("/big")})).await;
    assert_eq!(out, json!({"error": "ErrorCode::HttpResponseBodySize(None)"}));
    assert!(warned(&report, "response body exceeds 65536 bytes (max_response_bytes)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn wasi_http_meets_the_private_address_defence_and_gets_the_secret_header() {
    let svc = service(String::new()).await;
    let port = svc.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let mut secrets = Secrets::new();
    secrets.insert("api-key", "wasi-secret-93e1").unwrap();
    let host = host_with(dir.path(), |c| {
        c.secrets = secrets;
        c.dns_overrides.insert("inside.test".into(), vec!["127.0.0.1".parse().unwrap()]);
    });
    // The address literal and a name resolving to loopback, neither with allow_private.
    let text = format!(
        "[capabilities.outbound_http]\n\
         [[capabilities.outbound_http.allow]]\nurl = \"http://127.0.0.1:{port}/open/\"\n\
         [[capabilities.outbound_http.allow]]\nurl = \"http://inside.test:{port}/\"\n\
         [[capabilities.outbound_http.allow]]\nurl = \"http://127.0.0.1:{port}/\"\nallow_private = true\n\
         secret_headers = [{{ name = \"Authorization\", secret = \"api-key\", prefix = \"Bearer \" }}]\n"
    );
    let agent = host.load("wasi-http-fetch", &component(artifacts::WASI_HTTP_FETCH), policy(&text)).unwrap();
    let (out, report) = fetch(&host, &agent, json!({"url": format!("http://127.0.0.1:{port}/open/x")})).await;
    assert_eq!(out, json!({"error": "ErrorCode::DestinationIpProhibited"}));
    assert!(warned(&report, "127.0.0.1 is a loopback address; the rule must say allow_private = true"));
    let (out, report) = fetch(&host, &agent, json!({"url": format!("http://inside.test:{port}/hello")})).await;
    assert_eq!(out, json!({"error": "ErrorCode::DestinationIpProhibited"}));
    assert!(warned(&report, "inside.test resolves to a loopback address; the rule must say allow_private = true"));
    assert_eq!(svc.hits.load(Ordering::SeqCst), 0);
    // The third rule adds the secret, replacing the agent's own header.
    let spec = json!({"url": format!("http://127.0.0.1:{port}/hello"), "headers": [["Authorization", "mine"]]});
    let (out, report) = fetch(&host, &agent, spec).await;
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(*svc.auth.lock().unwrap(), [Some("Bearer wasi-secret-93e1".to_string())]);
    assert!(!format!("{report:?}").contains("wasi-secret-93e1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn wasi_http_without_an_outbound_http_grant_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(dir.path(), |_| {});
    let err = host
        .load("wasi-http-fetch", &component(artifacts::WASI_HTTP_FETCH), policy(""))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("wasi:http/outgoing-handler@0.2.12"), "{err}");
    assert!(err.contains("[capabilities.outbound_http]"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wasi_http_buffers_are_held_against_the_memory_limit() {
    let svc = service(String::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(dir.path(), |_| {});
    // 1,000 handles × 10 KiB would take more than half of 16 MiB: refused, saying which limits.
    let small = format!("[limits]\nmemory_mib = 16\n{}", rules(svc.addr.port(), "", ""));
    let err = host
        .load("wasi-http-fetch", &component(artifacts::WASI_HTTP_FETCH), policy(&small))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("wasi:http may hold up to 10240 bytes per resource handle for the agent: 1000 handles take 10240000 bytes, at least half of its memory_mib (16777216 bytes)"),
        "{err}"
    );
    // With fewer handles it loads, and its tasks run with those bytes held.
    let fewer = format!("[limits]\nmemory_mib = 16\nresource_handles = 200\n{}", rules(svc.addr.port(), "", ""));
    let agent = host.load("wasi-http-fetch", &component(artifacts::WASI_HTTP_FETCH), policy(&fewer)).unwrap();
    let (out, report) =
        fetch(&host, &agent, json!({"url": format!("http://127.0.0.1:{}/hello", svc.addr.port())})).await;
    assert_eq!(out["status"], 200, "{out}");
    assert!(report.usage.peak_host_bytes >= 200 * 10 * 1024, "host peak {}", report.usage.peak_host_bytes);
    // The Rust SDK's own interface holds nothing of the kind.
    let plain = host
        .load(
            "http-fetch",
            &component(artifacts::HTTP_FETCH),
            policy(&format!("[limits]\nmemory_mib = 16\n[capabilities.logging]\n{}", rules(svc.addr.port(), "", ""))),
        )
        .unwrap();
    let report =
        host.run(&plain, &json!({"url": format!("http://127.0.0.1:{}/hello", svc.addr.port())}).to_string()).await;
    assert!(report.outcome.is_ok(), "{:?}", report.outcome);
    assert!(report.usage.peak_host_bytes < 200 * 10 * 1024, "host peak {}", report.usage.peak_host_bytes);
}
