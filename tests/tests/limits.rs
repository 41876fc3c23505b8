//! Limit hits end the task with the typed error naming the limit, and the
//! host carries on serving well-behaved agents.

use chimera_host::{Agent, Host, TaskError};
use chimera_tests::{artifacts, component, host_in, policy};

async fn echo_still_works(host: &Host) {
    let echo = host.load("echo", &component(artifacts::ECHO), policy("[capabilities.logging]")).unwrap();
    let r = host.run(&echo, r#"{"text":"still here","op":"upper"}"#).await;
    assert_eq!(r.outcome, Ok(r#"{"text":"STILL HERE","op":"upper"}"#.to_string()));
}

fn load(host: &Host, path: &str, toml: &str) -> Agent {
    host.load("attack", &component(path), policy(toml)).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_loop_is_stopped_at_its_cpu_limit() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let spin = load(&host, artifacts::CPU_SPIN, "[limits]\ncpu_ms = 200\ntimeout_ms = 60000\n");
    let r = host.run(&spin, "").await;
    assert_eq!(r.outcome, Err(TaskError::CpuLimit { limit_ms: 200 }));
    // Stopped at the first epoch check (every 5 ms) past its 200 ms of CPU.
    assert!((200..400).contains(&r.usage.cpu_ms), "{} ms of CPU", r.usage.cpu_ms);
    echo_still_works(&host).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_loop_does_not_hold_a_concurrent_task_hostage() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let spin = load(&host, artifacts::CPU_SPIN, "[limits]\ncpu_ms = 1000\n");
    let echo = host.load("echo", &component(artifacts::ECHO), policy("[capabilities.logging]")).unwrap();
    let (spun, echoed) = tokio::join!(host.run(&spin, ""), host.run(&echo, r#"{"text":"a"}"#));
    assert_eq!(echoed.outcome, Ok(r#"{"text":"a","op":"echo"}"#.to_string()));
    assert_eq!(spun.outcome, Err(TaskError::CpuLimit { limit_ms: 1000 }));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wall_clock_timeout_covers_wasm_execution() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let spin = load(&host, artifacts::CPU_SPIN, "[limits]\ncpu_ms = 60000\ntimeout_ms = 300\n");
    let r = host.run(&spin, "").await;
    assert_eq!(r.outcome, Err(TaskError::Timeout { limit_ms: 300 }));
    echo_still_works(&host).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_blocked_in_a_host_call_is_ended_by_the_wall_clock_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let sleeper = load(&host, artifacts::SLEEPER, "[limits]\ntimeout_ms = 300\n");
    let r = host.run(&sleeper, "60").await;
    assert_eq!(r.outcome, Err(TaskError::Timeout { limit_ms: 300 }));
    // It slept: almost no CPU was spent.
    assert!(r.usage.cpu_ticks < 10, "{:?}", r.usage);
    // The same agent finishes a short sleep: the clock works, coarsely.
    let r = host.run(&sleeper, "0").await;
    assert_eq!(r.outcome, Ok("slept 0s".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_growth_is_refused_at_the_policy_limit() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let bomb = load(&host, artifacts::MEMORY_BOMB, "[limits]\nmemory_mib = 8\n");
    let r = host.run(&bomb, "").await;
    // One 64 KiB page to start, then 1 MiB steps: the step to 8 MiB + 64 KiB is refused.
    assert_eq!(r.outcome, Err(TaskError::MemoryLimit { limit_bytes: 8 << 20, requested_bytes: (8 << 20) + 65536 }));
    assert_eq!(r.usage.peak_memory_bytes, (7 << 20) + 65536);
    echo_still_works(&host).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_is_reported_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let trap = load(&host, artifacts::TRAP, "");
    let r = host.run(&trap, "").await;
    assert_eq!(r.outcome, Err(TaskError::Trap { reason: "wasm `unreachable` instruction executed".into() }));
    echo_still_works(&host).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unbounded_recursion_is_a_stack_overflow_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let deep = load(&host, artifacts::STACK_OVERFLOW, "");
    let r = host.run(&deep, "").await;
    assert_eq!(r.outcome, Err(TaskError::StackOverflow { limit_bytes: 512 * 1024 }));
    echo_still_works(&host).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_input_is_refused_before_the_agent_runs() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let echo = load(&host, artifacts::ECHO, "[capabilities.logging]\n[limits]\nmax_input_bytes = 16\n");
    let r = host.run(&echo, &"x".repeat(17)).await;
    assert_eq!(r.outcome, Err(TaskError::InputTooLarge { size: 17, limit: 16 }));
    assert_eq!(r.usage.peak_memory_bytes, 0, "no instance was created");
}
