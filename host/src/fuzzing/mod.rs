//! Fuzz targets run as time-bounded property tests on stable Rust: each
//! target replays its corpus (inputs kept in the repository, under
//! `host/fuzz-corpus/`), then generates inputs with proptest until its time
//! is up, shrinking any failing one to a minimal case. The time per target
//! is `CHIMERA_FUZZ_SECONDS` (default 10; the test command sets 60), and each
//! target appends its executions and failures to `CHIMERA_FUZZ_REPORT`.

mod components;
mod policy;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::fmt::Debug;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Cases per proptest run; each run has a fresh random seed.
const CASES: u32 = 512;

fn budget() -> Duration {
    let seconds = std::env::var("CHIMERA_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10.0);
    Duration::from_secs_f64(seconds)
}

/// The lines of a corpus file under `host/fuzz-corpus/` (`#` starts a comment).
pub(crate) fn corpus(file: &str) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz-corpus").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines().filter(|l| !l.trim_start().starts_with('#') && !l.is_empty()).map(str::to_string).collect()
}

/// Runs `check` on every corpus input, then on generated ones until the
/// budget is spent; panics with the (shrunk) failing input if one fails.
pub(crate) fn run<S>(
    target: &str,
    corpus: impl IntoIterator<Item = S::Value>,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Clone + Debug,
{
    let start = Instant::now();
    let budget = budget();
    let mut executions = 0u64;
    for input in corpus {
        if let Err(e) = check(input.clone()) {
            record(target, executions, 1, start.elapsed());
            panic!("fuzz target {target}: corpus input {input:?} fails: {e}");
        }
        executions += 1;
    }
    while start.elapsed() < budget {
        let config = Config { cases: CASES, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new(config);
        if let Err(e) = runner.run(&strategy, &check) {
            record(target, executions, 1, start.elapsed());
            panic!("fuzz target {target}: {e}");
        }
        executions += u64::from(CASES);
    }
    record(target, executions, 0, start.elapsed());
}

fn record(target: &str, executions: u64, failures: u32, took: Duration) {
    let line = format!("{target}: {executions} executions, {failures} failures, {:.1} s", took.as_secs_f64());
    eprintln!("{line}");
    if let Ok(path) = std::env::var("CHIMERA_FUZZ_REPORT") {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path);
        if let Ok(mut file) = file {
            let _ = writeln!(file, "{line}");
        }
    }
}
