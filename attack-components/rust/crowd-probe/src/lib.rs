//! Measures how many of its own tasks run at once: counts itself in with a
//! KV increment, records the highest count seen (compare-and-swap), stays a
//! while (a sleep, no CPU), counts itself out. Called by many agents at once,
//! it shows whether its `max_concurrency` held. Input: milliseconds to stay.

use chimera_agent::{agent, info, kv, Error};

fn run(input: String) -> Result<String, Error> {
    let stay: u64 = input.trim().parse().unwrap_or(100);
    let fail = |e: kv::KvError| Error::new(format!("{e:?}"));
    let now = kv::increment("running", 1).map_err(fail)?;
    loop {
        let peak = kv::get_string("peak").map_err(fail)?;
        let seen: i64 = peak.as_deref().and_then(|p| p.parse().ok()).unwrap_or(0);
        if seen >= now {
            break;
        }
        if kv::compare_and_swap("peak", peak.as_deref().map(str::as_bytes), now.to_string().as_bytes()).map_err(fail)? {
            break;
        }
    }
    info!("running with {now} at once");
    std::thread::sleep(std::time::Duration::from_millis(stay));
    kv::increment("running", -1).map_err(fail)?;
    Ok(now.to_string())
}

agent!(run);
