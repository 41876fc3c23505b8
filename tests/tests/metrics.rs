//! Outcomes, limit hits and denials are counted; label values come from the
//! host, never from guest strings.

use chimera_tests::{artifacts, component, host_in, metric, policy, TestServer};

#[tokio::test(flavor = "multi_thread")]
async fn outcomes_limit_hits_and_denials_are_counted() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let echo = host.load("echo", &component(artifacts::ECHO), policy("[capabilities.logging]")).unwrap();
    let spin = host.load("spin", &component(artifacts::CPU_SPIN), policy("[limits]\ncpu_ms = 50\n")).unwrap();
    let fetch_policy = format!(
        "[capabilities.logging]\n[capabilities.outbound_http]\n[[capabilities.outbound_http.allow]]\nurl = \"{}\"\nallow_private = true\n",
        server.url("/hello")
    );
    let fetch = host.load("fetch", &component(artifacts::HTTP_FETCH), policy(&fetch_policy)).unwrap();
    let snoop = host.load("snoop", &component(artifacts::SNOOP), policy("[capabilities.logging]")).unwrap();
    assert!(host.load("refused", &component(artifacts::FS_ESCAPE), policy("")).is_err());

    assert!(host.run(&echo, r#"{"text":"a"}"#).await.outcome.is_ok());
    assert!(host.run(&echo, r#"{"text":"a"}"#).await.outcome.is_ok());
    assert!(host.run(&spin, "").await.outcome.is_err());
    let denied = format!(r#"{{"url":"{}"}}"#, server.url("/big"));
    assert!(host.run(&fetch, &denied).await.outcome.is_err());
    assert!(host.run(&snoop, "").await.outcome.is_ok());

    let m = host.metrics().encode();
    let sample = |_: &String, series: &str| metric(&host, series);
    assert_eq!(sample(&m, r#"chimera_tasks_total{agent="echo",outcome="ok"}"#), Some(2.0), "{m}");
    assert_eq!(sample(&m, r#"chimera_tasks_total{agent="spin",outcome="cpu-limit"}"#), Some(1.0));
    assert_eq!(sample(&m, r#"chimera_limit_hits_total{agent="spin",limit="cpu"}"#), Some(1.0));
    assert_eq!(sample(&m, r#"chimera_tasks_total{agent="fetch",outcome="agent-error"}"#), Some(1.0));
    assert_eq!(
        sample(&m, r#"chimera_denials_total{agent="fetch",capability="outbound-http",reason="no-rule"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&m, r#"chimera_load_refusals_total{capability="wasi-filesystem"}"#), Some(2.0));
    assert_eq!(sample(&m, "chimera_live_instances"), Some(0.0));
    // The spin's budget is 50 ms: at least 10 epoch ticks (of 5 ms) found it running.
    assert!(sample(&m, r#"chimera_cpu_ticks_total{agent="spin"}"#).is_some_and(|t| t >= 10.0), "{m}");
    // Nothing the guests said made it into the metrics.
    for guest_text in ["forged", "admin", "stdout line", "hello"] {
        assert!(!m.contains(guest_text), "guest text {guest_text:?} leaked into metrics");
    }
    assert!(m.ends_with("# EOF\n"));
}
