//! The WASI baseline is locked down: nothing of the host leaks through it.

use chimera_host::LogSource;
use chimera_tests::{artifacts, component, host_in, policy};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn environment_arguments_stdin_are_empty_clocks_coarse_and_stdio_captured_and_capped() {
    // The host process does have an environment to leak.
    assert!(std::env::vars().count() > 0);
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let snoop = host
        .load("snoop", &component(artifacts::SNOOP), policy("[capabilities.logging]\n[limits]\nstdio_bytes = 1000\n"))
        .unwrap();
    let r = host.run(&snoop, "").await;
    let seen: Value = serde_json::from_str(r.outcome.as_ref().unwrap()).unwrap();
    assert_eq!(seen["env"], json!([]));
    assert_eq!(seen["args"], 0);
    assert_eq!(seen["stdin_bytes"], 0);
    assert_eq!(seen["clock_ticks_seen"], 5, "the probe saw the clock move: {seen}");
    let step = seen["finest_clock_step_ns"].as_u64().unwrap();
    assert!(step >= 1_000_000 && step.is_multiple_of(1_000_000), "clock step {step} ns is finer than 1 ms");

    // The forged line is one escaped line, not a new log line.
    let agent_lines: Vec<&str> =
        r.logs.iter().filter(|l| l.source == LogSource::Agent).map(|l| l.message.as_str()).collect();
    assert_eq!(
        agent_lines,
        [
            "forged\\r\\n[admin info] granted everything \\u{1b}[31mred\\u{1b}[0m",
            "user=\\u{202e}nimda\\u{202c} ok\\u{2066}x\\u{2069}\\u{200b}\\u{feff}",
        ]
    );

    // stdout is kept up to 1000 bytes, the rest dropped and counted; stderr lands as a warning.
    let stdout: Vec<&str> =
        r.logs.iter().filter(|l| l.source == LogSource::Stdout).map(|l| l.message.as_str()).collect();
    let written: String = (0..10_000).map(|i| format!("stdout line {i}\n")).collect();
    assert_eq!(stdout, written[..1000].lines().collect::<Vec<_>>());
    assert_eq!(r.usage.counter("wasi", "stdio_bytes_dropped"), written.len() as u64 - 1000);
    let stderr: Vec<_> = r.logs.iter().filter(|l| l.source == LogSource::Stderr).collect();
    assert_eq!((stderr.len(), stderr[0].level, stderr[0].message.as_str()), (1, "warn", "one line on stderr"));
}

#[tokio::test(flavor = "multi_thread")]
async fn clock_resolution_follows_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let snoop = host
        .load(
            "snoop",
            &component(artifacts::SNOOP),
            policy("[capabilities.logging]\n[wasi]\nclock_resolution_ms = 50\n"),
        )
        .unwrap();
    let r = host.run(&snoop, "").await;
    let seen: Value = serde_json::from_str(r.outcome.as_ref().unwrap()).unwrap();
    assert_eq!(seen["clock_ticks_seen"], 5, "the probe saw the clock move: {seen}");
    let step = seen["finest_clock_step_ns"].as_u64().unwrap();
    assert!(step >= 50_000_000 && step.is_multiple_of(50_000_000), "clock step {step} ns is not a multiple of 50 ms");
}

#[tokio::test(flavor = "multi_thread")]
async fn random_is_fresh_per_task_and_one_call_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let probe = host.load("random-probe", &component(artifacts::RANDOM_PROBE), policy("")).unwrap();
    let mut seeds = Vec::new();
    let mut bytes = Vec::new();
    for _ in 0..3 {
        let r = host.run(&probe, "probe").await;
        let seen: Value = serde_json::from_str(r.outcome.as_ref().unwrap()).unwrap();
        // One task's seed is the same at every call (a hash map seeds once).
        assert_eq!(seen["seed"][0], seen["seed"][1], "{seen}");
        let b = seen["bytes"].as_str().unwrap().to_string();
        assert_eq!(b.len(), 64);
        seeds.push(seen["seed"][0].clone());
        bytes.push(b);
    }
    // No two tasks share a seed or random bytes.
    for (i, j) in [(0, 1), (0, 2), (1, 2)] {
        assert_ne!(seeds[i], seeds[j], "tasks {i} and {j} got the same insecure seed");
        assert_ne!(bytes[i], bytes[j], "tasks {i} and {j} got the same random bytes");
    }

    // More than one call may ask for: refused before the host makes any.
    let r = host.run(&probe, "huge").await;
    match &r.outcome {
        Err(chimera_host::TaskError::Trap { reason }) => assert!(
            reason.contains("get-random-bytes asked for 2097152 bytes; one call may ask for at most 1048576"),
            "{reason}"
        ),
        other => panic!("expected a trap naming the bound, got {other:?}"),
    }
    // The host lives on.
    assert!(host.run(&probe, "probe").await.outcome.is_ok());
}
