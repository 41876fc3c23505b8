//! Opens a TCP connection through the standard library, which makes the
//! component import `wasi:sockets`. Must be refused at load.

use chimera_agent::{agent, Error};
use std::io::Write;

fn run(input: String) -> Result<String, Error> {
    let mut stream = std::net::TcpStream::connect(input.trim())?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    Ok("connected".into())
}

agent!(run);
