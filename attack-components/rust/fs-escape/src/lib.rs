//! Tries to read a host file through the standard library, which makes the
//! component import `wasi:filesystem`. Must be refused at load.

use chimera_agent::{agent, Error};

fn run(_input: String) -> Result<String, Error> {
    Ok(std::fs::read_to_string("/etc/passwd")?)
}

agent!(run);
