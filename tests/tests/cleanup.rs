//! test_resource_cleanup: thousands of tasks, well-behaved and hostile mixed;
//! every instance, pool slot and handle is released, and resident memory
//! returns to its baseline. Alone in its own test binary so that no other
//! test's allocations move the process's resident set.

use chimera_host::{Host, HostConfig, TaskError};
use chimera_tests::{artifacts, component, metric, policy};

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread")]
async fn test_resource_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let host =
        Host::new(HostConfig { data_dir: dir.path().into(), max_instances: 8, ..HostConfig::default() }).unwrap();
    let echo = host.load("echo", &component(artifacts::ECHO), policy("[capabilities.logging]")).unwrap();
    let trap = host.load("trap", &component(artifacts::TRAP), policy("")).unwrap();
    let bomb = host.load("bomb", &component(artifacts::MEMORY_BOMB), policy("[limits]\nmemory_mib = 8\n")).unwrap();
    let handles = host
        .load("handles", &component(artifacts::HANDLE_EXHAUSTION), policy("[limits]\nresource_handles = 200\n"))
        .unwrap();
    let spin = host.load("spin", &component(artifacts::CPU_SPIN), policy("[limits]\ncpu_ms = 5\n")).unwrap();

    let round = |i: usize| {
        let (echo, trap, bomb, handles, spin) = (&echo, &trap, &bomb, &handles, &spin);
        let host = &host;
        async move {
            match i % 5 {
                0 | 1 => assert!(host.run(echo, r#"{"text":"x"}"#).await.outcome.is_ok()),
                2 => assert!(matches!(host.run(trap, "").await.outcome, Err(TaskError::Trap { .. }))),
                3 => assert!(matches!(host.run(bomb, "").await.outcome, Err(TaskError::MemoryLimit { .. }))),
                _ if i % 50 == 4 => {
                    assert!(matches!(host.run(spin, "").await.outcome, Err(TaskError::CpuLimit { .. })))
                }
                _ => assert!(matches!(host.run(handles, "").await.outcome, Err(TaskError::HandleLimit { limit: 200 }))),
            }
        }
    };
    // Warm up: the pool's slots, caches and allocator arenas settle.
    for i in 0..1_000 {
        round(i).await;
    }
    let baseline = resident_bytes();
    const TASKS: usize = 5_000;
    for i in 0..TASKS {
        round(i).await;
    }
    let after = resident_bytes();
    let growth = after.saturating_sub(baseline);
    println!("test_resource_cleanup: {TASKS} tasks; resident {baseline} -> {after} bytes (+{growth})");
    // Bounded growth: under 8 MiB over 5,000 tasks, i.e. no per-task leak
    // beyond ~1.6 KiB (a leaked instance would cost at least 64 KiB).
    assert!(growth < 8 << 20, "resident memory grew by {growth} bytes over {TASKS} tasks");
    assert_eq!(metric(&host, "chimera_live_instances"), Some(0.0));
    let pool = host.engine().pooling_allocator_metrics().unwrap();
    assert_eq!((pool.component_instances(), pool.core_instances(), pool.memories(), pool.tables()), (0, 0, 0, 0));
}
