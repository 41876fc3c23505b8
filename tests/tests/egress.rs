//! Outbound HTTP attacks against loopback test servers: each refused with
//! the exact denial, and no request reaches a server it should not.

use chimera_host::{Agent, Host};
use chimera_tests::{artifacts, component, host_with_dns, metric, policy, TestServer};
use serde_json::{json, Value};

fn egress_policy(url: &str, allow_private: bool, extra: &str) -> chimera_host::Policy {
    policy(&format!(
        "[capabilities.outbound_http]\n{extra}\n[[capabilities.outbound_http.allow]]\nurl = \"{url}\"\nallow_private = {allow_private}\n"
    ))
}

async fn send(host: &Host, agent: &Agent, url: &str, headers: Value) -> Value {
    let input = json!({"method": "GET", "url": url, "headers": headers}).to_string();
    let r = host.run(agent, &input).await;
    serde_json::from_str(r.outcome.as_ref().unwrap_or_else(|e| panic!("{e}"))).unwrap()
}

fn denied(reason: &str) -> Value {
    json!({"error": "denied", "reason": reason})
}

#[tokio::test(flavor = "multi_thread")]
async fn alternative_ip_spellings_of_loopback_are_denied() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_dns(dir.path(), &[]);
    let agent = host
        .load("egress", &component(artifacts::EGRESS), egress_policy(&format!("http://127.0.0.1:{port}/"), false, ""))
        .unwrap();
    for spelling in ["127.0.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.1"] {
        let got = send(&host, &agent, &format!("http://{spelling}:{port}/hello"), json!([])).await;
        assert_eq!(
            got,
            denied("127.0.0.1 is a loopback address; the rule must say allow_private = true"),
            "{spelling}"
        );
    }
    let got = send(&host, &agent, &format!("http://[::ffff:127.0.0.1]:{port}/hello"), json!([])).await;
    assert_eq!(
        got,
        denied(&format!("no allow rule of this agent's policy matches GET http://[::ffff:7f00:1]:{port}/hello"))
    );
    assert_eq!(server.hits(), 0);
    assert_eq!(
        metric(&host, r#"chimera_denials_total{agent="egress",capability="outbound-http",reason="private-address"}"#),
        Some(6.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn names_that_resolve_to_loopback_need_allow_private() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_dns(dir.path(), &[("api.allowed.test", "127.0.0.1"), ("v6.allowed.test", "::1")]);
    let agent = host
        .load(
            "egress",
            &component(artifacts::EGRESS),
            egress_policy(&format!("http://*.allowed.test:{port}/"), false, ""),
        )
        .unwrap();
    let got = send(&host, &agent, &format!("http://api.allowed.test:{port}/hello"), json!([])).await;
    assert_eq!(
        got,
        denied("api.allowed.test resolves to 127.0.0.1, a loopback address; the rule must say allow_private = true")
    );
    let got = send(&host, &agent, &format!("http://v6.allowed.test:{port}/hello"), json!([])).await;
    assert_eq!(
        got,
        denied("v6.allowed.test resolves to ::1, a loopback address; the rule must say allow_private = true")
    );
    assert_eq!(server.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn url_tricks_are_denied_before_any_traffic() {
    let server = TestServer::start().await;
    let other = TestServer::start().await;
    let port = server.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_dns(
        dir.path(),
        &[
            ("api.allowed.test", "127.0.0.1"),
            ("api.allowed.test.evil.test", "127.0.0.1"),
            ("allowed.test", "127.0.0.1"),
        ],
    );
    let agent = host
        .load(
            "egress",
            &component(artifacts::EGRESS),
            egress_policy(&format!("http://*.allowed.test:{port}/api/"), true, ""),
        )
        .unwrap();
    let no_rule = |url: &str| denied(&format!("no allow rule of this agent's policy matches GET {url}"));

    // The allowed request works.
    let ok = send(&host, &agent, &format!("http://api.allowed.test:{port}/api/x"), json!([])).await;
    assert_eq!(ok, json!({"status": 404, "bytes": 0}));

    let cases = [
        // lookalike suffix
        format!("http://api.allowed.test.evil.test:{port}/api/x"),
        // the bare suffix is not a subdomain of itself
        format!("http://allowed.test:{port}/api/x"),
        // scheme smuggling
        format!("https://api.allowed.test:{port}/api/x"),
        // port smuggling
        format!("http://api.allowed.test:{}/api/x", other.addr.port()),
        // path prefix escape
        format!("http://api.allowed.test:{port}/admin"),
        format!("http://api.allowed.test:{port}/api/../admin"),
    ];
    for url in &cases {
        let normalised = url.replace("/api/../admin", "/admin");
        assert_eq!(send(&host, &agent, url, json!([])).await, no_rule(&normalised), "{url}");
    }
    // userinfo trick: looks like the allowed host, goes elsewhere
    let got = send(&host, &agent, &format!("http://api.allowed.test:{port}@127.0.0.1:{port}/api/x"), json!([])).await;
    assert_eq!(got, denied("URLs with credentials (user@host) are not allowed"));
    // Host header override
    let got =
        send(&host, &agent, &format!("http://api.allowed.test:{port}/api/x"), json!([["Host", "internal.example"]]))
            .await;
    assert_eq!(got, denied("agents may not set the `Host` header"));
    assert_eq!(other.hits(), 0);
    // Only the one allowed request reached the server (a 404 on /api/x).
    assert_eq!(server.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_servers_are_contained() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_dns(dir.path(), &[]);
    let agent = host
        .load(
            "egress",
            &component(artifacts::EGRESS),
            egress_policy(&server.url("/"), true, "max_response_bytes = 1048576\ntimeout_ms = 300"),
        )
        .unwrap();
    let too_large = json!({"error": "too-large", "reason": "response body exceeds 1048576 bytes (max_response_bytes)"});
    assert_eq!(send(&host, &agent, &server.url("/endless"), json!([])).await, too_large);
    assert_eq!(send(&host, &agent, &server.url("/big"), json!([])).await, too_large);
    assert_eq!(send(&host, &agent, &server.url("/slow"), json!([])).await, json!({"error": "timeout", "reason": ""}));
    let flood = send(&host, &agent, &server.url("/headers"), json!([])).await;
    assert_eq!(flood["error"], "connection-failed", "{flood}");
    // A redirect to the metadata address is handed back, not followed.
    let redirect = send(&host, &agent, &server.url("/redirect-metadata"), json!([])).await;
    assert_eq!(redirect, json!({"status": 307, "bytes": 0}));
    // The host is fine and the normal path still works.
    assert_eq!(send(&host, &agent, &server.url("/hello"), json!([])).await, json!({"status": 200, "bytes": 26}));
}
