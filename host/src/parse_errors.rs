//! JSON bodies for the answers hyper gives by itself to requests it cannot
//! parse (`400` malformed, `414` URI too long, `431` headers too large):
//! hyper writes them with an empty body and offers no hook, so the
//! connection's writes are watched for exactly that shape — a `4xx` head
//! with `connection: close` and `content-length: 0`, which no handler of
//! the API writes (every error of theirs has a JSON body) — and the head
//! is given a body saying what was wrong.

use pin_project_lite::pin_project;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project! {
    /// A connection whose parse-error answers get JSON bodies.
    pub(crate) struct JsonParseErrors<S> {
        #[pin]
        inner: S,
        // A rewritten answer still to write, and how much of it is written.
        pending: Vec<u8>,
        sent: usize,
    }
}

impl<S> JsonParseErrors<S> {
    pub(crate) fn new(inner: S) -> Self {
        JsonParseErrors { inner, pending: Vec::new(), sent: 0 }
    }
}

/// The answer with a body, if `buf` is the whole head of one of hyper's
/// own parse-error answers.
fn rewrite(buf: &[u8]) -> Option<Vec<u8>> {
    let head = std::str::from_utf8(buf).ok()?;
    if !head.starts_with("HTTP/1.1 4") || !head.ends_with("\r\n\r\n") {
        return None;
    }
    let lower = head.to_ascii_lowercase();
    if !lower.contains("\r\nconnection: close\r\n") || !lower.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let message = match head.get(9..12)? {
        "400" => "the request is not valid HTTP/1.1",
        "414" => "the request URI is too long",
        "431" => "the request headers are too large",
        _ => "the request could not be read",
    };
    let body = serde_json::json!({ "error": message }).to_string();
    let at = lower.find("\r\ncontent-length: 0\r\n")?;
    let mut out = String::with_capacity(head.len() + body.len() + 64);
    out.push_str(&head[..at]);
    out.push_str(&format!("\r\ncontent-type: application/json\r\ncontent-length: {}\r\n", body.len()));
    out.push_str(&head[at + "\r\ncontent-length: 0\r\n".len()..]);
    out.push_str(&body);
    Some(out.into_bytes())
}

fn drain<S: AsyncWrite>(
    mut inner: Pin<&mut S>,
    pending: &mut Vec<u8>,
    sent: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while *sent < pending.len() {
        let n = ready!(inner.as_mut().poll_write(cx, &pending[*sent..]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        *sent += n;
    }
    pending.clear();
    *sent = 0;
    Poll::Ready(Ok(()))
}

impl<S: AsyncRead> AsyncRead for JsonParseErrors<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for JsonParseErrors<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        ready!(drain(this.inner.as_mut(), this.pending, this.sent, cx))?;
        if let Some(answer) = rewrite(buf) {
            *this.pending = answer;
            // Written now or at the flush that follows; either way hyper's bytes are taken.
            if let Poll::Ready(Err(e)) = drain(this.inner, this.pending, this.sent, cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        this.inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        ready!(drain(this.inner.as_mut(), this.pending, this.sent, cx))?;
        this.inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        ready!(drain(this.inner.as_mut(), this.pending, this.sent, cx))?;
        this.inner.poll_shutdown(cx)
    }

    // Not vectored: hyper then writes each answer's head in one buffer,
    // where a parse-error answer can be recognised whole.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_empty_parse_error_answers_get_a_body() {
        let head =
            "HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(rewrite(head.as_bytes()).unwrap()).unwrap();
        let body = r#"{"error":"the request headers are too large"}"#;
        assert_eq!(
            out,
            format!("HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\ndate: x\r\n\r\n{body}", body.len())
        );
        // An answer of the API's own (a body), a success, a partial head: untouched.
        assert!(rewrite(b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n")
            .is_none());
        assert!(rewrite(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(rewrite(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n").is_none());
    }
}
