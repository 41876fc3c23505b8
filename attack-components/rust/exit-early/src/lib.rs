//! Leaves through `wasi:cli/exit` (`std::process::exit`) instead of
//! returning a result. Input: the exit status. The host reports an exit,
//! with its status, not a trap.

use chimera_agent::{agent, Error};

fn run(input: String) -> Result<String, Error> {
    std::process::exit(input.trim().parse().unwrap_or(1))
}

agent!(run);
