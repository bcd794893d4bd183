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
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use kms_core::{Engine, ErrorCode, KmsError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::actions;
use crate::auth::{Authenticator, RequestParts};
use crate::metrics::Metrics;
use crate::wire::params::Params;
use crate::wire::response::{error_body, new_request_id, success_body, CONTENT_TYPE};

pub const API_VERSION: &str = "2016-01-20";

pub struct AppState {
    pub engine: Arc<Engine>,
    pub auth: Authenticator,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
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
    let (action, result) = process(&state, req).await;
    let (code, response) = match result {
        Ok(value) => ("OK", respond(200, &request_id, CONTENT_TYPE, success_body(&request_id, value))),
        Err(e) => {
            (e.code().code(), respond(e.http_status(), &request_id, CONTENT_TYPE, error_body(&request_id, &host, &e)))
        }
    };
    let elapsed = started.elapsed();
    // Unknown actions are counted under one label, so a scanner cannot grow the metric set.
    let label: &'static str = match action.as_deref() {
        Some(a) => actions::ACTIONS.iter().find(|x| **x == a).copied().unwrap_or("unknown"),
        None => "-",
    };
    state.metrics.record(label, code, elapsed);
    tracing::debug!(request_id = %request_id, action = action.as_deref().unwrap_or("-"), status = response.status().as_u16(),
        micros = elapsed.as_micros() as u64, "request");
    Ok(response)
}

/// Parses, authenticates and runs a request. Returns the action (when known) for metrics.
async fn process(state: &Arc<AppState>, req: Request<Incoming>) -> (Option<String>, Result<Vec<u8>, KmsError>) {
    let (parts, body) = req.into_parts();
    if parts.method != Method::GET && parts.method != Method::POST {
        return (None, Err(KmsError::new(ErrorCode::UnsupportedHttpMethod)));
    }
    let body = match Limited::new(body, state.max_body_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return (
                None,
                Err(KmsError::with_detail(
                    ErrorCode::InvalidParameter,
                    format_args!("The request body is larger than {} bytes or was cut off.", state.max_body_bytes),
                )),
            )
        }
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str().to_ascii_lowercase(), v.to_string())))
        .collect();
    let is_form = headers
        .iter()
        .any(|(n, v)| n == "content-type" && v.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    let query = parts.uri.query().unwrap_or("");
    let params = Params::from_request(query, is_form.then_some(&body[..]));
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let action = params.get("Action").map(str::to_string).or_else(|| header("x-acs-action"));
    let result = async {
        let auth = state.auth.verify(&RequestParts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query,
            headers: &headers,
            body: &body,
            params: &params,
        })?;
        let action = action.clone().filter(|a| !a.is_empty()).ok_or_else(|| KmsError::missing("Action"))?;
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
        if actions::runs_inline(&action) {
            actions::dispatch(&state.engine, &auth.caller, &action, &params)
        } else {
            let state = state.clone();
            tokio::task::spawn_blocking(move || actions::dispatch(&state.engine, &auth.caller, &action, &params))
                .await
                .map_err(|e| KmsError::internal(format_args!("action task: {e}")))?
        }
    }
    .await;
    (action, result)
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
/// the accept loop.
pub async fn serve(handler: Handler, listener: Listener, mut shutdown: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
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
        let watcher = graceful.watcher();
        let st = handler.clone();
        tokio::spawn(async move {
            match conn {
                Accepted::Plain(s) => serve_connection(st, s, watcher).await,
                Accepted::Unix(s) => serve_connection(st, s, watcher).await,
                Accepted::Tls(tcp, acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => serve_connection(st, s, watcher).await,
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
    Plain(tokio::net::TcpStream),
    Tls(tokio::net::TcpStream, tokio_rustls::TlsAcceptor),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Listener) -> std::io::Result<Accepted> {
    Ok(match l {
        Listener::Tcp(l) => {
            let (s, _) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Accepted::Plain(s)
        }
        Listener::Tls(l, acceptor) => {
            let (s, _) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Accepted::Tls(s, acceptor.clone())
        }
        Listener::Unix(l) => Accepted::Unix(l.accept().await?.0),
    })
}

async fn serve_connection<S>(handler: Handler, stream: S, watcher: hyper_util::server::graceful::Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let f = handler(req);
        async move { Ok::<_, Infallible>(f.await) }
    });
    let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .http1_only()
        .serve_connection(TokioIo::new(stream), svc)
        .into_owned();
    let _ = watcher.watch(conn).await;
}
