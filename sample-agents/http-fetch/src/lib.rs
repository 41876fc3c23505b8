//! http-fetch: fetches a URL the policy allows and reports what came back.
//! Input `{"url": "..."}`; output `{"status": 200, "bytes": N, "body": "<first 1 KiB>"}`.
//! A URL outside the policy comes back as a denial. Grants needed: logging, outbound-http.

use chimera_agent::http::{self, HttpError};
use chimera_agent::{agent, info, Error};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Input {
    url: String,
}

#[derive(Serialize)]
struct Output {
    status: u16,
    bytes: usize,
    body: String,
}

fn run(input: Input) -> Result<Output, Error> {
    let response = http::get(&input.url).map_err(|e| match e {
        HttpError::ConnectionFailed(reason) => Error::retryable(format!("fetch failed: {reason}")),
        HttpError::Timeout => Error::retryable("fetch timed out"),
        HttpError::Denied(reason) => Error::new(format!("fetch denied: {reason}")),
        HttpError::TooLarge(reason) => Error::new(format!("fetch refused: {reason}")),
        other => Error::new(format!("fetch refused: {other:?}")),
    })?;
    info!("GET {} -> {}", input.url, response.status);
    let text = response.text();
    let body: String = text.chars().take(1024).collect();
    Ok(Output { status: response.status, bytes: response.body.len(), body })
}

agent!(json run);
