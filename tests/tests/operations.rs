//! Running the daemon day to day: health while it starts, readiness,
//! listing tasks with filters and a cursor, each attempt's log lines kept
//! with the task (`GET /v1/tasks/{id}/logs`, `chimera logs`), JSON inputs,
//! and logs fit for a collector (JSON lines, no colour codes in a pipe).

use chimera_tests::{agent_entry, artifacts, chimera_bin, policy_file, serve_command, Api, DaemonProcess};
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::Path;

fn config(dir: &Path) -> String {
    let echo = policy_file(dir, "echo", "[capabilities.logging]\n");
    let flaky = policy_file(dir, "flaky", "[capabilities.kv]\n");
    format!(
        "data_dir = \"data\"\nmax_instances = 16\n[scheduler]\nretry_base_ms = 1\nretry_max_ms = 1\n\n{}{}",
        agent_entry("echo", artifacts::ECHO, &echo, 2),
        agent_entry("flaky", artifacts::FLAKY, &flaky, 2),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_are_listed_by_agent_and_status_page_by_page_and_their_logs_kept_per_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start(dir.path(), &config(dir.path()));
    let api = Api::new(&daemon);
    // An input given as a JSON value reaches the agent as its JSON text.
    let mut echoes = Vec::new();
    for i in 0..5 {
        let id = api.submit_ok(json!({"agent": "echo", "input": {"text": format!("t{i}"), "op": "upper"}})).await;
        assert_eq!(api.wait_final(&id).await["output"], format!(r#"{{"text":"T{i}","op":"upper"}}"#));
        echoes.push(id);
    }
    let flaky = api.submit_ok(json!({"agent": "flaky", "input": r#"{"key":"f","fail_times":1}"#})).await;
    assert_eq!(api.wait_final(&flaky).await["status"], "completed");

    // Two at a time, newest first, following the cursor to the end.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = cursor.as_ref().map_or(String::new(), |c| format!("&cursor={c}"));
        let (code, body) = api.get(&format!("/v1/tasks?agent=echo&status=completed&limit=2{query}")).await;
        assert_eq!(code, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        let tasks = page["tasks"].as_array().unwrap();
        assert!(tasks.len() <= 2 && tasks.iter().all(|t| t["agent"] == "echo" && t.get("input").is_none()));
        seen.extend(tasks.iter().map(|t| t["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let newest_first: Vec<String> = echoes.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    let (_, body) = api.get("/v1/tasks?status=completed&agent=flaky").await;
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((page["tasks"][0]["id"].as_str(), &page["next_cursor"]), (Some(flaky.as_str()), &Value::Null));
    for (query, message) in [
        ("status=done", "unknown variant `done`"),
        ("limit=0", "limit must be between 1 and 1000"),
        ("cursor=7", "cursor: \\\"7\\\" is not a task id"),
        ("owner=me", "unknown field `owner`"),
    ] {
        let (code, body) = api.get(&format!("/v1/tasks?{query}")).await;
        assert_eq!(code, 400, "{query}: {body}");
        assert!(body.contains(message), "{query}: {body}");
    }

    // What each attempt logged, kept with the task.
    let (code, body) = api.get(&format!("/v1/tasks/{}/logs", echoes[0])).await;
    assert_eq!(code, 200, "{body}");
    let logs: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(logs["attempts"].as_array().unwrap().len(), 1, "{logs}");
    let line = &logs["attempts"][0]["lines"][0];
    assert_eq!((line["level"].as_str(), line["message"].as_str()), (Some("info"), Some("upper applied to 2 chars")));
    let (_, body) = api.get(&format!("/v1/tasks/{flaky}/logs")).await;
    let logs: Value = serde_json::from_str(&body).unwrap();
    let attempts: Vec<u64> =
        logs["attempts"].as_array().unwrap().iter().map(|a| a["attempt"].as_u64().unwrap()).collect();
    assert_eq!(attempts, [1, 2]);
    let out =
        std::process::Command::new(chimera_bin()).args(["logs", &echoes[0], "--server", &daemon.url]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "attempt 1 info agent: upper applied to 2 chars\n");
}

/// Starts `chimera serve` with `env`, returning it and its stderr lines as
/// they come.
fn spawn(dir: &Path, config: &str, env: &[(&str, &str)]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    std::fs::write(dir.join("chimera.toml"), config).unwrap();
    let mut child = serve_command(&dir.join("chimera.toml"), "127.0.0.1:0").envs(env.iter().copied()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

fn next_line(lines: &std::sync::mpsc::Receiver<String>, starting: &str) -> String {
    loop {
        let line = lines.recv_timeout(std::time::Duration::from_secs(300)).expect("the daemon said nothing");
        if line.starts_with(starting) {
            return line;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_answers_while_agents_load_readiness_after_and_logs_are_json_lines_without_colour() {
    let dir = tempfile::tempdir().unwrap();
    // A Python agent: a cold compile of a component of several MB takes seconds.
    let py = policy_file(
        dir.path(),
        "py",
        "[wasi]\nfilesystem = \"inert\"\nsockets = \"inert\"\n[capabilities.logging]\n[capabilities.kv]\n",
    );
    let config = format!(
        "data_dir = \"data\"\nmax_instances = 16\n\n{}",
        agent_entry("counter-py", artifacts::KV_COUNTER_PY, &py, 1)
    );
    let (mut child, lines) = spawn(dir.path(), &config, &[("CHIMERA_LOG", "info"), ("CHIMERA_LOG_FORMAT", "json")]);
    let starting = next_line(&lines, "chimera starting on ");
    let url = starting.trim_start_matches("chimera starting on ").split(':').take(3).collect::<Vec<_>>().join(":");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "starting"}), "the probe came after the load");
    let r = http.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["retry-after"].to_str().unwrap()), (503, "1"));
    let r = http.post(format!("{url}/v1/tasks")).json(&json!({"agent": "counter-py"})).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "the daemon is starting (loading its agents); retry later");

    next_line(&lines, "chimera serving 1 agent(s) on ");
    let r = http.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.json::<Value>().await.unwrap()), (200, json!({"status": "ready"})));
    let r = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");

    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
    // What the daemon logged besides its two "chimera ..." lines: JSON, one object a line, no colour codes.
    let logged: Vec<String> = lines.try_iter().filter(|l| !l.starts_with("chimera ")).collect();
    assert!(logged.iter().any(|l| l.contains("shutting down")), "{logged:?}");
    for line in &logged {
        assert!(!line.contains('\u{1b}'), "a colour code in a pipe: {line:?}");
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
    }
}
