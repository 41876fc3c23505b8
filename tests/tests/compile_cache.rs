//! The compiled-component cache: reused across hosts, and a corrupt or
//! stale entry is detected, discarded and rebuilt, never trusted.

use chimera_tests::{artifacts, component, host_in, metric, policy};
use std::path::{Path, PathBuf};

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("compiled")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

async fn load_and_run(dir: &Path) -> (chimera_host::Host, String) {
    let host = host_in(dir);
    let agent = host.load("echo", &component(artifacts::ECHO), policy("[capabilities.logging]")).unwrap();
    let out = host.run(&agent, r#"{"text":"c","op":"upper"}"#).await.outcome.unwrap();
    (host, out)
}

#[tokio::test(flavor = "multi_thread")]
async fn compiled_components_are_reused_and_bad_entries_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let expected = r#"{"text":"C","op":"upper"}"#;

    let (host, out) = load_and_run(dir.path()).await;
    assert_eq!(out, expected);
    assert_eq!(metric(&host, r#"chimera_compile_cache_total{result="miss"}"#), Some(1.0));
    let files = entries(dir.path());
    assert_eq!(files.len(), 1);
    let entry = files[0].clone();
    assert!(entry.extension().is_some_and(|e| e == "cwasm"));

    // A new host (a restart) uses the entry.
    let (host, out) = load_and_run(dir.path()).await;
    assert_eq!(out, expected);
    assert_eq!(metric(&host, r#"chimera_compile_cache_total{result="hit"}"#), Some(1.0));
    assert_eq!(metric(&host, r#"chimera_compile_cache_total{result="miss"}"#), None);

    // One flipped byte: the checksum catches it; the component is recompiled and the entry rewritten.
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entry, &bytes).unwrap();
    let (host, out) = load_and_run(dir.path()).await;
    assert_eq!(out, expected);
    assert_eq!(metric(&host, r#"chimera_compile_cache_total{result="corrupt"}"#), Some(1.0));
    assert_ne!(std::fs::read(&entry).unwrap(), bytes, "the entry was rebuilt");

    // Well-formed but not loadable (as after a wasmtime upgrade): stale, rebuilt.
    let junk = b"not a serialized component".to_vec();
    let mut stale = {
        use sha2::Digest;
        sha2::Sha256::digest(&junk).to_vec()
    };
    stale.extend_from_slice(&junk);
    std::fs::write(&entry, &stale).unwrap();
    let (host, out) = load_and_run(dir.path()).await;
    assert_eq!(out, expected);
    assert_eq!(metric(&host, r#"chimera_compile_cache_total{result="stale"}"#), Some(1.0));
    let (host, _) = load_and_run(dir.path()).await;
    assert_eq!(metric(&host, r#"chimera_compile_cache_total{result="hit"}"#), Some(1.0));
    assert_eq!(entries(dir.path()), [entry]);
}
