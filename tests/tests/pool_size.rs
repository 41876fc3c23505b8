//! The instance pool's size: 1,000 by default, 10,000 by configuration —
//! all of them live at once, and the next task refused with a typed,
//! retryable error — and a clear error at start-up when the pool cannot fit
//! in the address space.

use chimera_host::{Host, HostConfig, HostError, Policy, RunOptions, TaskError};
use chimera_tests::{artifacts, component, metric};
use std::sync::Arc;

const SLOTS: usize = 10_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_host_of_ten_thousand_instances_holds_them_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(HostConfig::default().max_instances, 1_000);
    let host =
        Host::new(HostConfig { data_dir: dir.path().into(), max_instances: SLOTS as u32, ..HostConfig::default() })
            .expect("10,000 instance slots fit");
    let policy = Policy::from_toml("[limits]\ntimeout_ms = 300000\n").unwrap();
    let agent = Arc::new(host.load("sleeper", &component(artifacts::SLEEPER), policy).unwrap());
    let live = || metric(&host, "chimera_live_instances").unwrap_or(-1.0);
    // Every slot taken by a task blocked in a long sleep (no CPU), all at
    // once, until they are cancelled.
    let stop = tokio_util::sync::CancellationToken::new();
    let tasks: Vec<_> = (0..SLOTS)
        .map(|_| {
            let (host, agent, stop) = (host.clone(), agent.clone(), stop.clone());
            tokio::spawn(async move { host.run_with(&agent, "240", RunOptions::new(None, Some(stop))).await })
        })
        .collect();
    let started = std::time::Instant::now();
    while live() < SLOTS as f64 && started.elapsed() < std::time::Duration::from_secs(60) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(live(), SLOTS as f64, "all slots live at once");
    // One more: the pool is full, and the error says a later try may succeed.
    let r = host.run(&agent, "0").await;
    assert_eq!(r.outcome, Err(TaskError::PoolExhausted { slots: SLOTS as u32 }));
    assert!(r.outcome.unwrap_err().is_retryable());
    stop.cancel();
    for t in tasks {
        assert_eq!(t.await.unwrap().outcome, Err(TaskError::Cancelled));
    }
    assert_eq!(live(), 0.0, "every instance was dropped");
    // The pool serves again.
    assert_eq!(host.run(&agent, "0").await.outcome.as_deref(), Ok("slept 0s"));
}

#[test]
fn a_pool_that_cannot_fit_is_refused_at_start_with_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let err = Host::new(HostConfig {
        data_dir: dir.path().into(),
        max_instances: 100_000_000,
        max_memory_mib: 16 * 1024,
        ..HostConfig::default()
    })
    .err()
    .expect("a pool of 100 million 16 GiB slots does not fit");
    let HostError::Engine(message) = &err else { panic!("expected an engine error, got {err}") };
    assert!(
        message.contains("100000000 instances") && message.contains("lower HostConfig::max_instances"),
        "{message}"
    );
}
