//! Asks the host for stdout handles in a loop and never drops them, to
//! exhaust the host's resource table.

use chimera_agent::{agent, Error};

fn run(_input: String) -> Result<String, Error> {
    let mut held = 0u64;
    loop {
        std::mem::forget(wasip2::cli::stdout::get_stdout());
        held += 1;
        if held == u64::MAX {
            return Ok(held.to_string());
        }
    }
}

agent!(run);
