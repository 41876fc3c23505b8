//! flaky: fails with a retryable error the first `fail_times` times it runs
//! for a `key`, then succeeds — a stand-in for a transient upstream outage,
//! to show the scheduler's retries. Input `{"key": "job-1", "fail_times": 2}`,
//! output `{"key": "job-1", "attempt": 3}`. Grants needed: kv.

use chimera_agent::{agent, kv, Error};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Input {
    key: String,
    fail_times: i64,
}

#[derive(Serialize)]
struct Output {
    key: String,
    attempt: i64,
}

fn run(input: Input) -> Result<Output, Error> {
    let attempt = kv::increment(&format!("flaky/{}", input.key), 1)?;
    if attempt <= input.fail_times {
        return Err(Error::retryable(format!("transient failure {attempt} of {}", input.fail_times)));
    }
    Ok(Output { key: input.key, attempt })
}

agent!(json run);
