//! Python agents built by componentize-py run unchanged: the sample agent's
//! outputs, the inert WASI state an auditor sees, escape attempts that fail
//! inside Python while the host is untouched, and the usual limits.

use chimera_host::{LoadError, Policy, TaskError, Verdict};
use chimera_tests::{
    artifacts, assert_counted, chimera_bin, host_sharing_compiled, inert_policy, load_serially, policy, repo_file,
    run_beside_bystander,
};

/// The WASI imports CPython brings whether or not the agent uses them, which
/// the default policy refuses and the inert policy links.
const NEVER_GRANTED: [&str; 9] = [
    "wasi:filesystem/types@0.2.9",
    "wasi:filesystem/preopens@0.2.9",
    "wasi:sockets/network@0.2.9",
    "wasi:sockets/instance-network@0.2.9",
    "wasi:sockets/udp@0.2.9",
    "wasi:sockets/udp-create-socket@0.2.9",
    "wasi:sockets/tcp@0.2.9",
    "wasi:sockets/tcp-create-socket@0.2.9",
    "wasi:sockets/ip-name-lookup@0.2.9",
];

fn sample_policy() -> Policy {
    Policy::from_file(&repo_file("sample-agents/kv-counter-py/policy.toml")).unwrap()
}

fn agent_error(report: &chimera_host::TaskReport) -> (&str, bool) {
    match &report.outcome {
        Err(TaskError::Agent { message, retryable }) => (message.as_str(), *retryable),
        other => panic!("expected the agent's own error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn python_kv_counter_counts_logs_and_reports_store_errors() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_sharing_compiled(dir.path());
    let agent = load_serially(&host, "kv-counter-py", artifacts::KV_COUNTER_PY, sample_policy()).unwrap();

    let first = host.run(&agent, r#"{"key":"visits"}"#).await;
    assert_eq!(first.outcome, Ok(r#"{"key": "visits", "count": 1}"#.to_string()));
    let second = host.run(&agent, r#"{"key":"visits","by":41}"#).await;
    assert_eq!(second.outcome, Ok(r#"{"key": "visits", "count": 42}"#.to_string()));
    let line = second.logs.iter().find(|l| l.message == "counter visits is now 42").expect("the agent logged");
    assert_eq!(line.fields, vec![("key".to_string(), "visits".to_string())]);
    assert_eq!(second.usage.calls("kv"), 1);
    let all = host.run(&agent, r#"{"list":true}"#).await;
    assert_eq!(all.outcome, Ok(r#"{"counters": [["visits", 42]]}"#.to_string()));
    // Its settings come from the policy through `config`.
    let settings = host.run(&agent, r#"{"settings":true}"#).await;
    assert_eq!(settings.outcome, Ok(r#"{"settings": [["default_step", "1"]]}"#.to_string()));
    assert_eq!(settings.usage.calls("config"), 1);

    // The store's typed errors reach Python as exceptions and come back as the agent's error.
    let long_key = "k".repeat(130);
    let too_large = host.run(&agent, &format!(r#"{{"key":"{long_key}"}}"#)).await;
    assert_eq!(
        agent_error(&too_large),
        ("increment: KvError_TooLarge: key is 138 bytes; the limit is 128 (max_key_bytes)", false)
    );
    let not_json = host.run(&agent, "not json").await;
    assert_eq!(agent_error(&not_json), ("input is not JSON: Expecting value: line 1 column 1 (char 0)", false));

    // The default limits are sized for CPython: it starts well inside them.
    let limits = &agent.policy().limits;
    assert_eq!((limits.memory_mib, limits.cpu_ms), (64, 2_000));
    assert!(first.usage.peak_memory_bytes < 32 << 20, "CPython used {} bytes", first.usage.peak_memory_bytes);
    eprintln!(
        "kv-counter-py: peak memory {} bytes, cpu {} ms, wall {} us",
        first.usage.peak_memory_bytes, first.usage.cpu_ms, first.usage.wall_time_us
    );
}

#[test]
fn python_agent_is_refused_by_default_and_its_wasi_imports_are_inert_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_sharing_compiled(dir.path());

    // The default policy: refused at load, naming every filesystem and socket import.
    let Err(err) = load_serially(&host, "py-escape", artifacts::PY_ESCAPE, policy("")) else {
        panic!("the default policy loaded an agent importing wasi:filesystem and wasi:sockets")
    };
    let LoadError::Ungranted { ungranted, .. } = &err else { panic!("expected a refusal, got {err}") };
    let mut refused: Vec<&str> = ungranted.iter().map(|u| u.import.as_str()).collect();
    refused.sort();
    let mut expected = NEVER_GRANTED.to_vec();
    expected.sort();
    assert_eq!(refused, expected);
    let message = err.to_string();
    for import in NEVER_GRANTED {
        assert!(message.contains(import), "{import} is not named in: {message}");
    }
    assert!(message.contains(r#"[wasi] filesystem = "inert""#), "{message}");

    // Asked for: linked inert, everything else of CPython's baseline granted.
    let bytes = chimera_tests::component(artifacts::PY_ESCAPE);
    let audit = host.audit("py-escape", &bytes, &inert_policy("")).unwrap();
    assert!(audit.runnable, "{:?}", audit.problems);
    for d in &audit.imports {
        let expected = if NEVER_GRANTED.contains(&d.import.as_str()) { Verdict::Inert } else { Verdict::Granted };
        assert_eq!(d.verdict, expected, "{}", d.import);
    }
    assert_eq!(audit.imports.iter().filter(|d| d.verdict == Verdict::Inert).count(), NEVER_GRANTED.len());

    // Half asked for: the other half is still refused.
    let audit = host.audit("py-escape", &bytes, &policy("[wasi]\nfilesystem = \"inert\"\n")).unwrap();
    assert!(!audit.runnable);
    let refused: Vec<&str> = audit.refused().map(|d| d.import.as_str()).collect();
    assert_eq!(refused.len(), 7);
    assert!(refused.iter().all(|i| i.starts_with("wasi:sockets/")), "{refused:?}");
}

#[test]
fn chimera_audit_shows_python_imports_as_inert_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("inert.toml");
    std::fs::write(&policy_path, "[wasi]\nfilesystem = \"inert\"\nsockets = \"inert\"\n").unwrap();
    let audit = |args: &[&str]| {
        let out = std::process::Command::new(chimera_bin())
            .arg("audit")
            .arg(artifacts::PY_ESCAPE)
            .args(args)
            .env("CHIMERA_DATA_DIR", dir.path())
            // Other tests keep both cores busy while this cold compile runs.
            .env("CHIMERA_COMPILE_TIMEOUT_MS", "300000")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // The table gives an interface a row of its own, or shares one with the
    // rest of its WASI package at that version and verdict
    // (`wasi:sockets@0.2.9 (7 interfaces)`); the verdict is the column after
    // the capability.
    let verdict_of = |stdout: &str, import: &str| {
        let (package, rest) = import.split_once('/').unwrap();
        let version = rest.split_once('@').unwrap().1;
        let group = format!("{package}@{version} (");
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{import} ")) || l.starts_with(&group))
            .unwrap_or_else(|| panic!("{import} in {stdout}"));
        let columns: Vec<&str> = line.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        columns[2].to_string()
    };

    let (code, stdout) = audit(&["--policy", policy_path.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}");
    for import in NEVER_GRANTED {
        assert_eq!(verdict_of(&stdout, import), "inert", "{import}");
    }
    assert_eq!(verdict_of(&stdout, "wasi:cli/stdout@0.2.9"), "granted");
    assert!(stdout.contains("filesystem=inert sockets=inert"), "{stdout}");
    assert!(stdout.contains("verdict: runnable: every import is granted, 9 of them inert"), "{stdout}");

    let (code, stdout) = audit(&[]);
    assert_eq!(code, Some(1), "{stdout}");
    for import in NEVER_GRANTED {
        assert_eq!(verdict_of(&stdout, import), "REFUSED", "{import}");
    }
    assert!(stdout.contains("verdict: REFUSED: 9 import(s) not granted"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_escape_attempts_fail_inside_python_and_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_sharing_compiled(dir.path());
    let agent = load_serially(&host, "py-escape", artifacts::PY_ESCAPE, inert_policy("")).unwrap();
    let run = |input: String| {
        let (host, agent) = (&host, &agent);
        async move { host.run(agent, &input).await.outcome.expect("the agent handles the error itself") }
    };

    assert_eq!(
        run(r#"{"op":"read-file","path":"/etc/passwd"}"#.into()).await,
        "blocked: FileNotFoundError: [Errno 44] No such file or directory: '/etc/passwd'"
    );
    assert_eq!(
        run(r#"{"op":"list-dir","path":"/"}"#.into()).await,
        "blocked: FileNotFoundError: [Errno 44] No such file or directory: '/'"
    );
    let target = dir.path().join("written-by-agent.txt");
    assert_eq!(
        run(format!(r#"{{"op":"write-file","path":"{}"}}"#, target.display())).await,
        format!("blocked: FileNotFoundError: [Errno 44] No such file or directory: '{}'", target.display())
    );
    assert!(!target.exists(), "the agent created a host file");

    // A listener on loopback that the agent tries to reach: nothing arrives.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let port = tcp.local_addr().unwrap().port();
    assert_eq!(
        run(format!(r#"{{"op":"connect","host":"127.0.0.1","port":{port}}}"#)).await,
        "blocked: PermissionError: [Errno 2] Permission denied"
    );
    assert_eq!(tcp.accept().unwrap_err().kind(), std::io::ErrorKind::WouldBlock, "a connection arrived");

    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let port = udp.local_addr().unwrap().port();
    assert_eq!(
        run(format!(r#"{{"op":"udp","host":"127.0.0.1","port":{port}}}"#)).await,
        "blocked: PermissionError: [Errno 2] Permission denied"
    );
    let mut buf = [0u8; 64];
    assert_eq!(udp.recv(&mut buf).unwrap_err().kind(), std::io::ErrorKind::WouldBlock, "a datagram arrived");

    assert_eq!(
        run(r#"{"op":"resolve","host":"localhost"}"#.into()).await,
        "blocked: gaierror: [Errno -4] Non-recoverable error"
    );

    // The host served a bystander throughout, and no instance outlived its task.
    let report = run_beside_bystander(&host, &agent, r#"{"op":"read-file","path":"/etc/shadow"}"#).await;
    assert_eq!(
        report.outcome,
        Ok("blocked: FileNotFoundError: [Errno 44] No such file or directory: '/etc/shadow'".into())
    );
    assert_eq!(chimera_tests::metric(&host, "chimera_live_instances"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn python_runaway_loop_and_memory_hog_are_stopped_by_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_sharing_compiled(dir.path());

    let spinner =
        load_serially(&host, "py-spin", artifacts::PY_ESCAPE, inert_policy("[limits]\ncpu_ms = 300\n")).unwrap();
    let report = run_beside_bystander(&host, &spinner, r#"{"op":"spin"}"#).await;
    assert_eq!(report.outcome, Err(TaskError::CpuLimit { limit_ms: 300 }));
    assert_counted(&host, "py-spin", "cpu-limit");

    let hog =
        load_serially(&host, "py-hog", artifacts::PY_ESCAPE, inert_policy("[limits]\nmemory_mib = 32\n")).unwrap();
    let report = run_beside_bystander(&host, &hog, r#"{"op":"hog"}"#).await;
    match report.outcome {
        Err(TaskError::MemoryLimit { limit_bytes, requested_bytes }) => {
            assert_eq!(limit_bytes, 32 << 20);
            assert!(requested_bytes > limit_bytes);
        }
        other => panic!("expected the memory limit, got {other:?}"),
    }
    assert!(report.usage.peak_memory_bytes <= 32 << 20, "peak {}", report.usage.peak_memory_bytes);
    assert_counted(&host, "py-hog", "memory-limit");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_wasi_http_goes_out_only_under_the_outbound_http_rules() {
    let server = chimera_tests::TestServer::start().await;
    let port = server.addr.port();
    let text = std::fs::read_to_string(repo_file("sample-agents/fetch-py/policy.toml")).unwrap();
    let text = text.replace("127.0.0.1:8787", &format!("127.0.0.1:{port}"));
    let dir = tempfile::tempdir().unwrap();
    let host = host_sharing_compiled(dir.path());
    let agent = load_serially(&host, "fetch-py", artifacts::FETCH_PY, policy(&text)).unwrap();
    let audit = host.audit("fetch-py", &chimera_tests::component(artifacts::FETCH_PY), &policy(&text)).unwrap();
    let http: Vec<_> = audit.imports.iter().filter(|d| d.import.starts_with("wasi:http/")).collect();
    assert_eq!(http.len(), 2, "{:?}", audit.imports);
    assert!(http.iter().all(|d| d.verdict == Verdict::Granted && d.capability == "wasi-http"));
    let refusal_logged = |report: &chimera_host::TaskReport, text: &str| {
        report.logs.iter().any(|l| l.message.starts_with("wasi:http request refused") && l.message.contains(text))
    };

    let report = host.run(&agent, &format!(r#"{{"url":"{}"}}"#, server.url("/hello"))).await;
    assert_eq!(report.outcome, Ok(r#"{"status": 200, "body": "hello from the test server"}"#.to_string()));
    assert_eq!(report.usage.counter("outbound-http", "requests"), 1);
    // A body goes out, written after the request was handed over.
    let report =
        host.run(&agent, &format!(r#"{{"url":"{}","method":"POST","body":"hello"}}"#, server.url("/hello"))).await;
    assert_eq!(report.outcome, Ok(r#"{"status": 405, "body": ""}"#.to_string()));
    assert_eq!(report.usage.counter("outbound-http", "bytes_sent"), (server.url("/hello").len() + 5) as u64);
    // A redirect comes back as the response.
    let report = host.run(&agent, &format!(r#"{{"url":"{}"}}"#, server.url("/redirect-metadata"))).await;
    assert_eq!(report.outcome, Ok(r#"{"status": 307, "body": ""}"#.to_string()));
    // No rule: refused, never sent, the reason in the log.
    let hits = server.hits();
    let other = format!("http://127.0.0.1:{}/hello", port.wrapping_add(1));
    let report = host.run(&agent, &format!(r#"{{"url":"{other}"}}"#)).await;
    assert_eq!(report.outcome, Ok(r#"{"error": "ErrorCode_HttpRequestDenied"}"#.to_string()));
    assert!(refusal_logged(&report, &format!("(no-rule): no allow rule of this agent's policy matches GET {other}")));
    // The same quota as chimera:agent/outbound-http (4 in the sample policy).
    let report = host.run(&agent, &format!(r#"{{"url":"{}","times":5}}"#, server.url("/hello"))).await;
    assert_eq!(report.outcome, Ok(r#"{"error": "ErrorCode_HttpRequestDenied"}"#.to_string()));
    assert!(refusal_logged(&report, "(quota): this task already sent 4 requests (max_requests)"));
    assert_eq!(server.hits(), hits + 4);
}
