//! Resident memory per live idle instance: 1,000 tasks of the `sleeper`
//! agent held blocked in a host call at once (each a live instance in the
//! pool), against the floor: 1,000 live instances of the same component in
//! raw wasmtime. Prints resident bytes per instance for both.

use chimera_host::{Host, HostConfig, Policy};
use chimera_tests::artifacts;
use std::time::Duration;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

const LIVE: usize = 1_000;

fn main() {
    // Each side runs in a process of its own, so neither inherits the other's freed memory.
    match std::env::args().nth(1).as_deref() {
        Some("floor") => println!("{}", floor()),
        Some("chimera") => println!("{}", chimera()),
        _ => {
            let side = |name: &str| -> u64 {
                let out = std::process::Command::new(std::env::current_exe().unwrap()).arg(name).output().unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
            };
            let (chimera_per, floor_per) = (side("chimera"), side("floor"));
            println!("| live idle instances | resident per instance (chimera) | floor (raw wasmtime) | ratio |");
            println!("|---|---|---|---|");
            println!(
                "| {LIVE} | {:.1} KiB | {:.1} KiB | {:.2}× |",
                chimera_per as f64 / 1024.0,
                floor_per as f64 / 1024.0,
                chimera_per as f64 / floor_per.max(1) as f64
            );
        }
    }
}

fn floor() -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let bytes = std::fs::read(artifacts::SLEEPER).unwrap();

    // Floor: raw wasmtime running the same tasks, all blocked in the same sleep.
    let floor = chimera_benches::Floor::new_sized(&bytes, LIVE as u32);
    let floor_per = rt.block_on(async {
        let before = resident_bytes();
        let tasks: Vec<_> = (0..LIVE).map(|_| floor.run("2")).collect();
        let measure = async {
            // All instances start within a few ms; the sleep lasts 2 s.
            tokio::time::sleep(Duration::from_millis(1000)).await;
            (resident_bytes() - before) / LIVE as u64
        };
        let (per, outputs) = tokio::join!(measure, futures::future::join_all(tasks));
        assert!(outputs.iter().all(|o| o == "slept 2s"));
        per
    });
    floor_per
}

fn chimera() -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let bytes = std::fs::read(artifacts::SLEEPER).unwrap();
    // Chimera: LIVE tasks blocked in a clock sleep, all at once.
    let dir = tempfile::tempdir().unwrap();
    let host =
        Host::new(HostConfig { data_dir: dir.path().into(), max_instances: LIVE as u32, ..HostConfig::default() })
            .expect("a pool of 1,000 instances fits");
    let agent = host.load("sleeper", &bytes, Policy::from_toml("[limits]\ntimeout_ms = 60000\n").unwrap()).unwrap();
    let chimera_per = rt.block_on(async {
        let before = resident_bytes();
        let tasks: Vec<_> = (0..LIVE).map(|_| host.run(&agent, "2")).collect();
        let measure = async {
            let live = || {
                let m = host.metrics().encode();
                m.lines().find_map(|l| l.strip_prefix("chimera_live_instances ")?.parse::<usize>().ok())
            };
            while live() != Some(LIVE) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (resident_bytes() - before) / LIVE as u64
        };
        let (per, reports) = tokio::join!(measure, futures::future::join_all(tasks));
        assert!(reports.iter().all(|r| r.outcome.as_deref() == Ok("slept 2s")));
        per
    });
    chimera_per
}
