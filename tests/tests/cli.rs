//! The `chimera` binary as users run it.

use chimera_tests::{artifacts, chimera_bin};
use std::path::Path;
use std::process::{Command, Output};

fn chimera(args: &[&str], data_dir: &Path) -> Output {
    Command::new(chimera_bin()).args(args).env("CHIMERA_DATA_DIR", data_dir).output().expect("chimera runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn audit_of_an_ungranted_import_exits_non_zero_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = chimera(&["audit", artifacts::ECHO], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("chimera:agent/logging@0.1.0")).expect("the import is listed");
    assert!(line.contains("REFUSED") && line.contains("[capabilities.logging]"), "{line}");
    assert!(stdout.contains("verdict: REFUSED: 1 import(s) not granted"), "{stdout}");
}

#[test]
fn audit_json_is_valid_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, "[capabilities.logging]\n[capabilities.kv]\nnamespace = \"counter\"\n").unwrap();
    let out = chimera(&["audit", artifacts::KV_COUNTER, "--policy", policy.to_str().unwrap(), "--json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(report["schema_version"], 1);
    // Each key once (a duplicate would parse, the last one winning).
    assert_eq!(text(&out.stdout).matches("\"stack_kib\"").count(), 1);
    assert_eq!(report["runnable"], true);
    let kv = report["grants"].as_array().unwrap().iter().find(|g| g["capability"] == "kv").unwrap();
    assert_eq!((kv["granted"].as_bool(), kv["section"].as_str()), (Some(true), Some("capabilities.kv")));
    assert_eq!(kv["grant"]["namespace"], "counter");
    assert_eq!(kv["summary"][0], "kv namespace: counter");
    let http = report["grants"].as_array().unwrap().iter().find(|g| g["capability"] == "outbound-http").unwrap();
    assert_eq!((http["granted"].as_bool(), http["grant"].is_null()), (Some(false), true));
    assert_eq!(report["limits"]["stack_kib"], 512);
    assert_eq!(report["component_sha256"].as_str().map(str::len), Some(64));
    // The policy file's digest: what sha256sum prints for it.
    let sha256sum = std::process::Command::new("sha256sum").arg(&policy).output().unwrap();
    let expected = text(&sha256sum.stdout).split_whitespace().next().unwrap().to_string();
    assert_eq!(report["policy_sha256"], expected);
    let kv = report["imports"].as_array().unwrap().iter().find(|i| i["import"] == "chimera:agent/kv@0.1.0").unwrap();
    assert_eq!((kv["verdict"].as_str(), kv["capability"].as_str()), (Some("granted"), Some("kv")));
    assert_eq!(report["limits"]["memory_mib"], 64);

    let out = chimera(&["audit", artifacts::FS_ESCAPE, "--json"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(report["runnable"], false);
    assert_eq!(report["policy_sha256"], serde_json::Value::Null, "no policy file, no digest");
    assert!(report["imports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["verdict"] == "refused" && i["capability"] == "wasi-filesystem"));
}

#[test]
fn audit_table_gives_the_wasi_baseline_one_row_per_package_and_json_each_interface() {
    let dir = tempfile::tempdir().unwrap();
    let table = text(&chimera(&["audit", artifacts::WORD_COUNT], dir.path()).stdout);
    let json: serde_json::Value =
        serde_json::from_slice(&chimera(&["audit", artifacts::WORD_COUNT, "--json"], dir.path()).stdout).unwrap();
    let cli_imports = json["imports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["import"].as_str().unwrap().starts_with("wasi:cli/"))
        .count();
    assert!(cli_imports > 1, "word-count imports several wasi:cli interfaces: {json}");
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("wasi:cli")).collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert!(rows[0].contains(&format!(" ({cli_imports} interfaces)")) && rows[0].contains("granted"), "{}", rows[0]);
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["audit", artifacts::WORD_COUNT, "--json"][..], &["audit", artifacts::WORD_COUNT][..]] {
        let mut child = Command::new(chimera_bin())
            .args(args)
            .env("CHIMERA_DATA_DIR", dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the audit is written (as `| head` does).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stderr), "", "{args:?}");
    }
}

#[test]
fn run_prints_the_output_and_kv_persists_between_runs() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("counter.toml");
    std::fs::write(&policy, "[capabilities.logging]\n[capabilities.kv]\n").unwrap();
    for expected in [1, 2] {
        let out = chimera(
            &["run", artifacts::KV_COUNTER, "--policy", policy.to_str().unwrap(), "--input", r#"{"key":"runs"}"#],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), format!(r#"{{"key":"runs","count":{expected}}}"#));
        assert!(
            text(&out.stderr).contains(&format!("[kv_counter info] counter runs is now {expected}")),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn run_reports_refusals_and_limit_hits_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let out = chimera(&["run", artifacts::HTTP_FETCH, "--input", "{}"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("chimera:agent/outbound-http@0.1.0: not granted; add a [capabilities.outbound_http] section"),
        "{stderr}"
    );
    assert!(!stderr.contains("backtrace"), "{stderr}");

    let policy = dir.path().join("small.toml");
    std::fs::write(&policy, "[limits]\nmemory_mib = 4\n").unwrap();
    let out = chimera(&["run", artifacts::MEMORY_BOMB, "--policy", policy.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(
        "memory limit exceeded: the instance asked for 4259840 bytes of linear memory; the limit is 4194304"
    ));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits]\ncpu_ms = -5\n").unwrap();
    let out = chimera(&["run", artifacts::ECHO, "--policy", bad.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("bad.toml: policy is not valid TOML (line 2)"), "{}", text(&out.stderr));
}

#[test]
fn run_json_reports_usage() {
    let dir = tempfile::tempdir().unwrap();
    let out = chimera(&["run", artifacts::WORD_COUNT, "--json", "--input", r#"{"text":"a b a"}"#], dir.path());
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"]["Ok"], r#"{"words":3,"lines":1,"chars":5,"top":[["a",2],["b",1]]}"#);
    assert!(report["usage"]["peak_memory_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn run_hosts_the_agents_a_run_calls_from_agent_flags_or_a_serve_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let policy =
        |name: &str| chimera_tests::repo_file(&format!("sample-agents/{name}/policy.toml")).display().to_string();
    let input = r#"{"text":"the cat and the hat"}"#;
    let want = r#"{"summary":"5 words on 1 line(s); most frequent: the (2), and (1), cat (1)"}"#;

    // Alone, the call finds no callee, and the error says how to give it one.
    let out = chimera(&["run", artifacts::TEXT_REPORT, "--policy", &policy("text-report"), "--input", input], d);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no agent `word-count` runs on this host") && stderr.contains("--agent word-count="),
        "{stderr}"
    );

    // --agent NAME=WASM:POLICY loads the callee beside it.
    let callee = format!("word-count={}:{}", artifacts::WORD_COUNT, policy("word-count"));
    let args =
        ["run", artifacts::TEXT_REPORT, "--policy", &policy("text-report"), "--agent", &callee, "--input", input];
    let out = chimera(&args, d);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), want);

    // --config loads every agent of a serve config; the positional names the one to run.
    let config = d.join("chimera.toml");
    let entries = [("text-report", artifacts::TEXT_REPORT), ("word-count", artifacts::WORD_COUNT)]
        .map(|(name, wasm)| chimera_tests::agent_entry(name, wasm, &policy(name), 1))
        .concat();
    std::fs::write(&config, format!("data_dir = \"data\"\n{entries}")).unwrap();
    let out = chimera(&["run", "--config", config.to_str().unwrap(), "text-report", "--input", input], d);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), want);
    let out = chimera(&["run", "--config", config.to_str().unwrap(), "nope"], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("the config names no agent `nope` (with --config, give the name of one of its agents: text-report, word-count)"),
        "{}",
        text(&out.stderr)
    );
    // A malformed --agent is refused naming the form.
    let out = chimera(&["run", artifacts::TEXT_REPORT, "--agent", "word-count"], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("write NAME=WASM or NAME=WASM:POLICY"), "{}", text(&out.stderr));
}
