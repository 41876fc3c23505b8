//! Agent-to-agent calls: the `tasks` capability, its fan-out, depth and
//! rate limits, and the self-spawning agent stopped at them.

use chimera_host::{RunOptions, TaskError};
use chimera_tests::{artifacts, component, host_in, metric, policy};
use std::sync::Arc;

fn bomb_policy(extra: &str) -> chimera_host::Policy {
    policy(&format!("[capabilities.tasks]\nallow = [\"fork-bomb\", \"echo\", \"sleeper\"]\n{extra}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_self_spawning_agent_is_stopped_at_its_fan_out_and_depth() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let bomb = Arc::new(
        host.load("fork-bomb", &component(artifacts::FORK_BOMB), bomb_policy("max_fan_out = 3\nmax_depth = 2\n"))
            .unwrap(),
    );
    host.register(bomb.clone());
    let r = host.run(&bomb, r#"{"target":"fork-bomb"}"#).await;
    assert_eq!(
        r.outcome,
        Ok(r#"3 children, then CallError::Denied("this task already made 3 calls (max_fan_out)")"#.to_string())
    );
    assert_eq!(r.usage.calls("tasks"), 4);
    // 1 + 3 children + 9 grandchildren; each grandchild was refused a 3rd level.
    assert_eq!(metric(&host, r#"chimera_tasks_total{agent="fork-bomb",outcome="ok"}"#), Some(13.0));
    assert_eq!(
        metric(&host, r#"chimera_denials_total{agent="fork-bomb",capability="tasks",reason="depth"}"#),
        Some(9.0)
    );
    assert_eq!(
        metric(&host, r#"chimera_denials_total{agent="fork-bomb",capability="tasks",reason="fan-out"}"#),
        Some(4.0)
    );
    assert_eq!(metric(&host, "chimera_live_instances"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_reach_only_allowed_registered_agents_and_respect_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let echo = Arc::new(host.load("echo", &component(artifacts::ECHO), policy("[capabilities.logging]")).unwrap());
    host.register(echo);
    let caller = host
        .load("fork-bomb", &component(artifacts::FORK_BOMB), bomb_policy("max_fan_out = 1000\nrate_per_second = 5\n"))
        .unwrap();
    // echo is allowed and registered: five calls fit the bucket, the sixth is refused.
    let r = host.run(&caller, r#"{"target":"echo","input":"{\"text\":\"x\"}"}"#).await;
    assert_eq!(
        r.outcome,
        Ok(r#"5 children, then CallError::Denied("more than 5 calls per second (rate_per_second)")"#.to_string())
    );
    // Not in the allow list.
    let r = host.run(&caller, r#"{"target":"word-count"}"#).await;
    assert_eq!(
        r.outcome,
        Ok(r#"0 children, then CallError::Denied("this agent's policy does not allow calling `word-count`")"#
            .to_string())
    );
    // Allowed but not running on this host.
    let other = host.load("fork-bomb", &component(artifacts::FORK_BOMB), bomb_policy("")).unwrap();
    let r = host.run(&other, r#"{"target":"sleeper"}"#).await;
    assert_eq!(
        r.outcome,
        Ok(r#"0 children, then CallError::UnknownAgent("no agent `sleeper` runs on this host (load it beside the caller: `chimera serve` and `chimera run --config` load every agent of the config; `chimera run --agent sleeper=FILE.wasm[:POLICY.toml]` one)")"#.to_string())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_caller_ends_its_running_child() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let sleeper = Arc::new(
        host.load("sleeper", &component(artifacts::SLEEPER), policy("[limits]\ntimeout_ms = 600000\n")).unwrap(),
    );
    host.register(sleeper);
    let caller = host
        .load("fork-bomb", &component(artifacts::FORK_BOMB), bomb_policy("[limits]\ntimeout_ms = 600000\n"))
        .unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let options = RunOptions::new(None, Some(token.clone()));
    let run = host.run_with(&caller, r#"{"target":"sleeper","input":"600"}"#, options);
    let cancel = async {
        // Wait until the child is alive, then cancel the caller.
        while metric(&host, "chimera_live_instances") != Some(2.0) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        token.cancel();
    };
    let (r, ()) = tokio::join!(run, cancel);
    assert_eq!(r.outcome, Err(TaskError::Cancelled));
    assert_eq!(metric(&host, "chimera_live_instances"), Some(0.0), "the child outlived its caller");
}

#[test]
fn the_tasks_grant_is_validated() {
    let err = chimera_host::Policy::from_toml("[capabilities.tasks]\nmax_depth = 99\n").unwrap_err().to_string();
    assert_eq!(err, "policy key `capabilities.tasks.max_depth` is 99; it must be between 1 and 16");
    let err = chimera_host::Policy::from_toml("[capabilities.tasks]\nallow = [\"../x\"]\n").unwrap_err().to_string();
    assert!(err.starts_with("policy key `capabilities.tasks.allow[0]`"), "{err}");
}
