//! A soak of a real `chimera serve`: TASKS trivial tasks (passthrough of a
//! 256-byte input) submitted through the HTTP API by 16 clients, with the
//! daemon's resident memory and data directory sampled as they go. After
//! warm-up (the first fifth, and until retention starts deleting) a least-
//! squares line is fitted to each; flat means a slope near zero per
//! 100,000 tasks. Every accepted task must end completed (counted from
//! `/metrics`).
//!
//! `cargo run --release -p chimera-benches --bin bench-soak [-- TASKS [RETAIN]]`
//! (default 1,000,000 tasks, keeping 100,000 finished ones).

use chimera_tests::{agent_entry, artifacts, policy_file, Api, DaemonProcess};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

const CLIENTS: u64 = 16;
const SAMPLES: u64 = 50;

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).unwrap().filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()
}

/// Slope of the least-squares line through `points`, per unit of x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let cov: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    cov / var
}

fn completed(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("chimera_scheduler_finished_total{agent=\"pass\",status=\"completed\"} "))
        .map_or(0, |v| v.parse::<f64>().unwrap() as u64)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let tasks: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let retain: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let pass = policy_file(dir.path(), "pass", "");
    let config = format!(
        "data_dir = \"data\"\nmax_instances = 64\n[scheduler]\nmax_queued = 100000\n\
         [scheduler.retain_finished]\nmax_count = {retain}\n\n{}",
        agent_entry("pass", artifacts::PASSTHROUGH, &pass, 8)
    );
    let daemon = DaemonProcess::start(dir.path(), &config);
    let api = Arc::new(Api::new(&daemon));
    let data = dir.path().join("data");
    let input = "p".repeat(256);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (api, next, input) = (api.clone(), next.clone(), input.clone());
            tokio::spawn(async move {
                let mut accepted = 0u64;
                while next.fetch_add(1, Ordering::Relaxed) < tasks {
                    loop {
                        let (code, body) = api.submit(json!({"agent": "pass", "input": input})).await;
                        match code {
                            202 => break,
                            429 => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                            _ => panic!("{code} {body}"),
                        }
                    }
                    accepted += 1;
                }
                accepted
            })
        })
        .collect();
    println!("{:>10} {:>10} {:>12} {:>12} {:>9}", "submitted", "completed", "rss_kib", "data_kib", "secs");
    let mut samples = Vec::new();
    let mut last = 0;
    while last < tasks {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let submitted = next.load(Ordering::Relaxed).min(tasks);
        let done = completed(&api.get("/metrics").await.1);
        if done >= last + tasks / SAMPLES || done >= tasks {
            last = done;
            let (rss, disk) = (daemon.rss_kib(), dir_bytes(&data) >> 10);
            println!("{submitted:>10} {done:>10} {rss:>12} {disk:>12} {:>9.1}", start.elapsed().as_secs_f64());
            samples.push((done as f64, rss as f64, disk as f64));
        }
    }
    let mut accepted = 0;
    for c in clients {
        accepted += c.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let done = completed(&api.get("/metrics").await.1);
    let health: serde_json::Value = serde_json::from_str(&api.get("/healthz").await.1).unwrap();
    assert_eq!(done, accepted, "{accepted} accepted, {done} completed");
    assert_eq!((&health["queued"], &health["in_memory"]), (&json!(0), &json!(0)), "{health}");
    // Warm-up: the first fifth, and until retention keeps its full count.
    let warm = (tasks / 5).max(retain + retain / 5) as f64;
    let steady: Vec<_> = samples.iter().filter(|s| s.0 >= warm).collect();
    let per_100k = |pick: fn(&(f64, f64, f64)) -> f64| {
        let points: Vec<(f64, f64)> = steady.iter().map(|s| (s.0, pick(s))).collect();
        if points.len() < 3 {
            return f64::NAN;
        }
        slope(&points) * 100_000.0
    };
    let rss: Vec<f64> = steady.iter().map(|s| s.1).collect();
    let disk: Vec<f64> = steady.iter().map(|s| s.2).collect();
    let range = |v: &[f64]| (v.iter().cloned().fold(f64::MAX, f64::min), v.iter().cloned().fold(0.0, f64::max));
    println!(
        "\n{accepted} tasks accepted and completed in {elapsed:.0} s ({:.0}/s end to end); after {warm:.0} tasks:",
        accepted as f64 / elapsed
    );
    let (lo, hi) = range(&rss);
    println!("RSS       {lo:.0}–{hi:.0} KiB, slope {:+.0} KiB per 100k tasks", per_100k(|s| s.1));
    let (lo, hi) = range(&disk);
    println!("data dir  {lo:.0}–{hi:.0} KiB, slope {:+.0} KiB per 100k tasks", per_100k(|s| s.2));
}
