//! The API's authentication and ownership, as clients with different
//! tokens meet it: no token or a wrong one is `401`; a missing scope is
//! `403` naming it; another token's task is "not found" (to read, to
//! cancel); idempotency keys are per token; policies and metrics are for
//! `admin`; a listen address other machines can reach is refused without
//! tokens. Tokens come from `chimera token`, as an operator makes them.

use chimera_tests::{agent_entry, artifacts, chimera_bin, policy_file, serve_refused, Api, DaemonProcess};
use serde_json::json;
use std::path::Path;

/// `chimera token --name NAME --scopes SCOPES`: the token (stdout) and the
/// `[[tokens]]` entry (stderr).
fn make_token(name: &str, scopes: &str) -> (String, String) {
    let out =
        std::process::Command::new(chimera_bin()).args(["token", "--name", name, "--scopes", scopes]).output().unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let entry = stderr[stderr.find("[[tokens]]").expect("an entry to add")..].to_string();
    assert!(!entry.contains(&token), "the entry holds the token itself");
    (token, entry)
}

fn config(dir: &Path, tokens: &[String]) -> String {
    std::fs::write(dir.join("tokens.toml"), tokens.join("\n")).unwrap();
    let sleeper = policy_file(dir, "sleeper", "[limits]\ntimeout_ms = 60000\n");
    let echo = policy_file(dir, "echo", "[capabilities.logging]\n");
    format!(
        "data_dir = \"data\"\nmax_instances = 16\n[auth]\ntokens_file = \"tokens.toml\"\n\n{}{}",
        agent_entry("sleeper", artifacts::SLEEPER, &sleeper, 2),
        agent_entry("echo", artifacts::ECHO, &echo, 2),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_scopes_and_ownership_hold_at_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (alice_token, alice_entry) = make_token("alice", "submit,read,cancel");
    let (bob, bob_entry) = make_token("bob", "submit,read,cancel");
    let (reader, reader_entry) = make_token("reader", "read");
    let (admin, admin_entry) = make_token("ops", "admin");
    let daemon =
        DaemonProcess::start(dir.path(), &config(dir.path(), &[alice_entry, bob_entry, reader_entry, admin_entry]));
    let (anon, alice, bob, reader, admin) = (
        Api::new(&daemon),
        Api::with_token(&daemon, &alice_token),
        Api::with_token(&daemon, &bob),
        Api::with_token(&daemon, &reader),
        Api::with_token(&daemon, &admin),
    );
    let echo = json!({"agent": "echo", "input": r#"{"text":"mine"}"#});

    // No token, a wrong one, the hash instead of the token: 401, nothing runs.
    let (code, body) = anon.submit(echo.clone()).await;
    assert_eq!(
        (code, body["error"].as_str()),
        (401, Some("this API needs a token: send `Authorization: Bearer <token>`"))
    );
    let wrong = Api::with_token(&daemon, "chm_0000");
    assert_eq!(wrong.submit(echo.clone()).await, (401, json!({"error": "the token is not known to this daemon"})));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http.get(format!("{}/v1/agents", daemon.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    // Health stays open to load balancers.
    assert_eq!(anon.get("/healthz").await.0, 200);

    // A scope missing: 403 naming it.
    assert_eq!(reader.submit(echo.clone()).await, (403, json!({"error": "token `reader` lacks the `submit` scope"})));
    assert_eq!(alice.get("/metrics").await, (403, r#"{"error":"token `alice` lacks the `admin` scope"}"#.into()));

    // Alice's task is hers: Bob and a reader find nothing, to read or cancel.
    let id = alice.submit_ok(json!({"agent": "sleeper", "input": "2"})).await;
    alice.wait_running(&id).await;
    let not_found = format!("no task {id} (finished tasks are kept as [scheduler.retain_finished] says)");
    for other in [&bob, &reader] {
        assert_eq!(other.get(&format!("/v1/tasks/{id}")).await.0, 404);
        assert_eq!(other.task(&id).await, json!({"error": not_found}));
    }
    assert_eq!(bob.cancel(&id).await, (404, json!({"error": not_found})));
    assert_eq!(reader.cancel(&id).await, (403, json!({"error": "token `reader` lacks the `cancel` scope"})));
    assert_eq!(alice.task(&id).await["status"], "running", "Bob's cancel reached Alice's task");
    let seen = admin.task(&id).await;
    assert_eq!((seen["owner"].as_str(), seen["status"].as_str()), (Some("alice"), Some("running")));
    assert_eq!(alice.cancel(&id).await, (200, json!({"id": id, "status": "running"})));
    assert_eq!(alice.wait_final(&id).await["status"], "cancelled");

    // Idempotency keys are each token's own.
    let mut keyed = echo.clone();
    keyed["idempotency_key"] = json!("order-1");
    let a = alice.submit_ok(keyed.clone()).await;
    let b = bob.submit_ok(keyed.clone()).await;
    assert_ne!(a, b, "Bob's key took over Alice's task");
    assert_eq!(alice.submit_ok(keyed.clone()).await, a);
    assert_eq!(alice.wait_final(&a).await["output"], r#"{"text":"mine","op":"echo"}"#);
    assert_eq!(bob.wait_final(&b).await["owner"], "bob");

    // Policies are for admin; the agents' names, imports and digests for readers.
    let (_, agents) = reader.get("/v1/agents").await;
    let agents: serde_json::Value = serde_json::from_str(&agents).unwrap();
    assert!(agents["agents"].as_array().unwrap().iter().all(|a| a.get("policy").is_none() && a["digest"].is_string()));
    let (_, agents) = admin.get("/v1/agents").await;
    let agents: serde_json::Value = serde_json::from_str(&agents).unwrap();
    assert!(agents["agents"].as_array().unwrap().iter().all(|a| a["policy"]["limits"].is_object()), "{agents}");
    let (code, metrics) = admin.get("/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains("chimera_scheduler_finished_total"));

    // The CLI sends $CHIMERA_TOKEN.
    let out = std::process::Command::new(chimera_bin())
        .args(["status", &a, "--server", &daemon.url])
        .env("CHIMERA_TOKEN", &alice_token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""owner": "alice""#));
    let out = std::process::Command::new(chimera_bin()).args(["status", &a, "--server", &daemon.url]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("this API needs a token"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reachable_listen_address_needs_tokens_and_a_bad_tokens_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let echo = policy_file(dir.path(), "echo", "[capabilities.logging]\n");
    let open = format!("data_dir = \"data\"\n\n{}", agent_entry("echo", artifacts::ECHO, &echo, 1));
    let (code, stderr) = serve_refused(dir.path(), &open, "0.0.0.0:0");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "listen = 0.0.0.0:0 is reachable from other machines, and the API has no authentication: \
             configure [auth] tokens_file (or $CHIMERA_TOKENS), or listen on 127.0.0.1"
        ),
        "{stderr}"
    );
    // A token written in the clear instead of its hash: refused, naming the token.
    let clear = "[[tokens]]\nname = \"ci\"\nsha256 = \"chm_in_the_clear\"\nscopes = [\"read\"]\n".to_string();
    let (code, stderr) = serve_refused(dir.path(), &config(dir.path(), &[clear]), "127.0.0.1:0");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("tokens.toml: token `ci`: sha256 must be the token's SHA-256 in 64 hex digits"),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists(), "a refused config created the data directory");
}
