//! The nine security properties, each driven end to end by real attack
//! components. None counts a timeout as success: every assertion names the
//! exact outcome.

use chimera_host::{LoadError, TaskError};
use chimera_tests::{artifacts, assert_counted, component, host_in, metric, policy, run_beside_bystander, TestServer};
use serde_json::{json, Value};

fn ungranted(err: LoadError) -> Vec<String> {
    match err {
        LoadError::Ungranted { ungranted, .. } => ungranted.into_iter().map(|u| u.import).collect(),
        other => panic!("expected ungranted imports, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn test_filesystem_isolation() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    // An agent that reads a host file imports wasi:filesystem: refused before it can run.
    let refused = ungranted(host.load("fs", &component(artifacts::FS_ESCAPE), policy("")).err().unwrap());
    assert!(!refused.is_empty() && refused.iter().all(|i| i.starts_with("wasi:filesystem/")), "{refused:?}");
    assert_eq!(
        metric(&host, r#"chimera_load_refusals_total{capability="wasi-filesystem"}"#),
        Some(refused.len() as f64)
    );
    // Even the most generous policy cannot grant it.
    let all = "[capabilities.logging]\n[capabilities.kv]\n[capabilities.outbound_http]\n";
    assert_eq!(ungranted(host.load("fs", &component(artifacts::FS_ESCAPE), policy(all)).err().unwrap()), refused);
    // And an agent that is loaded has no preopened directory to reach: the
    // baseline it gets has none (its environment is empty too).
    let snoop = host.load("snoop", &component(artifacts::SNOOP), policy("[capabilities.logging]")).unwrap();
    let seen: Value = serde_json::from_str(host.run(&snoop, "").await.outcome.as_ref().unwrap()).unwrap();
    assert_eq!(seen["env"], json!([]));
}

#[test]
fn test_syscall_restriction() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    // Raw sockets: refused at load.
    let refused = ungranted(host.load("net", &component(artifacts::SOCKET_ESCAPE), policy("")).err().unwrap());
    assert!(refused.iter().any(|i| i.starts_with("wasi:sockets/tcp@")), "{refused:?}");
    // The environment, when the policy withdraws the cli baseline: refused at load.
    let refused =
        ungranted(host.load("env", &component(artifacts::ENV_READ), policy("[wasi]\ncli = false\n")).err().unwrap());
    assert_eq!(refused.len(), 1);
    assert!(refused[0].starts_with("wasi:cli/environment@"));
    // An interface no capability provides: refused at load.
    let refused = ungranted(host.load("x", &component(artifacts::UNDECLARED_IMPORT), policy("")).err().unwrap());
    assert_eq!(refused, ["attack:evil/secrets"]);
    // What a loaded agent can call is exactly what it imports and was granted.
    let agent = host.load("word-count", &component(artifacts::WORD_COUNT), policy("")).unwrap();
    let baseline = ["wasi:cli/", "wasi:io/", "wasi:random/", "wasi:clocks/"];
    for d in agent.imports() {
        assert!(baseline.iter().any(|p| d.import.starts_with(p)), "{} is outside the baseline", d.import);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn test_network_isolation() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    // No grant: the HTTP capability is not even linked.
    let refused = ungranted(host.load("egress", &component(artifacts::EGRESS), policy("")).err().unwrap());
    assert_eq!(refused, ["chimera:agent/outbound-http@0.1.0"]);
    // A grant for one path on a public-looking name: everything else is denied.
    let egress = host
        .load(
            "egress",
            &component(artifacts::EGRESS),
            policy("[capabilities.outbound_http]\n[[capabilities.outbound_http.allow]]\nurl = \"https://api.example.com/v1/\"\n"),
        )
        .unwrap();
    for url in [server.url("/hello"), format!("http://localhost:{}/hello", server.addr.port())] {
        let r = run_beside_bystander(&host, &egress, &json!({"url": url}).to_string()).await;
        let got: Value = serde_json::from_str(r.outcome.as_ref().unwrap()).unwrap();
        assert_eq!(got["error"], "denied", "{got}");
        assert!(got["reason"]
            .as_str()
            .unwrap()
            .starts_with("no allow rule of this agent's policy matches GET http://"));
    }
    assert_eq!(server.hits(), 0, "no request reached the loopback server");
    assert_eq!(
        metric(&host, r#"chimera_denials_total{agent="egress",capability="outbound-http",reason="no-rule"}"#),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn test_agent_to_agent_isolation() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let alice = host
        .load("alice", &component(artifacts::KV_COUNTER), policy("[capabilities.logging]\n[capabilities.kv]\n"))
        .unwrap();
    assert!(host.run(&alice, r#"{"key":"balance","by":1000}"#).await.outcome.is_ok());
    let mallory = host.load("mallory", &component(artifacts::KV_ESCAPE), policy("[capabilities.kv]\n")).unwrap();
    let r = run_beside_bystander(&host, &mallory, "counter/balance").await;
    let seen: Value = serde_json::from_str(r.outcome.as_ref().unwrap()).unwrap();
    for probe in ["plain", "dotdot", "separator", "nul", "colon"] {
        assert_eq!(seen[probe], json!({"ok": "None"}), "{probe}");
    }
    let r = host.run(&alice, r#"{"list":true}"#).await;
    assert_eq!(r.outcome, Ok(r#"{"counters":[["balance",1000]]}"#.to_string()));
    // Memory: the next tenant of a pool slot reads zeros (see isolation.rs for
    // the one-slot version); here, across the live pool.
    let writer = host.load("writer", &component(artifacts::POOL_SECRET_WRITER), policy("")).unwrap();
    let reader = host.load("reader", &component(artifacts::POOL_SECRET_READER), policy("")).unwrap();
    for _ in 0..20 {
        assert_eq!(host.run(&writer, "").await.outcome, Ok(String::new()));
        assert_eq!(host.run(&reader, "").await.outcome, Ok("\0".repeat(32)));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn test_timing_attack_resistance() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    for (resolution_ms, toml) in
        [(1, "[capabilities.logging]\n"), (20, "[capabilities.logging]\n[wasi]\nclock_resolution_ms = 20\n")]
    {
        let snoop = host.load("snoop", &component(artifacts::SNOOP), policy(toml)).unwrap();
        let r = host.run(&snoop, "").await;
        let seen: Value = serde_json::from_str(r.outcome.as_ref().unwrap()).unwrap();
        // The probe saw the clock move, and never by less than the resolution.
        assert_eq!(seen["clock_ticks_seen"], 5, "{seen}");
        let step = seen["finest_clock_step_ns"].as_u64().unwrap();
        let unit = resolution_ms * 1_000_000;
        assert!(step >= unit && step.is_multiple_of(unit), "step {step} ns at {resolution_ms} ms");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn test_fork_bomb_protection() {
    let dir = tempfile::tempdir().unwrap();
    // Pool slots of 64 core instances, so the policy's 32 is what stops it.
    let host = chimera_tests::host_with(dir.path(), |c| c.max_core_instances_per_component = 64);
    let err = host.load("bomb", &component(artifacts::MANY_INSTANCES), policy("")).err().expect("refused");
    assert_eq!(
        err.to_string(),
        "agent `bomb` exceeds its policy: the component creates 41 core instances, more than [limits] instances = 32 allows"
    );

    // An agent that spawns itself through the tasks capability stops at its
    // fan-out and depth: 1 + 2 + 4 tasks, then refusals.
    let grant = "[capabilities.tasks]\nallow = [\"fork-bomb\"]\nmax_fan_out = 2\nmax_depth = 2\n";
    let spawner = std::sync::Arc::new(host.load("fork-bomb", &component(artifacts::FORK_BOMB), policy(grant)).unwrap());
    host.register(spawner.clone());
    let r = run_beside_bystander(&host, &spawner, r#"{"target":"fork-bomb"}"#).await;
    assert_eq!(
        r.outcome,
        Ok(r#"2 children, then CallError::Denied("this task already made 2 calls (max_fan_out)")"#.into())
    );
    assert_eq!(metric(&host, r#"chimera_tasks_total{agent="fork-bomb",outcome="ok"}"#), Some(7.0));
    assert_eq!(metric(&host, "chimera_live_instances"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn test_memory_quota_enforcement() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let bomb = host.load("grow", &component(artifacts::MEMORY_BOMB), policy("[limits]\nmemory_mib = 32\n")).unwrap();
    let r = run_beside_bystander(&host, &bomb, "").await;
    assert_eq!(r.outcome, Err(TaskError::MemoryLimit { limit_bytes: 32 << 20, requested_bytes: (32 << 20) + 65536 }));
    assert_eq!(r.usage.peak_memory_bytes, (31 << 20) + 65536);
    let big = host.load("big", &component(artifacts::HUGE_INITIAL_MEMORY), policy("")).unwrap();
    let r = run_beside_bystander(&host, &big, "").await;
    assert_eq!(r.outcome, Err(TaskError::MemoryLimit { limit_bytes: 64 << 20, requested_bytes: 128 << 20 }));
    assert_counted(&host, "grow", "memory-limit");
    assert_counted(&host, "big", "memory-limit");
    assert!(!r.outcome.unwrap_err().is_retryable());
}

#[tokio::test(flavor = "multi_thread")]
async fn test_cpu_quota_enforcement() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    for (name, path) in
        [("spin", artifacts::CPU_SPIN), ("tree", artifacts::CALL_TREE), ("copy", artifacts::MEMORY_COPY)]
    {
        let agent = host.load(name, &component(path), policy("[limits]\ncpu_ms = 250\ntimeout_ms = 60000\n")).unwrap();
        let r = run_beside_bystander(&host, &agent, "").await;
        assert_eq!(r.outcome, Err(TaskError::CpuLimit { limit_ms: 250 }), "{name}");
        assert!((250..500).contains(&r.usage.cpu_ms), "{name}: {} ms of CPU", r.usage.cpu_ms);
        assert_counted(&host, name, "cpu-limit");
        assert!(!r.outcome.unwrap_err().is_retryable());
    }
}
