//! Live grant and revoke: the agents and policies of a running daemon are
//! read again on `POST /v1/admin/reload` and on SIGHUP. New tasks get the
//! new policy, a task running finishes under the one it started with, and
//! a file that does not load is refused whole (the agents running stay).

use chimera_tests::{agent_entry, artifacts, policy_file, Api, DaemonProcess, TestServer};
use serde_json::{json, Value};
use std::path::Path;

fn policy(target: &TestServer, allow: bool) -> String {
    let rule = format!(
        "[[capabilities.outbound_http.allow]]\nurl = \"{}\"\nmethods = [\"GET\"]\nallow_private = true\n",
        target.url("/")
    );
    format!(
        "[limits]\ntimeout_ms = 30000\n[capabilities.logging]\n[capabilities.outbound_http]\ntimeout_ms = 20000\n{}",
        if allow { rule.as_str() } else { "" }
    )
}

async fn reload(api: &Api) -> (u16, Value) {
    let (code, body) = api.post("/v1/admin/reload").await;
    (code, serde_json::from_str(&body).unwrap())
}

async fn fetch(api: &Api, target: &TestServer, path: &str) -> Value {
    let id = api.submit_ok(json!({"agent": "fetch", "input": {"url": target.url(path)}})).await;
    api.wait_final(&id).await
}

fn write_policy(dir: &Path, text: &str) {
    std::fs::write(dir.join("fetch.toml"), text).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_outbound_http_while_a_task_runs_lets_it_finish_and_denies_every_later_one() {
    let target = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = policy_file(dir.path(), "fetch", &policy(&target, true));
    let echo = policy_file(dir.path(), "echo", "[capabilities.logging]\n");
    let config = format!(
        "data_dir = \"data\"\nmax_instances = 16\n\n{}{}",
        agent_entry("fetch", artifacts::HTTP_FETCH, &path, 2),
        agent_entry("echo", artifacts::ECHO, &echo, 1)
    );
    let daemon = DaemonProcess::start(dir.path(), &config);
    let api = Api::new(&daemon);

    // A task in the middle of a request (the target answers after 5 s)...
    let slow = api.submit_ok(json!({"agent": "fetch", "input": {"url": target.url("/slow")}})).await;
    for _ in 0..12_000 {
        if target.hits() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(target.hits(), 1, "the slow request never reached the target");
    // ...when the allow rule is taken away.
    write_policy(dir.path(), &policy(&target, false));
    let (code, changes) = reload(&api).await;
    assert_eq!(
        (code, changes),
        (200, json!({"added": [], "removed": [], "changed": ["fetch"], "unchanged": ["echo"]}))
    );
    assert_eq!(api.task(&slow).await["status"], "running");
    let t = api.wait_final(&slow).await;
    assert_eq!(t["status"], "completed", "the running task was cut off: {t}");
    assert_eq!(serde_json::from_str::<Value>(t["output"].as_str().unwrap()).unwrap()["body"], "late");
    // Every task after the reload is denied before anything goes out.
    let t = fetch(&api, &target, "/hello").await;
    assert_eq!(t["status"], "failed", "{t}");
    assert!(t["error"].to_string().contains("fetch denied"), "{t}");
    assert_eq!(target.hits(), 1, "a request went out after the revoke");

    // A policy that no longer grants the interface at all cannot load: refused
    // whole, naming it, and the running config stays.
    let grantless = "[limits]\ntimeout_ms = 30000\n[capabilities.logging]\n";
    write_policy(dir.path(), grantless);
    let (code, answer) = reload(&api).await;
    assert_eq!(code, 422, "{answer}");
    let message = answer["error"].as_str().unwrap();
    assert!(message.starts_with("the new config was refused, the agents running stay: agent `fetch` imports 1 interface(s) its policy does not grant"), "{message}");
    write_policy(dir.path(), "[limits\n");
    let (code, answer) = reload(&api).await;
    assert_eq!(code, 422, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("fetch.toml"), "{answer}");
    let t = fetch(&api, &target, "/hello").await;
    assert!(t["error"].to_string().contains("fetch denied"), "the refused file changed the policy: {t}");

    // SIGHUP grants it again.
    write_policy(dir.path(), &policy(&target, true));
    std::process::Command::new("kill").args(["-HUP", &daemon.pid().to_string()]).status().unwrap();
    let mut granted = false;
    for _ in 0..1200 {
        let (_, agents) = api.get("/v1/agents").await;
        if agents.contains("allow_private") {
            granted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(granted, "SIGHUP did not reload the policy");
    let t = fetch(&api, &target, "/hello").await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(target.hits(), 2);
    assert_eq!(api.get("/healthz").await.0, 200);
}
