//! The daemon's HTTP edge under hostile clients: slow-loris and idle
//! connections cut off, connections over the cap answered and closed,
//! slow bodies timed out, and every answer the server makes itself in JSON
//! with `Retry-After` where waiting helps.

use chimera_tests::{agent_entry, artifacts, chimera_bin, policy_file, Api, DaemonProcess};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(daemon: &DaemonProcess) -> String {
    daemon.url.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection; what it sent. The bound
/// only keeps a broken server from hanging the test.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server never closed the connection");
    String::from_utf8_lossy(&got).into_owned()
}

/// A daemon whose one worker a long `sleeper` task can hold, with `extra` config.
fn sleeper_daemon(dir: &std::path::Path, extra: &str) -> DaemonProcess {
    let sleeper = policy_file(dir, "sleeper", "[limits]\ntimeout_ms = 60000\n");
    let config = format!("data_dir = \"data\"\n{extra}\n\n{}", agent_entry("sleeper", artifacts::SLEEPER, &sleeper, 1));
    DaemonProcess::start(dir, &config)
}

fn json_body(response: &str) -> Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {response}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_connections_are_cut_off_and_one_over_the_cap_is_answered_503() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(dir.path(), "echo", "[capabilities.logging]\n");
    let config = format!(
        "data_dir = \"data\"\n[http]\nmax_connections = 4\nheader_timeout_ms = 1000\n\n{}",
        agent_entry("echo", artifacts::ECHO, &policy, 1)
    );
    let daemon = DaemonProcess::start(dir.path(), &config);
    let addr = addr(&daemon);

    // Three slow-loris clients that never finish their headers, one that sends nothing.
    let mut held = Vec::new();
    for i in 0..4 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        if i < 3 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        }
        held.push(s);
    }
    // Give the server time to take all four before the fifth arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = TcpStream::connect(&addr).await.unwrap();
    let answer = read_to_close(&mut fifth).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1\r\n"), "{answer}");
    assert_eq!(json_body(&answer), json!({"error": "too many open connections; retry later"}));

    // The server closes each held connection itself once its headers are overdue.
    for mut s in held {
        let got = read_to_close(&mut s).await;
        assert!(!got.contains("200 OK"), "a request with unfinished headers was answered: {got}");
    }
    // Their slots are free again.
    let health = reqwest::get(format!("{}/healthz", daemon.url)).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_is_json_and_refusals_say_when_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = sleeper_daemon(
        dir.path(),
        "[scheduler]\nworkers = 1\nmax_queued = 1\n[http]\nrequest_timeout_ms = 1000\nretry_after_s = 7",
    );
    let client = reqwest::Client::new();

    let r = client.get(format!("{}/nope", daemon.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "no such endpoint; see the README's API section");
    let r = client.put(format!("{}/healthz", daemon.url)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "this endpoint does not take that method");

    // A full queue: 429 with Retry-After.
    let submit = |input: &str| {
        client.post(format!("{}/v1/tasks", daemon.url)).json(&json!({"agent": "sleeper", "input": input})).send()
    };
    let running: Value = submit("30").await.unwrap().json().await.unwrap();
    let id = running["id"].as_str().unwrap().to_string();
    Api::new(&daemon).wait_running(&id).await;
    assert_eq!(submit("1").await.unwrap().status(), 202);
    let r = submit("1").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("the queue is full"));

    // A body that never finishes arriving: 408 in JSON once the request deadline passes.
    let mut s = TcpStream::connect(addr(&daemon)).await.unwrap();
    s.write_all(
        b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"ag",
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(
        json_body(&answer)["error"],
        "the request was not answered within 1000 ms (http.request_timeout_ms)",
        "{answer}"
    );

    // Requests the HTTP parser itself refuses: JSON too, saying what was wrong.
    let huge_header = format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(500_000));
    let cases = [
        ("GARBAGE\r\n\r\n".to_string(), "400", "the request is not valid HTTP/1.1"),
        (format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000)), "414", "the request URI is too long"),
        (huge_header, "431", "the request headers are too large"),
    ];
    for (request, code, message) in cases {
        let mut s = TcpStream::connect(addr(&daemon)).await.unwrap();
        // The server may answer (and close) before taking all of a request too large to read.
        let _ = s.write_all(request.as_bytes()).await;
        let answer = read_to_close(&mut s).await;
        assert!(answer.starts_with(&format!("HTTP/1.1 {code} ")), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("\r\ncontent-type: application/json\r\n"), "{answer}");
        assert_eq!(json_body(&answer)["error"], message, "{answer}");
    }
    // The daemon carries on.
    assert_eq!(client.get(format!("{}/healthz", daemon.url)).send().await.unwrap().status(), 200);
}

#[test]
fn an_unusable_http_limit_is_refused_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chimera.toml");
    std::fs::write(&config, "[http]\nmax_connections = 0\n").unwrap();
    let out = std::process::Command::new(chimera_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http.max_connections = 0 is out of range: use 1 to 1000000"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_hanging_up_mid_submit_leave_no_queue_room_or_key_behind() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = sleeper_daemon(dir.path(), "[scheduler]\nworkers = 1\nmax_queued = 500");
    let client = reqwest::Client::new();
    let submit = |body: Value| client.post(format!("{}/v1/tasks", daemon.url)).json(&body).send();
    // One task holds the only worker, so everything after it stays queued.
    let blocker: Value = submit(json!({"agent": "sleeper", "input": "30"})).await.unwrap().json().await.unwrap();
    let blocker = blocker["id"].as_str().unwrap().to_string();
    Api::new(&daemon).wait_running(&blocker).await;

    // 300 clients send a whole submission with an idempotency key, then
    // reset the connection at once, most of them while it is committing.
    for i in 0..300 {
        let body = json!({"agent": "sleeper", "input": "1", "idempotency_key": format!("k{i}")}).to_string();
        let request = format!(
            "POST /v1/tasks HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut s = TcpStream::connect(addr(&daemon)).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        s.set_zero_linger().unwrap();
        drop(s);
    }
    // Every accepted submission is queued, or its room was given back: the
    // queue fills to exactly its bound and no further.
    let mut accepted = 0;
    let queued_before = loop {
        // Hung-up submissions still in flight finish first.
        let before: Value = client.get(format!("{}/healthz", daemon.url)).send().await.unwrap().json().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after: Value = client.get(format!("{}/healthz", daemon.url)).send().await.unwrap().json().await.unwrap();
        if before["queued"] == after["queued"] {
            break after["queued"].as_u64().unwrap();
        }
    };
    loop {
        let r = submit(json!({"agent": "sleeper", "input": "1"})).await.unwrap();
        match r.status().as_u16() {
            202 => accepted += 1,
            429 => break,
            other => panic!("unexpected {other}"),
        }
        assert!(accepted <= 500, "the queue took more than its bound");
    }
    eprintln!("{queued_before} of 300 hung-up submissions were queued");
    assert_eq!(queued_before + accepted, 500, "{queued_before} queued by hung-up clients, {accepted} after");
    // A key whose submission was accepted answers with its task; one whose
    // submission was lost is free for a new task.
    for i in 0..300 {
        let r: Value = submit(json!({"agent": "sleeper", "input": "1", "idempotency_key": format!("k{i}")}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(id) = r["id"].as_str() {
            let s: Value =
                client.get(format!("{}/v1/tasks/{id}", daemon.url)).send().await.unwrap().json().await.unwrap();
            assert_eq!(s["idempotency_key"], format!("k{i}"), "key k{i} points at a task that is not its own: {s}");
        } else {
            assert!(r["error"].as_str().unwrap().contains("the queue is full"), "{r}");
        }
    }
}
