//! Concurrent scaling: 1, 2, 5, 10, 20 and 50 tasks of a trivial agent in
//! flight at once on a 2-worker runtime, Chimera vs the raw-wasmtime floor.
//! Criterion reports time per batch; throughput is batch / time. Each task's
//! own latency (batch start to its end) is recorded too, and the p99 of each
//! side at each width is written to `target/criterion/scaling-p99.json` for
//! `bench-report`.

use chimera_benches::Floor;
use chimera_host::{Host, HostConfig, Policy};
use chimera_tests::artifacts;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Per-task latencies, by (side, tasks in flight).
type Latencies = Arc<Mutex<BTreeMap<(&'static str, usize), Vec<Duration>>>>;

fn record(latencies: &Latencies, side: &'static str, n: usize, took: Duration) {
    latencies.lock().unwrap().entry((side, n)).or_default().push(took);
}

const INPUT: &str = r#"{"text":"a"}"#;

fn scaling(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let bytes = std::fs::read(artifacts::WORD_COUNT).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let floor = Arc::new(Floor::new_sized(&bytes, 64));
    let host =
        Host::new(HostConfig { data_dir: dir.path().into(), max_instances: 64, ..HostConfig::default() }).unwrap();
    let agent = Arc::new(host.load("word-count", &bytes, Policy::default()).unwrap());
    let latencies: Latencies = Arc::default();
    let mut group = c.benchmark_group("scaling");
    for n in [1usize, 2, 5, 10, 20, 50] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("floor", n), &n, |b, &n| {
            b.to_async(&rt).iter(|| async {
                let start = Instant::now();
                let tasks: Vec<_> = (0..n)
                    .map(|_| {
                        let (floor, latencies) = (floor.clone(), latencies.clone());
                        tokio::spawn(async move {
                            floor.run(INPUT).await;
                            record(&latencies, "floor", n, start.elapsed());
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("chimera", n), &n, |b, &n| {
            b.to_async(&rt).iter(|| async {
                let start = Instant::now();
                let tasks: Vec<_> = (0..n)
                    .map(|_| {
                        let (host, agent, latencies) = (host.clone(), agent.clone(), latencies.clone());
                        tokio::spawn(async move {
                            let report = host.run(&agent, INPUT).await;
                            record(&latencies, "chimera", n, start.elapsed());
                            report
                        })
                    })
                    .collect();
                for t in tasks {
                    assert!(t.await.unwrap().outcome.is_ok());
                }
            })
        });
    }
    group.finish();
    write_p99(&latencies);
}

fn write_p99(latencies: &Latencies) {
    let mut out = serde_json::Map::new();
    for ((side, n), mut samples) in std::mem::take(&mut *latencies.lock().unwrap()) {
        samples.sort();
        let p99 = samples[(samples.len() * 99 / 100).min(samples.len() - 1)];
        out.insert(format!("{side}/{n}"), (p99.as_nanos() as f64).into());
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("scaling-p99.json"), serde_json::Value::Object(out).to_string());
}

criterion_group!(benches, scaling);
criterion_main!(benches);
