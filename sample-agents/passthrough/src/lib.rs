//! passthrough: returns its input unchanged. It does no work of its own, so
//! a task of it measures the component boundary alone: the input copied into
//! the guest and the output copied back out. Grants needed: none.

use chimera_agent::{agent, Error};

fn run(input: String) -> Result<String, Error> {
    Ok(input)
}

agent!(run);
