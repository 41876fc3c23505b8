//! `chimera serve` as a user runs it: a real daemon on a loopback port, a
//! real HTTP client. Priority, aging and fairness, retries for transient
//! failures only, dead letters, cancellation, back-pressure, bad requests,
//! metrics, and graceful shutdown.

use chimera_tests::{agent_entry, artifacts, policy_file, Api, DaemonProcess};
use serde_json::{json, Value};
use std::path::Path;

const COUNTER_POLICY: &str = "[capabilities.logging]\n[capabilities.kv]\nnamespace = \"shared\"\n";

/// A daemon with one worker, a `sleeper` to hold it, and two counter agents
/// that share a KV namespace: each task's output is its position in the run order.
fn one_worker_daemon(dir: &Path, scheduler: &str) -> DaemonProcess {
    let counter = policy_file(dir, "counter", COUNTER_POLICY);
    let sleeper = policy_file(dir, "sleeper", "[limits]\ntimeout_ms = 60000\n");
    let config = format!(
        "data_dir = \"data\"\nmax_instances = 16\n[scheduler]\nworkers = 1\n{scheduler}\n\n{}{}{}",
        agent_entry("sleeper", artifacts::SLEEPER, &sleeper, 1),
        agent_entry("a", artifacts::KV_COUNTER, &counter, 1),
        agent_entry("b", artifacts::KV_COUNTER, &counter, 1),
    );
    DaemonProcess::start(dir, &config)
}

fn position(task: &Value) -> i64 {
    let output: Value = serde_json::from_str(task["output"].as_str().expect("completed")).unwrap();
    output["count"].as_i64().unwrap()
}

fn seq(agent: &str, priority: &str) -> Value {
    json!({"agent": agent, "input": r#"{"key":"seq"}"#, "priority": priority})
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_run_in_priority_order() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = one_worker_daemon(dir.path(), "aging_ms = 3600000");
    let api = Api::new(&daemon);
    let blocker = api.submit_ok(json!({"agent": "sleeper", "input": "1"})).await;
    api.wait_running(&blocker).await;
    let mut ids = Vec::new();
    for p in ["low", "background", "normal", "critical", "high"] {
        ids.push((p, api.submit_ok(seq("a", p)).await));
    }
    let mut order = Vec::new();
    for (p, id) in &ids {
        order.push((position(&api.wait_final(id).await), *p));
    }
    order.sort();
    let order: Vec<&str> = order.into_iter().map(|(_, p)| p).collect();
    assert_eq!(order, ["critical", "high", "normal", "low", "background"]);
    assert_eq!(api.wait_final(&blocker).await["output"], "slept 1s");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_agent_does_not_starve_another_of_the_same_priority() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = one_worker_daemon(dir.path(), "aging_ms = 3600000");
    let api = Api::new(&daemon);
    let blocker = api.submit_ok(json!({"agent": "sleeper", "input": "1"})).await;
    api.wait_running(&blocker).await;
    let mut flood = Vec::new();
    for _ in 0..20 {
        flood.push(api.submit_ok(seq("a", "normal")).await);
    }
    let mut quiet = Vec::new();
    for _ in 0..3 {
        quiet.push(api.submit_ok(seq("b", "normal")).await);
    }
    // Agents take turns: b's three tasks run 2nd, 4th and 6th, not after a's twenty.
    let mut positions = Vec::new();
    for id in quiet {
        positions.push(position(&api.wait_final(&id).await));
    }
    assert_eq!(positions, [2, 4, 6]);
    for id in flood {
        api.wait_final(&id).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn background_work_ages_past_a_steady_stream_of_critical_work() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = one_worker_daemon(dir.path(), "aging_ms = 20");
    let api = Api::new(&daemon);
    // Hold the worker so that everything below queues up behind it.
    let blocker = api.submit_ok(json!({"agent": "sleeper", "input": "1"})).await;
    api.wait_running(&blocker).await;
    let background = api.submit_ok(seq("b", "background")).await;
    // Critical work keeps arriving for longer than background needs to age
    // past it (4 levels at 20 ms each).
    let mut critical = Vec::new();
    for _ in 0..60 {
        critical.push(api.submit_ok(seq("a", "critical")).await);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Without aging the background task would run last, 61st.
    let bg = position(&api.wait_final(&background).await);
    let last_critical = position(&api.wait_final(critical.last().unwrap()).await);
    assert_eq!(last_critical.max(bg), 61);
    assert!(bg < 61, "background ran last, after all 60 critical tasks");
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_are_retried_with_backoff_and_limits_never() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = policy_file(dir.path(), "flaky", "[capabilities.kv]\n");
    let spin = policy_file(dir.path(), "spin", "[limits]\ncpu_ms = 20\n");
    let config = format!(
        "data_dir = \"data\"\nmax_instances = 16\n[scheduler]\nworkers = 2\nretry_base_ms = 40\nmax_attempts = 3\n\n{}{}",
        agent_entry("flaky", artifacts::FLAKY, &flaky, 2),
        agent_entry("spin", artifacts::CPU_SPIN, &spin, 2),
    );
    let daemon = DaemonProcess::start(dir.path(), &config);
    let api = Api::new(&daemon);

    // Fails twice, succeeds on the third attempt.
    let id = api.submit_ok(json!({"agent": "flaky", "input": r#"{"key":"j1","fail_times":2}"#})).await;
    let t = api.wait_final(&id).await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["output"], r#"{"key":"j1","attempt":3}"#);
    let attempts = t["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    for (i, a) in attempts[..2].iter().enumerate() {
        assert_eq!(
            a["error"],
            json!({"kind": "agent", "message": format!("transient failure {} of 2", i + 1), "retryable": true})
        );
    }
    // Exponential backoff with ±50% jitter: at least 20 ms, then at least 40 ms.
    let started: Vec<u64> = attempts.iter().map(|a| a["started_ms"].as_u64().unwrap()).collect();
    let finished: Vec<u64> = attempts.iter().map(|a| a["finished_ms"].as_u64().unwrap()).collect();
    assert!(started[1] >= finished[0] + 20 && started[2] >= finished[1] + 40, "{started:?} {finished:?}");

    // Out of attempts: dead-lettered, every attempt's error and usage kept.
    let id = api.submit_ok(json!({"agent": "flaky", "input": r#"{"key":"j2","fail_times":9}"#})).await;
    let t = api.wait_final(&id).await;
    assert_eq!(t["status"], "dead-lettered");
    assert_eq!(t["attempts"].as_array().unwrap().len(), 3);
    assert!(t["attempts"].as_array().unwrap().iter().all(|a| a["usage"]["wall_time_us"].as_u64().is_some()));
    assert_eq!(t["error"]["message"], "transient failure 3 of 9");

    // A limit hit is final at once.
    let id = api.submit_ok(json!({"agent": "spin"})).await;
    let t = api.wait_final(&id).await;
    assert_eq!(t["status"], "failed");
    assert_eq!(t["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(t["error"], json!({"kind": "cpu-limit", "limit_ms": 20}));

    let (_, metrics) = api.get("/metrics").await;
    assert!(metrics.contains("chimera_scheduler_retries_total{agent=\"flaky\"} 4"), "{metrics}");
    assert!(metrics.contains("chimera_scheduler_dead_letters_total{agent=\"flaky\"} 1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_infinite_loop_is_cancelled_and_the_daemon_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let spin = policy_file(dir.path(), "spin", "[limits]\ncpu_ms = 600000\ntimeout_ms = 600000\n");
    let echo = policy_file(dir.path(), "echo", "[capabilities.logging]\n");
    let config = format!(
        "data_dir = \"data\"\nmax_instances = 16\n[scheduler]\nworkers = 2\n\n{}{}",
        agent_entry("spin", artifacts::CPU_SPIN, &spin, 1),
        agent_entry("echo", artifacts::ECHO, &echo, 1),
    );
    let daemon = DaemonProcess::start(dir.path(), &config);
    let api = Api::new(&daemon);
    let id = api.submit_ok(json!({"agent": "spin"})).await;
    api.wait_running(&id).await;
    let queued = api.submit_ok(json!({"agent": "spin"})).await; // waits: spin's cap is 1
    assert_eq!(api.cancel(&queued).await, (200, json!({"id": queued, "status": "cancelled"})));
    assert_eq!(api.cancel(&id).await, (200, json!({"id": id, "status": "running"})));
    let t = api.wait_final(&id).await;
    assert_eq!((t["status"].as_str(), &t["error"]), (Some("cancelled"), &json!({"kind": "cancelled"})));
    assert_eq!(api.task(&queued).await["attempts"], json!([]), "the queued task never ran");
    let (code, body) = api.cancel(&id).await;
    assert_eq!((code, body["error"].as_str()), (409, Some(format!("task {id} already finished (cancelled)").as_str())));
    let echo_id = api.submit_ok(json!({"agent": "echo", "input": r#"{"text":"after"}"#})).await;
    assert_eq!(api.wait_final(&echo_id).await["output"], r#"{"text":"after","op":"echo"}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_refuses_submissions_and_bad_requests_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = one_worker_daemon(dir.path(), "max_queued = 3");
    let api = Api::new(&daemon);
    let blocker = api.submit_ok(json!({"agent": "sleeper", "input": "1"})).await;
    api.wait_running(&blocker).await;
    for _ in 0..3 {
        api.submit_ok(seq("a", "normal")).await;
    }
    let (code, body) = api.submit(seq("a", "normal")).await;
    assert_eq!((code, body), (429, json!({"error": "the queue is full (3 tasks waiting); retry later"})));

    let (code, body) = api.submit(json!({"agent": "nobody"})).await;
    assert_eq!(code, 404);
    assert_eq!(body["error"], "unknown agent `nobody`; GET /v1/agents lists the agents this host runs");
    let (code, body) = api.submit(json!({"agent": "a", "priority": "urgent"})).await;
    assert_eq!(code, 422);
    assert!(body["error"].as_str().unwrap().contains("unknown variant `urgent`"), "{body}");
    let (code, body) = api.submit(json!({"agent": "a", "input": "x".repeat(2 << 20)})).await;
    assert_eq!(code, 413);
    assert!(body["error"].as_str().unwrap().starts_with("input too large: 2097152 bytes"), "{body}");
    let (code, body) = api.get("/v1/tasks/banana").await;
    assert_eq!(
        (code, body.as_str()),
        (400, r#"{"error":"\"banana\" is not a task id (ids are UUIDs, as `chimera submit` prints them)"}"#)
    );
    let (code, body) = api.get("/v1/tasks/0190a5c8-0000-7000-8000-000000000000").await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no task 0190a5c8-0000-7000-8000-000000000000"), "{body}");
    let (code, body) = api.get("/healthz").await;
    assert_eq!(code, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["status"], "ok");
    let (_, agents) = api.get("/v1/agents").await;
    let agents: Value = serde_json::from_str(&agents).unwrap();
    let names: Vec<&str> = agents["agents"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3);
    assert!(names.contains(&"sleeper") && names.contains(&"a") && names.contains(&"b"));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_scrape_parses_as_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = one_worker_daemon(dir.path(), "");
    let api = Api::new(&daemon);
    let id = api.submit_ok(seq("a", "high")).await;
    api.wait_final(&id).await;
    let (code, text) = api.get("/metrics").await;
    assert_eq!(code, 200);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let value = |name: &str, label: (&str, &str)| {
        scrape.samples.iter().find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1)).map(|s| {
            match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            }
        })
    };
    assert_eq!(value("chimera_scheduler_submitted_total", ("agent", "a")), Some(1.0));
    assert_eq!(value("chimera_tasks_total", ("agent", "a")), Some(1.0));
    assert_eq!(value("chimera_scheduler_queue_depth", ("priority", "high")), Some(0.0));
    assert!(scrape.samples.iter().any(|s| s.metric.starts_with("chimera_task_duration_seconds")));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_running_tasks_and_keeps_queued_ones_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = one_worker_daemon(dir.path(), "shutdown_grace_ms = 30000");
    let api = Api::new(&daemon);
    let running = api.submit_ok(json!({"agent": "sleeper", "input": "1"})).await;
    api.wait_running(&running).await;
    let queued = api.submit_ok(seq("a", "normal")).await;
    assert!(daemon.terminate().success());
    drop(api);
    // The running task finished during the drain; the queued one runs after restart.
    daemon.crash_and_restart();
    let api = Api::new(&daemon);
    let t = api.task(&running).await;
    assert_eq!((t["status"].as_str(), t["output"].as_str()), (Some("completed"), Some("slept 1s")));
    assert_eq!(t["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(api.wait_final(&queued).await["status"], "completed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_stops_a_self_spawning_agent_at_its_limits() {
    let dir = tempfile::tempdir().unwrap();
    let grant = "[capabilities.tasks]\nallow = [\"fork-bomb\"]\nmax_fan_out = 3\nmax_depth = 3\n";
    let bomb = policy_file(dir.path(), "bomb", grant);
    let config = format!(
        "data_dir = \"data\"\nmax_instances = 16\n\n{}",
        // Room for all 40 of its tasks at once: every call waits for its
        // callee's slot, and the whole tree is in flight at the deepest point.
        agent_entry("fork-bomb", artifacts::FORK_BOMB, &bomb, 40)
    );
    let daemon = DaemonProcess::start(dir.path(), &config);
    let api = Api::new(&daemon);
    let id = api.submit_ok(json!({"agent": "fork-bomb", "input": r#"{"target":"fork-bomb"}"#})).await;
    let t = api.wait_final(&id).await;
    assert_eq!(t["status"], "completed");
    assert_eq!(t["output"], r#"3 children, then CallError::Denied("this task already made 3 calls (max_fan_out)")"#);
    assert_eq!(t["attempts"][0]["usage"]["capabilities"]["tasks"]["calls"], 4);
    let (_, metrics) = api.get("/metrics").await;
    // 1 + 3 + 9 + 27 tasks ran; the healthz answer shows the daemon is fine.
    assert!(metrics.contains("chimera_tasks_total{agent=\"fork-bomb\",outcome=\"ok\"} 40"), "{metrics}");
    assert_eq!(api.get("/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_keys_and_deadlines() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = one_worker_daemon(dir.path(), "");
    let api = Api::new(&daemon);
    let blocker = api.submit_ok(json!({"agent": "sleeper", "input": "1"})).await;
    api.wait_running(&blocker).await;
    // The same key twice: one task.
    let mut body = seq("a", "normal");
    body["idempotency_key"] = json!("order-17");
    let first = api.submit_ok(body.clone()).await;
    assert_eq!(api.submit_ok(body.clone()).await, first);
    // The same key with another input, or for another agent: refused, naming the task.
    for (field, value) in [("input", json!(r#"{"key":"other"}"#)), ("agent", json!("b"))] {
        let mut other = body.clone();
        other[field] = value;
        let (code, answer) = api.submit(other).await;
        assert_eq!(code, 409, "{answer}");
        assert_eq!(
            answer["error"],
            format!(
                "idempotency key \"order-17\" names task {first}, submitted with another agent or input; use a new key"
            )
        );
    }
    // A key too long to keep with every task, or an empty one: refused, naming the bound.
    for key in ["k".repeat(257), String::new()] {
        let mut long = seq("a", "normal");
        long["idempotency_key"] = json!(key);
        let (code, answer) = api.submit(long).await;
        assert_eq!(code, 400, "{answer}");
        assert_eq!(answer["error"], format!("idempotency_key is {} bytes; give 1 to 256 bytes", key.len()));
    }
    let mut longest = seq("a", "normal");
    longest["idempotency_key"] = json!("k".repeat(256));
    api.submit_ok(longest).await;
    // A deadline past what a clock can hold is refused, not wrapped around.
    let mut far = seq("a", "normal");
    far["deadline_ms"] = json!(u64::MAX);
    let (code, answer) = api.submit(far).await;
    assert_eq!(code, 400, "{answer}");
    assert_eq!(
        answer["error"],
        format!("deadline_ms {} is too far in the future; give milliseconds from now", u64::MAX)
    );
    // A deadline that passes while the task waits behind the blocker: it never runs.
    let mut late = seq("a", "normal");
    late["deadline_ms"] = json!(50);
    let late = api.submit_ok(late).await;
    let t = api.wait_final(&late).await;
    assert_eq!((t["status"].as_str(), &t["error"]), (Some("timed-out"), &json!({"kind": "deadline-exceeded"})));
    assert_eq!(t["attempts"], json!([]));
    assert_eq!(api.wait_final(&first).await["status"], "completed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_keeps_answering_while_agents_abuse_host_calls() {
    let dir = tempfile::tempdir().unwrap();
    let heavy =
        policy_file(dir.path(), "heavy", "[limits]\ncpu_ms = 300\ntimeout_ms = 20000\n[capabilities.logging]\n");
    let config = format!(
        "data_dir = \"data\"\nmax_instances = 16\n[scheduler]\nworkers = 8\n\n{}",
        agent_entry("heavy", artifacts::LOG_HEAVY, &heavy, 4),
    );
    let daemon = DaemonProcess::start(dir.path(), &config);
    let api = Api::new(&daemon);
    let ids: Vec<String> = futures::future::join_all((0..4).map(|_| api.submit_ok(json!({"agent": "heavy"})))).await;
    // Every probe of /healthz is answered while the four run (and is seen to
    // overlap them: a probe found at least one of them running).
    let mut overlapped = false;
    loop {
        let (status, _) = api.get("/healthz").await;
        assert_eq!(status, 200);
        let states: Vec<Value> = futures::future::join_all(ids.iter().map(|id| api.task(id))).await;
        if states.iter().any(|t| t["status"] == "running") {
            overlapped = true;
        }
        if states.iter().all(|t| t["status"] == "failed") {
            for t in &states {
                assert_eq!(t["error"]["kind"], "cpu-limit", "{t}");
                assert_eq!(t["error"]["limit_ms"], 300, "{t}");
            }
            break;
        }
    }
    assert!(overlapped, "no probe ran while the agents did");
}
