//! Host secrets added to outbound requests (`secret_headers`) and an agent's
//! read-only settings (`config`): the secret reaches the one rule's server,
//! never the agent, a redirect, another rule's server, or anything the
//! host writes (journal, task records, logs, metrics, audit, errors).

use chimera_host::{HostConfig, Secrets};
use chimera_tests::{artifacts, chimera_bin, component, host_with, policy, Api, DaemonProcess};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

const SECRET: &str = "sk-live-7f3a9c1e5b2d4086";

/// What a server saw of one request: its path and headers.
type Seen = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

/// A loopback server recording every request; `/…/redirect` answers 302 to
/// `redirect_to`, anything else `ok` (it never echoes what it got).
async fn recording_server(redirect_to: Option<String>) -> (SocketAddr, Seen) {
    use axum::extract::Request;
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let log = log.clone();
        let redirect_to = redirect_to.clone();
        async move {
            let headers = req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            log.lock().unwrap().push((req.uri().path().to_string(), headers));
            match redirect_to.filter(|_| req.uri().path().ends_with("/redirect")) {
                Some(to) => axum::response::Redirect::to(&to).into_response(),
                None => "ok".into_response(),
            }
        }
    });
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

/// The values of `name` in one recorded request.
fn header_values(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).collect()
}

fn api_call_policy(port: u16, extra_rules: &str) -> String {
    format!(
        r#"[capabilities.logging]
[capabilities.config.values]
base_url = "http://127.0.0.1:{port}/api"
model = "small"
[capabilities.outbound_http]
max_requests = 4
timeout_ms = 3000
[[capabilities.outbound_http.allow]]
url = "http://127.0.0.1:{port}/api/"
allow_private = true
secret_headers = [{{ name = "Authorization", secret = "api-key", prefix = "Bearer " }}]
{extra_rules}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_secret_goes_only_to_its_rule_and_the_agent_never_sees_it() {
    let (landing, landed) = recording_server(None).await;
    let (addr, seen) = recording_server(Some(format!("http://{landing}/api/landing"))).await;
    let dir = tempfile::tempdir().unwrap();
    let mut secrets = Secrets::new();
    secrets.insert("api-key", SECRET).unwrap();
    let host = host_with(dir.path(), |c: &mut HostConfig| c.secrets = secrets);
    let port = addr.port();
    // A second rule on the same server without the secret, and one for the
    // redirect's target: both reachable, neither gets the key.
    let extra = format!(
        "[[capabilities.outbound_http.allow]]\nurl = \"http://127.0.0.1:{port}/open/\"\nallow_private = true\n\
         [[capabilities.outbound_http.allow]]\nurl = \"http://{landing}/api/\"\nallow_private = true\n"
    );
    let agent_policy = policy(&api_call_policy(port, &extra));
    let api_call = host.load("api-call", &component(artifacts::API_CALL), agent_policy.clone()).unwrap();

    // The agent sets its own Authorization (twice, in two spellings): the host's replaces both.
    let input =
        json!({"path": "/v1/greeting", "headers": [["AUTHORIZATION", "agent-own"], ["authorization", "again"]]});
    let report = host.run(&api_call, &input.to_string()).await;
    let out: Value = serde_json::from_str(report.outcome.as_ref().unwrap()).unwrap();
    assert_eq!(
        out,
        json!({"status": 200, "body": "ok", "settings": {"base_url": format!("http://127.0.0.1:{port}/api"), "model": "small"}})
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "/api/v1/greeting");
        assert_eq!(header_values(&seen[0].1, "authorization"), [format!("Bearer {SECRET}")]);
    }

    // The egress component sends what it is told: the other rule gets no key.
    let egress = host.load("egress", &component(artifacts::EGRESS), agent_policy).unwrap();
    let send = |url: String| json!({"method": "GET", "url": url, "headers": []}).to_string();
    let r = host.run(&egress, &send(format!("http://127.0.0.1:{port}/open/x"))).await;
    assert_eq!(serde_json::from_str::<Value>(r.outcome.as_ref().unwrap()).unwrap()["status"], 200);
    // A redirect from the secret's rule is handed back, not followed: the
    // landing server is never reached.
    let r = host.run(&egress, &send(format!("http://127.0.0.1:{port}/api/redirect"))).await;
    let answer: Value = serde_json::from_str(r.outcome.as_ref().unwrap()).unwrap();
    assert_eq!(answer["status"], 303, "{answer}");
    assert!(landed.lock().unwrap().is_empty());
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["/api/v1/greeting", "/open/x", "/api/redirect"]
    );
    assert!(header_values(&seen[1].1, "authorization").is_empty(), "{:?}", seen[1]);
    assert_eq!(header_values(&seen[2].1, "authorization"), [format!("Bearer {SECRET}")]);

    // Nothing the agent got back or the host reported holds the value.
    let shown = format!("{report:?} {r:?} {}", host.metrics().encode());
    assert!(!shown.contains(SECRET) && !shown.contains("7f3a9c1e"), "the secret leaked: {shown}");
    // Usage counts what the agent sent, not the host's header.
    let sent = report.usage.counter("outbound-http", "bytes_sent");
    let url_len = format!("http://127.0.0.1:{port}/api/v1/greeting").len() as u64;
    assert_eq!(sent, url_len + "AUTHORIZATIONagent-ownauthorizationagain".len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_naming_an_undefined_secret_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(dir.path(), |_| {});
    let err = host
        .load("api-call", &component(artifacts::API_CALL), policy(&api_call_policy(9, "")))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("adds the `Authorization` header from secret `api-key`, which this host does not define"),
        "{err}"
    );
}

/// Every file under `dir`, as bytes.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map_while(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_writes_the_secret_nowhere() {
    let (addr, seen) = recording_server(None).await;
    let port = addr.port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api.key"), format!("{SECRET}\n")).unwrap();
    // A second secret rule to a closed port: its connection error is a message to check.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let extra = format!(
        "[[capabilities.outbound_http.allow]]\nurl = \"http://127.0.0.1:{closed}/api/\"\nallow_private = true\n\
         secret_headers = [{{ name = \"X-Api-Key\", secret = \"api-key\" }}]\n"
    );
    let policy_path = dir.path().join("api-call.toml");
    std::fs::write(&policy_path, api_call_policy(port, &extra)).unwrap();
    let egress_policy = dir.path().join("egress.toml");
    std::fs::write(&egress_policy, api_call_policy(port, &extra)).unwrap();
    let config = format!(
        "data_dir = \"data\"\n[secrets.api-key]\nfile = \"api.key\"\n\n\
         [[agents]]\nname = \"api-call\"\ncomponent = {:?}\npolicy = {:?}\n\n\
         [[agents]]\nname = \"egress\"\ncomponent = {:?}\npolicy = {:?}\n",
        artifacts::API_CALL,
        policy_path.display().to_string(),
        artifacts::EGRESS,
        egress_policy.display().to_string()
    );
    let daemon = DaemonProcess::start_env(dir.path(), &config, &[("CHIMERA_LOG", "trace")]);
    let api = Api::new(&daemon);
    let ok = api.submit_ok(json!({"agent": "api-call", "input": {"path": "/v1/a"}})).await;
    let failed = api
        .submit_ok(json!({"agent": "egress", "input": {"method": "GET", "url": format!("http://127.0.0.1:{closed}/api/x"), "headers": []}}))
        .await;
    let done = api.wait_final(&ok).await;
    assert_eq!(done["status"], "completed", "{done}");
    let refused = api.wait_final(&failed).await;
    assert!(refused.to_string().contains("connection-failed"), "{refused}");
    assert_eq!(header_values(&seen.lock().unwrap()[0].1, "authorization"), [format!("Bearer {SECRET}")]);

    let mut written = vec![done.to_string(), refused.to_string()];
    for path in [
        format!("/v1/tasks/{ok}/logs"),
        format!("/v1/tasks/{failed}/logs"),
        "/v1/tasks".into(),
        "/metrics".into(),
        "/v1/agents".into(),
    ] {
        let (code, body) = api.get(&path).await;
        assert_eq!(code, 200, "{path}: {body}");
        written.push(body);
    }
    written.push(daemon.stderr());
    assert!(daemon.stderr().contains("TRACE"), "the daemon logged at trace level");
    for text in &written {
        assert!(!text.contains(SECRET), "the secret leaked: {text}");
    }
    let files = files_under(&dir.path().join("data"));
    // The search can find things: the task's input is journaled.
    assert!(files.iter().any(|(_, bytes)| holds(bytes, "/v1/a")), "no file holds the journaled input");
    for (file, bytes) in files {
        assert!(!holds(&bytes, SECRET), "the secret is in {file}");
    }
    // The audit of the deployment names the secret, never its value.
    let audit = std::process::Command::new(chimera_bin())
        .args(["audit", "--config"])
        .arg(dir.path().join("chimera.toml"))
        .output()
        .unwrap();
    let audit = String::from_utf8_lossy(&audit.stdout).into_owned() + &String::from_utf8_lossy(&audit.stderr);
    assert!(
        audit.contains(&format!(
            "  api-key (file {}): api-call: Authorization to http://127.0.0.1:{port}/api/; ",
            dir.path().join("api.key").display()
        )),
        "{audit}"
    );
    assert!(!audit.contains(SECRET), "{audit}");
}

#[test]
fn a_daemon_with_a_missing_secret_refuses_to_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[secrets.api-key]\nenv = \"CHIMERA_TEST_SECRET_NEVER_SET\"\n";
    let (code, stderr) = chimera_tests::serve_refused(dir.path(), config, "127.0.0.1:0");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("secret `api-key`: the environment variable CHIMERA_TEST_SECRET_NEVER_SET is not set"),
        "{stderr}"
    );
    let config = "[secrets.api-key]\nfile = \"absent.key\"\n";
    let (code, stderr) = chimera_tests::serve_refused(dir.path(), config, "127.0.0.1:0");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("secret `api-key`: cannot read ") && stderr.contains("absent.key"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn chimera_run_takes_a_secret_from_the_environment() {
    let (addr, seen) = recording_server(None).await;
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, api_call_policy(addr.port(), "")).unwrap();
    let data = dir.path().join("data");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(chimera_bin())
            .args(["run", artifacts::API_CALL, "--secret", "api-key=env:CHIMERA_TEST_API_KEY", "--policy"])
            .arg(&policy_path)
            .args(["--input", r#"{"path":"/cli"}"#, "--data-dir"])
            .arg(data)
            .env("CHIMERA_TEST_API_KEY", SECRET)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(r#""body":"ok""#), "{stdout}");
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
    assert_eq!(header_values(&seen.lock().unwrap()[0].1, "authorization"), [format!("Bearer {SECRET}")]);
}

#[test]
fn the_deployment_audit_refuses_a_secret_the_config_does_not_define() {
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("api-call.toml");
    std::fs::write(&policy_path, api_call_policy(9, "")).unwrap();
    let config = format!(
        "[secrets.unused]\nenv = \"X\"\n\n[[agents]]\nname = \"api-call\"\ncomponent = {:?}\npolicy = {:?}\n",
        artifacts::API_CALL,
        policy_path.display().to_string()
    );
    std::fs::write(dir.path().join("chimera.toml"), config).unwrap();
    let out = std::process::Command::new(chimera_bin())
        .args(["audit", "--config"])
        .arg(dir.path().join("chimera.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("  api-key (not defined): api-call: Authorization to http://127.0.0.1:9/api/"), "{text}");
    assert!(text.contains("problem: agent `api-call` adds secret `api-key` (Authorization to http://127.0.0.1:9/api/), which the config's [secrets] does not define"), "{text}");
    assert!(text.contains("warning [unused-secret] secrets.unused:"), "{text}");
}
