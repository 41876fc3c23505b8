//! Imports that a policy does not grant are refused at load, every one named.

use chimera_host::{LoadError, Verdict};
use chimera_tests::{artifacts, component, host_in, policy};

fn load_error(path: &str, toml: &str) -> LoadError {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    match host.load("agent", &component(path), policy(toml)) {
        Ok(_) => panic!("{path} loaded under {toml:?}"),
        Err(e) => e,
    }
}

fn ungranted(err: &LoadError) -> Vec<(String, String)> {
    match err {
        LoadError::Ungranted { ungranted, .. } => {
            ungranted.iter().map(|u| (u.import.clone(), u.reason.clone())).collect()
        }
        other => panic!("expected an ungranted-imports error, got: {other}"),
    }
}

#[test]
fn a_used_but_ungranted_capability_is_refused_naming_the_import_and_the_section() {
    let err = load_error(artifacts::ECHO, "");
    assert_eq!(
        ungranted(&err),
        [(
            "chimera:agent/logging@0.1.0".to_string(),
            "not granted; add a [capabilities.logging] section to the policy".to_string()
        )]
    );
    let text = err.to_string();
    assert!(text.starts_with("agent `agent` imports 1 interface(s) its policy does not grant:"), "{text}");
    assert!(!text.contains("backtrace") && !text.contains("type-check"), "{text}");
}

#[test]
fn every_ungranted_import_is_listed_not_just_the_first() {
    let err = load_error(artifacts::KV_COUNTER, "");
    let mut names: Vec<String> = ungranted(&err).into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, ["chimera:agent/kv@0.1.0", "chimera:agent/logging@0.1.0"]);
    let err = load_error(artifacts::HTTP_FETCH, "[capabilities.logging]");
    assert_eq!(ungranted(&err)[0].0, "chimera:agent/outbound-http@0.1.0");
    assert!(ungranted(&err)[0].1.contains("[capabilities.outbound_http]"));
}

#[test]
fn a_component_importing_wasi_filesystem_is_refused_at_load() {
    let err = load_error(artifacts::FS_ESCAPE, "");
    let list = ungranted(&err);
    assert!(!list.is_empty());
    for (name, reason) in &list {
        assert!(name.starts_with("wasi:filesystem/"), "unexpected refusal of {name}");
        assert_eq!(
            reason,
            "filesystem access is never granted to agents; store data through chimera:agent/kv \
             (or set [wasi] filesystem = \"inert\" to link it with no directory behind it)"
        );
    }
    assert!(list.iter().any(|(n, _)| n.starts_with("wasi:filesystem/preopens@")), "{list:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inert_filesystem_loads_and_every_path_fails_inside_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let host = chimera_tests::host_in(dir.path());
    let agent = host
        .load("fs-escape", &chimera_tests::component(artifacts::FS_ESCAPE), policy("[wasi]\nfilesystem = \"inert\"\n"))
        .unwrap();
    // No preopened directory: wasi-libc has nowhere to resolve the path from.
    let report = host.run(&agent, "").await;
    assert_eq!(
        report.outcome,
        Err(chimera_host::TaskError::Agent {
            message: "No such file or directory (os error 44)".into(),
            retryable: false
        })
    );
}

#[test]
fn an_interface_no_capability_provides_is_refused() {
    let err = load_error(artifacts::UNDECLARED_IMPORT, "");
    assert_eq!(
        ungranted(&err),
        [(
            "attack:evil/secrets".to_string(),
            "no capability of this host provides `attack:evil/secrets`, so no policy can grant it".to_string()
        )]
    );
}

#[test]
fn wasi_baseline_can_be_withdrawn_by_policy() {
    let err = load_error(artifacts::WORD_COUNT, "[wasi]\ncli = false\nclocks = false\n");
    let list = ungranted(&err);
    assert!(list
        .iter()
        .any(|(n, r)| n.starts_with("wasi:cli/stdout@") && r == "not granted; set [wasi] cli = true in the policy"));
    assert!(list.iter().any(|(n, _)| n.starts_with("wasi:io/streams@")));
    assert!(list.iter().all(|(n, _)| n.starts_with("wasi:cli/") || n.starts_with("wasi:io/")), "{list:?}");
}

#[test]
fn audit_marks_each_import_without_running_anything() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let report = host.audit("fs", &component(artifacts::FS_ESCAPE), &policy("")).unwrap();
    assert!(!report.runnable);
    assert!(report.imports.iter().any(|d| d.import.starts_with("wasi:cli/stdout@") && d.verdict == Verdict::Granted));
    assert!(report.refused().all(|d| d.capability == "wasi-filesystem"));
    assert_eq!(report.exports, ["run"]);
}

#[test]
fn bad_components_get_errors_that_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let err = host.load("x", b"definitely not wasm", policy("")).err().unwrap().to_string();
    assert_eq!(
        err,
        "x is not a valid WebAssembly component: it does not start with the wasm magic bytes. Build agents with \
         `cargo build --target wasm32-wasip2 --release` (or wrap a core module with `chimera componentize`)"
    );
    let err = host.load("x", b"\0asm\x01\0\0\0", policy("")).err().unwrap().to_string();
    assert!(err.contains("it is a core wasm module, not a component; wrap it with `chimera componentize"), "{err}");
    let err = host.load("x", b"\0asm\x0d\0\x01\0\xff\xff", policy("")).err().unwrap().to_string();
    assert!(err.starts_with("x is not a valid WebAssembly component: "), "{err}");
}

#[test]
fn policy_limits_beyond_the_host_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let err = host
        .load("echo", &component(artifacts::ECHO), policy("[capabilities.logging]\n[limits]\nmemory_mib = 2048\n"))
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "agent `echo`: the policy asks for memory_mib = 2048, but this host's instance pool allows at most 1024 MiB per instance"
    );
}
