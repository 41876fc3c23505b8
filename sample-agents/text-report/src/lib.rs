//! text-report: asks the `word-count` agent about `{"text": "..."}` (an
//! agent-to-agent call through the host) and returns a one-line summary.
//! Grants needed: logging, and tasks allowing `word-count`.

use chimera_agent::{agent, info, tasks, Error};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize)]
struct Input {
    text: String,
}

#[derive(Deserialize)]
struct Counts {
    words: usize,
    lines: usize,
    top: Vec<(String, usize)>,
}

#[derive(Serialize)]
struct Output {
    summary: String,
}

fn run(input: Input) -> Result<Output, Error> {
    let request = serde_json::json!({ "text": input.text, "top": 3 }).to_string();
    let answer = tasks::call("word-count", &request).map_err(|e| Error::new(format!("word-count: {e:?}")))?;
    let counts: Counts =
        serde_json::from_str(&answer).map_err(|e| Error::new(format!("word-count answered {answer:?}: {e}")))?;
    info!("word-count saw {} words", counts.words);
    let top: Vec<String> = counts.top.iter().map(|(w, n)| format!("{w} ({n})")).collect();
    Ok(Output {
        summary: format!("{} words on {} line(s); most frequent: {}", counts.words, counts.lines, top.join(", ")),
    })
}

agent!(json run);
