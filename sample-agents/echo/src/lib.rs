//! echo: transforms text. Input `{"text": "...", "op": "upper"|"lower"|"reverse"|"echo"}`,
//! output `{"text": "...", "op": "..."}`. Grants needed: logging.

use chimera_agent::{agent, info, Error};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Input {
    text: String,
    #[serde(default = "default_op")]
    op: String,
}

fn default_op() -> String {
    "echo".to_string()
}

#[derive(Serialize)]
struct Output {
    text: String,
    op: String,
}

fn run(input: Input) -> Result<Output, Error> {
    let text = match input.op.as_str() {
        "echo" => input.text,
        "upper" => input.text.to_uppercase(),
        "lower" => input.text.to_lowercase(),
        "reverse" => input.text.chars().rev().collect(),
        other => return Err(Error::new(format!("unknown op {other:?}: use echo, upper, lower or reverse"))),
    };
    info!("{} applied to {} chars", input.op, text.chars().count());
    Ok(Output { text, op: input.op })
}

agent!(json run);
