//! Passes an input-stream handle where an output-stream is expected.

use chimera_agent::{agent, Error};
use wasip2::io::streams::OutputStream;

fn run(_input: String) -> Result<String, Error> {
    let handle = wasip2::cli::stdin::get_stdin().take_handle();
    let forged = unsafe { OutputStream::from_handle(handle) };
    let result = forged.blocking_write_and_flush(b"smuggled");
    Ok(format!("{result:?}"))
}

agent!(run);
