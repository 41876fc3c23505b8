//! The KV store on each backend: one operation on the embedded redb file and
//! on a loopback `redis-server`, with the floor of a bare Redis command (one
//! round trip, no script) in the same group; and the kv-counter task on each
//! backend, with the Redis commands one task costs counted from the server.

use chimera_host::capability::CpuMeter;
use chimera_host::storage::{KvBackend, Quota, RedbKv, RedisKv, RedisSettings, StorageBackend};
use chimera_host::{Host, HostConfig, Policy};
use chimera_tests::{artifacts, repo_file, RedisServer};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::sync::Arc;

const QUOTA: Quota = Quota { max_keys: 1_000_000, max_bytes: 1 << 30 };

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// What the server has counted: (scripts run by `EVALSHA`/`EVAL`, which is
/// one round trip each; commands, those inside scripts included).
async fn counted(con: &mut redis::aio::ConnectionManager) -> (u64, u64) {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(con).await.unwrap();
    let calls = |line: &str| -> u64 {
        line.split_once(":calls=")
            .and_then(|(_, rest)| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let scripts =
        info.lines().filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:")).map(calls).sum();
    let all = info.lines().filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:")).map(calls).sum();
    (scripts, all)
}

/// Runs `work` 1000 times and prints what each time cost Redis.
fn per_op(rt: &tokio::runtime::Runtime, raw: &mut redis::aio::ConnectionManager, what: &str, mut work: impl FnMut()) {
    let before = rt.block_on(counted(raw));
    for _ in 0..1000 {
        work();
    }
    let after = rt.block_on(counted(raw));
    let per = |a: u64, b: u64| (a - b) as f64 / 1000.0;
    println!(
        "{what}: {:.2} script round trips, {:.2} Redis commands executed",
        per(after.0, before.0),
        per(after.1, before.1)
    );
}

fn kv_ops(c: &mut Criterion) {
    let rt = runtime();
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let backends: Vec<(&str, Arc<dyn KvBackend>)> = rt.block_on(async {
        let redis = RedisKv::open(&RedisSettings::new(server.url())).unwrap();
        redis.ping().await.unwrap();
        vec![
            ("embedded", Arc::new(RedbKv::open(&dir.path().join("kv.redb")).unwrap()) as _),
            ("redis", Arc::new(redis) as _),
        ]
    });
    let mut raw = rt.block_on(async {
        redis::aio::ConnectionManager::new(redis::Client::open(server.url()).unwrap()).await.unwrap()
    });
    let cpu = CpuMeter::none();
    let mut group = c.benchmark_group("kv_op");
    for (name, kv) in &backends {
        rt.block_on(kv.set("bench", "k", vec![7; 64], QUOTA, &cpu)).unwrap();
        group.bench_function(BenchmarkId::new("get", name), |b| b.to_async(&rt).iter(|| kv.get("bench", "k", &cpu)));
        group.bench_function(BenchmarkId::new("set", name), |b| {
            b.to_async(&rt).iter(|| kv.set("bench", "k", vec![8; 64], QUOTA, &cpu))
        });
        group.bench_function(BenchmarkId::new("increment", name), |b| {
            b.to_async(&rt).iter(|| kv.increment("bench", "n", 1, QUOTA, &cpu))
        });
    }
    // The floor: the bare command, one round trip, no quota or totals.
    group.bench_function(BenchmarkId::new("get", "redis_floor_hget"), |b| {
        b.to_async(&rt).iter(|| {
            let mut con = raw.clone();
            async move {
                let v: Option<Vec<u8>> = redis::cmd("HGET").arg("floor").arg("k").query_async(&mut con).await.unwrap();
                v
            }
        })
    });
    group.bench_function(BenchmarkId::new("increment", "redis_floor_hincrby"), |b| {
        b.to_async(&rt).iter(|| {
            let mut con = raw.clone();
            async move {
                let v: i64 = redis::cmd("HINCRBY").arg("floor").arg("n").arg(1).query_async(&mut con).await.unwrap();
                v
            }
        })
    });
    group.finish();

    let kv = &backends[1].1;
    per_op(&rt, &mut raw, "per increment", || {
        rt.block_on(kv.increment("bench", "count", 1, QUOTA, &cpu)).unwrap();
    });
}

fn kv_task(c: &mut Criterion) {
    let rt = runtime();
    let server = RedisServer::start();
    let bytes = std::fs::read(artifacts::KV_COUNTER).unwrap();
    let policy = Policy::from_file(&repo_file("sample-agents/kv-counter/policy.toml")).unwrap();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let storages = [StorageBackend::Embedded, StorageBackend::Redis(RedisSettings::new(server.url()))];
    let hosts: Vec<(&str, Host, chimera_host::Agent)> = ["embedded", "redis"]
        .into_iter()
        .zip(storages)
        .zip(&dirs)
        .map(|((name, storage), dir)| {
            let _in_runtime = rt.enter();
            let config =
                HostConfig { data_dir: dir.path().into(), max_instances: 16, storage, ..HostConfig::default() };
            let host = Host::new(config).unwrap();
            let agent = host.load("kv-counter", &bytes, policy.clone()).unwrap();
            (name, host, agent)
        })
        .collect();
    let input = r#"{"key":"bench"}"#;
    let mut group = c.benchmark_group("kv_task");
    for (name, host, agent) in &hosts {
        assert!(rt.block_on(host.run(agent, input)).outcome.is_ok());
        group.bench_function(*name, |b| b.to_async(&rt).iter(|| host.run(agent, input)));
    }
    group.finish();

    let mut raw = rt.block_on(async {
        redis::aio::ConnectionManager::new(redis::Client::open(server.url()).unwrap()).await.unwrap()
    });
    let (_, host, agent) = &hosts[1];
    per_op(&rt, &mut raw, "per kv-counter task", || {
        assert!(rt.block_on(host.run(agent, input)).outcome.is_ok());
    });
}

criterion_group!(benches, kv_ops, kv_task);
criterion_main!(benches);
