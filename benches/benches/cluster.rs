//! One node's throughput with its queue on Redis against the embedded
//! queue, in the same run, with two threads of raw wasmtime as the floor;
//! then what one task costs the Redis server, counted by the server itself:
//! round trips (socket reads), commands (those inside scripts included)
//! and CPU time, which bound how many tasks one Redis instance can carry.

use chimera_benches::Floor;
use chimera_host::scheduler::{AgentEntry, ClusterConfig};
use chimera_host::storage::RedisSettings;
use chimera_host::{Host, HostConfig, Policy, Scheduler, SchedulerConfig, Submission, TaskStatus};
use chimera_tests::{artifacts, RedisServer};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::future::join_all;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tasks per measured batch.
const BATCH: usize = 200;
/// Workers per node: as many tasks in flight as a batch needs to keep two
/// cores busy while others wait for Redis.
const WORKERS: usize = 16;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn node(rt: &tokio::runtime::Runtime, dir: &std::path::Path, redis: Option<&RedisServer>) -> Scheduler {
    let host =
        Arc::new(Host::new(HostConfig { data_dir: dir.into(), max_instances: 64, ..HostConfig::default() }).unwrap());
    let bytes = std::fs::read(artifacts::PASSTHROUGH).unwrap();
    let agent = Arc::new(host.load("passthrough", &bytes, Policy::default()).unwrap());
    let entry = AgentEntry { agent, max_concurrency: WORKERS };
    let cluster = redis.map(|r| ClusterConfig::new(RedisSettings::new(r.url())));
    let config = SchedulerConfig { workers: WORKERS, max_queued: 100_000, cluster, ..SchedulerConfig::default() };
    rt.block_on(async { Scheduler::start(host, vec![entry], config).unwrap() })
}

/// Submits `n` trivial tasks at once and waits for each to complete.
async fn batch(scheduler: &Scheduler, n: usize) {
    let submission = Submission { agent: "passthrough".into(), input: "x".into(), ..Default::default() };
    let tasks = (0..n).map(|_| async {
        let id = scheduler.submit(submission.clone()).await.unwrap();
        let record = scheduler.wait(id).await.unwrap();
        assert_eq!(record.state.status, TaskStatus::Completed);
    });
    join_all(tasks).await;
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let redis = RedisServer::start();
    let bytes = std::fs::read(artifacts::PASSTHROUGH).unwrap();
    let floor = Arc::new(Floor::new_sized(&bytes, 16));
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let embedded = node(&rt, dirs[0].path(), None);
    let on_redis = node(&rt, dirs[1].path(), Some(&redis));

    let mut group = c.benchmark_group("node_throughput");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("floor_two_threads", |b| b.to_async(&rt).iter(|| floor.run_on_two_threads(BATCH, "x")));
    group.bench_function("embedded_queue", |b| b.to_async(&rt).iter(|| batch(&embedded, BATCH)));
    group.bench_function("redis_queue", |b| b.to_async(&rt).iter(|| batch(&on_redis, BATCH)));
    group.finish();

    redis_cost(&rt, &redis, &on_redis);
}

/// The server's own counters: socket reads (one per round trip a client
/// makes), commands executed, and its CPU seconds (user + system).
#[derive(Clone, Copy)]
struct Counters {
    reads: f64,
    commands: f64,
    cpu: f64,
}

async fn counters(con: &mut redis::aio::MultiplexedConnection) -> Counters {
    let info: String = redis::cmd("INFO").arg("all").query_async(con).await.unwrap();
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO has no {name}"))
    };
    Counters {
        reads: field("total_reads_processed"),
        commands: field("total_commands_processed"),
        cpu: field("used_cpu_user") + field("used_cpu_sys"),
    }
}

/// Runs `work` and prints what it cost the server per `per` units, with
/// the one INFO call of each measurement taken out.
fn report(
    rt: &tokio::runtime::Runtime,
    con: &mut redis::aio::MultiplexedConnection,
    what: &str,
    per: f64,
    work: impl FnOnce(),
) {
    let before = rt.block_on(counters(con));
    let start = Instant::now();
    work();
    let elapsed = start.elapsed();
    let after = rt.block_on(counters(con));
    println!(
        "{what}: {:.2} socket reads (round trips; requests sent together on one connection share one), {:.1} commands, {:.1} µs of Redis CPU per {}; {:.2}s wall",
        (after.reads - before.reads - 1.0) / per,
        (after.commands - before.commands - 1.0) / per,
        (after.cpu - before.cpu) * 1e6 / per,
        if per == 1.0 { "run" } else { "unit" },
        elapsed.as_secs_f64(),
    );
}

fn redis_cost(rt: &tokio::runtime::Runtime, redis: &RedisServer, node: &Scheduler) {
    let mut con = rt.block_on(async {
        redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
    });
    const TASKS: usize = 2_000;
    report(rt, &mut con, &format!("{TASKS} tasks, 200 in flight (per task)"), TASKS as f64, || {
        rt.block_on(async {
            for _ in 0..TASKS / BATCH {
                batch(node, BATCH).await;
            }
        })
    });
    report(rt, &mut con, "one task at a time (per task)", 200.0, || {
        rt.block_on(async {
            for _ in 0..200 {
                batch(node, 1).await;
            }
        })
    });
    // An idle node: its polls for work, lease renewals and housekeeping.
    let idle = Duration::from_secs(2);
    report(rt, &mut con, "an idle node (per second)", idle.as_secs_f64(), || std::thread::sleep(idle));
}

criterion_group!(benches, throughput);
criterion_main!(benches);
