//! What an auditor signs off with: warnings for risky grants, digests
//! pinned in the serve config and in `tasks` grants, the whole deployment's
//! call graph and its worst case, and policy diffs in capability terms.

use chimera_tests::{agent_entry, artifacts, chimera_bin, component, host_in, metric, policy, policy_file, repo_file};
use chimera_tests::{serve_refused, Api, DaemonProcess};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

fn chimera(args: &[&str], dir: &Path) -> Output {
    Command::new(chimera_bin()).args(args).env("CHIMERA_DATA_DIR", dir.join("data")).output().expect("chimera runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stderr)))
}

fn sha256(path: &str) -> String {
    chimera_host::audit::sha256_hex(&std::fs::read(path).unwrap())
}

/// Each warning as (code, key), sorted.
fn codes(warnings: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = warnings
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["code"].as_str().unwrap().to_string(), w["key"].as_str().unwrap().to_string()))
        .collect();
    v.sort();
    v
}

const RISKY: &str = r#"
[limits]
memory_mib = 1024
[capabilities.logging]
[capabilities.kv]
[capabilities.outbound_http]
max_requests = 1000
[[capabilities.outbound_http.allow]]
url = "http://10.0.0.0/8"
[[capabilities.outbound_http.allow]]
url = "http://169.254.169.254/latest/"
allow_private = true
[[capabilities.outbound_http.allow]]
url = "https://*.internal/"
[[capabilities.outbound_http.allow]]
url = "https://*.com/"
[[capabilities.outbound_http.allow]]
url = "https://*.example.org/"
allow_private = true
[[capabilities.outbound_http.allow]]
url = "http://metadata.google.internal/"
[[capabilities.outbound_http.allow]]
url = "https://api.example.com/v1/"
methods = ["GET", "POST"]
"#;

#[test]
fn each_risky_grant_is_warned_of_by_key_and_deny_warnings_fails_the_audit() {
    let dir = tempfile::tempdir().unwrap();
    let risky = policy_file(dir.path(), "risky", RISKY);
    let out = chimera(&["audit", artifacts::HTTP_FETCH, "--policy", &risky, "--json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "warnings alone do not refuse: {}", text(&out.stderr));
    let report = json_of(&out);
    assert_eq!(report["runnable"], true);
    let rule = |i: usize| format!("capabilities.outbound_http.allow[{i}]");
    let mut expected: Vec<(String, String)> = [
        ("high-limit", "limits.memory_mib".to_string()),
        ("high-limit", "capabilities.outbound_http.max_requests".to_string()),
        ("unused-grant", "capabilities.kv".to_string()),
        ("never-matches", rule(0)),
        ("network-range", rule(0)),
        ("allow-private", rule(1)),
        ("metadata-address", rule(1)),
        ("private-wildcard", rule(2)),
        ("broad-wildcard", rule(3)),
        ("allow-private", rule(4)),
        ("private-wildcard", rule(4)),
        ("metadata-address", rule(5)),
    ]
    .into_iter()
    .map(|(c, k)| (c.to_string(), k))
    .collect();
    expected.sort();
    // The plain public rule (allow[6]) and the granted, imported logging warn of nothing.
    assert_eq!(codes(&report["warnings"]), expected);
    let range = report["warnings"].as_array().unwrap().iter().find(|w| w["code"] == "network-range").unwrap();
    assert_eq!(
        range["message"],
        "`http://10.0.0.0/8` is the one host 10.0.0.0 with the path prefix `/8`, not a network range: rules name \
         hosts; list each host (or a `*.` name) instead"
    );

    let table = chimera(&["audit", artifacts::HTTP_FETCH, "--policy", &risky, "--deny-warnings"], dir.path());
    assert_eq!(table.status.code(), Some(1), "--deny-warnings makes a warning fail the audit");
    let stdout = text(&table.stdout);
    assert!(stdout.contains("warning [metadata-address] capabilities.outbound_http.allow[5]: `http://metadata.google.internal/` names a cloud metadata"), "{stdout}");
    assert!(stdout.contains("verdict: runnable: every import is granted; 12 warning(s)"), "{stdout}");

    // A policy with nothing risky passes --deny-warnings.
    let clean = chimera(
        &[
            "audit",
            artifacts::KV_COUNTER,
            "--policy",
            repo_file("sample-agents/kv-counter/policy.toml").to_str().unwrap(),
            "--deny-warnings",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean.stdout));
    assert_eq!(json_of(&clean)["warnings"], json!([]));
}

#[test]
fn a_grant_of_a_capability_the_component_imports_is_not_unused() {
    let dir = tempfile::tempdir().unwrap();
    // word-count imports no capability: each of these is unused; logging and kv on kv-counter are not.
    let p = policy_file(dir.path(), "p", "[capabilities.logging]\n[capabilities.kv]\n[capabilities.tasks]\n");
    let report = json_of(&chimera(&["audit", artifacts::WORD_COUNT, "--policy", &p, "--json"], dir.path()));
    let unused = |k: &str| ("unused-grant".to_string(), k.to_string());
    assert_eq!(
        codes(&report["warnings"]),
        [unused("capabilities.kv"), unused("capabilities.logging"), unused("capabilities.tasks")]
    );
    let report = json_of(&chimera(&["audit", artifacts::KV_COUNTER, "--policy", &p, "--json"], dir.path()));
    assert_eq!(codes(&report["warnings"]), [unused("capabilities.tasks")]);
}

#[test]
fn a_pin_that_is_not_a_sha256_is_refused_when_the_policy_or_config_is_read() {
    let err = chimera_host::Policy::from_toml("[capabilities.tasks]\nallow = [\"word-count@sha256:ABC\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("policy key `capabilities.tasks.allow[0]` pins the digest \"ABC\", which is not a SHA-256"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\nsha256 = \"1234\"\n",
        agent_entry("echo", artifacts::ECHO, "../sample-agents/echo/policy.toml", 1).trim_end()
    );
    let (code, stderr) = serve_refused(dir.path(), &config, "127.0.0.1:0");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("agent `echo`: sha256 = \"1234\" is not a SHA-256 in lower-case hex"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_runs_only_the_pinned_component_and_policy_at_start_and_at_reload() {
    let dir = tempfile::tempdir().unwrap();
    let echo_policy = policy_file(dir.path(), "echo", "[capabilities.logging]\n");
    let pinned = |component: &str, pin: &str, policy_pin: &str| {
        format!(
            "data_dir = \"data\"\nmax_instances = 8\n\n{}\nsha256 = \"{pin}\"\npolicy_sha256 = \"{policy_pin}\"\n",
            agent_entry("echo", component, &echo_policy, 1).trim_end()
        )
    };
    let (echo_sha, wc_sha, policy_sha) = (sha256(artifacts::ECHO), sha256(artifacts::WORD_COUNT), sha256(&echo_policy));

    // Another component under the pinned one's name: refused before it is compiled.
    let (code, stderr) =
        serve_refused(dir.path(), &pinned(artifacts::WORD_COUNT, &echo_sha, &policy_sha), "127.0.0.1:0");
    assert_eq!(code, Some(2), "{stderr}");
    let expected = format!(
        "has sha256 {wc_sha}, but the config pins sha256 = \"{echo_sha}\"; the daemon runs only what was approved"
    );
    assert!(stderr.contains(&expected), "{stderr}");
    // A policy file edited after its pin.
    let (code, stderr) = serve_refused(dir.path(), &pinned(artifacts::ECHO, &echo_sha, &wc_sha), "127.0.0.1:0");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr
            .contains(&format!("its policy {echo_policy} has sha256 {policy_sha}, but the config pins policy_sha256")),
        "{stderr}"
    );

    // Both as approved: it runs.
    let daemon = DaemonProcess::start(dir.path(), &pinned(artifacts::ECHO, &echo_sha, &policy_sha));
    let api = Api::new(&daemon);
    assert_eq!(run_echo(&api).await["output"], r#"{"text":"PINNED","op":"upper"}"#);

    // A reload bringing another component under the same pin is refused whole; echo stays.
    std::fs::write(dir.path().join("chimera.toml"), pinned(artifacts::WORD_COUNT, &echo_sha, &policy_sha)).unwrap();
    let (code, body) = api.post("/v1/admin/reload").await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains(&format!("has sha256 {wc_sha}, but the config pins sha256")), "{body}");
    assert_eq!(
        run_echo(&api).await["output"],
        r#"{"text":"PINNED","op":"upper"}"#,
        "the refused reload changed the agent"
    );
    // The new pin with its component: accepted.
    std::fs::write(dir.path().join("chimera.toml"), pinned(artifacts::WORD_COUNT, &wc_sha, &policy_sha)).unwrap();
    let (code, body) = api.post("/v1/admin/reload").await;
    assert_eq!(code, 200, "{body}");
    let id = api.submit_ok(json!({"agent": "echo", "input": {"text": "a b a"}})).await;
    let output = api.wait_final(&id).await["output"].as_str().map(str::to_string).unwrap();
    assert!(output.starts_with(r#"{"words":3,"#), "the re-pinned component runs: {output}");
}

async fn run_echo(api: &Api) -> Value {
    let id = api.submit_ok(json!({"agent": "echo", "input": {"text": "pinned", "op": "upper"}})).await;
    api.wait_final(&id).await
}

fn pinned_report_policy(digest: &str) -> chimera_host::Policy {
    policy(&format!("[capabilities.logging]\n[capabilities.tasks]\nallow = [\"word-count@sha256:{digest}\"]\n"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_to_a_callee_pinned_to_another_digest_is_denied_and_the_pinned_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let wc = Arc::new(host.load("word-count", &component(artifacts::WORD_COUNT), policy("")).unwrap());
    host.register(wc.clone());
    let input = r#"{"text":"to be or not to be"}"#;

    let wrong = sha256(artifacts::ECHO);
    let caller = host.load("text-report", &component(artifacts::TEXT_REPORT), pinned_report_policy(&wrong)).unwrap();
    let r = host.run(&caller, input).await;
    let error = r.outcome.unwrap_err().to_string();
    let expected = format!(
        "this agent's policy pins `word-count` to sha256:{wrong}, but the `word-count` on this host is sha256:{}",
        wc.digest()
    );
    assert!(error.contains(&expected), "{error}");
    assert!(r.usage.callees.is_empty(), "the callee ran: {:?}", r.usage.callees);
    assert_eq!(
        metric(&host, r#"chimera_denials_total{agent="text-report",capability="tasks",reason="digest-mismatch"}"#),
        Some(1.0)
    );

    let caller =
        host.load("text-report", &component(artifacts::TEXT_REPORT), pinned_report_policy(wc.digest())).unwrap();
    let r = host.run(&caller, input).await;
    assert_eq!(
        r.outcome,
        Ok(r#"{"summary":"6 words on 1 line(s); most frequent: be (2), to (2), not (1)"}"#.to_string())
    );
}

#[test]
fn the_daemon_refuses_a_deployment_whose_callee_is_not_the_pinned_component() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = sha256(artifacts::ECHO);
    let report = policy_file(
        dir.path(),
        "report",
        &format!("[capabilities.logging]\n[capabilities.tasks]\nallow = [\"word-count@sha256:{wrong}\"]\n"),
    );
    let wc = policy_file(dir.path(), "wc", "");
    let config = format!(
        "data_dir = \"data\"\n{}{}",
        agent_entry("text-report", artifacts::TEXT_REPORT, &report, 1),
        agent_entry("word-count", artifacts::WORD_COUNT, &wc, 1)
    );
    let (code, stderr) = serve_refused(dir.path(), &config, "127.0.0.1:0");
    assert_eq!(code, Some(2), "{stderr}");
    let expected = format!(
        "agent `text-report` pins its callee `word-count` to sha256:{wrong}, but the `word-count` configured here is sha256:{}",
        sha256(artifacts::WORD_COUNT)
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn the_deployment_audit_bounds_each_call_chain_and_finds_shared_namespaces_and_bad_pins() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // a (fan-out 3, depth 2) -> b (fan-out 2, depth 5) -> c; loop: fan-out 2, depth 3, calling itself.
    let a = policy_file(d, "a", "[limits]\nmemory_mib = 10\ncpu_ms = 100\ntimeout_ms = 7000\n[capabilities.tasks]\nallow = [\"b\", \"missing\"]\nmax_fan_out = 3\nmax_depth = 2\n");
    let b = policy_file(d, "b", "[limits]\nmemory_mib = 20\ncpu_ms = 20\n[capabilities.tasks]\nallow = [\"c\"]\nmax_fan_out = 2\nmax_depth = 5\n");
    let c = policy_file(d, "c", "[limits]\nmemory_mib = 30\ncpu_ms = 3\n");
    let l = policy_file(
        d,
        "loop",
        "[limits]\ncpu_ms = 1\n[capabilities.tasks]\nallow = [\"loop\"]\nmax_fan_out = 2\nmax_depth = 3\n",
    );
    let kv = |ns: &str, ro: bool| {
        format!("[capabilities.logging]\n[capabilities.kv]\nnamespace = \"{ns}\"\nread_only = {ro}\n")
    };
    let k1 = policy_file(d, "k1", &kv("shared", false));
    let k2 = policy_file(d, "k2", &kv("shared", true));
    let config = format!(
        "{}{}{}{}{}{}",
        agent_entry("a", artifacts::FORK_BOMB, &a, 1),
        agent_entry("b", artifacts::FORK_BOMB, &b, 1),
        agent_entry("c", artifacts::WORD_COUNT, &c, 1),
        agent_entry("loop", artifacts::FORK_BOMB, &l, 1),
        agent_entry("k1", artifacts::KV_COUNTER, &k1, 1),
        agent_entry("k2", artifacts::KV_COUNTER, &k2, 1),
    );
    let path = d.join("chimera.toml");
    std::fs::write(&path, &config).unwrap();
    let out = chimera(&["audit", "--config", path.to_str().unwrap(), "--json"], d);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let audit = json_of(&out);
    assert_eq!(audit["schema_version"], 1);
    assert_eq!(audit["runnable"], true);
    let chain = |root: &str| audit["chains"].as_array().unwrap().iter().find(|c| c["root"] == root).unwrap().clone();
    // a: 1 + 3 × (b: 1 + 2 × c) = 10 tasks; b's own depth 5 is cut to a's 2.
    let a_chain = chain("a");
    assert_eq!(
        (&a_chain["worst_case_tasks"], &a_chain["max_depth"], &a_chain["peak_memory_mib"], &a_chain["total_cpu_ms"]),
        (&json!(10), &json!(2), &json!(60), &json!(100 + 3 * (20 + 2 * 3)))
    );
    assert_eq!((&a_chain["deepest_path"], &a_chain["timeout_ms"]), (&json!(["a", "b", "c"]), &json!(7000)));
    // b alone goes to its own depth, but c calls nothing: 1 + 2 × 1.
    assert_eq!(chain("b")["worst_case_tasks"], 3);
    // A loop stops at its depth: 1 + 2 × (1 + 2 × (1 + 2)).
    let looped = chain("loop");
    assert_eq!(
        (&looped["worst_case_tasks"], &looped["max_depth"], &looped["total_cpu_ms"]),
        (&json!(15), &json!(3), &json!(15))
    );
    assert_eq!(looped["peak_memory_mib"], 4 * 64);
    let calls: Vec<(String, String, String)> = audit["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["caller"].as_str().unwrap().into(),
                c["callee"].as_str().unwrap().into(),
                c["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    let call = |a: &str, b: &str, s: &str| (a.to_string(), b.to_string(), s.to_string());
    assert_eq!(
        calls,
        [
            call("a", "b", "ok"),
            call("a", "missing", "unknown-callee"),
            call("b", "c", "ok"),
            call("loop", "loop", "ok")
        ]
    );
    assert_eq!(audit["shared_namespaces"], json!([{"namespace": "shared", "agents": [["k1", true], ["k2", false]]}]));
    assert_eq!(
        codes(&audit["warnings"]),
        [
            ("shared-namespace".to_string(), "namespace shared".to_string()),
            ("unknown-callee".to_string(), "a: capabilities.tasks.allow".to_string())
        ]
    );
    let shared = audit["warnings"].as_array().unwrap().iter().find(|w| w["code"] == "shared-namespace").unwrap();
    assert_eq!(shared["message"], "the KV namespace `shared` is granted to k1, k2: k1 writes what the others read");
    let out = chimera(&["audit", "--config", path.to_str().unwrap(), "--deny-warnings"], d);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let table = text(&out.stdout);
    assert!(table.contains("  a: 10 task(s) to depth 2; memory at once 60 MiB (a -> b -> c); cpu 178 ms in all; 0 HTTP request(s); all within 7000 ms"), "{table}");

    // Pin b's callee to the wrong component: the deployment is refused, naming it.
    std::fs::write(
        &b,
        std::fs::read_to_string(&b).unwrap().replace("\"c\"", &format!("\"c@sha256:{}\"", sha256(artifacts::ECHO))),
    )
    .unwrap();
    let out = chimera(&["audit", "--config", path.to_str().unwrap(), "--json"], d);
    assert_eq!(out.status.code(), Some(1));
    let audit = json_of(&out);
    assert_eq!(audit["runnable"], false);
    let problem = audit["problems"][0].as_str().unwrap();
    assert!(problem.starts_with("`b` pins its callee `c` to sha256:"), "{problem}");
    let edge = audit["calls"].as_array().unwrap().iter().find(|c| c["caller"] == "b").unwrap();
    assert_eq!(
        (&edge["status"], &edge["callee_sha256"]),
        (&json!("digest-mismatch"), &json!(sha256(artifacts::WORD_COUNT)))
    );
    // The pinned callee no longer counts in the bound: a reaches only b.
    assert_eq!(chain("a")["worst_case_tasks"], 10, "the first audit's figure");
    let a_chain = audit["chains"].as_array().unwrap().iter().find(|c| c["root"] == "a").unwrap();
    assert_eq!(a_chain["worst_case_tasks"], 4);

    // A config that pins c to another component: the audit names both digests.
    let c_entry = agent_entry("c", artifacts::WORD_COUNT, &c, 1);
    let pinned =
        c_entry.replace("max_concurrency", &format!("sha256 = \"{}\"\nmax_concurrency", sha256(artifacts::ECHO)));
    std::fs::write(&path, config.replace(&c_entry, &pinned)).unwrap();
    let out = chimera(&["audit", "--config", path.to_str().unwrap(), "--json"], d);
    assert_eq!(out.status.code(), Some(1));
    let audit = json_of(&out);
    let c_audit = audit["agents"].as_array().unwrap().iter().find(|a| a["name"] == "c").unwrap().clone();
    assert_eq!(c_audit["component_pin"], "mismatch", "{c_audit}");
    assert!(audit["problems"].as_array().unwrap().iter().any(|p| p
        == &json!(format!(
            "agent `c`: its component has sha256 {}, but the config pins sha256 = \"{}\"",
            sha256(artifacts::WORD_COUNT),
            sha256(artifacts::ECHO)
        ))));
}

#[test]
fn the_diff_of_two_policies_names_what_the_agent_gains_and_loses() {
    let dir = tempfile::tempdir().unwrap();
    let old = policy_file(
        dir.path(),
        "old",
        "[capabilities.logging]\n[capabilities.kv]\n[capabilities.outbound_http]\n[[capabilities.outbound_http.allow]]\nurl = \"https://old.example/\"\n[[capabilities.outbound_http.allow]]\nurl = \"https://kept.example/\"\n",
    );
    let new = policy_file(
        dir.path(),
        "new",
        "[limits]\nmemory_mib = 128\n[capabilities.kv]\nread_only = true\nmax_keys = 50\n[capabilities.outbound_http]\ntimeout_ms = 1000\n[[capabilities.outbound_http.allow]]\nurl = \"https://kept.example/\"\nmethods = [\"GET\", \"POST\"]\n[[capabilities.outbound_http.allow]]\nurl = \"https://api.x/\"\n[capabilities.tasks]\nallow = [\"echo\"]\n",
    );
    let out = chimera(&["audit", "--diff", &old, &new], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().skip(1).map(str::to_string).collect();
    assert_eq!(
        lines,
        [
            "memory 64 → 128 MiB",
            "loses logging",
            "loses kv write (now read-only)",
            "kv: max_keys 10000 → 50",
            "outbound-http to https://kept.example/: gains POST",
            "gains outbound-http to https://api.x/ GET",
            "loses outbound-http to https://old.example/ GET",
            "outbound-http: timeout_ms 5000 → 1000",
            "gains tasks",
            "  may call echo; 4 calls per task, depth 2, 100 calls/s",
        ]
    );
    // Against the component: the imports whose verdict changes.
    let out = chimera(&["audit", "--diff", &old, &new, artifacts::KV_COUNTER, "--json"], dir.path());
    let diff = json_of(&out);
    let changes = diff["changes"][""].as_array().unwrap();
    assert!(changes.contains(&json!("import chimera:agent/logging@0.1.0: granted → refused")), "{diff}");
    assert!(changes.contains(&json!("the component is now REFUSED (it loaded before)")), "{diff}");
    // The same policy: nothing.
    let out = chimera(&["audit", "--diff", &old, &old], dir.path());
    assert!(text(&out.stdout).ends_with("no change in what any agent may do\n"), "{}", text(&out.stdout));
}

#[test]
fn the_diff_of_two_deployments_names_agents_components_and_pins() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let echo = policy_file(d, "echo", "[capabilities.logging]\n");
    let write = |name: &str, config: String| {
        let path = d.join(name);
        std::fs::write(&path, config).unwrap();
        path.display().to_string()
    };
    let old = write(
        "old.toml",
        format!("{}{}", agent_entry("echo", artifacts::ECHO, &echo, 1), agent_entry("gone", artifacts::ECHO, &echo, 1)),
    );
    let wc = policy_file(d, "wc", "[limits]\ncpu_ms = 500\n");
    let new = write(
        "new.toml",
        format!(
            "{}{}",
            agent_entry("echo", artifacts::WORD_COUNT, &echo, 2),
            agent_entry("wc", artifacts::WORD_COUNT, &wc, 1)
        ),
    );
    let out = chimera(&["audit", "--diff", &old, &new, "--json"], d);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let changes = &json_of(&out)["changes"];
    let (echo_sha, wc_sha) = (sha256(artifacts::ECHO), sha256(artifacts::WORD_COUNT));
    assert_eq!(
        changes["echo"],
        json!([
            format!("component sha256 {echo_sha} → {wc_sha} (a different component: audit it)"),
            "max_concurrency 1 → 2"
        ])
    );
    assert_eq!(changes["gone"], json!(["removed"]));
    assert_eq!(changes["wc"], json!([format!("added, component sha256 {wc_sha}"), "cpu 2000 → 500 ms"]));
}

#[test]
fn the_examples_of_docs_auditing_md_audit_as_it_shows() {
    let dir = tempfile::tempdir().unwrap();
    let file = |p: &str| repo_file(p).display().to_string();
    let risky = file("docs/audit-examples/http-fetch-risky.toml");
    let out = chimera(&["audit", artifacts::HTTP_FETCH, "--policy", &risky, "--json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got: Vec<String> = codes(&json_of(&out)["warnings"]).into_iter().map(|(code, _)| code).collect();
    let want = ["allow-private", "high-limit", "metadata-address", "network-range", "never-matches", "unused-grant"];
    assert_eq!(got, want);

    // The shared-namespace config, pointed at the built components.
    let config = std::fs::read_to_string(file("docs/audit-examples/shared-namespace.toml")).unwrap();
    let config = config
        .replace("../../target/guests/wasm32-wasip2/release/kv_counter.wasm", artifacts::KV_COUNTER)
        .replace("../../sample-agents/", &file("sample-agents/"))
        .replace("\"counter-dashboard.toml\"", &format!("{:?}", file("docs/audit-examples/counter-dashboard.toml")));
    let path = dir.path().join("chimera.toml");
    std::fs::write(&path, config).unwrap();
    let out = chimera(&["audit", "--config", path.to_str().unwrap(), "--deny-warnings"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("  counters: kv-counter (read-write), counter-dashboard (read-only)"), "{table}");
    assert!(table.contains("verdict: runnable: `chimera serve` would start every agent"), "{table}");
}
