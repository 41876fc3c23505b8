//! The daemon's HTTP edge: what a client can make the server spend before
//! any handler runs. Connections are capped (one over the cap is answered
//! `503` and closed), a request's headers must arrive within a deadline
//! (a slow-loris client is cut off), a request is answered within a
//! deadline (`408`, body reads included), requests in progress at once
//! are capped (`503`), and every answer the server makes itself — `404`,
//! `405`, `408`, `503`, and hyper's `400`, `414` and `431` to requests it
//! cannot parse — is JSON, with `Retry-After` where waiting helps.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::parse_errors::JsonParseErrors;

/// `[http]` of `chimera.toml`: what one client may hold of the server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Open connections at once; one more is answered `503` and closed.
    pub max_connections: usize,
    /// Time for a request's headers to arrive, from the connection's
    /// start or the end of the previous response.
    pub header_timeout_ms: u64,
    /// Time to answer one request, reading its body included (`408` after).
    pub request_timeout_ms: u64,
    /// Requests being handled at once; more are answered `503`.
    pub max_concurrent_requests: usize,
    /// Seconds a `429` or `503` answer tells the client to wait.
    pub retry_after_s: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 512,
            header_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_concurrent_requests: 256,
            retry_after_s: 1,
        }
    }
}

impl HttpLimits {
    /// Checks each limit is usable, naming the key of the one that is not.
    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            ("http.max_connections", self.max_connections as u64, 1, 1_000_000),
            ("http.header_timeout_ms", self.header_timeout_ms, 100, 600_000),
            ("http.request_timeout_ms", self.request_timeout_ms, 100, 3_600_000),
            ("http.max_concurrent_requests", self.max_concurrent_requests as u64, 1, 1_000_000),
            ("http.retry_after_s", self.retry_after_s, 1, 3_600),
        ];
        for (key, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                return Err(format!("{key} = {value} is out of range: use {min} to {max}"));
            }
        }
        Ok(())
    }
}

/// A JSON error answer.
pub(crate) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

/// [`error`] with `Retry-After`.
pub(crate) fn retry_later(status: StatusCode, message: impl std::fmt::Display, after_s: u64) -> Response {
    let mut response = error(status, message);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(after_s));
    response
}

/// Most bytes of a request's head (its line and headers) read.
const MAX_HEAD_BYTES: usize = 128 << 10;

struct Guard {
    requests: Semaphore,
    timeout: Duration,
    retry_after_s: u64,
}

/// Caps the requests in progress and the time each may take.
async fn guard(State(g): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let Ok(_permit) = g.requests.try_acquire() else {
        return retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in progress; retry later",
            g.retry_after_s,
        );
    };
    match tokio::time::timeout(g.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request was not answered within {} ms (http.request_timeout_ms)", g.timeout.as_millis()),
        ),
    }
}

/// `router` with JSON `404`/`405` answers and the request guard.
pub(crate) fn harden(router: Router, limits: &HttpLimits) -> Router {
    let g = Arc::new(Guard {
        requests: Semaphore::new(limits.max_concurrent_requests),
        timeout: Duration::from_millis(limits.request_timeout_ms),
        retry_after_s: limits.retry_after_s,
    });
    router
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint; see the README's API section") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "this endpoint does not take that method")
        })
        .layer(axum::middleware::from_fn_with_state(g, guard))
}

/// Serves `app` (as it is when each connection opens) on `listener` until `stop` is cancelled, then lets each
/// connection finish its request in progress and closes it, waiting at
/// most `grace` for them.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Arc<std::sync::RwLock<Router>>,
    limits: HttpLimits,
    stop: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let header_timeout = Duration::from_millis(limits.header_timeout_ms);
    let body = r#"{"error":"too many open connections; retry later"}"#;
    let over_cap: Arc<str> = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {}\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        limits.retry_after_s,
        body.len()
    )
    .into();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: say so, and give
                    // closing connections a moment instead of spinning.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection refused: max_connections reached");
            let answer = over_cap.clone();
            tracker.spawn(async move {
                let mut stream = stream;
                // A client that does not read gets no more than this.
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
            });
            continue;
        };
        // The router of the moment: the daemon swaps in its own once started.
        let service = TowerToHyperService::new(app.read().unwrap_or_else(|e| e.into_inner()).clone());
        let stop = stop.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                // A request's head (line and headers) past this is `431`.
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(JsonParseErrors::new(stream)), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("connections still open after the grace period; closing them");
    }
    Ok(())
}
