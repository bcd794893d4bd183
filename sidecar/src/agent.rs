//! The secrets agent: application containers read secrets over plain HTTP on loopback (or a Unix
//! socket) without holding KMS credentials, like the Alibaba KMS Agent and the AWS Secrets Manager
//! Agent.
//!
//! - `GET /v1/<secret name>[?versionStage=…|versionId=…]`
//! - `GET /secretsmanager/get?secretId=<name>[&versionStage=…][&versionId=…]`
//!
//! Each request must carry the SSRF token in `X-KMS-Token` (compared in constant time); a request
//! with `X-Forwarded-For` came through a proxy and is refused, so a server-side request forgery in
//! the app cannot be relayed here. The answer is the GetSecretValue JSON. Optional caching for
//! `cache_ttl_secs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use hyper::body::Incoming;
use kms_core::api::GetSecretValueRequest;
use kms_core::{Caller, ErrorCode, KmsError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::config::{parse_principal, write_private};
use crate::server::{respond, AppState, Body, ConnInfo, Handler};
use crate::wire::response::{error_body, new_request_id, success_body, to_json, CONTENT_TYPE};

pub const TOKEN_HEADER: &str = "x-kms-token";
pub const ENV_AGENT_TOKEN: &str = "KMS_AGENT_TOKEN";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Loopback address to serve on (e.g. `127.0.0.1:18081`); anything else is refused.
    pub listen: Option<String>,
    pub unix_socket: Option<PathBuf>,
    /// Where the SSRF token lives (default `<data-dir>/agent.token`, created 0600); the
    /// `KMS_AGENT_TOKEN` environment variable overrides it.
    pub token_file: Option<PathBuf>,
    /// Whose permissions the agent reads with: `owner`, `user:<name>`.
    pub principal: String,
    /// Seconds an answer may be served from memory; 0 = always fresh.
    pub cache_ttl_secs: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig { listen: None, unix_socket: None, token_file: None, principal: "owner".into(), cache_ttl_secs: 0 }
    }
}

impl AgentConfig {
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || self.unix_socket.is_some()
    }
}

/// (secret name, version stage, version id) → when answered, and the answer.
type AnswerCache = HashMap<(String, String, String), (Instant, Vec<u8>)>;

pub struct Agent {
    token: Zeroizing<String>,
    caller: Caller,
    ttl: Duration,
    cache: Mutex<AnswerCache>,
}

/// The agent's listening address, checked to be loopback.
pub fn loopback_addr(listen: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = listen.parse().map_err(|e| format!("agent listen {listen:?}: {e} (give an IP:port)"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "agent listen {listen}: the agent serves only loopback (127.0.0.0/8 or ::1) or a Unix socket"
        ));
    }
    Ok(addr)
}

/// The token: `KMS_AGENT_TOKEN`, else the token file (created with a random token if missing).
pub fn load_token(cfg: &AgentConfig, data_dir: &Path) -> Result<(Zeroizing<String>, PathBuf), String> {
    let path = cfg.token_file.clone().unwrap_or_else(|| data_dir.join("agent.token"));
    if let Ok(t) = std::env::var(ENV_AGENT_TOKEN) {
        if t.len() < 16 {
            return Err(format!("{ENV_AGENT_TOKEN} is too short (16 characters at least)"));
        }
        return Ok((Zeroizing::new(t), path));
    }
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 16 => Ok((Zeroizing::new(t.trim().to_string()), path)),
        Ok(_) => Err(format!("{}: the token is too short (16 characters at least)", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use rand::RngCore;
            let mut b = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut b);
            let t = Zeroizing::new(hex::encode(b));
            write_private(&path, t.as_bytes())?;
            Ok((t, path))
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

impl Agent {
    pub fn new(cfg: &AgentConfig, token: Zeroizing<String>) -> Result<Agent, String> {
        Ok(Agent {
            token,
            caller: Caller::new(parse_principal(&cfg.principal)?),
            ttl: Duration::from_secs(cfg.cache_ttl_secs),
            cache: Mutex::new(HashMap::new()),
        })
    }
}

pub fn agent_handler(app: Arc<AppState>, agent: Arc<Agent>) -> Handler {
    Arc::new(move |req, conn| Box::pin(handle(app.clone(), agent.clone(), req, conn)))
}

/// One request. It is answered when this is called; the future returned waits only for room
/// in a full audit queue (boxed: a plain function and a small future, for the reasons
/// `server::handle` gives).
fn handle(
    app: Arc<AppState>,
    agent: Arc<Agent>,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> impl std::future::Future<Output = Response<Body>> + Send + 'static {
    let started = Instant::now();
    let rid = new_request_id();
    let mut resources = Vec::new();
    let (result, label) = answer(&app, &agent, &req, &rid, &mut resources);
    app.metrics.count_agent(label);
    let full_queue = app.audit.as_ref().and_then(|audit| {
        let (code, status) = crate::audit::answer_code(&result);
        let time = kms_core::clock::format_iso(app.engine.now());
        let principal = agent.caller.label();
        let source_ip = conn.source_ip();
        let action = format!("agent:GetSecretValue ({label})");
        let entry = crate::audit::Entry {
            time: &time,
            request_id: &rid,
            principal: &principal,
            access_key_id: "agent",
            source_ip: &source_ip,
            user_agent: req.headers().get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or(""),
            action: &action,
            resources: &resources,
            code,
            http_status: status,
            latency_us: started.elapsed().as_micros() as u64,
        };
        let line = audit.try_record(&entry)?;
        // Only a full queue needs its own handle on the log (the wait outlives this call).
        let audit = audit.clone();
        Some(Box::pin(async move { audit.record(line).await }))
    });
    let response = match result {
        Ok(body) => respond(200, &rid, CONTENT_TYPE, body),
        Err(e) => respond(e.http_status(), &rid, CONTENT_TYPE, error_body(&rid, "kms-agent", &e)),
    };
    async move {
        if let Some(wait) = full_queue {
            wait.await;
        }
        response
    }
}

/// The body for a request, and the metric label of the outcome.
fn answer(
    app: &AppState,
    agent: &Agent,
    req: &Request<Incoming>,
    rid: &str,
    resources: &mut Vec<String>,
) -> (Result<Vec<u8>, KmsError>, &'static str) {
    if req.method() != Method::GET {
        return (Err(KmsError::new(ErrorCode::UnsupportedHttpMethod)), "refused");
    }
    if let Some(h) = proxy_header(req.headers()) {
        return (
            Err(KmsError::with_detail(
                ErrorCode::InvalidParameter,
                format_args!("Requests relayed by a proxy ({h}) are refused: the agent serves local processes only."),
            )),
            "refused",
        );
    }
    let token = req.headers().get(TOKEN_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if !bool::from(token.ct_eq(agent.token.as_bytes())) {
        return (
            Err(KmsError::with_detail(ErrorCode::NoPermission, "Send the agent token in the X-KMS-Token header.")),
            "denied",
        );
    }
    let query: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let path = req.uri().path();
    let name = if let Some(rest) = path.strip_prefix("/v1/") {
        percent_decode(rest)
    } else if path == "/secretsmanager/get" {
        match query.get("secretId") {
            Some(n) => n.clone(),
            None => return (Err(KmsError::missing("secretId")), "error"),
        }
    } else {
        return (
            Err(KmsError::with_detail(
                ErrorCode::ResourceNotFound,
                "Use GET /v1/<name> or /secretsmanager/get?secretId=<name>.",
            )),
            "error",
        );
    };
    // The agent reads with its principal's permissions, like any other caller; a cached value is
    // served only to a principal that may read it now (a policy reload or a disabled CMK counts
    // at once, not after the cache's TTL).
    let allowed = app.engine.authorize_secret_read(&agent.caller, &name);
    resources.extend(agent.caller.trail.take());
    if let Err(e) = allowed {
        let outcome = if e.code() == ErrorCode::NoPermission { "denied" } else { "error" };
        return (Err(e), outcome);
    }
    let stage = query.get("versionStage").cloned().unwrap_or_default();
    let version = query.get("versionId").cloned().unwrap_or_default();
    let key = (name.clone(), stage.clone(), version.clone());
    if !agent.ttl.is_zero() {
        if let Some((at, body)) = agent.cache.lock().get(&key) {
            if at.elapsed() < agent.ttl {
                return (Ok(body.clone()), "hit");
            }
        }
    }
    let r = app.engine.get_secret_value(
        &agent.caller,
        GetSecretValueRequest {
            secret_name: name,
            version_id: Some(version).filter(|v| !v.is_empty()),
            version_stage: Some(stage).filter(|v| !v.is_empty()),
            fetch_extended_config: Some(true),
            dry_run: false,
        },
    );
    match r {
        Ok(v) => {
            let body = success_body(rid, to_json(&v));
            if !agent.ttl.is_zero() {
                agent.cache.lock().insert(key, (Instant::now(), body.clone()));
            }
            (Ok(body), "miss")
        }
        Err(e) => (Err(e), "error"),
    }
}

/// The first header that says a proxy relayed the request: `Forwarded` (RFC 7239), `Via`,
/// `X-Real-IP`, or any `X-Forwarded-*`. A proxy that strips all of them is not detectable here;
/// the agent listens on loopback only for that reason.
fn proxy_header(headers: &http::HeaderMap) -> Option<&str> {
    headers.keys().map(|n| n.as_str()).find(|n| {
        matches!(*n, "forwarded" | "via" | "x-real-ip" | "x-forwarded" | "true-client-ip" | "client-ip")
            || n.starts_with("x-forwarded-")
    })
}

/// Decodes `%XX` escapes byte-wise (a `%` not followed by two hex digits stays as it is); bytes
/// that are not UTF-8 become U+FFFD, so a name that does not exist is looked up, never a panic.
pub(crate) fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let digit = |at: usize| bytes.get(at).copied().and_then(hex);
            if let (Some(h), Some(l)) = (digit(i + 1), digit(i + 2)) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_future_fits_the_allocator_cache() {
        fn returned<A, B, C, D, R>(_: fn(A, B, C, D) -> R) -> usize {
            std::mem::size_of::<R>()
        }
        let size = returned(handle);
        assert!(size <= crate::server::REQUEST_FUTURE_MAX, "a request's future is {size} bytes");
    }

    #[test]
    fn only_loopback_addresses_are_accepted() {
        assert!(loopback_addr("127.0.0.1:1").is_ok());
        assert!(loopback_addr("[::1]:1").is_ok());
        assert!(loopback_addr("0.0.0.0:1").is_err());
        assert!(loopback_addr("10.0.0.1:1").is_err());
        assert!(loopback_addr("localhost:1").is_err());
    }

    #[test]
    fn names_are_percent_decoded() {
        assert_eq!(percent_decode("app%2Fdb%20x"), "app/db x");
        assert_eq!(percent_decode("a/b"), "a/b");
        assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
        assert_eq!(percent_decode("end%41"), "endA", "an escape at the very end");
        // Regression: a multi-byte character right after '%' panicked (slicing inside it).
        assert_eq!(percent_decode("%aé"), "%aé");
        assert_eq!(percent_decode("%é1"), "%é1");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn every_proxy_header_is_recognised() {
        for h in ["forwarded", "via", "x-real-ip", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"] {
            let mut m = http::HeaderMap::new();
            m.insert(http::HeaderName::from_static(h), http::HeaderValue::from_static("1.2.3.4"));
            assert_eq!(proxy_header(&m), Some(h));
        }
        let mut m = http::HeaderMap::new();
        m.insert("x-kms-token", http::HeaderValue::from_static("t"));
        assert_eq!(proxy_header(&m), None);
    }
}
