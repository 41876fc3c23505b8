//! `chimera new --lang rust|python|js NAME` makes a project that builds and
//! runs as created: each project's own test script builds it and runs it
//! through the host, checking its output and that bad input fails the task.

use chimera_tests::{artifacts, chimera_bin, repo_file};
use std::path::Path;
use std::process::Command;

fn create_build_and_test(lang: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let created =
        Command::new(chimera_bin()).args(["new", "--lang", lang, name]).current_dir(dir.path()).output().unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let project = dir.path().join(name);
    for file in ["policy.toml", "build.sh", "test.sh", "README.md"] {
        assert!(project.join(file).is_file(), "{lang}: no {file}");
    }
    let mut test = Command::new(project.join("test.sh"));
    if lang == "rust" {
        // The sample agents' lock file and build folder: the same dependency
        // versions, already compiled (a fresh project resolves them itself).
        std::fs::copy(repo_file("sample-agents/Cargo.lock"), project.join("Cargo.lock")).unwrap();
        let guests = Path::new(artifacts::ECHO).ancestors().nth(3).unwrap();
        test.env("CARGO_TARGET_DIR", guests);
    }
    let out = test.output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{lang}: {stdout}\n{stderr}");
    assert!(
        stdout
            .contains(&format!(r#"ok: {name} answered {{"greeting":"Hello, test!"}}; an empty input failed the task"#)),
        "{lang}: {stdout}"
    );
    assert!(project.join(format!("{name}.wasm")).is_file());
    // A second `new` of the same name refuses rather than overwrite it.
    let again =
        Command::new(chimera_bin()).args(["new", "--lang", lang, name]).current_dir(dir.path()).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[test]
fn a_new_rust_agent_builds_and_runs() {
    create_build_and_test("rust", "greeter-rs");
}

#[test]
fn a_new_python_agent_builds_and_runs() {
    create_build_and_test("python", "greeter-py");
}

#[test]
fn a_new_javascript_agent_builds_and_runs() {
    create_build_and_test("js", "greeter-js");
}
