//! Drops a stream handle, then uses the stale handle number.

use chimera_agent::{agent, Error};
use wasip2::io::streams::OutputStream;

fn run(_input: String) -> Result<String, Error> {
    let handle = wasip2::cli::stdout::get_stdout().take_handle();
    drop(unsafe { OutputStream::from_handle(handle) });
    let stale = unsafe { OutputStream::from_handle(handle) };
    let room = stale.check_write();
    Ok(format!("{room:?}"))
}

agent!(run);
