//! What the sidecar's own end-to-end tests share beyond the workspace's process harness
//! (`kms_e2e::sidecar`, re-exported here): secrets, hand-signed requests, raw form posts.
// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use kms_e2e::sidecar::{start_fails, start_nodes, start_nodes_with, Nodes, Sidecar, OWNER_ID, OWNER_SECRET};

#[allow(unused_imports)]
pub use kms_e2e::workspace;

/// A secret created through `c`, version `v1`, under `key` (or the secrets service key).
pub fn create_secret(c: &kms_client::client::Client, name: &str, value: &str, key: Option<&str>) {
    let _: serde_json::Value = c
        .call(
            "CreateSecret",
            &kms_core::api::CreateSecretRequest {
                secret_name: name.into(),
                secret_data: kms_core::api::SecretString::new(value.into()),
                version_id: "v1".into(),
                encryption_key_id: key.map(Into::into),
                ..Default::default()
            },
        )
        .unwrap();
}

/// A V1 request signed once, as an attacker would capture it.
pub fn signed_v1(action: &str, params: &[(&str, &str)], ak: &str, secret: &str) -> String {
    let mut p: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let ts = kms_core::clock::format_iso(time::OffsetDateTime::now_utc().unix_timestamp());
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    for (k, v) in [
        ("Action", action),
        ("Version", "2016-01-20"),
        ("Format", "JSON"),
        ("AccessKeyId", ak),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", &nonce),
        ("Timestamp", &ts),
    ] {
        p.push((k.into(), v.into()));
    }
    let sts = kms_sidecar::auth::sign::v1_string_to_sign("POST", p.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    p.push((
        "Signature".into(),
        kms_sidecar::auth::sign::v1_signature(kms_sidecar::auth::sign::V1Method::HmacSha1, secret, &sts),
    ));
    form_urlencoded::Serializer::new(String::new()).extend_pairs(p).finish()
}

/// POSTs a form body to `http://{addr}/`; the status and the JSON reply.
pub fn post_form(addr: &str, body: &str) -> (u16, serde_json::Value) {
    let url = format!("http://{addr}/");
    let r = ureq::post(&url).set("content-type", "application/x-www-form-urlencoded").send_string(body);
    let (status, text) = match r {
        Ok(resp) => (resp.status(), resp.into_string().unwrap()),
        Err(ureq::Error::Status(s, resp)) => (s, resp.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    };
    (status, serde_json::from_str(&text).unwrap())
}

/// A sidecar configuration with the console on a free loopback port and a principal whose
/// policy only lets it look (list and describe).
pub const CONSOLE_CONFIG: &str = r#"
[console]
listen = "127.0.0.1:0"

[[access_keys]]
id = "viewerKey"
secret = "viewerSecret"
principal = "user:viewer"

[[policies]]
principal = "user:viewer"
name = "read-only"
document = '''{"Version":"1","Statement":[{"Effect":"Allow","Action":["kms:List*","kms:Describe*"],"Resource":"*"}]}'''
"#;
