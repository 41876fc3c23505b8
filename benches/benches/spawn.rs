//! Spawn latency: store + instantiate + call + drop of a trivial agent
//! (word-count on a one-word input), Chimera vs the raw-wasmtime floor in
//! the same run.

use chimera_benches::Floor;
use chimera_host::{Host, HostConfig, Policy};
use chimera_tests::artifacts;
use criterion::{criterion_group, criterion_main, Criterion};

const INPUT: &str = r#"{"text":"a"}"#;

fn spawn(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let bytes = std::fs::read(artifacts::WORD_COUNT).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let floor = Floor::new(&bytes);
    let floor_epochs = Floor::with_epoch_checks(&bytes);
    let host =
        Host::new(HostConfig { data_dir: dir.path().into(), max_instances: 16, ..HostConfig::default() }).unwrap();
    let agent = host.load("word-count", &bytes, Policy::default()).unwrap();
    let expected = rt.block_on(floor.run(INPUT));
    assert_eq!(rt.block_on(host.run(&agent, INPUT)).outcome.as_deref(), Ok(expected.as_str()));

    let quiet_dir = tempfile::tempdir().unwrap();
    let quiet = Host::new(HostConfig {
        data_dir: quiet_dir.path().into(),
        max_instances: 16,
        metrics: false,
        ..HostConfig::default()
    })
    .unwrap();
    let quiet_agent = quiet.load("word-count", &bytes, Policy::default()).unwrap();

    let mut group = c.benchmark_group("spawn");
    group.bench_function("floor", |b| b.to_async(&rt).iter(|| floor.run(INPUT)));
    // The floor with the epoch checks that Chimera's CPU limit compiles into
    // the guest's code: how much of the gap they are.
    group.bench_function("floor_epoch_checks", |b| b.to_async(&rt).iter(|| floor_epochs.run(INPUT)));
    group.bench_function("chimera", |b| b.to_async(&rt).iter(|| host.run(&agent, INPUT)));
    // The same with per-task metrics off: the cost of metrics.
    group.bench_function("chimera_metrics_off", |b| b.to_async(&rt).iter(|| quiet.run(&quiet_agent, INPUT)));
    group.finish();
}

criterion_group!(benches, spawn);
criterion_main!(benches);
