//! Multiplies itself: calls `target` (itself, by default) with the same
//! input again and again until the host refuses, and reports how many
//! children it got and the refusal. Input `{"target": "fork-bomb"}`.

use chimera_agent::{agent, tasks, Error};

fn run(input: String) -> Result<String, Error> {
    let spec: serde_json::Value = serde_json::from_str(&input).unwrap_or_default();
    let target = spec["target"].as_str().unwrap_or("fork-bomb");
    let child_input = spec["input"].as_str().map(str::to_string).unwrap_or_else(|| input.clone());
    let mut children = 0;
    loop {
        match tasks::call(target, &child_input) {
            Ok(_) => children += 1,
            Err(e) => return Ok(format!("{children} children, then {e:?}")),
        }
    }
}

agent!(run);
