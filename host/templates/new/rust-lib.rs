//! {{name}}: a Chimera agent.
//! Input `{"name": "..."}`; output `{"greeting": "<greeting>, <name>!"}`, the
//! greeting read from the policy's settings (`[capabilities.config.values]`).

use chimera_agent::{agent, config, info, Error};

#[derive(serde::Deserialize)]
struct Input {
    name: String,
}

#[derive(serde::Serialize)]
struct Output {
    greeting: String,
}

fn run(input: Input) -> Result<Output, Error> {
    if input.name.is_empty() {
        return Err(Error::new("give a non-empty \"name\""));
    }
    let greeting = config::get("greeting").unwrap_or_else(|| "Hello".to_string());
    info!("greeting {}", input.name);
    Ok(Output { greeting: format!("{greeting}, {}!", input.name) })
}

agent!(json run);
