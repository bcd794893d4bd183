//! Secrets: the list with a name filter and paging, creating one (under a chosen CMK or the
//! secrets service key), a secret's versions with their stages, storing a new value, moving a
//! stage, deleting with a recovery window or at once, restoring. A value is shown only when the
//! person asks for it (a POST: GetSecretValue, in the audit trail like any other read).

use http::Response;
use kms_core::api::Action;
use maud::{html, Markup};
use serde_json::Value;

use super::keys::enc;
use super::page::{self, csrf};
use super::{invalid, Ctx};
use crate::server::Body;

const PAGE_SIZE: u64 = 20;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn list_of<'a>(v: &'a Value, outer: &str, inner: &str) -> &'a [Value] {
    v[outer][inner].as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn stages(v: &Value) -> Vec<String> {
    list_of(v, "VersionStages", "VersionStage").iter().map(|x| s(x).to_string()).collect()
}

pub async fn list(ctx: &Ctx<'_>) -> Response<Body> {
    let r = ctx.r;
    let page: u64 = r.q("page").parse().unwrap_or(1).max(1);
    let mut p = vec![("PageSize", PAGE_SIZE.to_string()), ("PageNumber", page.to_string())];
    if !r.q("name").is_empty() {
        p.push(("Filters", serde_json::json!([{"Key": "SecretName", "Values": [r.q("name")]}]).to_string()));
    }
    let listed = match ctx.call(Action::ListSecrets, &p).await {
        Ok(v) => v,
        Err(e) => return page::refused(ctx, ctx.t("Secrets"), &e),
    };
    let body = html! {
        p.actions { a.button href="/secret/new" { (ctx.t("Create secret")) } }
        form.filters method="get" action="/secrets" {
            label { (ctx.t("Name contains")) input name="name" value=(r.q("name")); }
            button type="submit" { (ctx.t("Filter")) }
        }
        table id="secrets" {
            thead { tr { th { (ctx.t("Secret name")) } th { (ctx.t("Created")) } th { (ctx.t("Updated")) } th { (ctx.t("Planned deletion")) } } }
            tbody {
                @for e in list_of(&listed, "SecretList", "Secret") {
                    tr {
                        td { a href=(format!("/secret?name={}", enc(s(&e["SecretName"])))) { (s(&e["SecretName"])) } }
                        td { (s(&e["CreateTime"])) } td { (s(&e["UpdateTime"])) } td { (s(&e["PlannedDeleteTime"])) }
                    }
                }
            }
        }
        (page::pager(ctx, "/secrets", page, PAGE_SIZE, listed["TotalCount"].as_u64().unwrap_or(0)))
    };
    page::layout(ctx, ctx.t("Secrets"), body)
}

/// The secret's page; `revealed` is a value the person just asked to see.
pub async fn detail(ctx: &Ctx<'_>, revealed: Option<(String, String)>) -> Response<Body> {
    let name = match ctx.r.method {
        http::Method::POST => ctx.r.f("SecretName"),
        _ => ctx.r.q("name").to_string(),
    };
    let described = match ctx.call(Action::DescribeSecret, &[("SecretName", name.clone())]).await {
        Ok(v) => v,
        Err(e) => return page::refused(ctx, ctx.t("Secrets"), &e),
    };
    let versions = ctx
        .call(
            Action::ListSecretVersionIds,
            &[("SecretName", name.clone()), ("IncludeDeprecated", "true".into()), ("PageSize", "100".into())],
        )
        .await
        .map(|v| list_of(&v, "VersionIds", "VersionId").to_vec())
        .unwrap_or_default();
    let deleted = !s(&described["PlannedDeleteTime"]).is_empty();
    let op = |op: &str, label: &str, extra: Markup| {
        page::op_form(ctx, "/secret/op", ("SecretName", &name), op, label, extra)
    };
    let fields = [
        ("Secret name", "SecretName"),
        ("Description", "Description"),
        ("Encryption key", "EncryptionKeyId"),
        ("Created", "CreateTime"),
        ("Updated", "UpdateTime"),
        ("Planned deletion", "PlannedDeleteTime"),
    ];
    let body = html! {
        table.meta id="metadata" { @for (label, f) in fields { tr { th { (ctx.t(label)) } td data-field=(f) { (s(&described[f])) } } } }
        section {
            h2 { (ctx.t("Versions")) }
            table id="versions" {
                thead { tr { th { (ctx.t("Version ID")) } th { (ctx.t("Stages")) } th { (ctx.t("Created")) } th {} } }
                tbody {
                    @for v in &versions {
                        tr data-version=(s(&v["VersionId"])) {
                            td { (s(&v["VersionId"])) }
                            td.stages { @for st in stages(v) { span.stage { (st) } " " } }
                            td { (s(&v["CreateTime"])) }
                            td {
                                form.op method="post" action="/secret/reveal" {
                                    (csrf(ctx))
                                    input type="hidden" name="SecretName" value=(name);
                                    input type="hidden" name="VersionId" value=(s(&v["VersionId"]));
                                    button type="submit" { (ctx.t("Show value")) }
                                }
                            }
                        }
                    }
                }
            }
            p.note { (ctx.t("Showing a value is recorded in the audit trail.")) }
            @if let Some((version, value)) = &revealed {
                section id="revealed" {
                    h3 { (ctx.t("Secret value")) " " (version) }
                    pre id="secret-value" { (value) }
                }
            }
        }
        @if !deleted {
            section {
                h2 { (ctx.t("Store a new version")) }
                (op("put", ctx.t("Store a new version"), html! {
                    label { (ctx.t("Version ID")) input name="VersionId" required; }
                    label { (ctx.t("Secret value")) textarea name="SecretData" rows="3" required {} }
                }))
            }
            section {
                h2 { (ctx.t("Move stage")) }
                (op("stage", ctx.t("Move stage"), html! {
                    label { (ctx.t("Stage")) input name="VersionStage" value="ACSCurrent" required; }
                    label { (ctx.t("To version")) select name="MoveToVersion" { @for v in &versions { option value=(s(&v["VersionId"])) { (s(&v["VersionId"])) } } } }
                }))
            }
            section {
                h2 { (ctx.t("Delete secret")) }
                (op("delete", ctx.t("Delete secret"), html! {
                    label { (ctx.t("Recovery window (days)")) input name="RecoveryWindowInDays" type="number" min="7" max="30" value="30"; }
                    label { input type="checkbox" name="Force" value="true"; (ctx.t("Delete at once, without recovery")) }
                }))
            }
        } @else {
            (op("restore", ctx.t("Restore"), html! {}))
        }
    };
    page::layout(ctx, &format!("{} {name}", ctx.t("Secrets")), body)
}

pub async fn new_form(ctx: &Ctx<'_>) -> Response<Body> {
    // The CMKs the person may choose from: enabled symmetric keys it can list.
    let filters = r#"[{"Key":"KeyState","Values":["Enabled"]},{"Key":"KeySpec","Values":["Aliyun_AES_256","Aliyun_SM4"]},{"Key":"CreatorType","Values":["User"]}]"#;
    let keys: Vec<String> = ctx
        .call(Action::ListKeys, &[("PageSize", "100".into()), ("Filters", filters.into())])
        .await
        .map(|v| list_of(&v, "Keys", "Key").iter().map(|k| s(&k["KeyId"]).to_string()).collect())
        .unwrap_or_default();
    let body = html! {
        form.create method="post" action="/secret/create" {
            (csrf(ctx))
            label { (ctx.t("Secret name")) input name="SecretName" required; }
            label { (ctx.t("Secret value")) textarea name="SecretData" rows="3" required {} }
            label { (ctx.t("Version ID")) input name="VersionId" value="v1" required; }
            label { (ctx.t("Encryption key"))
                select name="EncryptionKeyId" {
                    option value="" { (ctx.t("Default (the secrets service key)")) }
                    @for k in &keys { option value=(k) { (k) } }
                }
            }
            label { (ctx.t("Description")) input name="Description"; }
            button type="submit" { (ctx.t("Create secret")) }
        }
    };
    page::layout(ctx, ctx.t("Create secret"), body)
}

pub async fn create(ctx: &Ctx<'_>) -> Response<Body> {
    let r = ctx.r;
    let name = r.f("SecretName");
    let mut p =
        vec![("SecretName", name.clone()), ("SecretData", r.raw("SecretData")), ("VersionId", r.f("VersionId"))];
    if !r.f("EncryptionKeyId").is_empty() {
        p.push(("EncryptionKeyId", r.f("EncryptionKeyId")));
    }
    if !r.f("Description").is_empty() {
        p.push(("Description", r.raw("Description")));
    }
    match ctx.call(Action::CreateSecret, &p).await {
        Ok(_) => ctx.done(&format!("/secret?name={}", enc(&name)), Ok(ctx.t("Done.").to_string())),
        Err(e) => ctx.done("/secret/new", Err(e)),
    }
}

pub async fn operate(ctx: &Ctx<'_>) -> Response<Body> {
    let r = ctx.r;
    let name = r.f("SecretName");
    let secret = ("SecretName", name.clone());
    let outcome = match r.f("op").as_str() {
        "put" => {
            ctx.call(
                Action::PutSecretValue,
                &[secret, ("VersionId", r.f("VersionId")), ("SecretData", r.raw("SecretData"))],
            )
            .await
        }
        "stage" => {
            ctx.call(
                Action::UpdateSecretVersionStage,
                &[secret, ("VersionStage", r.f("VersionStage")), ("MoveToVersion", r.f("MoveToVersion"))],
            )
            .await
        }
        "delete" if r.f("Force") == "true" => {
            ctx.call(Action::DeleteSecret, &[secret, ("ForceDeleteWithoutRecovery", "true".into())]).await
        }
        "delete" => {
            ctx.call(Action::DeleteSecret, &[secret, ("RecoveryWindowInDays", r.f("RecoveryWindowInDays"))]).await
        }
        "restore" => ctx.call(Action::RestoreSecret, &[secret]).await,
        other => Err(invalid("op", format_args!("{other:?} is not an operation on a secret"))),
    };
    let gone = r.f("op") == "delete" && r.f("Force") == "true" && outcome.is_ok();
    let to = if gone { "/secrets".to_string() } else { format!("/secret?name={}", enc(&name)) };
    ctx.done(&to, outcome.map(|_| ctx.t("Done.").to_string()))
}

pub async fn reveal(ctx: &Ctx<'_>) -> Response<Body> {
    let r = ctx.r;
    let p = [("SecretName", r.f("SecretName")), ("VersionId", r.f("VersionId"))];
    match ctx.call(Action::GetSecretValue, &p).await {
        Ok(v) => detail(ctx, Some((s(&v["VersionId"]).to_string(), s(&v["SecretData"]).to_string()))).await,
        Err(e) => page::refused(ctx, ctx.t("Secret value"), &e),
    }
}
