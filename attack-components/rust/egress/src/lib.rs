//! Sends whatever request it is told to, to probe the egress policy:
//! input `{"method": "GET", "url": "...", "headers": [["k","v"]],
//! "header_bytes": N, "body": "..."}` (`header_bytes` adds an `x-big`
//! header of N bytes built inside the agent, past any input limit; `body`
//! is sent as the request body); output `{"status": N, "bytes": N}` or
//! `{"error": "<variant>", "reason": "..."}`.

use chimera_agent::http::{self, HttpError, Method, Request};
use chimera_agent::{agent, json, Error};
use serde_json::{json as j, Value};

fn run(input: String) -> Result<String, Error> {
    let spec: Value = json::parse(&input)?;
    let method = match spec["method"].as_str().unwrap_or("GET") {
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        _ => Method::Get,
    };
    let mut headers: Vec<(String, String)> = spec["headers"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .map(|h| (h[0].as_str().unwrap_or("").to_string(), h[1].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    if let Some(n) = spec["header_bytes"].as_u64() {
        headers.push(("x-big".to_string(), "a".repeat(n as usize)));
    }
    let body = spec["body"].as_str().map(|b| b.as_bytes().to_vec());
    let request = Request { method, url: spec["url"].as_str().unwrap_or("").to_string(), headers, body };
    let out = match http::send(&request) {
        Ok(r) => j!({"status": r.status, "bytes": r.body.len()}),
        Err(e) => {
            let (variant, reason) = match e {
                HttpError::Denied(r) => ("denied", r),
                HttpError::Timeout => ("timeout", String::new()),
                HttpError::TooLarge(r) => ("too-large", r),
                HttpError::QuotaExceeded(r) => ("quota-exceeded", r),
                HttpError::InvalidRequest(r) => ("invalid-request", r),
                HttpError::ConnectionFailed(r) => ("connection-failed", r),
            };
            j!({"error": variant, "reason": reason})
        }
    };
    Ok(out.to_string())
}

agent!(run);
