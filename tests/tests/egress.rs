//! Outbound HTTP attacks against loopback test servers: each refused with
//! the exact denial, and no request reaches a server it should not.

use chimera_host::{Agent, Host, TaskReport};
use chimera_tests::{artifacts, component, host_with_dns, metric, policy, TestServer};
use serde_json::{json, Value};

fn egress_policy(url: &str, allow_private: bool, extra: &str) -> chimera_host::Policy {
    policy(&format!(
        "[capabilities.outbound_http]\n{extra}\n[[capabilities.outbound_http.allow]]\nurl = \"{url}\"\nallow_private = {allow_private}\n"
    ))
}

async fn send(host: &Host, agent: &Agent, url: &str, headers: Value) -> Value {
    run(host, agent, json!({"method": "GET", "url": url, "headers": headers})).await.0
}

/// Runs the egress agent on `spec`: its answer and the task's report.
async fn run(host: &Host, agent: &Agent, spec: Value) -> (Value, TaskReport) {
    let r = host.run(agent, &spec.to_string()).await;
    (serde_json::from_str(r.outcome.as_ref().unwrap_or_else(|e| panic!("{e}"))).unwrap(), r)
}

fn too_large(reason: &str) -> Value {
    json!({"error": "too-large", "reason": reason})
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
    assert_eq!(got, denied("api.allowed.test resolves to a loopback address; the rule must say allow_private = true"));
    let got = send(&host, &agent, &format!("http://v6.allowed.test:{port}/hello"), json!([])).await;
    assert_eq!(got, denied("v6.allowed.test resolves to a loopback address; the rule must say allow_private = true"));
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

#[tokio::test(flavor = "multi_thread")]
async fn the_rule_that_matched_alone_decides_private_access() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_dns(dir.path(), &[("svc.test", "127.0.0.1")]);
    let toml = format!(
        "[capabilities.outbound_http]\n\
         [[capabilities.outbound_http.allow]]\nurl = \"http://svc.test:{port}/open/\"\nallow_private = true\n\
         [[capabilities.outbound_http.allow]]\nurl = \"http://svc.test:{port}/closed/\"\nallow_private = false\n"
    );
    let agent = host.load("egress", &component(artifacts::EGRESS), policy(&toml)).unwrap();
    let open = format!("http://svc.test:{port}/open/x");
    let closed = format!("http://svc.test:{port}/closed/x");
    let refused = denied("svc.test resolves to a loopback address; the rule must say allow_private = true");
    for round in 1..=2 {
        // The open rule reaches the server (a 404 on /open/x) and leaves a
        // pooled connection to it behind...
        assert_eq!(send(&host, &agent, &open, json!([])).await, json!({"status": 404, "bytes": 0}));
        assert_eq!(server.hits(), round);
        // ...which a request under the closed rule does not get to reuse.
        let got = send(&host, &agent, &closed, json!([])).await;
        assert_eq!(got, refused);
        assert!(!got.to_string().contains("127.0.0.1"), "{got}");
        assert_eq!(server.hits(), round);
    }
    assert_eq!(
        metric(&host, r#"chimera_denials_total{agent="egress",capability="outbound-http",reason="private-address"}"#),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_header_is_refused_before_anything_is_copied_or_sent() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_dns(dir.path(), &[]);
    let url = server.url("/hello");
    let agent = host
        .load("egress", &component(artifacts::EGRESS), egress_policy(&url, true, "max_request_bytes = 1024"))
        .unwrap();
    let big = 8 << 20;
    let (got, r) = run(&host, &agent, json!({"url": url, "header_bytes": big})).await;
    let size = url.len() + "x-big".len() + big;
    assert_eq!(
        got,
        too_large(&format!("request is {size} bytes (URL, headers and body); the limit is 1024 (max_request_bytes)"))
    );
    assert_eq!((r.usage.counter("outbound-http", "requests"), r.usage.counter("outbound-http", "bytes_sent")), (0, 0));
    assert_eq!(r.usage.calls("outbound-http"), 1);

    // Under max_request_bytes = 0 not even the URL may leave.
    let zero = host
        .load("egress-zero", &component(artifacts::EGRESS), egress_policy(&url, true, "max_request_bytes = 0"))
        .unwrap();
    // Refused from the lengths alone: the URL, and a header of at least a byte.
    let (got, r) = run(&host, &zero, json!({"url": url, "header_bytes": big})).await;
    let floor = url.len() + 1;
    assert_eq!(
        got,
        too_large(&format!(
            "request is at least {floor} bytes (URL, headers and body); the limit is 0 (max_request_bytes)"
        ))
    );
    assert_eq!(r.usage.counter("outbound-http", "bytes_sent"), 0);
    let (got, _) = run(&host, &zero, json!({"url": url})).await;
    let size = url.len();
    assert_eq!(
        got,
        too_large(&format!("request is {size} bytes (URL, headers and body); the limit is 0 (max_request_bytes)"))
    );
    assert_eq!(server.hits(), 0, "no request reached the server");
    assert_eq!(
        metric(&host, r#"chimera_denials_total{agent="egress",capability="outbound-http",reason="too-large"}"#),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_byte_sent_is_counted_against_the_limit() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_dns(dir.path(), &[]);
    let url = server.url("/hello");
    let limit = 200;
    let agent = host
        .load(
            "egress",
            &component(artifacts::EGRESS),
            egress_policy(&server.url("/"), true, &format!("max_request_bytes = {limit}")),
        )
        .unwrap();
    let hello = json!({"status": 200, "bytes": 26});

    // URL, header names and values, and body, all counted.
    let headers = json!([["x-a", "1"], ["accept", "text/plain"]]);
    let (got, r) = run(&host, &agent, json!({"url": url, "headers": headers, "body": "hello"})).await;
    assert_eq!(got, hello);
    let sent = url.len() + "x-a".len() + "1".len() + "accept".len() + "text/plain".len() + "hello".len();
    assert_eq!(
        (r.usage.counter("outbound-http", "requests"), r.usage.counter("outbound-http", "bytes_sent")),
        (1, sent as u64)
    );

    // What is counted is the URL that leaves: `/a/../hello` goes out as `/hello`.
    let (got, r) = run(&host, &agent, json!({"url": server.url("/a/../hello")})).await;
    assert_eq!(got, hello);
    assert_eq!(r.usage.counter("outbound-http", "bytes_sent"), url.len() as u64);

    // Exactly at the limit goes out; one byte more does not.
    let fill = limit - url.len() - "x-big".len();
    let (got, r) = run(&host, &agent, json!({"url": url, "header_bytes": fill})).await;
    assert_eq!(got, hello);
    assert_eq!(r.usage.counter("outbound-http", "bytes_sent"), limit as u64);
    let (got, r) = run(&host, &agent, json!({"url": url, "header_bytes": fill + 1})).await;
    let reason =
        format!("request is {} bytes (URL, headers and body); the limit is {limit} (max_request_bytes)", limit + 1);
    assert_eq!(got, too_large(&reason));
    assert_eq!((r.usage.counter("outbound-http", "requests"), r.usage.counter("outbound-http", "bytes_sent")), (0, 0));
    let (got, _) = run(&host, &agent, json!({"url": url, "body": "b".repeat(limit)})).await;
    let reason = format!(
        "request is {} bytes (URL, headers and body); the limit is {limit} (max_request_bytes)",
        url.len() + limit
    );
    assert_eq!(got, too_large(&reason));
    assert_eq!(server.hits(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn names_resolving_to_transition_addresses_are_refused() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let names = [
        ("sixtofour.allowed.test", "2002:7f00:1::1", "a 6to4"),
        ("teredo.allowed.test", "2001:0:4136:e378:8000:63bf:80ff:fffe", "a Teredo"),
        ("translated.allowed.test", "::ffff:0:7f00:1", "an IPv4-translated"),
        ("nat64.allowed.test", "64:ff9b::7f00:1", "a NAT64"),
        ("nat64-local.allowed.test", "64:ff9b:1::7f00:1", "a NAT64 (local use)"),
        ("mapped.allowed.test", "::ffff:127.0.0.1", "a loopback"),
        ("metadata.allowed.test", "169.254.169.254", "a link-local (includes cloud metadata)"),
    ];
    let host = host_with_dns(dir.path(), &names.map(|(name, ip, _)| (name, ip)));
    let agent = host
        .load(
            "egress",
            &component(artifacts::EGRESS),
            egress_policy(&format!("http://*.allowed.test:{port}/"), false, ""),
        )
        .unwrap();
    for (name, ip, class) in names {
        let got = send(&host, &agent, &format!("http://{name}:{port}/hello"), json!([])).await;
        assert_eq!(
            got,
            denied(&format!("{name} resolves to {class} address; the rule must say allow_private = true")),
            "{name}"
        );
        let text = got.to_string();
        assert!(!text.contains(ip) && !text.contains("127.0.0.1") && !text.contains("7f00"), "{text}");
    }
    assert_eq!(server.hits(), 0);
}

fn wat_policy(extra: &str) -> chimera_host::Policy {
    egress_policy("http://127.0.0.1:9/", true, extra)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_list_is_refused_by_its_length_before_any_element_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_dns(dir.path(), &[]);
    let agent = host.load("egress", &component(artifacts::EGRESS_HEADER_FLOOD), wat_policy("")).unwrap();
    let r = host.run(&agent, "").await;
    assert_eq!(r.outcome, Ok("request has 100000 headers; the limit is 100".to_string()));
    assert_eq!((r.usage.counter("outbound-http", "requests"), r.usage.counter("outbound-http", "bytes_sent")), (0, 0));
    assert_eq!(
        metric(&host, r#"chimera_denials_total{agent="egress",capability="outbound-http",reason="too-large"}"#),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn utf16_requests_are_sized_before_they_are_transcoded() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_dns(dir.path(), &[]);
    let agent = host
        .load("egress", &component(artifacts::EGRESS_UTF16_REQUEST), wat_policy("max_request_bytes = 1024"))
        .unwrap();
    let r = host.run(&agent, "").await;
    // 20 + 5 + 8,388,608 code units: at least that many bytes as UTF-8,
    // known from the lengths alone.
    let expected = "request is at least 8388633 bytes (URL, headers and body); the limit is 1024 (max_request_bytes)\n\
                    request is more than 1024 bytes (URL, headers and body) once decoded to UTF-8; the limit is 1024 (max_request_bytes)";
    assert_eq!(r.outcome, Ok(expected.to_string()));
    assert_eq!((r.usage.counter("outbound-http", "requests"), r.usage.counter("outbound-http", "bytes_sent")), (0, 0));
    assert_eq!(
        metric(&host, r#"chimera_denials_total{agent="egress",capability="outbound-http",reason="too-large"}"#),
        Some(2.0)
    );
}
