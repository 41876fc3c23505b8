//! Payloads through the component boundary, capability round trips, the
//! scheduler's overhead, and cold vs cached component loads. Each Chimera
//! figure has its floor (raw wasmtime, same component) in the same group.

use chimera_benches::Floor;
use chimera_host::{Host, HostConfig, Policy, Priority, Scheduler, SchedulerConfig, Submission};
use chimera_tests::artifacts;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::Arc;

fn host(dir: &std::path::Path) -> Host {
    Host::new(HostConfig { data_dir: dir.into(), max_instances: 16, ..HostConfig::default() }).unwrap()
}

/// word-count input of about `size` bytes; the output is small, so the
/// figure is the input's trip into the guest and its parse.
fn payload(size: usize) -> String {
    let text: String = "lorem ipsum ".repeat(size / 12 + 1).chars().take(size).collect();
    format!(r#"{{"text":"{text}","top":1}}"#)
}

fn payloads(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let bytes = std::fs::read(artifacts::WORD_COUNT).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let floor = Floor::new(&bytes);
    let floor_epochs = Floor::with_epoch_checks(&bytes);
    let host = host(dir.path());
    let policy = Policy::from_toml("[limits]\nmax_input_bytes = 4194304\n").unwrap();
    let agent = host.load("word-count", &bytes, policy).unwrap();
    let mut group = c.benchmark_group("payload");
    for size in [100, 10 << 10, 1 << 20] {
        let input = payload(size);
        assert_eq!(
            rt.block_on(host.run(&agent, &input)).outcome.as_deref(),
            Ok(rt.block_on(floor.run(&input)).as_str())
        );
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_with_input(BenchmarkId::new("floor", size), &input, |b, i| b.to_async(&rt).iter(|| floor.run(i)));
        // The floor with the epoch checks Chimera's CPU limit needs: how much of the gap they are.
        group.bench_with_input(BenchmarkId::new("floor_epoch_checks", size), &input, |b, i| {
            b.to_async(&rt).iter(|| floor_epochs.run(i))
        });
        group.bench_with_input(BenchmarkId::new("chimera", size), &input, |b, i| {
            b.to_async(&rt).iter(|| host.run(&agent, i))
        });
    }
    group.finish();
}

/// The boundary alone: passthrough returns its input, so a task is the
/// input copied into the guest and the output copied back (and, for
/// Chimera, the input and output limits checked).
fn payload_copy(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let bytes = std::fs::read(artifacts::PASSTHROUGH).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let floor = Floor::new(&bytes);
    let host = host(dir.path());
    let policy = Policy::from_file(&chimera_tests::repo_file("sample-agents/passthrough/policy.toml")).unwrap();
    let agent = host.load("passthrough", &bytes, policy).unwrap();
    let mut group = c.benchmark_group("payload_copy");
    for size in [100, 10 << 10, 64 << 10, 1 << 20] {
        let input = "a".repeat(size);
        assert_eq!(rt.block_on(host.run(&agent, &input)).outcome.as_deref(), Ok(input.as_str()));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("floor", size), &input, |b, i| b.to_async(&rt).iter(|| floor.run(i)));
        group.bench_with_input(BenchmarkId::new("chimera", size), &input, |b, i| {
            b.to_async(&rt).iter(|| host.run(&agent, i))
        });
    }
    group.finish();
}

/// A call into an instance kept alive between calls (no instantiation).
fn warm_call(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let bytes = std::fs::read(artifacts::WORD_COUNT).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let floor = Floor::new(&bytes);
    let host = host(dir.path());
    let agent = Arc::new(host.load("word-count", &bytes, Policy::default()).unwrap());
    let floor_epochs = Floor::with_epoch_checks(&bytes);
    let mut floor_warm = rt.block_on(floor.warm());
    let mut floor_epochs_warm = rt.block_on(floor_epochs.warm());
    let mut warm = rt.block_on(host.warm(agent)).unwrap();
    let input = r#"{"text":"a"}"#;
    assert_eq!(rt.block_on(warm.call(input)).as_deref(), Ok(rt.block_on(floor_warm.call(input)).as_str()));
    let mut group = c.benchmark_group("warm_call");
    group.bench_function("floor", |b| b.iter(|| rt.block_on(floor_warm.call(input))));
    // The floor with the epoch checks that the CPU limit compiles in.
    group.bench_function("floor_epoch_checks", |b| b.iter(|| rt.block_on(floor_epochs_warm.call(input))));
    group.bench_function("chimera", |b| b.iter(|| rt.block_on(warm.call(input)).unwrap()));
    group.finish();
}

fn capabilities(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    let echo = std::fs::read(artifacts::ECHO).unwrap();
    let counter = std::fs::read(artifacts::KV_COUNTER).unwrap();
    let logging = Policy::from_toml("[capabilities.logging]").unwrap();
    let kv = Policy::from_toml("[capabilities.logging]\n[capabilities.kv]").unwrap();
    let echo = host.load("echo", &echo, logging).unwrap();
    let counter = host.load("counter", &counter, kv).unwrap();
    let mut group = c.benchmark_group("capability");
    // One log line per task.
    group.bench_function("task_with_log_line", |b| b.to_async(&rt).iter(|| host.run(&echo, r#"{"text":"a"}"#)));
    // One durable KV increment (a redb commit) and one log line per task.
    group.bench_function("task_with_kv_increment", |b| {
        b.to_async(&rt).iter(|| host.run(&counter, r#"{"key":"bench"}"#))
    });
    // One KV get (a read transaction) per task.
    group.bench_function("task_with_kv_get", |b| {
        b.to_async(&rt).iter(|| host.run(&counter, r#"{"key":"bench","peek":true}"#))
    });
    // One KV set (a durable redb commit) per task.
    group.bench_function("task_with_kv_set", |b| {
        b.to_async(&rt).iter(|| host.run(&counter, r#"{"key":"bench","set":7}"#))
    });
    // The same get on a multi-thread runtime (as the daemon runs): the read
    // runs in place after the worker hands its other tasks on.
    let multi = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    group.bench_function("task_with_kv_get_multi_thread", |b| {
        b.to_async(&multi).iter(|| host.run(&counter, r#"{"key":"bench","peek":true}"#))
    });
    group.bench_function("task_with_log_line_multi_thread", |b| {
        b.to_async(&multi).iter(|| host.run(&echo, r#"{"text":"a"}"#))
    });
    group.finish();
}

fn scheduler(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(host(dir.path()));
    let bytes = std::fs::read(artifacts::WORD_COUNT).unwrap();
    let agent = Arc::new(host.load("word-count", &bytes, Policy::default()).unwrap());
    let entry = chimera_host::scheduler::AgentEntry { agent: agent.clone(), max_concurrency: 2 };
    let scheduler =
        rt.block_on(async { Scheduler::start(host.clone(), vec![entry], SchedulerConfig::default()).unwrap() });
    let submission = Submission {
        agent: "word-count".into(),
        input: r#"{"text":"a"}"#.into(),
        priority: Priority::Normal,
        ..Default::default()
    };
    let mut group = c.benchmark_group("scheduler");
    group.bench_function("direct_host_run", |b| b.to_async(&rt).iter(|| host.run(&agent, r#"{"text":"a"}"#)));
    // Submit, journal (two durable commits per task), run, poll until final.
    group.bench_function("submit_to_result", |b| {
        b.to_async(&rt).iter(|| async {
            let id = scheduler.submit(submission.clone()).await.unwrap();
            scheduler.wait(id).await.unwrap();
        })
    });
    group.finish();
}

fn loads(c: &mut Criterion) {
    let bytes = std::fs::read(artifacts::ECHO).unwrap();
    let policy = Policy::from_toml("[capabilities.logging]").unwrap();
    let cold_dir = tempfile::tempdir().unwrap();
    let cold = Host::new(HostConfig {
        data_dir: cold_dir.path().into(),
        max_instances: 4,
        cache_compiled: false,
        ..HostConfig::default()
    })
    .unwrap();
    let warm_dir = tempfile::tempdir().unwrap();
    let warm = host(warm_dir.path());
    warm.load("echo", &bytes, policy.clone()).unwrap();
    let mut group = c.benchmark_group("load");
    group.sample_size(20);
    group.bench_function("cold_compile", |b| b.iter(|| cold.load("echo", &bytes, policy.clone()).unwrap()));
    group.bench_function("cached", |b| b.iter(|| warm.load("echo", &bytes, policy.clone()).unwrap()));
    group.finish();
}

criterion_group!(benches, payloads, payload_copy, warm_call, capabilities, scheduler, loads);
criterion_main!(benches);
