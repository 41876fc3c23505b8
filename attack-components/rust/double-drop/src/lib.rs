//! Drops the same stream handle twice.

use chimera_agent::{agent, Error};
use wasip2::io::streams::OutputStream;

fn run(_input: String) -> Result<String, Error> {
    let handle = wasip2::cli::stdout::get_stdout().take_handle();
    drop(unsafe { OutputStream::from_handle(handle) });
    drop(unsafe { OutputStream::from_handle(handle) });
    Ok("dropped twice".into())
}

agent!(run);
