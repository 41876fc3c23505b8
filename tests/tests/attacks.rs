//! One test per attack component: the exact outcome, the host alive and
//! serving a bystander alongside, nothing leaked, and the event counted.

use chimera_host::{Host, LoadError, TaskError, TaskReport};
use chimera_tests::{artifacts, assert_counted, component, host_in, metric, policy, run_beside_bystander};

async fn attack(path: &str, toml: &str, input: &str) -> (Host, TaskReport, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let agent = host.load("attack", &component(path), policy(toml)).unwrap_or_else(|e| panic!("{e}"));
    let report = run_beside_bystander(&host, &agent, input).await;
    (host, report, dir)
}

fn trap_reason(report: &TaskReport) -> &str {
    match &report.outcome {
        Err(TaskError::Trap { reason }) => reason,
        other => panic!("expected a trap, got {other:?}"),
    }
}

// ---- memory ----

#[tokio::test(flavor = "multi_thread")]
async fn memory_grow_loop_stops_at_the_cap() {
    let (host, r, _d) = attack(artifacts::MEMORY_BOMB, "[limits]\nmemory_mib = 16\n", "").await;
    assert_eq!(r.outcome, Err(TaskError::MemoryLimit { limit_bytes: 16 << 20, requested_bytes: (16 << 20) + 65536 }));
    assert_counted(&host, "attack", "memory-limit");
    assert_eq!(metric(&host, r#"chimera_limit_hits_total{agent="attack",limit="memory"}"#), Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_initial_memory_is_refused_at_instantiation() {
    let (host, r, _d) = attack(artifacts::HUGE_INITIAL_MEMORY, "", "").await;
    assert_eq!(r.outcome, Err(TaskError::MemoryLimit { limit_bytes: 64 << 20, requested_bytes: 128 << 20 }));
    assert_eq!(r.usage.peak_memory_bytes, 0);
    assert_counted(&host, "attack", "memory-limit");
}

#[tokio::test(flavor = "multi_thread")]
async fn table_grow_bomb_stops_at_the_element_cap() {
    let (host, r, _d) = attack(artifacts::TABLE_BOMB, "", "").await;
    assert_eq!(r.outcome, Err(TaskError::TableLimit { limit: 100_000, requested: 100_001 }));
    assert_counted(&host, "attack", "table-limit");
}

#[test]
fn a_component_with_more_core_instances_than_a_pool_slot_holds_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    match host_in(dir.path()).load("attack", &component(artifacts::MANY_INSTANCES), policy("")) {
        Err(LoadError::Unsupported { reason, .. }) => assert_eq!(
            reason,
            "The component transitively contains 41 core module instances, which exceeds the configured maximum \
             of 32 in the pooling allocator; this host refuses it"
        ),
        Err(other) => panic!("expected Unsupported, got {other}"),
        Ok(_) => panic!("loaded"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn many_core_instances_in_one_component_are_refused_at_load() {
    // A host whose pool slots hold 64 core instances: the policy's 32 stop
    // it, counted before anything runs, whether the instances are in the
    // component itself or in a nested component instantiated five times.
    let dir = tempfile::tempdir().unwrap();
    let host = chimera_tests::host_with(dir.path(), |c| c.max_core_instances_per_component = 64);
    for path in [artifacts::MANY_INSTANCES, artifacts::NESTED_INSTANCES] {
        match host.load("attack", &component(path), policy("")) {
            Err(LoadError::OverLimit { agent, detail, key, limit }) => {
                assert_eq!(
                    (agent.as_str(), detail.as_str(), key, limit),
                    ("attack", "the component creates 41 core instances", "[limits] instances", 32)
                );
            }
            other => panic!("{path}: expected a load refusal, got {:?}", other.map(|a| a.name().to_string())),
        }
        // Counted exactly, not over: allowed 41, it loads and runs (its `run` traps).
        let agent = host.load("attack", &component(path), policy("[limits]\ninstances = 41\n")).unwrap();
        let r = run_beside_bystander(&host, &agent, "").await;
        assert_eq!(r.outcome, Err(TaskError::Trap { reason: "wasm `unreachable` instruction executed".into() }));
        let err = host.load("attack", &component(path), policy("[limits]\ninstances = 40\n")).err().unwrap();
        assert!(matches!(err, LoadError::OverLimit { limit: 40, .. }), "{err}");
    }
}

// ---- CPU ----

#[tokio::test(flavor = "multi_thread")]
async fn busy_loop_stops_at_the_cpu_limit() {
    let (host, r, _d) = attack(artifacts::CPU_SPIN, "[limits]\ncpu_ms = 300\n", "").await;
    assert_eq!(r.outcome, Err(TaskError::CpuLimit { limit_ms: 300 }));
    // Stopped at the first epoch check past its budget.
    assert!((300..600).contains(&r.usage.cpu_ms), "{} ms of CPU", r.usage.cpu_ms);
    assert_counted(&host, "attack", "cpu-limit");
}

#[tokio::test(flavor = "multi_thread")]
async fn call_tree_without_loops_stops_at_the_cpu_limit() {
    let (host, r, _d) = attack(artifacts::CALL_TREE, "[limits]\ncpu_ms = 300\n", "").await;
    assert_eq!(r.outcome, Err(TaskError::CpuLimit { limit_ms: 300 }));
    assert_counted(&host, "attack", "cpu-limit");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_call_flood_stops_at_the_cpu_limit_and_its_log_is_capped() {
    let toml = "[limits]\ncpu_ms = 300\n[capabilities.logging]\nmax_bytes_per_task = 6400\n";
    let (host, r, _d) = attack(artifacts::LOG_FLOOD, toml, "").await;
    assert_eq!(r.outcome, Err(TaskError::CpuLimit { limit_ms: 300 }));
    // Empty lines still cost 64 bytes each: 100 fit in 6,400 bytes.
    assert_eq!(r.logs.len(), 100);
    assert_eq!(r.usage.log_lines_dropped, r.usage.calls("logging") - 100);
    assert!(r.usage.calls("logging") > 1000, "{:?}", r.usage);
    let dropped = metric(&host, r#"chimera_log_lines_dropped_total{agent="attack"}"#).unwrap();
    assert_eq!(dropped as u64, r.usage.log_lines_dropped);
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_memory_copies_stop_at_the_cpu_limit() {
    let (host, r, _d) = attack(artifacts::MEMORY_COPY, "[limits]\ncpu_ms = 300\n", "").await;
    assert_eq!(r.outcome, Err(TaskError::CpuLimit { limit_ms: 300 }));
    assert_counted(&host, "attack", "cpu-limit");
}

#[tokio::test(flavor = "multi_thread")]
async fn unbounded_recursion_traps_on_the_stack_limit() {
    let (host, r, _d) = attack(artifacts::STACK_OVERFLOW, "", "").await;
    assert_eq!(r.outcome, Err(TaskError::StackOverflow { limit_bytes: 512 << 10 }));
    assert_counted(&host, "attack", "stack-overflow");
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_in_a_host_call_ends_at_the_wall_clock_limit() {
    let (host, r, _d) = attack(artifacts::SLEEPER, "[limits]\ntimeout_ms = 300\n", "60").await;
    assert_eq!(r.outcome, Err(TaskError::Timeout { limit_ms: 300 }));
    assert_counted(&host, "attack", "timeout");
}

// ---- malformed values at the boundary ----

#[tokio::test(flavor = "multi_thread")]
async fn out_of_bounds_result_pointer_is_a_trap() {
    let (host, r, _d) = attack(artifacts::OOB_RETURN, "", "").await;
    assert_eq!(trap_reason(&r), "pointer out of bounds of memory");
    assert_counted(&host, "attack", "trap");
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_bounds_string_is_a_trap() {
    let (host, r, _d) = attack(artifacts::OOB_STRING, "", "").await;
    assert_eq!(trap_reason(&r), "string pointer/length out of bounds of memory");
    assert_counted(&host, "attack", "trap");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_realloc_is_a_trap() {
    let (host, r, _d) = attack(artifacts::BAD_REALLOC, "", "some input").await;
    assert_eq!(trap_reason(&r), "realloc return: beyond end of memory");
    assert_counted(&host, "attack", "trap");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_is_a_trap() {
    let (host, r, _d) = attack(artifacts::INVALID_UTF8, "", "").await;
    assert!(trap_reason(&r).starts_with("invalid utf-8 sequence"), "{:?}", r.outcome);
    assert_counted(&host, "attack", "trap");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_result_discriminant_is_a_trap() {
    let (host, r, _d) = attack(artifacts::BAD_DISCRIMINANT, "", "").await;
    assert_eq!(trap_reason(&r), "invalid expected discriminant");
    assert_counted(&host, "attack", "trap");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_enum_value_in_a_host_call_is_a_trap() {
    let (host, r, _d) = attack(artifacts::BAD_ENUM, "[capabilities.logging]", "").await;
    assert_eq!(trap_reason(&r), "unexpected discriminant: 9");
    assert!(r.logs.is_empty());
    assert_counted(&host, "attack", "trap");
}

// ---- resource handles ----

#[tokio::test(flavor = "multi_thread")]
async fn handle_exhaustion_stops_at_the_handle_cap() {
    let (host, r, _d) = attack(artifacts::HANDLE_EXHAUSTION, "[limits]\nresource_handles = 500\n", "").await;
    assert_eq!(r.outcome, Err(TaskError::HandleLimit { limit: 500 }));
    assert_counted(&host, "attack", "handle-limit");
}

#[tokio::test(flavor = "multi_thread")]
async fn use_after_drop_is_a_trap() {
    let (host, r, _d) = attack(artifacts::USE_AFTER_DROP, "", "").await;
    assert_eq!(trap_reason(&r), "unknown handle index 1");
    assert_counted(&host, "attack", "trap");
}

#[tokio::test(flavor = "multi_thread")]
async fn double_drop_is_a_trap() {
    let (host, r, _d) = attack(artifacts::DOUBLE_DROP, "", "").await;
    assert_eq!(trap_reason(&r), "unknown handle index 1");
    assert_counted(&host, "attack", "trap");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_handle_type_is_a_trap() {
    let (host, r, _d) = attack(artifacts::WRONG_HANDLE_TYPE, "", "").await;
    assert_eq!(trap_reason(&r), "handle index 1 used with the wrong type, expected guest-defined resource but found a different guest-defined resource");
    assert_counted(&host, "attack", "trap");
}

// ---- capability escape: refused at load, never at call time ----

fn refused_imports(path: &str, toml: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    match host.load("attack", &component(path), policy(toml)) {
        Err(LoadError::Ungranted { ungranted, .. }) => ungranted.into_iter().map(|u| u.import).collect(),
        Err(other) => panic!("expected ungranted imports, got {other}"),
        Ok(_) => panic!("{path} loaded"),
    }
}

#[test]
fn sockets_import_is_refused_at_load() {
    let refused = refused_imports(artifacts::SOCKET_ESCAPE, "");
    // std's networking pulls in the filesystem interfaces too; all are refused.
    assert!(refused.iter().all(|i| i.starts_with("wasi:sockets/") || i.starts_with("wasi:filesystem/")), "{refused:?}");
    assert!(refused.iter().any(|i| i.starts_with("wasi:sockets/tcp@")), "{refused:?}");
}

#[test]
fn environment_read_is_refused_at_load_when_cli_is_withdrawn() {
    let refused = refused_imports(artifacts::ENV_READ, "[wasi]\ncli = false\n");
    assert_eq!(refused.len(), 1);
    assert!(refused[0].starts_with("wasi:cli/environment@0.2."), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_read_under_the_default_policy_sees_nothing() {
    let (_host, r, _d) = attack(artifacts::ENV_READ, "", "").await;
    assert_eq!(r.outcome, Ok(String::new()));
}

// ---- host-side memory ----

#[tokio::test(flavor = "multi_thread")]
async fn a_log_message_as_large_as_guest_memory_is_read_in_place_and_capped() {
    let (host, r, _d) = attack(artifacts::GIANT_LOG, "[capabilities.logging]", "").await;
    assert_eq!(r.outcome, Ok(String::new()));
    assert_eq!(r.logs.len(), 1);
    // Longer than the 4 × max_line_bytes the host decodes for one line: not read at all.
    assert_eq!(r.logs[0].message, "[not read: 58982400 code units, more than 4 × max_line_bytes]");
    assert_counted(&host, "attack", "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_kv_value_is_refused_before_the_host_copies_it() {
    let (host, r, _d) = attack(artifacts::GIANT_KV_VALUE, "[capabilities.kv]", "").await;
    assert_eq!(r.outcome, Ok("value is 58982400 bytes; the limit is 65536 (max_value_bytes)".to_string()));
    assert_eq!(r.usage.counter("kv", "writes"), 0, "nothing reached the store");
    assert_eq!(metric(&host, r#"chimera_denials_total{agent="attack",capability="kv",reason="too-large"}"#), Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn host_side_buffers_count_against_the_instance_memory_limit() {
    // The log cap alone would allow 10 MiB; the instance may hold only 2 MiB
    // in all, of which its one page of linear memory takes 64 KiB.
    let toml = "[limits]\nmemory_mib = 2\ncpu_ms = 300\n[capabilities.logging]\nmax_bytes_per_task = 10485760\n";
    let (_host, r, _d) = attack(artifacts::LOG_FLOOD, toml, "").await;
    assert_eq!(r.outcome, Err(TaskError::CpuLimit { limit_ms: 300 }));
    let room = (2 << 20) - 65536;
    assert_eq!(r.usage.peak_host_bytes, room);
    assert_eq!(r.logs.len() as u64, room / 64);
}
