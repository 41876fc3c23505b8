//! KV namespace quotas (`max_keys`, `max_bytes`), kept exact in the same
//! transaction as the data; keys refused from their length before the host
//! decodes them; list-keys pages bounded by bytes.

use chimera_host::capabilities::kv::KvGrant;
use chimera_host::storage::RedbKv;
use chimera_host::{Agent, Host, Policy, TaskReport};
use chimera_tests::{artifacts, assert_counted, component, host_in, metric, policy, run_beside_bystander};
use std::path::Path;

/// The output of a task that must succeed.
fn output(report: &TaskReport) -> &str {
    report.outcome.as_deref().unwrap_or_else(|e| panic!("the task failed: {e}"))
}

fn load(host: &Host, name: &str, path: &str, toml: &str) -> Agent {
    host.load(name, &component(path), policy(toml)).unwrap_or_else(|e| panic!("{e}"))
}

async fn run(host: &Host, agent: &Agent, input: &str) -> String {
    output(&host.run(agent, input).await).to_string()
}

/// The totals kept for `ns` in the store of `dir` (no host may have it
/// open), checked against a count of the entries themselves.
fn stored(dir: &Path, ns: &str) -> (u64, u64) {
    let store = RedbKv::open(&dir.join("kv.redb")).unwrap();
    let kept = store.totals_now(ns).unwrap();
    assert_eq!(kept, store.recount(ns).unwrap(), "the kept totals drifted from the data");
    (kept.keys, kept.bytes)
}

/// The refusal `kv-fill` reports after `sets` writes.
fn full(sets: u64, ns: &str, held: (u64, u64), quota: (u64, u64), adds: (u64, u64)) -> String {
    format!(
        "{sets} sets, then error 1: namespace `{ns}` is full: it holds {} keys / {} bytes of max_keys = {}, \
         max_bytes = {}; this write would add {} {} / {} bytes",
        held.0,
        held.1,
        quota.0,
        quota.1,
        adds.0,
        if adds.0 == 1 { "key" } else { "keys" },
        adds.1
    )
}

const DEFAULT_MAX_BYTES: u64 = 64 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_fills_to_max_keys_and_the_next_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let host = host_in(dir.path());
        let attack = load(&host, "attack", artifacts::KV_FILL, "[capabilities.kv]\nmax_keys = 10\n");
        // 100-byte values under 8-byte keys: 108 bytes an entry.
        let r = run_beside_bystander(&host, &attack, "100").await;
        assert_eq!(output(&r), full(10, "attack", (10, 1080), (10, DEFAULT_MAX_BYTES), (1, 108)));
        assert_eq!(r.usage.counter("kv", "writes"), 11);
        assert_eq!(
            metric(&host, r#"chimera_denials_total{agent="attack",capability="kv",reason="too-large"}"#),
            Some(1.0)
        );
        assert_counted(&host, "attack", "ok");
        // A second agent on the namespace sees the 10 keys and no more.
        let lister = load(&host, "lister", artifacts::KV_LIST, "[capabilities.kv]\nnamespace = \"attack\"\n");
        assert_eq!(run(&host, &lister, "").await, "10 keys, last page");
    }
    assert_eq!(stored(dir.path(), "attack"), (10, 1080));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_fills_to_max_bytes_and_overwrites_and_deletes_free_quota() {
    let dir = tempfile::tempdir().unwrap();
    let quota = (10_000, 100_000);
    {
        let host = host_in(dir.path());
        let attack = load(&host, "attack", artifacts::KV_FILL, "[capabilities.kv]\nmax_bytes = 100000\n");
        let lister = load(&host, "lister", artifacts::KV_LIST, "[capabilities.kv]\nnamespace = \"attack\"\n");
        // 4,104-byte entries: 24 fit in 100,000 bytes.
        let r = run_beside_bystander(&host, &attack, "4096").await;
        assert_eq!(output(&r), full(24, "attack", (24, 98_496), quota, (1, 4104)));
        // Overwriting the 24 with 1,008-byte entries frees what they shrank
        // by: 99 fit.
        assert_eq!(run(&host, &attack, "1000").await, full(99, "attack", (99, 99_792), quota, (1, 1008)));
        // Growing an existing value past the quota is refused too.
        assert_eq!(run(&host, &attack, "4096").await, full(0, "attack", (99, 99_792), quota, (0, 3096)));
        // Deleting frees everything.
        assert_eq!(run(&host, &lister, "delete").await, "deleted 99 keys");
        assert_eq!(run(&host, &lister, "").await, "0 keys, last page");
        assert_eq!(run(&host, &attack, "4096").await, full(24, "attack", (24, 98_496), quota, (1, 4104)));
    }
    assert_eq!(stored(dir.path(), "attack"), (24, 98_496));
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_sharing_a_namespace_share_its_totals_under_their_own_quotas() {
    let dir = tempfile::tempdir().unwrap();
    let (a_quota, b_quota) = ((5, DEFAULT_MAX_BYTES), (8, DEFAULT_MAX_BYTES));
    {
        let host = host_in(dir.path());
        let a = load(&host, "a", artifacts::KV_FILL, "[capabilities.kv]\nnamespace = \"shared\"\nmax_keys = 5\n");
        let b = load(&host, "b", artifacts::KV_FILL, "[capabilities.kv]\nnamespace = \"shared\"\nmax_keys = 8\n");
        let lister = load(&host, "lister", artifacts::KV_LIST, "[capabilities.kv]\nnamespace = \"shared\"\n");
        assert_eq!(run(&host, &a, "100").await, full(5, "shared", (5, 540), a_quota, (1, 108)));
        // b overwrites a's 5 keys and adds 3 more, up to its own quota.
        assert_eq!(run(&host, &b, "100").await, full(8, "shared", (8, 864), b_quota, (1, 108)));
        // a may still overwrite all 8 (no growth), but not add a ninth.
        assert_eq!(run(&host, &a, "100").await, full(8, "shared", (8, 864), a_quota, (1, 108)));
        assert_eq!(run(&host, &lister, "").await, "8 keys, last page");

        // Both at once, writing the same keys: the totals stay exact. a is
        // refused at the first new key once the namespace holds 5 or more
        // (b may be ahead); b always gets to 8.
        assert_eq!(run(&host, &lister, "delete").await, "deleted 8 keys");
        let (ra, rb) = tokio::join!(host.run(&a, "100"), host.run(&b, "100"));
        assert_eq!(output(&rb), full(8, "shared", (8, 864), b_quota, (1, 108)));
        let a_sets: u64 = output(&ra).split(' ').next().unwrap().parse().unwrap();
        assert!((5..=8).contains(&a_sets), "{}", output(&ra));
        assert_eq!(output(&ra), full(a_sets, "shared", (a_sets, a_sets * 108), a_quota, (1, 108)));
        assert_eq!(run(&host, &lister, "").await, "8 keys, last page");
    }
    assert_eq!(stored(dir.path(), "shared"), (8, 864));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reopened_store_keeps_its_totals() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[capabilities.kv]\nmax_keys = 10\n";
    let expected = full(10, "attack", (10, 1080), (10, DEFAULT_MAX_BYTES), (1, 108));
    {
        let host = host_in(dir.path());
        let attack = load(&host, "attack", artifacts::KV_FILL, toml);
        assert_eq!(run(&host, &attack, "100").await, expected);
    }
    assert_eq!(stored(dir.path(), "attack"), (10, 1080));
    {
        // A new host on the same data directory: the 10 keys still count,
        // so the second run only overwrites them before it is refused.
        let host = host_in(dir.path());
        let attack = load(&host, "attack", artifacts::KV_FILL, toml);
        assert_eq!(run(&host, &attack, "100").await, expected);
    }
    assert_eq!(stored(dir.path(), "attack"), (10, 1080));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_utf16_key_as_large_as_guest_memory_is_refused_from_its_length() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    let attack = load(&host, "attack", artifacts::KV_UTF16_KEY, "[capabilities.kv]");
    let r = run_beside_bystander(&host, &attack, "").await;
    // 29,491,200 code units: at least that many bytes, however they decode.
    assert_eq!(output(&r), "key is at least 29491200 bytes; the limit is 512 (max_key_bytes)");
    assert_eq!(r.usage.counter("kv", "reads"), 0, "nothing reached the store");
    let denied = metric(&host, r#"chimera_denials_total{agent="attack",capability="kv",reason="too-large"}"#);
    assert_eq!(denied, Some(1000.0));
    assert_counted(&host, "attack", "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_list_keys_page_stops_at_one_mib_of_keys_or_at_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let grant = "[capabilities.kv]\nnamespace = \"big\"\nmax_key_bytes = 65536\n";
    {
        let host = host_in(dir.path());
        // 20 keys of 64 KiB (empty values): 1.25 MiB of keys.
        let filler = load(&host, "filler", artifacts::KV_FILL, &format!("{grant}max_keys = 20\n"));
        assert_eq!(
            run(&host, &filler, "0 65536").await,
            full(20, "big", (20, 20 << 16), (20, DEFAULT_MAX_BYTES), (1, 65536))
        );
        // Asking for 10,000 keys a page: 16 of them make 1 MiB.
        let lister = load(&host, "lister", artifacts::KV_LIST, &format!("{grant}max_page_keys = 10000\n"));
        let r = run_beside_bystander(&host, &lister, "").await;
        assert_eq!(output(&r), "16 keys, more after the next-cursor");
        assert_eq!(r.usage.peak_host_bytes, 1 << 20, "the page is held against the memory limit while built");
        // An instance of 2 MiB whose 20 pages of memory take 1.25 MiB: the
        // page stops at the 768 KiB left, 12 keys.
        let small = load(
            &host,
            "small",
            artifacts::KV_LIST,
            &format!("[limits]\nmemory_mib = 2\n{grant}max_page_keys = 10000\n"),
        );
        let r = host.run(&small, "").await;
        assert_eq!(output(&r), "12 keys, more after the next-cursor");
        assert_eq!(r.usage.peak_host_bytes, 12 << 16);
        // Following the cursors reaches every key.
        assert_eq!(run(&host, &lister, "delete").await, "deleted 20 keys");
    }
    assert_eq!(stored(dir.path(), "big"), (0, 0));
}

#[test]
fn quota_keys_have_finite_defaults_and_validated_ranges() {
    let kv = Policy::from_toml("[capabilities.kv]").unwrap().grant::<KvGrant>().unwrap().unwrap();
    assert_eq!((kv.max_keys, kv.max_bytes), (10_000, 64 << 20));
    let err = |toml: &str| Policy::from_toml(toml).unwrap_err().to_string();
    assert_eq!(
        err("[capabilities.kv]\nmax_keys = 0\n"),
        "policy key `capabilities.kv.max_keys` is 0; it must be between 1 and 100000000"
    );
    assert_eq!(
        err("[capabilities.kv]\nmax_bytes = 0\n"),
        "policy key `capabilities.kv.max_bytes` is 0; it must be between 1 and 68719476736"
    );
    assert_eq!(
        err("[capabilities.kv]\nmax_keys = 100000001\n"),
        "policy key `capabilities.kv.max_keys` is 100000001; it must be between 1 and 100000000"
    );
}
