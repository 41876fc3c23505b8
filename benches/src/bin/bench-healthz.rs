//! `/healthz` latency of a real `chimera serve` while four abusive agents
//! run (each in a loop of heavy `log` calls, the host's own work), against
//! the floor: the same daemon idle, measured in the same run. Prints p50 and
//! p99 of each side and the ratio; the goal is a p99 under 50 ms.
//!
//! `cargo run --release -p chimera-benches --bin bench-healthz [-- PROBES]`;
//! also writes `target/criterion/healthz.json` for `bench-report`.

use chimera_tests::{agent_entry, artifacts, policy_file, Api, DaemonProcess};
use serde_json::json;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn probe(api: &Api, n: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let (status, _) = api.get("/healthz").await;
        times.push(start.elapsed());
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    times.sort();
    times
}

#[tokio::main]
async fn main() {
    let probes: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    // CPU for minutes, so every task outlives the measurement; cancelled after.
    let heavy =
        policy_file(dir.path(), "heavy", "[limits]\ncpu_ms = 600000\ntimeout_ms = 600000\n[capabilities.logging]\n");
    let config = format!(
        "data_dir = \"data\"\nmax_instances = 16\n[scheduler]\nworkers = 8\n\n{}",
        agent_entry("heavy", artifacts::LOG_HEAVY, &heavy, 4)
    );
    let daemon = DaemonProcess::start(dir.path(), &config);
    let api = Api::new(&daemon);
    let idle = probe(&api, probes).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(api.submit_ok(json!({"agent": "heavy"})).await);
    }
    for id in &ids {
        api.wait_running(id).await;
    }
    let abused = probe(&api, probes).await;
    for id in &ids {
        assert_eq!(api.task(id).await["status"], "running", "an abusive task ended before the measurement did");
        api.cancel(id).await;
    }
    let (i50, i99) = (percentile(&idle, 0.5), percentile(&idle, 0.99));
    let (a50, a99) = (percentile(&abused, 0.5), percentile(&abused, 0.99));
    let ns = |d: Duration| d.as_nanos() as f64;
    let report = json!({"idle_p50": ns(i50), "idle_p99": ns(i99), "abused_p50": ns(a50), "abused_p99": ns(a99)});
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("healthz.json"), report.to_string()).unwrap();
    println!("| /healthz, {probes} probes | p50 | p99 | p99 ratio | goal | result |");
    println!("|---|---:|---:|---:|---|---|");
    println!("| idle daemon (floor) | {i50:.2?} | {i99:.2?} | 1.00× | — | — |");
    println!(
        "| 4 agents abusing host calls | {a50:.2?} | {a99:.2?} | {:.2}× | p99 < 50 ms | {} |",
        a99.as_secs_f64() / i99.as_secs_f64(),
        if a99 < Duration::from_millis(50) { "pass" } else { "miss" }
    );
}
