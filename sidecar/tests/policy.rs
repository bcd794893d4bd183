//! RAM-style policies, evaluated through the real HTTP path with signed requests from several
//! principals, and the audit trail they leave.

use std::time::Duration;

use kms_client::client::{Client, ClientConfig, ClientError, Signing};
use kms_core::api::*;
use kms_sidecar::app::{self, Running};
use kms_sidecar::config::{AccessKeyConfig, Config, PolicyConfig};
use serde_json::Value;
use zeroize::Zeroizing;

fn key(id: &str, principal: &str) -> AccessKeyConfig {
    AccessKeyConfig { id: id.into(), secret: format!("{id}-secret"), principal: principal.into(), enabled: true }
}

fn policy(principal: &str, name: &str, doc: &str) -> PolicyConfig {
    PolicyConfig { principal: principal.into(), name: name.into(), document: Some(doc.into()), file: None }
}

struct World {
    rt: tokio::runtime::Runtime,
    running: Option<Running>,
    dir: tempfile::TempDir,
    k1: String,
    k2: String,
    ct1: Vec<u8>,
    ct2: Vec<u8>,
}

const ALICE: &str = r#"{"Version":"1","Statement":[
  {"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt","kms:GenerateDataKey"],"Resource":"*",
   "Condition":{"StringEqualsIgnoreCase":{"kms:tag/Project":"apollo"}}},
  {"Effect":"Allow","Action":["kms:List*","kms:Describe*"],"Resource":"*"}]}"#;

fn bob(k1: &str) -> String {
    format!(
        r#"{{"Version":"1","Statement":[
  {{"Effect":"Allow","Action":"kms:*","Resource":"acs:kms:cn-hangzhou:1234567890123456:key/{k1}"}},
  {{"Effect":"Allow","Action":["kms:CreateAlias","kms:UpdateAlias","kms:DeleteAlias"],"Resource":"acs:kms:*:*:alias/bob-*"}},
  {{"Effect":"Deny","Action":"kms:ScheduleKeyDeletion","Resource":"*"}},
  {{"Effect":"Allow","Action":"kms:GetSecretValue","Resource":["acs:kms:*:*:secret/s1","acs:kms:*:*:secret/s3"]}},
  {{"Effect":"Allow","Action":"kms:ReEncryptTo","Resource":"*"}}]}}"#
    )
}

const CAROL: &str = r#"{"Version":"1","Statement":[
  {"Effect":"Allow","Action":"kms:Encrypt","Resource":"*","Condition":{"IpAddress":{"acs:SourceIp":["127.0.0.0/8","::1"]}}},
  {"Effect":"Allow","Action":"kms:GenerateDataKey","Resource":"*","Condition":{"NotIpAddress":{"acs:SourceIp":"127.0.0.0/8"}}},
  {"Effect":"Allow","Action":"kms:Decrypt","Resource":"*","Condition":{"DateLessThan":{"acs:CurrentTime":"2000-01-01T00:00:00Z"}}},
  {"Effect":"Allow","Action":"kms:DescribeKey","Resource":"*","Condition":{"DateGreaterThan":{"acs:CurrentTime":"2000-01-01T00:00:00Z"}}},
  {"Effect":"Allow","Action":"kms:ListKeys","Resource":"*","Condition":{"Bool":{"acs:SecureTransport":"true"}}},
  {"Effect":"Allow","Action":"kms:ListAliases","Resource":"*","Condition":{"StringEquals":{"kms:tag/Missing":"x"}}},
  {"Effect":"Allow","Action":"kms:GetRandomPassword","Resource":"*","Condition":{"StringNotEquals":{"kms:tag/Missing":"x"}}},
  {"Effect":"Allow","Action":"kms:DescribeSecret","Resource":"*","Condition":{"StringLike":{"kms:tag/Team":"core-*"}}}]}"#;

const ERIN: &str = r#"{"Version":"1","Statement":[
  {"Effect":"Allow","Action":"kms:*","Resource":"*"},
  {"Effect":"Deny","Action":"kms:Decrypt","Resource":"acs:kms:*:*:key/*","Condition":{"StringEquals":{"kms:tag/Project":"Gemini"}}}]}"#;

/// The user guide's examples: full access, read-only, and cryptography on tagged keys only.
const GUIDE_ADMIN: &str = r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["kms:*"],"Resource":["*"]}]}"#;
const GUIDE_READONLY: &str =
    r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["kms:List*","kms:Describe*"],"Resource":["*"]}]}"#;
const GUIDE_TAGGED: &str = r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt","kms:GenerateDataKey"],"Resource":["*"],"Condition":{"StringEqualsIgnoreCase":{"kms:tag/Project":"Apollo"}}}]}"#;

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let mut cfg = Config {
            data_dir: Some(dir.path().to_path_buf()),
            listen: "127.0.0.1:0".into(),
            tls_listen: Some("127.0.0.1:0".into()),
            access_keys: [
                "owner",
                "user:alice",
                "user:bob",
                "user:carol",
                "user:dave",
                "user:erin",
                "user:gadmin",
                "user:gread",
                "user:gtag",
                "service:oss",
            ]
            .iter()
            .map(|p| key(&p.replace(':', "-"), p))
            .collect(),
            ..Default::default()
        };
        let running = rt.block_on(app::start(cfg.clone())).unwrap();
        let mut w =
            World { rt, running: Some(running), dir, k1: String::new(), k2: String::new(), ct1: vec![], ct2: vec![] };
        // Resources, made by the owner.
        let o = w.client("owner", false);
        let mk = |tags: &str| {
            o.create_key(&CreateKeyRequest { tags: Some(tags.into()), ..Default::default() })
                .unwrap()
                .key_metadata
                .key_id
        };
        w.k1 = mk(r#"[{"TagKey":"Project","TagValue":"Apollo"}]"#);
        w.k2 = mk(r#"[{"TagKey":"Project","TagValue":"Gemini"}]"#);
        for (alias, k) in [("alias/app", &w.k1), ("alias/other", &w.k2), ("alias/bob-1", &w.k1)] {
            let _: Value =
                o.call("CreateAlias", &AliasRequest { alias_name: alias.into(), key_id: k.clone() }).unwrap();
        }
        let enc = |k: &str| {
            o.encrypt(&EncryptRequest {
                key_id: k.into(),
                plaintext: SecretBytes::from(&b"top secret payload"[..]),
                ..Default::default()
            })
            .unwrap()
            .ciphertext_blob
        };
        w.ct1 = enc(&w.k1);
        w.ct2 = enc(&w.k2);
        for (name, k, tags) in [
            ("s1", Some(w.k1.clone()), None),
            ("s2", None, Some(r#"[{"TagKey":"Team","TagValue":"core-infra"}]"#)),
            ("s3", Some(w.k2.clone()), None),
        ] {
            let _: Value = o
                .call(
                    "CreateSecret",
                    &CreateSecretRequest {
                        secret_name: name.into(),
                        secret_data: SecretString::new(format!("password-of-{name}")),
                        version_id: "v1".into(),
                        encryption_key_id: k,
                        tags: tags.map(Into::into),
                        ..Default::default()
                    },
                )
                .unwrap();
        }
        // Policies, attached after the resources exist (as a reload would).
        cfg.policies = vec![
            policy("user:alice", "alice", ALICE),
            policy("user:bob", "bob", &bob(&w.k1)),
            policy("user:carol", "carol", CAROL),
            policy("user:erin", "erin", ERIN),
            policy("user:gadmin", "guide-admin", GUIDE_ADMIN),
            policy("user:gread", "guide-readonly", GUIDE_READONLY),
            policy("user:gtag", "guide-tagged", GUIDE_TAGGED),
        ];
        w.running().engine.set_policies(kms_sidecar::config::load_policies(&cfg, None).unwrap());
        w
    }

    fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    fn client(&self, principal: &str, https: bool) -> Client {
        let r = self.running();
        let id = principal.replace(':', "-");
        Client::new(ClientConfig {
            endpoint: if https {
                format!("https://localhost:{}", r.https.unwrap().port())
            } else {
                format!("http://{}", r.http.unwrap())
            },
            access_key_id: id.clone(),
            access_key_secret: Zeroizing::new(format!("{id}-secret")),
            ca_file: r.profile.ca_file.clone(),
            signing: Signing::V3,
            timeout: Duration::from_secs(10),
        })
        .unwrap()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.shutdown());
        }
    }
}

/// Calls an action with raw parameters; `Ok(())` or the error code.
fn call(c: &Client, action: &str, params: &[(&str, &str)]) -> Result<(), String> {
    c.call_params(action, params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).map(drop).map_err(|e| {
        match e {
            ClientError::Api { code, .. } => code,
            other => other.to_string(),
        }
    })
}

#[test]
fn policy_table() {
    let w = World::new();
    let (k1, k2) = (w.k1.clone(), w.k2.clone());
    let b64 = encode_base64;
    let (ct1, ct2) = (b64(&w.ct1), b64(&w.ct2));
    let pt = b64(b"hello");
    const OK: Option<&str> = None;
    const NO: Option<&str> = Some("Forbidden.NoPermission");
    // (principal, https, action, params, expected error code or OK)
    type Case<'a> = (&'a str, bool, &'a str, Vec<(&'a str, &'a str)>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        // The owner may do everything; a principal with no policy nothing but DescribeRegions.
        ("owner", false, "ScheduleKeyDeletion", vec![("KeyId", "alias/bob-1"), ("PendingWindowInDays", "7")], OK),
        ("owner", false, "CancelKeyDeletion", vec![("KeyId", &k1)], OK),
        ("user:dave", false, "DescribeRegions", vec![], OK),
        ("user:dave", false, "ListKeys", vec![], NO),
        ("user:dave", false, "Encrypt", vec![("KeyId", &k1), ("Plaintext", &pt)], NO),
        ("user:dave", false, "GetSecretValue", vec![("SecretName", "s1")], NO),
        // alice: cryptography only on keys tagged Project=apollo (case-insensitive), reads anywhere.
        ("user:alice", false, "Encrypt", vec![("KeyId", &k1), ("Plaintext", &pt)], OK),
        ("user:alice", false, "Encrypt", vec![("KeyId", &k2), ("Plaintext", &pt)], NO),
        ("user:alice", false, "Encrypt", vec![("KeyId", "alias/app"), ("Plaintext", &pt)], OK),
        ("user:alice", false, "Encrypt", vec![("KeyId", "alias/other"), ("Plaintext", &pt)], NO),
        ("user:alice", false, "Decrypt", vec![("CiphertextBlob", &ct1)], OK),
        ("user:alice", false, "Decrypt", vec![("CiphertextBlob", &ct2)], NO),
        ("user:alice", false, "GenerateDataKey", vec![("KeyId", &k1)], OK),
        ("user:alice", false, "GenerateDataKeyWithoutPlaintext", vec![("KeyId", &k1)], NO),
        ("user:alice", false, "ListKeys", vec![], OK),
        ("user:alice", false, "ListAliases", vec![], OK),
        ("user:alice", false, "DescribeKey", vec![("KeyId", &k2)], OK),
        ("user:alice", false, "DescribeSecret", vec![("SecretName", "s1")], OK),
        ("user:alice", false, "DisableKey", vec![("KeyId", &k1)], NO),
        ("user:alice", false, "CreateKey", vec![], NO),
        ("user:alice", false, "GetSecretValue", vec![("SecretName", "s1")], NO),
        // bob: everything on k1 (by id, alias or ARN), aliases named bob-*, no deletion ever.
        ("user:bob", false, "DescribeKey", vec![("KeyId", &k1)], OK),
        ("user:bob", false, "DescribeKey", vec![("KeyId", "alias/app")], OK),
        ("user:bob", false, "DescribeKey", vec![("KeyId", &k2)], NO),
        ("user:bob", false, "UpdateKeyDescription", vec![("KeyId", &k1), ("Description", "bob was here")], OK),
        ("user:bob", false, "ScheduleKeyDeletion", vec![("KeyId", &k1), ("PendingWindowInDays", "7")], NO),
        ("user:bob", false, "CreateAlias", vec![("AliasName", "alias/bob-2"), ("KeyId", &k1)], OK),
        ("user:bob", false, "CreateAlias", vec![("AliasName", "alias/mallory"), ("KeyId", &k1)], NO),
        ("user:bob", false, "CreateAlias", vec![("AliasName", "alias/bob-3"), ("KeyId", &k2)], NO),
        ("user:bob", false, "UpdateAlias", vec![("AliasName", "alias/bob-2"), ("KeyId", &k2)], NO),
        ("user:bob", false, "UpdateAlias", vec![("AliasName", "alias/app"), ("KeyId", &k1)], NO),
        ("user:bob", false, "ListAliasesByKeyId", vec![("KeyId", &k1)], OK),
        ("user:bob", false, "ListAliases", vec![], NO),
        ("user:bob", false, "DeleteAlias", vec![("AliasName", "alias/bob-2")], OK),
        ("user:bob", false, "GetSecretValue", vec![("SecretName", "s1")], OK),
        ("user:bob", false, "GetSecretValue", vec![("SecretName", "s3")], NO),
        ("user:bob", false, "GetSecretValue", vec![("SecretName", "s2")], NO),
        ("user:bob", false, "ReEncrypt", vec![("CiphertextBlob", &ct1), ("DestinationKeyId", &k1)], OK),
        ("user:bob", false, "ReEncrypt", vec![("CiphertextBlob", &ct2), ("DestinationKeyId", &k1)], NO),
        // carol: conditions on source address, time, transport and tags.
        ("user:carol", false, "Encrypt", vec![("KeyId", &k2), ("Plaintext", &pt)], OK),
        ("user:carol", false, "GenerateDataKey", vec![("KeyId", &k2)], NO),
        ("user:carol", false, "Decrypt", vec![("CiphertextBlob", &ct1)], NO),
        ("user:carol", false, "DescribeKey", vec![("KeyId", &k1)], OK),
        ("user:carol", false, "ListKeys", vec![], NO),
        ("user:carol", true, "ListKeys", vec![], OK),
        ("user:carol", false, "ListAliases", vec![], NO),
        ("user:carol", false, "GetRandomPassword", vec![], OK),
        ("user:carol", false, "DescribeSecret", vec![("SecretName", "s2")], OK),
        ("user:carol", false, "DescribeSecret", vec![("SecretName", "s1")], NO),
        // erin: Allow kms:* but an explicit Deny wins for Decrypt under Gemini keys.
        ("user:erin", false, "Decrypt", vec![("CiphertextBlob", &ct1)], OK),
        ("user:erin", false, "Decrypt", vec![("CiphertextBlob", &ct2)], NO),
        ("user:erin", false, "Encrypt", vec![("KeyId", &k2), ("Plaintext", &pt)], OK),
        // The guide's three examples.
        ("user:gadmin", false, "CreateKey", vec![], OK),
        ("user:gadmin", false, "DisableKey", vec![("KeyId", "alias/bob-1")], OK),
        ("user:gadmin", false, "EnableKey", vec![("KeyId", &k1)], OK),
        ("user:gread", false, "ListKeys", vec![], OK),
        ("user:gread", false, "DescribeKey", vec![("KeyId", &k1)], OK),
        ("user:gread", false, "CreateKey", vec![], NO),
        ("user:gread", false, "Encrypt", vec![("KeyId", &k1), ("Plaintext", &pt)], NO),
        ("user:gtag", false, "Encrypt", vec![("KeyId", &k1), ("Plaintext", &pt)], OK),
        ("user:gtag", false, "Encrypt", vec![("KeyId", &k2), ("Plaintext", &pt)], NO),
        ("user:gtag", false, "DescribeKey", vec![("KeyId", &k1)], NO),
        // A service uses its own service key without a policy, and nothing else.
        ("service:oss", false, "GenerateDataKey", vec![("KeyId", "alias/acs/oss")], OK),
        ("service:oss", false, "DescribeKey", vec![("KeyId", "alias/acs/oss")], OK),
        ("service:oss", false, "Encrypt", vec![("KeyId", &k1), ("Plaintext", &pt)], NO),
    ];
    assert!(cases.len() >= 40);
    let mut failures = Vec::new();
    for (i, (who, https, action, params, want)) in cases.iter().enumerate() {
        let got = call(&w.client(who, *https), action, params);
        let ok = match (want, &got) {
            (None, Ok(())) => true,
            (Some(code), Err(c)) => code == c,
            _ => false,
        };
        if !ok {
            failures.push(format!("case {i}: {who} {action} {params:?}: expected {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn denials_name_the_action_and_resource_and_every_call_is_audited() {
    let w = World::new();
    let alice = w.client("user:alice", false);
    let err = alice
        .encrypt(&EncryptRequest {
            key_id: w.k2.clone(),
            plaintext: SecretBytes::from(&b"x"[..]),
            ..Default::default()
        })
        .unwrap_err();
    let ClientError::Api { status, code, message, .. } = err else { panic!() };
    assert_eq!((status, code.as_str()), (403, "Forbidden.NoPermission"));
    assert!(message.contains("user:alice") && message.contains("kms:Encrypt") && message.contains(&w.k2), "{message}");

    // Plaintexts and secret values never reach the audit trail.
    let o = w.client("owner", false);
    let marker = "audit-marker-plaintext-77f3";
    let ct = o
        .encrypt(&EncryptRequest {
            key_id: w.k1.clone(),
            plaintext: SecretBytes::from(marker.as_bytes()),
            ..Default::default()
        })
        .unwrap();
    o.decrypt(&DecryptRequest { ciphertext_blob: ct.ciphertext_blob.clone(), ..Default::default() }).unwrap();
    let v: GetSecretValueResponse =
        o.call("GetSecretValue", &GetSecretValueRequest { secret_name: "s1".into(), ..Default::default() }).unwrap();
    let dk = o.generate_data_key(&GenerateDataKeyRequest { key_id: w.k1.clone(), ..Default::default() }).unwrap();
    std::thread::sleep(Duration::from_millis(200)); // read-only events are written asynchronously
    let audit_dir = w.dir.path().join("audit");
    let all = std::fs::read(audit_dir.join("audit.log")).unwrap();
    let text = String::from_utf8_lossy(&all);
    for needle in [
        marker.to_string(),
        encode_base64(marker.as_bytes()),
        v.secret_data.expose().to_string(),
        encode_base64(dk.plaintext.expose()),
        encode_base64(&ct.ciphertext_blob),
        "password-of-".to_string(),
    ] {
        assert!(!text.contains(&needle), "the audit log contains {needle:?}");
    }
    let denied = kms_sidecar::audit::query(
        &audit_dir,
        &kms_sidecar::audit::Query { principal: Some("user:alice".into()), ..Default::default() },
    )
    .unwrap();
    let e = denied.iter().find(|e| e.code == "Forbidden.NoPermission").expect("the denied call is recorded");
    assert_eq!((e.action.as_str(), e.http_status, e.access_key_id.as_str()), ("Encrypt", 403, "user-alice"));
    assert!(e.resources.is_empty() || e.resources.iter().any(|r| r.contains(&w.k2)));
    assert_eq!(e.source_ip, "127.0.0.1");
    let by_key = kms_sidecar::audit::query(
        &audit_dir,
        &kms_sidecar::audit::Query {
            resource: Some(w.k1.clone()),
            action: Some("Decrypt".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!by_key.is_empty(), "Decrypt is recorded against the key its blob names");
    // Verified beside the running sidecar, with the key and anchor read from its store.
    let v = kms_sidecar::audit::verify_configured(
        &Config { data_dir: Some(w.dir.path().to_path_buf()), ..Default::default() },
        false,
    )
    .unwrap();
    assert!(v.ok(), "{:?}", v.findings);
    assert!(v.events >= 10 && v.anchored_seq.is_some());
}

#[test]
fn a_failing_audit_log_refuses_changes() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    std::fs::create_dir_all(&audit).unwrap();
    // Every write to /dev/full fails with ENOSPC: a full disk.
    std::os::unix::fs::symlink("/dev/full", audit.join("audit.log")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cfg = Config {
        data_dir: Some(dir.path().to_path_buf()),
        listen: "127.0.0.1:0".into(),
        access_keys: vec![key("owner", "owner")],
        ..Default::default()
    };
    let running = rt.block_on(app::start(cfg)).unwrap();
    let c = Client::new(ClientConfig {
        signing: Signing::V1,
        ..ClientConfig::with_key(&format!("http://{}", running.http.unwrap()), "owner", "owner-secret")
    })
    .unwrap();
    for _ in 0..2 {
        let e = c.create_key(&CreateKeyRequest::default()).unwrap_err();
        assert_eq!(e.code(), Some("InternalFailure"), "{e}");
    }
    let keys = running.engine.list_keys(&kms_core::Caller::owner(), Default::default()).unwrap().total_count;
    assert!(keys <= 1, "once the log is known to fail, changes are refused before they happen ({keys} keys)");
    assert!(call(&c, "DescribeRegions", &[]).is_ok(), "reads still work");
    rt.block_on(running.shutdown());
}
