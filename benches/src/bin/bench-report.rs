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

/// (label, chimera id, floor id, target ratio, bytes per iteration)
type Row = (&'static str, &'static str, &'static str, Option<f64>, Option<f64>);

fn main() {
    let root = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target/criterion"));
    let rows: &[Row] = &[
        ("spawn: store + instantiate + call + drop", "spawn/chimera", "spawn/floor", Some(1.1), None),
        ("metrics overhead: on vs off", "spawn/chimera", "spawn/chimera_metrics_off", Some(1.03), None),
        ("payload 100 B (word-count)", "payload/chimera/100", "payload/floor/100", None, Some(100.0)),
        ("payload 10 KiB (word-count)", "payload/chimera/10240", "payload/floor/10240", None, Some(10240.0)),
        ("payload 1 MiB (word-count)", "payload/chimera/1048576", "payload/floor/1048576", None, Some(1048576.0)),
        (
            "scheduler: submit → result vs direct run",
            "scheduler/submit_to_result",
            "scheduler/direct_host_run",
            None,
            None,
        ),
        ("1 task in flight", "scaling/chimera/1", "scaling/floor/1", None, None),
        ("10 tasks in flight", "scaling/chimera/10", "scaling/floor/10", None, None),
        ("50 tasks in flight", "scaling/chimera/50", "scaling/floor/50", None, None),
        ("load: cached vs cold compile", "load/cached", "load/cold_compile", None, None),
        ("task with one log line", "capability/task_with_log_line", "spawn/floor", None, None),
        ("task with one KV increment", "capability/task_with_kv_increment", "spawn/floor", None, None),
    ];
    println!("| benchmark | chimera | floor | ratio | target | result |");
    println!("|---|---|---|---|---|---|");
    for (label, chimera, floor, target, bytes) in rows {
        let (Some(c), Some(f)) = (median_ns(&root, chimera), median_ns(&root, floor)) else {
            println!("| {label} | not run | | | | |");
            continue;
        };
        let ratio = c / f;
        let rate =
            |ns: f64| bytes.map(|b| format!(" ({:.0} MiB/s)", b / (ns / 1e9) / (1 << 20) as f64)).unwrap_or_default();
        let (target_text, result) = match target {
            Some(t) => (format!("≤ {t:.2}×"), if ratio <= *t { "pass" } else { "miss" }),
            None => ("—".to_string(), "measured"),
        };
        println!(
            "| {label} | {}{} | {}{} | {ratio:.2}× | {target_text} | {result} |",
            show(c),
            rate(c),
            show(f),
            rate(f)
        );
    }
}
