//! Prints the latest criterion results as one markdown table: each
//! benchmark, Chimera, its floor from the same run, the ratio, the target.
//! Run `cargo bench -p chimera-benches` first.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// The median of a criterion benchmark, in nanoseconds.
fn median_ns(root: &Path, id: &str) -> Option<f64> {
    let text = std::fs::read_to_string(root.join(id).join("new/estimates.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn show(ns: f64) -> String {
    match ns {
        n if n >= 1e6 => format!("{:.2} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.2} µs", n / 1e3),
        n => format!("{n:.0} ns"),
    }
}

/// What a row is held to.
#[derive(Clone, Copy)]
enum Target {
    /// Only measured.
    None,
    /// Chimera's time at most this many times the floor's.
    MaxRatio(f64),
    /// Chimera's rate at least this fraction of the floor's (time ratio ≤ 1 / fraction).
    MinShareOfRate(f64),
    /// Chimera moves at least this many MiB/s.
    MinMibPerSec(f64),
}

/// One row: label, chimera id, floor id, target, bytes per iteration, tasks per iteration.
struct Row {
    label: &'static str,
    chimera: &'static str,
    floor: &'static str,
    target: Target,
    bytes: Option<f64>,
    tasks: Option<f64>,
}

const fn row(label: &'static str, chimera: &'static str, floor: &'static str, target: Target) -> Row {
    Row { label, chimera, floor, target, bytes: None, tasks: None }
}

const fn bytes(mut r: Row, n: f64) -> Row {
    r.bytes = Some(n);
    r
}

const fn tasks(mut r: Row, n: f64) -> Row {
    r.tasks = Some(n);
    r
}

fn main() {
    use Target::*;
    let root = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target/criterion"));
    let rows = [
        row("spawn: store + instantiate + call + drop", "spawn/chimera", "spawn/floor", MaxRatio(1.1)),
        row("warm call: call into a live instance", "warm_call/chimera", "warm_call/floor", MaxRatio(1.2)),
        tasks(
            row(
                "throughput: 200 trivial tasks, scheduler end to end (64 workers, the default here) vs 2 raw threads",
                "throughput/chimera_scheduler_64_workers",
                "throughput/floor_two_threads",
                MinShareOfRate(0.8),
            ),
            200.0,
        ),
        tasks(
            row(
                "throughput: the same with 2 workers",
                "throughput/chimera_scheduler_2_workers",
                "throughput/floor_two_threads",
                None,
            ),
            200.0,
        ),
        row(
            "scheduler: submit → result vs direct run",
            "scheduler/submit_to_result",
            "scheduler/direct_host_run",
            None,
        ),
        row(
            "retry: fails once then succeeds vs succeeds at once",
            "retry/fails_once_then_succeeds",
            "retry/succeeds_at_once",
            None,
        ),
        row("metrics overhead: on vs off", "spawn/chimera", "spawn/chimera_metrics_off", MaxRatio(1.03)),
        row(
            "queue: push + pop, 2 threads contending (vs Mutex<VecDeque>)",
            "queue/ready_queue",
            "queue/floor_mutex_vecdeque",
            None,
        ),
        bytes(
            row("payload copy 100 B (passthrough)", "payload_copy/chimera/100", "payload_copy/floor/100", None),
            100.0,
        ),
        bytes(
            row("payload copy 10 KiB (passthrough)", "payload_copy/chimera/10240", "payload_copy/floor/10240", None),
            10240.0,
        ),
        bytes(
            row(
                "payload copy 64 KiB (passthrough)",
                "payload_copy/chimera/65536",
                "payload_copy/floor/65536",
                MinMibPerSec(1024.0),
            ),
            65536.0,
        ),
        bytes(
            row(
                "payload copy 1 MiB (passthrough)",
                "payload_copy/chimera/1048576",
                "payload_copy/floor/1048576",
                MinMibPerSec(1024.0),
            ),
            1048576.0,
        ),
        bytes(row("payload 100 B (word-count parse)", "payload/chimera/100", "payload/floor/100", None), 100.0),
        bytes(row("payload 10 KiB (word-count parse)", "payload/chimera/10240", "payload/floor/10240", None), 10240.0),
        bytes(
            row("payload 1 MiB (word-count parse)", "payload/chimera/1048576", "payload/floor/1048576", None),
            1048576.0,
        ),
        bytes(
            row(
                "payload 1 MiB (word-count parse) vs floor with epoch checks",
                "payload/chimera/1048576",
                "payload/floor_epoch_checks/1048576",
                None,
            ),
            1048576.0,
        ),
        row("1 task in flight", "scaling/chimera/1", "scaling/floor/1", None),
        row("10 tasks in flight", "scaling/chimera/10", "scaling/floor/10", None),
        row("50 tasks in flight", "scaling/chimera/50", "scaling/floor/50", None),
        row("load: cached vs cold compile", "load/cached", "load/cold_compile", None),
        row("task with one log line", "capability/task_with_log_line", "spawn/floor", None),
        row("task with one KV increment", "capability/task_with_kv_increment", "spawn/floor", None),
        row("task with one KV get", "capability/task_with_kv_get", "spawn/floor", None),
        row("task with one KV set", "capability/task_with_kv_set", "spawn/floor", None),
        row(
            "task with one KV get, multi-thread runtime, vs one log line",
            "capability/task_with_kv_get_multi_thread",
            "capability/task_with_log_line_multi_thread",
            None,
        ),
    ];
    println!("| benchmark | chimera | floor | ratio | target | result |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        let (Some(c), Some(f)) = (median_ns(&root, r.chimera), median_ns(&root, r.floor)) else {
            println!("| {} | not run | | | | |", r.label);
            continue;
        };
        let ratio = c / f;
        let rate = |ns: f64| {
            let mut extra = String::new();
            if let Some(b) = r.bytes {
                extra += &format!(" ({:.0} MiB/s)", b / (ns / 1e9) / (1 << 20) as f64);
            }
            if let Some(t) = r.tasks {
                extra += &format!(" ({:.0} tasks/s)", t / (ns / 1e9));
            }
            extra
        };
        let pass = |ok: bool| if ok { "pass" } else { "miss" };
        let (target_text, result) = match r.target {
            Target::None => ("—".to_string(), "measured"),
            Target::MaxRatio(t) => (format!("≤ {t:.2}×"), pass(ratio <= t)),
            Target::MinShareOfRate(share) => (
                format!("≥ {:.0}% of floor's rate (now {:.0}%)", share * 100.0, 100.0 / ratio),
                pass(1.0 / ratio >= share),
            ),
            Target::MinMibPerSec(min) => {
                let mibs = r.bytes.unwrap_or(0.0) / (c / 1e9) / (1 << 20) as f64;
                (format!("≥ {:.0} GiB/s", min / 1024.0), pass(mibs >= min))
            }
        };
        println!(
            "| {} | {}{} | {}{} | {ratio:.2}× | {target_text} | {result} |",
            r.label,
            show(c),
            rate(c),
            show(f),
            rate(f)
        );
    }
    print_scaling_p99(&root);
    print_healthz(&root);
}

/// `/healthz` latency under abuse, if `bench-healthz` ran.
fn print_healthz(root: &Path) {
    let Some(h) =
        std::fs::read_to_string(root.join("healthz.json")).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok())
    else {
        return;
    };
    let ns = |key: &str| h[key].as_f64().unwrap_or(f64::NAN);
    let (a99, i99) = (ns("abused_p99"), ns("idle_p99"));
    println!();
    println!("| /healthz (bench-healthz) | p50 | p99 | p99 ratio | goal | result |");
    println!("|---|---|---|---|---|---|");
    println!("| idle daemon (floor) | {} | {} | 1.00× | — | — |", show(ns("idle_p50")), show(i99));
    println!(
        "| 4 agents abusing host calls | {} | {} | {:.2}× | p99 < 50 ms | {} |",
        show(ns("abused_p50")),
        show(a99),
        a99 / i99,
        if a99 < 50e6 { "pass" } else { "miss" }
    );
}

/// The p99 task latency at each width of the scaling bench, if it ran.
fn print_scaling_p99(root: &Path) {
    let Some(p99) = std::fs::read_to_string(root.join("scaling-p99.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    else {
        return;
    };
    println!();
    println!("| tasks in flight | chimera p99 latency | floor p99 latency | ratio |");
    println!("|---|---|---|---|");
    for n in [1, 2, 5, 10, 20, 50] {
        let (Some(c), Some(f)) = (p99[format!("chimera/{n}")].as_f64(), p99[format!("floor/{n}")].as_f64()) else {
            continue;
        };
        println!("| {n} | {} | {} | {:.2}× |", show(c), show(f), c / f);
    }
}
