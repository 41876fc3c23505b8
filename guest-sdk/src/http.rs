//! Outbound HTTP through the host, which checks every request against the
//! agent's policy. A refused request comes back as [`HttpError::Denied`].

use crate::bindings::chimera::agent::outbound_http as wit;
pub use wit::{HttpError, Method, Request, Response};

/// Sends `request` and returns the whole response.
pub fn send(request: &Request) -> Result<Response, HttpError> {
    wit::send(request)
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, HttpError> {
    send(&Request { method: Method::Get, url: url.to_string(), headers: Vec::new(), body: None })
}

/// `POST url` with `body` and a content type.
pub fn post(url: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Result<Response, HttpError> {
    send(&Request {
        method: Method::Post,
        url: url.to_string(),
        headers: vec![("content-type".to_string(), content_type.to_string())],
        body: Some(body.into()),
    })
}

impl Response {
    /// The body as UTF-8 text (invalid bytes replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}
