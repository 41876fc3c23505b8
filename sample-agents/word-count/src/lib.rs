//! word-count: counts words, lines and characters in `{"text": "..."}` and
//! returns the `top` most frequent words (default 5). Grants needed: none.

use chimera_agent::{agent, Error};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Deserialize)]
struct Input {
    text: String,
    #[serde(default = "default_top")]
    top: usize,
}

fn default_top() -> usize {
    5
}

#[derive(Serialize)]
struct Output {
    words: usize,
    lines: usize,
    chars: usize,
    top: Vec<(String, usize)>,
}

fn run(input: Input) -> Result<Output, Error> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut words = 0;
    for word in input.text.split(|c: char| !c.is_alphanumeric() && c != '\'').filter(|w| !w.is_empty()) {
        words += 1;
        *counts.entry(word.to_lowercase()).or_default() += 1;
    }
    let mut top: Vec<(String, usize)> = counts.into_iter().collect();
    // Most frequent first; ties alphabetical so the output is deterministic.
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(input.top);
    Ok(Output { words, lines: input.text.lines().count(), chars: input.text.chars().count(), top })
}

agent!(json run);
