//! Concurrent scaling: 1, 2, 5, 10, 20 and 50 tasks of a trivial agent in
//! flight at once on a 2-worker runtime, Chimera vs the raw-wasmtime floor.
//! Criterion reports time per batch; throughput is batch / time.

use chimera_benches::Floor;
use chimera_host::{Host, HostConfig, Policy};
use chimera_tests::artifacts;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const INPUT: &str = r#"{"text":"a"}"#;

fn scaling(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let bytes = std::fs::read(artifacts::WORD_COUNT).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let floor = std::sync::Arc::new(Floor::new_sized(&bytes, 64));
    let host =
        Host::new(HostConfig { data_dir: dir.path().into(), max_instances: 64, ..HostConfig::default() }).unwrap();
    let agent = std::sync::Arc::new(host.load("word-count", &bytes, Policy::default()).unwrap());
    let mut group = c.benchmark_group("scaling");
    for n in [1usize, 2, 5, 10, 20, 50] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("floor", n), &n, |b, &n| {
            b.to_async(&rt).iter(|| async {
                let tasks: Vec<_> = (0..n)
                    .map(|_| {
                        let floor = floor.clone();
                        tokio::spawn(async move { floor.run(INPUT).await })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("chimera", n), &n, |b, &n| {
            b.to_async(&rt).iter(|| async {
                let tasks: Vec<_> = (0..n)
                    .map(|_| {
                        let (host, agent) = (host.clone(), agent.clone());
                        tokio::spawn(async move { host.run(&agent, INPUT).await })
                    })
                    .collect();
                for t in tasks {
                    assert!(t.await.unwrap().outcome.is_ok());
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, scaling);
criterion_main!(benches);
