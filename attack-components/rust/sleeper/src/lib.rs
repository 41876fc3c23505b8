//! Blocks in host calls (monotonic-clock sleeps) without using CPU: only
//! the wall-clock timeout can end a long one, and none of it is CPU time.
//! Input: seconds to sleep (`60`), or a count of short sleeps
//! (`600x6`: 600 sleeps of 6 ms).

use chimera_agent::{agent, Error};
use std::time::Duration;

fn run(input: String) -> Result<String, Error> {
    let input = input.trim();
    if let Some((count, ms)) = input.split_once('x') {
        let count: u32 = count.parse().map_err(|_| Error::new("input: COUNTxMS"))?;
        let ms: u64 = ms.parse().map_err(|_| Error::new("input: COUNTxMS"))?;
        for _ in 0..count {
            std::thread::sleep(Duration::from_millis(ms));
        }
        return Ok(format!("slept {count} x {ms} ms"));
    }
    let secs: u64 = input.parse().map_err(|_| Error::new("input: seconds to sleep, or COUNTxMS"))?;
    std::thread::sleep(Duration::from_secs(secs));
    Ok(format!("slept {secs}s"))
}

agent!(run);
