//! `wasi:http/outgoing-handler` (with `wasi:http/types`) as a door onto the
//! same enforcement as `chimera:agent/outbound-http`: the same allow rules,
//! quota, request and response limits, vetted addresses, secret headers,
//! counters and per-rule clients. So ordinary HTTP clients (JavaScript
//! `fetch`, Python's and Rust's wasi:http bindings) work under one policy.
//!
//! wasmtime-wasi-http builds the request from the guest's resources; its
//! `send_request` hook lands here, where the method, URL and headers are
//! checked and counted before anything is read, the body is collected
//! within what `max_request_bytes` leaves (held against the instance's
//! memory limit), and the exchange goes through the matching rule's client.
//! Redirects come back to the guest as responses. The response body stays
//! charged to the instance until the guest has read or dropped it. A
//! refusal reaches the guest as the closest `error-code` (a denial is
//! `HTTP-request-denied`, a private address `destination-IP-prohibited`)
//! and the task's log says why in words.
//!
//! Besides what the hook sees, wasmtime-wasi-http holds header fields and
//! outgoing-body chunks for the guest's resources before any request is
//! sent. Both are capped per resource ([`FIELD_SIZE_LIMIT`],
//! [`BODY_CHUNK_BYTES`]), the resources count against `resource_handles`,
//! and the most they can hold together ([`BYTES_PER_HANDLE`] per handle)
//! is held against the instance's memory limit for the whole task: an
//! agent cannot make the host hold more for it than `memory_mib` allows,
//! however it spends its handles.

use bytes::Bytes;
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use wasmtime::component::Linker;
use wasmtime_wasi_http::p2::bindings::http::{outgoing_handler, types};
use wasmtime_wasi_http::{
    Error as WasiError, ForbiddenHeaderFilter, RequestOptions, WasiBody, WasiHttp, WasiHttpCtx, WasiHttpCtxView,
    WasiHttpHooks, DEFAULT_FORBIDDEN_HEADERS,
};

use super::{HeldBytes, HttpCore, HttpTask, Refusal, BYTES_SENT, FORBIDDEN_HEADERS};
use crate::bindings::chimera::agent::outbound_http::{HttpError, Method};
use crate::capability::{Interface, TaskHandle};
use crate::log::LogLevel;
use crate::task_data::TaskData;

/// The `wasi:http` version the host implements (wasmtime-wasi-http's).
pub(super) const VERSION: &str = "0.2.12";

/// Bytes one `fields` resource may hold (its in-memory size, as
/// wasmtime-wasi-http counts it): the usual proxy header limit.
pub const FIELD_SIZE_LIMIT: usize = 8 << 10;

/// Largest single write to an outgoing body that the host copies; one such
/// chunk is buffered per body until the request is sent.
pub const BODY_CHUNK_BYTES: usize = 4 << 10;

/// What one of the guest's wasi:http resources can make the host hold at
/// most: a full `fields` (or a request holding one) with the header map's
/// own tables, or a body's buffered chunk. An agent linking wasi:http has
/// `resource_handles` × this held against its memory limit for the whole
/// task, so whatever it does with its handles stays inside `memory_mib`.
pub const BYTES_PER_HANDLE: u64 = 10 << 10;

/// The memory held for an agent's wasi:http buffers.
pub(super) fn buffer_bytes(limits: &crate::policy::Limits) -> u64 {
    u64::from(limits.resource_handles) * BYTES_PER_HANDLE
}

/// Refuses an agent whose memory limit cannot hold its wasi:http buffers.
pub(super) fn check_budget(limits: &crate::policy::Limits) -> Result<(), String> {
    let (need, have) = (buffer_bytes(limits), limits.memory_mib << 20);
    if need >= have / 2 {
        return Err(format!(
            "wasi:http may hold up to {BYTES_PER_HANDLE} bytes per resource handle for the agent: {} handles take \
             {need} bytes, at least half of its memory_mib ({have} bytes); lower [limits] resource_handles or raise \
             memory_mib",
            limits.resource_handles
        ));
    }
    Ok(())
}

/// A fresh `wasi:http` context for a task.
pub(super) fn context() -> WasiHttpCtx {
    let mut ctx = WasiHttpCtx::new();
    ctx.set_field_size_limit(FIELD_SIZE_LIMIT);
    ctx
}

/// The task's view for wasmtime-wasi-http: its table, context and hooks.
fn view(data: &mut TaskData) -> WasiHttpCtxView<'_> {
    let (table, http) = data.table_and_state::<HttpTask>();
    WasiHttpCtxView { ctx: &mut http.wasi_ctx, table, hooks: &mut http.core }
}

/// Links one `wasi:http` interface.
pub(super) fn link(interface: &Interface, linker: &mut Linker<TaskData>) -> wasmtime::Result<()> {
    match interface.name {
        "types" => {
            let options = wasmtime_wasi_http::p2::bindings::LinkOptions::default();
            types::add_to_linker::<TaskData, WasiHttp>(linker, &options.into(), view)
        }
        "outgoing-handler" => outgoing_handler::add_to_linker::<TaskData, WasiHttp>(linker, view),
        _ => Err(wasmtime::Error::msg(format!("{interface} is not an interface this host provides"))),
    }
}

type Exchange = Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoDone), WasiError>> + Send>;
type IoDone = Box<dyn Future<Output = Result<(), WasiError>> + Send>;

impl WasiHttpHooks for HttpCore {
    /// The host's own headers, except `content-length`: wasi:http checks
    /// the body against it (a client such as `fetch` sets it), and the
    /// request that leaves carries the length of the body the host read.
    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        Arc::new(|name| {
            DEFAULT_FORBIDDEN_HEADERS.contains(name)
                || (name != http::header::CONTENT_LENGTH && FORBIDDEN_HEADERS.contains(&name.as_str()))
        })
    }

    /// The URL carries the host; the client sets `Host` from it.
    fn set_host_header(&mut self) -> bool {
        false
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        BODY_CHUNK_BYTES
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: IoDone,
    ) -> Exchange {
        let task = self.task.clone();
        let (parts, body) = request.into_parts();
        let buffers = self.buffers;
        let checked = method_of(&parts.method)
            .and_then(|m| if buffers { Ok(m) } else { Err(no_buffers(&task)) })
            .and_then(|method| Ok((method, headers_of(&parts.headers)?)))
            .and_then(|(method, headers)| self.check(method, &parts.uri.to_string(), &headers, 0));
        let counters = self.counters.clone();
        Box::new(async move {
            let checked = checked.map_err(|r| refused(&task, r))?;
            let (body, collected) = collect(body, checked.spare, &task).await.map_err(|r| refused(&task, r))?;
            counters.add(BYTES_SENT, body.len() as u64);
            let answer = checked.exchange(body).await;
            drop(collected);
            let answer = answer.map_err(|r| refused(&task, r))?;
            let mut response = http::Response::builder().status(answer.status);
            if let Some(headers) = response.headers_mut() {
                *headers = answer.headers;
            }
            let body = HeldBody { data: Some(Bytes::from(answer.body)), _held: answer.held };
            let response = response
                .body(body.boxed_unsync())
                .map_err(|e| WasiError::InternalError(Some(format!("cannot build the response: {e}"))))?;
            Ok((response, Box::new(async { Ok(()) }) as IoDone))
        })
    }
}

/// The refusal of every request when the buffers' memory could not be held.
fn no_buffers(task: &TaskHandle) -> Refusal {
    let msg = format!(
        "the memory for wasi:http's buffers would take the instance past its memory limit of {} bytes (memory_mib)",
        task.memory_limit()
    );
    ("memory-limit", HttpError::TooLarge(msg))
}

fn method_of(method: &http::Method) -> Result<Method, Refusal> {
    Ok(match *method {
        http::Method::GET => Method::Get,
        http::Method::HEAD => Method::Head,
        http::Method::POST => Method::Post,
        http::Method::PUT => Method::Put,
        http::Method::PATCH => Method::Patch,
        http::Method::DELETE => Method::Delete,
        http::Method::OPTIONS => Method::Options,
        ref other => {
            let msg = format!("the {} method is not one a rule can allow", super::quote(other.as_str()));
            return Err(("method", HttpError::Denied(msg)));
        }
    })
}

fn headers_of(map: &http::HeaderMap) -> Result<Vec<(String, String)>, Refusal> {
    super::check_header_count(map.len())?;
    // The length that goes out is the body's, set by the client.
    map.iter()
        .filter(|(name, _)| **name != http::header::CONTENT_LENGTH)
        .map(|(name, value)| {
            let value = value.to_str().map_err(|_| {
                let msg = format!("the value of header `{}` is not text", name.as_str());
                ("invalid-request", HttpError::InvalidRequest(msg))
            })?;
            Ok((name.as_str().to_string(), value.to_string()))
        })
        .collect()
}

/// Reads the outgoing body as the guest writes it, within `spare` bytes
/// (what `max_request_bytes` leaves) and the instance's memory limit.
async fn collect(mut body: WasiBody, spare: u64, task: &TaskHandle) -> Result<(Vec<u8>, HeldBytes), Refusal> {
    let mut held = HeldBytes { task: task.clone(), bytes: 0 };
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            (
                "invalid-request",
                HttpError::InvalidRequest(format!("the request body failed: {}", super::quote(&e.to_string()))),
            )
        })?;
        let Ok(data) = frame.into_data() else { continue };
        let total = (out.len() + data.len()) as u64;
        if total > spare {
            let msg = format!(
                "the request body is more than {spare} bytes, what max_request_bytes leaves after the URL and headers"
            );
            return Err(("too-large", HttpError::TooLarge(msg)));
        }
        if !held.hold(data.len() as u64) {
            let msg = format!(
                "the request body would take the instance past its memory limit of {} bytes (memory_mib)",
                task.memory_limit()
            );
            return Err(("memory-limit", HttpError::TooLarge(msg)));
        }
        out.extend_from_slice(&data);
    }
    Ok((out, held))
}

/// Counts and logs a refusal, and gives the guest the closest `error-code`.
fn refused(task: &TaskHandle, (label, error): Refusal) -> WasiError {
    let (code, reason) = match error {
        HttpError::Denied(reason) if label == "private-address" => (WasiError::DestinationIpProhibited, reason),
        HttpError::Denied(reason) => (WasiError::HttpRequestDenied, reason),
        HttpError::QuotaExceeded(reason) => (WasiError::HttpRequestDenied, reason),
        HttpError::TooLarge(reason) if label == "too-large" && reason.starts_with("response") => {
            (WasiError::HttpResponseBodySize(None), reason)
        }
        HttpError::TooLarge(reason) if label == "memory-limit" => {
            (WasiError::InternalError(Some(reason.clone())), reason)
        }
        HttpError::TooLarge(reason) => (WasiError::HttpRequestBodySize(None), reason),
        HttpError::InvalidRequest(reason) => (WasiError::HttpRequestUriInvalid, reason),
        HttpError::Timeout => (WasiError::ConnectionTimeout, "the request timed out (timeout_ms)".to_string()),
        HttpError::ConnectionFailed(reason) => (WasiError::ConnectionRefused, reason),
    };
    if !matches!(code, WasiError::ConnectionTimeout | WasiError::ConnectionRefused | WasiError::HttpRequestUriInvalid) {
        task.count_denial("outbound-http", label);
    }
    task.log(LogLevel::Warn, &format!("wasi:http request refused ({label}): {reason}"));
    code
}

/// A response body handed to the guest whole, its bytes held against the
/// instance's memory limit until the guest has read or dropped it.
struct HeldBody {
    data: Option<Bytes>,
    _held: HeldBytes,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = WasiError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, WasiError>>> {
        Poll::Ready(self.data.take().filter(|d| !d.is_empty()).map(|d| Ok(http_body::Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.as_ref().is_none_or(|d| d.is_empty())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}
