//! api-call: calls an API whose key it never sees. The base URL comes from
//! its settings (`config`); the policy's rule for that URL has the host add
//! the `Authorization` header from a host secret.
//! Input `{"path": "/v1/greeting", "headers": [["name", "value"], ...]}` (headers optional);
//! output `{"status": 200, "body": "...", "settings": {...}}`.
//! Grants needed: logging, outbound-http (with `secret_headers`), config settings.

use chimera_agent::http::{self, HttpError, Method, Request};
use chimera_agent::{agent, config, info, Error};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Deserialize)]
struct Input {
    path: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
}

#[derive(Serialize)]
struct Output {
    status: u16,
    body: String,
    settings: BTreeMap<String, String>,
}

fn run(input: Input) -> Result<Output, Error> {
    let base = config::get("base_url").ok_or_else(|| Error::new("no `base_url` setting in the policy"))?;
    let url = format!("{}{}", base.trim_end_matches('/'), input.path);
    let request = Request { method: Method::Get, url: url.clone(), headers: input.headers, body: None };
    let response = http::send(&request).map_err(|e| match e {
        HttpError::ConnectionFailed(reason) => Error::retryable(format!("call failed: {reason}")),
        HttpError::Timeout => Error::retryable("call timed out"),
        other => Error::new(format!("call refused: {other:?}")),
    })?;
    info!("GET {url} -> {}", response.status);
    Ok(Output { status: response.status, body: response.text(), settings: config::all().into_iter().collect() })
}

agent!(json run);
