//! Agents cannot reach each other's data: not through KV key spelling, not
//! through a reused instance slot.

use chimera_host::{Host, HostConfig};
use chimera_tests::{artifacts, assert_counted, component, host_in, policy, run_beside_bystander};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn kv_key_tricks_never_leave_the_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let victim = host
        .load("victim", &component(artifacts::KV_COUNTER), policy("[capabilities.logging]\n[capabilities.kv]\n"))
        .unwrap();
    assert!(host.run(&victim, r#"{"key":"secret","by":42}"#).await.outcome.is_ok());

    let attacker = host.load("attacker", &component(artifacts::KV_ESCAPE), policy("[capabilities.kv]\n")).unwrap();
    let r = run_beside_bystander(&host, &attacker, "counter/secret").await;
    let seen: Value = serde_json::from_str(r.outcome.as_ref().unwrap()).unwrap();
    for probe in ["plain", "dotdot", "separator", "nul", "colon"] {
        assert_eq!(seen[probe], json!({"ok": "None"}), "{probe}: {seen}");
    }
    assert_eq!(seen["overwrite"], json!({"ok": "()"}));
    assert_eq!(
        seen["huge"],
        json!({"err": "KvError::TooLarge(\"key is 1048576 bytes; the limit is 512 (max_key_bytes)\")"})
    );
    assert_eq!(seen["empty"], json!({"err": "KvError::InvalidKey(\"the key is empty\")"}));
    // Listing shows only the attacker's own write, under its literal name.
    assert_eq!(seen["list_all"], json!({"ok": "[\"../victim/counter/secret\"]"}));
    assert_eq!(seen["list_dotdot"], json!({"ok": "[\"../victim/counter/secret\"]"}));
    assert_counted(&host, "attacker", "ok");

    // The victim's data is as it left it.
    let r = host.run(&victim, r#"{"list":true}"#).await;
    assert_eq!(r.outcome, Ok(r#"{"counters":[["secret",42]]}"#.to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reused_pool_slot_holds_only_zeros_for_the_next_tenant() {
    let dir = tempfile::tempdir().unwrap();
    // One slot: the reader necessarily gets the writer's slot.
    let host =
        Host::new(HostConfig { data_dir: dir.path().into(), max_instances: 1, ..HostConfig::default() }).unwrap();
    let writer = host.load("writer", &component(artifacts::POOL_SECRET_WRITER), policy("")).unwrap();
    let reader = host.load("reader", &component(artifacts::POOL_SECRET_READER), policy("")).unwrap();
    for _ in 0..3 {
        assert_eq!(host.run(&writer, "").await.outcome, Ok(String::new()));
        let r = host.run(&reader, "").await;
        assert_eq!(r.outcome, Ok("\0".repeat(32)), "the reader saw the writer's memory");
    }
    let pool = host.engine().pooling_allocator_metrics().unwrap();
    assert_eq!(pool.component_instances(), 0);
}
