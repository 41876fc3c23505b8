//! wasi-http-fetch: an HTTP request through the standard
//! `wasi:http/outgoing-handler` (the `wasip2` crate's bindings), which the
//! host governs with the same `[capabilities.outbound_http]` rules as
//! `chimera:agent/outbound-http`.
//! Input `{"method": "GET", "url": "http://host:port/path", "headers": [["k", "v"]], "body": "...", "repeat": 1}`;
//! output `{"status": 200, "headers": [["k", "v"]], "body": "..."}`, or
//! `{"error": "<wasi:http error-code>"}` when the host or the network refuses.

use chimera_agent::{agent, Error};
use serde::{Deserialize, Serialize};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

#[derive(Deserialize)]
struct Input {
    #[serde(default = "get")]
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    body: Option<String>,
    /// Send the request this many times (the last answer, or the first refusal, is the output).
    #[serde(default = "one")]
    repeat: u32,
}

fn one() -> u32 {
    1
}

fn get() -> String {
    "GET".into()
}

#[derive(Serialize)]
#[serde(untagged)]
enum Output {
    Response { status: u16, headers: Vec<(String, String)>, body: String },
    Refused { error: String },
}

fn run(input: Input) -> Result<Output, Error> {
    let mut last = None;
    for _ in 0..input.repeat.max(1) {
        match fetch(&input) {
            Ok(output) => last = Some(output),
            Err(code) => return Ok(Output::Refused { error: format!("{code:?}") }),
        }
    }
    Ok(last.expect("at least one request"))
}

fn fetch(input: &Input) -> Result<Output, ErrorCode> {
    let (scheme, rest) = input.url.split_once("://").ok_or(ErrorCode::HttpRequestUriInvalid)?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let headers = Fields::new();
    for (name, value) in &input.headers {
        headers.append(name, value.as_bytes()).map_err(|e| ErrorCode::InternalError(Some(format!("header: {e:?}"))))?;
    }
    let request = OutgoingRequest::new(headers);
    let method = match input.method.as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        "CONNECT" => Method::Connect,
        "TRACE" => Method::Trace,
        other => Method::Other(other.to_string()),
    };
    let invalid = |_| ErrorCode::HttpRequestUriInvalid;
    request.set_method(&method).map_err(invalid)?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    request.set_scheme(Some(&scheme)).map_err(invalid)?;
    request.set_authority(Some(authority)).map_err(invalid)?;
    request.set_path_with_query(Some(path)).map_err(invalid)?;
    let body = request.body().expect("the body is taken once");
    // Sent first, then the body written: the host reads it as it comes.
    let pending = outgoing_handler::handle(request, None)?;
    if let Some(text) = &input.body {
        let stream = body.write().expect("the stream is taken once");
        for chunk in text.as_bytes().chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(body, None);
    let response = loop {
        match pending.get() {
            Some(answer) => break answer.expect("the response is taken once")?,
            None => pending.subscribe().block(),
        }
    };
    let status = response.status();
    let headers =
        response.headers().entries().into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect();
    let incoming = response.consume().expect("the body is taken once");
    let stream = incoming.stream().expect("the stream is taken once");
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(65536) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(ErrorCode::InternalError(Some(e.to_debug_string())));
            }
        }
    }
    Ok(Output::Response { status, headers, body: String::from_utf8_lossy(&bytes).into_owned() })
}

agent!(json run);
