//! Keys: the list with ListKeys' filters and paging, a key's details (metadata, versions with the
//! primary marked, aliases, tags, rotation, deletion protection), creating a key, every
//! lifecycle operation, public keys, and BYOK as the guides walk it.

use http::Response;
use kms_core::api::Action;
use kms_core::KmsError;
use maud::{html, Markup};
use serde_json::Value;

use super::page::{self, csrf};
use super::session::ImportParameters;
use super::{invalid, Ctx};
use crate::server::Body;

const PAGE_SIZE: u64 = 20;
const SPECS: &[&str] = &["Aliyun_AES_256", "Aliyun_SM4", "RSA_2048", "RSA_3072", "EC_P256", "EC_P256K", "EC_SM2"];
const STATES: &[&str] = &["Enabled", "Disabled", "PendingDeletion", "PendingImport"];

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The items of an API list answer (`"Keys": {"Key": [...]}`).
fn items<'a>(v: &'a Value, outer: &str, inner: &str) -> &'a [Value] {
    v[outer][inner].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Every alias, by key id (at most a few pages: aliases are limited per region).
async fn alias_map(ctx: &Ctx<'_>) -> std::collections::HashMap<String, Vec<String>> {
    let mut map: std::collections::HashMap<String, Vec<String>> = Default::default();
    for page in 1..=20u32 {
        let Ok(r) =
            ctx.call(Action::ListAliases, &[("PageSize", "100".into()), ("PageNumber", page.to_string())]).await
        else {
            break;
        };
        let got = items(&r, "Aliases", "Alias");
        for a in got {
            map.entry(s(&a["KeyId"]).to_string()).or_default().push(s(&a["AliasName"]).to_string());
        }
        if got.is_empty() || u64::from(page) * 100 >= r["TotalCount"].as_u64().unwrap_or(0) {
            break;
        }
    }
    map
}

fn select(name: &str, label: &str, options: &[&str], chosen: &str, any: &str) -> Markup {
    html! {
        label {
            (label)
            select name=(name) {
                option value="" { (any) }
                @for o in options { option value=(o) selected[*o == chosen] { (o) } }
            }
        }
    }
}

pub async fn list(ctx: &Ctx<'_>) -> Response<Body> {
    let r = ctx.r;
    let page: u64 = r.q("page").parse().unwrap_or(1).max(1);
    let filters: Vec<Value> = [
        ("KeyState", "state"),
        ("KeySpec", "spec"),
        ("KeyUsage", "usage"),
        ("ProtectionLevel", "protection"),
        ("CreatorType", "creator"),
    ]
    .iter()
    .filter(|(_, q)| !r.q(q).is_empty())
    .map(|(k, q)| serde_json::json!({"Key": k, "Values": [r.q(q)]}))
    .collect();
    let mut params = vec![("PageSize", PAGE_SIZE.to_string()), ("PageNumber", page.to_string())];
    if !filters.is_empty() {
        params.push(("Filters", Value::Array(filters).to_string()));
    }
    let listed = match ctx.call(Action::ListKeys, &params).await {
        Ok(v) => v,
        Err(e) => return page::refused(ctx, ctx.t("Key list"), &e),
    };
    let aliases = alias_map(ctx).await;
    let mut rows = Vec::new();
    for k in items(&listed, "Keys", "Key") {
        // A key deleted between the listing and its description is left out.
        if let Ok(d) = ctx.call(Action::DescribeKey, &[("KeyId", s(&k["KeyId"]).to_string())]).await {
            rows.push(d["KeyMetadata"].clone());
        }
    }
    let total = listed["TotalCount"].as_u64().unwrap_or(0);
    let any = ctx.t("All");
    let body = html! {
        p.actions { a.button href="/key/new" { (ctx.t("Create key")) } }
        form.filters method="get" action="/keys" {
            (select("state", ctx.t("Key state"), STATES, r.q("state"), any))
            (select("spec", ctx.t("Key spec"), SPECS, r.q("spec"), any))
            (select("usage", ctx.t("Key usage"), &["ENCRYPT/DECRYPT", "SIGN/VERIFY"], r.q("usage"), any))
            (select("protection", ctx.t("Protection level"), &["SOFTWARE", "HSM"], r.q("protection"), any))
            (select("creator", ctx.t("Creator"), &["User", "Service"], r.q("creator"), any))
            button type="submit" { (ctx.t("Filter")) }
        }
        table id="keys" {
            thead { tr {
                th { (ctx.t("Key ID")) } th { (ctx.t("Aliases")) } th { (ctx.t("Key spec")) } th { (ctx.t("Key usage")) }
                th { (ctx.t("Key state")) } th { (ctx.t("Protection level")) } th { (ctx.t("Created")) } th { (ctx.t("Next rotation")) }
                th { (ctx.t("Description")) }
            } }
            tbody {
                @for m in &rows {
                    tr {
                        td { a href=(format!("/key?id={}", enc(s(&m["KeyId"])))) { (s(&m["KeyId"])) } }
                        td { @for a in aliases.get(s(&m["KeyId"])).map(Vec::as_slice).unwrap_or(&[]) { span.alias { (a) } " " } }
                        td { (s(&m["KeySpec"])) } td { (s(&m["KeyUsage"])) }
                        td { span class=(format!("state {}", s(&m["KeyState"]))) { (s(&m["KeyState"])) } }
                        td { (s(&m["ProtectionLevel"])) } td { (s(&m["CreationDate"])) } td { (s(&m["NextRotationDate"])) }
                        td.desc { (s(&m["Description"])) }
                    }
                }
            }
        }
        (page::pager(ctx, "/keys", page, PAGE_SIZE, total))
    };
    page::layout(ctx, ctx.t("Key list"), body)
}

pub fn enc(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

pub async fn detail(ctx: &Ctx<'_>) -> Response<Body> {
    let id = ctx.r.q("id").to_string();
    let key = [("KeyId", id.clone())];
    let described = match ctx.call(Action::DescribeKey, &key).await {
        Ok(v) => v,
        Err(e) => return page::refused(ctx, ctx.t("Details"), &e),
    };
    let m = &described["KeyMetadata"];
    let key_id = s(&m["KeyId"]).to_string();
    let key = [("KeyId", key_id.clone())];
    let mut versions = Vec::new();
    for page in 1..=100u32 {
        let p = [("KeyId", key_id.clone()), ("PageSize", "100".into()), ("PageNumber", page.to_string())];
        let Ok(r) = ctx.call(Action::ListKeyVersions, &p).await else { break };
        let got = items(&r, "KeyVersions", "KeyVersion").to_vec();
        let done = got.is_empty() || u64::from(page) * 100 >= r["TotalCount"].as_u64().unwrap_or(0);
        versions.extend(got);
        if done {
            break;
        }
    }
    let aliases =
        match ctx.call(Action::ListAliasesByKeyId, &[("KeyId", key_id.clone()), ("PageSize", "100".into())]).await {
            Ok(r) => items(&r, "Aliases", "Alias").iter().map(|a| s(&a["AliasName"]).to_string()).collect(),
            Err(_) => Vec::new(),
        };
    let tags = match ctx.call(Action::ListResourceTags, &key).await {
        Ok(r) => items(&r, "Tags", "Tag")
            .iter()
            .map(|t| (s(&t["TagKey"]).to_string(), s(&t["TagValue"]).to_string()))
            .collect(),
        Err(_) => Vec::<(String, String)>::new(),
    };
    let primary = s(&m["PrimaryKeyVersion"]);
    let state = s(&m["KeyState"]);
    let asymmetric = !s(&m["KeySpec"]).starts_with("Aliyun_");
    let op =
        |name: &str, label: &str, extra: Markup| page::op_form(ctx, "/key/op", ("KeyId", &key_id), name, label, extra);
    let fields: [(&str, &str); 16] = [
        ("Key ID", "KeyId"),
        ("Key spec", "KeySpec"),
        ("Key usage", "KeyUsage"),
        ("Key state", "KeyState"),
        ("Protection level", "ProtectionLevel"),
        ("Origin", "Origin"),
        ("Creator", "Creator"),
        ("Created", "CreationDate"),
        ("Description", "Description"),
        ("Primary version", "PrimaryKeyVersion"),
        ("Automatic rotation", "AutomaticRotation"),
        ("Rotation interval", "RotationInterval"),
        ("Next rotation", "NextRotationDate"),
        ("Deletion date", "DeleteDate"),
        ("Deletion protection", "DeletionProtection"),
        ("ARN", "Arn"),
    ];
    let body = html! {
        table.meta id="metadata" {
            @for (label, field) in fields {
                tr { th { (if label == "ARN" { "ARN" } else { ctx.t(label) }) } td data-field=(field) { (s(&m[field])) } }
            }
        }
        section.ops {
            @if state == "Enabled" { (op("disable", ctx.t("Disable"), html!{})) }
            @if state == "Disabled" { (op("enable", ctx.t("Enable"), html!{})) }
            @if state == "PendingDeletion" {
                (op("cancel-deletion", ctx.t("Cancel deletion"), html!{}))
            } @else {
                (op("schedule-deletion", ctx.t("Schedule deletion"), html! {
                    label { (ctx.t("Pending window (days)")) input name="PendingWindowInDays" type="number" min="7" max="366" value="7" required; }
                }))
            }
            @if state == "Enabled" { (op("create-version", ctx.t("Create version"), html!{})) }
            @if s(&m["Origin"]) == "EXTERNAL" {
                a.button href=(format!("/key/import?id={}", enc(&key_id))) { (ctx.t("Import key material")) }
                (op("delete-material", ctx.t("Delete key material"), html!{}))
            }
        }
        section {
            h2 { (ctx.t("Description")) }
            (op("description", ctx.t("Save"), html! { input name="Description" value=(s(&m["Description"])) maxlength="8192"; }))
        }
        @if !asymmetric {
            section {
                h2 { (ctx.t("Automatic rotation")) }
                (op("rotation", ctx.t("Set rotation"), html! {
                    label { (ctx.t("Rotation interval")) input name="RotationInterval" placeholder="365d" value=(s(&m["RotationInterval"])); }
                    label { input type="checkbox" name="Enable" value="true" checked[s(&m["AutomaticRotation"]) == "Enabled"]; (ctx.t("Automatic rotation")) }
                }))
            }
        }
        section {
            h2 { (ctx.t("Deletion protection")) }
            (op("protection", ctx.t("Save"), html! {
                label { input type="checkbox" name="Enable" value="true" checked[s(&m["DeletionProtection"]) == "Enabled"]; (ctx.t("Deletion protection")) }
            }))
        }
        section {
            h2 { (ctx.t("Versions")) }
            table id="versions" {
                thead { tr { th { (ctx.t("Version")) } th { (ctx.t("Created")) } th {} } }
                tbody {
                    @for v in &versions {
                        tr {
                            td { (s(&v["KeyVersionId"])) @if s(&v["KeyVersionId"]) == primary { " " span.primary { (ctx.t("Primary version")) } } }
                            td { (s(&v["CreationDate"])) }
                            td { @if asymmetric {
                                a href=(format!("/key/public-key?id={}&version={}", enc(&key_id), enc(s(&v["KeyVersionId"])))) { (ctx.t("Download public key (PEM)")) }
                            } }
                        }
                    }
                }
            }
        }
        section {
            h2 { (ctx.t("Aliases")) }
            ul id="aliases" { @for a in &aliases { li { (a) " " (op("alias-remove", ctx.t("Remove"), html! { input type="hidden" name="AliasName" value=(a); })) } } }
            (op("alias-add", ctx.t("Add"), html! { label { (ctx.t("Alias")) input name="AliasName" placeholder="alias/app" required; } }))
        }
        section {
            h2 { (ctx.t("Tags")) }
            table id="tags" { tbody { @for (k, v) in &tags { tr { td { (k) } td { (v) } td { (op("tag-remove", ctx.t("Remove"), html! { input type="hidden" name="TagKey" value=(k); })) } } } } }
            (op("tag-add", ctx.t("Add"), html! {
                label { (ctx.t("Tag key")) input name="TagKey" required; }
                label { (ctx.t("Tag value")) input name="TagValue"; }
            }))
        }
    };
    page::layout(ctx, &format!("{} {key_id}", ctx.t("Details")), body)
}

pub fn new_form(ctx: &Ctx<'_>) -> Response<Body> {
    let body = html! {
        form.create method="post" action="/key/create" {
            (csrf(ctx))
            label { (ctx.t("Key spec")) select name="KeySpec" { @for sp in SPECS { option value=(sp) { (sp) } } } }
            label { (ctx.t("Key usage")) select name="KeyUsage" { option value="ENCRYPT/DECRYPT" { "ENCRYPT/DECRYPT" } option value="SIGN/VERIFY" { "SIGN/VERIFY" } } }
            label { (ctx.t("Origin")) select name="Origin" { option value="Aliyun_KMS" { "Aliyun_KMS" } option value="EXTERNAL" { "EXTERNAL (BYOK)" } } }
            label { (ctx.t("Protection level")) select name="ProtectionLevel" { option value="SOFTWARE" { "SOFTWARE" } option value="HSM" { "HSM" } } }
            label { (ctx.t("Alias")) input name="AliasName" placeholder="alias/app"; }
            label { (ctx.t("Description")) input name="Description" maxlength="8192"; }
            label { (ctx.t("Rotation interval"))
                select name="Rotation" {
                    option value="" { (ctx.t("Off")) } option value="30d" { "30d" } option value="90d" { "90d" }
                    option value="180d" { "180d" } option value="365d" { "365d" }
                }
            }
            button type="submit" { (ctx.t("Create key")) }
        }
    };
    page::layout(ctx, ctx.t("Create key"), body)
}

pub async fn create(ctx: &Ctx<'_>) -> Response<Body> {
    let r = ctx.r;
    let mut p = vec![("KeySpec", r.f("KeySpec")), ("KeyUsage", r.f("KeyUsage")), ("Origin", r.f("Origin"))];
    p.push(("ProtectionLevel", r.f("ProtectionLevel")));
    p.push(("Description", r.raw("Description")));
    if !r.f("Rotation").is_empty() {
        p.push(("EnableAutomaticRotation", "true".into()));
        p.push(("RotationInterval", r.f("Rotation")));
    }
    let created = match ctx.call(Action::CreateKey, &p).await {
        Ok(v) => v,
        Err(e) => return ctx.done("/key/new", Err(e)),
    };
    let id = s(&created["KeyMetadata"]["KeyId"]).to_string();
    let to = format!("/key?id={}", enc(&id));
    let alias = r.f("AliasName");
    if !alias.is_empty() {
        if let Err(e) = ctx.call(Action::CreateAlias, &[("AliasName", alias), ("KeyId", id.clone())]).await {
            return ctx.done(&to, Err(e));
        }
    }
    ctx.done(&to, Ok(format!("{} {id}", ctx.t("Done."))))
}

pub async fn operate(ctx: &Ctx<'_>) -> Response<Body> {
    let r = ctx.r;
    let id = r.f("KeyId");
    let key = ("KeyId", id.clone());
    let checked = |name: &str| if r.f(name) == "true" { "true" } else { "false" }.to_string();
    let outcome = match r.f("op").as_str() {
        "enable" => ctx.call(Action::EnableKey, &[key]).await,
        "disable" => ctx.call(Action::DisableKey, &[key]).await,
        "schedule-deletion" => {
            ctx.call(Action::ScheduleKeyDeletion, &[key, ("PendingWindowInDays", r.f("PendingWindowInDays"))]).await
        }
        "cancel-deletion" => ctx.call(Action::CancelKeyDeletion, &[key]).await,
        "create-version" => ctx.call(Action::CreateKeyVersion, &[key]).await,
        "delete-material" => ctx.call(Action::DeleteKeyMaterial, &[key]).await,
        "description" => ctx.call(Action::UpdateKeyDescription, &[key, ("Description", r.raw("Description"))]).await,
        "rotation" => {
            let mut p = vec![key, ("EnableAutomaticRotation", checked("Enable"))];
            if !r.f("RotationInterval").is_empty() {
                p.push(("RotationInterval", r.f("RotationInterval")));
            }
            ctx.call(Action::UpdateRotationPolicy, &p).await
        }
        "protection" => {
            ctx.call(Action::SetDeletionProtection, &[key, ("EnableDeletionProtection", checked("Enable"))]).await
        }
        "alias-add" => ctx.call(Action::CreateAlias, &[("AliasName", r.f("AliasName")), key]).await,
        "alias-remove" => ctx.call(Action::DeleteAlias, &[("AliasName", r.f("AliasName"))]).await,
        "tag-add" => {
            let tags = serde_json::json!([{"TagKey": r.f("TagKey"), "TagValue": r.f("TagValue")}]);
            ctx.call(Action::TagResource, &[key, ("Tags", tags.to_string())]).await
        }
        "tag-remove" => {
            let keys = serde_json::json!([r.f("TagKey")]);
            ctx.call(Action::UntagResource, &[key, ("TagKeys", keys.to_string())]).await
        }
        other => Err(invalid("op", format_args!("{other:?} is not an operation on a key"))),
    };
    let to = format!("/key?id={}", enc(&id));
    ctx.done(&to, outcome.map(|_| ctx.t("Done.").to_string()))
}

pub async fn public_key(ctx: &Ctx<'_>) -> Response<Body> {
    let (id, version) = (ctx.r.q("id").to_string(), ctx.r.q("version").to_string());
    match ctx.call(Action::GetPublicKey, &[("KeyId", id.clone()), ("KeyVersionId", version.clone())]).await {
        Ok(v) => page::download(
            &format!("{id}-{version}.pem"),
            "application/x-pem-file",
            s(&v["PublicKey"]).as_bytes().to_vec(),
        ),
        Err(e) => page::refused(ctx, ctx.t("Download public key (PEM)"), &e),
    }
}

pub fn import_page(ctx: &Ctx<'_>) -> Response<Body> {
    let id = ctx.r.q("id").to_string();
    let got = ctx.s.import.as_ref().filter(|p| p.key_id == id);
    let body = html! {
        p { a href=(format!("/key?id={}", enc(&id))) { (id) } }
        form.create method="post" action="/key/import-params" {
            (csrf(ctx))
            input type="hidden" name="KeyId" value=(id);
            label { (ctx.t("Wrapping key spec")) select name="WrappingKeySpec" { option value="RSA_2048" { "RSA_2048" } option value="EC_SM2" { "EC_SM2" } } }
            label { (ctx.t("Wrapping algorithm")) select name="WrappingAlgorithm" {
                option value="RSAES_OAEP_SHA_256" { "RSAES_OAEP_SHA_256" } option value="RSAES_OAEP_SHA_1" { "RSAES_OAEP_SHA_1" } option value="SM2PKE" { "SM2PKE" }
            } }
            button type="submit" { (ctx.t("Get wrapping public key and import token")) }
        }
        @if let Some(p) = got {
            section id="import-parameters" {
                h2 { (ctx.t("Wrapping public key (base64 DER)")) }
                textarea id="wrapping-public-key" readonly rows="8" { (p.public_key) }
                p { a href=(format!("/key/import-download?id={}&what=public-key", enc(&id))) { (ctx.t("Download")) } }
                h2 { (ctx.t("Import token")) }
                textarea id="import-token" readonly rows="4" { (p.import_token) }
                p { a href=(format!("/key/import-download?id={}&what=token", enc(&id))) { (ctx.t("Download")) } " · " (ctx.t("Valid until")) " " (p.valid_to) }
            }
            form.create method="post" action="/key/import" {
                (csrf(ctx))
                input type="hidden" name="KeyId" value=(id);
                label { (ctx.t("Wrapped key material (base64)")) textarea name="EncryptedKeyMaterial" rows="6" required {} }
                label { (ctx.t("Material expires (Unix time, 0 = never)")) input name="KeyMaterialExpireUnix" type="number" min="0" value="0"; }
                button type="submit" { (ctx.t("Import key material")) }
            }
        }
    };
    page::layout(ctx, ctx.t("Import key material"), body)
}

pub async fn import_parameters(ctx: &Ctx<'_>) -> Response<Body> {
    let r = ctx.r;
    let id = r.f("KeyId");
    let p = [
        ("KeyId", id.clone()),
        ("WrappingKeySpec", r.f("WrappingKeySpec")),
        ("WrappingAlgorithm", r.f("WrappingAlgorithm")),
    ];
    let to = format!("/key/import?id={}", enc(&id));
    match ctx.call(Action::GetParametersForImport, &p).await {
        Ok(v) => {
            let got = ImportParameters {
                key_id: s(&v["KeyId"]).to_string(),
                public_key: s(&v["PublicKey"]).to_string(),
                import_token: s(&v["ImportToken"]).to_string(),
                valid_to: s(&v["TokenExpireTime"]).to_string(),
            };
            let id = got.key_id.clone();
            if let Some(k) = &r.cookie {
                ctx.c.sessions.update(k, |s| s.import = Some(got));
            }
            ctx.done(&format!("/key/import?id={}", enc(&id)), Ok(ctx.t("Done.").to_string()))
        }
        Err(e) => ctx.done(&to, Err(e)),
    }
}

pub fn import_download(ctx: &Ctx<'_>) -> Response<Body> {
    let id = ctx.r.q("id");
    let Some(p) = ctx.s.import.as_ref().filter(|p| p.key_id == id) else {
        return page::refused(
            ctx,
            ctx.t("Import key material"),
            &invalid("KeyId", "no import parameters for this key in this session"),
        );
    };
    match ctx.r.q("what") {
        "token" => page::download("ImportToken.txt", "text/plain", p.import_token.clone().into_bytes()),
        _ => page::download("PublicKey_base64.txt", "text/plain", p.public_key.clone().into_bytes()),
    }
}

pub async fn import(ctx: &Ctx<'_>) -> Response<Body> {
    let r = ctx.r;
    let id = r.f("KeyId");
    let token = ctx.s.import.as_ref().filter(|p| p.key_id == id).map(|p| p.import_token.clone());
    let Some(token) = token else {
        let e: KmsError = invalid("ImportToken", "get the wrapping public key and import token first");
        return ctx.done(&format!("/key/import?id={}", enc(&id)), Err(e));
    };
    // Base64 pasted from a terminal wraps at 64 or 76 columns: the line breaks are not data.
    let material: String = r.raw("EncryptedKeyMaterial").split_whitespace().collect();
    let expire = match r.f("KeyMaterialExpireUnix") {
        e if e.is_empty() => "0".to_string(),
        e => e,
    };
    let p = [
        ("KeyId", id.clone()),
        ("EncryptedKeyMaterial", material),
        ("ImportToken", token),
        ("KeyMaterialExpireUnix", expire),
    ];
    match ctx.call(Action::ImportKeyMaterial, &p).await {
        Ok(_) => {
            if let Some(k) = &r.cookie {
                ctx.c.sessions.update(k, |s| s.import = None);
            }
            ctx.done(&format!("/key?id={}", enc(&id)), Ok(ctx.t("Done.").to_string()))
        }
        Err(e) => ctx.done(&format!("/key/import?id={}", enc(&id)), Err(e)),
    }
}
