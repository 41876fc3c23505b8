//! One conformance suite for both KV backends: the embedded redb file and
//! a real `redis-server` on loopback. Each scenario runs against each, and
//! every check of a namespace's kept totals is against a recount of what it
//! holds. Then what only a shared store can show: several hosts writing one
//! namespace at once (increments sum exactly, a quota holds exactly), and
//! Redis going away and coming back.

use chimera_host::capability::CpuMeter;
use chimera_host::storage::{
    KeyPage, KvBackend, KvStoreError, NamespaceTotals, PageBound, Quota, RedbKv, RedisKv, RedisSettings, StorageBackend,
};
use chimera_host::{Host, HostConfig};
use chimera_tests::{artifacts, component, policy, RedisServer};
use std::sync::Arc;

const ROOMY: Quota = Quota { max_keys: 1_000, max_bytes: 1 << 30 };
const PAGE: PageBound = PageBound { max_keys: 10_000, max_bytes: 1 << 20 };

fn none() -> CpuMeter {
    CpuMeter::none()
}

/// A backend under test: its name, the store, and what keeps it alive (its
/// directory or its server).
type UnderTest = (&'static str, Arc<dyn KvBackend>, Box<dyn std::any::Any>);

/// Both backends, fresh.
fn backends() -> Vec<UnderTest> {
    let dir = tempfile::tempdir().unwrap();
    let redb: Arc<dyn KvBackend> = Arc::new(RedbKv::open(&dir.path().join("kv.redb")).unwrap());
    let server = RedisServer::start();
    let redis: Arc<dyn KvBackend> = Arc::new(RedisKv::open(&RedisSettings::new(server.url())).unwrap());
    vec![("embedded", redb, Box::new(dir)), ("redis", redis, Box::new(server))]
}

fn totals(keys: u64, bytes: u64) -> NamespaceTotals {
    NamespaceTotals { keys, bytes }
}

/// Every key of `ns`, page by page.
async fn all_keys(s: &dyn KvBackend, ns: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let KeyPage { keys: page, next_cursor } = s.list_keys(ns, "", after.as_deref(), PAGE, &none()).await.unwrap();
        keys.extend(page);
        match next_cursor {
            Some(c) => after = Some(c),
            None => return keys,
        }
    }
}

/// The kept totals of `ns`, checked against a recount of its entries.
async fn kept(s: &dyn KvBackend, ns: &str) -> NamespaceTotals {
    let keys = all_keys(s, ns).await;
    let values = s.get_many(ns, &keys, u64::MAX, &none()).await.unwrap();
    let mut counted = NamespaceTotals::default();
    for (k, v) in keys.iter().zip(&values) {
        counted = counted.plus(NamespaceTotals::entry(k, v.as_ref().expect("a listed key has a value").len()));
    }
    let t = s.totals(ns).await.unwrap();
    assert_eq!(t, counted, "the kept totals of `{ns}` drifted from the data");
    t
}

fn refusal<T: std::fmt::Debug>(r: Result<T, KvStoreError>) -> String {
    match r {
        Err(KvStoreError::QuotaExceeded(m)) => m,
        other => panic!("expected quota-exceeded, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_keeps_the_totals_exact_on_both_backends() {
    for (name, s, _keep) in backends() {
        let s = &*s;
        s.set("a", "k1", b"abc".to_vec(), ROOMY, &none()).await.unwrap();
        assert_eq!(kept(s, "a").await, totals(1, 5), "{name}");
        s.set("a", "k2", vec![0; 10], ROOMY, &none()).await.unwrap();
        // Overwrites count the difference, larger or smaller, and empty values count.
        s.set("a", "k1", vec![0; 7], ROOMY, &none()).await.unwrap();
        s.set("a", "k1", Vec::new(), ROOMY, &none()).await.unwrap();
        assert_eq!(kept(s, "a").await, totals(2, 14), "{name}");
        assert_eq!(s.get("a", "k1", &none()).await.unwrap(), Some(Vec::new()), "{name}: an empty value is not absent");
        assert_eq!(s.increment("a", "n", 1, ROOMY, &none()).await.unwrap(), 1, "{name}");
        assert_eq!(s.increment("a", "n", 9, ROOMY, &none()).await.unwrap(), 10, "{name}");
        assert_eq!(kept(s, "a").await, totals(3, 17), "{name}");
        // compare-and-swap: absent -> value, a mismatch, a match.
        assert!(s.compare_and_swap("a", "c", None, b"xy".to_vec(), ROOMY, &none()).await.unwrap(), "{name}");
        assert!(!s.compare_and_swap("a", "c", None, b"zzzz".to_vec(), ROOMY, &none()).await.unwrap(), "{name}");
        assert!(!s.compare_and_swap("a", "c", Some(b"x".to_vec()), b"q".to_vec(), ROOMY, &none()).await.unwrap());
        assert!(s.compare_and_swap("a", "c", Some(b"xy".to_vec()), b"xyz".to_vec(), ROOMY, &none()).await.unwrap());
        // Expecting a value of a key that is absent fails.
        assert!(!s.compare_and_swap("a", "nope", Some(Vec::new()), b"1".to_vec(), ROOMY, &none()).await.unwrap());
        assert_eq!(s.get("a", "c", &none()).await.unwrap(), Some(b"xyz".to_vec()), "{name}");
        assert_eq!(kept(s, "a").await, totals(4, 21), "{name}");
        assert!(s.delete("a", "k2", &none()).await.unwrap(), "{name}");
        assert!(!s.delete("a", "k2", &none()).await.unwrap(), "{name}");
        assert_eq!(kept(s, "a").await, totals(3, 9), "{name}");
        for key in ["k1", "n", "c"] {
            assert!(s.delete("a", key, &none()).await.unwrap(), "{name}");
        }
        assert_eq!(kept(s, "a").await, totals(0, 0), "{name}");
        assert_eq!(s.get("a", "k1", &none()).await.unwrap(), None, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_are_apart_whatever_their_names_on_both_backends() {
    for (name, s, _keep) in backends() {
        let s = &*s;
        // Names that a naive `prefix:ns:key` layout would run together.
        let spaces = ["a", "a:d", "d:a", "a:i", "kv:d:a", ""];
        for (i, ns) in spaces.iter().enumerate() {
            s.set(ns, "k", vec![i as u8; i + 1], ROOMY, &none()).await.unwrap();
            s.set(ns, &format!("only-{i}"), Vec::new(), ROOMY, &none()).await.unwrap();
        }
        for (i, ns) in spaces.iter().enumerate() {
            assert_eq!(s.get(ns, "k", &none()).await.unwrap(), Some(vec![i as u8; i + 1]), "{name}: `{ns}`");
            assert_eq!(all_keys(s, ns).await, ["k".to_string(), format!("only-{i}")], "{name}: `{ns}`");
            assert_eq!(kept(s, ns).await, totals(2, 1 + (i as u64 + 1) + 5 + i.to_string().len() as u64));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_and_keys_are_kept_byte_for_byte_on_both_backends() {
    for (name, s, _keep) in backends() {
        let s = &*s;
        let binary: Vec<u8> = (0..=255u8).chain([0, 0, 0xff]).collect();
        let keys = ["zero\0byte", "ünïcödé-κλειδί", "emoji-🦀", "space key", "\u{7f}"];
        for k in keys {
            s.set("b", k, binary.clone(), ROOMY, &none()).await.unwrap();
            assert_eq!(s.get("b", k, &none()).await.unwrap().as_deref(), Some(&binary[..]), "{name}: {k:?}");
        }
        // Byte order of UTF-8 (what Rust's `str` order is).
        let mut sorted: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        sorted.sort();
        assert_eq!(all_keys(s, "b").await, sorted, "{name}");
        let large = vec![7u8; 4 << 20];
        s.set("b", "large", large.clone(), ROOMY, &none()).await.unwrap();
        assert_eq!(s.get("b", "large", &none()).await.unwrap(), Some(large), "{name}");
        kept(s, "b").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_read_decimal_integers_as_the_embedded_store_does_on_both_backends() {
    for (name, s, _keep) in backends() {
        let s = &*s;
        let cases: [(&[u8], i64, Result<i64, &str>); 12] = [
            (b"41", 1, Ok(42)),
            (b"+5", 1, Ok(6)),
            (b"007", 1, Ok(8)),
            (b"-0", -1, Ok(-1)),
            (b"-12", 2, Ok(-10)),
            (b"9223372036854775806", 1, Ok(i64::MAX)),
            (b"-9223372036854775808", 0, Ok(i64::MIN)),
            (b"9223372036854775807", 1, Err("overflow")),
            (b"-9223372036854775808", -1, Err("overflow")),
            (b"9223372036854775808", 0, Err("integer")),
            (b" 1", 1, Err("integer")),
            (b"1.5", 1, Err("integer")),
        ];
        for (i, (start, delta, want)) in cases.iter().enumerate() {
            let key = format!("n{i}");
            s.set("n", &key, start.to_vec(), ROOMY, &none()).await.unwrap();
            let got = s.increment("n", &key, *delta, ROOMY, &none()).await;
            match want {
                Ok(v) => {
                    assert_eq!(got, Ok(*v), "{name}: {:?} + {delta}", String::from_utf8_lossy(start));
                    assert_eq!(s.get("n", &key, &none()).await.unwrap(), Some(v.to_string().into_bytes()));
                }
                Err(what) => {
                    let message = match &got {
                        Err(KvStoreError::InvalidValue(m)) => m.clone(),
                        other => panic!("{name}: {start:?} + {delta}: expected invalid-value, got {other:?}"),
                    };
                    let expected = if *what == "overflow" {
                        format!("`{key}` would overflow a signed 64-bit integer")
                    } else {
                        format!("`{key}` does not hold a decimal integer")
                    };
                    assert_eq!(message, expected, "{name}");
                    // A refused increment leaves the value as it was.
                    assert_eq!(s.get("n", &key, &none()).await.unwrap().as_deref(), Some(*start), "{name}");
                }
            }
        }
        for (i, bad) in [b"".as_slice(), b"abc", b"0x10", b"1e3", b"99999999999999999999999"].iter().enumerate() {
            let key = format!("bad{i}");
            s.set("n", &key, bad.to_vec(), ROOMY, &none()).await.unwrap();
            assert!(matches!(s.increment("n", &key, 1, ROOMY, &none()).await, Err(KvStoreError::InvalidValue(_))));
        }
        kept(s, "n").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_past_the_quota_is_refused_with_the_same_message_and_writes_nothing_on_both_backends() {
    for (name, s, _keep) in backends() {
        let s = &*s;
        let quota = Quota { max_keys: 2, max_bytes: 20 };
        s.set("q", "a", vec![1; 4], quota, &none()).await.unwrap();
        s.set("q", "b", vec![1; 4], quota, &none()).await.unwrap();
        assert_eq!(
            refusal(s.set("q", "c", vec![1; 1], quota, &none()).await),
            "namespace `q` is full: it holds 2 keys / 10 bytes of max_keys = 2, max_bytes = 20; \
             this write would add 1 key / 2 bytes",
            "{name}"
        );
        assert_eq!(s.get("q", "c", &none()).await.unwrap(), None, "{name}");
        assert_eq!(
            refusal(s.set("q", "a", vec![2; 15], quota, &none()).await),
            "namespace `q` is full: it holds 2 keys / 10 bytes of max_keys = 2, max_bytes = 20; \
             this write would add 0 keys / 11 bytes",
            "{name}"
        );
        assert_eq!(s.get("q", "a", &none()).await.unwrap(), Some(vec![1; 4]), "{name}");
        refusal(s.increment("q", "n", 1, quota, &none()).await);
        assert_eq!(s.get("q", "n", &none()).await.unwrap(), None, "{name}: a refused increment writes nothing");
        refusal(s.compare_and_swap("q", "c", None, vec![0], quota, &none()).await);
        assert_eq!(kept(s, "q").await, totals(2, 10), "{name}");
        // An increment that grows its value's digits (9 -> 10) past max_bytes is refused, the old value kept.
        let tight = Quota { max_keys: 3, max_bytes: 12 };
        s.set("q", "n", b"9".to_vec(), tight, &none()).await.unwrap();
        assert_eq!(kept(s, "q").await, totals(3, 12), "{name}");
        refusal(s.increment("q", "n", 1, tight, &none()).await);
        assert_eq!(s.get("q", "n", &none()).await.unwrap(), Some(b"9".to_vec()), "{name}");
        assert!(s.delete("q", "n", &none()).await.unwrap());
        // Up to the quota exactly is fine; a namespace over a smaller quota can still shrink.
        s.set("q", "a", vec![2; 14], quota, &none()).await.unwrap();
        assert_eq!(kept(s, "q").await, totals(2, 20), "{name}");
        let small = Quota { max_keys: 1, max_bytes: 5 };
        s.set("q", "a", vec![2; 3], small, &none()).await.unwrap();
        assert!(s.delete("q", "b", &none()).await.unwrap());
        assert_eq!(kept(s, "q").await, totals(1, 4), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_and_list_pages_stop_at_their_bounds_on_both_backends() {
    for (name, s, _keep) in backends() {
        let s = &*s;
        s.set("g", "k1", vec![1; 100], ROOMY, &none()).await.unwrap();
        s.set("g", "k2", vec![2; 100], ROOMY, &none()).await.unwrap();
        s.set("other", "k3", vec![3; 5], ROOMY, &none()).await.unwrap();
        let keys: Vec<String> = ["k2", "k3", "k1"].iter().map(|k| k.to_string()).collect();
        let values = s.get_many("g", &keys, 200, &none()).await.unwrap();
        assert_eq!(values, vec![Some(vec![2; 100]), None, Some(vec![1; 100])], "{name}");
        assert_eq!(s.get_many("g", &keys, 199, &none()).await, Err(KvStoreError::BatchTooLarge { max_bytes: 199 }));
        assert_eq!(s.get_many("g", &[], 0, &none()).await.unwrap(), Vec::<Option<Vec<u8>>>::new(), "{name}");

        let big = Quota { max_keys: 1_000, max_bytes: 1 << 30 };
        let key = |i: u32| format!("{i:08x}{}", "x".repeat(65528));
        for i in 0..20 {
            s.set("l", &key(i), Vec::new(), big, &none()).await.unwrap();
        }
        let bound = |max_keys, max_bytes| PageBound { max_keys, max_bytes };
        let page = s.list_keys("l", "", None, bound(10_000, 1 << 20), &none()).await.unwrap();
        assert_eq!((page.keys.len(), page.next_cursor.as_deref()), (16, Some(key(15).as_str())), "{name}");
        let page = s.list_keys("l", "", page.next_cursor.as_deref(), bound(10_000, 1 << 20), &none()).await.unwrap();
        assert_eq!((page.keys.len(), page.next_cursor), (4, None), "{name}");
        assert_eq!(
            s.list_keys("l", "", None, bound(10_000, 65535), &none()).await,
            Err(KvStoreError::PageTooSmall { next_key_bytes: 65536 }),
            "{name}"
        );
        let page = s.list_keys("l", "", None, bound(3, 1 << 30), &none()).await.unwrap();
        assert_eq!((page.keys.len(), page.next_cursor.as_deref()), (3, Some(key(2).as_str())), "{name}");

        // Prefixes, and cursors before, inside and past them; more keys than one script batch.
        for i in 0..600 {
            s.set("p", &format!("user:{i:04}"), Vec::new(), big, &none()).await.unwrap();
        }
        for k in ["user", "user;", "usea", "users", "user:\u{10ffff}"] {
            s.set("p", k, Vec::new(), big, &none()).await.unwrap();
        }
        let page = s.list_keys("p", "user:", None, bound(10_000, 1 << 20), &none()).await.unwrap();
        assert_eq!(page.keys.len(), 601, "{name}: 600 numbered keys and user:U+10FFFF");
        assert_eq!((page.keys[0].as_str(), page.keys.last().unwrap().as_str()), ("user:0000", "user:\u{10ffff}"));
        let page = s.list_keys("p", "user:", Some("user:0299"), bound(2, 1 << 20), &none()).await.unwrap();
        assert_eq!(page.keys, ["user:0300", "user:0301"], "{name}");
        let page = s.list_keys("p", "user:", Some("aaaa"), bound(1, 1 << 20), &none()).await.unwrap();
        assert_eq!(page.keys, ["user:0000"], "{name}: a cursor before the prefix starts at it");
        let page = s.list_keys("p", "user:", Some("zzzz"), bound(10, 1 << 20), &none()).await.unwrap();
        assert_eq!((page.keys.len(), page.next_cursor), (0, None), "{name}: a cursor past the prefix ends");
        let page = s.list_keys("p", "use", None, bound(10_000, 1 << 20), &none()).await.unwrap();
        assert_eq!(page.keys.len(), 605, "{name}");
    }
}

fn redis_hosts(server: &RedisServer, n: usize) -> Vec<Arc<RedisKv>> {
    (0..n).map(|_| Arc::new(RedisKv::open(&RedisSettings::new(server.url())).unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_from_three_hosts_at_once_sum_exactly() {
    let server = RedisServer::start();
    let hosts = redis_hosts(&server, 3);
    let mut writers = Vec::new();
    for (h, kv) in hosts.iter().enumerate() {
        for w in 0..8 {
            let kv = kv.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..250 {
                    let delta = 1 + ((h * 8 + w + i) % 3) as i64;
                    kv.increment("shared", "count", delta, ROOMY, &CpuMeter::none()).await.unwrap();
                }
            }));
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    let want: i64 =
        (0..3).flat_map(|h| (0..8).flat_map(move |w| (0..250).map(move |i| 1 + ((h * 8 + w + i) % 3) as i64))).sum();
    let got = hosts[0].get("shared", "count", &none()).await.unwrap().unwrap();
    assert_eq!(String::from_utf8(got).unwrap(), want.to_string());
    assert_eq!(kept(&*hosts[2], "shared").await, totals(1, 5 + want.to_string().len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_holds_exactly_against_three_hosts_writing_at_once() {
    let server = RedisServer::start();
    let hosts = redis_hosts(&server, 3);
    let quota = Quota { max_keys: 100, max_bytes: 1 << 20 };
    let mut writers = Vec::new();
    for (h, kv) in hosts.iter().enumerate() {
        let kv = kv.clone();
        writers.push(tokio::spawn(async move {
            let (mut stored, mut refused) = (0, 0);
            for i in 0..60 {
                match kv.set("full", &format!("h{h}-{i:02}"), vec![h as u8; 10], quota, &CpuMeter::none()).await {
                    Ok(()) => stored += 1,
                    Err(KvStoreError::QuotaExceeded(_)) => refused += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            (stored, refused)
        }));
    }
    let mut stored = 0;
    for w in writers {
        let (s, r) = w.await.unwrap();
        assert_eq!(s + r, 60);
        stored += s;
    }
    // 180 writes of new keys against room for 100: exactly 100 went in.
    assert_eq!(stored, 100);
    assert_eq!(kept(&*hosts[1], "full").await, totals(100, 100 * (5 + 10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_fails_calls_as_unavailable_naming_it_and_its_return_is_picked_up() {
    let mut server = RedisServer::start_persistent();
    let kv = RedisKv::open(&RedisSettings {
        response_timeout: std::time::Duration::from_millis(500),
        ..RedisSettings::new(format!("redis://:hunter2@{}/0", server.addr()))
    })
    .unwrap();
    // No password is set on the server: AUTH with one fails, naming nothing secret.
    let refused = kv.ping().await.unwrap_err().to_string();
    assert!(!refused.contains("hunter2"), "{refused}");
    let kv = RedisKv::open(&RedisSettings {
        response_timeout: std::time::Duration::from_millis(500),
        ..RedisSettings::new(server.url())
    })
    .unwrap();
    kv.set("o", "before", b"1".to_vec(), ROOMY, &none()).await.unwrap();
    server.kill();
    assert!(!server.running());
    let err = kv.get("o", "before", &none()).await.unwrap_err();
    let KvStoreError::Unavailable(message) = &err else { panic!("expected unavailable, got {err:?}") };
    assert!(message.starts_with(&format!("the KV store (Redis at {}/0) did not answer", server.addr())), "{message}");
    assert!(matches!(kv.set("o", "during", b"2".to_vec(), ROOMY, &none()).await, Err(KvStoreError::Unavailable(_))));
    // Back, with its append-only file: the acknowledged write is there, the refused one is not.
    server.restart();
    let mut back = None;
    for _ in 0..100 {
        match kv.get("o", "before", &none()).await {
            Ok(v) => {
                back = Some(v);
                break;
            }
            Err(KvStoreError::Unavailable(_)) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(back, Some(Some(b"1".to_vec())), "the store reconnected and kept the write");
    // Every connection of the pool is back: reads and writes all succeed.
    kv.ping().await.unwrap();
    for i in 0..8 {
        assert_eq!(kv.get("o", "during", &none()).await.unwrap(), None);
        kv.set("o", &format!("after-{i}"), Vec::new(), ROOMY, &none()).await.unwrap();
    }
    assert_eq!(kept(&kv, "o").await, totals(9, 7 + 8 * 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kv_counter_agent_on_two_hosts_counts_in_one_redis_namespace() {
    let server = RedisServer::start();
    let toml = std::fs::read_to_string(chimera_tests::repo_file("sample-agents/kv-counter/policy.toml")).unwrap();
    let mut hosts = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let storage =
            StorageBackend::Redis(RedisSettings { key_prefix: "test:".into(), ..RedisSettings::new(server.url()) });
        let host = Host::new(HostConfig {
            data_dir: dir.path().to_path_buf(),
            max_instances: 4,
            storage,
            ..HostConfig::default()
        })
        .unwrap();
        host.check_storage().await.unwrap();
        let agent = host.load("kv-counter", &component(artifacts::KV_COUNTER), policy(&toml)).unwrap();
        hosts.push((host, agent, dir));
    }
    let mut last = String::new();
    for i in 0..6 {
        let (host, agent, _) = &hosts[i % 2];
        let report = host.run(agent, r#"{"key":"visits"}"#).await;
        last = report.outcome.unwrap_or_else(|e| panic!("the task failed: {e}"));
    }
    assert_eq!(last, r#"{"key":"visits","count":6}"#);
    // The data is in Redis under the prefix, in the policy's namespace.
    let direct =
        RedisKv::open(&RedisSettings { key_prefix: "test:".into(), ..RedisSettings::new(server.url()) }).unwrap();
    assert_eq!(direct.get("counters", "counter/visits", &none()).await.unwrap(), Some(b"6".to_vec()));
    // Neither host's data directory holds a KV file.
    assert!(hosts.iter().all(|(_, _, dir)| !dir.path().join("kv.redb").exists()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_redis_share_a_counter_and_a_redis_outage_refuses_submissions() {
    use chimera_tests::{agent_entry, repo_file, Api, DaemonProcess};
    let mut server = RedisServer::start_persistent();
    let policy = repo_file("sample-agents/kv-counter/policy.toml").display().to_string();
    let config = format!(
        "data_dir = \"data\"\n[scheduler]\nmax_attempts = 1\n\n[storage]\nbackend = \"redis\"\nredis_url = \"{}\"\n\
         key_prefix = \"daemons:\"\nresponse_timeout_ms = 500\n\n{}",
        server.url(),
        agent_entry("kv-counter", artifacts::KV_COUNTER, &policy, 2)
    );
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let daemons = [DaemonProcess::start(d1.path(), &config), DaemonProcess::start(d2.path(), &config)];
    let apis: Vec<Api> = daemons.iter().map(Api::new).collect();
    let count = |task: &serde_json::Value| -> serde_json::Value {
        assert_eq!(task["status"], "completed", "{task}");
        serde_json::from_str::<serde_json::Value>(task["output"].as_str().unwrap()).unwrap()["count"].clone()
    };
    for i in 0..6 {
        let api = &apis[i % 2];
        let id = api.submit_ok(serde_json::json!({"agent": "kv-counter", "input": {"key": "hits"}})).await;
        assert_eq!(count(&api.wait_final(&id).await), i + 1, "the count goes on across the two daemons");
    }

    // Redis goes away: the queue is there too, so submissions are refused
    // as unavailable (503, naming the server).
    server.kill();
    let body = serde_json::json!({"agent": "kv-counter", "input": {"key": "hits"}});
    let (code, refused) = apis[0].submit(body.clone()).await;
    assert_eq!(code, 503, "{refused}");
    let error = refused["error"].to_string();
    assert!(error.contains(&format!("Redis at {}/0", server.addr())) && error.contains("did not answer"), "{error}");
    // Back with its append-only file: the count goes on from 6 on either daemon.
    server.restart();
    let mut done = None;
    for _ in 0..50 {
        // Until the daemon's connections are back, a submission may still be refused.
        let (code, answer) = apis[1].submit(body.clone()).await;
        if code == 503 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(code, 202, "{answer}");
        let task = apis[1].wait_final(answer["id"].as_str().unwrap()).await;
        if task["status"] == "completed" {
            done = Some(task);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(count(&done.expect("a task succeeds once Redis is back")), 7);
    assert!(!d1.path().join("data/journal.redb").exists(), "the tasks are kept in Redis, not in the data directory");
    assert!(!d1.path().join("data/kv.redb").exists() && !d2.path().join("data/kv.redb").exists());
}

#[test]
fn a_storage_section_that_does_not_check_stops_the_daemon_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[storage]\nbackend = \"redis\"\n",
            "[storage] backend = \"redis\" needs redis_url = \"redis://HOST:PORT/DB\" (or $CHIMERA_REDIS_URL)",
        ),
        (
            "[storage]\nredis_url = \"redis://127.0.0.1:1/0\"\n",
            "[storage] redis_url is set, but backend is \"embedded\": add backend = \"redis\"",
        ),
        (
            "[storage]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:1/0\"\npool_size = 1000\n",
            "[storage] pool_size = 1000 must be 1 to 64",
        ),
    ];
    for (storage, want) in cases {
        let path = dir.path().join("chimera.toml");
        std::fs::write(&path, format!("data_dir = \"data\"\n{storage}")).unwrap();
        // The variable would stand in for a missing redis_url.
        let out = chimera_tests::serve_command(&path, "127.0.0.1:0").env_remove("CHIMERA_REDIS_URL").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
