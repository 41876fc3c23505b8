//! Blocks in a host call (a monotonic-clock sleep) without using CPU: only
//! the wall-clock timeout can end it. Input: seconds to sleep.

use chimera_agent::{agent, Error};

fn run(input: String) -> Result<String, Error> {
    let secs: u64 = input.trim().parse().map_err(|_| Error::new("input: seconds to sleep"))?;
    std::thread::sleep(std::time::Duration::from_secs(secs));
    Ok(format!("slept {secs}s"))
}

agent!(run);
