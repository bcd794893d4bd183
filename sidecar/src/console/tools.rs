//! Online tools, as the guides describe them: encrypt and decrypt (at most 6 KiB, with an
//! EncryptionContext), data keys, sign and verify (the message's SHA-256 is computed here and
//! sent as the digest, as `kmsctl sign` does).

use http::Response;
use kms_core::api::{decode_base64, encode_base64, Action};
use maud::{html, Markup};
use serde_json::Value;

use super::page::{self, csrf};
use super::{invalid, refusal, Ctx};
use crate::server::Body;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// What a tool produced: a title and labelled values.
pub type Produced = (String, Vec<(&'static str, String)>);

/// What the last tool produced, or the refusal.
pub type Outcome = Result<Produced, String>;

pub fn page(ctx: &Ctx<'_>, outcome: Option<Outcome>) -> Response<Body> {
    let r = ctx.r;
    let tool = |op: &str, title: &str, fields: Markup| {
        html! {
            section.tool id=(format!("tool-{op}")) {
                h2 { (title) }
                form method="post" action="/tools/run" {
                    (csrf(ctx))
                    input type="hidden" name="op" value=(op);
                    (fields)
                    button type="submit" { (title) }
                }
            }
        }
    };
    let key = |v: &str| html! { label { (ctx.t("Key ID")) input name="KeyId" value=(v) placeholder="key-… / alias/…" required; } };
    let context = html! { label { (ctx.t("Encryption context (JSON)")) input name="EncryptionContext" value=(r.f("EncryptionContext")) placeholder=r#"{"app":"orders"}"#; } };
    let body = html! {
        @if let Some(o) = &outcome {
            @match o {
                Ok((title, values)) => section.result id="result" role="status" {
                    h2 { (ctx.t("Result")) ": " (title) }
                    dl { @for (label, value) in values { dt { (label) } dd { pre data-field=(label) { (value) } } } }
                },
                Err(e) => p.flash.err role="alert" { strong { (ctx.t("Refused")) ": " } (e) },
            }
        }
        (tool("encrypt", ctx.t("Encrypt"), html! {
            (key(&r.f("KeyId")))
            label { (ctx.t("Plaintext")) textarea name="Plaintext" rows="3" maxlength="6144" required {} }
            (context)
            p.note { (ctx.t("At most 6 KiB of plaintext.")) }
        }))
        (tool("decrypt", ctx.t("Decrypt"), html! {
            label { (ctx.t("Ciphertext blob")) textarea name="CiphertextBlob" rows="3" required {} }
            (context)
        }))
        (tool("datakey", ctx.t("Generate data key"), html! {
            (key(&r.f("KeyId")))
            label { (ctx.t("Data key bytes")) input name="NumberOfBytes" type="number" min="1" max="1024" value="32"; }
            (context)
        }))
        (tool("sign", ctx.t("Sign"), html! {
            (key(&r.f("KeyId")))
            label { (ctx.t("Version")) input name="KeyVersionId" required; }
            label { (ctx.t("Algorithm")) select name="Algorithm" {
                option value="RSA_PSS_SHA_256" { "RSA_PSS_SHA_256" } option value="RSA_PKCS1_SHA_256" { "RSA_PKCS1_SHA_256" } option value="ECDSA_SHA_256" { "ECDSA_SHA_256" } option value="SM2DSA" { "SM2DSA" }
            } }
            label { (ctx.t("Message")) textarea name="Message" rows="3" required {} }
        }))
        (tool("verify", ctx.t("Verify"), html! {
            (key(&r.f("KeyId")))
            label { (ctx.t("Version")) input name="KeyVersionId" required; }
            label { (ctx.t("Algorithm")) select name="Algorithm" {
                option value="RSA_PSS_SHA_256" { "RSA_PSS_SHA_256" } option value="RSA_PKCS1_SHA_256" { "RSA_PKCS1_SHA_256" } option value="ECDSA_SHA_256" { "ECDSA_SHA_256" } option value="SM2DSA" { "SM2DSA" }
            } }
            label { (ctx.t("Message")) textarea name="Message" rows="3" required {} }
            label { (ctx.t("Signature (base64)")) textarea name="Value" rows="2" required {} }
        }))
    };
    page::layout(ctx, ctx.t("Online tools"), body)
}

fn context_param(ctx: &Ctx<'_>) -> Vec<(&'static str, String)> {
    match ctx.r.f("EncryptionContext") {
        c if c.is_empty() => Vec::new(),
        c => vec![("EncryptionContext", c)],
    }
}

pub async fn run(ctx: &Ctx<'_>) -> Response<Body> {
    let r = ctx.r;
    let outcome: Result<Produced, kms_core::KmsError> = async {
        match r.f("op").as_str() {
            "encrypt" => {
                let mut p = vec![("KeyId", r.f("KeyId")), ("Plaintext", encode_base64(r.raw("Plaintext").as_bytes()))];
                p.extend(context_param(ctx));
                let v = ctx.call(Action::Encrypt, &p).await?;
                Ok((
                    ctx.t("Encrypt").to_string(),
                    vec![
                        ("CiphertextBlob", s(&v["CiphertextBlob"]).to_string()),
                        ("KeyId", s(&v["KeyId"]).to_string()),
                        ("KeyVersionId", s(&v["KeyVersionId"]).to_string()),
                    ],
                ))
            }
            "decrypt" => {
                let blob: String = r.raw("CiphertextBlob").split_whitespace().collect();
                let mut p = vec![("CiphertextBlob", blob)];
                p.extend(context_param(ctx));
                let v = ctx.call(Action::Decrypt, &p).await?;
                let bytes = decode_base64("Plaintext", s(&v["Plaintext"]))?;
                let shown =
                    String::from_utf8(bytes).unwrap_or_else(|e| format!("base64: {}", encode_base64(e.as_bytes())));
                Ok((
                    ctx.t("Decrypt").to_string(),
                    vec![
                        ("Plaintext", shown),
                        ("KeyId", s(&v["KeyId"]).to_string()),
                        ("KeyVersionId", s(&v["KeyVersionId"]).to_string()),
                    ],
                ))
            }
            "datakey" => {
                let mut p = vec![("KeyId", r.f("KeyId")), ("NumberOfBytes", r.f("NumberOfBytes"))];
                p.extend(context_param(ctx));
                let v = ctx.call(Action::GenerateDataKey, &p).await?;
                Ok((
                    ctx.t("Generate data key").to_string(),
                    vec![
                        ("Plaintext", s(&v["Plaintext"]).to_string()),
                        ("CiphertextBlob", s(&v["CiphertextBlob"]).to_string()),
                        ("KeyVersionId", s(&v["KeyVersionId"]).to_string()),
                    ],
                ))
            }
            op @ ("sign" | "verify") => {
                let digest = encode_base64(&kms_core::crypto::asym::sha256(r.raw("Message").as_bytes()));
                let mut p = vec![
                    ("KeyId", r.f("KeyId")),
                    ("KeyVersionId", r.f("KeyVersionId")),
                    ("Algorithm", r.f("Algorithm")),
                    ("Digest", digest),
                ];
                if op == "sign" {
                    let v = ctx.call(Action::AsymmetricSign, &p).await?;
                    return Ok((ctx.t("Sign").to_string(), vec![("Value", s(&v["Value"]).to_string())]));
                }
                p.push(("Value", r.raw("Value").split_whitespace().collect()));
                let v = ctx.call(Action::AsymmetricVerify, &p).await?;
                let verdict = if v["Value"].as_bool() == Some(true) {
                    ctx.t("The signature verifies.")
                } else {
                    ctx.t("The signature does not verify.")
                };
                Ok((ctx.t("Verify").to_string(), vec![("Value", verdict.to_string())]))
            }
            other => Err(invalid("op", format_args!("{other:?} is not a tool"))),
        }
    }
    .await;
    page(ctx, Some(outcome.map_err(|e| refusal(&e))))
}
