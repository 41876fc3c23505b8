//! Cold compile vs cached load of the big components: the Python and
//! JavaScript sample agents (CPython / SpiderMonkey inside) beside the small
//! Rust echo agent. Cold: a host with an empty compiled-component cache
//! loads the agent (compile + link + pre-instantiate). Cached: a new host
//! (a restart) on the same data directory loads it again. Prints a markdown
//! table. Whole seconds of compile are too slow for criterion's sampling;
//! each cold figure is the best of `COLD_RUNS`, each cached one the median
//! of `CACHED_RUNS`.

use chimera_host::{Host, HostConfig, Policy};
use chimera_tests::{artifacts, repo_file};
use std::time::{Duration, Instant};

const COLD_RUNS: usize = 2;
const CACHED_RUNS: usize = 9;

fn host(dir: &std::path::Path) -> Host {
    Host::new(HostConfig { data_dir: dir.into(), max_instances: 4, ..HostConfig::default() }).expect("host starts")
}

fn time_load(dir: &std::path::Path, name: &str, bytes: &[u8], policy: &Policy) -> Duration {
    let host = host(dir);
    let start = Instant::now();
    host.load(name, bytes, policy.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    start.elapsed()
}

fn main() {
    let agents = [
        ("echo (Rust)", artifacts::ECHO, "sample-agents/echo/policy.toml"),
        ("kv-counter-py (Python)", artifacts::KV_COUNTER_PY, "sample-agents/kv-counter-py/policy.toml"),
        ("kv-counter-js (JavaScript)", artifacts::KV_COUNTER_JS, "sample-agents/kv-counter-js/policy.toml"),
    ];
    println!("| component | size | cold compile + load | cached load (restart) | ratio |");
    println!("|---|---:|---:|---:|---:|");
    for (label, path, policy_file) in agents {
        let bytes = std::fs::read(path).unwrap();
        let policy = Policy::from_file(&repo_file(policy_file)).unwrap();
        let name = policy.agent.name.clone().unwrap_or_else(|| "echo".into());
        let mut cold = Duration::MAX;
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..COLD_RUNS {
            let fresh = tempfile::tempdir().unwrap();
            cold = cold.min(time_load(fresh.path(), &name, &bytes, &policy));
        }
        time_load(dir.path(), &name, &bytes, &policy); // fills the cache
        let mut cached: Vec<Duration> =
            (0..CACHED_RUNS).map(|_| time_load(dir.path(), &name, &bytes, &policy)).collect();
        cached.sort();
        let cached = cached[CACHED_RUNS / 2];
        println!(
            "| {label} | {:.1} MB | {:.2} s | {:.1} ms | {:.0}x |",
            bytes.len() as f64 / 1e6,
            cold.as_secs_f64(),
            cached.as_secs_f64() * 1e3,
            cold.as_secs_f64() / cached.as_secs_f64()
        );
    }
}
