//! Each capability granted and used, for real, by the sample agents.

use chimera_host::{LogSource, TaskError};
use chimera_tests::{artifacts, component, host_in, policy, TestServer};
use serde_json::{json, Value};

fn output_json(outcome: &Result<String, TaskError>) -> Value {
    serde_json::from_str(outcome.as_ref().unwrap_or_else(|e| panic!("task failed: {e}"))).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_transforms_text_and_logs_through_the_logging_capability() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let agent = host.load("echo", &component(artifacts::ECHO), policy("[capabilities.logging]")).unwrap();
    let report = host.run(&agent, r#"{"text":"Hello","op":"upper"}"#).await;
    assert_eq!(report.outcome, Ok(r#"{"text":"HELLO","op":"upper"}"#.to_string()));
    assert_eq!(report.logs.len(), 1);
    assert_eq!(report.logs[0].message, "upper applied to 5 chars");
    assert_eq!((report.logs[0].level, report.logs[0].source), ("info", LogSource::Agent));
    assert_eq!(report.usage.calls("logging"), 1);
    assert!(report.usage.peak_memory_bytes >= 64 << 10, "{:?}", report.usage);

    let report = host.run(&agent, r#"{"text":"x","op":"explode"}"#).await;
    assert_eq!(
        report.outcome,
        Err(TaskError::Agent {
            message: "unknown op \"explode\": use echo, upper, lower or reverse".into(),
            retryable: false
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn word_count_needs_no_capability() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let agent = host.load("word-count", &component(artifacts::WORD_COUNT), policy("")).unwrap();
    let text = "The cat and the hat\nthe end";
    let report = host.run(&agent, &json!({"text": text, "top": 2}).to_string()).await;
    assert_eq!(
        output_json(&report.outcome),
        json!({"words": 7, "lines": 2, "chars": text.chars().count(), "top": [["the", 3], ["and", 1]]})
    );
    assert!(report.usage.capabilities.is_empty(), "{:?}", report.usage.capabilities);
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_built_without_wasi_imports_only_logging_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let grants = policy("[capabilities.logging]");
    let audit = host.audit("echo", &component(artifacts::ECHO_NO_WASI), &grants).unwrap();
    let imports: Vec<&str> = audit.imports.iter().map(|d| d.import.as_str()).collect();
    assert_eq!(imports, ["chimera:agent/logging@0.1.0"]);
    let agent = host.load("echo", &component(artifacts::ECHO_NO_WASI), grants).unwrap();
    let report = host.run(&agent, r#"{"text":"abc","op":"reverse"}"#).await;
    assert_eq!(report.outcome, Ok(r#"{"text":"cba","op":"reverse"}"#.to_string()));
}

const KV_POLICY_ALPHA: &str =
    "[agent]\nname = \"alpha\"\n[capabilities.logging]\n[capabilities.kv]\nnamespace = \"alpha\"\n";
const KV_POLICY_BETA: &str = "[capabilities.kv]\nnamespace = \"beta\"\n[capabilities.logging]\n";

#[tokio::test(flavor = "multi_thread")]
async fn kv_values_persist_across_tasks_and_host_restarts_and_stay_in_their_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let counter = component(artifacts::KV_COUNTER);
    {
        let host = host_in(dir.path());
        let alpha = host.load("alpha", &counter, policy(KV_POLICY_ALPHA)).unwrap();
        let r = host.run(&alpha, r#"{"key":"visits"}"#).await;
        assert_eq!(output_json(&r.outcome), json!({"key": "visits", "count": 1}));
        assert_eq!((r.usage.counter("kv", "writes"), r.usage.calls("kv")), (1, 1));
        let r = host.run(&alpha, r#"{"key":"visits","by":5}"#).await;
        assert_eq!(output_json(&r.outcome), json!({"key": "visits", "count": 6}));
    }
    // A new host on the same data directory: the value survived.
    let host = host_in(dir.path());
    let alpha = host.load("alpha", &counter, policy(KV_POLICY_ALPHA)).unwrap();
    let r = host.run(&alpha, r#"{"key":"visits"}"#).await;
    assert_eq!(output_json(&r.outcome), json!({"key": "visits", "count": 7}));

    // Another agent with the same key names sees only its own namespace.
    let beta = host.load("beta", &counter, policy(KV_POLICY_BETA)).unwrap();
    let r = host.run(&beta, r#"{"key":"visits"}"#).await;
    assert_eq!(output_json(&r.outcome), json!({"key": "visits", "count": 1}));
    let r = host.run(&beta, r#"{"list":true}"#).await;
    assert_eq!(output_json(&r.outcome), json!({"counters": [["visits", 1]]}));
    let r = host.run(&alpha, r#"{"list":true}"#).await;
    assert_eq!(output_json(&r.outcome), json!({"counters": [["visits", 7]]}));

    // A plain get reads without writing; a plain set writes.
    let r = host.run(&alpha, r#"{"key":"visits","peek":true}"#).await;
    assert_eq!(output_json(&r.outcome), json!({"key": "visits", "count": 7}));
    assert_eq!((r.usage.counter("kv", "reads"), r.usage.counter("kv", "writes")), (1, 0));
    let r = host.run(&alpha, r#"{"key":"visits","set":40}"#).await;
    assert_eq!((r.usage.counter("kv", "reads"), r.usage.counter("kv", "writes")), (0, 1));
    let r = host.run(&alpha, r#"{"key":"visits","by":2}"#).await;
    assert_eq!(output_json(&r.outcome), json!({"key": "visits", "count": 42}));
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_get_many_reads_a_page_of_values_in_one_call_within_max_batch_keys() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let counter = component(artifacts::KV_COUNTER);
    let agent = host.load("many", &counter, policy("[capabilities.logging]\n[capabilities.kv]\n")).unwrap();
    for (key, by) in [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)] {
        let r = host.run(&agent, &json!({"key": key, "by": by}).to_string()).await;
        assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    }
    let r = host.run(&agent, r#"{"list":true}"#).await;
    assert_eq!(output_json(&r.outcome), json!({"counters": [["a", 1], ["b", 2], ["c", 3], ["d", 4], ["e", 5]]}));
    // One list-keys page and one get-many: two calls, a read for the page and one per key.
    assert_eq!((r.usage.calls("kv"), r.usage.counter("kv", "reads")), (2, 6));

    // The same namespace under a grant that reads at most 2 keys a call:
    // refused before any key is read, and the refusal names the limit.
    let narrow = host
        .load(
            "narrow",
            &counter,
            policy("[capabilities.logging]\n[capabilities.kv]\nnamespace = \"many\"\nmax_batch_keys = 2\n"),
        )
        .unwrap();
    let r = host.run(&narrow, r#"{"list":true}"#).await;
    match &r.outcome {
        Err(TaskError::Agent { message, retryable: false }) => {
            assert!(message.contains("get-many asked for 5 keys; the limit is 2 (max_batch_keys)"), "{message}")
        }
        other => panic!("expected the agent to report the refusal, got {other:?}"),
    }
    assert_eq!((r.usage.calls("kv"), r.usage.counter("kv", "reads")), (1, 1), "only the page was read");
    assert!(host.run(&agent, r#"{"key":"a","peek":true}"#).await.outcome.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_read_only_grant_refuses_writes_with_a_typed_denial() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let agent = host
        .load(
            "ro",
            &component(artifacts::KV_COUNTER),
            policy("[capabilities.logging]\n[capabilities.kv]\nread_only = true\n"),
        )
        .unwrap();
    let r = host.run(&agent, r#"{"key":"visits"}"#).await;
    match r.outcome {
        Err(TaskError::Agent { message, retryable: false }) => {
            assert!(message.contains("Denied") && message.contains("read-only"), "{message}")
        }
        other => panic!("expected the agent to report the denial, got {other:?}"),
    }
}

fn http_policy(url: &str, allow_private: bool, extra: &str) -> chimera_host::Policy {
    policy(&format!(
        "[capabilities.logging]\n[capabilities.outbound_http]\n{extra}\n[[capabilities.outbound_http.allow]]\nurl = \"{url}\"\nallow_private = {allow_private}\n"
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_http_reaches_an_allowed_url_and_nothing_else() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let agent =
        host.load("fetch", &component(artifacts::HTTP_FETCH), http_policy(&server.url("/hello"), true, "")).unwrap();

    let r = host.run(&agent, &json!({"url": server.url("/hello")}).to_string()).await;
    assert_eq!(output_json(&r.outcome), json!({"status": 200, "bytes": 26, "body": "hello from the test server"}));
    assert_eq!(
        (r.usage.counter("outbound-http", "requests"), r.usage.counter("outbound-http", "bytes_received")),
        (1, 26)
    );
    assert_eq!(server.hits(), 1);

    // Same server, a path outside the allowed prefix: denied before any traffic.
    let r = host.run(&agent, &json!({"url": server.url("/big")}).to_string()).await;
    match r.outcome {
        Err(TaskError::Agent { message, retryable: false }) => {
            assert_eq!(
                message,
                format!("fetch denied: no allow rule of this agent's policy matches GET {}", server.url("/big"))
            )
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    assert_eq!(r.usage.counter("outbound-http", "requests"), 0);
    assert_eq!(server.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn loopback_needs_an_explicit_grant_even_when_the_url_matches() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let port = server.addr.port();
    for (url, expected) in [
        (format!("http://127.0.0.1:{port}/"), "127.0.0.1 is a loopback address".to_string()),
        (format!("http://localhost:{port}/"), "loopback address; the rule must say allow_private = true".to_string()),
    ] {
        let agent = host.load("fetch", &component(artifacts::HTTP_FETCH), http_policy(&url, false, "")).unwrap();
        let r = host.run(&agent, &json!({"url": format!("{url}hello")}).to_string()).await;
        match r.outcome {
            Err(TaskError::Agent { message, retryable: false }) => {
                assert!(message.starts_with("fetch denied: ") && message.contains(&expected), "{message}")
            }
            other => panic!("expected a denial for {url}, got {other:?}"),
        }
    }
    assert_eq!(server.hits(), 0, "no request may reach the server");
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_http_caps_response_size_and_time_and_returns_redirects_unfollowed() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let policy = http_policy(&server.url("/"), true, "max_response_bytes = 1048576\ntimeout_ms = 300");
    let agent = host.load("fetch", &component(artifacts::HTTP_FETCH), policy).unwrap();

    let r = host.run(&agent, &json!({"url": server.url("/big")}).to_string()).await;
    match r.outcome {
        Err(TaskError::Agent { message, retryable: false }) => {
            assert_eq!(message, "fetch refused: response body exceeds 1048576 bytes (max_response_bytes)")
        }
        other => panic!("expected too-large, got {other:?}"),
    }

    let r = host.run(&agent, &json!({"url": server.url("/slow")}).to_string()).await;
    assert_eq!(r.outcome, Err(TaskError::Agent { message: "fetch timed out".into(), retryable: true }));

    let r = host.run(&agent, &json!({"url": server.url("/redirect")}).to_string()).await;
    assert_eq!(output_json(&r.outcome)["status"], json!(307));
    assert_eq!(r.usage.counter("outbound-http", "requests"), 1, "the redirect is not followed");
}
