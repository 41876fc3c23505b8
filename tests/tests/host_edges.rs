//! The host's own work for an agent is charged to that agent: strings are
//! sized before they are decoded, whatever their encoding; CPU spent in host
//! calls counts and time spent blocked does not; a called agent runs under
//! its own concurrency cap and input limit, and its usage and log lines
//! join its caller's report; exits and pre-release imports are named.

use chimera_host::{Host, LoadError, Policy, TaskError, TaskReport};
use chimera_tests::{
    artifacts, assert_counted, component, host_in, metric, peak_rss_kib, policy, reset_peak_rss, run_beside_bystander,
};

/// The memory-measuring tests run one at a time: peak RSS is process-wide.
static MEASURING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs a string bomb whose strings are `units` long (64 Ki units per
/// input byte) and returns its report, checking what every such run must
/// show: the bystander undisturbed, and the host grown by far less than the
/// 65 transcoded copies (up to 3 bytes per unit each) a naive decode makes.
async fn string_bomb(path: &str, input_len: usize) -> TaskReport {
    let _one = MEASURING.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let agent = host.load("attack", &component(path), policy("[capabilities.logging]")).unwrap();
    reset_peak_rss();
    let before = peak_rss_kib();
    let r = run_beside_bystander(&host, &agent, &"x".repeat(input_len)).await;
    // The instance's own 60 MiB aside, the host held next to nothing.
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(grown < 256 << 10, "the host's peak RSS grew by {grown} KiB");
    assert!(r.usage.peak_host_bytes <= 4 * 4096 + 4096, "held {} bytes", r.usage.peak_host_bytes);
    assert_eq!(metric(&host, "chimera_live_instances"), Some(0.0));
    r
}

/// Strings of 64 Ki code units per input character, 65 in one call: lifted
/// (each within what one host call may lift), sized, and none decoded.
async fn strings_sized_not_decoded(path: &str, input_len: usize) {
    let r = string_bomb(path, input_len).await;
    let units = input_len * 65536;
    assert_eq!(r.outcome, Ok(String::new()));
    assert_eq!(r.logs.len(), 1);
    assert_eq!(r.logs[0].message, format!("[not read: {units} code units, more than 4 × max_line_bytes]"));
    assert!(!r.logs[0].fields.is_empty());
    let placeholder = format!("[not read: {units} code units");
    for (k, v) in &r.logs[0].fields {
        for text in [k, v] {
            assert!(text.is_empty() || text.starts_with(&placeholder) || text.ends_with('…'), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn utf16_strings_are_sized_not_decoded() {
    // 512 Ki units (1 MiB of UTF-16) each.
    strings_sized_not_decoded(artifacts::UTF16_LOG_BOMB, 8).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn latin1_and_utf16_strings_over_one_huge_region_are_sized_not_decoded() {
    // A 60 MiB UTF-16 message and 64 latin1 strings of 30 MiB: each lifted
    // on its own (within one call's budget), none decoded.
    strings_sized_not_decoded(artifacts::LATIN1_LOG_BOMB, 480).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn utf16_strings_all_pointing_at_one_huge_region_end_at_the_call_budget() {
    // 60 MiB of UTF-16 each: one field's key and value together are more
    // than one host call may lift (the memory limit), and the task ends
    // with that limit before anything is decoded.
    let r = string_bomb(artifacts::UTF16_LOG_BOMB, 480).await;
    assert_eq!(r.outcome, Err(TaskError::HostCallTooLarge { limit_bytes: 64 << 20 }));
    assert!(r.logs.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn time_spent_blocked_is_not_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let agent = host.load("sleeper", &component(artifacts::SLEEPER), policy("[limits]\ncpu_ms = 200\n")).unwrap();
    // 600 sleeps of 6 ms: 3.6 s blocked, almost no CPU.
    let r = host.run(&agent, "600x6").await;
    assert_eq!(r.outcome, Ok("slept 600 x 6 ms".to_string()));
    assert!(r.usage.cpu_ms < 200, "charged {} ms of CPU for sleeping", r.usage.cpu_ms);
    assert!(r.usage.wall_time_us >= 3_600_000, "it did sleep: {} us", r.usage.wall_time_us);
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_spent_serving_host_calls_counts_against_the_cpu_limit() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let toml = "[limits]\ncpu_ms = 100\ntimeout_ms = 6000\n[capabilities.logging]\n";
    let agent = host.load("attack", &component(artifacts::LOG_HEAVY), policy(toml)).unwrap();
    let r = run_beside_bystander(&host, &agent, "").await;
    assert_eq!(r.outcome, Err(TaskError::CpuLimit { limit_ms: 100 }));
    assert!(r.usage.cpu_ms >= 100, "{} ms", r.usage.cpu_ms);
    assert!(r.usage.calls("logging") > 10, "{} log calls", r.usage.calls("logging"));
    // 64 KiB of log per task: 16 lines of 4 KiB (each line costs its 64-byte overhead too).
    assert_eq!(r.logs.len(), 15);
    assert_counted(&host, "attack", "cpu-limit");
}

#[tokio::test(flavor = "multi_thread")]
async fn leaving_through_wasi_exit_is_reported_as_an_exit_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let agent = host.load("exit", &component(artifacts::EXIT_EARLY), Policy::default()).unwrap();
    assert_eq!(host.run(&agent, "0").await.outcome, Err(TaskError::Exited { status: 0 }));
    let r = host.run(&agent, "3").await;
    assert_eq!(r.outcome, Err(TaskError::Exited { status: 1 }));
    assert_eq!(
        r.outcome.unwrap_err().to_string(),
        "the agent exited with status 1 (wasi:cli/exit) instead of returning a result"
    );
    assert_eq!(metric(&host, r#"chimera_tasks_total{agent="exit",outcome="exit"}"#), Some(2.0));
}

#[test]
fn a_pre_release_import_is_refused_by_audit_and_load_alike() {
    // The host implements kv 0.1.0; a 0.1.0-rc import is not served by it
    // (a pre-release matches only itself, as in wasmtime's linker).
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let bytes = component(artifacts::PRERELEASE_IMPORT);
    let p = policy("[capabilities.kv]");
    let report = host.audit("pre", &bytes, &p).unwrap();
    assert!(!report.runnable, "audit called it runnable");
    let refused: Vec<_> = report.refused().map(|d| (d.import.as_str(), d.capability)).collect();
    assert_eq!(refused, [("chimera:agent/kv@0.1.0-rc", "kv")]);
    let reason = "this host implements chimera:agent/kv@0.1.0, which does not serve version 0.1.0-rc \
                  (only the same semver series, and a pre-release only itself); rebuild the agent against this host's WIT";
    assert_eq!(report.refused().next().unwrap().detail, reason);
    match host.load("pre", &bytes, p) {
        Err(LoadError::Ungranted { agent, ungranted }) => {
            assert_eq!(agent, "pre");
            assert_eq!(
                ungranted.iter().map(|u| (u.import.as_str(), u.reason.as_str())).collect::<Vec<_>>(),
                [("chimera:agent/kv@0.1.0-rc", reason)]
            );
        }
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("loaded"),
    }
}

fn load(host: &Host, name: &str, path: &str, toml: &str) -> std::sync::Arc<chimera_host::Agent> {
    let agent = std::sync::Arc::new(host.load(name, &component(path), policy(toml)).unwrap());
    host.register(agent.clone());
    agent
}

#[tokio::test(flavor = "multi_thread")]
async fn a_called_agent_runs_under_its_own_concurrency_cap_and_reports_to_its_caller() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let probe = load(&host, "crowd-probe", artifacts::CROWD_PROBE, "[capabilities.kv]\n[capabilities.logging]\n");
    probe.set_max_concurrency(1);
    let caller_policy = "[capabilities.tasks]\nallow = [\"crowd-probe\"]\nmax_fan_out = 1\n";
    let caller = load(&host, "caller", artifacts::FORK_BOMB, caller_policy);
    let input = r#"{"target":"crowd-probe","input":"150"}"#;
    let runs: Vec<_> = (0..4).map(|_| host.run(&caller, input)).collect();
    let reports = futures::future::join_all(runs).await;
    for r in &reports {
        assert_eq!(
            r.outcome,
            Ok(r#"1 children, then CallError::Denied("this task already made 1 calls (max_fan_out)")"#.to_string())
        );
        // The probe counted how many of it ran at once: never more than its cap.
        let line = r.logs.iter().find(|l| l.from.as_deref() == Some("crowd-probe")).expect("the callee's log line");
        assert_eq!(line.message, "running with 1 at once");
        assert_eq!(r.usage.callees.len(), 1);
        assert_eq!(r.usage.callees[0].agent, "crowd-probe");
        // Count in, record the peak (when it is a new one), count out.
        assert!((2..=3).contains(&r.usage.callees[0].usage.counter("kv", "writes")), "{:?}", r.usage.callees[0].usage);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_is_refused_when_the_input_is_over_the_callees_limit_before_it_is_copied() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    load(
        &host,
        "crowd-probe",
        artifacts::CROWD_PROBE,
        "[limits]\nmax_input_bytes = 1024\n[capabilities.kv]\n[capabilities.logging]\n",
    );
    let caller = load(&host, "caller", artifacts::FORK_BOMB, "[capabilities.tasks]\nallow = [\"crowd-probe\"]\n");
    let input = serde_json::json!({"target": "crowd-probe", "input": "7".repeat(2048)}).to_string();
    let r = host.run(&caller, &input).await;
    assert_eq!(
        r.outcome,
        Ok(r#"0 children, then CallError::Denied("the input is at least 2048 bytes; `crowd-probe` accepts at most 1024 (its max_input_bytes)")"#.to_string())
    );
    assert!(r.usage.callees.is_empty());
    assert_eq!(
        metric(&host, r#"chimera_denials_total{agent="caller",capability="tasks",reason="input-too-large"}"#),
        Some(1.0)
    );
}

#[test]
fn a_policy_asking_for_more_than_its_share_of_the_pool_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    for (key, asked, cap, field) in [
        ("instances", 33, 32, "max_core_instances_per_component"),
        ("memories", 3, 2, "max_memories_per_component"),
        ("tables", 5, 4, "max_tables_per_component"),
    ] {
        let p = policy(&format!("[limits]\n{key} = {asked}\n"));
        match host.load("greedy", &component(artifacts::WORD_COUNT), p) {
            Err(LoadError::Unsupported { reason, .. }) => assert_eq!(
                reason,
                format!(
                    "the policy asks for [limits] {key} = {asked}, but this host's instance pool allows at most {cap} \
                     per instance (HostConfig::{field})"
                )
            ),
            Err(other) => panic!("{key}: expected Unsupported, got {other}"),
            Ok(_) => panic!("{key} = {asked} was accepted"),
        }
    }
}
