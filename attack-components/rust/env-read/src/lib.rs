//! Reads the host environment and nothing else (built for
//! wasm32-unknown-unknown, so `wasi:cli/environment` is its only WASI
//! import). Refused at load under a policy with `[wasi] cli = false`; under
//! the default policy it sees an empty environment.

use chimera_agent::{agent, Error};

fn run(_input: String) -> Result<String, Error> {
    let vars = wasip2::cli::environment::get_environment();
    Ok(vars.into_iter().map(|(k, v)| format!("{k}={v}\n")).collect())
}

agent!(run);
