//! Bounded connections: how many, how long a request's head may take, how long a connection may
//! sit idle, and how large a request line and headers may be. Refusals answer in the Alibaba JSON
//! error shape where the protocol still allows an answer (408, 414, 431, 503).
//!
//! hyper owns the socket once a connection is served, so the timeouts are enforced by a wrapper
//! around the stream ([`Watched`]) and a watchdog task: the wrapper records when bytes last moved
//! and when the current request's head started to arrive; the service marks when a request is
//! being handled. When the head is late the wrapper itself writes the 408 answer on the socket and
//! fails hyper's read; an idle connection is simply closed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::wire::response::{error_body, new_request_id};
use kms_core::{ErrorCode, KmsError};

/// `[connections]` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnLimits {
    /// Connections served at once per listener; more are answered 503 and closed.
    pub max_connections: usize,
    /// From the first byte of a request (or the connection's start) to the end of its head.
    pub header_read_timeout_secs: u64,
    /// A connection with no request in flight and no bytes moving is closed after this.
    pub idle_timeout_secs: u64,
    /// The request line's target (path and query).
    pub max_uri_bytes: usize,
    /// All header names and values together.
    pub max_header_bytes: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 1024,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            // A GET carrying a 6 KiB plaintext (base64, percent-encoded) and its signature fits.
            max_uri_bytes: 32 << 10,
            max_header_bytes: 32 << 10,
        }
    }
}

impl ConnLimits {
    /// The answer for a request whose target or headers are over the limits, if any.
    pub fn check_head(&self, uri: &http::Uri, headers: &http::HeaderMap) -> Result<(), KmsError> {
        let uri_len = uri_len(uri);
        if uri_len > self.max_uri_bytes {
            return Err(KmsError::with_detail(
                ErrorCode::RequestUriTooLong,
                format_args!(
                    "It is {uri_len} bytes; at most {} are accepted: send parameters in a POST body.",
                    self.max_uri_bytes
                ),
            ));
        }
        let size: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
        if size > self.max_header_bytes {
            return Err(KmsError::with_detail(
                ErrorCode::RequestHeaderFieldsTooLarge,
                format_args!("They are {size} bytes; at most {} are accepted.", self.max_header_bytes),
            ));
        }
        Ok(())
    }
}

/// The length of `uri` as written (what `to_string` would give), without writing it out.
fn uri_len(uri: &http::Uri) -> usize {
    struct Count(usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut n = Count(0);
    // Writing to a counter cannot fail.
    let _ = std::fmt::write(&mut n, format_args!("{uri}"));
    n.0
}

/// What the watchdog and the service know about one connection.
pub struct ConnState {
    started: Instant,
    /// Milliseconds since `started` when bytes last moved.
    last_activity_ms: AtomicU64,
    /// Milliseconds since `started` when the current request's head began (0: none pending).
    head_started_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Set by the watchdog: the head is late; the next read answers 408 and fails.
    timed_out: AtomicBool,
    read_waker: Mutex<Option<std::task::Waker>>,
}

impl ConnState {
    pub fn new() -> Arc<ConnState> {
        Arc::new(ConnState {
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(1),
            // The connection's start counts as the start of its first head (1 ms: 0 means none).
            head_started_ms: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            timed_out: AtomicBool::new(false),
            read_waker: Mutex::new(None),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// A request's head was parsed: it is being handled.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started_ms.store(0, Ordering::Relaxed);
    }

    pub fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.last_activity_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Watches the connection until it must end; returns why.
    pub async fn watchdog(self: Arc<Self>, limits: &ConnLimits) -> &'static str {
        let head = limits.header_read_timeout_secs * 1000;
        let idle = limits.idle_timeout_secs * 1000;
        let tick = Duration::from_millis((head.min(idle) / 4).clamp(50, 1000));
        loop {
            tokio::time::sleep(tick).await;
            let now = self.now_ms();
            let started = self.head_started_ms.load(Ordering::Relaxed);
            if self.in_flight.load(Ordering::Acquire) == 0 && started != 0 && now.saturating_sub(started) > head {
                self.timed_out.store(true, Ordering::Release);
                if let Some(w) = self.read_waker.lock().take() {
                    w.wake();
                }
                // Give the read a moment to write the 408 and fail.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return "request head not received in time";
            }
            let last = self.last_activity_ms.load(Ordering::Relaxed);
            if self.in_flight.load(Ordering::Acquire) == 0 && started == 0 && now.saturating_sub(last) > idle {
                return "idle";
            }
        }
    }
}

/// A stream that reports its activity to a [`ConnState`].
pub struct Watched<S> {
    inner: S,
    state: Arc<ConnState>,
    /// The 408 answer still to be written once the head timed out.
    refusal: Option<(Vec<u8>, usize)>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, state: Arc<ConnState>) -> Self {
        Watched { inner, state, refusal: None }
    }
}

/// A whole HTTP/1.1 answer in the JSON error shape, written on the socket by hand where hyper
/// has no request to answer (the connection is closed after it).
fn raw_error_response(e: &KmsError) -> Vec<u8> {
    let rid = new_request_id();
    let body = error_body(&rid, "kms", e);
    let status = e.http_status();
    let reason = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json;charset=utf-8\r\nx-acs-request-id: {rid}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

fn timeout_response() -> Vec<u8> {
    raw_error_response(&KmsError::with_detail(
        ErrorCode::RequestTimeout,
        "The request head was not received in time; the connection is closed.",
    ))
}

/// The 503 written on a connection over the limit, before closing it.
pub fn over_limit_response() -> Vec<u8> {
    raw_error_response(&KmsError::with_detail(
        ErrorCode::ServiceUnavailableTemporary,
        "Too many connections; retry shortly.",
    ))
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.state.timed_out.load(Ordering::Acquire) {
            let (bytes, written) = this.refusal.get_or_insert_with(|| (timeout_response(), 0));
            while *written < bytes.len() {
                match Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                    Poll::Ready(Ok(n)) => *written += n,
                    Poll::Pending => return Poll::Pending,
                }
            }
            let _ = Pin::new(&mut this.inner).poll_flush(cx);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request head timed out")));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let now = this.state.now_ms();
                this.state.last_activity_ms.store(now, Ordering::Relaxed);
                // Bytes while no request is being handled: a new head is arriving.
                if this.state.in_flight.load(Ordering::Acquire) == 0 {
                    let _ = this.state.head_started_ms.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                }
            }
            Poll::Pending => *this.state.read_waker.lock() = Some(cx.waker().clone()),
            _ => {}
        }
        r
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            if *n > 0 {
                self.state.last_activity_ms.store(self.state.now_ms(), Ordering::Relaxed);
            }
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uri_is_measured_as_it_is_written() {
        for raw in
            ["/", "*", "/?Action=Encrypt&KeyId=a%20b", "http://kms.example:8080/x?y=z", "https://h/", "/p/ä%C3%A4"]
        {
            let Ok(uri) = raw.parse::<http::Uri>() else { continue };
            assert_eq!(uri_len(&uri), uri.to_string().len(), "{raw}");
        }
    }
}
