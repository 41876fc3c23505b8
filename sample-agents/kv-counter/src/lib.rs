//! kv-counter: a counter that persists across tasks and host restarts.
//! Input `{"key": "visits", "by": 1}`; output `{"key": "visits", "count": N}`.
//! Input `{"list": true}` returns every counter; `{"key": "visits", "peek": true}`
//! reads one without counting (a KV get); `{"key": "visits", "set": 5}` sets it
//! (a KV set). Grants needed: logging, kv.

use chimera_agent::{agent, info, kv, Error};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    key: Option<String>,
    #[serde(default = "one")]
    by: i64,
    #[serde(default)]
    list: bool,
    #[serde(default)]
    peek: bool,
    #[serde(default)]
    set: Option<i64>,
}

fn one() -> i64 {
    1
}

#[derive(Serialize)]
#[serde(untagged)]
enum Output {
    Count { key: String, count: i64 },
    All { counters: Vec<(String, i64)> },
}

const PREFIX: &str = "counter/";

fn run(input: Input) -> Result<Output, Error> {
    if input.list {
        // A page of keys, then their values in one call.
        let mut counters = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = kv::list_page(PREFIX, cursor.as_deref(), 64)?;
            for (key, value) in page.keys.iter().zip(kv::get_many(&page.keys)?) {
                let value = value.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
                counters.push((key[PREFIX.len()..].to_string(), value.parse().unwrap_or(0)));
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(Output::All { counters }),
            }
        }
    }
    let key = input.key.ok_or_else(|| Error::new("give a \"key\" to count, or \"list\": true"))?;
    let stored = format!("{PREFIX}{key}");
    if input.peek {
        let count = kv::get_string(&stored)?.and_then(|v| v.parse().ok()).unwrap_or(0);
        return Ok(Output::Count { key, count });
    }
    if let Some(count) = input.set {
        kv::set(&stored, count.to_string())?;
        return Ok(Output::Count { key, count });
    }
    let count = kv::increment(&stored, input.by)?;
    info!("counter {key} is now {count}");
    Ok(Output::Count { key, count })
}

agent!(json run);
