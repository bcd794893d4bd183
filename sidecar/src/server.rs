//! The HTTP(S) service: accepts GET or POST on any path, authenticates, dispatches the action,
//! renders JSON. `/ping` and `/metrics` answer without authentication. Listeners: TCP, TLS over
//! TCP, a Unix socket; shutdown stops accepting and lets in-flight requests finish.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use kms_core::api::Action;
use kms_core::{Engine, ErrorCode, KmsError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::actions;
use crate::audit::{AuditEvent, AuditLog};
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

/// Where a connection came from, put into each request's extensions by the listener.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnInfo {
    pub peer: Option<std::net::SocketAddr>,
    pub tls: bool,
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

pub fn respond(status: u16, request_id: &str, content_type: &str, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", content_type)
        .header("x-acs-request-id", request_id)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

/// One request, end to end.
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let request_id = new_request_id();
    let path = req.uri().path().to_string();
    if req.method() == Method::GET && path == "/ping" {
        return Ok(respond(200, &request_id, "text/plain", b"pong\n".to_vec()));
    }
    if req.method() == Method::GET && path == "/metrics" {
        return Ok(respond(200, &request_id, "text/plain; version=0.0.4", state.metrics.render().into_bytes()));
    }
    let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("kms").to_string();
    let user_agent = req.headers().get("user-agent").and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    let conn = req.extensions().get::<ConnInfo>().copied().unwrap_or_default();
    let (outcome, result) = process(&state, req, conn).await;
    let action = outcome.action.clone();
    let known = outcome.known;
    let source_ip = conn.peer.map(|p| p.ip().to_string()).unwrap_or_else(|| "unix".into());
    let result = record(&state, &request_id, started, outcome, source_ip, user_agent, result).await;
    let (code, response) = match result {
        Ok(value) => ("OK", respond(200, &request_id, CONTENT_TYPE, success_body(&request_id, value))),
        Err(e) => {
            let mut r = respond(e.http_status(), &request_id, CONTENT_TYPE, error_body(&request_id, &host, &e));
            if let Some(ms) = e.retry_after_ms() {
                // What Alibaba's SDKs read to wait and retry (py-tea: ThrottlingException).
                r.headers_mut().insert("x-acs-retry-after", hyper::header::HeaderValue::from(ms));
            }
            (e.code().code(), r)
        }
    };
    let elapsed = started.elapsed();
    count(&state, known, action.as_deref(), code, elapsed);
    tracing::debug!(request_id = %request_id, action = action.as_deref().unwrap_or("-"), status = response.status().as_u16(),
        micros = elapsed.as_micros() as u64, "request");
    Ok(response)
}

/// The audit line for a request, written before the answer goes out: a change is acknowledged
/// only once its line is on disk (fail closed), so a change whose line cannot be written is
/// answered with the log's failure instead. The console records its actions through here too.
pub(crate) async fn record(
    state: &AppState,
    request_id: &str,
    started: Instant,
    // Taken, not borrowed: its strings move into the audit line instead of being copied.
    outcome: Outcome,
    source_ip: String,
    user_agent: String,
    mut result: Result<Vec<u8>, KmsError>,
) -> Result<Vec<u8>, KmsError> {
    let Some(audit) = &state.audit else { return result };
    let (code, status) = match &result {
        Ok(_) => ("OK".to_string(), 200),
        Err(e) => (e.code().code().to_string(), e.http_status()),
    };
    let event = AuditEvent {
        time: kms_core::clock::format_iso(state.engine.now()),
        request_id: request_id.to_string(),
        principal: outcome.principal,
        access_key_id: outcome.access_key_id,
        source_ip,
        user_agent,
        action: outcome.action.unwrap_or_default(),
        resources: outcome.resources,
        code,
        http_status: status,
        latency_us: started.elapsed().as_micros() as u64,
        ..Default::default()
    };
    if outcome.known.is_some_and(Action::is_mutating) {
        if !audit.record_durably(event).await && result.is_ok() {
            result = Err(audit.failure());
        }
    } else {
        audit.record(event).await;
    }
    result
}

/// The request in the metrics. Unknown actions are counted under one label, so a scanner cannot
/// grow the metric set.
pub(crate) fn count(
    state: &AppState,
    known: Option<Action>,
    action: Option<&str>,
    code: &'static str,
    elapsed: Duration,
) {
    let label: &'static str = match (known, action) {
        (Some(a), _) => a.name(),
        (None, Some(_)) => "unknown",
        (None, None) => "-",
    };
    state.metrics.record(label, code, elapsed);
}

/// Runs `action` for an authenticated caller: counted against its rate, refused while a change
/// could not be audited, on the async worker or the blocking pool as the action table says (a
/// change claims its signature nonce in the store there, when it came with one). Returns what
/// the engine resolved and checked (for the audit line) and the answer. The API and the console
/// both run every action through here.
pub(crate) async fn run(
    state: &Arc<AppState>,
    caller: kms_core::Caller,
    // The caller's label, as its caller already made it for the audit line: not made again on
    // every request.
    principal: &str,
    access_key_id: &str,
    nonce: Option<(String, i64)>,
    action: Action,
    params: Params,
) -> (Vec<String>, Result<Vec<u8>, KmsError>) {
    if let Err(e) = state.throttle.admit(principal, action) {
        return (Vec::new(), Err(e));
    }
    if let Some(a) = state.audit.as_ref().filter(|a| action.is_mutating() && !a.healthy()) {
        return (Vec::new(), Err(a.failure()));
    }
    // Every mutating action runs on the blocking pool, where its nonce is claimed in the store.
    debug_assert!(!(action.is_mutating() && action.runs_inline()));
    if action.runs_inline() {
        let r = actions::dispatch(&state.engine, &caller, action, &params);
        return (caller.trail.take(), r);
    }
    let state = state.clone();
    let access_key_id = access_key_id.to_string();
    let joined = tokio::task::spawn_blocking(move || {
        let claimed = match (&nonce, action.is_mutating()) {
            (Some((n, expires)), true) => state.engine.claim_nonce(&access_key_id, n, *expires),
            _ => Ok(()),
        };
        let r = claimed.and_then(|()| actions::dispatch(&state.engine, &caller, action, &params));
        (caller.trail.take(), r)
    })
    .await;
    match joined {
        Ok(done) => done,
        Err(e) => (Vec::new(), Err(KmsError::internal(format_args!("action task: {e}")))),
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
    let result = record(state, &request_id, started, outcome, who.source_ip, who.user_agent, result).await;
    let code = match &result {
        Ok(_) => "OK",
        Err(e) => e.code().code(),
    };
    count(state, Some(action), Some(action.name()), code, started.elapsed());
    serde_json::from_slice(&result?).map_err(|e| KmsError::internal(format_args!("{action}: {e}")))
}

/// Parses, authenticates, authorises and runs a request.
async fn process(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> (Outcome, Result<Vec<u8>, KmsError>) {
    let mut outcome = Outcome::default();
    let (parts, body) = req.into_parts();
    if parts.method != Method::GET && parts.method != Method::POST {
        return (outcome, Err(KmsError::new(ErrorCode::UnsupportedHttpMethod)));
    }
    let body = match Limited::new(body, state.max_body_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return (
                outcome,
                Err(KmsError::with_detail(
                    ErrorCode::InvalidParameter,
                    format_args!("The request body is larger than {} bytes or was cut off.", state.max_body_bytes),
                )),
            )
        }
    };
    // Borrowed, not copied: a header name from `http` is already lower-case.
    let headers: Vec<(&str, &str)> =
        parts.headers.iter().filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v))).collect();
    let is_form = headers
        .iter()
        .any(|(n, v)| *n == "content-type" && starts_with_ignore_case(v, "application/x-www-form-urlencoded"));
    let query = parts.uri.query().unwrap_or("");
    let params = Params::from_request(query, is_form.then_some(&body[..]));
    let header = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string());
    outcome.action = params.get("Action").map(str::to_string).or_else(|| header("x-acs-action"));
    let result = async {
        let mut auth = state.auth.verify(&RequestParts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query,
            headers: &headers,
            body: &body,
            params: &params,
        })?;
        auth.caller.source_ip = conn.peer.map(|p| p.ip());
        auth.caller.secure_transport = conn.tls;
        outcome.principal = auth.caller.label();
        outcome.access_key_id = auth.access_key_id.clone();
        let name = outcome.action.as_deref().filter(|a| !a.is_empty()).ok_or_else(|| KmsError::missing("Action"))?;
        let action = Action::parse(name)
            .ok_or_else(|| KmsError::with_detail(ErrorCode::InvalidActionNotFound, format_args!("Action: {name}")))?;
        outcome.known = Some(action);
        match params.get("Version").map(str::to_string).or_else(|| header("x-acs-version")) {
            Some(v) if v == API_VERSION => {}
            Some(v) => {
                return Err(KmsError::with_detail(
                    ErrorCode::InvalidVersion,
                    format_args!("{v:?}; this API is {API_VERSION}"),
                ))
            }
            None => return Err(KmsError::missing("Version")),
        }
        // The audit line names what the engine resolved and checked, allowed or denied.
        let nonce = Some((auth.nonce, auth.nonce_expires_at));
        let (resources, r) =
            run(state, auth.caller, &outcome.principal, &auth.access_key_id, nonce, action, params).await;
        outcome.resources = resources;
        r
    }
    .await;
    (outcome, result)
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

/// What answers requests on a listener: the KMS API, or the secrets agent.
pub type Handler = Arc<dyn Fn(Request<Incoming>) -> BoxFuture + Send + Sync>;
pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>;

/// The KMS API handler.
pub fn api_handler(state: Arc<AppState>) -> Handler {
    Arc::new(move |req| {
        let st = state.clone();
        Box::pin(async move {
            match handle(st, req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        })
    })
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
    let svc = service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(info);
        let state = svc_state.clone();
        state.request_started();
        let refused = head_limits.check_head(req.uri().to_string().len(), req.headers()).err();
        let f = match refused {
            None => Some(handler(req)),
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
                    r.headers_mut().insert("connection", http::HeaderValue::from_static("close"));
                    r
                }
                (None, None) => unreachable!("a request is either refused or handled"),
            })
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_read_timeout_secs.max(1) * 2))
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
