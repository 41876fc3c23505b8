//! JavaScript agents built by ComponentizeJS run unchanged: they import
//! their world's interfaces plus the WASI baseline (clocks, randomness,
//! stdio; the engine's filesystem import linked inert), their clocks,
//! randomness and console work, and the usual limits stop a busy loop and a
//! runaway allocation.

use chimera_host::{Policy, TaskError, Verdict};
use chimera_tests::{
    artifacts, assert_counted, component, host_sharing_compiled, load_serially, policy, repo_file, run_beside_bystander,
};

fn sample_policy() -> Policy {
    Policy::from_file(&repo_file("sample-agents/kv-counter-js/policy.toml")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn js_kv_counter_imports_its_capabilities_and_the_wasi_baseline_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_sharing_compiled(dir.path());
    let agent = load_serially(&host, "kv-counter-js", artifacts::KV_COUNTER_JS, sample_policy()).unwrap();

    let audit = host.audit("kv-counter-js", &component(artifacts::KV_COUNTER_JS), &sample_policy()).unwrap();
    let imports: Vec<(&str, Verdict)> = audit.imports.iter().map(|d| (d.import.as_str(), d.verdict)).collect();
    let of = |prefix: &str| -> Vec<Verdict> {
        imports.iter().filter(|(i, _)| i.starts_with(prefix)).map(|(_, v)| *v).collect()
    };
    assert_eq!(of("chimera:"), [Verdict::Granted; 3], "{imports:?}");
    assert_eq!(of("chimera:agent/config@"), [Verdict::Granted]);
    assert_eq!(of("chimera:agent/logging@"), [Verdict::Granted]);
    assert_eq!(of("chimera:agent/kv@"), [Verdict::Granted]);
    assert!(!of("wasi:filesystem/").is_empty() && of("wasi:filesystem/").iter().all(|v| *v == Verdict::Inert));
    assert!(of("wasi:sockets/").is_empty() && of("wasi:http/").is_empty(), "{imports:?}");
    assert!(audit.runnable);

    let first = host.run(&agent, r#"{"key":"visits"}"#).await;
    assert_eq!(first.outcome, Ok(r#"{"key":"visits","count":1}"#.to_string()));
    let second = host.run(&agent, r#"{"key":"visits","by":41}"#).await;
    assert_eq!(second.outcome, Ok(r#"{"key":"visits","count":42}"#.to_string()));
    let line = second.logs.iter().find(|l| l.message == "counter visits is now 42").expect("the agent logged");
    assert_eq!(line.fields, vec![("key".to_string(), "visits".to_string())]);
    // Its settings come from the policy through `config`.
    let settings = host.run(&agent, r#"{"settings":true}"#).await;
    assert_eq!(settings.outcome, Ok(r#"{"settings":[["default_step","1"]]}"#.to_string()));
    assert_eq!(settings.usage.calls("config"), 1);
    let all = host.run(&agent, r#"{"list":true}"#).await;
    assert_eq!(all.outcome, Ok(r#"{"counters":[["visits",42]]}"#.to_string()));

    // The store's typed error reaches JavaScript as an exception and comes back as the agent's error.
    let long_key = "k".repeat(130);
    let report = host.run(&agent, &format!(r#"{{"key":"{long_key}"}}"#)).await;
    assert_eq!(
        report.outcome,
        Err(TaskError::Agent {
            message: "increment: too-large: key is 138 bytes; the limit is 128 (max_key_bytes)".into(),
            retryable: false
        })
    );
    match host.run(&agent, "not json").await.outcome {
        Err(TaskError::Agent { message, retryable: false }) => {
            assert!(message.starts_with("input is not JSON: JSON.parse:"), "{message}")
        }
        other => panic!("expected the agent's error, got {other:?}"),
    }

    // The default limits are sized for the JS engine: it starts well inside them.
    assert_eq!(agent.policy().limits.memory_mib, 64);
    assert!(first.usage.peak_memory_bytes < 32 << 20, "the JS engine used {} bytes", first.usage.peak_memory_bytes);
    eprintln!(
        "kv-counter-js: peak memory {} bytes, cpu {} ms, wall {} us",
        first.usage.peak_memory_bytes, first.usage.cpu_ms, first.usage.wall_time_us
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn js_busy_loop_and_runaway_allocation_are_stopped_by_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_sharing_compiled(dir.path());

    let spinner = load_serially(
        &host,
        "js-spin",
        artifacts::JS_SPIN,
        policy("[wasi]\nfilesystem = \"inert\"\n[limits]\ncpu_ms = 300\n"),
    )
    .unwrap();
    let report = run_beside_bystander(&host, &spinner, "spin").await;
    assert_eq!(report.outcome, Err(TaskError::CpuLimit { limit_ms: 300 }));
    assert_counted(&host, "js-spin", "cpu-limit");

    let hog = load_serially(
        &host,
        "js-hog",
        artifacts::JS_SPIN,
        policy("[wasi]\nfilesystem = \"inert\"\n[limits]\nmemory_mib = 32\n"),
    )
    .unwrap();
    let report = run_beside_bystander(&host, &hog, "hog").await;
    match report.outcome {
        Err(TaskError::MemoryLimit { limit_bytes, requested_bytes }) => {
            assert_eq!(limit_bytes, 32 << 20);
            assert!(requested_bytes > limit_bytes);
        }
        other => panic!("expected the memory limit, got {other:?}"),
    }
    assert_counted(&host, "js-hog", "memory-limit");

    // The same component, given a task it can do, still works on this host.
    let calm = load_serially(&host, "js-calm", artifacts::JS_SPIN, policy("[wasi]\nfilesystem = \"inert\"\n")).unwrap();
    assert_eq!(host.run(&calm, "rest").await.outcome, Ok("unknown op rest".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn js_clocks_randomness_and_console_work_and_console_reaches_the_task_log() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_sharing_compiled(dir.path());
    let toml = "[wasi]\nfilesystem = \"inert\"\n[capabilities.logging]\n";
    let agent = load_serially(&host, "js-runtime", artifacts::JS_RUNTIME, policy(toml)).unwrap();
    let run = |input: &'static str| {
        let (host, agent) = (&host, &agent);
        async move {
            let report = host.run(agent, input).await;
            let out: serde_json::Value =
                serde_json::from_str(report.outcome.as_deref().expect("the task succeeds")).unwrap();
            (out, report.logs)
        }
    };
    let host_now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let before = host_now();
    let (first, logs) = run("one").await;
    let (second, _) = run("two").await;
    let after = host_now();
    // The clock is the host's (coarsened to 1 ms), not the build's.
    let now = |v: &serde_json::Value| v["now"].as_i64().unwrap();
    assert!(before - 1 <= now(&first) && now(&first) <= now(&second) && now(&second) <= after + 1, "{first} {second}");
    // Randomness differs between runs.
    assert_ne!(first["random"], second["random"]);
    assert_ne!(first["bytes"], second["bytes"]);
    assert!(first["bytes"].as_array().unwrap().iter().any(|b| b != 0));
    // console.log and console.error reach the task log, beside the logging interface.
    let lines: Vec<(&str, &str)> = logs.iter().map(|l| (l.level, l.message.as_str())).collect();
    assert!(lines.contains(&("info", "console.log: one")), "{lines:?}");
    assert!(lines.contains(&("warn", "console.error: to the log as a warning")), "{lines:?}");
    assert!(lines.contains(&("info", "logging interface still works")), "{lines:?}");
}

/// The fetch-js sample's policy with its rule pointed at `port` and `grant` added.
fn fetch_policy(port: u16, grant: &str) -> Policy {
    let text = std::fs::read_to_string(repo_file("sample-agents/fetch-js/policy.toml")).unwrap();
    let text = text.replace("127.0.0.1:8787", &format!("127.0.0.1:{port}"));
    policy(&text.replace("max_requests = 4\n", &format!("{grant}\n")))
}

fn refusal_logged(report: &chimera_host::TaskReport, text: &str) -> bool {
    report.logs.iter().any(|l| l.message.starts_with("wasi:http request refused") && l.message.contains(text))
}

#[tokio::test(flavor = "multi_thread")]
async fn js_fetch_goes_out_only_under_the_outbound_http_rules() {
    let server = chimera_tests::TestServer::start().await;
    let port = server.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let host = host_sharing_compiled(dir.path());
    let agent = load_serially(&host, "fetch-js", artifacts::FETCH_JS, fetch_policy(port, "max_requests = 4")).unwrap();
    let audit =
        host.audit("fetch-js", &component(artifacts::FETCH_JS), &fetch_policy(port, "max_requests = 4")).unwrap();
    let http: Vec<_> = audit.imports.iter().filter(|d| d.import.starts_with("wasi:http/")).collect();
    assert_eq!(http.len(), 2, "{:?}", audit.imports);
    assert!(http.iter().all(|d| d.verdict == Verdict::Granted && d.capability == "wasi-http"));
    let run = |spec: serde_json::Value| {
        let (host, agent) = (&host, &agent);
        async move {
            let report = host.run(agent, &spec.to_string()).await;
            let out: serde_json::Value = serde_json::from_str(report.outcome.as_ref().unwrap()).unwrap();
            (out, report)
        }
    };

    let (out, report) = run(serde_json::json!({"url": server.url("/hello")})).await;
    assert_eq!(out, serde_json::json!({"status": 200, "body": "hello from the test server", "redirected": false}));
    assert_eq!(report.usage.counter("outbound-http", "requests"), 1);
    // A body goes out (fetch sets its content-length; the host sends the
    // length of the body it read): the server answers that /hello takes no POST.
    let (out, report) = run(serde_json::json!({"url": server.url("/hello"), "method": "POST", "body": "hello"})).await;
    assert_eq!(out["status"], 405, "{out}");
    assert!(report.usage.counter("outbound-http", "bytes_sent") >= (server.url("/hello").len() + 5) as u64);
    // A redirect comes back as the response (the host follows none; this
    // fetch does not either), so the metadata address is never asked.
    let (out, report) = run(serde_json::json!({"url": server.url("/redirect-metadata")})).await;
    assert_eq!(out, serde_json::json!({"status": 307, "body": "", "redirected": false}));
    assert_eq!(report.usage.counter("outbound-http", "requests"), 1);
    // A URL no rule allows never leaves.
    let hits = server.hits();
    let (out, report) =
        run(serde_json::json!({"url": format!("http://127.0.0.1:{}/hello", port.wrapping_add(1))})).await;
    assert_eq!(out, serde_json::json!({"error": "TypeError: NetworkError when attempting to fetch resource"}));
    assert!(refusal_logged(&report, "(no-rule)"));
    assert_eq!(server.hits(), hits);

    // The quota is the same one.
    let limited =
        load_serially(&host, "fetch-js", artifacts::FETCH_JS, fetch_policy(port, "max_requests = 2")).unwrap();
    let report = host.run(&limited, &serde_json::json!({"url": server.url("/hello"), "times": 3}).to_string()).await;
    assert_eq!(report.outcome, Ok(r#"{"error":"TypeError: NetworkError when attempting to fetch resource"}"#.into()));
    assert!(refusal_logged(&report, "(quota): this task already sent 2 requests (max_requests)"));
    assert_eq!(server.hits(), hits + 2);
}
