//! The audit trail: events filtered by time, principal, action and key; whether the chain
//! verifies (the same check as `kmsctl audit verify`); and plots of requests per action and of
//! errors over time. Shown to the owner only: the trail holds every principal's activity.

use std::collections::BTreeMap;

use http::{Response, StatusCode};
use maud::html;

use super::page;
use super::plot;
use super::{is_owner, Ctx};
use crate::audit::{query, AuditEvent, Query};
use crate::server::Body;

/// Rows shown, newest first (the plots count every matching event).
const SHOWN: usize = 200;

pub async fn page(ctx: &Ctx<'_>) -> Response<Body> {
    let title = ctx.t("Audit trail");
    if !is_owner(ctx.s) {
        let body = html! { p.flash.err role="alert" { strong { (ctx.t("Refused")) ": " } (ctx.t("The audit trail is shown to the owner only.")) } };
        return page::layout_status(ctx, StatusCode::FORBIDDEN, title, body);
    }
    let Some(log) = ctx.c.app.audit.clone() else {
        return page::layout(
            ctx,
            title,
            html! { p { (ctx.t("The audit trail is off in this sidecar's configuration.")) } },
        );
    };
    // What was just done is on the page: the writer thread is asked to catch up first.
    log.flush().await;
    let r = ctx.r;
    let opt = |k: &str| Some(r.q(k).trim().to_string()).filter(|v| !v.is_empty());
    // Without a start, the last day: the page stays fast on a log of years.
    let since = opt("since").unwrap_or_else(|| kms_core::clock::format_iso(ctx.c.app.engine.now() - 86_400));
    let q = Query {
        since: Some(since.clone()),
        until: opt("until"),
        principal: opt("principal"),
        action: opt("action"),
        resource: opt("key"),
    };
    let dir = log.dir().to_path_buf();
    let found = tokio::task::spawn_blocking(move || query(&dir, &q)).await;
    let events: Vec<AuditEvent> = match found {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => return page::refused(ctx, title, &kms_core::KmsError::internal(e)),
        Err(e) => return page::refused(ctx, title, &kms_core::KmsError::internal(format_args!("{e}"))),
    };
    let verified = match ctx.c.verify_audit.clone() {
        Some(v) => tokio::task::spawn_blocking(move || v()).await.ok(),
        None => None,
    };
    let mut per_action: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events {
        *per_action.entry(e.action.clone()).or_default() += 1;
    }
    let buckets = over_time(&events);
    let body = html! {
        @match &verified {
            Some(Ok(report)) if report.ok() => p.flash.ok id="chain" { (ctx.t("Chain verified")) ": " (report.events) " " (ctx.t("events")) }
            Some(Ok(report)) => div.flash.err id="chain" role="alert" {
                strong { (ctx.t("Chain broken")) } ul { @for f in report.findings.iter().take(20) { li { (f) } } }
            }
            Some(Err(e)) => p.flash.err id="chain" role="alert" { (ctx.t("Chain broken")) ": " (e) }
            None => {}
        }
        form.filters method="get" action="/audit" {
            label { (ctx.t("From")) input name="since" value=(since) placeholder="2026-01-01T00:00:00Z"; }
            label { (ctx.t("Until")) input name="until" value=(r.q("until")); }
            label { (ctx.t("Principal")) input name="principal" value=(r.q("principal")) placeholder="user:app"; }
            label { (ctx.t("Action")) input name="action" value=(r.q("action")) placeholder="Encrypt"; }
            label { (ctx.t("Key or secret")) input name="key" value=(r.q("key")); }
            button type="submit" { (ctx.t("Filter")) }
        }
        div.plots {
            (plot::bars(ctx.t("Requests per action"), per_action.into_iter().collect()))
            (plot::timeline(ctx.t("Errors over time"), &buckets))
        }
        @if events.is_empty() {
            p { (ctx.t("No matching events.")) }
        } @else {
            p.note { (ctx.t("Showing the newest")) " " (events.len().min(SHOWN)) " / " (events.len()) }
            table id="events" {
                thead { tr {
                    th { (ctx.t("Time")) } th { (ctx.t("Principal")) } th { (ctx.t("Action")) } th { (ctx.t("Resources")) }
                    th { (ctx.t("Result code")) } th { (ctx.t("Source")) }
                } }
                tbody {
                    @for e in events.iter().rev().take(SHOWN) {
                        tr.err[e.code != "OK"] {
                            td { (e.time) } td.principal { (e.principal) } td.action { (e.action) }
                            td { @for res in &e.resources { span.res { (res) } " " } }
                            td.code { (e.code) } td { (e.source_ip) " " small { (e.user_agent) } }
                        }
                    }
                }
            }
        }
    };
    page::layout(ctx, title, body)
}

/// OK and error counts per minute over the span the events cover (at most 60 columns: longer
/// spans are grouped into wider columns).
fn over_time(events: &[AuditEvent]) -> Vec<(String, u64, u64)> {
    let minute = |t: &str| kms_core::clock::parse_iso(t).map(|s| s.div_euclid(60));
    let minutes: Vec<(i64, bool)> =
        events.iter().filter_map(|e| minute(&e.time).map(|m| (m, e.code == "OK"))).collect();
    let (Some(first), Some(last)) = (minutes.iter().map(|m| m.0).min(), minutes.iter().map(|m| m.0).max()) else {
        return Vec::new();
    };
    let width = ((last - first + 1) as u64).div_ceil(60).max(1) as i64;
    let n = ((last - first) / width + 1) as usize;
    let mut out: Vec<(String, u64, u64)> =
        (0..n).map(|i| (kms_core::clock::format_iso((first + i as i64 * width) * 60), 0, 0)).collect();
    for (m, ok) in minutes {
        let b = &mut out[((m - first) / width) as usize];
        if ok {
            b.1 += 1;
        } else {
            b.2 += 1;
        }
    }
    out
}
