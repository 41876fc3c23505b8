//! Fresh-instance tasks of word-count, on Chimera, on the floor, or both
//! in turns, for a profiler or a quick ratio on a noisy machine:
//!
//! - `bench-spawn-profile chimera|floor N`: N spawns of one side, for
//!   `valgrind --tool=callgrind --toggle-collect='tokio::runtime::runtime::Runtime::block_on*'`
//!   (instructions per spawn, whatever else the machine is doing);
//! - `bench-spawn-profile both N ROUNDS`: rounds of N spawns of each side in
//!   turn, printing the median ratio of the rounds (drift on a shared
//!   machine hits both sides of a round alike);
//! - `bench-spawn-profile warm N ROUNDS`: the same for calls into a live
//!   instance, against the floor with epoch checks compiled in (a warm
//!   call's gap to the plain floor is those checks; see `warm_call` in the
//!   `host` benchmark for both floors).
//!
//! The criterion benchmark `spawn` remains the figure of record.

use chimera_benches::Floor;
use chimera_host::{Agent, Host, HostConfig, Policy};
use chimera_tests::artifacts;
use std::time::Instant;

const INPUT: &str = r#"{"text":"a"}"#;
/// A small pool, so the reservation fits in what valgrind can map.
const POOL: u32 = 2;

async fn floor_runs(floor: &Floor, n: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(floor.run(INPUT).await);
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

async fn chimera_runs(host: &Host, agent: &Agent, n: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        let report = host.run(agent, INPUT).await;
        assert!(report.outcome.is_ok());
        std::hint::black_box(report);
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn report(mut ratios: Vec<f64>) {
    ratios.sort_by(f64::total_cmp);
    eprintln!(
        "ratio median {:.3}× (min {:.3}, max {:.3})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let side = args.next().unwrap_or_else(|| "both".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2_000);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let bytes = std::fs::read(artifacts::WORD_COUNT).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let floor = Floor::new_sized(&bytes, POOL);
    let host = Host::new(HostConfig {
        data_dir: dir.path().into(),
        max_instances: POOL,
        // In process: under valgrind the CPU features a child sees differ.
        compiler: chimera_host::compile::Compiler::InProcess,
        ..HostConfig::default()
    })
    .unwrap();
    let agent = std::sync::Arc::new(host.load("word-count", &bytes, Policy::default()).unwrap());
    rt.block_on(async {
        match side.as_str() {
            "floor" => eprintln!("floor: {n} spawns, {:.2} µs each", floor_runs(&floor, n).await),
            "chimera" => eprintln!("chimera: {n} spawns, {:.2} µs each", chimera_runs(&host, &agent, n).await),
            "both" => {
                let mut ratios = Vec::new();
                for round in 0..rounds {
                    let f = floor_runs(&floor, n).await;
                    let c = chimera_runs(&host, &agent, n).await;
                    eprintln!("round {round}: chimera {c:.2} µs, floor {f:.2} µs, {:.3}×", c / f);
                    ratios.push(c / f);
                }
                report(ratios);
            }
            "warm" => {
                let floor = Floor::with_epoch_checks(&bytes);
                let mut floor_warm = floor.warm().await;
                let mut warm = host.warm(agent.clone()).await.unwrap();
                let mut ratios = Vec::new();
                for round in 0..rounds {
                    let start = Instant::now();
                    for _ in 0..n {
                        std::hint::black_box(floor_warm.call(INPUT).await);
                    }
                    let f = start.elapsed().as_secs_f64() * 1e6 / n as f64;
                    let start = Instant::now();
                    for _ in 0..n {
                        std::hint::black_box(warm.call(INPUT).await.unwrap());
                    }
                    let c = start.elapsed().as_secs_f64() * 1e6 / n as f64;
                    eprintln!("round {round}: chimera {c:.3} µs, floor {f:.3} µs, {:.3}×", c / f);
                    ratios.push(c / f);
                }
                report(ratios);
            }
            other => panic!("unknown side `{other}`: floor, chimera, both or warm"),
        }
    });
}
