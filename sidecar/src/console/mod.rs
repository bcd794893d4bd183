//! The management console: the user guides' console workflows in a browser, served by the
//! sidecar on its own listener (`[console] listen`, loopback unless `tls = true`).
//!
//! It has no powers of its own. A person signs in with an access key pair; every page and form
//! then runs API actions through [`crate::server::run`] as that key's principal – the same engine
//! call, the same authorisation inside the engine, the same audit trail (the line's user agent
//! starts with `console`) – and a refusal is shown as the API's own error. Pages are rendered on
//! the server with every stored string escaped (maud); there is no script at all, and the
//! Content-Security-Policy says so. Forms carry a per-session CSRF token; the session cookie is
//! HttpOnly, SameSite=Strict and (on HTTPS) Secure.

mod audit_page;
mod i18n;
mod keys;
mod page;
pub mod password;
mod plot;
mod secrets;
mod session;
mod tools;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use kms_core::api::Action;
use kms_core::{Caller, KmsError, Principal};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::server::{AppState, Body, ConnInfo, Handler, Outcome};
use crate::wire::params::Params;
pub use i18n::Lang;
use session::{Session, Sessions, COOKIE_PLAIN, COOKIE_TLS};

/// `[console]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// `host:port` to serve the console on; none (the default) serves no console.
    pub listen: Option<String>,
    /// Serve it over HTTPS with the sidecar's certificate (`[tls]`, or the generated one).
    /// Required for an address other than loopback.
    pub tls: bool,
    /// Minutes without a request after which a session ends.
    pub idle_timeout_minutes: u64,
    /// Sessions held at once; the least recently used ends first.
    pub max_sessions: usize,
    /// People who sign in with a name and password instead of an access key pair.
    pub users: Vec<password::ConsoleUser>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig { listen: None, tls: false, idle_timeout_minutes: 15, max_sessions: 256, users: Vec::new() }
    }
}

/// A form larger than this is refused (BYOK material and 6 KiB plaintexts fit many times).
const MAX_FORM_BYTES: usize = 256 * 1024;

/// Reads the audit trail's chain for the audit page (`kmsctl audit verify` in-process).
pub type AuditVerifier = Arc<dyn Fn() -> Result<crate::audit::Report, String> + Send + Sync>;

pub struct Console {
    app: Arc<AppState>,
    sessions: Sessions,
    tls: bool,
    verify_audit: Option<AuditVerifier>,
    users: Vec<password::ConsoleUser>,
}

impl Console {
    pub fn new(app: Arc<AppState>, cfg: &ConsoleConfig, verify_audit: Option<AuditVerifier>) -> Console {
        let idle = Duration::from_secs(cfg.idle_timeout_minutes.max(1) * 60);
        Console {
            app,
            sessions: Sessions::new(idle, cfg.max_sessions),
            tls: cfg.tls,
            verify_audit,
            users: cfg.users.clone(),
        }
    }

    fn cookie_name(&self) -> &'static str {
        if self.tls {
            COOKIE_TLS
        } else {
            COOKIE_PLAIN
        }
    }
}

/// The console's handler for a listener.
pub fn console_handler(console: Arc<Console>) -> Handler {
    Arc::new(move |req, conn| {
        let c = console.clone();
        Box::pin(async move { handle(&c, req, conn).await })
    })
}

/// One request as the pages see it.
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    /// The form, zeroized on drop (it may hold plaintexts, secret values, key material).
    pub form: Params,
    pub cookie: Option<String>,
    pub session: Option<Session>,
    pub lang: Lang,
    pub conn: ConnInfo,
    pub user_agent: String,
}

impl Req {
    pub fn q(&self, name: &str) -> &str {
        self.query.get(name).map(String::as_str).unwrap_or("")
    }

    /// A form field, trimmed; empty when absent.
    pub fn f(&self, name: &str) -> String {
        self.form.get(name).unwrap_or("").trim().to_string()
    }

    /// A form field exactly as sent (secret values and plaintexts keep their white space).
    pub fn raw(&self, name: &str) -> String {
        self.form.get(name).unwrap_or("").to_string()
    }
}

async fn handle(c: &Console, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let query: HashMap<String, String> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let cookie = cookie_value(&header("cookie"), c.cookie_name());
    let session = cookie.as_deref().and_then(|v| c.sessions.get(v));
    let lang = cookie_value(&header("cookie"), "kms_lang")
        .and_then(|l| Lang::parse(&l))
        .or(session.as_ref().map(|s| s.lang))
        .unwrap_or_else(|| Lang::from_accept_language(&header("accept-language")));
    let mut r = Req {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query,
        form: Params::default(),
        cookie,
        session,
        lang,
        conn,
        user_agent: header("user-agent"),
    };
    if r.method == Method::POST {
        // Defence in depth beside the CSRF token and SameSite=Strict: a browser says where a
        // form came from, and only this console's own pages may post to it.
        let origin = header("origin");
        if !origin.is_empty() && !same_origin(&origin, &header("host"), c.tls) {
            return page::message(
                &r,
                StatusCode::FORBIDDEN,
                r.lang.t("The form expired or did not come from this console. Nothing was changed."),
            );
        }
        let is_form = header("content-type").starts_with("application/x-www-form-urlencoded");
        let bytes = match Limited::new(body, MAX_FORM_BYTES).collect().await {
            Ok(b) if is_form => b.to_bytes(),
            Ok(_) => Bytes::new(),
            Err(_) => return page::message(&r, StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."),
        };
        r.form = Params::from_request("", Some(&bytes));
    }
    route(c, r).await
}

async fn route(c: &Console, r: Req) -> Response<Body> {
    let path = r.path.clone();
    match (&r.method, path.as_str()) {
        (&Method::GET, "/assets/console.css") => page::stylesheet(),
        (&Method::GET, "/signin") => page::sign_in(&r, None),
        (&Method::POST, "/signin") => sign_in(c, &r).await,
        (&Method::GET, "/lang") => set_language(c, &r),
        _ => {
            let Some(s) = r.session.clone() else {
                if r.method == Method::GET && (path == "/" || path.starts_with("/key") || path.starts_with("/secret")) {
                    return page::redirect("/signin");
                }
                return page::sign_in(
                    &r,
                    Some(
                        r.lang.t(
                            "Your session ended (signed out, idle too long or the service restarted). Sign in again.",
                        ),
                    ),
                );
            };
            if r.method == Method::POST && !s.csrf_ok(r.form.get("csrf")) {
                return page::message(
                    &r,
                    StatusCode::FORBIDDEN,
                    r.lang.t("The form expired or did not come from this console. Nothing was changed."),
                );
            }
            let flash = r.cookie.as_deref().and_then(|k| c.sessions.take_flash(k));
            let ctx = Ctx { c, r: &r, s: &s, flash };
            match (&r.method, path.as_str()) {
                (&Method::GET, "/") => page::redirect("/keys"),
                (&Method::POST, "/signout") => {
                    if let Some(k) = &r.cookie {
                        c.sessions.end(k);
                    }
                    page::sign_out(c.cookie_name(), c.tls)
                }
                (&Method::GET, "/keys") => keys::list(&ctx).await,
                (&Method::GET, "/key") => keys::detail(&ctx).await,
                (&Method::GET, "/key/new") => keys::new_form(&ctx),
                (&Method::POST, "/key/create") => keys::create(&ctx).await,
                (&Method::POST, "/key/op") => keys::operate(&ctx).await,
                (&Method::GET, "/key/public-key") => keys::public_key(&ctx).await,
                (&Method::GET, "/key/import") => keys::import_page(&ctx),
                (&Method::POST, "/key/import-params") => keys::import_parameters(&ctx).await,
                (&Method::GET, "/key/import-download") => keys::import_download(&ctx),
                (&Method::POST, "/key/import") => keys::import(&ctx).await,
                (&Method::GET, "/secrets") => secrets::list(&ctx).await,
                (&Method::GET, "/secret") => secrets::detail(&ctx, None).await,
                (&Method::GET, "/secret/new") => secrets::new_form(&ctx).await,
                (&Method::POST, "/secret/create") => secrets::create(&ctx).await,
                (&Method::POST, "/secret/op") => secrets::operate(&ctx).await,
                (&Method::POST, "/secret/reveal") => secrets::reveal(&ctx).await,
                (&Method::GET, "/tools") => tools::page(&ctx, None),
                (&Method::POST, "/tools/run") => tools::run(&ctx).await,
                (&Method::GET, "/audit") => audit_page::page(&ctx).await,
                _ => page::message(&r, StatusCode::NOT_FOUND, "Not found."),
            }
        }
    }
}

/// What a page handler has: the console, the request, the signed-in session and the message
/// the previous page left.
pub struct Ctx<'a> {
    pub c: &'a Console,
    pub r: &'a Req,
    pub s: &'a Session,
    pub flash: Option<(bool, String)>,
}

impl Ctx<'_> {
    pub fn t(&self, en: &'static str) -> &'static str {
        self.r.lang.t(en)
    }

    /// Runs an API action as the signed-in principal, exactly as a signed API request would
    /// run it, and records it in the audit trail and the metrics.
    pub async fn call(&self, action: Action, params: &[(&str, String)]) -> Result<Value, KmsError> {
        let mut caller = Caller::new(self.s.principal.clone());
        caller.source_ip = self.r.conn.peer.map(|p| p.ip());
        caller.secure_transport = self.r.conn.tls;
        let who = crate::server::Internal {
            caller,
            access_key_id: &self.s.access_key_id,
            source_ip: self.r.conn.source_ip(),
            user_agent: format!("console; {}", self.r.user_agent),
        };
        let params = Params::from_pairs(params.iter().map(|(k, v)| (k, v)));
        crate::server::call_internal(&self.c.app, who, action, params).await
    }

    /// Leaves a message for the next page and sends the browser there (post/redirect/get).
    pub fn done(&self, to: &str, outcome: Result<String, KmsError>) -> Response<Body> {
        let flash = match outcome {
            Ok(m) => (true, m),
            Err(e) => (false, refusal(&e)),
        };
        if let Some(k) = &self.r.cookie {
            self.c.sessions.update(k, |s| s.flash = Some(flash));
        }
        page::redirect(to)
    }
}

/// An API refusal as the console shows it: the code, the HTTP status and the message, as a
/// client of the API would see them.
pub fn refusal(e: &KmsError) -> String {
    format!("{} (HTTP {}): {}", e.code().code(), e.http_status(), e.message())
}

async fn sign_in(c: &Console, r: &Req) -> Response<Body> {
    let started = Instant::now();
    let id = r.f("AccessKeyId");
    let secret = r.raw("AccessKeySecret");
    // A configured console user by name (Argon2id, on the blocking pool), else an access key.
    let (outcome, id) = match c.users.iter().find(|u| u.name == id).cloned() {
        Some(user) => {
            let ok = tokio::task::spawn_blocking(move || password::verify(&user, &secret).then_some(user))
                .await
                .ok()
                .flatten();
            let label = format!("console:{id}");
            match ok.map(|u| crate::config::parse_principal(&u.principal)) {
                Some(Ok(p)) => (Ok(p), label),
                _ => (
                    Err(KmsError::with_detail(
                        kms_core::ErrorCode::InvalidAccessKeyIdNotFound,
                        "wrong name or password",
                    )),
                    label,
                ),
            }
        }
        None => (c.app.auth.sign_in(&id, &secret), id),
    };
    // Recorded like an API call, so the trail shows who signed in, and who tried.
    let principal = outcome.as_ref().map(|p| Caller::new(p.clone()).label()).unwrap_or_default();
    let audited = Outcome {
        action: Some("ConsoleSignIn".into()),
        known: None,
        principal,
        access_key_id: id.clone(),
        resources: Vec::new(),
    };
    let source = r.conn.source_ip();
    let agent = format!("console; {}", r.user_agent);
    let result = outcome.as_ref().map(|_| Vec::new()).map_err(Clone::clone);
    let request_id = crate::wire::response::new_request_id();
    let _ = crate::server::record(&c.app, &request_id, started, audited, &source, &agent, result).await;
    match outcome {
        Ok(p) => {
            let cookie = c.sessions.start(p, id, r.lang);
            page::signed_in(c.cookie_name(), &cookie, c.tls)
        }
        Err(_) => {
            // A wrong guess costs the guesser time; the message does not say which half was wrong,
            // nor does the time taken: every refusal answers 0.4 s after the request came, so a
            // console user's name (whose password is hashed, tens of ms) and an unknown name
            // (no hashing) look alike.
            tokio::time::sleep_until(tokio::time::Instant::from_std(started + Duration::from_millis(400))).await;
            page::sign_in(r, Some(r.lang.t("The access key or its secret is wrong.")))
        }
    }
}

fn set_language(c: &Console, r: &Req) -> Response<Body> {
    let lang = Lang::parse(r.q("to")).unwrap_or(r.lang);
    if let Some(k) = &r.cookie {
        c.sessions.update(k, |s| s.lang = lang);
    }
    let back = match r.q("back") {
        b if b.starts_with('/') && !b.starts_with("//") && !b.contains('\\') => b.to_string(),
        _ => "/keys".to_string(),
    };
    page::with_cookie(
        page::redirect(&back),
        &format!("kms_lang={}; Path=/; SameSite=Strict; Max-Age=31536000", lang.code()),
    )
}

/// The value of cookie `name` in a `Cookie` header.
fn cookie_value(header: &str, name: &str) -> Option<String> {
    header.split(';').filter_map(|kv| kv.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
}

/// Whether an `Origin` header names this console (scheme and host as the browser reached it).
fn same_origin(origin: &str, host: &str, tls: bool) -> bool {
    let scheme = if tls { "https://" } else { "http://" };
    origin.strip_prefix(scheme).is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

/// A KmsError for a page's own input checks, in the API's shape.
pub fn invalid(what: &str, why: impl std::fmt::Display) -> KmsError {
    KmsError::invalid(what, why)
}

/// Principal of the owner: only it sees the audit page.
pub fn is_owner(s: &Session) -> bool {
    matches!(s.principal, Principal::Owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_origins_are_read_strictly() {
        assert_eq!(cookie_value("a=1; kms_console=abc; b=2", "kms_console"), Some("abc".into()));
        assert_eq!(cookie_value("xkms_console=abc", "kms_console"), None);
        assert!(same_origin("http://127.0.0.1:9000", "127.0.0.1:9000", false));
        assert!(!same_origin("http://evil.example", "127.0.0.1:9000", false));
        assert!(!same_origin("https://127.0.0.1:9000", "127.0.0.1:9000", false));
        assert!(!same_origin("http://127.0.0.1:9000.evil", "127.0.0.1:9000", false));
    }
}
