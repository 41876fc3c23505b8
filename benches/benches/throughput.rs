//! Batched throughput through the scheduler against two threads of raw
//! wasmtime, the cost of a retry, and ready-queue operations under
//! contention. Each Chimera figure has its floor in the same group.

use chimera_benches::Floor;
use chimera_host::scheduler::{AgentEntry, TaskId};
use chimera_host::{
    Host, HostConfig, Policy, Priority, Queued, ReadyQueue, Scheduler, SchedulerConfig, Submission, TaskStatus,
};
use chimera_tests::artifacts;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::future::join_all;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Tasks per measured batch.
const BATCH: usize = 200;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn host(dir: &std::path::Path) -> Arc<Host> {
    Arc::new(Host::new(HostConfig { data_dir: dir.into(), max_instances: 64, ..HostConfig::default() }).unwrap())
}

/// `BATCH` trivial tasks (passthrough of one byte): the scheduler end to end
/// — submit, journal (group-committed), queue, run, journal, result — against
/// two threads each looping raw instantiate + call + drop.
fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let bytes = std::fs::read(artifacts::PASSTHROUGH).unwrap();
    let floor = Arc::new(Floor::new_sized(&bytes, 16));
    let submission = Submission { agent: "passthrough".into(), input: "x".into(), ..Default::default() };
    // Workers are tokio tasks, not threads: the runtime has two threads either
    // way. More workers than cores keep the cores busy while other tasks wait
    // for their journal records to commit.
    let schedulers: Vec<(usize, Scheduler, tempfile::TempDir)> = [2usize, 16, 64]
        .into_iter()
        .map(|workers| {
            let dir = tempfile::tempdir().unwrap();
            let host = host(dir.path());
            let agent = Arc::new(host.load("passthrough", &bytes, Policy::default()).unwrap());
            let entry = AgentEntry { agent, max_concurrency: workers };
            let config = SchedulerConfig { workers, max_queued: 100_000, ..SchedulerConfig::default() };
            let scheduler = rt.block_on(async { Scheduler::start(host.clone(), vec![entry], config).unwrap() });
            (workers, scheduler, dir)
        })
        .collect();

    let mut group = c.benchmark_group("throughput");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("floor_two_threads", |b| b.to_async(&rt).iter(|| floor.run_on_two_threads(BATCH, "x")));
    for (workers, scheduler, _) in &schedulers {
        group.bench_function(format!("chimera_scheduler_{workers}_workers"), |b| {
            b.to_async(&rt).iter(|| async {
                let tasks = (0..BATCH).map(|_| async {
                    let id = scheduler.submit(submission.clone()).await.unwrap();
                    let record = scheduler.wait(id).await.unwrap();
                    assert_eq!(record.state.status, TaskStatus::Completed);
                });
                join_all(tasks).await;
            })
        });
    }
    group.finish();
}

/// A task that fails once (retryable) and then succeeds, against one that
/// succeeds at once; backoff is zero, so the difference is the retry itself:
/// a second instance, a second KV increment, the extra journal writes.
fn retry(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    let bytes = std::fs::read(artifacts::FLAKY).unwrap();
    let agent = Arc::new(
        host.load(
            "flaky",
            &bytes,
            Policy::from_toml("[capabilities.kv]\nmax_keys = 100000000\nmax_bytes = 68719476736\n").unwrap(),
        )
        .unwrap(),
    );
    let entry = AgentEntry { agent, max_concurrency: 2 };
    let config = SchedulerConfig {
        workers: 2,
        retry_base: Duration::ZERO,
        retry_max: Duration::ZERO,
        ..SchedulerConfig::default()
    };
    let scheduler = rt.block_on(async { Scheduler::start(host.clone(), vec![entry], config).unwrap() });
    let keys = AtomicU64::new(0);
    let run = |fail_times: u32| {
        let key = keys.fetch_add(1, Ordering::Relaxed);
        let submission = Submission {
            agent: "flaky".into(),
            input: format!(r#"{{"key":"k{key}","fail_times":{fail_times}}}"#),
            priority: Priority::Normal,
            ..Default::default()
        };
        let scheduler = scheduler.clone();
        async move {
            let id = scheduler.submit(submission).await.unwrap();
            let record = scheduler.wait(id).await.unwrap();
            assert_eq!(
                (record.state.status, record.state.attempts.len()),
                (TaskStatus::Completed, fail_times as usize + 1)
            );
        }
    };
    let mut group = c.benchmark_group("retry");
    group.bench_function("succeeds_at_once", |b| b.to_async(&rt).iter(|| run(0)));
    group.bench_function("fails_once_then_succeeds", |b| b.to_async(&rt).iter(|| run(1)));
    group.finish();
}

/// Push + pop pairs from two threads at once on the scheduler's ready queue
/// behind a mutex (as the scheduler holds it), against a mutex-guarded
/// `VecDeque`. One iteration is one push and one pop; the figure is wall
/// time per pair with both threads contending.
fn queue(c: &mut Criterion) {
    let agents: Vec<Arc<str>> = (0..4).map(|i| format!("agent-{i}").into()).collect();
    let mut group = c.benchmark_group("queue");
    group.bench_function("ready_queue", |b| {
        b.iter_custom(|iters| {
            let queue = Mutex::new(ReadyQueue::default());
            for id in 0..64 {
                let agent = agents[id as usize % agents.len()].clone();
                queue
                    .lock()
                    .unwrap()
                    .push(Priority::Normal, Queued { id: TaskId::from_u128(id), agent, since: Instant::now() });
            }
            contend(iters, |thread, i| {
                let agent = agents[(i as usize + thread) % agents.len()].clone();
                let priority = Priority::ALL[i as usize % Priority::ALL.len()];
                queue
                    .lock()
                    .unwrap()
                    .push(priority, Queued { id: TaskId::from_u128(i.into()), agent, since: Instant::now() });
                let popped = queue.lock().unwrap().pop(Instant::now(), Duration::from_secs(2), |_| true);
                std::hint::black_box(popped);
            })
        })
    });
    group.bench_function("floor_mutex_vecdeque", |b| {
        b.iter_custom(|iters| {
            let queue = Mutex::new((0..64).collect::<VecDeque<u64>>());
            contend(iters, |_, i| {
                queue.lock().unwrap().push_back(i);
                std::hint::black_box(queue.lock().unwrap().pop_front());
            })
        })
    });
    group.finish();
}

/// Runs `iters` operations split over two threads; returns the wall time.
fn contend(iters: u64, op: impl Fn(usize, u64) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for thread in 0..2 {
            let op = &op;
            s.spawn(move || {
                for i in 0..iters / 2 + (iters % 2) * (thread as u64) {
                    op(thread, i);
                }
            });
        }
    });
    start.elapsed()
}

criterion_group!(benches, throughput, retry, queue);
criterion_main!(benches);
