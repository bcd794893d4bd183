//! The page shell and the answers every page shares: layout with navigation, flash messages,
//! forms' CSRF field, redirects, downloads, and the security headers on every response.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use maud::{html, Markup, DOCTYPE};

use super::{Ctx, Req};
use crate::server::Body;

/// No script, no frames, no foreign origins: what the console needs and nothing else. The
/// referrer policy is `same-origin`, not `no-referrer`: under the latter a browser sends
/// `Origin: null` with the console's own forms, and the origin check could not tell them from
/// a sandboxed attacker's.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

fn secured(status: StatusCode, content_type: &str) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-security-policy", CSP)
        .header("x-frame-options", "DENY")
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "same-origin")
        .header("cross-origin-opener-policy", "same-origin")
        .header("cache-control", "no-store")
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    secured(status, content_type).body(Full::new(Bytes::from(body))).expect("valid response")
}

pub fn html_page(status: StatusCode, m: Markup) -> Response<Body> {
    respond(status, "text/html; charset=utf-8", m.into_string().into_bytes())
}

pub fn redirect(to: &str) -> Response<Body> {
    let mut r = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", Vec::new());
    if let Ok(v) = http::HeaderValue::from_str(to) {
        r.headers_mut().insert("location", v);
    }
    r
}

pub fn with_cookie(mut r: Response<Body>, cookie: &str) -> Response<Body> {
    if let Ok(v) = http::HeaderValue::from_str(cookie) {
        r.headers_mut().append("set-cookie", v);
    }
    r
}

/// A file to save (a public key, an import token): never rendered by the browser.
pub fn download(filename: &str, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let mut r = respond(StatusCode::OK, content_type, body);
    let safe: String = filename.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect();
    if let Ok(v) = http::HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        r.headers_mut().insert("content-disposition", v);
    }
    r
}

pub fn stylesheet() -> Response<Body> {
    let mut r = respond(StatusCode::OK, "text/css; charset=utf-8", include_str!("console.css").as_bytes().to_vec());
    r.headers_mut().insert("cache-control", http::HeaderValue::from_static("max-age=3600"));
    r
}

fn head(lang: super::Lang, title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " – " (lang.t("Key Management Service console")) }
        link rel="stylesheet" href="/assets/console.css";
    }
}

fn languages(r: &Req) -> Markup {
    let back = match r.query.is_empty() {
        true => r.path.clone(),
        false => format!(
            "{}?{}",
            r.path,
            form_urlencoded::Serializer::new(String::new()).extend_pairs(r.query.iter()).finish()
        ),
    };
    let link = |to: &str| {
        format!(
            "/lang?{}",
            form_urlencoded::Serializer::new(String::new()).append_pair("to", to).append_pair("back", &back).finish()
        )
    };
    html! {
        nav.lang aria-label=(r.lang.t("Language")) {
            a href=(link("zh")) lang="zh-CN" { "中文" }
            " · "
            a href=(link("en")) lang="en" { "English" }
        }
    }
}

/// A page of the signed-in console.
pub fn layout(ctx: &Ctx, title: &str, body: Markup) -> Response<Body> {
    layout_status(ctx, StatusCode::OK, title, body)
}

pub fn layout_status(ctx: &Ctx, status: StatusCode, title: &str, body: Markup) -> Response<Body> {
    let here = |p: &str| ctx.r.path.starts_with(p);
    let m = html! {
        (DOCTYPE)
        html lang=(ctx.r.lang.code()) {
            head { (head(ctx.r.lang, title)) }
            body {
                header {
                    a.brand href="/keys" { (ctx.t("Key Management Service console")) }
                    nav.main {
                        a href="/keys" aria-current=[here("/key").then_some("page")] { (ctx.t("Keys")) }
                        a href="/secrets" aria-current=[here("/secret").then_some("page")] { (ctx.t("Secrets")) }
                        a href="/tools" aria-current=[here("/tools").then_some("page")] { (ctx.t("Online tools")) }
                        a href="/audit" aria-current=[here("/audit").then_some("page")] { (ctx.t("Audit trail")) }
                    }
                    (languages(ctx.r))
                    div.who {
                        (ctx.t("Signed in as")) " " strong id="principal" { (kms_core::Caller::new(ctx.s.principal.clone()).label()) }
                        form method="post" action="/signout" {
                            (csrf(ctx))
                            button type="submit" { (ctx.t("Sign out")) }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    @if let Some((ok, text)) = &ctx.flash {
                        @if *ok {
                            p.flash.ok role="status" { (text) }
                        } @else {
                            p.flash.err role="alert" { strong { (ctx.t("Refused")) ": " } (text) }
                        }
                    }
                    (body)
                }
            }
        }
    };
    html_page(status, m)
}

/// The hidden field every form carries.
pub fn csrf(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.s.csrf); }
}

/// A form for one operation on one resource: the CSRF token, the resource's id and the
/// operation as hidden fields, `extra` inputs, one button.
pub fn op_form(ctx: &Ctx, action: &str, id: (&str, &str), op: &str, label: &str, extra: Markup) -> Markup {
    html! {
        form.op method="post" action=(action) {
            (csrf(ctx))
            input type="hidden" name=(id.0) value=(id.1);
            input type="hidden" name="op" value=(op);
            (extra)
            button type="submit" { (label) }
        }
    }
}

/// A refusal shown in place (when there is no page to go back to).
pub fn refused(ctx: &Ctx, title: &str, e: &kms_core::KmsError) -> Response<Body> {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    layout_status(
        ctx,
        status,
        title,
        html! { p.flash.err role="alert" { strong { (ctx.t("Refused")) ": " } (super::refusal(e)) } },
    )
}

/// A bare message (no session: a stale form, a page that does not exist).
pub fn message(r: &Req, status: StatusCode, text: &str) -> Response<Body> {
    html_page(
        status,
        html! {
            (DOCTYPE)
            html lang=(r.lang.code()) {
                head { (head(r.lang, text)) }
                body { main { p.flash.err role="alert" { (text) } p { a href="/keys" { (r.lang.t("Keys")) } } } }
            }
        },
    )
}

pub fn sign_in(r: &Req, error: Option<&str>) -> Response<Body> {
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    html_page(
        status,
        html! {
            (DOCTYPE)
            html lang=(r.lang.code()) {
                head { (head(r.lang, r.lang.t("Sign in"))) }
                body.signin {
                    main {
                        h1 { (r.lang.t("Key Management Service console")) }
                        (languages(r))
                        @if let Some(e) = error { p.flash.err role="alert" { (e) } }
                        form method="post" action="/signin" {
                            label { (r.lang.t("AccessKey ID or user name")) input name="AccessKeyId" autocomplete="username" required autofocus; }
                            label { (r.lang.t("AccessKey secret or password")) input name="AccessKeySecret" type="password" autocomplete="current-password" required; }
                            button type="submit" { (r.lang.t("Sign in")) }
                        }
                    }
                }
            }
        },
    )
}

fn session_cookie(name: &str, value: &str, tls: bool, max_age: Option<u32>) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if tls {
        c.push_str("; Secure");
    }
    if let Some(a) = max_age {
        c.push_str(&format!("; Max-Age={a}"));
    }
    c
}

pub fn signed_in(name: &str, value: &str, tls: bool) -> Response<Body> {
    with_cookie(redirect("/keys"), &session_cookie(name, value, tls, None))
}

pub fn sign_out(name: &str, tls: bool) -> Response<Body> {
    with_cookie(redirect("/signin"), &session_cookie(name, "", tls, Some(0)))
}

/// `PageNumber` links under a list.
pub fn pager(ctx: &Ctx, base: &str, page: u64, size: u64, total: u64) -> Markup {
    let pages = total.div_ceil(size.max(1)).max(1);
    let link = |p: u64| {
        let mut q: Vec<(String, String)> =
            ctx.r.query.iter().filter(|(k, _)| k.as_str() != "page").map(|(k, v)| (k.clone(), v.clone())).collect();
        q.sort();
        q.push(("page".into(), p.to_string()));
        format!("{base}?{}", form_urlencoded::Serializer::new(String::new()).extend_pairs(q).finish())
    };
    html! {
        nav.pager {
            @if page > 1 { a href=(link(page - 1)) rel="prev" { (ctx.t("Previous")) } }
            span { (ctx.t("Page")) " " (page) " / " (pages) " · " (total) }
            @if page < pages { a href=(link(page + 1)) rel="next" { (ctx.t("Next")) } }
        }
    }
}
