//! JavaScript agents built by ComponentizeJS run unchanged: with every WASI
//! feature disabled they import only their world's interfaces, and the
//! usual limits stop a busy loop and a runaway allocation.

use chimera_host::{Policy, TaskError, Verdict};
use chimera_tests::{
    artifacts, assert_counted, component, host_sharing_compiled, load_serially, policy, repo_file, run_beside_bystander,
};

fn sample_policy() -> Policy {
    Policy::from_file(&repo_file("sample-agents/kv-counter-js/policy.toml")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn js_kv_counter_imports_only_its_capabilities_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_sharing_compiled(dir.path());
    let agent = load_serially(&host, "kv-counter-js", artifacts::KV_COUNTER_JS, sample_policy()).unwrap();

    let audit = host.audit("kv-counter-js", &component(artifacts::KV_COUNTER_JS), &sample_policy()).unwrap();
    let imports: Vec<(&str, Verdict)> = audit.imports.iter().map(|d| (d.import.as_str(), d.verdict)).collect();
    assert_eq!(
        imports,
        [("chimera:agent/logging@0.1.0", Verdict::Granted), ("chimera:agent/kv@0.1.0", Verdict::Granted)]
    );
    assert!(audit.runnable);

    let first = host.run(&agent, r#"{"key":"visits"}"#).await;
    assert_eq!(first.outcome, Ok(r#"{"key":"visits","count":1}"#.to_string()));
    let second = host.run(&agent, r#"{"key":"visits","by":41}"#).await;
    assert_eq!(second.outcome, Ok(r#"{"key":"visits","count":42}"#.to_string()));
    let line = second.logs.iter().find(|l| l.message == "counter visits is now 42").expect("the agent logged");
    assert_eq!(line.fields, vec![("key".to_string(), "visits".to_string())]);
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

    let spinner = load_serially(&host, "js-spin", artifacts::JS_SPIN, policy("[limits]\ncpu_ms = 300\n")).unwrap();
    let report = run_beside_bystander(&host, &spinner, "spin").await;
    assert_eq!(report.outcome, Err(TaskError::CpuLimit { limit_ms: 300 }));
    assert_counted(&host, "js-spin", "cpu-limit");

    let hog = load_serially(&host, "js-hog", artifacts::JS_SPIN, policy("[limits]\nmemory_mib = 32\n")).unwrap();
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
    let calm = load_serially(&host, "js-calm", artifacts::JS_SPIN, policy("")).unwrap();
    assert_eq!(host.run(&calm, "rest").await.outcome, Ok("unknown op rest".to_string()));
}
