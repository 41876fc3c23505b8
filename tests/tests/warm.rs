//! Warm instances: one instance called many times, each call under the
//! agent's limits, thrown away after a failure.

use chimera_host::TaskError;
use chimera_tests::{artifacts, component, host_in, metric, policy};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_instance_answers_many_calls_each_with_a_fresh_cpu_budget() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    // About 3 ms of CPU per call; 150 calls need far more than one 200 ms
    // budget (which leaves room for the instance's start on a busy machine).
    let agent = Arc::new(
        host.load("word-count", &component(artifacts::WORD_COUNT), policy("[limits]\ncpu_ms = 200\n")).unwrap(),
    );
    let text = "lorem ipsum ".repeat(256 << 10 >> 4);
    let input = format!(r#"{{"text":"{text}","top":1}}"#);
    let expected = host.run(&agent, &input).await.outcome.unwrap();
    let mut warm = host.warm(agent.clone()).await.unwrap();
    assert_eq!(metric(&host, "chimera_live_instances"), Some(1.0));
    for _ in 0..150 {
        assert_eq!(warm.call(&input).await.as_ref(), Ok(&expected));
    }

    // Refused input does not harm the instance.
    let big = "x".repeat((1 << 20) + 1);
    assert_eq!(warm.call(&big).await, Err(TaskError::InputTooLarge { size: (1 << 20) + 1, limit: 1 << 20 }));
    assert_eq!(warm.call(&input).await, Ok(expected));
    drop(warm);
    assert_eq!(metric(&host, "chimera_live_instances"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_instance_that_hits_a_limit_is_thrown_away() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let agent =
        Arc::new(host.load("spin", &component(artifacts::CPU_SPIN), policy("[limits]\ncpu_ms = 300\n")).unwrap());
    let mut warm = host.warm(agent).await.unwrap();
    assert_eq!(warm.call("").await, Err(TaskError::CpuLimit { limit_ms: 300 }));
    match warm.call("").await {
        Err(TaskError::Instantiate { reason }) => assert!(
            reason.contains("failed earlier (CPU limit exceeded") && reason.contains("warm a new one"),
            "{reason}"
        ),
        other => panic!("a broken instance was entered again: {other:?}"),
    }
    drop(warm);
    assert_eq!(metric(&host, "chimera_live_instances"), Some(0.0));
}
