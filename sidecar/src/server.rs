//! The HTTP(S) service: accepts GET or POST on any path, authenticates, dispatches the action,
//! renders JSON. `/ping` and `/metrics` answer without authentication. Listeners: TCP, TLS over
//! TCP, a Unix socket; shutdown stops accepting and lets in-flight requests finish.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use kms_core::api::Action;
use kms_core::{Engine, ErrorCode, KmsError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::actions;
use crate::audit::{AuditLog, Entry};
use crate::auth::{Authenticator, RequestParts};
use crate::conn::{ConnLimits, ConnState, Watched};
use crate::metrics::Metrics;
use crate::wire::params::Params;
use crate::wire::response::{error_body, new_request_id, success_body, CONTENT_TYPE};

pub use kms_client::API_VERSION;

pub struct AppState {
    pub engine: Arc<Engine>,
    pub auth: Authenticator,
    /// Per-principal request rates (off unless configured).
    pub throttle: Arc<crate::throttle::Throttle>,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    /// None only where a test or benchmark runs without a trail.
    pub audit: Option<Arc<AuditLog>>,
}

/// Where a connection came from, handed to the handler with each request by the listener.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnInfo {
    pub peer: Option<std::net::SocketAddr>,
    pub tls: bool,
}

impl ConnInfo {
    /// The audit line's `source_ip`: the peer's address, or `unix` for the socket.
    pub fn source_ip(&self) -> String {
        self.peer.map(|p| p.ip().to_string()).unwrap_or_else(|| "unix".into())
    }
}

/// Who did what, for the audit trail and metrics.
#[derive(Default)]
pub(crate) struct Outcome {
    /// The `Action` parameter as sent (an unknown one too, for the audit line).
    pub action: Option<String>,
    /// The action it names, when it names one.
    pub known: Option<Action>,
    pub principal: String,
    pub access_key_id: String,
    pub resources: Vec<String>,
}

pub type Body = Full<Bytes>;

/// A header name every answer carries, made once: a custom name from a `&str` is parsed and
/// copied into a fresh allocation on every response (`content-type` is `http`'s constant).
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-acs-request-id");

pub fn respond(status: u16, request_id: &str, content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = r.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Ours (upper-case hex and dashes), so it is always a valid value; a bad one is left out
    // rather than failing the answer.
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, id);
    }
    r
}

/// One request, end to end.
///
/// A plain function returning the request's future rather than an `async fn`: the future is
/// allocated once per request, and an `async fn` keeps room for its arguments (here the whole
/// `Request`) next to every local for as long as it runs. Taking the request apart first, and
/// boxing the rare slow paths ([`record`]), keeps the future under glibc's per-thread cache
/// limit (1 KiB; `future_size_tests::request_future_fits_the_allocator_cache`) – above it every request took
/// the allocator's locked path (measured: 2.3 KiB before).
pub fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> impl std::future::Future<Output = Response<Body>> + Send {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    async move {
        let request_id = new_request_id();
        if parts.method == Method::GET {
            match parts.uri.path() {
                "/ping" => return respond(200, &request_id, "text/plain", b"pong\n".to_vec()),
                "/metrics" => {
                    let mut text = state.metrics.render();
                    state.auth.render_metrics(&mut text);
                    if let Some(audit) = &state.audit {
                        audit.render_metrics(&mut text);
                    }
                    return respond(200, &request_id, "text/plain; version=0.0.4", text.into_bytes());
                }
                _ => {}
            }
        }
        let header = |name| parts.headers.get(name).and_then(|h| h.to_str().ok());
        let mut outcome = Outcome::default();
        let result = process(&state, &parts, body, conn, &mut outcome).await;
        let known = outcome.known;
        // The metric's label is static: the name as sent moves into the audit line.
        let label = metric_label(known, outcome.action.is_some());
        let user_agent = header("user-agent").unwrap_or("");
        // The line is rendered when `record` is called: the address need not wait in the future.
        let result = {
            let source_ip = conn.source_ip();
            record(&state, &request_id, started, outcome, &source_ip, user_agent, result)
        }
        .await;
        let (code, response) = match result {
            Ok(value) => ("OK", respond(200, &request_id, CONTENT_TYPE, success_body(&request_id, value))),
            Err(e) => {
                let host = header("host").unwrap_or("kms");
                let mut r = respond(e.http_status(), &request_id, CONTENT_TYPE, error_body(&request_id, host, &e));
                if let Some(ms) = e.retry_after_ms() {
                    // What Alibaba's SDKs read to wait and retry (py-tea: ThrottlingException).
                    r.headers_mut().insert("x-acs-retry-after", HeaderValue::from(ms));
                }
                (e.code().code(), r)
            }
        };
        let elapsed = started.elapsed();
        state.metrics.record(label, code, elapsed);
        tracing::debug!(request_id = %request_id, action = label, status = response.status().as_u16(),
            micros = elapsed.as_micros() as u64, "request");
        response
    }
}

/// What is left to wait for once a request's audit line is handed over: nothing (the common
/// case), or a boxed wait – the line of a change on disk, or room in a full queue. Boxed because
/// both are rare and, inline, would make every request's future as large as theirs
/// (see [`handle`]).
type AuditWait<'a> = Option<std::pin::Pin<Box<dyn std::future::Future<Output = Option<KmsError>> + Send + 'a>>>;

/// The audit line for a request, written before the answer goes out: a change is acknowledged
/// only once its line is on disk (fail closed), so a change whose line cannot be written is
/// answered with the log's failure instead. The console records its actions through here too.
///
/// The line is made and handed over when this is called; the future returned only waits (a
/// plain function, not an `async fn`, so its arguments do not ride along in the future).
pub(crate) fn record<'a>(
    state: &'a AppState,
    request_id: &str,
    started: Instant,
    outcome: Outcome,
    source_ip: &str,
    user_agent: &str,
    mut result: Result<Vec<u8>, KmsError>,
) -> impl std::future::Future<Output = Result<Vec<u8>, KmsError>> + Send + 'a {
    let wait: AuditWait<'a> = state.audit.as_deref().and_then(|audit| {
        let (code, status) = crate::audit::answer_code(&result);
        let mutating = outcome.known.is_some_and(Action::is_mutating);
        let time = kms_core::clock::format_iso(state.engine.now());
        let entry = Entry {
            time: &time,
            request_id,
            principal: &outcome.principal,
            access_key_id: &outcome.access_key_id,
            source_ip,
            user_agent,
            action: outcome.action.as_deref().unwrap_or_default(),
            resources: &outcome.resources,
            code,
            http_status: status,
            latency_us: started.elapsed().as_micros() as u64,
        };
        if mutating {
            let line = entry.rendered();
            Some(Box::pin(async move { (!audit.record_durably(line).await).then(|| audit.failure()) }) as _)
        } else {
            let line = audit.try_record(&entry)?;
            Some(Box::pin(async move {
                audit.record(line).await;
                None
            }) as _)
        }
    });
    async move {
        if let Some(wait) = wait {
            if let Some(failure) = wait.await {
                if result.is_ok() {
                    result = Err(failure);
                }
            }
        }
        result
    }
}

/// The request's label in the metrics. Unknown actions are counted under one label, so a
/// scanner cannot grow the metric set.
pub(crate) fn metric_label(known: Option<Action>, named: bool) -> &'static str {
    match (known, named) {
        (Some(a), _) => a.name(),
        (None, true) => "unknown",
        (None, false) => "-",
    }
}

/// Runs `action` for an authenticated caller: counted against its rate, refused while a change
/// could not be audited, on the async worker or the blocking pool as the action table says (a
/// change claims its signature nonce in the store there, when it came with one). Returns what
/// the engine resolved and checked (for the audit line) and the answer. The API and the console
/// both run every action through here.
///
/// An inline action runs when this is called; the future returned only waits for the blocking
/// pool (a plain function for the reason [`record`] is).
pub(crate) fn run(
    state: &Arc<AppState>,
    caller: kms_core::Caller,
    // The caller's label, as its caller already made it for the audit line: not made again on
    // every request.
    principal: &str,
    access_key_id: &str,
    nonce: Option<(String, i64)>,
    action: Action,
    params: Params,
) -> impl std::future::Future<Output = (Vec<String>, Result<Vec<u8>, KmsError>)> + Send + 'static {
    type Done = (Vec<String>, Result<Vec<u8>, KmsError>);
    let started: Result<Done, tokio::task::JoinHandle<Done>> = if let Err(e) = state.throttle.admit(principal, action) {
        Ok((Vec::new(), Err(e)))
    } else if let Some(a) = state.audit.as_ref().filter(|a| action.is_mutating() && !a.healthy()) {
        Ok((Vec::new(), Err(a.failure())))
    } else if action.runs_inline() {
        // Every mutating action runs on the blocking pool, where its nonce is claimed in the store.
        debug_assert!(!action.is_mutating());
        let r = actions::dispatch(&state.engine, &caller, action, &params);
        Ok((caller.trail.take(), r))
    } else {
        let state = state.clone();
        let access_key_id = access_key_id.to_string();
        Err(tokio::task::spawn_blocking(move || {
            let claimed = match (&nonce, action.is_mutating()) {
                (Some((n, expires)), true) => state.engine.claim_nonce(&access_key_id, n, *expires),
                _ => Ok(()),
            };
            let r = claimed.and_then(|()| actions::dispatch(&state.engine, &caller, action, &params));
            (caller.trail.take(), r)
        }))
    };
    async move {
        match started {
            Ok(done) => done,
            Err(blocking) => match blocking.await {
                Ok(done) => done,
                Err(e) => (Vec::new(), Err(KmsError::internal(format_args!("action task: {e}")))),
            },
        }
    }
}

/// Who runs an action that did not come as a signed request (the console, the Kubernetes
/// sockets), and how the audit line names where it came from.
pub(crate) struct Internal<'a> {
    pub caller: kms_core::Caller,
    /// The access key the caller signed in with, or a name for the channel (`kubernetes-kms`).
    pub access_key_id: &'a str,
    pub source_ip: String,
    pub user_agent: String,
}

/// Runs `action` for an internal caller exactly as a signed request would run ([`run`]), records
/// it in the audit trail and the metrics ([`record`], [`count`]), and returns the answer's JSON.
pub(crate) async fn call_internal(
    state: &Arc<AppState>,
    who: Internal<'_>,
    action: Action,
    params: Params,
) -> Result<serde_json::Value, KmsError> {
    let started = Instant::now();
    let request_id = new_request_id();
    let principal = who.caller.label();
    let (resources, result) = run(state, who.caller, &principal, who.access_key_id, None, action, params).await;
    let outcome = Outcome {
        action: Some(action.name().to_string()),
        known: Some(action),
        principal,
        access_key_id: who.access_key_id.to_string(),
        resources,
    };
    let result = record(state, &request_id, started, outcome, &who.source_ip, &who.user_agent, result).await;
    let code = match &result {
        Ok(_) => "OK",
        Err(e) => e.code().code(),
    };
    state.metrics.record(action.name(), code, started.elapsed());
    serde_json::from_slice(&result?).map_err(|e| KmsError::internal(format_args!("{action}: {e}")))
}

/// Parses, authenticates, authorises and runs a request, noting in `outcome` what the audit
/// line needs.
async fn process(
    state: &Arc<AppState>,
    parts: &http::request::Parts,
    body: Incoming,
    conn: ConnInfo,
    outcome: &mut Outcome,
) -> Result<Vec<u8>, KmsError> {
    if parts.method != Method::GET && parts.method != Method::POST {
        return Err(KmsError::new(ErrorCode::UnsupportedHttpMethod));
    }
    let body = read_body(body, state.max_body_bytes).await?;
    let (auth, action, params) = authenticate(state, parts, &body, conn, outcome)?;
    // Not kept across the wait below (the future would have to hold it).
    drop(body);
    // The audit line names what the engine resolved and checked, allowed or denied.
    let nonce = Some((auth.nonce, auth.nonce_expires_at));
    let (resources, r) =
        run(state, auth.caller, &outcome.principal, &outcome.access_key_id, nonce, action, params).await;
    outcome.resources = resources;
    r
}

/// Authenticates the request and names its action and parameters (whether the caller may do
/// it is decided by the engine, on the key or secret the action resolves).
fn authenticate(
    state: &AppState,
    parts: &http::request::Parts,
    body: &[u8],
    conn: ConnInfo,
    outcome: &mut Outcome,
) -> Result<(crate::auth::Authenticated, Action, Params), KmsError> {
    // Borrowed, not copied: a header name from `http` is already lower-case.
    let headers: Vec<(&str, &str)> =
        parts.headers.iter().filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v))).collect();
    let is_form = headers
        .iter()
        .any(|(n, v)| *n == "content-type" && starts_with_ignore_case(v, "application/x-www-form-urlencoded"));
    let query = parts.uri.query().unwrap_or("");
    let params = Params::from_request(query, is_form.then_some(body));
    let header = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    outcome.action = params.get("Action").or_else(|| header("x-acs-action")).map(str::to_string);
    let mut auth = state.auth.verify(&RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query,
        headers: &headers,
        body,
        params: &params,
    })?;
    auth.caller.source_ip = conn.peer.map(|p| p.ip());
    auth.caller.secure_transport = conn.tls;
    outcome.principal = auth.caller.label();
    outcome.access_key_id = std::mem::take(&mut auth.access_key_id);
    let name = outcome.action.as_deref().filter(|a| !a.is_empty()).ok_or_else(|| KmsError::missing("Action"))?;
    let action = Action::parse(name)
        .ok_or_else(|| KmsError::with_detail(ErrorCode::InvalidActionNotFound, format_args!("Action: {name}")))?;
    outcome.known = Some(action);
    match params.get("Version").or_else(|| header("x-acs-version")) {
        Some(API_VERSION) => {}
        Some(v) => {
            return Err(KmsError::with_detail(
                ErrorCode::InvalidVersion,
                format_args!("{v:?}; this API is {API_VERSION}"),
            ))
        }
        None => return Err(KmsError::missing("Version")),
    }
    Ok((auth, action, params))
}

/// The request body, at most `limit` bytes. A body that comes in one piece (nearly all: hyper
/// reads the head and a small body together) is kept as it came – no copy, and none of the
/// buffer list `http_body_util`'s `Collect` allocates for every body.
async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, KmsError> {
    let too_large = || {
        KmsError::with_detail(
            ErrorCode::InvalidParameter,
            format_args!("The request body is larger than {limit} bytes or was cut off."),
        )
    };
    let mut first = Bytes::new();
    let mut joined: Option<Vec<u8>> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| too_large())?.into_data() else { continue };
        let held = joined.as_ref().map_or(first.len(), Vec::len);
        if held + data.len() > limit {
            return Err(too_large());
        }
        match &mut joined {
            Some(all) => all.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let mut all = Vec::with_capacity(first.len() + data.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&data);
                joined = Some(all);
            }
        }
    }
    Ok(joined.map_or(first, Bytes::from))
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.as_bytes().get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// How connections arrive.
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Tls(tokio::net::TcpListener, tokio_rustls::TlsAcceptor),
    Unix(tokio::net::UnixListener),
}

/// What answers requests on a listener: the KMS API, the secrets agent or the console. The
/// connection's facts come as an argument: in the request's extensions they cost three
/// allocations per request (a map, its table, the boxed value).
pub type Handler = Arc<dyn Fn(Request<Incoming>, ConnInfo) -> BoxFuture + Send + Sync>;
pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>;

/// The KMS API handler.
pub fn api_handler(state: Arc<AppState>) -> Handler {
    Arc::new(move |req, conn| Box::pin(handle(state.clone(), req, conn)))
}

/// Serves connections until `shutdown` flips, then waits (at most 10 s) for in-flight requests.
/// Each connection (and its TLS handshake) runs in its own task, so a slow client never holds up
/// the accept loop; at most `limits.max_connections` are served at once (module `conn`).
pub async fn serve(handler: Handler, listener: Listener, shutdown: watch::Receiver<bool>) {
    serve_with(handler, listener, shutdown, Arc::new(ConnLimits::default())).await
}

/// [`serve`] with explicit connection limits.
pub async fn serve_with(
    handler: Handler,
    listener: Listener,
    mut shutdown: watch::Receiver<bool>,
    limits: Arc<ConnLimits>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            a = accept(&listener) => a,
            _ = shutdown.changed() => break,
        };
        let conn = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Over the limit: answer at once and close, so the client learns why.
            tracing::warn!(max = limits.max_connections, "connection refused: too many connections");
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let reply = crate::conn::over_limit_response();
                let write = async {
                    match conn {
                        Accepted::Plain(mut s, _) => s.write_all(&reply).await,
                        Accepted::Unix(mut s) => s.write_all(&reply).await,
                        Accepted::Tls(..) => Ok(()),
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
            });
            continue;
        };
        let watcher = graceful.watcher();
        let st = handler.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let l = &limits;
            match conn {
                Accepted::Plain(s, peer) => {
                    serve_connection(st, s, watcher, ConnInfo { peer: Some(peer), tls: false }, l).await
                }
                Accepted::Unix(s) => serve_connection(st, s, watcher, ConnInfo::default(), l).await,
                Accepted::Tls(tcp, peer, acceptor) => {
                    let handshake = Duration::from_secs(limits.header_read_timeout_secs.max(1));
                    match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => {
                            serve_connection(st, s, watcher, ConnInfo { peer: Some(peer), tls: true }, l).await
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::warn!("some connections were still busy after 10s");
    }
}

enum Accepted {
    Plain(tokio::net::TcpStream, std::net::SocketAddr),
    Tls(tokio::net::TcpStream, std::net::SocketAddr, tokio_rustls::TlsAcceptor),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Listener) -> std::io::Result<Accepted> {
    Ok(match l {
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Accepted::Plain(s, peer)
        }
        Listener::Tls(l, acceptor) => {
            let (s, peer) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Accepted::Tls(s, peer, acceptor.clone())
        }
        Listener::Unix(l) => Accepted::Unix(l.accept().await?.0),
    })
}

async fn serve_connection<S>(
    handler: Handler,
    stream: S,
    watcher: hyper_util::server::graceful::Watcher,
    info: ConnInfo,
    limits: &ConnLimits,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn_state = ConnState::new();
    let svc_state = conn_state.clone();
    let head_limits = limits.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let state = svc_state.clone();
        state.request_started();
        let refused = head_limits.check_head(req.uri(), req.headers()).err();
        let f = match refused {
            None => Some(handler(req, info)),
            Some(_) => None,
        };
        async move {
            struct Finished(Arc<ConnState>);
            impl Drop for Finished {
                fn drop(&mut self) {
                    self.0.request_finished();
                }
            }
            let _finished = Finished(state);
            Ok::<_, Infallible>(match (f, refused) {
                (Some(f), _) => f.await,
                (None, Some(e)) => {
                    let rid = new_request_id();
                    let mut r = respond(e.http_status(), &rid, CONTENT_TYPE, error_body(&rid, "kms", &e));
                    r.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                    r
                }
                (None, None) => unreachable!("a request is either refused or handled"),
            })
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        // The watchdog (`conn`) times out a slow head and answers 408 in JSON. hyper's own
        // timer would be a second, silent one – and it arms a fresh timer for every request.
        .header_read_timeout(None)
        // Our own limits answer in JSON; hyper's (bare) ones sit above them.
        .max_buf_size((limits.max_uri_bytes + limits.max_header_bytes).max(64 << 10) * 2);
    let conn = builder.serve_connection(TokioIo::new(Watched::new(stream, conn_state.clone())), svc);
    let dog = conn_state.watchdog(limits);
    tokio::pin!(dog);
    let served = watcher.watch(conn);
    tokio::select! {
        _ = served => {}
        why = &mut dog => tracing::debug!(reason = why, "connection closed"),
    }
}

/// The most a request's future may take: glibc serves blocks up to 1,032 bytes (with its 8-byte
/// header and 16-byte rounding: up to 1,024 asked for) from a per-thread cache without a lock;
/// a larger one went through the arena's locked path and consolidated its bins on every request.
#[cfg(test)]
pub(crate) const REQUEST_FUTURE_MAX: usize = 1024;

#[cfg(test)]
mod future_size_tests {
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn returned<A, B, C, R>(_: fn(A, B, C) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn request_future_fits_the_allocator_cache() {
        let size = returned(handle);
        assert!(size <= REQUEST_FUTURE_MAX, "a request's future is {size} bytes, more than {REQUEST_FUTURE_MAX}");
    }
}
