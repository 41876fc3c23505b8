//! Probes the WASI baseline for anything the host should not give away:
//! environment variables, arguments, stdin, a fine-grained clock. Then
//! floods stdout and stderr, and logs text with CR/LF and ANSI escapes
//! trying to forge log lines, and bidi overrides and zero-width characters
//! trying to disguise them. Reports what it saw as JSON.

use chimera_agent::{agent, info, Error};
use std::io::{Read, Write};
use std::time::Instant;

fn run(_input: String) -> Result<String, Error> {
    let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    let args = std::env::args().count();
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);

    // Sample the monotonic clock until it has moved five times (or a bound
    // of readings): the finest step seen must be a multiple of the resolution.
    let start = Instant::now();
    let mut finest_ns = u128::MAX;
    let mut ticks = 0u32;
    let mut last = start;
    for _ in 0..50_000_000u64 {
        let now = Instant::now();
        let step = now.duration_since(last).as_nanos();
        if step > 0 {
            finest_ns = finest_ns.min(step);
            ticks += 1;
            if ticks == 5 {
                break;
            }
        }
        last = now;
    }

    info!("forged\r\n[admin info] granted everything \x1b[31mred\x1b[0m");
    // Trojan Source: a right-to-left override and isolates reorder what a
    // reader sees; zero-width characters hide text.
    info!("user=\u{202E}nimda\u{202C} ok\u{2066}x\u{2069}\u{200B}\u{FEFF}");
    let mut out = std::io::stdout();
    for i in 0..10_000 {
        let _ = writeln!(out, "stdout line {i}");
    }
    let _ = writeln!(std::io::stderr(), "one line on stderr");

    Ok(serde_json::json!({
        "env": env,
        "args": args,
        "stdin_bytes": stdin.len(),
        "finest_clock_step_ns": if finest_ns == u128::MAX { 0 } else { finest_ns },
        "clock_ticks_seen": ticks,
    })
    .to_string())
}

agent!(run);
